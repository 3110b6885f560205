//! The stand-ins of today's destinations, as the conformance suite drives them.
//!
//! Servers (moto, kinesalite, the Pub/Sub emulator) sit behind a [`Gate`]: `stop` closes it
//! and stops the server, `restart` starts the server, re-creates what an in-memory server
//! lost, and only then opens the gate, so flagstream sees one continuous outage of a server
//! that keeps its data (events accepted during the outage are all still to be sent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{test_seqs_of_lines, Capabilities, Target, DEST};
use crate::support::cloud::{kinesis, pubsub, test_seq_of, Gate, StandIn};

const AWS_TEST_CREDENTIALS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The `file` destination: one NDJSON file per batch in a directory, read back with the
/// file system. An outage is the directory replaced by a plain file.
pub struct File {
    root: PathBuf,
}

/// A small batch byte limit, so an oversized event is cheap to make.
const FILE_MAX_BYTES: usize = 64 * 1024;

impl File {
    pub async fn start(scratch: &Path) -> File {
        File {
            root: scratch.join("export"),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

impl Target for File {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Every I/O error is retriable by design (`src/dest/file.rs`: the operator can
            // fix a disk), so a missing directory is created, not a permanent failure.
            missing_target: false,
            outage: true,
            max_event_bytes: Some(FILE_MAX_BYTES),
            dedupes_resent_batches: true,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        std::fs::create_dir_all(self.dir(name)).unwrap();
        format!(
            "file://{}?name={DEST}&rotate=100ms&max_bytes={FILE_MAX_BYTES}",
            self.dir(name).display()
        )
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir(name))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let file = path.file_name().unwrap().to_string_lossy();
                file.ends_with(".ndjson") && !file.starts_with('.')
            })
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|file| test_seqs_of_lines(&std::fs::read_to_string(file).unwrap()))
            .collect()
    }

    async fn stop(&mut self) {
        let dir = self.dir("flag-events");
        std::fs::rename(&dir, self.root.join("away")).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
    }

    async fn restart(&mut self) {
        let dir = self.dir("flag-events");
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(self.root.join("away"), &dir).unwrap();
    }
}

/// The `log` destination writing to a file, read back line by line.
pub struct Log {
    root: PathBuf,
}

impl Log {
    pub async fn start(scratch: &Path) -> Log {
        Log {
            root: scratch.join("log"),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name).join("events.ndjson")
    }
}

impl Target for Log {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Like `file`: I/O errors are retriable and a missing directory is created.
            missing_target: false,
            // The file stays open: taking the directory away does not stop the writes.
            outage: false,
            max_event_bytes: None,
            // An append-only log: a re-sent batch is appended again (at least once).
            dedupes_resent_batches: false,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        format!("log://{}?name={DEST}", self.file(name).display())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        test_seqs_of_lines(&std::fs::read_to_string(self.file(name)).unwrap_or_default())
    }
}

/// The `kinesis` destination on moto (in-memory) or kinesalite (LevelDB, keeps its data
/// across a restart), read back with `aws-sdk-kinesis` from every shard.
pub struct Kinesis {
    stand_in: StandIn,
    gate: Gate,
    client: aws_sdk_kinesis::Client,
    streams: Vec<String>,
    keeps_data: bool,
    _store: Option<tempfile::TempDir>,
}

impl Kinesis {
    pub async fn moto(_scratch: &Path) -> Kinesis {
        Kinesis::on(StandIn::moto(), None).await
    }

    pub async fn kinesalite(_scratch: &Path) -> Kinesis {
        let store = tempfile::tempdir().unwrap();
        Kinesis::on(StandIn::kinesalite(Some(store.path())), Some(store)).await
    }

    async fn on(stand_in: StandIn, store: Option<tempfile::TempDir>) -> Kinesis {
        kinesis::use_test_credentials();
        Kinesis {
            gate: Gate::new(stand_in.port()).await,
            client: kinesis::client(&stand_in).await,
            streams: Vec::new(),
            keeps_data: store.is_some(),
            _store: store,
            stand_in,
        }
    }

