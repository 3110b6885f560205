//! One Kafka message per event: its key and headers.
//!
//! The payload is the mapped event as the engine handed it (one JSON document in the chosen
//! schema). The key is chosen per event ([`PartitionKeySource`], the context key by default),
//! so events spread over partitions and each context's events stay in order on one partition.
//! Headers let consumers route and deduplicate without parsing the payload.

use std::borrow::Cow;

use rdkafka::message::{Header, OwnedHeaders};

use crate::dest::kinesis::PartitionKeySource;
use crate::dest::{Batch, BatchItem};

/// The header names, in the order they are written.
pub const HEADER_NAMES: [&str; 6] = [
    "event_id",
    "kind",
    "key",
    "environment",
    "schema",
    "batch_id",
];

/// The headers of `item`'s message: `event_id`, `kind`, `key` (absent when the event has no
/// flag or metric key), `environment`, `schema`, `batch_id`.
pub fn headers(item: &BatchItem, batch: &Batch) -> OwnedHeaders {
    let values: [Option<&str>; 6] = [
        Some(&item.event_id),
        Some(&item.kind),
        item.key.as_deref(),
        Some(&item.environment),
        Some(batch.schema.name()),
        Some(&batch.id),
    ];
    HEADER_NAMES
        .iter()
        .zip(values)
        .filter_map(|(name, value)| value.map(|value| (*name, value)))
        .fold(
            OwnedHeaders::new_with_capacity(6),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            },
        )
}

/// The message key of `item`: the configured field, falling back to the context key, then
/// the event id (never one constant for every event). Borrowed from the item unless it is a
/// payload field: librdkafka copies it anyway.
pub fn key<'a>(item: &'a BatchItem, source: &PartitionKeySource) -> Cow<'a, str> {
    source.unbounded_key_for(item)
}
