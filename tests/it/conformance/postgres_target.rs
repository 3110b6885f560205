//! The `postgres` destination's stand-in for the conformance suite: a private PostgreSQL 15
//! cluster ([`crate::support::postgres`]), one database per target. The suite tags events
//! with a `testSeq` that only the LaunchDarkly envelope carries, so the suite runs the
//! destination with `schema=launchdarkly`: every event lands whole in the `jsonb` column of
//! its document table, read back with tokio-postgres. (The `warehouse` tables are checked by
//! tests/it/postgres.rs.) An outage is the cluster stopped and started again.

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::cloud::test_seq_of;
use crate::support::postgres::Cluster;

/// The database of a missing target.
const MISSING_DATABASE: &str = "no_such_database";

pub struct Postgres {
    cluster: Cluster,
}

impl Postgres {
    pub async fn start(_scratch: &Path) -> Postgres {
        Postgres {
            cluster: Cluster::start(),
        }
    }
}

/// A database name for a target name (`flag-events` → `flag_events`).
fn database(name: &str) -> String {
    name.replace('-', "_")
}

impl Target for Postgres {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: None,
            dedupes_resent_batches: true,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        self.cluster.create_database(&database(name)).await;
        self.cluster
            .url(&database(name), &format!("name={DEST}&schema=launchdarkly"))
    }

    fn missing(&self) -> (String, String) {
        let url = self.cluster.url(
            MISSING_DATABASE,
            &format!("name={DEST}&schema=launchdarkly"),
        );
        (url, MISSING_DATABASE.to_string())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let client = self.cluster.client(&database(name)).await;
        client
            .query("SELECT payload::text FROM flagstream_events", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| test_seq_of(row.get::<_, &str>(0).as_bytes()))
            .collect()
    }

    async fn stop(&mut self) {
        self.cluster.stop();
    }

    async fn restart(&mut self) {
        self.cluster.resume();
    }
}
