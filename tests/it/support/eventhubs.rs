//! The Event Hubs stand-in: `eventhubs_standin.py`, an AMQP 1.0 peer on Apache Qpid Proton
//! (`python-qpid-proton`, installed by `scripts/install-test-deps.sh` into
//! `$FLAGSTREAM_TEST_DEPS/eventhubs-python`), one per test on a free loopback port, killed on
//! drop. It checks SAS tokens on `$cbs` itself (Python's `hmac`), answers `$management`,
//! enforces a batch size limit and records every event it accepts as a JSON line, which
//! [`EventHubsStandIn::events`] reads back.
//!
//! Clients reach it through a [`Gate`] (when started gated), so closing the gate is a dropped
//! connection of a server that keeps what it received.
//!
//! Benchmarks include this file too, so parts of it go unused there.

#![allow(dead_code)] // benches include this module and use only part of it

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde::Deserialize;

use super::cloud::{free_port, kill_process_group, test_deps, Gate};

/// The shared access policy the stand-in knows.
pub const POLICY: &str = "send";
/// Its key (what [`EventHubsStandIn::key_file`] holds).
pub const KEY: &str = "c3RhbmQtaW4ta2V5LWZvci10ZXN0cw==";
/// The namespace tests name (the stand-in does not care which).
pub const NAMESPACE: &str = "flagstream-test";

/// One event as the stand-in received it.
#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedEvent {
    pub partition: String,
    pub partition_key: Option<String>,
    pub body: String,
    pub properties: std::collections::BTreeMap<String, serde_json::Value>,
    pub message_id: Option<String>,
    /// Which delivery (batch) brought it, counting from 1.
    pub batch: u64,
}

impl ReceivedEvent {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(|value| value.as_str())
    }
}

/// How to start a stand-in.
#[derive(Debug, Clone)]
pub struct StandInOptions {
    pub hub: String,
    pub partitions: usize,
    pub max_message_size: usize,
    /// Clients connect through a gate (for outages); benchmarks go direct.
    pub gated: bool,
}

impl Default for StandInOptions {
    fn default() -> Self {
        StandInOptions {
            hub: "flag-events".into(),
            partitions: 4,
            max_message_size: 1024 * 1024,
            gated: true,
        }
    }
}

/// A running stand-in (killed on drop).
pub struct EventHubsStandIn {
    child: Option<Child>,
    port: u16,
    gate: Option<Gate>,
    record: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EventHubsStandIn {
    /// A stand-in with hub `flag-events`, 4 partitions and the Standard tier's 1 MB limit.
    pub async fn start() -> EventHubsStandIn {
        EventHubsStandIn::start_with(StandInOptions::default()).await
    }

    pub async fn start_with(options: StandInOptions) -> EventHubsStandIn {
        let python = locate();
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("received.jsonl");
        let log = dir.path().join("standin.log");
        let (child, port) = (1..=START_ATTEMPTS)
            .find_map(|attempt| {
                let port = free_port();
                let mut child = spawn(&python, &options, port, &record, &log);
                match wait_bound(&mut child, port, &log) {
                    Ok(()) => Some((child, port)),
                    // Another process took the port between `free_port` and the bind.
                    Err(_) if attempt < START_ATTEMPTS => {
                        let _ = child.wait();
                        None
                    }
                    Err(text) => panic!("the Event Hubs stand-in did not start; log:\n{text}"),
                }
            })
            .expect("the last attempt panics");
        let gate = if options.gated {
            Some(Gate::new(port).await)
        } else {
            None
        };
        EventHubsStandIn {
            child: Some(child),
            port,
            gate,
            record,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The AMQP endpoint clients use (`amqp://127.0.0.1:PORT`, through the gate if any).
    pub fn endpoint(&self) -> String {
        match &self.gate {
            Some(gate) => format!("amqp://{}", gate.host_port()),
            None => format!("amqp://127.0.0.1:{}", self.port),
        }
    }

    /// A file holding `key` (for `key=file:PATH`: secrets are never inline).
    pub fn key_file(&self, key: &str) -> PathBuf {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self._dir.path().join(format!("key-{n}"));
        std::fs::write(&path, key).unwrap();
        path
    }

    /// An `eventhubs://` URL for `hub` with the right key; `options` are appended
    /// (`&name=value…`).
    pub fn url(&self, hub: &str, options: &str) -> String {
        self.url_with_key(hub, KEY, options)
    }

    /// An `eventhubs://` URL for `hub` with `key`.
    pub fn url_with_key(&self, hub: &str, key: &str, options: &str) -> String {
        format!(
            "eventhubs://{NAMESPACE}/{hub}?policy={POLICY}&key=file:{}&endpoint={}{options}",
            self.key_file(key).display(),
            self.endpoint()
        )
    }

    /// Everything recorded: events, token checks (`"type": "cbs"`), refusals.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The events received, in arrival order.
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.records()
            .into_iter()
            .filter(|record| record["type"] == "event")
            .map(|record| serde_json::from_value(record).unwrap())
            .collect()
    }

    /// Drop every client connection and refuse new ones (the server keeps running).
    pub fn disconnect(&self) {
        self.gate.as_ref().expect("a gated stand-in").close();
    }

    pub fn reconnect(&self) {
        self.gate.as_ref().expect("a gated stand-in").open();
    }
}

impl Drop for EventHubsStandIn {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            let _ = child.wait();
        }
    }
}

/// Starts tried before giving up: each picks a free port, which another test may bind before
/// the stand-in does.
const START_ATTEMPTS: usize = 5;

fn spawn(python: &Path, options: &StandInOptions, port: u16, record: &Path, log: &Path) -> Child {
    let output = std::fs::File::create(log).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/eventhubs_standin.py"
    );
    Command::new(python)
        .arg(script)
        .args(["--port", &port.to_string(), "--hub", &options.hub])
        .args(["--partitions", &options.partitions.to_string()])
        .args(["--policy", POLICY, "--key", KEY])
        .args(["--max-message-size", &options.max_message_size.to_string()])
        .arg("--record")
        .arg(record)
        .stdin(Stdio::null())
        // Read by `wait_bound` for its ready line and copied into the log.
        .stdout(Stdio::piped())
        .stderr(output)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start the Event Hubs stand-in: {err}"))
}

/// Wait until the stand-in says it holds `port` (it says so only after binding it: a port
/// that merely accepts connections may be another test's server). `Err(log)` when its output
/// ended first: it exited. Its standard output is copied into `log` by a thread meanwhile
/// and afterwards, which signals the ready line as it passes.
fn wait_bound(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let ready = format!("eventhubs-standin listening on 127.0.0.1:{port}");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut copy = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    let (said_ready, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(copy, "{line}");
            if line == ready {
                let _ = said_ready.send(());
            }
        }
    });
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    match heard.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => Ok(()),
        Err(RecvTimeoutError::Disconnected) => Err(read_log()),
        Err(RecvTimeoutError::Timeout) => panic!(
            "the Event Hubs stand-in did not listen on {port} within 30s; log:\n{}",
            read_log()
        ),
    }
}

/// The stand-in's Python (with Proton), or fail with the command that installs it.
fn locate() -> PathBuf {
    let python = test_deps().join("eventhubs-python/bin/python");
    let has_proton = Command::new(&python)
        .args(["-c", "import proton"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_proton {
        panic!(
            "the Event Hubs stand-in needs python-qpid-proton in {}. Install it with \
             `scripts/install-test-deps.sh` (or: python3 -m venv .test-deps/eventhubs-python && \
             .test-deps/eventhubs-python/bin/pip install python-qpid-proton==0.40.0)",
            python.display()
        );
    }
    python
}
