//! Raw records: what a destination declaring [`super::Input::RawRecords`] receives.
//!
//! Some targets want the record as received — forwarding SDK bodies upstream, archiving raw
//! bodies — not mapped events. For such a destination the engine puts one item per stored
//! record into the batch (still through the cursor, batching, retry and dead-letter
//! machinery): [`BatchItem::payload`] is the stored record, metadata header and body, and
//! [`RawRecord::of`] reads it back. The item's other fields are filled for partitioning and
//! logs: `event_id` is the record's stable id, `kind` the inbound format, `key` the payload
//! id, `environment` and `received_at_ms` as stored. Every record is handed on, LaunchDarkly
//! diagnostic payloads included (they are never exported as events).

use crate::event::stored::{self, StoredBatch, StoredError};

use super::BatchItem;

/// A stored record and its metadata, borrowed from a batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The metadata (format, schema version, environment, payload id, tags, user agent, the
    /// request's path, headers and credential fingerprint) and the body exactly as received
    /// (after gunzip).
    pub stored: StoredBatch<'a>,
    /// When flagstream accepted it (Unix ms).
    pub received_at_ms: u64,
}

impl<'a> RawRecord<'a> {
    /// Read the record an item of a raw-records batch carries.
    pub fn of(item: &'a BatchItem) -> Result<Self, StoredError> {
        Ok(RawRecord {
            stored: stored::decode(&item.payload)?,
            received_at_ms: item.received_at_ms,
        })
    }
}
