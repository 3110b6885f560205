//! One Event Hubs event (an AMQP message) per flagstream event.
//!
//! The body is the mapped event as the engine handed it (one JSON document in the chosen
//! schema, as a data section, content type `application/json`); the message id is the stable
//! event id (consumers deduplicate re-deliveries with it); application properties `event_id`,
//! `kind`, `key` (absent when the event has none), `environment`, `schema` let consumers route
//! without parsing the body; the partition key travels as the `x-opt-partition-key` message
//! annotation, where Event Hubs (and its Kafka endpoint, as the record key) expose it.

use azure_core_amqp::{AmqpMessage, AmqpSymbol};
use azure_messaging_eventhubs::models::EventData;
use sha2::{Digest, Sha256};

use crate::dest::kinesis::PartitionKeySource;
use crate::dest::BatchItem;
use crate::event::Schema;

/// The application property names, in the order they are written.
pub const PROPERTY_NAMES: [&str; 5] = ["event_id", "kind", "key", "environment", "schema"];
/// The message annotation carrying the partition key.
pub const PARTITION_KEY_ANNOTATION: &str = "x-opt-partition-key";
/// Longest partition key sent as is; longer ones are replaced by their SHA-256 (hex), the
/// same long key always giving the same short one, so per-context order holds.
pub const MAX_PARTITION_KEY_LEN: usize = 128;

/// The partition key of `item`: the configured field, falling back to the context key, then
/// the event id (never one constant for every event).
pub fn partition_key(item: &BatchItem, source: &PartitionKeySource) -> String {
    let key = source.unbounded_key_for(item);
    if key.len() <= MAX_PARTITION_KEY_LEN {
        return key.into_owned();
    }
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The AMQP message for `item`, keyed `partition_key`.
pub fn message(item: &BatchItem, schema: Schema, partition_key: &str) -> AmqpMessage {
    let values: [Option<&str>; 5] = [
        Some(&item.event_id),
        Some(&item.kind),
        item.key.as_deref(),
        Some(&item.environment),
        Some(schema.name()),
    ];
    let event = PROPERTY_NAMES
        .iter()
        .zip(values)
        .filter_map(|(name, value)| value.map(|value| (*name, value)))
        .fold(
            EventData::builder()
                .with_body(item.payload.to_vec())
                .with_content_type("application/json".to_string())
                .with_message_id(item.event_id.to_string()),
            |event, (name, value)| event.add_property(name.to_string(), value.to_string()),
        )
        .build();
    let mut message = AmqpMessage::from(event);
    message.add_message_annotation(
        AmqpSymbol::from(PARTITION_KEY_ANNOTATION),
        partition_key.to_string(),
    );
    message
}
