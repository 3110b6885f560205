//! Decode once for several destinations: a bounded cache of [`Recording`]s shared by
//! destinations whose pipelines would produce the same output.
//!
//! Every destination reads the WAL through its own cursor and, alone, decodes, filters and maps
//! every record itself. Destinations with equal [`Fingerprint`]s (schema, export options,
//! filter, input kind) would compute the same thing, so they form a *group*: the first of them
//! to reach a record records what processing produced; the others replay the recording into
//! their own batchers (`recording.rs` explains why that is byte-identical).
//!
//! ## What it owns
//!
//! The groups (their fingerprints and member slots) and the cache entries, keyed by
//! `(record seq, group)`, each either *in progress* (a member is recording it right now) or
//! *ready* (an `Arc<Recording>` and the set of members still expected to read it).
//!
//! ## Invariants and policy
//!
//! * **A lone destination pays nothing.** A group of one never looks anything up, so never
//!   records (one atomic load per record).
//! * **Only the leader records.** A member records a record only if no member of its group has
//!   reserved a higher seq ([`Group::newest`]); everyone else hits, or decodes on its own. So
//!   a lagging destination (one whose records were evicted or were never recorded) never
//!   inserts, never evicts the leaders' working set, and never waits for anyone.
//! * **Never blocks.** The lock is held for map operations only. A member that finds a record in
//!   progress gets a channel that closes when the recorder is done (it finishes within one
//!   synchronous call, on another thread): its worker awaits that, briefly, without holding a
//!   thread, then looks again; if still nothing, it decodes on its own. Nobody ever waits for a
//!   member that is waiting, so there is no cycle to deadlock on.
//! * **Memory bound.** Ready entries total at most `max_bytes` ([`Recording::bytes`]); inserting
//!   beyond it evicts the lowest seqs first (the positions every leader has passed). An entry is
//!   dropped as soon as every other member of its group read it. A member that leaves (a
//!   destination stopped, removed or replaced) is cleared from every entry; a group left with
//!   one member drops its entries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{Counter, Gauge};
use tokio::sync::watch;

use crate::dest::Input;
use crate::event::{ExportOptions, FilterConfig, Schema};
use crate::metrics as names;

use super::recording::Recording;

/// Everything that decides what processing a record produces for a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub schema: Schema,
    pub input: Input,
    pub export: ExportOptions,
    pub filter: FilterConfig,
}

/// What a member should do with a record.
#[derive(Debug)]
pub enum Lookup {
    /// No other destination shares this one's fingerprint: process on your own.
    Alone,
    /// Replay this.
    Hit(Arc<Recording>),
    /// Another member is recording it right now: the receiver sees its sender closed when the
    /// recording is ready (or was withdrawn): look up again then, or process on your own.
    Busy(watch::Receiver<()>),
    /// You lead: record it and [`Reservation::finish`].
    Record(Reservation),
    /// Not cached and not yours to record (you lag): process on your own.
    Miss,
}

/// The bounded cache shared by every group of the engine. See the module doc.
pub struct SharedRecords {
    max_bytes: usize,
    state: Mutex<State>,
    metrics: CacheMetrics,
}

#[derive(Debug, Default)]
struct State {
    groups: Vec<Group>,
    /// By `(seq, group id)`: eviction takes the lowest seqs first.
    entries: BTreeMap<(u64, u64), Entry>,
    bytes: usize,
    next_group: u64,
}

#[derive(Debug)]
struct Group {
    id: u64,
    fingerprint: Fingerprint,
    /// One bit per member; shared with the members for the lock-free "alone?" check.
    members: Arc<AtomicU64>,
    /// The highest seq a member reserved for recording.
    newest: Option<u64>,
}

#[derive(Debug)]
enum Entry {
    /// Dropped (closing the channel) when the recording is published or withdrawn.
    InProgress(watch::Sender<()>),
    Ready {
        recording: Arc<Recording>,
        /// Members that have not read it yet.
        wanted: u64,
    },
}

struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    recorded: Counter,
    evicted: Counter,
    bytes: Gauge,
}

impl SharedRecords {
    /// A cache holding at most `max_bytes` of recordings (0: nothing is ever shared).
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(SharedRecords {
            max_bytes,
            state: Mutex::new(State::default()),
            metrics: CacheMetrics {
                hits: metrics::counter!(names::SHARED_RECORDS_HITS_TOTAL),
                misses: metrics::counter!(names::SHARED_RECORDS_MISSES_TOTAL),
                recorded: metrics::counter!(names::SHARED_RECORDS_RECORDED_TOTAL),
                evicted: metrics::counter!(names::SHARED_RECORDS_EVICTED_TOTAL),
                bytes: metrics::gauge!(names::SHARED_RECORDS_BYTES),
            },
        })
    }

    /// Join the group of `fingerprint` (creating it); `None` when sharing is off or the group
    /// is full (64 members), and the destination processes everything on its own.
    pub fn join(self: &Arc<Self>, fingerprint: Fingerprint) -> Option<Member> {
        if self.max_bytes == 0 || fingerprint.input != Input::MappedEvents {
            return None;
        }
        let mut state = self.lock();
        let index = match state
            .groups
            .iter()
            .position(|group| group.fingerprint == fingerprint)
        {
            Some(index) => index,
            None => {
                let id = state.next_group;
                state.next_group += 1;
                state.groups.push(Group {
                    id,
                    fingerprint,
                    members: Arc::new(AtomicU64::new(0)),
                    newest: None,
                });
                state.groups.len() - 1
            }
        };
        let group = &state.groups[index];
        let taken = group.members.load(Ordering::Acquire);
        let slot = (!taken).trailing_zeros();
        if slot >= u64::BITS {
            return None;
        }
        let bit = 1u64 << slot;
        group.members.fetch_or(bit, Ordering::AcqRel);
        Some(Member(Seat {
            shared: self.clone(),
            group: group.id,
            bit,
            members: group.members.clone(),
        }))
    }

    /// Bytes of ready recordings.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remove(&self, state: &mut State, key: (u64, u64)) {
        if let Some(Entry::Ready { recording, .. }) = state.entries.remove(&key) {
            state.bytes -= recording.bytes();
        }
    }

    /// Evict ready entries, lowest seq first, until the cache is within its bound.
    fn evict_to_bound(&self, state: &mut State) {
        while state.bytes > self.max_bytes {
            let lowest = state
                .entries
                .iter()
                .find(|(_, entry)| matches!(entry, Entry::Ready { .. }))
                .map(|(key, _)| *key);
            let Some(key) = lowest else { return };
            self.remove(state, key);
            self.metrics.evicted.increment(1);
        }
    }

    fn publish_bytes(&self, state: &State) {
        self.metrics.bytes.set(state.bytes as f64);
    }
}

impl std::fmt::Debug for SharedRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRecords")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// A destination's place in its group; leaving the group (drop) clears it from every entry.
#[derive(Debug, Clone)]
struct Seat {
    shared: Arc<SharedRecords>,
    group: u64,
    bit: u64,
    members: Arc<AtomicU64>,
}

/// A destination's membership of its group (see [`Seat`]); dropping it leaves the group.
#[derive(Debug)]
pub struct Member(Seat);

