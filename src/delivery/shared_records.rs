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
//! * **Record only for near readers.** Each lookup notes where the member's reader is. A
//!   member records a record only for the other members *behind it by at most the cache's
//!   window* (`max_bytes` / the last recording's size, in records): they will read it soon.
//!   With no such reader (it leads alone, or it lags far behind everyone) it decodes on its
//!   own and pays nothing for recording. So a lagging destination never fills the cache for
//!   nobody, and a paused one is soon out of every window.
//! * **Fresh entries are never evicted.** Room is made by evicting entries older than
//!   [`STALE_AFTER`] (readers that stalled), lowest seq first; when the cache is full of fresh
//!   entries the leader records nothing more until readers free room (an entry goes as soon as
//!   every reader it was recorded for read it). The records it skipped are recorded by the
//!   first follower to reach them, for the ones behind it. So a leader racing ahead never
//!   evicts what its followers are about to read (evicting the lowest seqs would: it is
//!   exactly where they read), and followers, replaying ~3× faster than decoding, catch up.
//! * **Never blocks.** The lock is held for map operations only. A member that finds a record in
//!   progress gets a channel that closes when the recorder is done (it finishes within one
//!   synchronous call, on another thread): its worker awaits that, briefly, without holding a
//!   thread, then looks again; if still nothing, it decodes on its own. Nobody ever waits for a
//!   member that is waiting, so there is no cycle to deadlock on.
//! * **Memory bound.** Ready entries total at most `max_bytes` ([`Recording::bytes`]). A member
//!   that leaves (a destination stopped, removed or replaced) is cleared from every entry and
//!   its position forgotten; a group left with one member drops its entries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// Default age after which an entry not yet read by all its readers may be evicted for room.
const STALE_AFTER: Duration = Duration::from_millis(500);

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
    /// Entries older than this may be evicted to make room (their readers stalled).
    stale_after: Duration,
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
    /// The seq each member (by bit index) looked up last: where its reader is.
    positions: [Option<u64>; 64],
    /// Bytes of the group's last recording: the estimate for the next one.
    last_size: usize,
}

impl Group {
    /// Members other than `me` that will read `seq` soon: behind it by at most as many
    /// records as the cache can hold (one further behind would find it evicted anyway).
    fn near_readers(&self, me: u64, seq: u64, max_bytes: usize) -> u64 {
        let window = (max_bytes / self.last_size.max(1)) as u64;
        let members = self.members.load(Ordering::Acquire) & !me;
        (0..64)
            .filter(|&slot| members & (1 << slot) != 0)
            .filter(|&slot| {
                self.positions[slot as usize].is_some_and(|at| at < seq && seq - at <= window)
            })
            .fold(0, |wanted, slot| wanted | (1 << slot))
    }
}

#[derive(Debug)]
enum Entry {
    /// Dropped (closing the channel) when the recording is published or withdrawn.
    InProgress(watch::Sender<()>),
    Ready {
        recording: Arc<Recording>,
        /// Members that have not read it yet.
        wanted: u64,
        inserted: Instant,
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
        Self::with_stale_after(max_bytes, STALE_AFTER)
    }

