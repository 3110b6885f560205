//! Record → events → filter → schema rows → batcher, for one destination.
//!
//! This is the per-event hot path, written to allocate little: the decode buffer, the mapping
//! scratch and the row buffer are reused across records, rows are copied once into the open
//! batch's arena (items share it as `Bytes` slices), and metrics are counted per record.
//!
//! Nothing here drops an event silently. Every event of a record ends in exactly one of: an
//! item of a batch, "filtered" (the destination's filter or schema does not select it,
//! counted), or a dead letter with its reason (invalid event, mapping error, oversized,
//! undecodable record). LaunchDarkly diagnostic payloads are stored but never exported as
//! events (raw-records destinations get them: see below).
//!
//! ## Huge records, a part at a time
//!
//! A record whose body is a large JSON array (≥ [`PARTS_FROM_BYTES`]) is decoded in parts of
//! [`PART_EVENTS`] events ([`event::array_parts`]): after each part, if the batcher has a batch
//! ready, [`Pipeline::process_part`] returns [`RecordProgress::More`] and the engine sends before it
//! asks for the next part (the batcher's position says where to go on). So a 10 MiB body of
//! 374,000 events costs one part's tape, events and batches in memory, not the whole record's.
//!
//! A destination that asks for raw records ([`Input::RawRecords`]) gets one item per stored
//! record instead: the stored bytes (metadata header and body, read back with
//! `dest::RawRecord`), with the record's id, format, payload id, environment and receive time
//! as item metadata. Every record is handed on, diagnostics included; event filters and
//! schemas do not apply; the cursor, batching, retries and dead letters work exactly as for
//! events (the record is event 0 of its position).

use crate::dest::Input;
use crate::event::stored::{self, StoredBatch};
use crate::event::{
    self, ArrayPart, DecodeScratch, DecodedRecord, Event, ExportOptions, Filter, InboundFormat,
    InvalidEvent, RecordContext, Schema, VerbatimText,
};
use crate::wal::{Position, Record};
use tokio::sync::watch;

use super::batcher::{Batcher, ItemMeta, Rows};
use super::dead_letter::{DeadLetter, DeadLetterBuffer};
use super::recording::{self, Recorder, Recording, SizeHint};
use super::shared_records::{Lookup, Member};

/// The event index whose id names a whole record (no event has it: indexes are below the
/// record's event count).
const RAW_RECORD_INDEX: u32 = u32::MAX;

/// Bodies from this size on are decoded in parts (smaller ones whole: one parse is cheaper than
/// a scan plus parses, and their memory is small anyway).
pub const PARTS_FROM_BYTES: usize = 1024 * 1024;
/// Events per part of a huge record.
pub const PART_EVENTS: u32 = 4096;

/// How far [`Pipeline::process_part`] got with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordProgress {
    /// Every event of the record was handed on.
    Done,
    /// Batches are ready: send them, then call again with the same record.
    More,
    /// Another destination is decoding this record for this one too: await
    /// [`Pipeline::wait_for_shared`], then call again with the same record.
    Wait,
}

/// What [`Pipeline::process_shared`] did.
enum Shared {
    Replayed(RecordCounts),
    Wait,
    /// Decode on your own.
    Own,
}

/// Longest wait for another destination to finish decoding a record (it takes well under a
/// millisecond unless its thread was preempted); after it, the destination decodes on its own.
const RECORDING_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// The parts of the record being processed a part at a time.
#[derive(Debug)]
struct Unfinished {
    seq: u64,
    parts: Vec<ArrayPart>,
}

/// Only the pass-through schema copies events as sent; expanding summaries writes their
/// numbers from the tape, so their exact texts are kept then.
fn verbatim_mode(schema: Schema, export: &ExportOptions) -> VerbatimText {
    match schema {
        Schema::LaunchDarkly if export.expand_summaries => VerbatimText::Keep,
        Schema::LaunchDarkly => VerbatimText::KeepWithoutNumberTexts,
        _ => VerbatimText::Off,
    }
}

/// A record being decoded in parts, with what its header said.
struct RecordInParts<'a> {
    record: &'a Record,
    ctx: &'a RecordContext<'a>,
    body: &'a [u8],
}

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
    input: Input,
    schema: Schema,
    export: ExportOptions,
    filter: Filter,
    decode_scratch: DecodeScratch,
    map_scratch: Vec<u8>,
    rows: Vec<u8>,
    row_ends: Vec<usize>,
    reason: String,
    unfinished: Option<Unfinished>,
    /// This destination's place among destinations that share decoded records (same schema,
    /// export options, filter and input): see `shared_records.rs`.
    shared: Option<Member>,
    /// The last recording's lengths, to size the next one's buffers at once.
    recording_hint: SizeHint,
    /// Closes when the record another member is recording is ready (see [`RecordProgress::Wait`]).
    waiting: Option<watch::Receiver<()>>,
    /// The record last waited for: it is not waited for twice.
    waited_seq: Option<u64>,
}

impl Pipeline {
    pub fn new(schema: Schema, export: ExportOptions, filter: Filter) -> Self {
        let verbatim = verbatim_mode(schema, &export);
        Pipeline {
            input: Input::MappedEvents,
            schema,
            export,
            filter,
            decode_scratch: DecodeScratch::with_verbatim(verbatim),
            map_scratch: Vec::new(),
            rows: Vec::new(),
            row_ends: Vec::new(),
            reason: String::new(),
            unfinished: None,
            shared: None,
            recording_hint: SizeHint::default(),
            waiting: None,
            waited_seq: None,
        }
    }

    /// Share decoded records with the other members of `member`'s group.
    pub fn with_shared(mut self, member: Option<Member>) -> Self {
        self.shared = member;
        self
    }

