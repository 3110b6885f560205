//! Finding a position by time, for `start=<time>` and rewinds.
//!
//! The WAL reads only its own record header field `received_at_ms` (the caller's wall clock
//! when it appended the record), never the payload. Receive times are nondecreasing except
//! across clock steps, so the lookup is a binary search: over segments by the time of their
//! first record, then over the seqs of one segment (each probe hops headers from the sparse
//! index, `segment.rs`). After a clock step backwards the answer is still a seq whose record
//! is at or after the time, possibly not the very first such record.

use std::sync::Arc;

use super::core::Core;
use super::segment::Segment;

/// The receive time of record `seq`, when its header is readable.
fn time_of(segment: &Segment, seq: u64) -> Option<u64> {
    segment
        .header_of(seq)
        .map(|view| view.header.received_at_ms)
}

/// The first stored seq received at or after `unix_ms`; the next seq to be appended when
/// every stored record is older.
pub(crate) fn seq_at_time(core: &Core, unix_ms: u64) -> u64 {
    let segments: Vec<Arc<Segment>> = core.segments.read().iter().cloned().collect();
    // Records whose header cannot be read count as "before", so damage only moves the
    // answer later, never onto a record older than asked for.
    let before = |segment: &Segment, seq: u64| time_of(segment, seq).is_none_or(|at| at < unix_ms);
    let later = segments.partition_point(|segment| {
        segment.end_seq() > segment.base_seq && before(segment, segment.base_seq)
    });
    // Only the segment just before `later` can hold the first record at or after the time.
    if let Some(segment) = later.checked_sub(1).map(|index| &segments[index]) {
        let (mut low, mut high) = (segment.base_seq, segment.end_seq());
        while low < high {
            let middle = low + (high - low) / 2;
            if before(segment, middle) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        if low < segment.end_seq() {
            return low;
        }
    }
    segments
        .get(later)
        .map_or_else(|| core.committed_next(), |segment| segment.base_seq)
}

/// The receive time of the oldest stored record, if any is readable.
pub(crate) fn first_record_time(core: &Core) -> Option<u64> {
    let segment = core.segments.read().front().cloned()?;
    (segment.base_seq..segment.end_seq()).find_map(|seq| time_of(&segment, seq))
}
