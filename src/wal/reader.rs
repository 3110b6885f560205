//! [`WalReader`]: follows the log from a seq, zero-copy, and tails it without polling.
//!
//! Invariants:
//! * A reader never parses past a segment's frozen end (the committed end), so it never sees
//!   a record that is being written.
//! * Every record handed out passed its checksum and seq check. A bad record (only possible
//!   on disk, e.g. a sector gone bad in a sealed segment) is skipped: the reader resyncs on
//!   the next valid record of the segment (or moves to the next segment), logs the skipped
//!   seqs at ERROR and counts them. It never loops and never panics on garbage.
//! * Payloads are `Bytes` that own an `Arc<Segment>`: the mapping (and, if the file was
//!   unlinked by GC, its inode) stays alive as long as any payload does, and a segment with
//!   live payloads is never recycled (see `mapping.rs`).
//! * Pages behind the reader are released from the process as it moves on (see
//!   `residency.rs`); that never affects payloads already handed out.
//! * Tailing: `next` registers for the "appended" notification *before* re-checking for a
//!   record, and writers notify *after* publishing, so no wake-up is lost.

use std::sync::Arc;

use bytes::Bytes;

use super::core::Core;
use super::residency::Released;
use super::segment::Segment;
use super::{Record, WalError, WalInner};
use crate::metrics as names;

/// Follows the log. `next` waits for new records without polling or lost wake-ups.
pub struct WalReader {
    wal: Arc<WalInner>,
    segment: Option<Arc<Segment>>,
    /// Offset of the record `next_seq` in `segment`, once located.
    offset: Option<u64>,
    next_seq: u64,
    /// Pages of `segment` this reader has released behind itself.
    released: Released,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WalReader")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

/// The owner behind a zero-copy payload: a byte range of a segment's frozen bytes.
struct SegmentSlice {
    segment: Arc<Segment>,
    start: u64,
    end: u64,
}

impl AsRef<[u8]> for SegmentSlice {
    fn as_ref(&self) -> &[u8] {
        self.segment.map.frozen(self.start..self.end)
    }
}

impl WalReader {
    pub(crate) fn new(wal: Arc<WalInner>, from_seq: u64) -> WalReader {
        let next_seq = from_seq.max(wal.core.first_seq());
        WalReader {
            wal,
            segment: None,
            offset: None,
            next_seq,
            released: Released::new(),
        }
    }

    /// The seq the next call will return.
    pub fn position(&self) -> u64 {
        self.next_seq
    }

    /// The next record, or `None` when caught up with the committed end.
    pub fn try_next(&mut self) -> Result<Option<Record>, WalError> {
        let core = Arc::clone(&self.wal.core);
        loop {
            let segment = match &self.segment {
                Some(segment) => Arc::clone(segment),
                None => {
                    let Some(segment) = core.segment_for(self.next_seq) else {
                        return Ok(None);
                    };
                    if segment.base_seq > self.next_seq {
                        // Everything before this segment is gone (collected, or lost files).
                        tracing::warn!(
                            from_seq = self.next_seq,
                            to_seq = segment.base_seq,
                            "Reader fell behind the oldest stored record; skipping to it."
                        );
                        self.next_seq = segment.base_seq;
                    }
                    self.segment = Some(Arc::clone(&segment));
                    self.offset = None;
                    segment
                }
            };
            // Load `sealed` before `end_seq`: once sealed, end_seq is final.
            let sealed = segment.is_sealed();
            let end_seq = segment.end_seq();
            if self.next_seq >= end_seq {
                if !sealed {
                    return Ok(None);
                }
                match core.segment_after(segment.id) {
                    Some(next) => {
                        self.released.finish(&segment);
                        if next.base_seq > self.next_seq {
                            skipped(
                                &core,
                                &next,
                                self.next_seq,
                                next.base_seq,
                                "missing between segments",
                            );
                            self.next_seq = next.base_seq;
                        }
                        self.segment = Some(next);
                        self.offset = None;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let window = segment.window();
            let offset = match self.offset {
                Some(offset) => offset,
                None => match segment.locate(self.next_seq) {
                    Some(offset) => offset,
                    // Unreachable through valid headers: resync from the closest indexed
                    // record before it.
                    None => segment.scan_start(self.next_seq),
                },
            };
            match window.record_with_seq(offset, segment.id, self.next_seq) {
                Ok(view) => {
                    let payload = Bytes::from_owner(SegmentSlice {
                        segment: Arc::clone(&segment),
                        start: view.payload_offset,
                        end: view.payload_offset + u64::from(view.header.payload_len),
                    });
                    self.offset = Some(view.next_offset);
                    self.next_seq += 1;
                    self.released.advance(&segment, view.next_offset);
                    return Ok(Some(Record {
                        seq: view.header.seq,
                        tag: view.header.tag,
                        event_count: view.header.event_count,
                        received_at_ms: view.header.received_at_ms,
                        payload,
                    }));
                }
                Err(error) => {
                    // The bad record itself cannot match (its checksum or seq is wrong).
                    match window.resync_after(offset, segment.id, self.next_seq) {
                        Some(view) if view.header.seq < end_seq => {
                            if view.header.seq > self.next_seq {
                                tracing::debug!(segment = segment.id, offset, %error, "Corrupt record in the write-ahead log.");
                                skipped(&core, &segment, self.next_seq, view.header.seq, "corrupt");
                            }
                            self.next_seq = view.header.seq;
                            self.offset = Some(view.offset);
                        }
                        _ => {
                            tracing::debug!(segment = segment.id, offset, %error, "Corrupt record in the write-ahead log; no valid record follows in this segment.");
                            skipped(&core, &segment, self.next_seq, end_seq, "corrupt");
                            self.next_seq = end_seq;
                            self.offset = None;
                            if !sealed {
                                // Nothing valid up to the committed end of the active
                                // segment: the next append lands past what we skipped.
                                self.segment = None;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The next record, waiting for one to be committed. Cancel-safe: dropping the future
    /// loses nothing (the position only moves when a record is returned).
    ///
    /// Fails with [`WalError::Closed`] or [`WalError::Fatal`] once the log can no longer
    /// grow and the reader has caught up.
    pub async fn next(&mut self) -> Result<Record, WalError> {
        let wal = Arc::clone(&self.wal);
        loop {
            let appended = wal.core.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(record) = self.try_next()? {
                return Ok(record);
            }
            if let Some(message) = wal.core.fatal() {
                return Err(WalError::Fatal(message.to_owned()));
            }
            if wal.core.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(WalError::Closed);
            }
            appended.await;
        }
    }
}

/// Count and log seqs `from_seq..to_seq` of `segment` (or just before it) as lost, unless
/// recovery or another reader already did.
fn skipped(core: &Core, segment: &Segment, from_seq: u64, to_seq: u64, why: &str) {
    let count = segment.note_damaged(from_seq, to_seq);
    if count == 0 {
        return;
    }
    core.corrupt_records
        .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!(names::WAL_CORRUPT_RECORDS_TOTAL).increment(count);
    tracing::error!(segment = segment.id, first_seq = from_seq, last_seq = to_seq - 1, count, reason = why,
        "Skipping write-ahead log records that cannot be read; they are lost for every destination.");
}
