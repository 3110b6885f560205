//! The `s3` destination on moto (in-memory, path-style), read back with `aws-sdk-s3`: list
//! every object under the prefix, get each, gunzip, and count the events per line.

use std::path::Path;

use super::{test_seqs_of_lines, Capabilities, Target, DEST};
use crate::support::cloud::{s3, Gate, StandIn};

const AWS_TEST_CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A small batch byte limit, so an oversized event is cheap to make.
const S3_MAX_BYTES: usize = 64 * 1024;

pub struct S3 {
    stand_in: StandIn,
    gate: Gate,
    client: aws_sdk_s3::Client,
    buckets: Vec<String>,
}

impl S3 {
    pub async fn moto(_scratch: &Path) -> S3 {
        let stand_in = StandIn::moto();
        S3 {
            gate: Gate::new(stand_in.port()).await,
            client: s3::client(&stand_in).await,
            buckets: Vec::new(),
            stand_in,
        }
    }

    fn url(&self, bucket: &str) -> String {
        format!(
            "s3://{bucket}/exports?name={DEST}&region=us-east-1&endpoint={}&format=ndjson.gz\
             &partitions=dt,hour,environment&rotate=100ms&max_bytes={S3_MAX_BYTES}&timeout=5s",
            self.gate.endpoint()
        )
    }
}

impl Target for S3 {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(S3_MAX_BYTES),
            // Keys derive from the batch id: a re-sent batch overwrites its own objects.
            dedupes_resent_batches: true,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        AWS_TEST_CREDENTIALS.to_vec()
    }

    async fn create(&mut self, name: &str) -> String {
        s3::create_bucket(&self.client, name).await;
        self.buckets.push(name.to_string());
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-bucket"), "no-such-bucket".to_string())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        s3::read_objects(&self.client, name, "exports/")
            .await
            .iter()
            .flat_map(|object| test_seqs_of_lines(&object.text))
            .collect()
    }

    async fn stop(&mut self) {
        self.gate.close();
        self.stand_in.stop();
    }

    async fn restart(&mut self) {
        self.stand_in.start();
        for bucket in &self.buckets {
            s3::create_bucket(&self.client, bucket).await;
        }
        self.gate.open();
    }
}
