//! The `eventhubs` destination on the AMQP 1.0 stand-in (Qpid Proton, SAS checked with
//! Python's `hmac`), read back from what the stand-in recorded.
//!
//! The outage is a dropped connection: the gate in front of the stand-in closes and opens
//! again, and the stand-in keeps what it received.

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::cloud::test_seq_of;
use crate::support::eventhubs::EventHubsStandIn;

pub struct EventHubs {
    hub: EventHubsStandIn,
}

/// The hub the stand-in serves (every check uses this name).
const HUB: &str = "flag-events";

impl EventHubs {
    pub async fn standin(_scratch: &Path) -> EventHubs {
        EventHubs {
            hub: EventHubsStandIn::start().await,
        }
    }

    fn url(&self, hub: &str) -> String {
        self.hub.url(hub, &format!("&name={DEST}&timeout=5s"))
    }
}

impl Target for EventHubs {
    fn capabilities(&self) -> Capabilities {
        use flagstream::dest::eventhubs::config::DEFAULT_MAX_BATCH_BYTES;
        use flagstream::dest::eventhubs::{ENVELOPE_OVERHEAD_BYTES, EVENT_OVERHEAD_BYTES};
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(
                DEFAULT_MAX_BATCH_BYTES - ENVELOPE_OVERHEAD_BYTES - EVENT_OVERHEAD_BYTES,
            ),
            // Event Hubs appends what it is sent; consumers deduplicate by message id (the
            // event id).
            dedupes_resent_batches: false,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        assert_eq!(name, HUB, "the stand-in serves one hub");
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-hub"), "no-such-hub".to_string())
    }

    async fn read_back(&mut self, _name: &str, _expected: usize) -> Vec<String> {
        self.hub
            .events()
            .iter()
            .map(|event| test_seq_of(event.body.as_bytes()))
            .collect()
    }

    async fn stop(&mut self) {
        self.hub.disconnect();
    }

    async fn restart(&mut self) {
        self.hub.reconnect();
    }
}
