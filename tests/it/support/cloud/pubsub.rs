//! Pub/Sub test helpers over the official `google-cloud-pubsub` client: topic + subscription
//! creation and pulling (streaming pull, every message acked).

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;

use super::StandIn;

/// The emulator rejects very short project and topic names.
pub const PROJECT: &str = "flagstream-test";

pub fn topic_path(topic: &str) -> String {
    format!("projects/{PROJECT}/topics/{topic}")
}

/// Create a topic and a subscription on it (subscriptions see only later messages).
pub async fn create_topic(emulator: &StandIn, topic: &str, ordered: bool) -> String {
    let topics = TopicAdmin::builder()
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    topics
        .create_topic()
        .set_name(topic_path(topic))
        .send()
        .await
        .unwrap();
    let subscriptions = SubscriptionAdmin::builder()
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let subscription = format!("projects/{PROJECT}/subscriptions/{topic}-reader");
    subscriptions
        .create_subscription()
        .set_name(&subscription)
        .set_topic(topic_path(topic))
        .set_ack_deadline_seconds(60)
        .set_enable_message_ordering(ordered)
        .send()
        .await
        .unwrap();
    subscription
}

/// The attribute that marks the read-back sentinel.
const SENTINEL: &str = "flagstream-test-sentinel";

/// Every message on `subscription` published before this call, each acked once: a sentinel
/// is published to the subscription's topic with the official publisher, and pulling stops
/// once the sentinel and at least `expected` messages arrived (or after a minute, so a test
/// that lost messages fails naming them). Duplicates of what was published before the
/// sentinel are read too, without waiting for "nothing more" to happen.
pub async fn read_back(emulator: &StandIn, subscription: &str, expected: usize) -> Vec<Message> {
    publish_sentinel(emulator, subscription).await;
    let subscriber = Subscriber::builder()
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(subscription).build();
    let mut messages = Vec::new();
    let mut sentinel_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(sentinel_seen && messages.len() >= expected) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok((message, handler)))) => {
                handler.ack();
                if message.attributes.contains_key(SENTINEL) {
                    sentinel_seen = true;
                } else {
                    messages.push(message);
                }
            }
            Ok(Some(Err(err))) => panic!("pull failed: {err}"),
            Ok(None) | Err(_) => break,
        }
    }
    messages
}

/// Publish the sentinel to the topic `subscription` reads.
async fn publish_sentinel(emulator: &StandIn, subscription: &str) {
    let topic = SubscriptionAdmin::builder()
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap()
        .get_subscription()
        .set_subscription(subscription)
        .send()
        .await
        .unwrap()
        .topic;
    let publisher = Publisher::builder(topic)
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let sentinel = Message::new()
        .set_data(bytes::Bytes::from_static(b"{}"))
        .set_attributes([(SENTINEL, "1")]);
    publisher.publish(sentinel).await.unwrap();
}
