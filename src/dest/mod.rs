//! Destinations: one file (or folder) per target behind one [`Destination`] trait, built by
//! one factory.
//!
//! A destination receives a [`Batch`] that the delivery engine has already cut — mapped
//! events in the destination's schema, or, for a destination that asks for them
//! ([`Input::RawRecords`]), the records as received — turns it into requests for its target
//! (respecting the target's limits), sends them, and classifies what happened as a
//! [`SendOutcome`]. It never sees the WAL, cursors or retry schedules: those belong to
//! `delivery`, which decides what to resend and when.
//!
//! ## Adding a destination
//!
//! One new file (or folder) here implementing [`kind::DestinationKind`] (scheme, summary,
//! defaults, typed options, `build`) and [`Destination`], plus one line in
//! [`registry::KINDS`]. The registry, `--help`, `flagstream validate` and the error for an
//! unknown scheme are generated from that table. Shared building blocks: [`options`] (typed
//! options, `timeout` / `endpoint`, sizes, durations), [`secrets`] (`env:` / `file:` values,
//! redaction), [`failure`] (one failure type, request metrics), [`http`] (one HTTP client
//! and status classifier), [`aws`] and [`gcp`] (cloud credentials).
//!
//! ## Invariants
//!
//! 1. `send` never reports [`SendOutcome::Delivered`] unless the target acknowledged every item.
//! 2. A partial success lists exactly the items that were *not* accepted, by their index in the
//!    batch, each with its [`Failure`]; the engine resends only the retriable ones.
//! 3. `send` is idempotent in spirit: the same batch (same [`Batch::id`], same items) may be
//!    sent again after a crash or retry, so a destination that can deduplicate (object keys,
//!    idempotency headers, message ids) derives its key from `Batch::id` / `BatchItem::event_id`.
//! 4. Errors carry a human-readable reason that names the target (stream, topic, path), for
//!    logs, `/v1/destinations` and `flagstream test-destination`, and never a secret.

pub mod aws;
pub mod bigquery;
pub mod environment_keys;
pub mod event_id;
pub mod eventhubs;
pub mod failure;
pub mod file;
pub mod gcp;
pub mod gcs;
pub mod http;
pub mod kafka;
pub mod kind;
pub mod kinesis;
pub mod launchdarkly;
pub mod log;
pub mod mparticle;
pub mod object;
pub mod options;
pub mod postgres;
pub mod pubsub;
pub mod raw;
pub mod registry;
pub mod s3;
pub mod secrets;
pub mod segment;
pub mod snowflake;
pub mod spec;
pub mod units;
pub mod warehouse;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
/// The text type of a [`BatchItem`]'s short fields (re-exported for tests and benches).
pub use compact_str::CompactString;
use futures::future::BoxFuture;

use crate::event::Schema;
pub use environment_keys::EnvironmentKeys;
pub use event_id::EventId;
pub use failure::{error_chain, Failure, FailureClass, ItemFailure};
pub use kind::{BuildContext, DestinationKind, Input};
pub use raw::RawRecord;
pub use spec::DestinationSpec;

/// Limits a destination imposes on batches; the engine cuts batches within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most items per batch.
    pub max_items: usize,
    /// Most bytes of item payloads (plus per-item overhead the destination declares) per batch.
    pub max_bytes: usize,
    /// Largest single item; bigger ones go to the dead letters with the reason.
    pub max_item_bytes: usize,
    /// Per-item overhead counted against `max_bytes` and `max_item_bytes` besides the payload
    /// (e.g. Kinesis counts the partition key).
    pub per_item_overhead: usize,
    /// How long a partly filled batch may wait for more events before it is sent.
    pub linger: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_items: 500,
            max_bytes: 4 * 1024 * 1024,
            max_item_bytes: 1024 * 1024,
            per_item_overhead: 0,
            linger: Duration::from_millis(200),
        }
    }
}

/// One event, mapped to the destination's schema (or one stored record, for a destination
/// that asked for [`Input::RawRecords`]: see [`RawRecord`]). The short text fields are
/// [`CompactString`]s: kinds, environments and most keys fit inline (24 bytes), and the id is
/// an [`EventId`] (inline up to 38 bytes), so building an item allocates nothing and dropping
/// it frees nothing (176 bytes, all inline, for the usual item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// Stable event id (identical on every re-delivery); used for dedupe keys.
    pub event_id: EventId,
    /// The mapped event: one complete JSON document (or row) in the destination's schema;
    /// for raw records, the stored record ([`RawRecord::of`] reads it).
    pub payload: Bytes,
    /// Inbound event kind (`feature`, `custom`, …).
    pub kind: CompactString,
    /// Flag key or metric/event key, when the event has one.
    pub key: Option<CompactString>,
    /// Context key used for partitioning / ordering (user key first), when known.
    pub context_key: Option<CompactString>,
    /// Environment name the event was ingested under.
    pub environment: CompactString,
    /// Time the event was received by flagstream (Unix ms).
    pub received_at_ms: u64,
}

