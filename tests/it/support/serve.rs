//! Test utilities for end-to-end tests that run the real `flagstream` binary.
//!
//! * [`Flagstream`] starts `flagstream serve` through the harness (`flagstream_harness::serve`:
//!   port 0, bound addresses read from its JSON log, `/readyz` awaited, killed on drop, log
//!   printed when the test fails). `kill9` and `terminate` simulate a crash and an orderly stop.
//! * [`read_export`] reads every event a file destination wrote.
//! * [`metric`] scrapes one Prometheus series from `/metrics`.
//! * [`ld_python`] finds the LaunchDarkly Python SDK venv installed by
//!   `scripts/install-test-deps.sh`, failing loudly (never skipping) when it is missing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use flagstream_harness::{client, ServeOptions, Server};

use super::eventually;
use serde_json::Value;

pub const SDK_KEY: &str = "sdk-test-key";
pub const MOBILE_KEY: &str = "mob-test-key";
pub const CLIENT_ID: &str = "client-test-id";
pub const API_KEY: &str = "api-test-key";

/// `--environment` value mapping every test credential to `production`.
pub fn production_env() -> String {
    format!("production={SDK_KEY},{MOBILE_KEY},{CLIENT_ID},{API_KEY}")
}

/// A running `flagstream serve` (the harness' [`Server`] with test defaults), killed on drop;
/// its log is printed when the test fails.
pub struct Flagstream {
    pub ingest: SocketAddr,
    pub admin: SocketAddr,
    server: Server,
}

/// Builder for [`Flagstream`]; every flag is passed through as given.
pub struct FlagstreamBuilder {
    options: ServeOptions,
}

impl FlagstreamBuilder {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options = self.options.args(args);
        self
    }

    /// An environment variable for the server process (test hooks).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.options = self.options.env(name, value);
        self
    }

    /// Start and wait until `/readyz` answers 200.
    pub async fn start(self) -> Flagstream {
        let server = self
            .options
            .start()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        Flagstream {
            ingest: server.ingest(),
            admin: server.admin(),
            server,
        }
    }
}

impl Flagstream {
    /// `flagstream serve` on `data_dir`, with small WAL segments (cheap preallocation in
    /// tests) unless the test sets them.
    pub fn builder(data_dir: impl Into<PathBuf>) -> FlagstreamBuilder {
        let options = ServeOptions::new(env!("CARGO_BIN_EXE_flagstream"), data_dir)
            .default_arg("--wal-segment-bytes", "16MiB")
            .default_arg("--wal-max-bytes", "256MiB")
            .default_arg("--wal-min-free-bytes", "64MiB");
        FlagstreamBuilder { options }
    }

    pub fn log_text(&self) -> String {
        self.server.log_text()
    }

    /// Peak resident memory (`VmHWM`) of the server process so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.server
            .peak_rss_mib()
            .expect("the server's /proc status")
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        self.server.admin_url(path)
    }

    /// The server's process id (to signal it, e.g. SIGHUP); `None` once it exited.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// SIGKILL: a crash, no chance to clean up.
    pub fn kill9(&mut self) {
        self.server.kill9();
    }

    /// Wait (bounded) for the process to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.server
            .wait_exit(timeout)
            .await
            .unwrap_or_else(|| panic!("flagstream still running after {timeout:?}"))
    }

    /// SIGTERM and wait for the exit status (bounded).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.server
            .terminate(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("flagstream did not exit after SIGTERM"))
    }

    /// `GET /v1/destinations` as JSON.
    pub async fn destinations(&self) -> Value {
        let body = http_get(self.admin, "/v1/destinations")
            .await
            .expect("admin answers");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until every destination has no lag and nothing in flight.
    pub async fn wait_delivered(&self, timeout: Duration) {
        eventually("every destination caught up", timeout, || async {
            let status = self.destinations().await;
            let idle = status["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["lag"]["records"] == 0 && d["in_flight_batches"] == 0);
            if idle {
                Ok(())
            } else {
                Err(format!("{status:#}"))
            }
        })
        .await
    }
}

/// `GET path`: the body, whatever the status; `None` when nothing answered.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_request(addr, "GET", path).await.map(|(_, body)| body)
}