    /// [`SharedRecords::new`] with entries evictable after `stale_after` (tests).
    pub fn with_stale_after(max_bytes: usize, stale_after: Duration) -> Arc<Self> {
        Arc::new(SharedRecords {
            max_bytes,
            stale_after,
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
                    positions: [None; 64],
                    last_size: 0,
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

    /// Make room for `size` more bytes by evicting stale entries, lowest seq first; false when
    /// the room is not there (fresh entries are never evicted: their readers are coming).
    fn make_room(&self, state: &mut State, size: usize) -> bool {
        let now = Instant::now();
        while state.bytes + size > self.max_bytes {
            let stale = state.entries.iter().find_map(|(key, entry)| match entry {
                Entry::Ready { inserted, .. } if now - *inserted >= self.stale_after => Some(*key),
                _ => None,
            });
            let Some(key) = stale else { return false };
            self.remove(state, key);
            self.metrics.evicted.increment(1);
        }
        true
    }

    fn remove(&self, state: &mut State, key: (u64, u64)) {
        if let Some(Entry::Ready { recording, .. }) = state.entries.remove(&key) {
            state.bytes -= recording.bytes();
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
        let slot = seat.bit.trailing_zeros() as usize;
        let Some(group) = state.groups.iter_mut().find(|g| g.id == seat.group) else {
            return Lookup::Alone;
        };
        group.positions[slot] = Some(seq);
        match state.entries.get_mut(&key) {
            Some(Entry::Ready {
                recording, wanted, ..
            }) => {
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
                let Some(group) = state.groups.iter().find(|g| g.id == seat.group) else {
                    return Lookup::Alone;
                };
                let wanted = group.near_readers(seat.bit, seq, shared.max_bytes);
                let estimate = group.last_size;
                if wanted == 0 || !shared.make_room(state, estimate) {
                    return Lookup::Miss;
                }
                let recorder = Entry::InProgress(watch::Sender::new(()));
                state.entries.insert(key, recorder);
                Lookup::Record(Reservation {
                    seat: seat.clone(),
                    seq,
                    wanted,
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
        let slot = seat.bit.trailing_zeros() as usize;
        if let Some(state_group) = state.groups.iter_mut().find(|g| g.id == group) {
            state_group.positions[slot] = None;
        }
        let mut freed = 0;
        state.entries.retain(|&(_, id), entry| {
            if id != group {
                return true;
            }
            match entry {
                Entry::InProgress(_) => true,
                Entry::Ready {
                    recording, wanted, ..
                } => {
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
    /// The members expected to read it (see [`Group::near_readers`]).
    wanted: u64,
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
        let size = recording.bytes();
        if let Some(group) = state.groups.iter_mut().find(|g| g.id == seat.group) {
            group.last_size = size;
        }
        // Members may have left meanwhile.
        let wanted = self.wanted & seat.members.load(Ordering::Acquire);
        if wanted != 0 && shared.make_room(&mut state, size) {
            let entry = Entry::Ready {
                recording: recording.clone(),
                wanted,
                inserted: Instant::now(),
            };
            state.entries.insert(key, entry);
            state.bytes += size;
            shared.metrics.recorded.increment(1);
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
        assert!(matches!(second.lookup(0), Lookup::Miss), "nobody behind it");
        record(&first, 1, 100);
        match second.lookup(1) {
            Lookup::Hit(hit) => assert_eq!(hit.seq(), 1),
            other => panic!("expected a hit, got {other:?}"),
        }
        assert_eq!(shared.bytes(), 0, "read by its only reader: dropped");
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
    fn a_full_cache_records_more_only_once_readers_free_room_and_never_for_a_far_lagger() {
        let bound = 3 * recording(0, 1000).bytes() + 500;
        let shared = SharedRecords::new(bound);
        let leader = shared.join(fingerprint("a")).unwrap();
        let follower = shared.join(fingerprint("a")).unwrap();
        assert!(matches!(follower.lookup(0), Lookup::Miss));
        for seq in 1..=3 {
            record(&leader, seq, 1000);
        }
        assert!(shared.bytes() <= bound, "{}", shared.bytes());
        assert!(
            matches!(leader.lookup(4), Lookup::Miss),
            "full of fresh entries"
        );
        assert!(matches!(follower.lookup(1), Lookup::Hit(_)));
        record(&leader, 4, 1000);
        assert!(
            matches!(follower.lookup(2), Lookup::Hit(_)),
            "never evicted while fresh"
        );
        assert!(
            matches!(leader.lookup(9), Lookup::Miss),
            "the follower is further behind than the cache holds"
        );
        assert!(matches!(follower.lookup(3), Lookup::Hit(_)));
    }

    #[test]
    fn stale_entries_make_room_lowest_seq_first() {
        let bound = 3 * recording(0, 1000).bytes() + 500;
        let shared = SharedRecords::with_stale_after(bound, Duration::ZERO);
        let leader = shared.join(fingerprint("a")).unwrap();
        let near = shared.join(fingerprint("a")).unwrap();
        let stalled = shared.join(fingerprint("a")).unwrap();
        assert!(matches!(near.lookup(0), Lookup::Miss));
        assert!(matches!(stalled.lookup(0), Lookup::Miss));
        for seq in 1..=3 {
            record(&leader, seq, 1000);
            assert!(matches!(near.lookup(seq), Lookup::Hit(_)));
        }
        // Full of entries only `stalled` still wants, and (here at once) stale.
        record(&leader, 4, 1000);
        assert!(shared.bytes() <= bound);
        assert!(matches!(stalled.lookup(1), Lookup::Miss), "evicted");
        assert!(
            matches!(stalled.lookup(3), Lookup::Hit(_)),
            "newer ones stay"
        );
    }

    #[test]
    fn a_record_being_recorded_is_busy_for_the_others() {
        let shared = SharedRecords::new(1 << 20);
        let first = shared.join(fingerprint("a")).unwrap();
        let second = shared.join(fingerprint("a")).unwrap();
        assert!(matches!(second.lookup(2), Lookup::Miss));
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
        assert!(matches!(second.lookup(0), Lookup::Miss));
        assert!(matches!(third.lookup(0), Lookup::Miss));
        record(&first, 1, 1000);
        record(&first, 2, 1000);
        assert!(matches!(second.lookup(1), Lookup::Hit(_)));
        drop(third);
        assert_eq!(
            shared.bytes(),
            recording(2, 1000).bytes(),
            "1 was read by all left"
        );
        drop(second);
        assert_eq!(shared.bytes(), 0, "nobody left to read 2");
        assert!(matches!(first.lookup(3), Lookup::Alone));
        // A destination added later under the same configuration shares again.
        let again = shared.join(fingerprint("a")).unwrap();
        assert!(matches!(again.lookup(2), Lookup::Miss));
        record(&first, 3, 10);
        assert!(matches!(again.lookup(3), Lookup::Hit(_)));
    }
}
