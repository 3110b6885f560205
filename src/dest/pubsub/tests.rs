//! Unit tests of the Pub/Sub destination (the emulator tests exercise it end to end).

use super::message::{bounded_attribute, ordering_key};
use super::*;
use crate::dest::BatchItem;
use bytes::Bytes;

fn item(kind: &str, key: Option<&str>, context: Option<&str>) -> BatchItem {
    BatchItem {
        event_id: "evt-1".into(),
        payload: Bytes::from_static(b"{\"kind\":\"feature\"}"),
        kind: kind.into(),
        key: key.map(Into::into),
        context_key: context.map(Into::into),
        environment: "production".into(),
        received_at_ms: 1,
    }
}

#[test]
fn topic_names_parse() {
    assert!(TopicName::parse("projects/p/topics/t").is_ok());
    assert!(TopicName::parse("projects/p/subscriptions/t").is_err());
    assert!(TopicName::parse("t").is_err());
    assert!(TopicName::parse("projects//topics/t").is_err());
}

#[test]
fn messages_carry_identity_attributes_and_ordering_key() {
    let batch = Batch {
        id: "batch-7".into(),
        schema: Schema::LaunchDarkly,
        items: vec![],
        lines: None,
    };
    let message = message_for(
        &batch,
        &item("feature", Some("new-checkout"), Some("u1")),
        true,
    );
    let attribute = |name: &str| message.attributes.get(name).cloned();
    assert_eq!(attribute("event_id").as_deref(), Some("evt-1"));
    assert_eq!(attribute("kind").as_deref(), Some("feature"));
    assert_eq!(attribute("flag_key").as_deref(), Some("new-checkout"));
    assert_eq!(attribute("key").as_deref(), Some("new-checkout"));
    assert_eq!(attribute("environment").as_deref(), Some("production"));
    assert_eq!(attribute("schema").as_deref(), Some("launchdarkly"));
    assert_eq!(attribute("batch_id").as_deref(), Some("batch-7"));
    assert_eq!(message.ordering_key, "u1");

    let custom = message_for(
        &batch,
        &item("custom", Some("checkout-completed"), Some("u1")),
        false,
    );
    assert_eq!(
        custom.attributes.get("key").map(String::as_str),
        Some("checkout-completed")
    );
    assert!(!custom.attributes.contains_key("flag_key"));
    assert!(custom.ordering_key.is_empty(), "ordering off");
}

#[test]
fn long_values_are_bounded() {
    let long = "é".repeat(700); // 1,400 bytes
    let bounded = bounded_attribute(&long);
    assert!(bounded.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
    assert!(long.starts_with(&bounded));
    let key = ordering_key(&"k".repeat(2_000));
    assert!(key.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
}

#[tokio::test]
async fn options_are_typed_and_bad_ones_are_named() {
    let build = |url: &str| {
        let spec = crate::dest::DestinationSpec::parse(url).unwrap();
        crate::dest::registry::build_named(spec, "p")
    };
    let topic = "projects/acme/topics/flag-events";
    let destination = build(&format!(
        "pubsub://{topic}?endpoint=http://127.0.0.1:1&ordering=true&timeout=3s"
    ))
    .await
    .unwrap();
    let debug = format!("{destination:?}");
    assert!(
        debug.contains("ordering: true") && debug.contains(topic),
        "{debug}"
    );
    for (url, needles) in [
        (
            format!("pubsub://{topic}?endpoint=http://127.0.0.1:1&ordering=maybe"),
            &["ordering", "maybe"][..],
        ),
        (
            format!("pubsub://{topic}?endpoint=http://127.0.0.1:1&orderng=true"),
            &["`orderng`", "`pubsub`"][..],
        ),
        (
            "pubsub://flag-events?endpoint=http://127.0.0.1:1".to_string(),
            &["projects/PROJECT/topics/TOPIC"][..],
        ),
        (
            format!("pubsub://{topic}?credentials_file=/nonexistent/key.json"),
            &["/nonexistent/key.json"][..],
        ),
    ] {
        let err = build(&url).await.unwrap_err().to_string();
        assert!(needles.iter().all(|n| err.contains(n)), "{url}: {err}");
    }
}
