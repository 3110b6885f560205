//! One Pub/Sub message per batch item: data, identity attributes, ordering key.

use google_cloud_pubsub::model::Message;

use super::MAX_ATTRIBUTE_VALUE_BYTES;
use crate::dest::{Batch, BatchItem};

/// Cut `value` to Pub/Sub's attribute limit at a character boundary.
pub fn bounded_attribute(value: &str) -> String {
    if value.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return value.to_string();
    }
    let mut end = MAX_ATTRIBUTE_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// Kinds whose `key` is a flag key.
fn is_flag_evaluation(kind: &str) -> bool {
    matches!(kind, "feature" | "debug")
}

/// Build the message for one item: data, identity attributes and (optionally) ordering key.
pub fn message_for(batch: &Batch, item: &BatchItem, ordering: bool) -> Message {
    let mut attributes: Vec<(&'static str, String)> = vec![
        ("event_id", bounded_attribute(&item.event_id)),
        ("kind", bounded_attribute(&item.kind)),
        ("environment", bounded_attribute(&item.environment)),
        ("schema", batch.schema.name().to_string()),
        ("batch_id", bounded_attribute(&batch.id)),
    ];
    if let Some(key) = &item.key {
        attributes.push(("key", bounded_attribute(key)));
        if is_flag_evaluation(&item.kind) {
            attributes.push(("flag_key", bounded_attribute(key)));
        }
    }
    let mut message = Message::new()
        .set_data(item.payload.clone())
        .set_attributes(attributes);
    if ordering {
        if let Some(context) = item.context_key.as_deref().filter(|key| !key.is_empty()) {
            message = message.set_ordering_key(ordering_key(context));
        }
    }
    message
}

pub fn ordering_key(context: &str) -> String {
    if context.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return context.to_string();
    }
    format!(
        "xxh3-{:032x}",
        xxhash_rust::xxh3::xxh3_128(context.as_bytes())
    )
}

/// Bytes a message counts against the request limit (data, attributes, ordering key).
pub fn message_bytes(message: &Message) -> usize {
    message.data.len()
        + message.ordering_key.len()
        + message
            .attributes
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
}