    fn url(&self, stream: &str) -> String {
        format!(
            "kinesis://{stream}?name={DEST}&region=us-east-1&endpoint={}",
            self.gate.endpoint()
        )
    }
}

impl Target for Kinesis {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            max_event_bytes: Some(flagstream::dest::kinesis::MAX_RECORD_BYTES),
            dedupes_resent_batches: false,
        }
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        AWS_TEST_CREDENTIALS.to_vec()
    }

    async fn create(&mut self, name: &str) -> String {
        kinesis::create_stream(&self.client, name, 2).await;
        self.streams.push(name.to_string());
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-stream"), "no-such-stream".to_string())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        kinesis::read_ids(&self.client, name, test_seq_of).await
    }

    async fn stop(&mut self) {
        self.gate.close();
        self.stand_in.stop();
    }

    async fn restart(&mut self) {
        self.stand_in.start();
        if !self.keeps_data {
            for stream in &self.streams {
                kinesis::create_stream(&self.client, stream, 2).await;
            }
        }
        self.gate.open();
    }
}

/// The `pubsub` destination on Google's emulator (in-memory), read back by pulling a
/// subscription made with the topic.
pub struct PubSub {
    stand_in: StandIn,
    gate: Gate,
    subscriptions: BTreeMap<String, String>,
    /// Everything pulled so far, per topic (a pull consumes what it reads).
    pulled: BTreeMap<String, Vec<String>>,
}

impl PubSub {
    pub async fn emulator(_scratch: &Path) -> PubSub {
        let stand_in = StandIn::pubsub_emulator();
        PubSub {
            gate: Gate::new(stand_in.port()).await,
            stand_in,
            subscriptions: BTreeMap::new(),
            pulled: BTreeMap::new(),
        }
    }

    fn url(&self, topic: &str) -> String {
        format!(
            "pubsub://{}?name={DEST}&endpoint={}&timeout=5s",
            pubsub::topic_path(topic),
            self.gate.endpoint()
        )
    }
}

impl Target for PubSub {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: true,
            outage: true,
            // Pub/Sub's 10 MB request limit, less the attribute headroom flagstream keeps.
            max_event_bytes: Some(
                flagstream::dest::pubsub::MAX_REQUEST_BYTES
                    - flagstream::dest::pubsub::ATTRIBUTE_HEADROOM_BYTES,
            ),
            dedupes_resent_batches: false,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        let subscription = pubsub::create_topic(&self.stand_in, name, false).await;
        self.subscriptions.insert(name.to_string(), subscription);
        self.url(name)
    }

    fn missing(&self) -> (String, String) {
        (self.url("no-such-topic"), "no-such-topic".to_string())
    }

    async fn read_back(&mut self, name: &str, expected: usize) -> Vec<String> {
        let pulled = self.pulled.entry(name.to_string()).or_default();
        let missing = expected.saturating_sub(pulled.len());
        let messages = pubsub::read_back(&self.stand_in, &self.subscriptions[name], missing).await;
        pulled.extend(messages.iter().map(|message| test_seq_of(&message.data)));
        pulled.clone()
    }

    async fn stop(&mut self) {
        self.gate.close();
        self.stand_in.stop();
    }

    async fn restart(&mut self) {
        self.stand_in.start();
        // The emulator lost everything: topics, subscriptions and what was not yet pulled.
        self.pulled.clear();
        let topics: Vec<String> = self.subscriptions.keys().cloned().collect();
        for topic in topics {
            let subscription = pubsub::create_topic(&self.stand_in, &topic, false).await;
            self.subscriptions.insert(topic, subscription);
        }
        self.gate.open();
    }
}

/// The `kafka` destination on tansu (its own file).
/// The `eventhubs` destination on the AMQP stand-in (its own file).
pub use super::eventhubs::EventHubs;
pub use super::gcs::Gcs;
pub use super::kafka::Kafka;
/// PostgreSQL (its own file: `postgres_target.rs`).
pub use super::postgres_target::Postgres;
/// The `s3` destination on moto: see [`super::s3`].
pub use super::s3::S3;
