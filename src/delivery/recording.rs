//! What processing one WAL record produced, recorded once and replayed by every destination
//! configured alike (see [`super::shared_records`]).
//!
//! A [`Recorder`] is a pipeline [`Output`]: the pipeline decodes, filters and maps a record into
//! it exactly as it would into a destination's batcher, from the record's first event on. The
//! finished [`Recording`] holds, in call order, every outcome: filtered events, mapped events
//! (rows and item metadata), dead letters of single events and of the whole record.
//!
//! ## Invariants
//!
//! * **Replay is processing.** [`replay`] makes the same calls on the destination's batcher and
//!   dead letters as processing the record would have (through the same [`Direct`] output):
//!   the batcher's `begin_record` decides the first event, steps before it are passed over
//!   exactly as the pipeline passes over events before it, and record-level dead letters are
//!   written whatever the first event is. So batches, batch ids, dead letters and counts are
//!   identical with and without sharing (the destination's own limits still apply at `offer`:
//!   an item too big for *this* destination is dead-lettered here, as it would have been).
//! * **Self-contained.** A recording owns copies of everything it refers to (a byte buffer for
//!   rows and payloads, a string buffer for metadata, and spans into them), so it outlives the WAL bytes it came from; its memory is what
//!   [`Recording::bytes`] reports, which the shared cache counts against its bound.

use super::batcher::{Batcher, Rows};
use super::dead_letter::{DeadLetter, DeadLetterBuffer};
use super::pipeline::{Direct, EventFailure, EventItem, Output, RecordCounts};
use crate::wal::Position;

/// A byte range of a recording's `bytes` (rows, payloads).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

/// A range of a recording's `strings` (always whole `&str`s, so slicing never fails and
/// replay needs no UTF-8 check).
#[derive(Debug, Clone, Copy)]
struct StrSpan(Span);

/// A dead letter, as spans of the recording's buffers.
#[derive(Debug, Clone, Copy)]
struct LetterSpans {
    reason: StrSpan,
    event_id: Option<StrSpan>,
    payload: Span,
}

/// An item's metadata, as spans of the recording's strings.
#[derive(Debug, Clone, Copy)]
struct ItemSpans {
    event_id: StrSpan,
    kind: StrSpan,
    key: Option<StrSpan>,
    context_key: Option<StrSpan>,
    environment: StrSpan,
    received_at_ms: u64,
}

/// One outcome, in the order the pipeline produced it.
#[derive(Debug, Clone, Copy)]
enum Step {
    Filtered(u32),
    Item {
        index: u32,
        item: ItemSpans,
        rows: Span,
        /// `row_ends[from..to]`: row ends relative to `rows.start`.
        ends: (u32, u32),
    },
    EventDeadLetter {
        index: u32,
        letter: LetterSpans,
        failure: EventFailure,
    },
    RecordDeadLetter(LetterSpans),
}

/// Buffer lengths to start a [`Recorder`] with.
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeHint {
    steps: usize,
    bytes: usize,
    strings: usize,
    row_ends: usize,
}

/// Everything processing one record produced. See the module doc.
#[derive(Debug)]
pub struct Recording {
    seq: u64,
    /// What the pipeline passed to `begin_record` (`None`: it never began the record).
    event_count: Option<u32>,
    steps: Vec<Step>,
    /// Rows and dead-letter payloads.
    bytes: Vec<u8>,
    /// Ids, kinds, keys, environments, reasons.
    strings: String,
    row_ends: Vec<usize>,
}

impl Recording {
    /// Heap and inline bytes this recording holds (what the shared cache counts).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.steps.capacity() * std::mem::size_of::<Step>()
            + self.bytes.capacity()
            + self.strings.capacity()
            + self.row_ends.capacity() * std::mem::size_of::<usize>()
    }

    /// This recording's lengths, to size the next one's buffers at once (records of one
    /// stream are alike) instead of growing them by doubling.
    pub fn size_hint(&self) -> SizeHint {
        SizeHint {
            steps: self.steps.len(),
            bytes: self.bytes.len(),
            strings: self.strings.len(),
            row_ends: self.row_ends.len(),
        }
    }

    #[cfg(test)]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn text(&self, span: Span) -> &[u8] {
        &self.bytes[span.start as usize..span.end as usize]
    }

    fn str(&self, StrSpan(span): StrSpan) -> &str {
        &self.strings[span.start as usize..span.end as usize]
    }

    fn letter(&self, spans: &LetterSpans, event: u32) -> DeadLetter<'_> {
        DeadLetter {
            reason: self.str(spans.reason),
            event_id: spans.event_id.map(|span| self.str(span)),
            position: Position {
                seq: self.seq,
                event,
            },
            batch_id: None,
            payload: self.text(spans.payload),
        }
    }

    fn item(&self, spans: &ItemSpans) -> EventItem<'_> {
        EventItem {
            event_id: self.str(spans.event_id),
            kind: self.str(spans.kind),
            key: spans.key.map(|span| self.str(span)),
            context_key: spans.context_key.map(|span| self.str(span)),
            environment: self.str(spans.environment),
            received_at_ms: spans.received_at_ms,
        }
    }
}

