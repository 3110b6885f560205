//! Deterministic batch cutting.
//!
//! The batcher consumes events in log order — position `(seq, event index)` — and cuts them
//! into batches within a destination's [`BatchLimits`]. It owns no I/O and no clock except the
//! linger timer's start instant, so it is tested exhaustively in isolation.
//!
//! ## Spans and items
//!
//! Every cut batch covers a *span* `[start, end)` of positions; spans are contiguous (each
//! starts where the previous ended) and are what the cursor's [`AckWindow`] tracks. Inside a
//! span some events became items (mapped rows), others were skipped (filtered out, invalid,
//! oversized → dead letters). A span whose events all were skipped is cut as an *empty* batch at
//! the end of the record, so the cursor moves over filtered traffic without sending anything.
//!
//! ## Determinism (invariant 3 of the design)
//!
//! Given the same log, filters and limits, batches are cut at the same positions no matter how
//! the records arrived, because the count and byte rules only look at the data:
//! * an event whose rows do not fit in the open batch closes it *before* that event;
//! * a batch that reaches exactly `max_items` items or `max_bytes` bytes is cut right away.
//!
//! Linger (time) cuts are the exception. The engine persists the span of the oldest in-flight
//! batch as the cursor's *plan*; after a restart [`Batcher::new`] is given that plan and cuts
//! exactly at its end, so a linger-cut batch is re-cut identically.
//!
//! The batch id is derived from the destination name and the positions of the *first and last
//! item* (not the span), so it does not depend on where empty spans happened to be cut:
//! `<destination>-<first seq:020>.<first event>-<last seq:020>.<last event>`. It sorts in log
//! order and is safe as a file name.
//!
//! ## The arena
//!
//! An open batch copies each row into one byte arena, followed by `\n`, from a 4 KiB
//! boundary; items' payloads are slices of it (the newline excluded). The arena is therefore
//! the batch's NDJSON text, which NDJSON writers send as it is ([`Batch::lines`]); the newlines
//! are not counted against `max_bytes`. Arenas of sent batches come back and are reused
//! (`spare_buffers.rs`), which needs every slice of them, [`Batch::lines`] included, dropped.
//!
//! ## Positions
//!
//! Positions are kept normalised: after the last event of record `seq` the position is
//! `(seq + 1, 0)`, never `(seq, event_count)`, so equal points in the log compare equal.
//!
//! [`AckWindow`]: crate::wal::AckWindow

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use super::spare_buffers::{Spare, SparePool};
use crate::dest::object::BODY_ALIGN as LINES_ALIGN;
use crate::dest::{Batch, BatchItem, BatchLimits, CompactString, EventId};
use crate::event::Schema;
use crate::wal::Position;

/// Why a batch was cut (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// `max_items` reached, or the next event would exceed it.
    Count,
    /// `max_bytes` reached, or the next event would exceed it.
    Bytes,
    /// The linger time of the oldest item passed.
    Linger,
    /// Reproducing the persisted plan of a batch cut before a restart.
    Plan,
    /// A span without items (everything filtered or dead-lettered).
    Empty,
}

/// A batch ready to be registered in the ack window and sent.
#[derive(Debug)]
pub struct CutBatch {
    pub start: Position,
    pub end: Position,
    /// Items may be empty (an empty span is acked without sending).
    pub batch: Batch,
    /// The position of the event each item came from (parallel to `batch.items`).
    pub positions: Vec<Position>,
    pub reason: CutReason,
    /// The whole arena the items' payloads are slices of, handed back after the send
    /// ([`Batcher::recycle`]).
    pub arena: Bytes,
}

/// Metadata of one event offered to the batcher (everything of a [`BatchItem`] but the row).
#[derive(Debug)]
pub struct ItemMeta<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub key: Option<&'a str>,
    pub context_key: Option<&'a str>,
    pub environment: &'a str,
    pub received_at_ms: u64,
}

/// Why an event cannot be batched; the caller dead-letters it with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// One mapped row is bigger than the destination accepts for a single item.
    Oversized { size: usize, max: usize },
    /// The event maps to more rows (or bytes) than one batch may hold.
    TooBigForBatch { rows: usize, bytes: usize },
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Oversized { size, max } => write!(
                f,
                "oversized event: {size} bytes (with per-item overhead) exceeds the destination's \
                 limit of {max} bytes per item"
            ),
            Rejected::TooBigForBatch { rows, bytes } => write!(
                f,
                "event maps to {rows} rows / {bytes} bytes, more than one batch may hold"
            ),
        }
    }
}

/// Rows of one mapped event: `rows[ends[i-1]..ends[i]]` is row `i`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub bytes: &'a [u8],
    pub ends: &'a [usize],
}

impl<'a> Rows<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let bytes = self.bytes;
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let row = &bytes[start..end];
            start = end;
            row
        })
    }
}