    /// Hand the batcher raw records instead of mapped events (see the module doc).
    pub fn with_input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// Feed one whole WAL record into `batcher`, dead-lettering what cannot be delivered.
    pub fn process(
        &mut self,
        record: &Record,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> RecordCounts {
        let mut total = RecordCounts::default();
        loop {
            let (counts, progress) = self.process_part(record, batcher, dead);
            total += counts;
            match progress {
                RecordProgress::Done => return total,
                RecordProgress::More => {}
                // Synchronous: no waiting; the next call decodes on its own.
                RecordProgress::Wait => self.waiting = None,
            }
        }
    }

    /// Forget a huge record's remaining parts (the worker rewound and reads it again).
    pub fn forget_unfinished(&mut self) {
        self.unfinished = None;
        self.waiting = None;
    }

    /// True after [`RecordProgress::Wait`], until [`Pipeline::wait_for_shared`] returned.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Wait (briefly, see [`RECORDING_WAIT`]) until the record another destination is decoding
    /// for this one is ready. Cancel-safe: awaiting again waits again.
    pub async fn wait_for_shared(&mut self) {
        if let Some(recorder) = self.waiting.as_mut() {
            // Closed when the recording is published or withdrawn: either way, look again.
            let _ = tokio::time::timeout(RECORDING_WAIT, recorder.changed()).await;
        }
        self.waiting = None;
    }

    /// Feed `record` into `batcher` until it is done or, for a huge record, until batches are
    /// ready (see the module doc); call again with the same record after [`RecordProgress::More`].
    pub fn process_part(
        &mut self,
        record: &Record,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> (RecordCounts, RecordProgress) {
        match self.process_shared(record, batcher, dead) {
            Shared::Replayed(counts) => return (counts, RecordProgress::Done),
            Shared::Wait => return (RecordCounts::default(), RecordProgress::Wait),
            Shared::Own => {}
        }
        // Decoded events borrow the scratch buffer while `self` is used mutably below.
        let mut scratch = std::mem::take(&mut self.decode_scratch);
        let mut counts = RecordCounts::default();
        let progress = self.process_with(record, &mut scratch, batcher, dead, &mut counts);
        self.decode_scratch = scratch;
        (counts, progress)
    }

    /// Replay what another destination of the group recorded for `record`, or record it for
    /// them and replay it, or wait for the one recording it; [`Shared::Own`] when this
    /// destination decodes on its own (it shares with nobody, the record is huge or raw input,
    /// it lags behind the records the group keeps, or it waited already).
    fn process_shared(
        &mut self,
        record: &Record,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> Shared {
        let small = record.payload.len() < PARTS_FROM_BYTES;
        let lookup = match &self.shared {
            Some(member) if small && self.input == Input::MappedEvents => member.lookup(record.seq),
            _ => return Shared::Own,
        };
        let recording = match lookup {
            Lookup::Hit(recording) => recording,
            Lookup::Record(reservation) => {
                let recording = self.record(record);
                reservation.finish(recording)
            }
            Lookup::Busy(recorder) if self.waited_seq != Some(record.seq) => {
                self.waited_seq = Some(record.seq);
                self.waiting = Some(recorder);
                return Shared::Wait;
            }
            Lookup::Busy(_) | Lookup::Miss => {
                if let Some(member) = &self.shared {
                    member.count_miss();
                }
                return Shared::Own;
            }
            Lookup::Alone => return Shared::Own,
        };
        Shared::Replayed(recording::replay(&recording, batcher, dead))
    }

    /// Everything processing `record` produces, from its first event on, for any destination
    /// configured like this one (see `recording.rs`). Never a huge record.
    fn record(&mut self, record: &Record) -> Recording {
        let mut recorder = Recorder::new(record.seq, self.recording_hint);
        let mut scratch = std::mem::take(&mut self.decode_scratch);
        if let Some(stored) = decode_stored(record, &mut recorder) {
            let ctx = record_context(record, &stored);
            self.process_whole(record, &stored, &ctx, &mut scratch, &mut recorder);
        }
        self.decode_scratch = scratch;
        let recording = recorder.finish();
        self.recording_hint = recording.size_hint();
        recording
    }

    fn process_with(
        &mut self,
        record: &Record,
        scratch: &mut DecodeScratch,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
        counts: &mut RecordCounts,
    ) -> RecordProgress {
        let Some(stored) = decode_stored(record, &mut Direct::new(batcher, dead, counts)) else {
            return RecordProgress::Done;
        };
        let ctx = record_context(record, &stored);
        // Raw records are every record as received, diagnostics included (a forwarder sends
        // them on); as events, diagnostics are never exported.
        if self.input == Input::RawRecords {
            *counts += Self::offer_raw(record, &stored, &ctx, batcher, dead);
            return RecordProgress::Done;
        }
        if stored.body.len() >= PARTS_FROM_BYTES && event::decodes_in_parts(ctx.format, stored.body)
        {
            let parts = match self.unfinished.take() {
                Some(unfinished) if unfinished.seq == record.seq => Some(unfinished.parts),
                _ => event::array_parts(stored.body, PART_EVENTS),
            };
            if let Some(parts) = parts {
                let input = RecordInParts {
                    record,
                    ctx: &ctx,
                    body: stored.body,
                };
                return self.process_in_parts(input, parts, scratch, batcher, dead, counts);
            }
        }
        let mut out = Direct::new(batcher, dead, counts);
        self.process_whole(record, &stored, &ctx, scratch, &mut out);
        RecordProgress::Done
    }

    /// Decode a whole record body and hand its events to `out`.
    fn process_whole<O: Output>(
        &mut self,
        record: &Record,
        stored: &StoredBatch<'_>,
        ctx: &RecordContext<'_>,
        scratch: &mut DecodeScratch,
        out: &mut O,
    ) {
        if stored.format == InboundFormat::LdDiagnostic {
            if out.begin_record(record.seq, 0).is_some() {
                out.end_record();
            }
            return;
        }
        let decoded = match event::decode(ctx, stored.body, scratch) {
            Ok(decoded) => decoded,
            Err(err) => {
                if out.begin_record(record.seq, 0).is_some() {
                    let reason = format!("undecodable record body: {err}");
                    out.dead_letter_record(whole_record_letter(record, &reason, stored.body));
                    out.end_record();
                }
                return;
            }
        };
        let DecodedRecord { events, invalid } = &decoded;
        let event_count = events
            .iter()
            .map(|event| event.index())
            .chain(invalid.iter().map(|bad| bad.index))
            .max()
            .map_or(0, |max| max + 1)
            .max(record.event_count);
        let Some(first) = out.begin_record(record.seq, event_count) else {
            return;
        };
        self.offer_decoded(ctx, decoded, first, out);
        out.end_record();
    }

    /// Hand on the parts of a huge record from the batcher's position, stopping after a part
    /// that left batches ready (the parts are kept for the next call).
    fn process_in_parts(
        &mut self,
        input: RecordInParts<'_>,
        parts: Vec<ArrayPart>,
        scratch: &mut DecodeScratch,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
        counts: &mut RecordCounts,
    ) -> RecordProgress {
        let RecordInParts { record, ctx, body } = input;
        let events = parts
            .last()
            .map_or(0, |part| part.first_index + part.count)
            .max(record.event_count);
        let Some(first) = batcher.begin_record(record.seq, events) else {
            return RecordProgress::Done;
        };
        for (number, part) in parts.iter().enumerate() {
            if part.first_index + part.count <= first {
                continue;
            }
            match event::decode_part(&body[part.bytes.clone()], part.first_index, scratch) {
                Ok(decoded) => {
                    let mut out = Direct::new(batcher, dead, counts);
                    self.offer_decoded(ctx, decoded, first, &mut out);
                }
                Err(err) => {
                    Self::dead_letter_part(ctx, body, part, first, &err, batcher, dead, counts)
                }
            }
            if number + 1 < parts.len() && batcher.has_ready() {
                self.unfinished = Some(Unfinished {
                    seq: record.seq,
                    parts,
                });
                return RecordProgress::More;
            }
        }
        batcher.end_record();
        RecordProgress::Done
    }

    /// Valid and invalid events arrive as two index-ordered lists; merge them so the batcher
    /// sees positions in order.
    fn offer_decoded<O: Output>(
        &mut self,
        ctx: &RecordContext<'_>,
        decoded: DecodedRecord<'_>,
        first: u32,
        out: &mut O,
    ) {
        let DecodedRecord { events, invalid } = decoded;
        let mut invalid = invalid.into_iter().peekable();
        for event in events.iter().filter(|event| event.index() >= first) {
            while let Some(bad) = invalid.next_if(|bad| bad.index < event.index()) {
                self.dead_letter_invalid(ctx, &bad, first, out);
            }
            self.offer_event(ctx, event, out);
        }
        for bad in invalid {
            self.dead_letter_invalid(ctx, &bad, first, out);
        }
    }

    /// A part that does not parse (never for bodies validated at ingest): its text becomes one
    /// dead letter at its first event, and its events are skipped.
    #[allow(clippy::too_many_arguments)]
    fn dead_letter_part(
        ctx: &RecordContext<'_>,
        body: &[u8],
        part: &ArrayPart,
        first: u32,
        err: &event::DecodeError,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
        counts: &mut RecordCounts,
    ) {
        let from = part.first_index.max(first);
        let reason = format!(
            "undecodable events {from}..{} of the record body: {err}",
            part.first_index + part.count
        );
        dead.push(DeadLetter {
            reason: &reason,
            event_id: None,
            position: Position {
                seq: ctx.seq,
                event: from,
            },
            batch_id: None,
            payload: &body[part.bytes.clone()],
        });
        for index in from..part.first_index + part.count {
            batcher.skip(index);
        }
        counts.dead_lettered += 1;
    }

    /// One item for the whole record: its stored bytes, at event index 0.
    fn offer_raw(
        record: &Record,
        stored: &StoredBatch<'_>,
        ctx: &RecordContext<'_>,
        batcher: &mut Batcher,
        dead: &mut DeadLetterBuffer,
    ) -> RecordCounts {
        let mut counts = RecordCounts::default();
        let Some(first) = batcher.begin_record(record.seq, 1) else {
            return counts;
        };
        if first != 0 || batcher.position().seq != record.seq {
            // Already delivered (resumed past this record).
            batcher.end_record();
            return counts;
        }
        let event_id = event::EventIdText::of(ctx, RAW_RECORD_INDEX);
        let meta = ItemMeta {
            event_id: event_id.as_str(),
            kind: stored.format.name(),
            key: stored.payload_id,
            context_key: None,
            environment: stored.environment,
            received_at_ms: record.received_at_ms,
        };
        let ends = [record.payload.len()];
        let rows = Rows {
            bytes: &record.payload,
            ends: &ends,
        };
        match batcher.offer(0, meta, rows) {
            Ok(()) => counts.batched += 1,
            Err(rejected) => {
                let reason = rejected.to_string();
                dead.push(DeadLetter {
                    reason: &reason,
                    event_id: None,
                    position: Position {
                        seq: record.seq,
                        event: 0,
                    },
                    batch_id: None,
                    payload: stored.body,
                });
                counts.dead_lettered += 1;
            }
        }
        batcher.end_record();
        counts
    }

    fn dead_letter_invalid<O: Output>(
        &mut self,
        ctx: &RecordContext<'_>,
        bad: &InvalidEvent,
        first: u32,
        out: &mut O,
    ) {
        if bad.index < first {
            return;
        }
        let event_id = event::event_id(ctx, bad.index);
        self.reason.clear();
        self.reason.push_str("invalid event: ");
        self.reason.push_str(&bad.reason);
        let letter = DeadLetter {
            reason: &self.reason,
            event_id: Some(&event_id),
            position: Position {
                seq: ctx.seq,
                event: bad.index,
            },
            batch_id: None,
            payload: bad.raw.as_bytes(),
        };
        out.dead_letter_event(letter, EventFailure::Invalid);
    }

    fn offer_event<O: Output>(&mut self, ctx: &RecordContext<'_>, event: &Event<'_>, out: &mut O) {
        let index = event.index();
        if !self.filter.matches(ctx, event) {
            out.filtered(index);
            return;
        }
        self.rows.clear();
        self.row_ends.clear();
        let rows = &mut self.rows;
        let row_ends = &mut self.row_ends;
        let id = event::EventIdText::of(ctx, index);
        let mapped = event::map_event_with_id(
            self.schema,
            &self.export,
            ctx,
            event,
            &id,
            &mut self.map_scratch,
            &mut |row: &[u8]| {
                rows.extend_from_slice(row);
                row_ends.push(rows.len());
            },
        );
        if let Err(err) = mapped {
            let reason = format!("cannot map event to schema {}: {err}", self.schema.name());
            let letter = DeadLetter {
                reason: &reason,
                event_id: Some(id.as_str()),
                position: Position {
                    seq: ctx.seq,
                    event: index,
                },
                batch_id: None,
                payload: b"null",
            };
            out.dead_letter_event(letter, EventFailure::Unmappable);
            return;
        }
        if self.row_ends.is_empty() {
            // The schema does not export this kind of event (e.g. index events to Segment).
            out.filtered(index);
            return;
        }
        let item = EventItem {
            event_id: id.as_str(),
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
        out.offer(index, &item, rows);
    }
}

/// Decode the stored record's header; an undecodable one becomes one dead letter for the whole
/// record (`None`: nothing more to do).
fn decode_stored<'r, O: Output>(record: &'r Record, out: &mut O) -> Option<StoredBatch<'r>> {
    match stored::decode(&record.payload) {
        Ok(stored) => Some(stored),
        Err(err) => {
            if out.begin_record(record.seq, 0).is_some() {
                let reason = format!("undecodable stored record: {err}");
                out.dead_letter_record(whole_record_letter(record, &reason, &record.payload));
                out.end_record();
            }
            None
        }
    }
}

fn record_context<'r>(record: &Record, stored: &StoredBatch<'r>) -> RecordContext<'r> {
    RecordContext {
        format: stored.format,
        environment: stored.environment,
        payload_id: stored.payload_id,
        schema_version: stored.schema_version,
        seq: record.seq,
        received_at_ms: record.received_at_ms,
        instance_id: stored.instance_id,
    }
}

