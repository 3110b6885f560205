//! Turning a batch into `PutRecords` requests: partition keys, records (optionally
//! aggregated), and request-sized runs within the API limits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;

use super::{
    MAX_PARTITION_KEY_BYTES, MAX_RECORDS_PER_REQUEST, MAX_RECORD_BYTES, MAX_REQUEST_BYTES,
};
use crate::dest::{Batch, BatchItem, Failure, FailureClass, ItemFailure};

/// Which value becomes a record's partition key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PartitionKeySource {
    /// The event's context key (user key first); the default.
    ContextKey,
    /// The stable event id (maximal spread, no per-context ordering).
    EventId,
    /// The event kind.
    Kind,
    /// The flag or metric key.
    Key,
    /// The environment name.
    Environment,
    /// A field of the mapped payload, as a JSON pointer (`/event/contextKeys/user`).
    PayloadField(String),
}

impl TryFrom<String> for PartitionKeySource {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl std::str::FromStr for PartitionKeySource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "context_key" => PartitionKeySource::ContextKey,
            "event_id" => PartitionKeySource::EventId,
            "kind" => PartitionKeySource::Kind,
            "key" | "flag_key" => PartitionKeySource::Key,
            "environment" => PartitionKeySource::Environment,
            "" => return Err("empty partition key field".into()),
            pointer if pointer.starts_with('/') => PartitionKeySource::PayloadField(pointer.into()),
            dotted => {
                if dotted.split('.').any(str::is_empty) {
                    return Err(format!("`{dotted}` is not a dotted field path"));
                }
                let escaped: Vec<String> = dotted
                    .split('.')
                    .map(|segment| segment.replace('~', "~0").replace('/', "~1"))
                    .collect();
                PartitionKeySource::PayloadField(format!("/{}", escaped.join("/")))
            }
        })
    }
}

impl PartitionKeySource {
    /// The partition key of one item. Missing values fall back to the context key, then the
    /// event id, so one absent field never funnels every event onto one shard.
    pub fn key_for(&self, item: &BatchItem) -> String {
        bound_partition_key(self.unbounded_key_for(item).into_owned())
    }

    /// The key before Kinesis' length bound (for targets without one, like Kafka); borrowed
    /// from the item unless it comes from a payload field (no allocation per event).
    pub fn unbounded_key_for<'a>(&self, item: &'a BatchItem) -> Cow<'a, str> {
        let chosen: Option<Cow<'a, str>> = match self {
            PartitionKeySource::ContextKey => item.context_key.as_deref().map(Cow::Borrowed),
            PartitionKeySource::EventId => Some(Cow::Borrowed(&item.event_id)),
            PartitionKeySource::Kind => Some(Cow::Borrowed(&item.kind)),
            PartitionKeySource::Key => item.key.as_deref().map(Cow::Borrowed),
            PartitionKeySource::Environment => Some(Cow::Borrowed(&item.environment)),
            PartitionKeySource::PayloadField(pointer) => {
                payload_field(&item.payload, pointer).map(Cow::Owned)
            }
        };
        chosen
            .filter(|key| !key.is_empty())
            .or_else(|| {
                item.context_key
                    .as_deref()
                    .filter(|key| !key.is_empty())
                    .map(Cow::Borrowed)
            })
            .unwrap_or(Cow::Borrowed(&item.event_id))
    }
}

fn payload_field(payload: &[u8], pointer: &str) -> Option<String> {
    let document: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match document.pointer(pointer)? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Keep keys within Kinesis' limit deterministically (the same long key always maps to the
/// same short one, so per-context ordering survives); an empty key cannot happen because the
/// event id is the last fallback, but is guarded anyway.
fn bound_partition_key(key: String) -> String {
    if key.is_empty() {
        return "-".to_string();
    }
    if key.len() <= MAX_PARTITION_KEY_BYTES {
        return key;
    }
    format!("xxh3-{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// One Kinesis record to send and the batch items it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Indexes into [`Batch::items`] (one, or several when aggregating).
    pub items: Vec<usize>,
}

impl PlannedRecord {
    /// Bytes this record counts against the request and record limits.
    pub fn billed_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Turn a batch into records: oversized items become permanent failures, the rest one record
/// each, or (aggregating) newline-joined per partition key up to the record limit, keeping the
/// batch order within each key.
pub fn plan_records(
    batch: &Batch,
    keys: &PartitionKeySource,
    aggregate: bool,
) -> (Vec<PlannedRecord>, Vec<ItemFailure>) {
    let mut records: Vec<PlannedRecord> = Vec::with_capacity(batch.items.len());
    let mut rejected = Vec::new();
    // partition key -> index of the record currently being filled for it
    let mut open: HashMap<String, usize> = HashMap::new();
    for (index, item) in batch.items.iter().enumerate() {
        let partition_key = keys.key_for(item);
        let size = item.payload.len() + partition_key.len();
        if size > MAX_RECORD_BYTES {
            rejected.push(ItemFailure::new(
                index,
                FailureClass::Permanent,
                format!(
                    "event is {size} bytes with its partition key; Kinesis accepts at most \
                     {MAX_RECORD_BYTES} bytes per record"
                ),
            ));
            continue;
        }
        if aggregate {
            if let Some(&open_index) = open.get(&partition_key) {
                let record = &mut records[open_index];
                if record.billed_bytes() + 1 + item.payload.len() <= MAX_RECORD_BYTES {
                    record.data.push(b'\n');
                    record.data.extend_from_slice(&item.payload);
                    record.items.push(index);
                    continue;
                }
            }
            open.insert(partition_key.clone(), records.len());
        }
        records.push(PlannedRecord {
            partition_key,
            data: item.payload.to_vec(),
            items: vec![index],
        });
    }
    (records, rejected)
}

/// Split records into request-sized runs (≤ 500 records, ≤ 5 MiB with keys), in order.
pub fn split_requests(records: &[PlannedRecord]) -> Vec<Range<usize>> {
    let mut requests = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        let size = record.billed_bytes();
        if index > start
            && (index - start == MAX_RECORDS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES)
        {
            requests.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        requests.push(start..records.len());
    }
    requests
}

impl PlannedRecord {
    /// The items of this record, each failing with `failure`.
    pub fn fail_items<'a>(
        &'a self,
        failure: &'a Failure,
    ) -> impl Iterator<Item = ItemFailure> + 'a {
        self.items.iter().map(|&index| failure.for_item(index))
    }
}