#[derive(Debug)]
struct OpenBatch {
    start: Position,
    items: Vec<BatchItem>,
    ranges: Vec<(usize, usize)>,
    positions: Vec<Position>,
    arena: Vec<u8>,
    /// Where the rows start in `arena` (after the alignment padding).
    lines_start: usize,
    /// Payload bytes plus per-item overhead, as counted against the limits.
    bytes: usize,
    opened_at: Option<Instant>,
}

impl OpenBatch {
    /// Copy `row` of the event at `position` into the arena, followed by `\n` (its item is
    /// pushed by the caller): the arena is then the batch's NDJSON text ([`Batch::lines`]).
    fn push_row(&mut self, row: &[u8], position: Position) {
        let start = self.arena.len();
        self.arena.extend_from_slice(row);
        self.ranges.push((start, self.arena.len()));
        self.arena.push(b'\n');
        self.positions.push(position);
    }

    fn new(start: Position) -> Self {
        OpenBatch {
            start,
            items: Vec::new(),
            ranges: Vec::new(),
            positions: Vec::new(),
            arena: Vec::new(),
            lines_start: 0,
            bytes: 0,
            opened_at: None,
        }
    }
}

/// Cuts the event stream of one destination into batches. See the module doc.
#[derive(Debug)]
pub struct Batcher {
    destination: String,
    schema: Schema,
    limits: BatchLimits,
    /// Next unconsumed position (normalised).
    position: Position,
    /// The record being consumed (if any) and its event count.
    record_seq: Option<u64>,
    record_events: u32,
    open: OpenBatch,
    ready: VecDeque<CutBatch>,
    /// Ends of planned cuts still to be reproduced, ascending: the persisted plan of the
    /// oldest batch and, after a rewind, the recorded boundaries (`cut_log.rs`).
    replay: VecDeque<Position>,
    /// Payload bytes of the last cut batch: the next batch's arena starts this big, so a
    /// steady stream of full batches allocates each arena once instead of doubling its way up.
    last_arena_len: usize,
    /// Items of the last cut batch: the next batch's item, range and position lists start
    /// this long, for the same reason (they would otherwise be regrown and copied ~10 times).
    last_item_count: usize,
    /// Buffers of sent batches, reused by the next batches (`spare_buffers.rs`).
    spares: SparePool,
    /// The item ranges of the last cut batch, emptied: they never leave the batcher.
    spare_ranges: Vec<(usize, usize)>,
    /// The last item's environment: consecutive items share it (see [`reuse`]).
    last_environment: CompactString,
}

/// `text` as a `CompactString`, cloned from `last` when equal (and remembered otherwise).
///
/// A clone of an inline `CompactString` is a plain copy, where building one from text stalls
/// on reading back the bytes just copied in: that stall was most of `offer`'s own time.
fn reuse(last: &mut CompactString, text: &str) -> CompactString {
    if last.as_str() != text {
        *last = CompactString::from(text);
    }
    last.clone()
}

/// `kind` as a `CompactString`: a constant for the kinds SDKs send (LaunchDarkly's, the
/// browser SDK's, go-feature-flag's), built from the text otherwise (see [`reuse`]).
fn kind_text(kind: &str) -> CompactString {
    macro_rules! known_kinds {
        ($($known:literal),*) => {
            match kind {
                $($known => const { CompactString::const_new($known) },)*
                _ => CompactString::from(kind),
            }
        };
    }
    known_kinds!(
        "feature",
        "custom",
        "identify",
        "index",
        "summary",
        "debug",
        "alias",
        "click",
        "pageview",
        "tracking",
        "diagnostic"
    )
}

impl Batcher {
    /// Start at the cursor's acked position; `plan` is the persisted span of the oldest batch
    /// that was in flight (ignored unless it starts at `acked`).
    pub fn new(
        destination: &str,
        schema: Schema,
        limits: BatchLimits,
        acked: Position,
        plan: Option<(Position, Position)>,
    ) -> Self {
        let limits = BatchLimits {
            max_items: limits.max_items.max(1),
            max_bytes: limits.max_bytes.max(1),
            ..limits
        };
        let replay = plan
            .and_then(|(start, end)| (start == acked && end > acked).then_some(end))
            .into_iter()
            .collect();
        Batcher {
            destination: destination.to_string(),
            schema,
            limits,
            position: acked,
            record_seq: None,
            record_events: 0,
            open: OpenBatch::new(acked),
            ready: VecDeque::new(),
            replay,
            last_arena_len: 0,
            last_item_count: 0,
            spares: SparePool::default(),
            spare_ranges: Vec::new(),
            last_environment: CompactString::default(),
        }
    }

    /// Keep the buffers of a sent batch for the next batches.
    pub fn recycle(&mut self, spare: Spare) {
        self.spares.put(spare);
    }

