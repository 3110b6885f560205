//! The Pub/Sub destination against Google's Pub/Sub emulator, read back with the official
//! `google-cloud-pubsub` subscriber (streaming pull on a subscription, every message acked).

use crate::support::cloud;

use std::collections::BTreeMap;
use std::sync::Arc;

use cloud::pubsub::{create_topic, read_back, topic_path};
use cloud::{assert_exactly_once, batch, event_id_of, ids, StandIn};
use flagstream::dest::{Destination, SendOutcome};

async fn destination(emulator: &StandIn, topic: &str, extra: &str) -> Arc<dyn Destination> {
    cloud::destination(&format!(
        "pubsub://{}?endpoint={}{extra}",
        topic_path(topic),
        emulator.endpoint()
    ))
    .await
}

#[tokio::test]
async fn every_event_is_read_back_exactly_once_with_attributes() {
    let emulator = StandIn::pubsub_emulator();
    let subscription = create_topic(&emulator, "flag-events", false).await;
    let destination = destination(&emulator, "flag-events", "").await;
    destination.check().await.unwrap();

    // Two full batches (1,000 messages each is the publish limit) and a small one.
    let batches = [
        batch("first", 1_000, 50),
        batch("second", 1_000, 50),
        batch("third", 37, 5),
    ];
    for batch in &batches {
        assert_eq!(destination.send(batch).await, SendOutcome::Delivered);
    }
    let messages = read_back(&emulator, &subscription, 2_037).await;
    let seen: Vec<String> = messages.iter().map(|m| event_id_of(&m.data)).collect();
    assert_exactly_once(&seen, batches.iter().flat_map(ids));
    for message in &messages {
        let id = event_id_of(&message.data);
        assert_eq!(message.attributes.get("event_id"), Some(&id));
        assert_eq!(
            message.attributes.get("kind").map(String::as_str),
            Some("feature")
        );
        assert_eq!(
            message.attributes.get("flag_key").map(String::as_str),
            Some("new-checkout")
        );
        assert_eq!(
            message.attributes.get("environment").map(String::as_str),
            Some("production")
        );
        assert_eq!(
            message.attributes.get("schema").map(String::as_str),
            Some("launchdarkly")
        );
        let batch_id = message.attributes.get("batch_id").unwrap();
        assert!(
            batch_id.starts_with("batch-") && id.starts_with(&batch_id["batch-".len()..]),
            "{batch_id} / {id}"
        );
        assert!(
            message.ordering_key.is_empty(),
            "ordering is off by default"
        );
    }
}

#[tokio::test]
async fn ordering_keys_keep_each_context_in_order() {
    let emulator = StandIn::pubsub_emulator();
    let subscription = create_topic(&emulator, "ordered-events", true).await;
    let destination = destination(&emulator, "ordered-events", "&ordering=true").await;
    let batch = batch("ordered", 300, 7);
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);

    let messages = read_back(&emulator, &subscription, 300).await;
    let seen: Vec<String> = messages.iter().map(|m| event_id_of(&m.data)).collect();
    assert_exactly_once(&seen, ids(&batch));
    let mut per_context: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for message in &messages {
        let n: usize = event_id_of(&message.data)
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(message.ordering_key, format!("user-{}", n % 7));
        per_context
            .entry(message.ordering_key.clone())
            .or_default()
            .push(n);
    }
    assert_eq!(per_context.len(), 7);
    for (key, order) in per_context {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {order:?}"
        );
    }
}

/// `PUBSUB_EMULATOR_HOST` alone (no `endpoint=`) points the destination at the emulator, as
/// Google's client libraries do.
#[tokio::test]
async fn honours_pubsub_emulator_host() {
    let emulator = StandIn::pubsub_emulator();
    let subscription = create_topic(&emulator, "env-events", false).await;
    std::env::set_var("PUBSUB_EMULATOR_HOST", emulator.host_port());
    let destination = cloud::destination(&format!("pubsub://{}", topic_path("env-events"))).await;
    std::env::remove_var("PUBSUB_EMULATOR_HOST");
    destination.check().await.unwrap();
    let batch = batch("env", 10, 2);
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);
    let seen: Vec<String> = read_back(&emulator, &subscription, 10)
        .await
        .iter()
        .map(|m| event_id_of(&m.data))
        .collect();
    assert_exactly_once(&seen, ids(&batch));
}