fn whole_record_letter<'a>(record: &Record, reason: &'a str, payload: &'a [u8]) -> DeadLetter<'a> {
    DeadLetter {
        reason,
        event_id: None,
        position: Position {
            seq: record.seq,
            event: 0,
        },
        batch_id: None,
        payload,
    }
}

/// Why one event became a dead letter while processing (counted apart in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventFailure {
    /// Structurally invalid.
    Invalid,
    /// The schema mapping refused it.
    Unmappable,
}

/// The metadata of one mapped event, borrowed from wherever it lives (the decoded record, or a
/// recording); [`item_meta`] turns it into the batcher's [`ItemMeta`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventItem<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub key: Option<&'a str>,
    pub context_key: Option<&'a str>,
    pub environment: &'a str,
    pub received_at_ms: u64,
}

/// The one place an [`ItemMeta`] is built from an event's metadata (fresh or replayed).
fn item_meta<'a>(item: &EventItem<'a>) -> ItemMeta<'a> {
    ItemMeta {
        event_id: item.event_id,
        kind: item.kind,
        key: item.key,
        context_key: item.context_key,
        environment: item.environment,
        received_at_ms: item.received_at_ms,
    }
}

/// Where the outcome of each event goes: a destination's batcher and dead letters
/// ([`Direct`]), or a [`Recorder`] whose recording destinations configured alike replay.
/// Calls come in log order, as they would to the batcher.
pub(crate) trait Output {
    /// As [`Batcher::begin_record`]: the first event index to hand on, or `None` to skip the
    /// record.
    fn begin_record(&mut self, seq: u64, event_count: u32) -> Option<u32>;
    /// The record is done.
    fn end_record(&mut self);
    /// Event `index` is not selected by the filter or the schema.
    fn filtered(&mut self, index: u32);
    /// Event `letter.position.event` cannot be delivered: it is consumed as a dead letter.
    fn dead_letter_event(&mut self, letter: DeadLetter<'_>, failure: EventFailure);
    /// The record cannot be decoded at all: one dead letter stands for it.
    fn dead_letter_record(&mut self, letter: DeadLetter<'_>);
    /// Event `index` mapped to `rows`.
    fn offer(&mut self, index: u32, item: &EventItem<'_>, rows: Rows<'_>);
}

/// A destination's own batcher and dead letters, counting what happens.
pub(crate) struct Direct<'a> {
    batcher: &'a mut Batcher,
    dead: &'a mut DeadLetterBuffer,
    counts: &'a mut RecordCounts,
}

impl<'a> Direct<'a> {
    pub(crate) fn new(
        batcher: &'a mut Batcher,
        dead: &'a mut DeadLetterBuffer,
        counts: &'a mut RecordCounts,
    ) -> Self {
        Direct {
            batcher,
            dead,
            counts,
        }
    }
}

impl Output for Direct<'_> {
    fn begin_record(&mut self, seq: u64, event_count: u32) -> Option<u32> {
        self.batcher.begin_record(seq, event_count)
    }