#[cfg(test)]
impl BatchItem {
    /// An item carrying `payload`, every other field neutral (unit tests).
    pub(crate) fn with_payload(payload: impl Into<Bytes>) -> BatchItem {
        BatchItem {
            event_id: "id".into(),
            payload: payload.into(),
            kind: "feature".into(),
            key: None,
            context_key: None,
            environment: "production".into(),
            received_at_ms: 0,
        }
    }
}

/// A batch cut deterministically by the delivery engine.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Stable id derived from (destination, first position, last position): the same batch
    /// re-sent after a crash or retry has the same id.
    pub id: String,
    pub schema: Schema,
    pub items: Vec<BatchItem>,
    /// The batcher's arena, when the items' payloads were laid out in it back to back, each
    /// followed by `\n` (the NDJSON text of the batch, starting on a 4 KiB boundary where the
    /// allocation allowed). A view of `items`, not part of the batch's identity: equality
    /// ignores it. Read it through [`Batch::lines`], which checks the items still are those
    /// rows; `None` for batches built any other way.
    pub lines: Option<Bytes>,
}

/// Equal ids, schemas and items ([`Batch::lines`] is a view of the items).
impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.schema == other.schema && self.items == other.items
    }
}

impl Eq for Batch {}

impl Batch {
    /// A batch of `items` without a laid-out text ([`Batch::lines`] is `None`).
    pub fn new(id: impl Into<String>, schema: Schema, items: Vec<BatchItem>) -> Self {
        Batch {
            id: id.into(),
            schema,
            items,
            lines: None,
        }
    }

    pub fn payload_bytes(&self) -> usize {
        self.items.iter().map(|item| item.payload.len()).sum()
    }

    /// The NDJSON text of `items[range]` (each payload followed by `\n`) as a slice of the
    /// batcher's arena, without copying; `None` when the batch has no arena or those items
    /// are not back to back in it (a batch rebuilt from some of its items, an empty
    /// payload). Checked, not trusted: every item of the run must start in the arena exactly
    /// one byte after the previous one ends, and the byte after each must be `\n`. An item's
    /// payload at an address in the arena *is* those arena bytes (memory a `Bytes` points to
    /// never changes), so the slice is exactly the payloads joined by newlines.
    pub fn lines(&self, range: std::ops::Range<usize>) -> Option<Bytes> {
        let lines = self.lines.as_ref()?;
        let items = self.items.get(range)?;
        let base = lines.as_ptr() as usize;
        let first = (items.first()?.payload.as_ptr() as usize).checked_sub(base)?;
        let mut end = first;
        for item in items {
            let at = (item.payload.as_ptr() as usize).checked_sub(base)?;
            if at != end || item.payload.is_empty() {
                return None;
            }
            let newline = at + item.payload.len();
            if lines.get(newline) != Some(&b'\n') {
                return None;
            }
            end = newline + 1;
        }
        Some(lines.slice(first..end))
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The target acknowledged every item.
    Delivered,
    /// Some items were accepted; `failures` lists the others.
    Partial { failures: Vec<ItemFailure> },
    /// Nothing was (verifiably) accepted; the failure's class says whether to try again.
    Failed(Failure),
}

impl SendOutcome {
    /// Fold per-item failures of one send into one outcome: nothing failed → delivered;
    /// everything failed and all retriable (or all permanent) → one batch-level failure
    /// carrying `batch_failure` (the first whole-request error) or the first item's; otherwise
    /// partial, listing each failed index once. Destinations whose targets report per-item
    /// results (Kinesis records, Pub/Sub messages) fold them through here so the engine sees
    /// one classification rule.
    pub fn from_item_failures(
        item_count: usize,
        mut failures: Vec<ItemFailure>,
        batch_failure: Option<Failure>,
    ) -> SendOutcome {
        if failures.is_empty() {
            return SendOutcome::Delivered;
        }
        failures.sort_by_key(|failure| failure.index);
        failures.dedup_by_key(|failure| failure.index);
        let all_retriable = failures.iter().all(ItemFailure::is_retriable);
        let all_permanent = failures.iter().all(|failure| !failure.is_retriable());
        if failures.len() == item_count && (all_retriable || all_permanent) {
            let throttled = failures.iter().any(|f| f.failure.is_throttled());
            let mut failure = batch_failure.unwrap_or_else(|| failures[0].failure.clone());
            failure.class = if all_permanent {
                FailureClass::Permanent
            } else if throttled {
                FailureClass::Throttled
            } else {
                FailureClass::Retriable
            };
            return SendOutcome::Failed(failure);
        }
        SendOutcome::Partial { failures }
    }

    /// A whole batch failed.
    pub fn failed(class: FailureClass, reason: impl Into<String>) -> SendOutcome {
        SendOutcome::Failed(Failure::new(class, reason))
    }

