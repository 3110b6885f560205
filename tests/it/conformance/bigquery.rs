//! The `bigquery` destination's stand-in for the conformance suite: bqemulator
//! ([`crate::support::bigquery`]), one dataset per target. Like the PostgreSQL target, it
//! runs with `schema=launchdarkly` (each event whole in the `payload JSON` column of the
//! document table), read back with a query. An outage is the emulator killed and started
//! again on its persistent directory.
//!
//! bqemulator ignores load job ids (never answers 409), so it cannot deduplicate a re-sent
//! batch: the resent-batch check runs with `dedupes_resent_batches: false` here, and the
//! job-id idempotency is checked against BigQuery's documented answers in
//! tests/it/bigquery.rs.

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::bigquery::BqEmulator;
use crate::support::cloud::test_seq_of;

/// The dataset of a missing target.
const MISSING_DATASET: &str = "no_such_dataset";

pub struct BigQuery {
    emulator: BqEmulator,
}

impl BigQuery {
    pub async fn start(_scratch: &Path) -> BigQuery {
        BigQuery {
            emulator: BqEmulator::start(),
        }
    }
}

/// A dataset id for a target name (`flag-events` → `flag_events`).
fn dataset(name: &str) -> String {
    name.replace('-', "_")
}

/// Load jobs linger 60 s by default (they are rationed); the suite waits less.
fn options() -> String {
    format!("name={DEST}&schema=launchdarkly&linger=200ms")
}

impl Target for BigQuery {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: None,
            dedupes_resent_batches: false,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        self.emulator.create_dataset(&dataset(name)).await;
        self.emulator.url(&dataset(name), &options())
    }

    fn missing(&self) -> (String, String) {
        (
            self.emulator.url(MISSING_DATASET, &options()),
            MISSING_DATASET.to_string(),
        )
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let sql = format!(
            "SELECT TO_JSON_STRING(payload) FROM {}.flagstream_events",
            dataset(name)
        );
        self.emulator
            .query(&sql)
            .await
            .iter()
            .map(|row| test_seq_of(row[0].as_str().unwrap_or_default().as_bytes()))
            .collect()
    }

    async fn stop(&mut self) {
        self.emulator.stop();
    }

    async fn restart(&mut self) {
        self.emulator.restart();
    }
}