    fn end_record(&mut self) {
        self.batcher.end_record();
    }

    fn filtered(&mut self, index: u32) {
        self.batcher.skip(index);
        self.counts.filtered += 1;
    }

    fn dead_letter_event(&mut self, letter: DeadLetter<'_>, failure: EventFailure) {
        self.batcher.skip(letter.position.event);
        self.dead.push(letter);
        if failure == EventFailure::Invalid {
            self.counts.invalid += 1;
        }
        self.counts.dead_lettered += 1;
    }

    fn dead_letter_record(&mut self, letter: DeadLetter<'_>) {
        self.dead.push(letter);
        self.counts.dead_lettered += 1;
    }

    fn offer(&mut self, index: u32, item: &EventItem<'_>, rows: Rows<'_>) {
        // Inside a record the batcher's position is in it (an offer may move it past the end).
        let position = Position {
            seq: self.batcher.position().seq,
            event: index,
        };
        let Err(rejected) = self.batcher.offer(index, item_meta(item), rows) else {
            self.counts.batched += 1;
            return;
        };
        let reason = rejected.to_string();
        for row in rows.iter() {
            self.dead.push(DeadLetter {
                reason: &reason,
                event_id: Some(item.event_id),
                position,
                batch_id: None,
                payload: row,
            });
        }
        self.counts.dead_lettered += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::delivery::batcher::CutBatch;
    use crate::dest::BatchLimits;
    use crate::event::stored::{encode_header, StoredMeta};
    use crate::event::{FilterConfig, InstanceId};

    const INSTANCE: InstanceId = InstanceId([0x5a; 16]);

    pub(super) fn record(seq: u64, format: InboundFormat, body: &str) -> Record {
        let mut payload = Vec::new();
        encode_header(
            &StoredMeta {
                format: Some(format),
                instance_id: Some(INSTANCE),
                schema_version: Some(4),
                environment: "production",
                payload_id: "",
                tags: "",
                user_agent: "",
                request: Default::default(),
            },
            &mut payload,
        );
        payload.extend_from_slice(body.as_bytes());
        Record {
            seq,
            tag: format.code(),
            event_count: 0,
            received_at_ms: 1_717_000_000_000,
            payload: Bytes::from(payload),
        }
    }

    fn pipeline(filter: &[(&str, &str)]) -> Pipeline {
        let (config, rest) = FilterConfig::from_query(filter).unwrap();
        assert!(rest.is_empty());
        Pipeline::new(
            Schema::LaunchDarkly,
            ExportOptions {
                project: "proj".into(),
                ..ExportOptions::default()
            },
            Filter::new(&config).unwrap(),
        )
    }

    fn batcher(acked: Position) -> Batcher {
        let limits = BatchLimits {
            linger: Duration::from_secs(60),
            ..BatchLimits::default()
        };
        Batcher::new("d", Schema::LaunchDarkly, limits, acked, None)
    }

    fn drain(batcher: &mut Batcher) -> Vec<CutBatch> {
        batcher.cut_lingering();
        std::iter::from_fn(|| batcher.pop_ready()).collect()
    }

    const FEATURE: &str = r#"{"kind":"feature","creationDate":1717000000001,"key":"new-checkout","version":3,"context":{"kind":"user","key":"u1"},"variation":1,"value":true,"default":false}"#;
    const CUSTOM: &str = r#"{"kind":"custom","creationDate":1717000000500,"key":"purchase","contextKeys":{"user":"u2"},"metricValue":4.5}"#;

    #[test]
    fn maps_events_to_envelopes_with_stable_ids() {
        let mut p = pipeline(&[]);
        let mut b = batcher(Position { seq: 7, event: 0 });
        let mut dead = DeadLetterBuffer::new("d");
        let rec = record(7, InboundFormat::LdBulk, &format!("[{FEATURE},{CUSTOM}]"));
        let counts = p.process(&rec, &mut b, &mut dead);
        assert_eq!(counts.batched, 2);
        assert!(dead.is_empty());
        let cut = drain(&mut b);
        assert_eq!(cut.len(), 1);
        let items = &cut[0].batch.items;
        assert_eq!(items[0].kind, "feature");
        assert_eq!(items[0].key.as_deref(), Some("new-checkout"));
        assert_eq!(items[0].context_key.as_deref(), Some("u1"));
        assert_eq!(items[1].context_key.as_deref(), Some("u2"));
        assert_eq!(items[0].environment, "production");
        let ctx = RecordContext {
            format: InboundFormat::LdBulk,
            environment: "production",
            payload_id: None,
            schema_version: Some(4),
            seq: 7,
            received_at_ms: rec.received_at_ms,
            instance_id: Some(INSTANCE),
        };
        assert_eq!(items[1].event_id, event::event_id(&ctx, 1));
        let envelope: serde_json::Value = serde_json::from_slice(&items[0].payload).unwrap();
        assert_eq!(envelope["project"], "proj");
        assert_eq!(envelope["event"]["key"], "new-checkout");
        assert_eq!(
            (cut[0].start, cut[0].end),
            (Position { seq: 7, event: 0 }, Position { seq: 8, event: 0 })
        );
    }

    #[test]
    fn invalid_events_are_dead_lettered_without_losing_neighbours() {
        let mut p = pipeline(&[]);
        let mut b = batcher(Position { seq: 1, event: 0 });
        let mut dead = DeadLetterBuffer::new("d");
        let rec = record(
            1,
            InboundFormat::LdBulk,
            &format!("[{CUSTOM},42,{FEATURE}]"),
        );
        let counts = p.process(&rec, &mut b, &mut dead);
        assert_eq!(
            (counts.batched, counts.invalid, counts.dead_lettered),
            (2, 1, 1)
        );
        let (lines, count) = dead.take();
        assert_eq!(count, 1);
        let line: serde_json::Value = serde_json::from_slice(&lines).unwrap();
        assert_eq!(line["event"], 1);
        assert_eq!(line["payload"], 42);
        assert!(
            line["reason"]
                .as_str()
                .unwrap()
                .starts_with("invalid event"),
            "{line}"
        );
        let cut = drain(&mut b);
        assert_eq!(
            cut[0].positions,
            vec![Position { seq: 1, event: 0 }, Position { seq: 1, event: 2 }]
        );
    }

    #[test]
    fn filtered_events_are_counted_and_covered_by_the_span() {
        let mut p = pipeline(&[("kinds", "custom")]);
        let mut b = batcher(Position { seq: 1, event: 0 });
        let mut dead = DeadLetterBuffer::new("d");
        let counts = p.process(
            &record(1, InboundFormat::LdBulk, &format!("[{FEATURE}]")),
            &mut b,
            &mut dead,
        );
        assert_eq!((counts.batched, counts.filtered), (0, 1));
        let counts = p.process(
            &record(2, InboundFormat::LdBulk, &format!("[{FEATURE},{CUSTOM}]")),
            &mut b,
            &mut dead,
        );
        assert_eq!((counts.batched, counts.filtered), (1, 1));
        let cut = drain(&mut b);
        assert!(cut[0].batch.items.is_empty(), "record 1 is an empty span");
        assert_eq!(cut[0].end, Position { seq: 2, event: 0 });
        assert_eq!(cut[1].batch.items.len(), 1);
        assert_eq!(cut[1].positions, vec![Position { seq: 2, event: 1 }]);
    }

    #[test]
    fn diagnostics_are_skipped_and_garbage_is_dead_lettered_whole() {
        let mut p = pipeline(&[]);
        let mut b = batcher(Position { seq: 1, event: 0 });
        let mut dead = DeadLetterBuffer::new("d");
        let diag = record(1, InboundFormat::LdDiagnostic, r#"{"kind":"diagnostic"}"#);
        assert_eq!(p.process(&diag, &mut b, &mut dead), RecordCounts::default());
        assert!(dead.is_empty());
        let garbage = Record {
            seq: 2,
            tag: 0,
            event_count: 1,
            received_at_ms: 0,
            payload: Bytes::from_static(b"\x09not a stored record"),
        };
        let counts = p.process(&garbage, &mut b, &mut dead);
        assert_eq!(counts.dead_lettered, 1);
        let (lines, _) = dead.take();
        let line: serde_json::Value = serde_json::from_slice(&lines).unwrap();
        assert!(
            line["reason"].as_str().unwrap().contains("undecodable"),
            "{line}"
        );
        assert_eq!(b.position(), Position { seq: 3, event: 0 });
    }

    #[test]
    fn raw_records_become_one_item_each_with_their_metadata() {
        let mut p = pipeline(&[("kinds", "custom")]).with_input(Input::RawRecords);
        let mut b = batcher(Position { seq: 1, event: 0 });
        let mut dead = DeadLetterBuffer::new("d");
        let body = format!("[{FEATURE},{CUSTOM}]");
        for seq in 1..=2 {
            let counts = p.process(
                &record(seq, InboundFormat::LdBulk, &body),
                &mut b,
                &mut dead,
            );
            assert_eq!(
                counts.batched, 1,
                "one item per record, filters do not apply"
            );
        }
        let diag = record(3, InboundFormat::LdDiagnostic, r#"{"kind":"diagnostic"}"#);
        assert_eq!(
            p.process(&diag, &mut b, &mut dead).batched,
            1,
            "diagnostics are raw records too"
        );
        assert!(dead.is_empty());
        let cut = drain(&mut b);
        let items: Vec<_> = cut.iter().flat_map(|c| c.batch.items.iter()).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].kind, InboundFormat::LdDiagnostic.name());
        let raw = crate::dest::RawRecord::of(items[0]).unwrap();
        assert_eq!(raw.stored.body, body.as_bytes());
        assert_eq!(raw.stored.format, InboundFormat::LdBulk);
        assert_eq!(raw.stored.environment, "production");
        assert_eq!(raw.stored.schema_version, Some(4));
        assert_eq!(raw.received_at_ms, 1_717_000_000_000);
        assert_eq!(items[0].kind, InboundFormat::LdBulk.name());
        assert_ne!(items[0].event_id, items[1].event_id);
        let positions: Vec<Position> = cut.iter().flat_map(|c| c.positions.clone()).collect();
        assert_eq!(
            positions,
            vec![
                Position { seq: 1, event: 0 },
                Position { seq: 2, event: 0 },
                Position { seq: 3, event: 0 }
            ]
        );
        assert_eq!(b.position(), Position { seq: 4, event: 0 });

        // Resuming after record 1 hands out record 2 only.
        let mut resumed = batcher(Position { seq: 2, event: 0 });
        for seq in 1..=2 {
            p.process(
                &record(seq, InboundFormat::LdBulk, &body),
                &mut resumed,
                &mut dead,
            );
        }
        let cut = drain(&mut resumed);
        let positions: Vec<Position> = cut.iter().flat_map(|c| c.positions.clone()).collect();
        assert_eq!(positions, vec![Position { seq: 2, event: 0 }]);
    }

    #[test]
    fn a_huge_record_is_handed_on_a_part_at_a_time_and_loses_nothing() {
        let mut p = pipeline(&[]);
        let limits = BatchLimits {
            max_items: 500,
            linger: Duration::from_secs(60),
            ..BatchLimits::default()
        };
        let mut b = Batcher::new("d", Schema::LaunchDarkly, limits, Position::default(), None);
        let mut dead = DeadLetterBuffer::new("d");
        let count = 12_000usize;
        let events: Vec<String> = (0..count)
            .map(|i| match i {
                5000 => "42".to_string(),
                _ => CUSTOM.replace("purchase", &format!("purchase-{i}")),
            })
            .collect();
        let rec = record(0, InboundFormat::LdBulk, &format!("[{}]", events.join(",")));
        assert!(rec.payload.len() > PARTS_FROM_BYTES);
        let (mut cut, mut calls, mut total) = (Vec::new(), 0, RecordCounts::default());
        loop {
            let (counts, progress) = p.process_part(&rec, &mut b, &mut dead);
            total += counts;
            calls += 1;
            let ready: Vec<CutBatch> = std::iter::from_fn(|| b.pop_ready()).collect();
            assert!(
                ready.len() <= PART_EVENTS as usize / 500 + 1,
                "one part's batches"
            );
            cut.extend(ready);
            if progress == RecordProgress::Done {
                break;
            }
        }
        cut.extend(drain(&mut b));
        assert!(calls >= count / PART_EVENTS as usize, "{calls} calls");
        assert_eq!((total.batched, total.invalid), (count as u64 - 1, 1));
        let positions: Vec<u32> = cut
            .iter()
            .flat_map(|c| c.positions.iter().map(|p| p.event))
            .collect();
        let expected: Vec<u32> = (0..count as u32).filter(|&i| i != 5000).collect();
        assert_eq!(positions, expected);
        let items: Vec<_> = cut.iter().flat_map(|c| c.batch.items.iter()).collect();
        assert_eq!(items[5000].key.as_deref(), Some("purchase-5001"));
        assert_eq!(cut.last().unwrap().end, Position { seq: 1, event: 0 });
        let (lines, _) = dead.take();
        let line: serde_json::Value = serde_json::from_slice(&lines).unwrap();
        assert_eq!(
            (line["event"].as_u64(), line["payload"].as_u64()),
            (Some(5000), Some(42))
        );
    }

    #[test]
    fn resuming_inside_a_record_skips_events_already_acked() {
        let mut p = pipeline(&[]);
        let mut b = batcher(Position { seq: 4, event: 1 });
        let mut dead = DeadLetterBuffer::new("d");
        let rec = record(
            4,
            InboundFormat::LdBulk,
            &format!("[{FEATURE},42,{CUSTOM}]"),
        );
        let counts = p.process(&rec, &mut b, &mut dead);
        // Event 0 is acked; the invalid event 1 and event 2 are new.
        assert_eq!((counts.batched, counts.invalid), (1, 1));
        let cut = drain(&mut b);
        assert_eq!(cut[0].start, Position { seq: 4, event: 1 });
        assert_eq!(cut[0].batch.items[0].kind, "custom");
    }
}

/// Decoding once for several destinations (`shared_records.rs`) must not change anything a
/// destination produces: batches, batch ids, dead letters and counts are compared with a
/// pipeline that decodes on its own, over generated logs, starts and interleavings.
#[cfg(test)]
mod sharing_tests {
    use std::time::Duration;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::tests::record as stored;
    use super::*;
    use crate::delivery::batcher::CutBatch;
    use crate::delivery::shared_records::{Fingerprint, SharedRecords};
    use crate::dest::BatchLimits;
    use crate::event::FilterConfig;