    /// Did the target ask us to slow down (wholly or for some items)?
    pub fn is_throttled(&self) -> bool {
        match self {
            SendOutcome::Delivered => false,
            SendOutcome::Partial { failures } => failures.iter().any(|f| f.failure.is_throttled()),
            SendOutcome::Failed(failure) => failure.is_throttled(),
        }
    }

    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SendOutcome::Delivered => "delivered",
            SendOutcome::Partial { .. } => "partial",
            SendOutcome::Failed(failure) if failure.is_retriable() => "retriable",
            SendOutcome::Failed(_) => "permanent",
        }
    }
}

/// Errors building or probing a destination (not send outcomes).
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    #[error("invalid destination `{url}`: {reason}")]
    Config { url: String, reason: String },
    #[error("destination check failed: {0}")]
    Check(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A delivery target.
pub trait Destination: Send + Sync + fmt::Debug {
    /// The configured name (unique; names the cursor and the dead-letter store).
    fn name(&self) -> &str;
    /// The destination type (`file`, `log`, `kinesis`, `pubsub`, …).
    fn kind(&self) -> &'static str;
    /// The schema the engine maps events to (decided by the registry when it was built).
    fn schema(&self) -> Schema;
    /// Mapped events (the default) or the records as received.
    fn input(&self) -> Input {
        Input::MappedEvents
    }
    /// The batch limits of the target.
    fn limits(&self) -> BatchLimits;
    /// Send a batch and classify the outcome. Must not panic on any target response.
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome>;
    /// Probe the target (stream exists, credentials work, directory writable) without sending
    /// events. Used at startup and by `flagstream test-destination`.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>>;
}

#[cfg(test)]
mod lines_tests {
    use super::*;

    /// A batch whose items are laid out in `arena` as the batcher lays them out.
    fn laid_out(rows: &[&str]) -> Batch {
        let mut arena = Vec::new();
        let mut ranges = Vec::new();
        for row in rows {
            ranges.push(arena.len()..arena.len() + row.len());
            arena.extend_from_slice(row.as_bytes());
            arena.push(b'\n');
        }
        let arena = Bytes::from(arena);
        let items = ranges
            .into_iter()
            .map(|range| BatchItem::with_payload(arena.slice(range)))
            .collect();
        Batch {
            lines: Some(arena),
            ..Batch::new("b", Schema::LaunchDarkly, items)
        }
    }

    #[test]
    fn lines_are_the_arena_slice_of_a_run_of_items() {
        let batch = laid_out(&["{\"a\":1}", "{}", "[2]"]);
        let whole = batch.lines(0..3).unwrap();
        assert_eq!(&whole[..], b"{\"a\":1}\n{}\n[2]\n");
        assert_eq!(
            whole.as_ptr(),
            batch.lines.as_ref().unwrap().as_ptr(),
            "no copy"
        );
        assert_eq!(&batch.lines(1..3).unwrap()[..], b"{}\n[2]\n");
        assert_eq!(&batch.lines(1..2).unwrap()[..], b"{}\n");
        assert_eq!(batch.lines(2..4), None, "out of range");
        assert_eq!(
            Batch::new("b", Schema::LaunchDarkly, batch.items.clone()).lines(0..3),
            None
        );
    }

    #[test]
    fn items_that_are_not_the_laid_out_rows_get_no_lines() {
        let mut reordered = laid_out(&["{\"a\":1}", "{}", "[2]"]);
        reordered.items.swap(0, 1);
        assert_eq!(reordered.lines(0..3), None);

        let mut copied = laid_out(&["{\"a\":1}", "{}"]);
        copied.items[1].payload = Bytes::copy_from_slice(b"{}");
        assert_eq!(copied.lines(0..2), None, "same text at another address");
        assert!(copied.lines(0..1).is_some());

        // A payload shortened in place: the byte after it is not a newline.
        let mut shortened = laid_out(&["{\"a\":1}", "{}"]);
        shortened.items[0].payload = shortened.items[0].payload.slice(0..3);
        assert_eq!(shortened.lines(0..1), None);

        let mut dropped = laid_out(&["{\"a\":1}", "{}", "[2]"]);
        dropped.items.remove(1);
        assert_eq!(dropped.lines(0..2), None, "a gap in the run");

        let empty = laid_out(&["{}", ""]);
        assert_eq!(
            empty.lines(0..2),
            None,
            "an empty payload has no address in the arena"
        );
    }

    #[test]
    fn equality_ignores_the_laid_out_view() {
        let batch = laid_out(&["{}", "[1]"]);
        let plain = Batch::new("b", Schema::LaunchDarkly, batch.items.clone());
        assert_eq!(batch, plain);
        let other = Batch::new("c", Schema::LaunchDarkly, batch.items.clone());
        assert_ne!(batch, other);
    }
}