    /// Free the spare buffers unused for a while (an idle destination keeps no batch memory).
    pub fn trim_spares(&mut self, now: Instant) {
        self.spares.trim(now);
        if self.spares.is_empty() && self.open.items.is_empty() {
            self.spare_ranges = Vec::new();
        }
    }

    /// Start filling the open (empty) batch with an event of `rows` rows and `bytes` bytes:
    /// in the buffers of a sent batch if there are any, sized like the last batch.
    fn start_open_batch(&mut self, rows: usize, bytes: usize) {
        let open = &mut self.open;
        open.opened_at = Some(Instant::now());
        if open.ranges.capacity() == 0 {
            open.ranges = std::mem::take(&mut self.spare_ranges);
        }
        if open.arena.capacity() == 0 {
            if let Some(spare) = self.spares.take() {
                open.arena = spare.arena;
                open.items = spare.items;
                open.positions = spare.positions;
            }
        }
        let items = rows.max(self.last_item_count).min(self.limits.max_items);
        // Room for the rows, their newlines (`last_arena_len` counts them) and the alignment.
        open.arena.reserve(
            (bytes + rows)
                .max(self.last_arena_len)
                .min(self.limits.max_bytes + items)
                + LINES_ALIGN,
        );
        // The rows start on a 4 KiB boundary, so a file destination writing the arena as its
        // NDJSON body (`O_DIRECT`) sends whole blocks straight from it. A reused arena keeps
        // its allocation, hence its padding; one that must grow later may lose the alignment
        // (the writer then copies the body, as for any unaligned one).
        debug_assert!(
            open.arena.is_empty(),
            "an open batch without items has no rows"
        );
        let pad = (LINES_ALIGN - open.arena.as_ptr() as usize % LINES_ALIGN) % LINES_ALIGN;
        open.arena.clear();
        open.arena.resize(pad, 0);
        open.lines_start = pad;
        open.items.reserve(items);
        open.ranges.reserve(items);
        open.positions.reserve(items);
    }

    /// Drop everything open or ready and continue at `position` (a rewind), as a batcher
    /// created there without a plan would.
    pub fn restart_at(&mut self, position: Position) {
        self.position = position;
        self.record_seq = None;
        self.record_events = 0;
        self.open = OpenBatch::new(position);
        self.ready.clear();
        self.replay.clear();
    }

    /// Also cut at each of `ends` (positions where the original delivery cut a batch for a
    /// reason not in the data: linger, or a new start; see `cut_log.rs`), so a replay cuts
    /// the same batches. Ends at or before the current position are ignored.
    pub fn plan_cuts(&mut self, ends: impl IntoIterator<Item = Position>) {
        let position = self.position;
        let mut planned: Vec<Position> = self.replay.drain(..).collect();
        planned.extend(ends.into_iter().filter(|end| *end > position));
        planned.sort_unstable();
        planned.dedup();
        self.replay = planned.into();
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.limits
    }

    /// The next position the batcher expects.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Start consuming record `seq` holding `event_count` events. Returns the first event index
    /// to offer (non-zero when resuming inside a partly acked record), or `None` when the record
    /// lies entirely before the current position, or the position is at or past its last event
    /// (already consumed), and must be ignored.
    pub fn begin_record(&mut self, seq: u64, event_count: u32) -> Option<u32> {
        if seq < self.position.seq {
            return None;
        }
        if seq > self.position.seq {
            // A gap (records freed or skipped as corrupt by the WAL): the span covers it.
            self.position = Position { seq, event: 0 };
        }
        self.record_seq = Some(seq);
        self.record_events = event_count;
        self.at_cut_point();
        if self.position.event >= event_count && event_count > 0 {
            // Resumed at (or, from a cursor not written by us, past) the end of this record:
            // it is consumed. Offering its events would give them the next record's positions.
            self.position = Position {
                seq: seq + 1,
                event: 0,
            };
            self.record_seq = None;
            return None;
        }
        Some(self.position.event)
    }

    /// Consume event `index` of the current record without producing an item.
    pub fn skip(&mut self, index: u32) {
        self.advance_past(index);
    }

