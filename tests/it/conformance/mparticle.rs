//! The `mparticle` destination against an in-process mParticle stand-in
//! ([`MParticleContract`]: key and secret, size and count limits, every batch checked against
//! the Events API schema), read back from the events it accepted.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Capabilities, Target, DEST};
use crate::support::http_receivers::{mparticle_events, MParticleContract, Receiver};

pub const KEY: (&str, &str) = ("FLAGSTREAM_TEST_MP_KEY", "mp-key");
pub const SECRET: (&str, &str) = ("FLAGSTREAM_TEST_MP_SECRET", "mp-secret");

pub struct MParticle {
    pub receiver: Receiver,
    pub invalid: Arc<Mutex<Vec<String>>>,
}

impl MParticle {
    pub async fn start(_scratch: &Path) -> MParticle {
        let invalid = Arc::new(Mutex::new(Vec::new()));
        let contract = MParticleContract {
            key: KEY.1.to_string(),
            secret: SECRET.1.to_string(),
            invalid: invalid.clone(),
        };
        MParticle {
            receiver: Receiver::start(contract).await,
            invalid,
        }
    }

    pub fn url(&self, extra: &str) -> String {
        format!(
            "mparticle:?name={DEST}&key=env:{}&secret=env:{}&endpoint={}{extra}",
            KEY.0,
            SECRET.0,
            self.receiver.base_url()
        )
    }
}

impl Target for MParticle {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // One endpoint per pod: nothing to name that could be missing.
            missing_target: false,
            outage: true,
            // The 128 KB batch limit is checked in `tests/it/mparticle.rs` (the suite pads an
            // unknown field, which the `mparticle` schema drops).
            max_event_bytes: None,
            // mParticle documents no deduplication key: a re-sent batch arrives again.
            dedupes_resent_batches: false,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![KEY, SECRET]
    }

    async fn create(&mut self, _name: &str) -> String {
        self.url("")
    }

    async fn read_back(&mut self, _name: &str, _expected: usize) -> Vec<String> {
        let invalid = self.invalid.lock().clone();
        assert!(
            invalid.is_empty(),
            "batches breaking mParticle's schema: {invalid:#?}"
        );
        mparticle_events(&self.receiver)
            .iter()
            .map(|(_, event)| {
                event["data"]["custom_attributes"]["variation_name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no testSeq in {event}"))
                    .to_string()
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