/// `GET path`: the status; `None` when nothing answered.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_request(addr, "GET", path)
        .await
        .map(|(status, _)| status)
}

/// One request without a body: status and body text; `None` when nothing answered.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let method = http::Method::from_bytes(method.as_bytes()).ok()?;
    let response = client::request(addr, method, path, &[], bytes::Bytes::new())
        .await
        .ok()?;
    Some((response.status, response.text()))
}

/// One Prometheus series' value: the sum over series of `name` whose labels contain every
/// `label="value"` given.
pub async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = http_get(admin, "/metrics").await.expect("metrics");
    metric_in(&text, name, labels)
}

/// [`metric`] over a `/metrics` text already fetched.
pub fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every line written by a file destination under `dir`, unparsed (a JSON parser would
/// round the numbers some tests check): complete `*.ndjson` files only (temp files start
/// with `.`), in file-name order.
pub fn read_export_lines(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".ndjson") && !name.starts_with('.')
        })
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// Every event written by a file destination under `dir` ([`read_export_lines`], parsed).
pub fn read_export(dir: &Path) -> Vec<Value> {
    read_export_lines(dir)
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: bad line {line}: {err}", dir.display()))
        })
        .collect()
}

/// Wait until the export holds at least `count` events; returns them.
pub async fn wait_for_export(dir: &Path, count: usize, timeout: Duration) -> Vec<Value> {
    eventually(
        &format!("{count} events exported"),
        timeout,
        || async move {
            let events = read_export(dir);
            if events.len() >= count {
                Ok(events)
            } else {
                Err(format!("{} exported", events.len()))
            }
        },
    )
    .await
}

/// Count exported events by `event.kind`.
pub fn kinds(events: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        let kind = event["event"]["kind"].as_str().unwrap_or("?").to_string();
        *counts.entry(kind).or_default() += 1;
    }
    counts
}

/// A `/bulk` body of `count` custom events, each carrying `data.n` = `first + i` so tests can
/// tell exactly which events arrived.
pub fn numbered_bulk(first: u64, count: u64) -> String {
    let events: Vec<String> = (first..first + count)
        .map(|n| {
            format!(
                r#"{{"kind":"custom","creationDate":1717000000000,"key":"purchase","context":{{"kind":"user","key":"user-{}"}},"data":{{"n":{n}}},"metricValue":1.5}}"#,
                n % 1000
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// The `data.n` marker of every exported event that has one.
pub fn markers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|event| event["event"]["data"]["n"].as_u64())
        .collect()
}

/// The LaunchDarkly Python SDK's interpreter, installed by `scripts/install-test-deps.sh`.
/// Panics (the test fails, it never skips) with the install command when missing.
pub fn ld_python() -> PathBuf {
    let deps = std::env::var_os("FLAGSTREAM_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps"));
    let python = deps.join("ld-python/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import ldclient"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    assert!(
        ok,
        "the LaunchDarkly Python SDK is not installed at {}; run `scripts/install-test-deps.sh` \
         (or the whole suite with `scripts/test.sh`)",
        python.display()
    );
    python
}

/// Run the LaunchDarkly Python SDK (`ld_sdk_driver.py`) against `events_uri` with `sdk_key`
/// for `users` users (plus its diagnostic payloads with `diagnostics`); panics unless it
/// succeeded. Returns what it reports having sent.
pub fn run_ld_sdk(events_uri: &str, sdk_key: &str, users: usize, diagnostics: bool) -> Value {
    let mut command = Command::new(ld_python());
    command
        .arg(fixture("ld_sdk_driver.py"))
        .args([events_uri, sdk_key])
        .arg(fixture("ld_flags.json"))
        .arg(users.to_string());
    if diagnostics {
        command.arg("diagnostics");
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "SDK driver failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Path of a file shipped next to the tests.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/support")
        .join(name)
}
