//! The `segment` destination against an in-process Segment stand-in
//! ([`SegmentContract`]: write key, size limits, every message checked against Segment's
//! spec), read back as Segment holds messages (deduplicated on `messageId`).

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Capabilities, Target, DEST};
use crate::support::http_receivers::{segment_messages, Receiver, SegmentContract};

const WRITE_KEY: (&str, &str) = ("FLAGSTREAM_TEST_SEGMENT_WRITE_KEY", "conformance-write-key");

pub struct Segment {
    receiver: Receiver,
    invalid: Arc<Mutex<Vec<String>>>,
}

impl Segment {
    pub async fn start(_scratch: &Path) -> Segment {
        let invalid = Arc::new(Mutex::new(Vec::new()));
        let contract = SegmentContract {
            write_key: WRITE_KEY.1.to_string(),
            invalid: invalid.clone(),
        };
        Segment {
            receiver: Receiver::start(contract).await,
            invalid,
        }
    }
}

impl Target for Segment {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // One endpoint per region: nothing to name that could be missing (a wrong write
            // key is a 401, whose reason must not quote the key).
            missing_target: false,
            outage: true,
            // Segment's 32 KB message limit is checked in `tests/it/segment.rs`: the suite's
            // oversized check pads an unknown field, which the `segment` schema drops.
            max_event_bytes: None,
            // Segment deduplicates on `messageId` (= the event id).
            dedupes_resent_batches: true,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![WRITE_KEY]
    }

    async fn create(&mut self, _name: &str) -> String {
        format!(
            "segment:?name={DEST}&write_key=env:{}&endpoint={}",
            WRITE_KEY.0,
            self.receiver.base_url()
        )
    }

    async fn read_back(&mut self, _name: &str, _expected: usize) -> Vec<String> {
        let invalid = self.invalid.lock().clone();
        assert!(
            invalid.is_empty(),
            "messages breaking Segment's spec: {invalid:#?}"
        );
        segment_messages(&self.receiver)
            .iter()
            .map(|message| {
                message["properties"]["variationName"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no testSeq in {message}"))
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
