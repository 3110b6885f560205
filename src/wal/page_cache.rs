//! The log's share of the operating system's page cache, bounded.
//!
//! Appends go through the page cache (`mapping.rs` explains why not through the mapping),
//! and the kernel keeps every page written until memory runs short. Without a bound, a backlog
//! behind a paused or slow destination grows the page cache by the whole backlog:
//!
//! * it is charged to the process's memory cgroup (`memory.current` under cgroup v2, what a
//!   container's limit and `memory.high` throttling look at) and evicts other files' pages;
//! * the kernel reclaims it when *it* chooses, often inside the next append (direct reclaim);
//! * every page is a fresh page. On VMs whose balloon reports free pages to the host, a fresh
//!   page costs a host fault on first touch: on the development VM the kernel's cost of
//!   writing a GiB of 17 KB appends rose from 1.7 to 4.0 CPU s once the page cache had grown
//!   by a few GiB, and durable ingest fell from ~950k to ~680k events/s over three 8-second
//!   runs with delivery paused. Dropping pages behind the head lets the next appends reuse
//!   them while they are still warm.
//!
//! So the sync thread, after each round, works out which durable bytes lie more than the
//! budget (`--wal-page-cache-bytes`) behind the write head, and a thread of its own drops them
//! from the page cache (`POSIX_FADV_DONTNEED`), oldest segment first, off the group commit's
//! path. PostgreSQL does the same with each WAL
//! segment it closes when no archiver or standby will read it.
//!
//! ## Invariants
//!
//! * **Advice only; never a wrong byte.** `DONTNEED` drops clean pages and skips dirty ones
//!   (starting their writeback) and pages mapped by anyone: a reader holding a page keeps
//!   it. A reader further behind than the budget faults its pages back from disk.
//! * **Only bytes the budget has passed.** The budget is counted over the log's record bytes,
//!   newest first, across segments, so the last `budget` bytes (and always the page the next
//!   append writes into) stay cached: readers following closely never touch the disk.
//! * **Never pins a segment.** Segments are held weakly; one freed by garbage collection is
//!   forgotten (deleting it freed its pages), so the budget never delays freeing disk space.
//! * **A recycled segment whose pages were dropped is zeroed first** (`gc.rs`): an append
//!   ending inside a block that is written on disk but absent from the cache would read that
//!   block back from disk first, on the acknowledgement path. Blocks of a zeroed range are
//!   unwritten, so the kernel zero-fills them in memory instead. A segment still wholly
//!   cached (the usual case: freed soon after its readers passed it) is reused as it is, its
//!   warm pages overwritten in place.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use super::format::HEADER_PAGE_BYTES;
use super::segment::Segment;
use crate::metrics as names;

/// Smallest budget accepted: the appends' working set (the page the next append writes into,
/// recent records readers are about to read) must stay cached whatever the setting.
pub const MIN_PAGE_CACHE_BYTES: u64 = 16 << 20;
/// Default budget: ~2 s of durable ingest at 1 M events/s, far ahead of any reader that keeps
/// pace, and a small fraction of the memory of hosts flagstream runs on.
pub const DEFAULT_PAGE_CACHE_BYTES: u64 = 256 << 20;
/// Smallest range dropped at once, so the advice costs ~40 calls/s at 150 MB/s of appends.
const DROP_STEP_BYTES: u64 = 4 << 20;

/// Bytes of one segment dropped so far.
#[derive(Debug)]
struct Tracked {
    id: u64,
    segment: Weak<Segment>,
    /// Record-area bytes below this offset have been dropped.
    dropped_to: u64,
}

/// One tracked segment as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    /// End of its durable records (the frozen end).
    end: u64,
    /// The file's length: a sealed segment is dropped to there, so the page cache's large
    /// folio straddling its end of records goes too (the kernel keeps a folio the advice
    /// covers only in part).
    len: u64,
    dropped_to: u64,
    sealed: bool,
}

/// A range of one segment to drop, sent to the dropping thread.
type DropRequest = (Weak<Segment>, Range<u64>);

/// The sync thread's view of which durable bytes are cached. See the module doc.
#[derive(Debug)]
pub(crate) struct PageCacheBudget {
    /// `None`: leave the page cache to the kernel (`--wal-page-cache-bytes unlimited`).
    budget: Option<u64>,
    /// Segments synced and not yet wholly dropped, oldest first.
    tracked: VecDeque<Tracked>,
    /// The dropping thread, started at the first drop. The advice takes ~1 ms per MiB here
    /// (every page is unlinked and freed), and on the sync thread it would delay the next
    /// group commit, hence every acknowledgement waiting for it, by as much. `None` when it
    /// could not be started: the sync thread then drops itself. Joined when the budget is
    /// dropped (the sync thread's exit), so a closed WAL has finished its drops.
    dropper: Option<(Sender<DropRequest>, JoinHandle<()>)>,
    dropper_started: bool,
}

