//! The flagstream a benchmark drives: one started here (with `--destinations N` file
//! destinations in a fresh or given data dir) or a running one (`--url`, `--admin`).
//!
//! Through its admin API: readiness, destination names, pause/resume, and the delivered
//! counter per destination. A started server can also be killed (SIGKILL: a crash, so the
//! WAL is recovered from what is on disk) and restarted on the same data dir to time
//! recovery; the delivered counters restart at zero in the new process, so the counts read
//! before the kill are carried over and added.
//!
//! TLS: a started server's listeners speak TLS when its log says so (`--serve-arg=--tls-cert=…`
//! and friends); a `--url` target's ingest when the URL is `https://`, its admin listener with
//! `--admin-tls`. Either needs `--ca`, the PEM file of the CA that signed the certificates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{BenchError, BenchOptions, DELIVERED_EVENTS_METRIC};
use crate::client::{self, Endpoint, Tls};
use crate::procstat::{self, MemorySource};
use crate::serve::{ServeOptions, Server};
use crate::storage;

/// How long a (re)started server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(600);

/// A server started by the bench.
struct Started {
    server: Server,
    options: ServeOptions,
    remove_data_dir: bool,
}

pub(super) struct Target {
    pub ingest: Endpoint,
    pub admin: Option<Endpoint>,
    started: Option<Started>,
    /// Delivered counts of processes killed by [`Target::restart`].
    carried: BTreeMap<String, u64>,
}

/// `--recovery`: the restart after a crash.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// Size of the WAL directory at the kill.
    pub wal_bytes: u64,
    /// From spawning the process until `/readyz` answered 200 (polled every 20 ms).
    pub ready_seconds: f64,
    /// The server's own `recovery_ms` of "write-ahead log open" (scan and checks).
    pub wal_open_ms: Option<u64>,
    /// The server's `recovery_ms` of rebuilding the payload-id dedupe cache.
    pub payload_id_recovery_ms: Option<u64>,
}

/// `--dest` URLs of `count` file destinations under `data_dir`, every kind, 200 ms linger
/// (the shape of issue 15's runs: each batch written soon, so "caught up" is not a timer).
pub fn file_destinations(data_dir: &Path, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            let dir = data_dir.join(format!("export-{index}"));
            format!(
                "file://{}?name=file-{index}&kinds=all&rotate=200ms",
                dir.display()
            )
        })
        .collect()
}

fn gives_destinations(serve_args: &[String]) -> bool {
    serve_args
        .iter()
        .any(|arg| arg == "--dest" || arg.starts_with("--dest="))
}

