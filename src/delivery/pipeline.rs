//! Record → events → filter → schema rows → batcher, for one destination.
//!
//! This is the per-event hot path, written to allocate little: the decode buffer, the mapping
//! scratch and the row buffer are reused across records, rows are copied once into the open
//! batch's arena (items share it as `Bytes` slices), and metrics are counted per record.
//!
//! Nothing here drops an event silently. Every event of a record ends in exactly one of: an
//! item of a batch, "filtered" (the destination's filter or schema does not select it,
//! counted), or a dead letter with its reason (invalid event, mapping error, oversized,
//! undecodable record). LaunchDarkly diagnostic payloads are stored but never exported.

use crate::event::stored;
use crate::event::{
    self, DecodedRecord, Event, ExportOptions, Filter, InboundFormat, InvalidEvent, RecordContext,
    Schema,
};
use crate::wal::{Position, Record};

use super::batcher::{Batcher, ItemMeta, Rows};
use super::dead_letter::{DeadLetter, DeadLetterBuffer};

/// Per-record counts, turned into metrics by the caller.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    /// Events handed to the batcher as items.
    pub batched: u64,
    /// Events not selected by the filter or the schema.
    pub filtered: u64,
    /// Structurally invalid events (dead-lettered).
    pub invalid: u64,
    /// Events dead-lettered for any reason (invalid included).
    pub dead_lettered: u64,
}

impl std::ops::AddAssign for RecordCounts {
    fn add_assign(&mut self, other: Self) {
        self.batched += other.batched;
        self.filtered += other.filtered;
        self.invalid += other.invalid;
        self.dead_lettered += other.dead_lettered;
    }
}

/// Reusable state for turning records into batch items.
#[derive(Debug)]
pub struct Pipeline {
    schema: Schema,
    export: ExportOptions,
    filter: Filter,
    decode_scratch: Vec<u8>,
    map_scratch: Vec<u8>,
    rows: Vec<u8>,
    row_ends: Vec<usize>,
    reason: String,
}

