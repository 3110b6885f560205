//! Resident memory that does not grow with the backlog.
//!
//! Segments are mapped whole, and every page a writer or reader touches stays in the
//! process's resident set (RSS, cgroup memory, the OOM killer's score) until it is unmapped —
//! so a 20 GB backlog behind a slow destination would otherwise look like a 20 GB process.
//! Owners of a position in a segment drop the pages behind them instead
//! ([`SegmentMap::release`](super::mapping::SegmentMap::release), `MADV_DONTNEED`):
//!
//! * the **sync thread**, once bytes are durable (the writer is done with them), keeping the
//!   last [`RESIDENT_TAIL_BYTES`] so readers that follow closely read them without a fault;
//! * every **reader**, behind its own position, keeping the same tail (the payloads it just
//!   handed out live there);
//! * a sealed segment is released whole when its writer or a reader leaves it.
//!
//! Releasing is always correct, whoever still needs the bytes: the next access faults them
//! back from the page cache (a minor fault), so a lagging reader pays a fault per page that a
//! faster owner released, never a wrong byte. Releases happen in steps of
//! [`RELEASE_STEP_BYTES`] to keep `madvise` calls (and their TLB flushes) rare.

use super::format::HEADER_PAGE_BYTES;
use super::segment::Segment;
use crate::metrics as names;

/// Bytes behind a position that stay mapped (recent payloads, readers just behind).
///
/// Each owner keeps at most tail + step resident per segment it is in, and there are two
/// owners at least (the sync thread and one reader per destination), so these two set the
/// WAL's share of RSS: at most 3 MiB per owner, where 4 + 4 MiB held 8–14 MiB of `RssFile`
/// at 64 connections (issue 15's 150 MiB budget). A reader further behind than the tail
/// faults pages back from the page cache (a minor fault per 64 KiB fault-around), which
/// costs far less than the copy into a batch that follows.
pub(crate) const RESIDENT_TAIL_BYTES: u64 = 2 << 20;
/// Smallest range released at once: 1 MiB keeps `madvise` calls to ~50/s per owner at
/// 50 MB/s of appends.
pub(crate) const RELEASE_STEP_BYTES: u64 = 1 << 20;

/// How far one owner (the sync thread, a reader) has released one segment.
#[derive(Debug)]
pub(crate) struct Released {
    segment_id: Option<u64>,
    to: u64,
}

impl Released {
    pub(crate) fn new() -> Self {
        Released {
            segment_id: None,
            to: HEADER_PAGE_BYTES,
        }
    }

    /// The owner no longer needs `segment`'s bytes below `offset`: release what lies more
    /// than [`RESIDENT_TAIL_BYTES`] behind it, once that is a whole step.
    pub(crate) fn advance(&mut self, segment: &Segment, offset: u64) {
        self.follow(segment);
        let target = offset.saturating_sub(RESIDENT_TAIL_BYTES);
        if target >= self.to + RELEASE_STEP_BYTES {
            self.release(segment, target);
        }
    }

    /// The owner is done with all of `segment` (it is sealed and left behind).
    pub(crate) fn finish(&mut self, segment: &Segment) {
        self.follow(segment);
        self.release(segment, segment.map.frozen_end());
    }

    fn follow(&mut self, segment: &Segment) {
        if self.segment_id != Some(segment.id) {
            self.segment_id = Some(segment.id);
            self.to = HEADER_PAGE_BYTES;
        }
    }

    fn release(&mut self, segment: &Segment, to: u64) {
        if to <= self.to {
            return;
        }
        let bytes = segment.map.release(self.to..to);
        metrics::counter!(names::WAL_RELEASED_BYTES_TOTAL).increment(bytes);
        self.to = to;
    }
}