    /// One generated event of a record body.
    #[derive(Debug, Clone)]
    enum Gen {
        Feature(u8),
        /// A custom event whose key is this long (long ones exceed the item limit).
        Custom(u16),
        /// Not an object: invalid.
        Invalid,
        /// Filtered out by the default kinds.
        Index,
    }

    #[derive(Debug, Clone)]
    enum GenRecord {
        Bulk(Vec<Gen>),
        Diagnostic,
        Garbage,
        BadBody,
    }

    fn event_json(event: &Gen, at: usize) -> String {
        match event {
            Gen::Feature(v) => format!(
                r#"{{"kind":"feature","creationDate":{at},"key":"flag-{v}","version":3,"context":{{"kind":"user","key":"u{at}"}},"variation":1,"value":true}}"#
            ),
            Gen::Custom(len) => format!(
                r#"{{"kind":"custom","creationDate":{at},"key":"{}","contextKeys":{{"user":"u{at}"}}}}"#,
                "k".repeat(usize::from(*len).max(1))
            ),
            Gen::Invalid => "42".to_string(),
            Gen::Index => format!(
                r#"{{"kind":"index","creationDate":{at},"context":{{"kind":"user","key":"u{at}"}}}}"#
            ),
        }
    }

    fn build(seq: u64, record: &GenRecord) -> Record {
        match record {
            GenRecord::Bulk(events) => {
                let body: Vec<String> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| event_json(e, i))
                    .collect();
                stored(seq, InboundFormat::LdBulk, &format!("[{}]", body.join(",")))
            }
            GenRecord::Diagnostic => {
                stored(seq, InboundFormat::LdDiagnostic, r#"{"kind":"diagnostic"}"#)
            }
            GenRecord::BadBody => stored(seq, InboundFormat::LdBulk, r#"[{"kind":"#),
            GenRecord::Garbage => Record {
                seq,
                tag: 0,
                event_count: 2,
                received_at_ms: 0,
                payload: Bytes::from_static(b"\x09not a stored record"),
            },
        }
    }

    fn gen_event() -> impl Strategy<Value = Gen> {
        prop_oneof![
            4 => any::<u8>().prop_map(Gen::Feature),
            4 => (1u16..700).prop_map(Gen::Custom),
            1 => Just(Gen::Invalid),
            1 => Just(Gen::Index),
        ]
    }

    fn gen_record() -> impl Strategy<Value = GenRecord> {
        prop_oneof![
            12 => prop::collection::vec(gen_event(), 0..7).prop_map(GenRecord::Bulk),
            1 => Just(GenRecord::Diagnostic),
            1 => Just(GenRecord::Garbage),
            1 => Just(GenRecord::BadBody),
        ]
    }

    fn limits() -> BatchLimits {
        BatchLimits {
            max_items: 3,
            max_bytes: 4096,
            max_item_bytes: 600,
            per_item_overhead: 0,
            linger: Duration::from_secs(60),
        }
    }

    fn fresh_pipeline() -> Pipeline {
        Pipeline::new(
            Schema::LaunchDarkly,
            ExportOptions::default(),
            Filter::new(&FilterConfig::default()).unwrap(),
        )
    }

    fn fingerprint() -> Fingerprint {
        Fingerprint {
            schema: Schema::LaunchDarkly,
            input: Input::MappedEvents,
            export: ExportOptions::default(),
            filter: FilterConfig::default(),
        }
    }

    /// One destination: its pipeline, batcher, dead letters and what came out.
    struct Dest {
        pipeline: Pipeline,
        batcher: Batcher,
        dead: DeadLetterBuffer,
        counts: RecordCounts,
        cut: Vec<CutBatch>,
        next: usize,
    }

    impl Dest {
        fn new(pipeline: Pipeline, start: Position) -> Self {
            Dest {
                pipeline,
                batcher: Batcher::new("d", Schema::LaunchDarkly, limits(), start, None),
                dead: DeadLetterBuffer::new("d"),
                counts: RecordCounts::default(),
                cut: Vec::new(),
                next: 0,
            }
        }

        fn step(&mut self, records: &[Record]) {
            let record = &records[self.next];
            self.next += 1;
            self.counts += self
                .pipeline
                .process(record, &mut self.batcher, &mut self.dead);
            self.cut
                .extend(std::iter::from_fn(|| self.batcher.pop_ready()));
        }

        /// Batches as comparable tuples and dead letters without their time stamps.
        #[allow(clippy::type_complexity)]
        fn output(
            mut self,
        ) -> (
            Vec<(Position, Position, crate::dest::Batch, Vec<Position>)>,
            Vec<serde_json::Value>,
            RecordCounts,
        ) {
            self.batcher.cut_lingering();
            self.cut
                .extend(std::iter::from_fn(|| self.batcher.pop_ready()));
            let batches = self
                .cut
                .into_iter()
                .map(|c| (c.start, c.end, c.batch, c.positions))
                .collect();
            let (lines, _) = self.dead.take();
            let letters = lines
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let mut value: serde_json::Value = serde_json::from_slice(line).unwrap();
                    value.as_object_mut().unwrap().remove("time_ms");
                    value
                })
                .collect();
            (batches, letters, self.counts)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn shared_destinations_produce_what_they_would_alone(
            log in prop::collection::vec(gen_record(), 1..12),
            starts in prop::collection::vec((0u64..12, 0u32..4), 3),
            schedule in prop::collection::vec(0usize..3, 0..200),
            max_bytes in prop_oneof![Just(1usize << 20), 1usize..6000],
        ) {
            let records: Vec<Record> = log.iter().enumerate().map(|(seq, r)| build(seq as u64, r)).collect();
            let shared = SharedRecords::new(max_bytes);
            let starts: Vec<Position> = starts.iter().map(|&(seq, event)| Position { seq, event }).collect();
            let mut sharing: Vec<Dest> = starts
                .iter()
                .map(|&start| Dest::new(fresh_pipeline().with_shared(shared.join(fingerprint())), start))
                .collect();
            // Interleave the destinations as the schedule says, then let each finish.
            for &who in &schedule {
                if sharing[who].next < records.len() {
                    sharing[who].step(&records);
                }
            }
            for dest in &mut sharing {
                while dest.next < records.len() {
                    dest.step(&records);
                }
            }
            for (dest, &start) in sharing.into_iter().zip(&starts) {
                let mut alone = Dest::new(fresh_pipeline(), start);
                while alone.next < records.len() {
                    alone.step(&records);
                }
                let (batches, letters, counts) = dest.output();
                let (want_batches, want_letters, want_counts) = alone.output();
                prop_assert_eq!(batches, want_batches);
                prop_assert_eq!(letters, want_letters);
                prop_assert_eq!(counts, want_counts);
            }
            prop_assert!(shared.bytes() <= max_bytes);
        }
    }

