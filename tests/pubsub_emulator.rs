//! The Pub/Sub destination against Google's Pub/Sub emulator, read back with the official
//! `google-cloud-pubsub` subscriber (streaming pull on a subscription, every message acked).

mod cloud;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloud::pubsub::{create_topic, read_back, topic_path};
use cloud::{assert_exactly_once, batch, event_id_of, item, StandIn};
use flagstream::dest::{
    registry, Batch, Destination, DestinationSpec, Failure, FailureClass, SendOutcome,
};
use flagstream::event::Schema;

async fn destination(emulator: &StandIn, topic: &str, extra: &str) -> Arc<dyn Destination> {
    let url = format!(
        "pubsub://{}?endpoint={}{extra}",
        topic_path(topic),
        emulator.endpoint()
    );
    let spec = DestinationSpec::parse(&url).unwrap();
    registry::build_named(spec, "pubsub-test").await.unwrap()
}

fn ids(batch: &Batch) -> Vec<String> {
    batch.items.iter().map(|i| i.event_id.clone()).collect()
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

#[tokio::test]
async fn too_large_event_is_rejected_by_limits_and_the_rest_delivered() {
    let emulator = StandIn::pubsub_emulator();
    let subscription = create_topic(&emulator, "limit-events", false).await;
    let destination = destination(&emulator, "limit-events", "").await;

    let limits = destination.limits();
    assert_eq!(limits.max_items, 1_000);
    assert!(limits.max_bytes <= 10_000_000);
    assert!(limits.max_item_bytes <= 10_000_000);
    assert!(
        limits.per_item_overhead > 0,
        "attributes count against the request limit"
    );

    let batch = Batch {
        id: "batch-limits".into(),
        schema: Schema::LaunchDarkly,
        items: vec![
            item("small-0", Some("u"), 10),
            item("huge", Some("u"), 10_000_000),
            item("small-1", Some("u"), 10),
        ],
    };
    assert!(
        batch.items[1].payload.len() > limits.max_item_bytes,
        "the engine would dead-letter it"
    );
    match destination.send(&batch).await {
        SendOutcome::Partial { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].index, 1);
            assert!(!failures[0].is_retriable());
            assert!(
                failures[0].failure.reason.contains("limit-events"),
                "{}",
                failures[0].failure.reason
            );
        }
        other => panic!("expected partial, got {other:?}"),
    }
    let seen: Vec<String> = read_back(&emulator, &subscription, 2)
        .await
        .iter()
        .map(|m| event_id_of(&m.data))
        .collect();
    assert_exactly_once(&seen, ["small-0".to_string(), "small-1".to_string()]);
}

#[tokio::test]
async fn missing_topic_is_permanent_and_check_names_it() {
    let emulator = StandIn::pubsub_emulator();
    let destination = destination(&emulator, "no-such-topic", "").await;
    let err = destination.check().await.unwrap_err().to_string();
    assert!(
        err.contains("no-such-topic") && err.contains("not found"),
        "{err}"
    );
    match destination.send(&batch("missing", 3, 3)).await {
        SendOutcome::Failed(Failure {
            class: FailureClass::Permanent,
            reason,
            ..
        }) => {
            assert!(
                reason.contains("no-such-topic") && reason.contains("not found"),
                "{reason}"
            );
        }
        other => panic!("expected permanent, got {other:?}"),
    }
}

/// `PUBSUB_EMULATOR_HOST` alone (no `endpoint=`) points the destination at the emulator, as
/// Google's client libraries do.
#[tokio::test]
async fn honours_pubsub_emulator_host() {
    let emulator = StandIn::pubsub_emulator();
    let subscription = create_topic(&emulator, "env-events", false).await;
    std::env::set_var("PUBSUB_EMULATOR_HOST", emulator.host_port());
    let spec = DestinationSpec::parse(&format!("pubsub://{}", topic_path("env-events"))).unwrap();
    let destination = registry::build_named(spec, "env").await.unwrap();
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

/// The emulator is in-memory: stopping it loses topics and messages. What this proves is the
/// destination's side of "nothing lost": while the emulator is down, sends are retriable
/// (never delivered, never permanent), and once it is back the same batch — resent as the
/// engine would — is delivered and read back exactly once through the same publisher.
#[tokio::test]
async fn stand_in_stopped_mid_stream_gives_retriable_then_success() {
    let mut emulator = StandIn::pubsub_emulator();
    create_topic(&emulator, "restart-events", false).await;
    let destination = destination(&emulator, "restart-events", "&timeout=5s").await;
    assert_eq!(
        destination.send(&batch("before", 20, 4)).await,
        SendOutcome::Delivered
    );

    emulator.stop();
    let in_flight = batch("during", 200, 10);
    let outcome = destination.send(&in_flight).await;
    assert!(outcome.label() == "retriable", "emulator down: {outcome:?}");
    assert!(destination.check().await.is_err());

    emulator.start();
    let subscription = create_topic(&emulator, "restart-events", false).await;
    let mut delivered = false;
    // The client reconnects on its own; the engine would retry on its backoff schedule.
    for _ in 0..10 {
        match destination.send(&in_flight).await {
            SendOutcome::Delivered => {
                delivered = true;
                break;
            }
            SendOutcome::Failed(failure) if failure.is_retriable() => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            other => panic!("after restart: {other:?}"),
        }
    }
    assert!(delivered, "never delivered after the emulator came back");
    let seen: Vec<String> = read_back(&emulator, &subscription, 200)
        .await
        .iter()
        .map(|m| event_id_of(&m.data))
        .collect();
    assert_exactly_once(&seen, ids(&in_flight));
}