impl Member {
    /// What to do with record `seq` (see [`Lookup`]).
    pub fn lookup(&self, seq: u64) -> Lookup {
        let seat = &self.0;
        if seat.members.load(Ordering::Acquire).count_ones() < 2 {
            return Lookup::Alone;
        }
        let shared = &seat.shared;
        let mut guard = shared.lock();
        let state = &mut *guard;
        let key = (seq, seat.group);
        match state.entries.get_mut(&key) {
            Some(Entry::Ready { recording, wanted }) => {
                let recording = recording.clone();
                *wanted &= !seat.bit;
                if *wanted == 0 {
                    shared.remove(state, key);
                    shared.publish_bytes(state);
                }
                shared.metrics.hits.increment(1);
                Lookup::Hit(recording)
            }
            Some(Entry::InProgress(recorder)) => Lookup::Busy(recorder.subscribe()),
            None => {
                let Some(group) = state.groups.iter_mut().find(|g| g.id == seat.group) else {
                    return Lookup::Alone;
                };
                if group.newest.is_some_and(|newest| seq <= newest) {
                    return Lookup::Miss;
                }
                group.newest = Some(seq);
                state
                    .entries
                    .insert(key, Entry::InProgress(watch::Sender::new(())));
                Lookup::Record(Reservation {
                    seat: seat.clone(),
                    seq,
                    finished: false,
                })
            }
        }
    }
}

impl Member {
    /// Count a record this member decoded on its own although it shares (lagging, or another
    /// member was still recording it).
    pub fn count_miss(&self) {
        self.0.shared.metrics.misses.increment(1);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let seat = &self.0;
        let shared = &seat.shared;
        let mut state = shared.lock();
        let left = seat.members.fetch_and(!seat.bit, Ordering::AcqRel) & !seat.bit;
        let group = seat.group;
        let mut freed = 0;
        state.entries.retain(|&(_, id), entry| {
            if id != group {
                return true;
            }
            match entry {
                Entry::InProgress(_) => true,
                Entry::Ready { recording, wanted } => {
                    *wanted &= !seat.bit;
                    let keep = *wanted != 0 && left.count_ones() >= 2;
                    if !keep {
                        freed += recording.bytes();
                    }
                    keep
                }
            }
        });
        state.bytes -= freed;
        if left == 0 {
            state.groups.retain(|g| g.id != group);
        }
        shared.publish_bytes(&state);
    }
}

/// The right (and duty) to record one record for the group; dropping it unfinished withdraws
/// the in-progress marker.
#[derive(Debug)]
pub struct Reservation {
    seat: Seat,
    seq: u64,
    finished: bool,
}

