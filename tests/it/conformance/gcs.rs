//! The `gs` destination on fake-gcs-server (memory backend, plain HTTP), read back over the
//! Cloud Storage JSON API: list every object under the prefix, get each, gunzip, and count the
//! events per line. Outages go through a [`Gate`] (the memory backend forgets its buckets on a
//! restart; the gate keeps flagstream out until the test has re-created them).

use std::path::Path;

use super::{test_seqs_of_lines, Capabilities, Target, DEST};
use crate::support::cloud::Gate;
use crate::support::gcs::FakeGcs;

/// A small batch byte limit, so an oversized event is cheap to make.
const GCS_MAX_BYTES: usize = 64 * 1024;

pub struct Gcs {
    server: FakeGcs,
    gate: Gate,
    buckets: Vec<String>,
}

impl Gcs {
    pub async fn fake(_scratch: &Path) -> Gcs {
        let server = FakeGcs::start();
        Gcs {
            gate: Gate::new(server.port()).await,
            buckets: Vec::new(),
            server,
        }
    }

    fn url(&self, bucket: &str) -> String {
        format!(
            "gs://{bucket}/exports?name={DEST}&endpoint={}&format=ndjson.gz\
             &partitions=dt,hour,environment&rotate=100ms&max_bytes={GCS_MAX_BYTES}&timeout=5s",
            self.gate.endpoint()
        )
    }
}

impl Target for Gcs {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(GCS_MAX_BYTES),
            // Object names derive from the batch id: a re-sent batch overwrites its objects.
            dedupes_resent_batches: true,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        self.server.create_bucket(name).await;
        self.buckets.push(name.to_string());
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-bucket"), "no-such-bucket".to_string())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        self.server
            .read_objects(name, "exports/")
            .await
            .iter()
            .flat_map(|object| test_seqs_of_lines(&object.text))
            .collect()
    }

    async fn stop(&mut self) {
        self.gate.close();
        self.server.stop();
    }

    async fn restart(&mut self) {
        self.server.restart();
        for bucket in &self.buckets {
            self.server.create_bucket(bucket).await;
        }
        self.gate.open();
    }
}