impl Drop for PageCacheBudget {
    fn drop(&mut self) {
        if let Some((sender, thread)) = self.dropper.take() {
            drop(sender);
            // It only ends by its channel closing; a panic in it was already reported.
            let _ = thread.join();
        }
    }
}

impl PageCacheBudget {
    pub(crate) fn new(budget: Option<u64>) -> Self {
        PageCacheBudget {
            budget: budget.map(|bytes| bytes.max(MIN_PAGE_CACHE_BYTES)),
            tracked: VecDeque::new(),
            dropper: None,
            dropper_started: false,
        }
    }

    /// Drop `range` of `segment` on the dropping thread (started on first use; it ends when
    /// this budget, hence the channel's sender, is dropped, and the budget waits for it).
    fn drop_later(&mut self, segment: &Arc<Segment>, range: Range<u64>) {
        if !self.dropper_started {
            self.dropper_started = true;
            let (sender, receiver) = std::sync::mpsc::channel::<DropRequest>();
            let spawned = std::thread::Builder::new()
                .name("flagstream-wal-cache".into())
                .spawn(move || {
                    for (segment, range) in receiver {
                        // A segment freed meanwhile took its pages with it.
                        if let Some(segment) = segment.upgrade() {
                            drop_pages(&segment.file, segment.id, range);
                        }
                    }
                });
            match spawned {
                Ok(thread) => self.dropper = Some((sender, thread)),
                Err(error) => tracing::warn!(%error,
                    "Could not start the WAL's page-cache thread; the sync thread drops pages itself."),
            }
        }
        let request = (Arc::downgrade(segment), range);
        let unsent = match &self.dropper {
            Some((dropper, _)) => dropper.send(request).err().map(|failed| failed.0),
            None => Some(request),
        };
        if let Some((_, range)) = unsent {
            drop_pages(&segment.file, segment.id, range);
        }
    }

    /// `synced` were just made durable up to their frozen ends: drop what now lies more than
    /// the budget behind the head.
    pub(crate) fn synced(&mut self, synced: &[Arc<Segment>]) {
        let Some(budget) = self.budget else {
            return;
        };
        for segment in synced {
            if !self.tracked.iter().any(|tracked| tracked.id == segment.id) {
                self.tracked.push_back(Tracked {
                    id: segment.id,
                    segment: Arc::downgrade(segment),
                    dropped_to: HEADER_PAGE_BYTES,
                });
            }
        }
        // Segments garbage collection freed are forgotten: deleting them freed their pages.
        let mut live: Vec<(&mut Tracked, Arc<Segment>)> = self
            .tracked
            .iter_mut()
            .filter_map(|tracked| tracked.segment.upgrade().map(|segment| (tracked, segment)))
            .collect();
        live.sort_by_key(|(tracked, _)| tracked.id);
        let views: Vec<View> = live
            .iter()
            .map(|(tracked, segment)| View {
                end: segment.map.frozen_end(),
                len: segment.map.len(),
                dropped_to: tracked.dropped_to,
                sealed: segment.is_sealed(),
            })
            .collect();
        let mut drops = Vec::new();
        for ((tracked, segment), to) in live.iter_mut().zip(plan(budget, &views)) {
            if let Some(to) = to {
                // Before the pages go: garbage collection zeroes what it recycles from now on.
                segment.mark_uncached();
                drops.push((Arc::clone(segment), tracked.dropped_to..to));
                tracked.dropped_to = to;
            }
        }
        drop(live);
        for (segment, range) in drops {
            self.drop_later(&segment, range);
        }
        self.tracked.retain(|tracked| {
            tracked.segment.upgrade().is_some_and(|segment| {
                !(segment.is_sealed() && tracked.dropped_to >= segment.map.len())
            })
        });
    }
}

/// For each segment (oldest first), the offset to drop it to now, if any: everything more
/// than `budget` record bytes behind the newest record, counted newest first across
/// segments, in steps of at least [`DROP_STEP_BYTES`] (the rest of a sealed segment at once).
fn plan(budget: u64, segments: &[View]) -> Vec<Option<u64>> {
    let mut keep = budget;
    let mut plan: Vec<Option<u64>> = segments
        .iter()
        .rev()
        .map(|view| {
            let drop_to = view.end.saturating_sub(keep).max(HEADER_PAGE_BYTES);
            keep = keep.saturating_sub(view.end.saturating_sub(HEADER_PAGE_BYTES));
            let step = drop_to.saturating_sub(view.dropped_to);
            if view.sealed && drop_to >= view.end {
                return (view.dropped_to < view.len).then_some(view.len);
            }
            (step >= DROP_STEP_BYTES).then_some(drop_to)
        })
        .collect();
    plan.reverse();
    plan
}

