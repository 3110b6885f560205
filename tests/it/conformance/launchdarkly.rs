//! The `launchdarkly` upstream destination against an in-process LaunchDarkly events service
//! ([`LdEventsContract`]: SDK key checked, body shape checked, dedupe on the payload id), read
//! back from the bodies it accepted. The suite's server is open (no `--environment`), so the
//! destination forwards with its own `sdk_key`.

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::http_receivers::Receiver;
use crate::support::ld_events::LdEventsContract;

const SDK_KEY: (&str, &str) = ("FLAGSTREAM_TEST_LD_SDK_KEY", "sdk-conformance-key");

pub struct LaunchDarkly {
    receiver: Receiver,
}

impl LaunchDarkly {
    pub async fn start(_scratch: &Path) -> LaunchDarkly {
        let contract = LdEventsContract {
            sdk_keys: vec![SDK_KEY.1.to_string()],
            mobile_keys: Vec::new(),
            client_side_ids: Vec::new(),
        };
        LaunchDarkly {
            receiver: Receiver::start(contract).await,
        }
    }

    fn dest(&self, endpoint: &str) -> String {
        format!(
            "launchdarkly:?name={DEST}&endpoint={endpoint}&sdk_key=env:{}",
            SDK_KEY.0
        )
    }
}

impl Target for LaunchDarkly {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A relay URL with a path LaunchDarkly does not serve: 404, permanent.
            missing_target: true,
            outage: true,
            // LaunchDarkly documents no per-event limit.
            max_event_bytes: None,
            // LaunchDarkly deduplicates on `X-LaunchDarkly-Payload-ID`, which is forwarded.
            dedupes_resent_batches: true,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![SDK_KEY]
    }

    async fn create(&mut self, _name: &str) -> String {
        self.dest(&self.receiver.base_url())
    }

    fn missing(&self) -> (String, String) {
        let endpoint = format!("{}/missing-relay", self.receiver.base_url());
        (self.dest(&endpoint), "missing-relay".to_string())
    }

    async fn read_back(&mut self, _name: &str, _expected: usize) -> Vec<String> {
        self.receiver
            .accepted()
            .iter()
            .flat_map(|request| {
                let events: Vec<serde_json::Value> = serde_json::from_slice(&request.body)
                    .unwrap_or_else(|err| panic!("{err}: {:?}", request.body));
                events
                    .iter()
                    .map(|event| {
                        event["testSeq"]
                            .as_str()
                            .unwrap_or_else(|| panic!("event without testSeq: {event}"))
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn stop(&mut self) {
        self.receiver.stop().await;
    }

    async fn restart(&mut self) {
        self.receiver.restart().await;
    }
}
