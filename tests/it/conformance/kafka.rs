//! The `kafka` destination on a tansu broker, read back with rdkafka's consumer.
//!
//! The outage is a network outage: the gate in front of the broker closes and opens again
//! (tansu's `memory://` storage would lose everything in a process restart; see
//! `support::kafka`).

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::cloud::test_seq_of;
use crate::support::kafka::Tansu;

pub struct Kafka {
    broker: Tansu,
}

impl Kafka {
    pub async fn tansu(_scratch: &Path) -> Kafka {
        Kafka {
            broker: Tansu::start().await,
        }
    }

    fn url(&self, topic: &str) -> String {
        format!(
            "kafka://{}/{topic}?name={DEST}&timeout=5s",
            self.broker.bootstrap()
        )
    }
}

impl Target for Kafka {
    fn capabilities(&self) -> Capabilities {
        use flagstream::dest::kafka::{DEFAULT_MAX_MESSAGE_BYTES, MESSAGE_OVERHEAD_BYTES};
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(DEFAULT_MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES),
            // Idempotence is per producer session: a restarted flagstream re-sends as a new
            // producer, so a re-sent batch is appended again (at least once).
            dedupes_resent_batches: false,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        self.broker.create_topic(name, 3).await;
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-topic"), "no-such-topic".to_string())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let messages = self.broker.read_all(name).await;
        messages.iter().map(|m| test_seq_of(&m.payload)).collect()
    }

    async fn stop(&mut self) {
        self.broker.disconnect();
    }

    async fn restart(&mut self) {
        self.broker.reconnect();
    }
}