    /// Offer event `index` of the current record with its mapped rows. On `Err` the event is
    /// consumed (the caller dead-letters it) and nothing is batched.
    pub fn offer(
        &mut self,
        index: u32,
        meta: ItemMeta<'_>,
        rows: Rows<'_>,
    ) -> Result<(), Rejected> {
        let here = Position {
            seq: self.position.seq,
            event: index,
        };
        self.position = here;
        self.at_cut_point();

        let overhead = self.limits.per_item_overhead;
        let row_count = rows.ends.len();
        let mut bytes = 0usize;
        for row in rows.iter() {
            let size = row.len() + overhead;
            if size > self.limits.max_item_bytes {
                self.advance_past(index);
                return Err(Rejected::Oversized {
                    size,
                    max: self.limits.max_item_bytes,
                });
            }
            bytes += size;
        }
        if row_count > self.limits.max_items || bytes > self.limits.max_bytes {
            self.advance_past(index);
            return Err(Rejected::TooBigForBatch {
                rows: row_count,
                bytes,
            });
        }
        if self.open.items.len() + row_count > self.limits.max_items {
            self.cut(here, CutReason::Count);
        } else if self.open.bytes + bytes > self.limits.max_bytes {
            self.cut(here, CutReason::Bytes);
        }

        if self.open.items.is_empty() {
            self.start_open_batch(row_count, bytes);
        }
        let open = &mut self.open;
        let mut rows = rows.iter();
        if let Some(row) = rows.next() {
            open.push_row(row, here);
            // Built in place for the first row (no clone, nothing to drop); extra rows copy it.
            open.items.push(BatchItem {
                event_id: EventId::new(meta.event_id),
                payload: Bytes::new(),
                kind: kind_text(meta.kind),
                // Keys are built afresh: consecutive events rarely share them (flag keys and
                // contexts alternate), and comparing with the last one cost more than it saved.
                key: meta.key.map(CompactString::from),
                context_key: meta.context_key.map(CompactString::from),
                environment: reuse(&mut self.last_environment, meta.environment),
                received_at_ms: meta.received_at_ms,
            });
        }
        for (row_index, row) in (1..).zip(rows) {
            open.push_row(row, here);
            // Extra rows of one event (multi-context warehouse rows) need their own ids.
            let mut item = open.items[open.items.len() - row_index].clone();
            item.event_id = EventId::row(meta.event_id, row_index);
            open.items.push(item);
        }
        open.bytes += bytes;
        self.advance_past(index);

        if self.open.items.len() >= self.limits.max_items {
            self.cut(self.position, CutReason::Count);
        } else if self.open.bytes >= self.limits.max_bytes {
            self.cut(self.position, CutReason::Bytes);
        }
        Ok(())
    }

    /// The current record is fully consumed (no-op unless [`Batcher::begin_record`] accepted
    /// a record).
    pub fn end_record(&mut self) {
        let Some(seq) = self.record_seq.take() else {
            return;
        };
        if self.position.seq == seq {
            self.position = Position {
                seq: seq + 1,
                event: 0,
            };
        }
        self.at_cut_point();
        if self.open.items.is_empty() && self.open.start < self.position {
            self.cut(self.position, CutReason::Empty);
        }
    }

    /// When the open batch must be cut by linger, if it holds items (and no plan is being
    /// reproduced: the plan decides that cut).
    pub fn linger_deadline(&self) -> Option<Instant> {
        if !self.replay.is_empty() {
            return None;
        }
        self.open
            .opened_at
            .map(|opened| opened + self.limits.linger)
    }