impl Reservation {
    /// Publish `recording` to the other members (if it fits and anyone is left to read it),
    /// and hand it back for the recorder's own replay.
    pub fn finish(mut self, recording: Recording) -> Arc<Recording> {
        self.finished = true;
        let recording = Arc::new(recording);
        let seat = &self.seat;
        let shared = &seat.shared;
        let mut state = shared.lock();
        let key = (self.seq, seat.group);
        state.entries.remove(&key);
        let wanted = seat.members.load(Ordering::Acquire) & !seat.bit;
        let size = recording.bytes();
        if wanted != 0 && size <= shared.max_bytes {
            state.entries.insert(
                key,
                Entry::Ready {
                    recording: recording.clone(),
                    wanted,
                },
            );
            state.bytes += size;
            shared.metrics.recorded.increment(1);
            shared.evict_to_bound(&mut state);
        }
        shared.publish_bytes(&state);
        recording
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.seat.shared.lock();
            state.entries.remove(&(self.seq, self.seat.group));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::dead_letter::DeadLetter;
    use crate::delivery::pipeline::Output;
    use crate::delivery::recording::Recorder;
    use crate::wal::Position;

    fn fingerprint(project: &str) -> Fingerprint {
        Fingerprint {
            schema: Schema::LaunchDarkly,
            input: Input::MappedEvents,
            export: ExportOptions {
                project: project.to_string(),
                ..ExportOptions::default()
            },
            filter: FilterConfig::default(),
        }
    }

    /// A recording of about `size` bytes.
    fn recording(seq: u64, size: usize) -> Recording {
        let mut recorder = Recorder::new(seq, Default::default());
        recorder.dead_letter_record(DeadLetter {
            reason: "test",
            event_id: None,
            position: Position { seq, event: 0 },
            batch_id: None,
            payload: &vec![b'x'; size],
        });
        recorder.finish()
    }

    fn record(member: &Member, seq: u64, size: usize) {
        match member.lookup(seq) {
            Lookup::Record(reservation) => drop(reservation.finish(recording(seq, size))),
            other => panic!("seq {seq}: expected to record, got {other:?}"),
        }
    }

    #[test]
    fn only_destinations_configured_alike_share_and_a_lone_one_never_records() {
        let shared = SharedRecords::new(1 << 20);
        let first = shared.join(fingerprint("a")).unwrap();
        assert!(matches!(first.lookup(0), Lookup::Alone));
        let other = shared.join(fingerprint("b")).unwrap();
        assert!(
            matches!(other.lookup(0), Lookup::Alone),
            "another project: its own group"
        );
        let second = shared.join(fingerprint("a")).unwrap();
        record(&first, 0, 100);
        match second.lookup(0) {
            Lookup::Hit(hit) => assert_eq!(hit.seq(), 0),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert_eq!(shared.bytes(), 0, "read by its only other member: dropped");
        let raw = Fingerprint {
            input: Input::RawRecords,
            ..fingerprint("a")
        };
        assert!(shared.join(raw).is_none(), "raw records are never shared");
        assert!(
            SharedRecords::new(0).join(fingerprint("a")).is_none(),
            "0 turns sharing off"
        );
    }

    #[test]
    fn the_bound_evicts_the_lowest_seqs_and_a_lagger_never_records() {
        let shared = SharedRecords::new(3500);
        let leader = shared.join(fingerprint("a")).unwrap();
        let lagger = shared.join(fingerprint("a")).unwrap();
        for seq in 0..6 {
            record(&leader, seq, 1000);
            assert!(shared.bytes() <= 3500, "{}", shared.bytes());
        }
        assert!(
            matches!(lagger.lookup(0), Lookup::Miss),
            "evicted: decodes on its own"
        );
        assert!(matches!(lagger.lookup(1), Lookup::Miss));
        assert!(
            matches!(lagger.lookup(5), Lookup::Hit(_)),
            "the newest are kept"
        );
        // Past the newest reserved seq the lagger has become the leader.
        assert!(matches!(lagger.lookup(6), Lookup::Record(_)));
        assert!(
            matches!(leader.lookup(6), Lookup::Miss),
            "dropped unfinished: withdrawn, and 6 is nobody's to record any more"
        );
    }

    #[test]
    fn a_record_being_recorded_is_busy_for_the_others() {
        let shared = SharedRecords::new(1 << 20);
        let first = shared.join(fingerprint("a")).unwrap();
        let second = shared.join(fingerprint("a")).unwrap();
        let Lookup::Record(reservation) = first.lookup(3) else {
            panic!("the first to come records");
        };
        assert!(matches!(second.lookup(3), Lookup::Busy(_)));
        drop(reservation.finish(recording(3, 10)));
        assert!(matches!(second.lookup(3), Lookup::Hit(_)));
    }

    #[test]
    fn members_leaving_clear_their_share_and_a_group_of_one_keeps_nothing() {
        let shared = SharedRecords::new(1 << 20);
        let first = shared.join(fingerprint("a")).unwrap();
        let second = shared.join(fingerprint("a")).unwrap();
        let third = shared.join(fingerprint("a")).unwrap();
        record(&first, 0, 1000);
        record(&first, 1, 1000);
        assert!(matches!(second.lookup(0), Lookup::Hit(_)));
        drop(third);
        assert_eq!(
            shared.bytes(),
            recording(1, 1000).bytes(),
            "0 was read by all left"
        );
        drop(second);
        assert_eq!(shared.bytes(), 0, "nobody left to read 1");
        assert!(matches!(first.lookup(2), Lookup::Alone));
        // A destination added later under the same configuration shares again.
        let again = shared.join(fingerprint("a")).unwrap();
        record(&first, 2, 10);
        assert!(matches!(again.lookup(2), Lookup::Hit(_)));
    }
}