impl Pipeline {
    pub fn new(schema: Schema, export: ExportOptions, filter: Filter) -> Self {
        Pipeline {
            schema,
            export,
            filter,
            decode_scratch: Vec::new(),
            map_scratch: Vec::new(),
            rows: Vec::new(),
            row_ends: Vec::new(),
            reason: String::new(),
        }
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Feed one WAL record into `batcher`, dead-lettering what cannot be delivered.
    pub fn process(
        &mut self,
        record: &Record,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> RecordCounts {
        // Decoded events borrow the scratch buffer while `self` is used mutably below.
        let mut scratch = std::mem::take(&mut self.decode_scratch);
        let counts = self.process_with(record, &mut scratch, batcher, dead);
        self.decode_scratch = scratch;
        counts
    }

    fn process_with(
        &mut self,
        record: &Record,
        scratch: &mut Vec<u8>,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> RecordCounts {
        let mut counts = RecordCounts::default();
        let whole_record = Position {
            seq: record.seq,
            event: 0,
        };
        let stored = match stored::decode(&record.payload) {
            Ok(stored) => stored,
            Err(err) => {
                if batcher.begin_record(record.seq, 0).is_some() {
                    let reason = format!("undecodable stored record: {err}");
                    dead.push(DeadLetter {
                        reason: &reason,
                        event_id: None,
                        position: whole_record,
                        batch_id: None,
                        payload: &record.payload,
                    });
                    counts.dead_lettered += 1;
                    batcher.end_record();
                }
                return counts;
            }
        };
        if stored.format == InboundFormat::LdDiagnostic {
            if batcher.begin_record(record.seq, 0).is_some() {
                batcher.end_record();
            }
            return counts;
        }
        let ctx = RecordContext {
            format: stored.format,
            environment: stored.environment,
            payload_id: stored.payload_id,
            schema_version: stored.schema_version,
            seq: record.seq,
            received_at_ms: record.received_at_ms,
        };
        let decoded = match event::decode(&ctx, stored.body, scratch) {
            Ok(decoded) => decoded,
            Err(err) => {
                if batcher.begin_record(record.seq, 0).is_some() {
                    let reason = format!("undecodable record body: {err}");
                    dead.push(DeadLetter {
                        reason: &reason,
                        event_id: None,
                        position: whole_record,
                        batch_id: None,
                        payload: stored.body,
                    });
                    counts.dead_lettered += 1;
                    batcher.end_record();
                }
                return counts;
            }
        };
        let DecodedRecord { events, invalid } = decoded;
        let event_count = events
            .iter()
            .map(|event| event.index())
            .chain(invalid.iter().map(|bad| bad.index))
            .max()
            .map_or(0, |max| max + 1)
            .max(record.event_count);
        let Some(first) = batcher.begin_record(record.seq, event_count) else {
            return counts;
        };

        // Valid and invalid events arrive as two index-ordered lists; merge them so the
        // batcher sees positions in order.
        let mut invalid = invalid.into_iter().peekable();
        for event in events.iter().filter(|event| event.index() >= first) {
            while let Some(bad) = invalid.next_if(|bad| bad.index < event.index()) {
                self.dead_letter_invalid(&ctx, &bad, first, batcher, dead, &mut counts);
            }
            self.offer_event(&ctx, event, batcher, dead, &mut counts);
        }
        for bad in invalid {
            self.dead_letter_invalid(&ctx, &bad, first, batcher, dead, &mut counts);
        }
        batcher.end_record();
        counts
    }

    fn dead_letter_invalid(
        &mut self,
        ctx: &RecordContext<'_>,
        bad: &InvalidEvent,
        first: u32,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
        counts: &mut RecordCounts,
    ) {
        if bad.index < first {
            return;
        }
        batcher.skip(bad.index);
        let event_id = event::event_id(ctx, bad.index);
        self.reason.clear();
        self.reason.push_str("invalid event: ");
        self.reason.push_str(&bad.reason);
        dead.push(DeadLetter {
            reason: &self.reason,
            event_id: Some(&event_id),
            position: Position {
                seq: ctx.seq,
                event: bad.index,
            },
            batch_id: None,
            payload: bad.raw.as_bytes(),
        });
        counts.invalid += 1;
        counts.dead_lettered += 1;
    }

    fn offer_event(
        &mut self,
        ctx: &RecordContext<'_>,
        event: &Event<'_>,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
        counts: &mut RecordCounts,
    ) {
        let index = event.index();
        let position = Position {
            seq: ctx.seq,
            event: index,
        };
        if !self.filter.matches(ctx, event) {
            batcher.skip(index);
            counts.filtered += 1;
            return;
        }
        self.rows.clear();
        self.row_ends.clear();
        let rows = &mut self.rows;
        let row_ends = &mut self.row_ends;
        let mapped = event::map_event(
            self.schema,
            &self.export,
            ctx,
            event,
            &mut self.map_scratch,
            &mut |row: &[u8]| {
                rows.extend_from_slice(row);
                row_ends.push(rows.len());
            },
        );
        if let Err(err) = mapped {
            batcher.skip(index);
            let event_id = event::event_id(ctx, index);
            let reason = format!("cannot map event to schema {}: {err}", self.schema.name());
            dead.push(DeadLetter {
                reason: &reason,
                event_id: Some(&event_id),
                position,
                batch_id: None,
                payload: b"null",
            });
            counts.dead_lettered += 1;
            return;
        }
        if self.row_ends.is_empty() {
            // The schema does not export this kind of event (e.g. index events to Segment).
            batcher.skip(index);
            counts.filtered += 1;
            return;
        }
        let meta = ItemMeta {
            event_id: event::event_id(ctx, index),
            kind: event.kind(),
            key: event.key(),
            context_key: event.context_key(),
            environment: ctx.environment,
            received_at_ms: ctx.received_at_ms,
        };
        let rows = Rows {
            bytes: &self.rows,
            ends: &self.row_ends,
        };
        match batcher.offer(index, meta, rows) {
            Ok(()) => counts.batched += 1,
            Err(rejected) => {
                let event_id = event::event_id(ctx, index);
                let reason = rejected.to_string();
                for row in rows.iter() {
                    dead.push(DeadLetter {
                        reason: &reason,
                        event_id: Some(&event_id),
                        position,
                        batch_id: None,
                        payload: row,
                    });
                }
                counts.dead_lettered += 1;
            }
        }
    }
}