    /// Cut the open batch because its linger time passed (no-op when empty).
    pub fn cut_lingering(&mut self) {
        if !self.open.items.is_empty() {
            self.cut(self.position, CutReason::Linger);
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn peek_ready(&self) -> Option<&CutBatch> {
        self.ready.front()
    }

    pub fn pop_ready(&mut self) -> Option<CutBatch> {
        self.ready.pop_front()
    }

    /// Items waiting in the open batch.
    pub fn open_items(&self) -> usize {
        self.open.items.len()
    }

    fn advance_past(&mut self, index: u32) {
        let next = index.saturating_add(1);
        self.position = if next >= self.record_events {
            Position {
                seq: self.position.seq + 1,
                event: 0,
            }
        } else {
            Position {
                seq: self.position.seq,
                event: next,
            }
        };
    }

    /// Cut at a planned end the position reached (ends it jumped over are dropped).
    fn at_cut_point(&mut self) {
        while let Some(&end) = self.replay.front() {
            if self.position < end {
                return;
            }
            self.replay.pop_front();
            if self.position == end && !self.open.items.is_empty() {
                self.cut(end, CutReason::Plan);
            }
        }
    }

    fn cut(&mut self, end: Position, reason: CutReason) {
        let open = std::mem::replace(&mut self.open, OpenBatch::new(end));
        while self.replay.front().is_some_and(|planned| *planned <= end) {
            self.replay.pop_front();
        }
        if !open.items.is_empty() {
            self.last_arena_len = open.arena.len() - open.lines_start;
            self.last_item_count = open.items.len();
        }
        let payloads = Bytes::from(open.arena);
        let lines = (!open.items.is_empty()).then(|| payloads.slice(open.lines_start..));
        let mut items = open.items;
        for (item, &(from, to)) in items.iter_mut().zip(&open.ranges) {
            item.payload = payloads.slice(from..to);
        }
        let mut ranges = open.ranges;
        ranges.clear();
        self.spare_ranges = ranges;
        let id = match (open.positions.first(), open.positions.last()) {
            (Some(first), Some(last)) => batch_id(&self.destination, *first, *last),
            _ => format!(
                "{}-empty-{:020}.{}",
                self.destination, open.start.seq, open.start.event
            ),
        };
        self.ready.push_back(CutBatch {
            start: open.start,
            end,
            batch: Batch {
                id,
                schema: self.schema,
                items,
                lines,
            },
            positions: open.positions,
            reason,
            arena: payloads,
        });
    }
}

/// The stable id of a batch whose first and last items came from `first` and `last`.
pub fn batch_id(destination: &str, first: Position, last: Position) -> String {
    format!(
        "{destination}-{:020}.{}-{:020}.{}",
        first.seq, first.event, last.seq, last.event
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_items: usize, max_bytes: usize) -> BatchLimits {
        BatchLimits {
            max_items,
            max_bytes,
            max_item_bytes: 100,
            per_item_overhead: 0,
            linger: Duration::from_millis(50),
        }
    }

    fn meta(id: &str) -> ItemMeta<'_> {
        ItemMeta {
            event_id: id,
            kind: "feature",
            key: Some("flag"),
            context_key: Some("u1"),
            environment: "prod",
            received_at_ms: 1,
        }
    }

    /// A log: for each record, per event Some(row bytes) or None (filtered).
    type Log = Vec<Vec<Option<Vec<u8>>>>;

    fn feed_record(batcher: &mut Batcher, seq: u64, events: &[Option<Vec<u8>>]) {
        let Some(first) = batcher.begin_record(seq, events.len() as u32) else {
            return;
        };
        for (index, event) in events.iter().enumerate().skip(first as usize) {
            match event {
                None => batcher.skip(index as u32),
                Some(row) => {
                    let ends = [row.len()];
                    let id = format!("e{seq}.{index}");
                    let _ = batcher.offer(
                        index as u32,
                        meta(&id),
                        Rows {
                            bytes: row,
                            ends: &ends,
                        },
                    );
                }
            }
        }
        batcher.end_record();
    }

    fn drain(batcher: &mut Batcher) -> Vec<CutBatch> {
        std::iter::from_fn(|| batcher.pop_ready()).collect()
    }

    fn sample_log() -> Log {
        (0..20u64)
            .map(|seq| {
                (0..(seq % 5) as usize)
                    .map(|i| (i % 3 != 2).then(|| vec![b'x'; 10 + (seq as usize + i) % 7]))
                    .collect()
            })
            .collect()
    }

    fn pos(seq: u64, event: u32) -> Position {
        Position { seq, event }
    }

    #[test]
    fn item_texts_from_constants_and_the_last_item_equal_their_text() {
        for kind in ["feature", "tracking", "diagnostic", "a-kind-nobody-knows"] {
            assert_eq!(kind_text(kind), kind);
        }
        let mut last = CompactString::default();
        for text in [
            "production",
            "production",
            "staging",
            "",
            "user-16",
            "user-26",
            "user-27",
        ] {
            assert_eq!(reuse(&mut last, text), text);
            assert_eq!(last, text, "remembered");
        }
    }

    #[test]
    fn spans_are_contiguous_and_respect_limits() {
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, limits(3, 40), pos(0, 0), None);
        for (seq, record) in sample_log().iter().enumerate() {
            feed_record(&mut batcher, seq as u64, record);
        }
        batcher.cut_lingering();
        let batches = drain(&mut batcher);
        let mut expected_start = pos(0, 0);
        let mut items = 0;
        for cut in &batches {
            assert_eq!(cut.start, expected_start);
            assert!(cut.end > cut.start);
            assert!(cut.batch.items.len() <= 3);
            assert!(cut.batch.payload_bytes() <= 40);
            assert_eq!(cut.positions.len(), cut.batch.items.len());
            assert!(cut
                .positions
                .iter()
                .all(|p| *p >= cut.start && *p < cut.end));
            expected_start = cut.end;
            items += cut.batch.items.len();
        }
        assert_eq!(expected_start, pos(20, 0));
        let expected_items: usize = sample_log()
            .iter()
            .flatten()
            .filter(|e| e.is_some())
            .count();
        assert_eq!(items, expected_items);
    }

    /// What a send hands back: the batch's buffers, emptied.
    fn send_and_return(mut cut: CutBatch) -> Option<Spare> {
        // As the sender does: the batch's view of the arena goes before the arena is reclaimed.
        cut.batch.lines = None;
        super::super::spare_buffers::Returned {
            items: cut.batch.items,
            positions: cut.positions,
            arena: Some(cut.arena),
        }
        .into_spare()
    }