/// Feed a recording into a destination's batcher and dead letters exactly as processing its
/// record would have (see the module doc).
pub fn replay(
    recording: &Recording,
    batcher: &mut Batcher,
    dead: &mut DeadLetterBuffer,
) -> RecordCounts {
    let mut counts = RecordCounts::default();
    let Some(event_count) = recording.event_count else {
        return counts;
    };
    let mut out = Direct::new(batcher, dead, &mut counts);
    let Some(first) = out.begin_record(recording.seq, event_count) else {
        return counts;
    };
    for step in &recording.steps {
        match step {
            Step::Filtered(index) if *index >= first => out.filtered(*index),
            Step::Item {
                index,
                item,
                rows,
                ends,
            } if *index >= first => {
                let rows = Rows {
                    bytes: recording.text(*rows),
                    ends: &recording.row_ends[ends.0 as usize..ends.1 as usize],
                };
                out.offer(*index, &recording.item(item), rows);
            }
            Step::EventDeadLetter {
                index,
                letter,
                failure,
            } if *index >= first => {
                out.dead_letter_event(recording.letter(letter, *index), *failure);
            }
            Step::RecordDeadLetter(letter) => out.dead_letter_record(recording.letter(letter, 0)),
            _ => {}
        }
    }
    out.end_record();
    counts
}

/// Records what the pipeline hands on, from the record's first event (see the module doc).
#[derive(Debug)]
pub struct Recorder {
    recording: Recording,
    /// The environment's span, copied once per record (every item has the record's).
    environment: Option<StrSpan>,
}

impl Recorder {
    /// A recorder for record `seq`, its buffers sized by `hint`.
    pub fn new(seq: u64, hint: SizeHint) -> Self {
        Recorder {
            recording: Recording {
                seq,
                event_count: None,
                steps: Vec::with_capacity(hint.steps),
                bytes: Vec::with_capacity(hint.bytes),
                strings: String::with_capacity(hint.strings),
                row_ends: Vec::with_capacity(hint.row_ends),
            },
            environment: None,
        }
    }

    pub fn finish(self) -> Recording {
        self.recording
    }

    fn push(&mut self, bytes: &[u8]) -> Span {
        let buffer = &mut self.recording.bytes;
        let start = buffer.len() as u32;
        buffer.extend_from_slice(bytes);
        Span {
            start,
            end: buffer.len() as u32,
        }
    }

    fn push_str(&mut self, text: &str) -> StrSpan {
        let strings = &mut self.recording.strings;
        let start = strings.len() as u32;
        strings.push_str(text);
        StrSpan(Span {
            start,
            end: strings.len() as u32,
        })
    }

    fn letter(&mut self, letter: &DeadLetter<'_>) -> LetterSpans {
        LetterSpans {
            reason: self.push_str(letter.reason),
            event_id: letter.event_id.map(|id| self.push_str(id)),
            payload: self.push(letter.payload),
        }
    }

    fn environment(&mut self, environment: &str) -> StrSpan {
        match self.environment {
            Some(span) if self.recording.str(span) == environment => span,
            _ => {
                let span = self.push_str(environment);
                self.environment = Some(span);
                span
            }
        }
    }
}

impl Output for Recorder {
    fn begin_record(&mut self, _seq: u64, event_count: u32) -> Option<u32> {
        self.recording.event_count = Some(event_count);
        // Every event: a destination resuming inside the record replays from its own first.
        Some(0)
    }

    fn end_record(&mut self) {}

    fn filtered(&mut self, index: u32) {
        self.recording.steps.push(Step::Filtered(index));
    }

    fn dead_letter_event(&mut self, letter: DeadLetter<'_>, failure: EventFailure) {
        let index = letter.position.event;
        let letter = self.letter(&letter);
        self.recording.steps.push(Step::EventDeadLetter {
            index,
            letter,
            failure,
        });
    }

    fn dead_letter_record(&mut self, letter: DeadLetter<'_>) {
        let letter = self.letter(&letter);
        self.recording.steps.push(Step::RecordDeadLetter(letter));
    }

    fn offer(&mut self, index: u32, item: &EventItem<'_>, rows: Rows<'_>) {
        let spans = ItemSpans {
            event_id: self.push_str(item.event_id),
            kind: self.push_str(item.kind),
            key: item.key.map(|key| self.push_str(key)),
            context_key: item.context_key.map(|key| self.push_str(key)),
            environment: self.environment(item.environment),
            received_at_ms: item.received_at_ms,
        };
        let rows_span = self.push(rows.bytes);
        let from = self.recording.row_ends.len() as u32;
        self.recording.row_ends.extend_from_slice(rows.ends);
        let to = self.recording.row_ends.len() as u32;
        self.recording.steps.push(Step::Item {
            index,
            item: spans,
            rows: rows_span,
            ends: (from, to),
        });
    }
}
