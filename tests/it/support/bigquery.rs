//! The BigQuery stand-in: `bqemulator` 1.4.0 (PyPI; REST API over DuckDB), installed by
//! `scripts/install-test-deps.sh` into `$FLAGSTREAM_TEST_DEPS/bqemulator`, one per test on a
//! free loopback port, killed (with its process group) on drop. It runs `--persistent` in a
//! private directory, so [`BqEmulator::stop`] + [`BqEmulator::restart`] is an outage that
//! keeps the tables. Its `HOME` is the install's own, where the install linked DuckDB's
//! spatial extension (it would otherwise try to download it).
//!
//! What bqemulator 1.4.0 does not do (so tests/it/bigquery.rs checks those against
//! BigQuery's documented answers instead): it ignores `jobReference.jobId` on multipart
//! uploads (every upload gets a fresh `bqemu_…` id, `api/routes/upload.py::_run_load`), so a
//! second job with the same id is never refused with 409; and it keeps no `insertId`s.
#![allow(dead_code)] // benches/warehouse.rs includes this module and uses part of it

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cloud::{connectable, free_port, kill_process_group, test_deps};

/// The project every test uses.
pub const PROJECT: &str = "flagstream-test";

/// A running bqemulator (killed on drop).
pub struct BqEmulator {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
}

impl BqEmulator {
    /// Start on a free port; waits until it answers.
    pub fn start() -> BqEmulator {
        let mut emulator = BqEmulator {
            child: None,
            port: free_port(),
            program: locate(),
            dir: tempfile::tempdir().unwrap(),
        };
        emulator.restart();
        emulator
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `--dest` URL for `dataset`, with `options` appended.
    pub fn url(&self, dataset: &str, options: &str) -> String {
        let mut url = format!(
            "bigquery://{PROJECT}/{dataset}?endpoint={}",
            self.endpoint()
        );
        if !options.is_empty() {
            url.push('&');
            url.push_str(options);
        }
        url
    }

    /// Kill the emulator (its data stays in its directory).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while connectable(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start (again) on the same port, with the data it held.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bqemulator.log"))
            .unwrap();
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new(&self.program)
            .args(["start", "--rest-host", "127.0.0.1"])
            .args(["--rest-port", &self.port.to_string()])
            .args(["--grpc-host", "127.0.0.1", "--grpc-port", "0"])
            .args([
                "--project",
                PROJECT,
                "--persistent",
                "--log-level",
                "warning",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("HOME", test_deps().join("bqemulator/home"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start bqemulator: {err}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !connectable(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("bqemulator exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "bqemulator did not listen within 60s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The emulator's process id (for CPU accounting in benches/warehouse.rs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bqemulator.log")).unwrap_or_default()
    }

    /// POST `body` to `path` (under the project's REST root); panics unless it succeeded.
    async fn post(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/bigquery/v2/projects/{PROJECT}/{path}", self.endpoint());
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// Create `dataset`.
    pub async fn create_dataset(&self, dataset: &str) {
        let body = json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}});
        self.post("datasets", body).await;
    }

    /// Create `table` in `dataset` with `fields` (`[{"name", "type", "mode"}]`).
    pub async fn create_table(&self, dataset: &str, table: &str, fields: Value) {
        let body = json!({
            "tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
        });
        self.post(&format!("datasets/{dataset}/tables"), body).await;
    }

    /// The table resource (`tables.get`).
    pub async fn table(&self, dataset: &str, table: &str) -> Value {
        let url = format!(
            "{}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}/tables/{table}",
            self.endpoint()
        );
        reqwest::Client::new()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Run a GoogleSQL query (`jobs.query`); each row's cells as BigQuery's REST API gives them
    /// (strings, or null).
    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let answer = self
            .post("queries", json!({"query": sql, "useLegacySql": false}))
            .await;
        assert!(answer["error"].is_null(), "{sql}: {answer}");
        answer["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                row["f"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|cell| cell["v"].clone())
                    .collect()
            })
            .collect()
    }
}

impl Drop for BqEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The emulator's program, or fail with the command that installs it.
fn locate() -> PathBuf {
    let path = test_deps().join("bqemulator/bin/bqemulator");
    if path.exists() && test_deps().join("bqemulator/home/.duckdb").exists() {
        return path;
    }
    panic!(
        "bqemulator (the BigQuery stand-in) is not installed at {}. Install it with \
         `scripts/install-test-deps.sh` (its BigQuery section: a venv with bqemulator==1.4.0 \
         duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy, and the spatial extension \
         linked under bqemulator/home/.duckdb)",
        path.display()
    );
}
