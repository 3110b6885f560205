//! The `webhook+http` destination against an in-process webhook receiver
//! ([`WebhookContract`]: hooks at known paths, HMAC signature checked, body limit, dedupe on
//! `Idempotency-Key`), read back from what the receiver accepted.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Capabilities, Target, DEST};
use crate::support::cloud::test_seq_of;
use crate::support::http_receivers::{Receiver, WebhookContract};

/// The signing secret, handed to flagstream through the environment.
const SECRET_ENV: (&str, &str) = ("FLAGSTREAM_TEST_WEBHOOK_SECRET", "conformance-hook-secret");
/// The receiver's body limit, also the destination's `max_bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct Webhook {
    receiver: Receiver,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    pub async fn start(_scratch: &Path) -> Webhook {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let contract = WebhookContract {
            paths: paths.clone(),
            secret: Some(SECRET_ENV.1.to_string()),
            token: None,
            max_body_bytes: MAX_BODY_BYTES,
        };
        Webhook {
            receiver: Receiver::start(contract).await,
            paths,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "webhook+http://{}{path}?name={DEST}&secret=env:{}&max_bytes={MAX_BODY_BYTES}",
            self.receiver.authority(),
            SECRET_ENV.0
        )
    }
}

impl Target for Webhook {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(MAX_BODY_BYTES),
            // The receiver deduplicates on `Idempotency-Key` (= the batch id).
            dedupes_resent_batches: true,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![SECRET_ENV]
    }

    async fn create(&mut self, name: &str) -> String {
        let path = format!("/hooks/{name}");
        self.paths.lock().push(path.clone());
        self.url(&path)
    }

    fn missing(&self) -> (String, String) {
        (
            self.url("/hooks/missing-hook"),
            "/hooks/missing-hook".into(),
        )
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let path = format!("/hooks/{name}");
        self.receiver
            .accepted()
            .iter()
            .filter(|request| request.path == path)
            .flat_map(|request| {
                let events: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
                events
                    .iter()
                    .map(|event| test_seq_of(event.to_string().as_bytes()))
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