impl Target {
    /// Start a server (no `--url`) or resolve the given one; wait until it is ready.
    pub async fn connect(options: &BenchOptions) -> Result<Target, BenchError> {
        let tls = match &options.ca {
            Some(ca) => Some(Tls::from_ca_file(ca, &options.tls_server_name)?),
            None => None,
        };
        let with_tls = |addr, wanted: bool| -> Result<Endpoint, BenchError> {
            let tls = match (wanted, &tls) {
                (false, _) => None,
                (true, Some(tls)) => Some(tls.clone()),
                (true, None) => return Err(BenchError::NoCa(addr)),
            };
            Ok(Endpoint { addr, tls })
        };
        let (ingest, admin, started) = match &options.url {
            None => {
                let started = start(options).await?;
                let server = &started.server;
                let ingest = with_tls(server.ingest(), server.ingest_tls())?;
                let admin = with_tls(server.admin(), server.admin_tls())?;
                (ingest, Some(admin), Some(started))
            }
            Some(url) => {
                let (addr, https) = resolve(url).await?;
                let admin = options.admin.map(|addr| with_tls(addr, options.admin_tls));
                (with_tls(addr, https)?, admin.transpose()?, None)
            }
        };
        let target = Target {
            ingest,
            admin,
            started,
            carried: BTreeMap::new(),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    pub fn pid(&self) -> Option<u32> {
        self.started.as_ref()?.server.pid()
    }

    /// The server's CPU seconds so far (started servers only).
    pub fn cpu_seconds(&self) -> Option<f64> {
        procstat::cpu_seconds(self.pid()?)
    }

    /// Bytes the server has sent to storage so far (started servers only).
    pub fn write_bytes(&self) -> Option<u64> {
        storage::write_bytes(self.pid()?)
    }

    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.started.as_ref()?.server.peak_rss_mib()
    }

    pub fn memory_source(&self) -> Option<MemorySource> {
        match (self.pid(), &self.admin) {
            (Some(pid), _) => Some(MemorySource::Process(pid)),
            (None, Some(admin)) => Some(MemorySource::Metrics(admin.clone())),
            (None, None) => None,
        }
    }

    async fn wait_ready(&self) -> Result<(), BenchError> {
        let Some(admin) = &self.admin else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .admin_call(http::Method::GET, "/readyz")
            .await
            .is_ok_and(|response| response.status == 200)
        {
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(format!("{}/readyz", admin.addr)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// One request to the admin listener.
    async fn admin_call(
        &self,
        method: http::Method,
        path: &str,
    ) -> Result<client::Response, BenchError> {
        let admin = self.admin.as_ref().ok_or(BenchError::NoAdmin)?;
        Ok(client::request_to(admin, method, path, &[], Default::default()).await?)
    }

    /// Names of the server's destinations (`GET /v1/destinations`).
    pub async fn destination_names(&self) -> Result<Vec<String>, BenchError> {
        let response = self
            .admin_call(http::Method::GET, "/v1/destinations")
            .await?;
        let body: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|err| BenchError::Admin(format!("GET /v1/destinations: {err}")))?;
        let names = body["destinations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|status| status["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(names)
    }

    /// `POST /v1/destinations/{name}/{action}` (`pause` or `resume`) for each name.
    pub async fn control(&self, action: &str, names: &[String]) -> Result<(), BenchError> {
        for name in names {
            let path = format!("/v1/destinations/{name}/{action}");
            let response = self.admin_call(http::Method::POST, &path).await?;
            if response.status != 200 {
                return Err(BenchError::Admin(format!(
                    "POST {path}: {} {}",
                    response.status,
                    response.text()
                )));
            }
        }
        Ok(())
    }

    /// Events delivered per destination since the server (first) started; empty when the
    /// admin address is unknown or `/metrics` did not answer.
    pub async fn delivered(&self) -> BTreeMap<String, u64> {
        let mut counts = self.carried.clone();
        let Ok(response) = self.admin_call(http::Method::GET, "/metrics").await else {
            return counts;
        };
        for (name, count) in parse_delivered(&response.text()) {
            *counts.entry(name).or_default() += count;
        }
        counts
    }

    /// SIGKILL the started server, start it again on the same data dir and time recovery.
    pub async fn restart(&mut self) -> Result<RecoveryReport, BenchError> {
        let delivered = self.delivered().await;
        let started = self.started.as_mut().ok_or(BenchError::NoRestart)?;
        let wal_bytes = dir_bytes(&started.server.data_dir().join("wal"));
        started.server.kill9();
        self.carried = delivered;
        let spawned = Instant::now();
        started.server = started.options.clone().start().await.map_err(Box::new)?;
        let ready_seconds = spawned.elapsed().as_secs_f64();
        let logged_ms = |message: &str| {
            let lines = started.server.log_lines();
            let line = lines.iter().find(|line| line["message"] == message)?;
            line["recovery_ms"].as_u64()
        };
        let report = RecoveryReport {
            wal_bytes,
            ready_seconds,
            wal_open_ms: logged_ms("write-ahead log open"),
            payload_id_recovery_ms: logged_ms("payload ids of recent records remembered again"),
        };
        self.ingest.addr = started.server.ingest();
        if let Some(admin) = &mut self.admin {
            admin.addr = started.server.admin();
        }
        Ok(report)
    }

    /// Stop a started server (SIGTERM, orderly), print its warnings, remove a temporary
    /// data dir.
    pub async fn stop(self) {
        let Some(mut started) = self.started else {
            return;
        };
        started.server.terminate(Duration::from_secs(30)).await;
        for line in started.server.log_lines() {
            if line["level"] == "ERROR" || line["level"] == "WARN" {
                eprintln!("server: {line}");
            }
        }
        if started.remove_data_dir {
            let _ = std::fs::remove_dir_all(started.server.data_dir());
        }
    }
}

async fn start(options: &BenchOptions) -> Result<Started, BenchError> {
    let (data_dir, remove_data_dir) = match &options.data_dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("flagstream-bench-{}-{stamp}", std::process::id()));
            (dir, true)
        }
    };
    let mut serve = ServeOptions::new(&options.binary, &data_dir)
        .args(["--wal-sync", &options.wal_sync])
        .ready_timeout(READY_TIMEOUT);
    // `--serve-arg=--dest=…` replaces the bench's file destinations.
    if !gives_destinations(&options.serve_args) {
        for url in file_destinations(&data_dir, options.destinations.max(1)) {
            serve = serve.args(["--dest", &url]);
        }
    }
    let serve = serve.args(options.serve_args.iter().cloned());
    let server = serve.clone().start().await.map_err(Box::new)?;
    Ok(Started {
        server,
        options: serve,
        remove_data_dir,
    })
}

/// The address of an `http://` or `https://` URL, and whether it is `https`.
async fn resolve(url: &str) -> Result<(SocketAddr, bool), BenchError> {
    let (authority, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Err(BenchError::Url(url.to_string())),
    };
    let addr = tokio::net::lookup_host(authority.trim_end_matches('/'))
        .await?
        .next()
        .ok_or_else(|| BenchError::Url(url.to_string()))?;
    Ok((addr, https))
}

/// `destination → count` from the delivered counter's lines in a Prometheus exposition.
fn parse_delivered(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(DELIVERED_EVENTS_METRIC) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = labels
            .split_once("destination=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(name, _)| name);
        *counts.entry(name.to_string()).or_default() += value as u64;
    }
    counts
}

/// Bytes of the files directly or indirectly under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_counts_are_read_per_destination() {
        let text = format!(
            "# TYPE {DELIVERED_EVENTS_METRIC} counter\n\
             {DELIVERED_EVENTS_METRIC}{{destination=\"file-0\"}} 300\n\
             {DELIVERED_EVENTS_METRIC}{{destination=\"file-1\"}} 1.5e3\n\
             flagstream_other{{destination=\"file-0\"}} 9\n"
        );
        let counts = parse_delivered(&text);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["file-0"], 300);
        assert_eq!(counts["file-1"], 1500);
    }

    #[tokio::test]
    async fn urls_name_their_scheme() {
        let (addr, https) = resolve("https://127.0.0.1:8443/").await.unwrap();
        assert_eq!((addr.to_string().as_str(), https), ("127.0.0.1:8443", true));
        let (_, https) = resolve("http://127.0.0.1:8030").await.unwrap();
        assert!(!https);
        assert!(matches!(
            resolve("ftp://127.0.0.1:1").await,
            Err(BenchError::Url(_))
        ));
    }

    #[test]
    fn destinations_get_their_own_directories_and_names() {
        let urls = file_destinations(Path::new("/d"), 2);
        assert_eq!(
            urls,
            [
                "file:///d/export-0?name=file-0&kinds=all&rotate=200ms",
                "file:///d/export-1?name=file-1&kinds=all&rotate=200ms"
            ]
        );
        assert!(gives_destinations(&["--dest=log:".to_string()]));
        assert!(!gives_destinations(&["--wal-max-bytes=1GiB".to_string()]));
    }
}
