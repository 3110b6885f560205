//! Destinations: one file per target behind one [`Destination`] trait.
//!
//! A destination receives a [`Batch`] of events that the delivery engine has already decoded,
//! filtered and mapped to the destination's schema, turns it into requests for its target
//! (respecting the target's limits), sends them, and classifies what happened as a
//! [`SendOutcome`]. It never sees the WAL, cursors or retry schedules: those belong to
//! `delivery`, which decides what to resend and when.
//!
//! ## Invariants
//!
//! 1. `send` never reports [`SendOutcome::Delivered`] unless the target acknowledged every item.
//! 2. A partial success lists exactly the items that were *not* accepted, by their index in the
//!    batch, each marked retriable or permanent; the engine resends only the retriable ones.
//! 3. `send` is idempotent in spirit: the same batch (same [`Batch::id`], same items) may be
//!    sent again after a crash or retry, so a destination that can deduplicate (object keys,
//!    idempotency headers, message ids) derives its key from `Batch::id` / `BatchItem::event_id`.
//! 4. Errors carry a human-readable reason that names the target (stream, topic, path), for
//!    logs, `/v1/destinations` and `flagstream test-destination`.

pub mod file;
pub mod kinesis;
pub mod log;
pub mod pubsub;
pub mod registry;
pub mod spec;
pub mod units;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::event::Schema;
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

/// One event, mapped to the destination's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// Stable event id (identical on every re-delivery); used for dedupe keys.
    pub event_id: String,
    /// The mapped event: one complete JSON document (or row) in the destination's schema.
    pub payload: Bytes,
    /// Inbound event kind (`feature`, `custom`, …).
    pub kind: String,
    /// Flag key or metric/event key, when the event has one.
    pub key: Option<String>,
    /// Context key used for partitioning / ordering (user key first), when known.
    pub context_key: Option<String>,
    /// Environment name the event was ingested under.
    pub environment: String,
    /// Time the event was received by flagstream (Unix ms).
    pub received_at_ms: u64,
}

/// A batch cut deterministically by the delivery engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Stable id derived from (destination, first position, last position): the same batch
    /// re-sent after a crash or retry has the same id.
    pub id: String,
    pub schema: Schema,
    pub items: Vec<BatchItem>,
}

impl Batch {
    pub fn payload_bytes(&self) -> usize {
        self.items.iter().map(|item| item.payload.len()).sum()
    }
}

/// Why an item or a request failed, for logs and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    /// Index into [`Batch::items`].
    pub index: usize,
    /// Worth sending again (throttled, internal error) or not (too large, rejected).
    pub retriable: bool,
    pub reason: String,
}

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The target acknowledged every item.
    Delivered,
    /// Some items were accepted; `failures` lists the others.
    Partial {
        failures: Vec<ItemFailure>,
        /// The target asked us to slow down (Kinesis throughput exceeded, HTTP 429).
        throttled: bool,
    },
    /// Nothing was (verifiably) accepted, but trying again may work: timeouts, connection
    /// errors, 5xx, throttling.
    Retriable {
        reason: String,
        /// Server-requested delay (`Retry-After`), if any.
        retry_after: Option<Duration>,
        throttled: bool,
    },
    /// Trying again will not help: bad credentials, missing stream/topic, schema rejects.
    Permanent { reason: String },
}

impl SendOutcome {
    /// Fold per-item failures of one send into one outcome: nothing failed → delivered;
    /// everything failed the same way (all retriable, or all permanent) → a batch-level outcome
    /// carrying `batch_reason` (the first whole-request error) or the first item's reason;
    /// otherwise partial, listing each failed index once. Destinations whose targets report
    /// per-item results (Kinesis records, Pub/Sub messages) fold them through here so the
    /// engine sees one classification rule.
    pub fn from_item_failures(
        item_count: usize,
        mut failures: Vec<ItemFailure>,
        throttled: bool,
        batch_reason: Option<String>,
    ) -> SendOutcome {
        if failures.is_empty() {
            return SendOutcome::Delivered;
        }
        failures.sort_by_key(|failure| failure.index);
        failures.dedup_by_key(|failure| failure.index);
        if failures.len() == item_count {
            let reason = batch_reason.unwrap_or_else(|| failures[0].reason.clone());
            if failures.iter().all(|failure| failure.retriable) {
                return SendOutcome::Retriable {
                    reason,
                    retry_after: None,
                    throttled,
                };
            }
            if failures.iter().all(|failure| !failure.retriable) {
                return SendOutcome::Permanent { reason };
            }
        }
        SendOutcome::Partial {
            failures,
            throttled,
        }
    }

    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SendOutcome::Delivered => "delivered",
            SendOutcome::Partial { .. } => "partial",
            SendOutcome::Retriable { .. } => "retriable",
            SendOutcome::Permanent { .. } => "permanent",
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
    /// The schema the engine must map events to.
    fn schema(&self) -> Schema;
    /// The batch limits of the target.
    fn limits(&self) -> BatchLimits;
    /// Send a batch and classify the outcome. Must not panic on any target response.
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome>;
    /// Probe the target (stream exists, credentials work, directory writable) without sending
    /// events. Used at startup and by `flagstream test-destination`.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>>;
}
