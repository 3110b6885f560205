//! Pub/Sub test helpers over the official `google-cloud-pubsub` client: topic + subscription
//! creation and pulling (streaming pull, every message acked).

use std::time::Duration;

use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin, TopicAdmin};
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

/// Pull until `expected` messages arrived, then keep listening briefly so duplicates show.
pub async fn read_back(emulator: &StandIn, subscription: &str, expected: usize) -> Vec<Message> {
    let subscriber = Subscriber::builder()
        .with_endpoint(emulator.endpoint())
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(subscription).build();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = if messages.len() >= expected {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(Ok((message, handler)))) => {
                handler.ack();
                messages.push(message);
            }
            Ok(Some(Err(err))) => panic!("pull failed: {err}"),
            Ok(None) | Err(_) => break,
        }
    }
    messages
}
