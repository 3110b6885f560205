//! Test support for the cloud destinations: real stand-in servers and batch builders.
//!
//! [`StandIn`] starts moto (Kinesis, STS), kinesalite or Google's Pub/Sub emulator on a
//! 127.0.0.1 port in its own process group (moto and kinesalite bind port 0 and report the
//! port they got), waits until it accepts connections, and kills the whole group on drop, so
//! no server outlives its test. A missing stand-in FAILS the test with the command that
//! installs it (`scripts/install-test-deps.sh` installs them).
//!
//! moto and the emulator keep everything in memory: `stop` + `start` gives an empty server on
//! the same port, so tests re-create their stream/topic after a restart.
#![allow(dead_code)] // benches/cloud_destinations.rs includes this module and uses only part of it

pub mod kinesis;
pub mod pubsub;
pub mod s3;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flagstream::dest::registry::build_named;
use flagstream::dest::{Batch, BatchItem, Destination, DestinationSpec};
use flagstream::event::Schema;

const PUBSUB_EMULATOR: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

/// Which stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Moto,
    PubSubEmulator,
    /// kinesalite (Node), a second Kinesis implementation; with a LevelDB directory its
    /// streams and records survive a restart.
    Kinesalite,
}

/// A running stand-in server (killed on drop).
pub struct StandIn {
    kind: Kind,
    port: u16,
    program: PathBuf,
    child: Option<Child>,
    /// kinesalite's LevelDB directory (persistent across `stop`/`start`), if any.
    store: Option<PathBuf>,
    /// Starts so far; the emulator's log gets one "Server started" line per start.
    starts: usize,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl StandIn {
    /// moto server (Kinesis, STS, …) on a free port.
    pub fn moto() -> StandIn {
        StandIn::start_new(Kind::Moto)
    }

    /// Google's Pub/Sub emulator on a free port.
    pub fn pubsub_emulator() -> StandIn {
        StandIn::start_new(Kind::PubSubEmulator)
    }

    /// kinesalite on a free port; with `store`, backed by LevelDB in that directory so a
    /// restart keeps streams and records (unlike moto and the Pub/Sub emulator).
    pub fn kinesalite(store: Option<&std::path::Path>) -> StandIn {
        StandIn::start_with(Kind::Kinesalite, store.map(std::path::Path::to_path_buf))
    }

    fn start_new(kind: Kind) -> StandIn {
        StandIn::start_with(kind, None)
    }

    fn start_with(kind: Kind, store: Option<PathBuf>) -> StandIn {
        let program = locate(kind);
        let log_dir = tempfile::tempdir().unwrap();
        let mut stand_in = StandIn {
            kind,
            // moto and kinesalite bind port 0 and report the port they got; the emulator
            // cannot tell its port, so it gets one picked here (a small bind-then-release race).
            port: match kind {
                Kind::PubSubEmulator => free_port(),
                Kind::Moto | Kind::Kinesalite => 0,
            },
            program,
            child: None,
            store,
            starts: 0,
            log: log_dir.path().join("stand-in.log"),
            _log_dir: log_dir,
        };
        stand_in.start();
        stand_in
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Start (again, on the same port); waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(&self.program);
        match self.kind {
            Kind::Moto => command.args(["-H", "127.0.0.1", "-p", &self.port.to_string()]),
            Kind::PubSubEmulator => {
                command.args(["--host=127.0.0.1", &format!("--port={}", self.port)])
            }
            Kind::Kinesalite => {
                let modules = test_deps().join("kinesalite/node_modules");
                command
                    .arg(
                        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                            .join("tests/it/support/cloud/kinesalite.js"),
                    )
                    .arg(self.port.to_string())
                    .args(self.store.iter())
                    .env("NODE_PATH", modules)
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {:?}: {err}", self.program));
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready();
    }

    /// Kill the server (and its process group) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        // The port must be free before a restart binds it again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while connectable(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&mut self) {
        let limit = match self.kind {
            Kind::Moto | Kind::Kinesalite => Duration::from_secs(30),
            Kind::PubSubEmulator => Duration::from_secs(60),
        };
        let deadline = Instant::now() + limit;
        loop {
            if self.port == 0 {
                self.port = self.reported_port().unwrap_or(0);
            }
            if self.port != 0 && connectable(self.port) && self.ready_probe() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{:?} exited with {status} before accepting connections; log:\n{}",
                    self.kind,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} did not accept connections on port {} within {limit:?}; log:\n{}",
                    self.kind,
                    self.port,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port a server started on port 0 reports: moto's ` * Running on
    /// http://127.0.0.1:PORT`, our kinesalite wrapper's `kinesalite listening on 127.0.0.1:PORT`.
    fn reported_port(&self) -> Option<u16> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let line = log.lines().rfind(|line| {
            line.contains("Running on http://127.0.0.1:")
                || line.contains("listening on 127.0.0.1:")
        })?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    /// The emulator opens its port before it serves; its log line says when it does.
    fn ready_probe(&self) -> bool {
        match self.kind {
            Kind::Moto | Kind::Kinesalite => true,
            Kind::PubSubEmulator => std::fs::read_to_string(&self.log)
                .map(|log| log.matches("Server started").count() >= self.starts)
                .unwrap_or(false),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The child leads its own process group (wrapper scripts may fork the real server).
pub fn kill_process_group(pid: u32) {
    // `kill -KILL -- -PGID` via the kill(1) program keeps the tests free of `unsafe`.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait (up to 30 s) until `child`, the stand-in `what`, listens on `port`; fail with its log
/// (`log`) if it exits or never listens.
pub fn wait_listening(port: u16, child: &mut Child, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !connectable(port) {
        if let Some(status) = child.try_wait().ok().flatten() {
            panic!("{what} exited with {status}; log:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30s; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn connectable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Find the stand-in's program, or fail with the command that installs it.
fn locate(kind: Kind) -> PathBuf {
    match kind {
        Kind::Moto => {
            let venv = test_deps().join("venv/bin/moto_server");
            if venv.is_file() {
                return venv;
            }
            if let Some(found) = which("moto_server") {
                return found;
            }
            panic!(
                "moto_server (the Kinesis stand-in) is not installed. Install it with \
                 `scripts/install-test-deps.sh` (or: python3 -m venv .test-deps/venv && \
                 .test-deps/venv/bin/pip install 'moto[server]')"
            );
        }
        Kind::PubSubEmulator => {
            let path = PathBuf::from(PUBSUB_EMULATOR);
            if path.is_file() {
                return path;
            }
            panic!(
                "Google's Pub/Sub emulator is not installed at {PUBSUB_EMULATOR}. Install it with \
                 `scripts/install-test-deps.sh` (or: apt-get install -y google-cloud-cli-pubsub-emulator; \
                 it needs Java)"
            );
        }
        Kind::Kinesalite => {
            let installed = test_deps().join("kinesalite/node_modules/kinesalite/index.js");
            match which("node") {
                Some(node) if installed.is_file() => node,
                _ => panic!(
                    "kinesalite (the second Kinesis stand-in) is not installed. Install it with \
                     `scripts/install-test-deps.sh` (or: npm install --prefix .test-deps/kinesalite \
                     kinesalite@3.3.3; needs Node.js)"
                ),
            }
        }
    }
}

/// `$FLAGSTREAM_TEST_DEPS`, or `.test-deps` in the checkout (where the install script puts
/// the stand-ins).
pub fn test_deps() -> PathBuf {
    std::env::var_os("FLAGSTREAM_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".test-deps"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The destination for a `--dest` URL, built by the registry the way `flagstream serve`
/// builds it (one place that knows how destinations are constructed).
pub async fn destination(url: &str) -> std::sync::Arc<dyn Destination> {
    let spec = DestinationSpec::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"));
    build_named(spec, "test")
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"))
}

/// The event ids of a batch, in order.
pub fn ids(batch: &Batch) -> Vec<String> {
    batch.items.iter().map(|i| i.event_id.to_string()).collect()
}

/// One test event. The payload is a LaunchDarkly-export-shaped JSON document carrying its
/// event id, so read-back can count each event.
pub fn item(event_id: &str, context_key: Option<&str>, payload_padding: usize) -> BatchItem {
    let payload = serde_json::json!({
        "project": "flagstream-test",
        "environment": "production",
        "version": 1,
        "event": {
            "kind": "feature",
            "id": event_id,
            "key": "new-checkout",
            "contextKeys": {"user": context_key},
            "value": true,
            "padding": "x".repeat(payload_padding),
        }
    });
    BatchItem {
        event_id: event_id.into(),
        payload: Bytes::from(serde_json::to_vec(&payload).unwrap()),
        kind: "feature".into(),
        key: Some("new-checkout".into()),
        context_key: context_key.map(Into::into),
        environment: "production".into(),
        received_at_ms: 1_700_000_000_000,
    }
}

/// A batch of `count` events `"{prefix}-{i}"` spread over `contexts` context keys.
pub fn batch(prefix: &str, count: usize, contexts: usize) -> Batch {
    let items = (0..count)
        .map(|i| {
            let context = format!("user-{}", i % contexts.max(1));
            item(&format!("{prefix}-{i}"), Some(&context), 0)
        })
        .collect();
    Batch {
        id: format!("batch-{prefix}"),
        schema: Schema::LaunchDarkly,
        items,
        lines: None,
    }
}

/// An object's text as stored, gunzipped when it is gzip (by its magic bytes).
pub fn gunzipped_text(raw: &[u8]) -> String {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(raw), &mut text).unwrap();
        text
    } else {
        String::from_utf8(raw.to_vec()).unwrap()
    }
}

/// The event id inside a read-back payload.
pub fn event_id_of(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap_or_else(|err| {
        panic!(
            "read back a non-JSON payload ({err}): {:?}",
            String::from_utf8_lossy(payload)
        )
    });
    value["event"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("payload without event.id: {value}"))
        .to_string()
}

/// Assert that `seen` holds every id of `expected` exactly once and nothing else.
pub fn assert_exactly_once(seen: &[String], expected: impl IntoIterator<Item = String>) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for id in seen {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let expected: std::collections::BTreeSet<String> = expected.into_iter().collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    let duplicated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let unexpected: Vec<&&str> = counts
        .keys()
        .filter(|id| !expected.contains(**id))
        .collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "read back {} events for {} expected; missing {:?}; duplicated {:?}; unexpected {:?}",
        seen.len(),
        expected.len(),
        &missing[..missing.len().min(10)],
        &duplicated[..duplicated.len().min(10)],
        &unexpected[..unexpected.len().min(10)],
    );
}

/// A TCP gate between flagstream and a stand-in. Open, it forwards every connection to the
/// stand-in; closed, it accepts and drops connections (the client sees a reset, like a down
/// server).
///
/// Why: the stand-ins are in-memory, so a restarted one has no stream/topic until the test
/// re-creates it, and a send landing in that window would get a (correct) permanent "not
/// found". Closing the gate while the stand-in restarts and the test re-creates its
/// resources makes the restart look, to flagstream, like an outage of a server that keeps its
/// data — which is what the test is about.
pub struct Gate {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Start an open gate forwarding to `127.0.0.1:upstream_port`.
    pub async fn new(upstream_port: u16) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let gate_open = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !gate_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let open = gate_open.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)).await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    // Forward until either side closes; a closed gate cuts live connections.
                    let mut poll = tokio::time::interval(Duration::from_millis(50));
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = poll.tick() => if !open.load(Ordering::SeqCst) { return },
                        }
                    }
                });
            }
        });
        Gate { port, open, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A LaunchDarkly `/bulk` body of `count` feature events, each tagged `"testSeq":"{tag}-{i}"`
/// (unknown fields pass through to the export), over `contexts` user contexts.
pub fn ld_bulk(tag: &str, count: usize, contexts: usize) -> serde_json::Value {
    let events: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "kind": "feature",
                "creationDate": 1_700_000_000_000u64 + i as u64,
                "key": "new-checkout",
                "version": 12,
                "context": {"kind": "user", "key": format!("user-{}", i % contexts.max(1))},
                "variation": 1,
                "value": true,
                "default": false,
                "testSeq": format!("{tag}-{i}"),
                // Also as the variation's name, which every output schema carries (Segment
                // `properties.variationName`, mParticle `variation_name`, go-feature-flag
                // `variation`), so targets whose schema drops unknown fields can be read back.
                "variationName": format!("{tag}-{i}"),
            })
        })
        .collect();
    serde_json::Value::Array(events)
}

/// The `testSeq` of an exported LaunchDarkly envelope.
pub fn test_seq_of(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
    value["event"]["testSeq"]
        .as_str()
        .unwrap_or_else(|| panic!("exported event without testSeq: {value}"))
        .to_string()
}