    fn contents(cut: &CutBatch) -> (Position, Position, String, Vec<(String, Vec<u8>)>) {
        let items = cut.batch.items.iter();
        let items = items.map(|i| (i.event_id.to_string(), i.payload.to_vec()));
        (cut.start, cut.end, cut.batch.id.clone(), items.collect())
    }

    #[test]
    fn a_cut_batch_carries_its_ndjson_text_on_a_block_boundary() {
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, limits(3, 40), pos(0, 0), None);
        let mut cuts = 0;
        for (seq, record) in sample_log().iter().enumerate() {
            feed_record(&mut batcher, seq as u64, record);
            for cut in drain(&mut batcher) {
                assert_laid_out(&cut);
                cuts += usize::from(!cut.batch.items.is_empty());
                // Arenas come back and are reused: their rows start on a boundary again.
                if let Some(spare) = send_and_return(cut) {
                    batcher.recycle(spare);
                }
            }
        }
        assert!(cuts > 5);
    }

    /// `cut`'s lines are its payloads, each followed by a newline, from a block boundary.
    fn assert_laid_out(cut: &CutBatch) {
        let items = &cut.batch.items;
        if items.is_empty() {
            assert_eq!(cut.batch.lines, None);
            return;
        }
        let mut expected = Vec::new();
        for item in items {
            expected.extend_from_slice(&item.payload);
            expected.push(b'\n');
        }
        let lines = cut.batch.lines(0..items.len()).expect("laid out");
        assert_eq!(&lines[..], &expected[..], "{}", cut.batch.id);
        assert_eq!(lines.as_ptr() as usize % LINES_ALIGN, 0, "{}", cut.batch.id);
    }

    #[test]
    fn batches_built_in_recycled_buffers_are_the_same_batches_in_the_same_memory() {
        let log = sample_log();
        let mut fresh = Batcher::new("d", Schema::LaunchDarkly, limits(3, 40), pos(0, 0), None);
        let mut reusing = Batcher::new("d", Schema::LaunchDarkly, limits(3, 40), pos(0, 0), None);
        let (mut expected, mut got) = (Vec::new(), Vec::new());
        let (mut returned, mut reused) = (std::collections::HashSet::new(), 0);
        for (seq, record) in log.iter().enumerate() {
            feed_record(&mut fresh, seq as u64, record);
            feed_record(&mut reusing, seq as u64, record);
            expected.extend(drain(&mut fresh).iter().map(contents));
            for cut in drain(&mut reusing) {
                got.push(contents(&cut));
                reused += usize::from(returned.contains(&cut.arena.as_ptr()));
                if let Some(spare) = send_and_return(cut) {
                    if spare.arena.capacity() > 0 {
                        returned.insert(spare.arena.as_ptr());
                    }
                    reusing.recycle(spare);
                }
            }
        }
        assert_eq!(got, expected);
        assert!(reused > 3, "arenas came back: {reused}");
        reusing.trim_spares(Instant::now() + super::super::spare_buffers::IDLE_FREE_AFTER);
        assert!(reusing.spares.is_empty());
    }

    #[test]
    fn full_batches_are_cut_at_once_and_partial_ones_wait_for_linger() {
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, limits(2, 1000), pos(0, 0), None);
        let row = || Some(b"{}".to_vec());
        feed_record(&mut batcher, 0, &[row(), row(), row()]);
        let batches = drain(&mut batcher);
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].start, batches[0].end), (pos(0, 0), pos(0, 2)));
        assert_eq!(batches[0].reason, CutReason::Count);
        assert!(batcher.linger_deadline().is_some());
        batcher.cut_lingering();
        let batches = drain(&mut batcher);
        assert_eq!((batches[0].start, batches[0].end), (pos(0, 2), pos(1, 0)));
        assert_eq!(batches[0].reason, CutReason::Linger);
        assert!(batcher.linger_deadline().is_none());
    }

    #[test]
    fn filtered_records_become_empty_spans() {
        let mut batcher =
            Batcher::new("d", Schema::LaunchDarkly, limits(10, 1000), pos(0, 0), None);
        feed_record(&mut batcher, 0, &[None, None]);
        feed_record(&mut batcher, 1, &[]);
        let batches = drain(&mut batcher);
        assert_eq!(batches.len(), 2);
        assert!(batches
            .iter()
            .all(|b| b.batch.items.is_empty() && b.reason == CutReason::Empty));
        assert_eq!(batches[1].end, pos(2, 0));
    }

    #[test]
    fn byte_limit_cuts_before_the_event_that_does_not_fit() {
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, limits(10, 25), pos(0, 0), None);
        let row = |n| Some(vec![b'a'; n]);
        feed_record(&mut batcher, 0, &[row(10), row(10), row(10)]);
        let batches = drain(&mut batcher);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].reason, CutReason::Bytes);
        assert_eq!(batches[0].end, pos(0, 2));
        assert_eq!(batches[0].batch.items[1].payload.len(), 10);
    }

    #[test]
    fn per_item_overhead_counts() {
        let mut l = limits(10, 30);
        l.per_item_overhead = 5;
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, l, pos(0, 0), None);
        let row = || Some(vec![b'a'; 10]);
        feed_record(&mut batcher, 0, &[row(), row(), row()]);
        // 15 + 15 = 30 reaches the limit exactly: cut at once.
        let batches = drain(&mut batcher);
        assert_eq!(batches[0].batch.items.len(), 2);
    }

    #[test]
    fn oversized_and_multi_row_events_are_rejected_and_consumed() {
        let mut batcher = Batcher::new("d", Schema::LaunchDarkly, limits(2, 1000), pos(0, 0), None);
        assert_eq!(batcher.begin_record(0, 3), Some(0));
        let big = vec![b'x'; 101];
        let err = batcher
            .offer(
                0,
                meta("a"),
                Rows {
                    bytes: &big,
                    ends: &[101],
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            Rejected::Oversized {
                size: 101,
                max: 100
            }
        );
        assert!(err.to_string().contains("oversized"));
        let three = b"abc";
        let err = batcher
            .offer(
                1,
                meta("b"),
                Rows {
                    bytes: three,
                    ends: &[1, 2, 3],
                },
            )
            .unwrap_err();
        assert!(matches!(err, Rejected::TooBigForBatch { rows: 3, .. }));
        batcher
            .offer(
                2,
                meta("c"),
                Rows {
                    bytes: b"ok",
                    ends: &[2],
                },
            )
            .unwrap();
        batcher.end_record();
        batcher.cut_lingering();
        let batches = drain(&mut batcher);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].batch.items.len(), 1);
        assert_eq!(batches[0].positions, vec![pos(0, 2)]);
        assert_eq!((batches[0].start, batches[0].end), (pos(0, 0), pos(1, 0)));
    }

    #[test]
    fn extra_rows_of_one_event_get_distinct_ids() {
        let mut batcher = Batcher::new("d", Schema::Warehouse, limits(10, 1000), pos(0, 0), None);
        batcher.begin_record(0, 1);
        batcher
            .offer(
                0,
                meta("ev"),
                Rows {
                    bytes: b"ab",
                    ends: &[1, 2],
                },
            )
            .unwrap();
        batcher.end_record();
        batcher.cut_lingering();
        let batch = &drain(&mut batcher)[0].batch;
        let ids: Vec<&str> = batch.items.iter().map(|i| i.event_id.as_str()).collect();
        assert_eq!(ids, vec!["ev", "ev-1"]);
        assert!(batch
            .items
            .iter()
            .all(|i| i.key.as_deref() == Some("flag") && i.context_key.as_deref() == Some("u1")));
        assert_eq!(&batch.items[0].payload[..], b"a");
        assert_eq!(&batch.items[1].payload[..], b"b");
    }

    /// Kinds and environments come from constants and the item before: every item must still
    /// carry exactly its own event's texts, whatever came before it.
    #[test]
    fn items_carry_their_own_texts_whatever_the_item_before_carried() {
        let texts = [
            ("feature", Some("flag-1"), Some("user-1"), "production"),
            ("feature", Some("flag-1"), Some("user-1"), "production"),
            ("feature", Some("flag-2"), Some("user-2"), "staging"),
            ("index", None, Some("user-2"), "staging"),
            ("custom", Some("flag-2"), None, "staging"),
            (
                "a-kind-of-its-own",
                Some("a-key-longer-than-twenty-four-bytes"),
                Some("user-2"),
                "",
            ),
            ("feature", Some("flag-1"), Some("user-1"), "production"),
        ];
        let mut batcher =
            Batcher::new("d", Schema::LaunchDarkly, limits(10, 1000), pos(0, 0), None);
        batcher.begin_record(0, texts.len() as u32);
        for (index, &(kind, key, context_key, environment)) in texts.iter().enumerate() {
            let meta = ItemMeta {
                event_id: "0190a8e2-4b1c-8a18-86ed-3f2c1d0e9b7a",
                kind,
                key,
                context_key,
                environment,
                received_at_ms: index as u64,
            };
            let rows = Rows {
                bytes: b"r",
                ends: &[1],
            };
            batcher.offer(index as u32, meta, rows).unwrap();
        }
        batcher.end_record();
        batcher.cut_lingering();
        let batch = &drain(&mut batcher)[0].batch;
        let carried: Vec<_> = batch
            .items
            .iter()
            .map(|i| {
                let text = |t: &Option<CompactString>| t.as_ref().map(|t| t.to_string());
                let (key, context_key) = (text(&i.key), text(&i.context_key));
                (
                    i.kind.to_string(),
                    key,
                    context_key,
                    i.environment.to_string(),
                )
            })
            .collect();
        let expected: Vec<_> = texts
            .iter()
            .map(|&(kind, key, context_key, environment)| {
                let owned = |t: Option<&str>| t.map(str::to_string);
                (
                    kind.to_string(),
                    owned(key),
                    owned(context_key),
                    environment.to_string(),
                )
            })
            .collect();
        assert_eq!(carried, expected);
    }

    /// Cut the whole log with linger cuts at arbitrary points, then "restart" from every
    /// batch boundary with the batch's span as the persisted plan: the re-cut batches must have
    /// the same ids, spans and items.
    #[test]
    fn restart_from_any_boundary_recuts_identically() {
        let log = sample_log();
        let run = |acked: Position, plan: Option<(Position, Position)>, linger_after: &[u64]| {
            let mut batcher =
                Batcher::new("dest", Schema::LaunchDarkly, limits(3, 40), acked, plan);
            for (seq, record) in log.iter().enumerate() {
                feed_record(&mut batcher, seq as u64, record);
                if linger_after.contains(&(seq as u64)) {
                    batcher.cut_lingering();
                }
            }
            batcher.cut_lingering();
            drain(&mut batcher)
        };
        let original = run(pos(0, 0), None, &[2, 7, 11]);
        for (i, cut) in original.iter().enumerate() {
            // Restart: the reader replays from the record holding `start`; no linger cuts now.
            let replay = run(cut.start, Some((cut.start, cut.end)), &[]);
            assert_eq!(replay[0].start, cut.start);
            assert_eq!(replay[0].end, cut.end, "batch {i} re-cut differently");
            assert_eq!(replay[0].batch, cut.batch);
            // Count/byte-cut batches after it are deterministic too.
            for (a, b) in replay.iter().zip(&original[i..]).skip(1) {
                if b.reason == CutReason::Linger || a.reason == CutReason::Linger {
                    break;
                }
                if b.batch.items.is_empty() {
                    continue;
                }
                assert_eq!(a.batch.id, b.batch.id);
            }
        }
    }

    #[test]
    fn resuming_inside_a_record_skips_acked_events() {
        let mut batcher =
            Batcher::new("d", Schema::LaunchDarkly, limits(10, 1000), pos(5, 2), None);
        assert_eq!(
            batcher.begin_record(4, 3),
            None,
            "records before the cursor are ignored"
        );
        let events: Vec<Option<Vec<u8>>> = (0..4).map(|_| Some(b"r".to_vec())).collect();
        feed_record(&mut batcher, 5, &events);
        batcher.cut_lingering();
        let cut = &drain(&mut batcher)[0];
        assert_eq!(cut.positions, vec![pos(5, 2), pos(5, 3)]);
        assert_eq!(cut.start, pos(5, 2));
        assert_eq!(cut.batch.id, batch_id("d", pos(5, 2), pos(5, 3)));
    }

    /// Found with the `cursor_file` fuzz target's batcher property: a cursor position at or
    /// past the last event of its record (never written by us, but a checksummed slot can say
    /// so) made the batcher offer that record's events again under the next record's
    /// positions, and then skip as many events of the next record.
    #[test]
    fn a_position_past_the_end_of_its_record_consumes_it() {
        for event in [2, 3, 7] {
            let mut batcher = Batcher::new(
                "d",
                Schema::LaunchDarkly,
                limits(10, 1000),
                pos(5, event),
                None,
            );
            assert_eq!(batcher.begin_record(5, 2), None, "position (5, {event})");
            assert_eq!(batcher.position(), pos(6, 0));
            let events: Vec<Option<Vec<u8>>> = (0..3).map(|_| Some(b"r".to_vec())).collect();
            feed_record(&mut batcher, 6, &events);
            batcher.cut_lingering();
            let cuts = drain(&mut batcher);
            let positions: Vec<Position> =
                cuts.iter().flat_map(|cut| cut.positions.clone()).collect();
            assert_eq!(positions, vec![pos(6, 0), pos(6, 1), pos(6, 2)]);
        }
    }

    #[test]
    fn gaps_in_the_log_are_covered_by_the_span() {
        let mut batcher =
            Batcher::new("d", Schema::LaunchDarkly, limits(10, 1000), pos(3, 0), None);
        feed_record(&mut batcher, 9, &[Some(b"x".to_vec())]);
        batcher.cut_lingering();
        let cut = &drain(&mut batcher)[0];
        assert_eq!((cut.start, cut.end), (pos(3, 0), pos(10, 0)));
    }

    #[test]
    fn batch_ids_sort_in_log_order() {
        let a = batch_id("file", pos(9, 0), pos(9, 5));
        let b = batch_id("file", pos(10, 0), pos(10, 1));
        assert!(a < b, "{a} vs {b}");
    }
}