/// `POSIX_FADV_DONTNEED` over the whole pages of `range` (advice: a refusal changes nothing
/// readers can observe, so it is only logged).
fn drop_pages(file: &std::fs::File, segment_id: u64, range: Range<u64>) {
    let page = rustix::param::page_size() as u64;
    let start = range.start / page * page;
    let end = range.end / page * page;
    let Some(len) = NonZeroU64::new(end.saturating_sub(start)) else {
        return;
    };
    match rustix::fs::fadvise(file, start, Some(len), rustix::fs::Advice::DontNeed) {
        Ok(()) => metrics::counter!(names::WAL_PAGE_CACHE_DROPPED_BYTES_TOTAL).increment(len.get()),
        Err(error) => {
            tracing::debug!(%error, segment = segment_id, "posix_fadvise(DONTNEED) refused")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    /// A segment file of 256 MiB (longer than any record area below).
    fn view(end: u64, dropped_to: u64, sealed: bool) -> View {
        View {
            end,
            len: 256 * MIB + HEADER_PAGE_BYTES,
            dropped_to,
            sealed,
        }
    }

    #[test]
    fn the_budget_is_counted_newest_first_across_segments() {
        // 100 MiB sealed, 100 MiB sealed, 60 MiB active; a 128 MiB budget keeps the active
        // segment and the last 68 MiB of the one before, and drops the oldest whole.
        let head = HEADER_PAGE_BYTES;
        let segments = [
            view(head + 100 * MIB, head, true),
            view(head + 100 * MIB, head, true),
            view(head + 60 * MIB, head, false),
        ];
        assert_eq!(
            plan(128 * MIB, &segments),
            vec![Some(256 * MIB + head), Some(head + 32 * MIB), None]
        );
    }

    #[test]
    fn small_steps_wait_but_the_rest_of_a_sealed_segment_goes_at_once() {
        let head = HEADER_PAGE_BYTES;
        let active = view(head + 64 * MIB + MIB, head + 48 * MIB, false);
        assert_eq!(
            plan(16 * MIB, &[active]),
            vec![None],
            "1 MiB more is not a step"
        );
        let sealed = view(head + 64 * MIB, head + 63 * MIB, true);
        let newer = view(head + 32 * MIB, head, false);
        assert_eq!(
            plan(16 * MIB, &[sealed, newer]),
            vec![Some(256 * MIB + head), Some(head + 16 * MIB)]
        );
    }

    proptest! {
        /// Safety: nothing within the budget of the head is ever dropped. Liveness: what lies
        /// beyond it stays cached by less than a step per segment.
        #[test]
        fn drops_only_beyond_the_budget_and_leaves_less_than_a_step(
            budget_mib in 16u64..512,
            shapes in proptest::collection::vec((0u64..256 * MIB, 0u64..=100), 1..6),
        ) {
            let budget = budget_mib * MIB;
            let last = shapes.len() - 1;
            let segments: Vec<View> = shapes.iter().enumerate().map(|(index, &(len, dropped_pct))| {
                let end = HEADER_PAGE_BYTES + len;
                let dropped_to = HEADER_PAGE_BYTES + len / 100 * dropped_pct;
                view(end, dropped_to.min(end), index != last)
            }).collect();
            let planned = plan(budget, &segments);
            let mut newer_bytes = 0u64;
            for (view, to) in segments.iter().zip(&planned).rev() {
                let keep = budget.saturating_sub(newer_bytes);
                let now = to.unwrap_or(view.dropped_to);
                prop_assert!(now >= view.dropped_to, "never moves back");
                let limit = view.end.saturating_sub(keep).max(HEADER_PAGE_BYTES);
                if to.is_some() && now > limit {
                    prop_assert!(
                        view.sealed && limit >= view.end && now == view.len,
                        "dropped {now} within the budget (limit {limit})"
                    );
                }
                let beyond = view.end.saturating_sub(keep).max(HEADER_PAGE_BYTES);
                prop_assert!(beyond.saturating_sub(now) < DROP_STEP_BYTES, "left {} beyond", beyond - now);
                newer_bytes += view.end - HEADER_PAGE_BYTES;
            }
        }
    }

    #[test]
    fn dropped_pages_leave_the_page_cache() {
        // Beside the test binary: a real filesystem (tmpfs keeps its pages whatever we advise).
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("segment");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let len = 8 * MIB;
        std::os::unix::fs::FileExt::write_all_at(&file, &vec![7u8; len as usize], 0).unwrap();
        file.sync_data().unwrap();
        let page = rustix::param::page_size() as u64;
        let cached = |file| super::super::mapping::cached_pages(file, len);
        assert_eq!(cached(&file), len / page, "written pages are cached");
        drop_pages(&file, 1, 0..len / 2 + 100);
        assert_eq!(
            cached(&file),
            len / 2 / page,
            "the first half left, the second stayed"
        );
    }
}