    #[test]
    fn followers_replay_what_the_leader_recorded_and_the_entry_goes_once_read() {
        let shared = SharedRecords::new(1 << 20);
        let records: Vec<Record> = (0..4)
            .map(|seq| {
                build(
                    seq,
                    &GenRecord::Bulk(vec![
                        Gen::Feature(1),
                        Gen::Invalid,
                        Gen::Custom(900),
                        Gen::Index,
                    ]),
                )
            })
            .collect();
        let mut dests: Vec<Dest> = (0..3)
            .map(|_| {
                Dest::new(
                    fresh_pipeline().with_shared(shared.join(fingerprint())),
                    Position::default(),
                )
            })
            .collect();
        for dest in &mut dests {
            dest.step(&records);
        }
        assert_eq!(shared.bytes(), 0, "read by every member: dropped");
        dests[0].step(&records);
        assert!(shared.bytes() > 0, "kept for the two others");
        let outputs: Vec<_> = dests
            .into_iter()
            .map(|mut d| {
                while d.next < records.len() {
                    d.step(&records);
                }
                d.output()
            })
            .collect();
        assert_eq!(
            outputs[0].2,
            RecordCounts {
                batched: 4,
                filtered: 4,
                invalid: 4,
                dead_lettered: 8
            }
        );
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(outputs[0], outputs[2]);
    }
}
