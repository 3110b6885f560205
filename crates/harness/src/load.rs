//! `flagstream bench`: an end-to-end load generator.
//!
//! It starts a flagstream (this same binary, `serve` with a fresh data dir and the embedded
//! file destination, through [`crate::serve`] like the end-to-end tests; its log goes to
//! `flagstream-<n>.log` in the data dir and its warnings are printed at the end) or targets a
//! running one (`--url`), then keeps `--connections` HTTP/1.1 keep-alive connections busy
//! posting LaunchDarkly `/bulk` bodies of `--batch-events` events (the shapes the Python SDK
//! sends: feature, custom, identify; no `index`/`summary`, which the default export filter
//! withholds) for `--duration`.
//!
//! Reported: accepted events/s (events in bodies answered 202), ack latency p50/p99 (request
//! sent → 202 received, so it includes the WAL's group-commit fdatasync with
//! `--wal-sync always`), delivered events/s to the file destination (read from the server's
//! `flagstream_dest_delivered_events_total`; measured from the first request until delivery
//! caught up with everything accepted), and the server's peak RSS (`VmHWM`).
//!
//! The generator runs on the same machine as the server, so on a small machine the numbers
//! are a floor for the server alone: both compete for the same cores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::client;
use crate::serve::{ServeOptions, Server, StartError};

/// The server's counter of events delivered to destinations (`flagstream::metrics`).
pub const DELIVERED_EVENTS_METRIC: &str = "flagstream_dest_delivered_events_total";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Target an existing server (`http://host:port`) instead of starting one.
    pub url: Option<String>,
    /// Admin address of the target, for the delivered-events count (started servers: known).
    pub admin: Option<SocketAddr>,
    pub connections: usize,
    pub duration: Duration,
    pub batch_events: usize,
    /// `--wal-sync` value for the started server.
    pub wal_sync: String,
    pub data_dir: Option<PathBuf>,
    pub drain_timeout: Duration,
    /// Extra flags for the started server.
    pub serve_args: Vec<String>,
    /// The flagstream binary to start (normally the running executable).
    pub binary: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("starting flagstream: {0}")]
    Start(#[from] Box<StartError>),
    #[error("flagstream did not become ready: {0}")]
    NotReady(String),
    #[error("bad --url `{0}`: expected http://host:port")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The measured numbers.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub wal_sync: String,
    pub connections: usize,
    pub batch_events: usize,
    pub duration_seconds: f64,
    pub requests: u64,
    pub failed_requests: u64,
    pub accepted_events: u64,
    pub accepted_events_per_second: f64,
    pub accepted_mib_per_second: f64,
    pub ack_latency_p50_ms: f64,
    pub ack_latency_p99_ms: f64,
    pub ack_latency_max_ms: f64,
    /// `None` when the server's admin port is unknown (`--url` without a started server).
    pub delivered_events: Option<u64>,
    pub delivered_events_per_second: Option<f64>,
    /// Seconds from the first request until every accepted event was delivered.
    pub delivery_caught_up_seconds: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
}

impl BenchReport {
    /// A Markdown table (for `docs/performance.md`).
    pub fn to_markdown(&self) -> String {
        let opt = |value: Option<f64>, digits: usize| {
            value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        let rows = [
            ("`--wal-sync`", self.wal_sync.clone()),
            ("connections", self.connections.to_string()),
            ("events per `/bulk` body", self.batch_events.to_string()),
            ("load duration", format!("{:.1} s", self.duration_seconds)),
            (
                "requests (failed)",
                format!("{} ({})", self.requests, self.failed_requests),
            ),
            (
                "accepted events/s",
                format!("{:.0}", self.accepted_events_per_second),
            ),
            (
                "accepted body MiB/s",
                format!("{:.1}", self.accepted_mib_per_second),
            ),
            (
                "ack latency p50 / p99 / max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    self.ack_latency_p50_ms, self.ack_latency_p99_ms, self.ack_latency_max_ms
                ),
            ),
            (
                "delivered events/s (file destination)",
                opt(self.delivered_events_per_second, 0),
            ),
            (
                "delivery caught up after",
                opt(self.delivery_caught_up_seconds, 1) + " s",
            ),
            ("server peak RSS", opt(self.server_peak_rss_mib, 1) + " MiB"),
        ];
        let mut out = String::from("| measure | value |\n|---|---|\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        out
    }
}

/// The server `run` starts when no `--url` is given, with its data dir removed afterwards
/// when it was a fresh temporary one.
struct StartedServer {
    server: Server,
    remove_data_dir: bool,
}

impl StartedServer {
    async fn start(options: &BenchOptions) -> Result<StartedServer, BenchError> {
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
        let server = ServeOptions::new(&options.binary, data_dir)
            .args(["--wal-sync", &options.wal_sync])
            .args(options.serve_args.iter().cloned())
            .start()
            .await
            .map_err(Box::new)?;
        Ok(StartedServer {
            server,
            remove_data_dir,
        })
    }

    /// SIGTERM, wait for the orderly stop, print what went wrong in the server's log.
    async fn stop(mut self) {
        self.server.terminate(Duration::from_secs(30)).await;
        for line in self.server.log_lines() {
            if line["level"] == "ERROR" || line["level"] == "WARN" {
                eprintln!("server: {line}");
            }
        }
        if self.remove_data_dir {
            let _ = std::fs::remove_dir_all(self.server.data_dir());
        }
    }
}

/// `count` events in the shapes the LaunchDarkly Python SDK sends (see
/// `/work/shared/spec/samples/ld-python-sdk-bulk.json`), varied by `seed`. Only kinds the
/// default export filter sends (no `index`/`summary`), so delivered can catch up with accepted.
pub fn bulk_body(seed: usize, count: usize) -> Bytes {
    let mut out = String::with_capacity(count * 220);
    out.push('[');
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        let user = seed * count + i;
        let event = match i % 4 {
            0 => format!(
                r#"{{"kind":"identify","creationDate":1795267382896,"context":{{"key":"user-{user}","kind":"user","name":"U{user}"}}}}"#
            ),
            1 => format!(
                r#"{{"kind":"feature","creationDate":1795267382896,"key":"new-checkout","value":true,"default":false,"version":12,"variation":1,"context":{{"key":"user-{user}","kind":"user","name":"U{user}"}}}}"#
            ),
            2 => format!(
                r#"{{"kind":"custom","creationDate":1795267382896,"key":"purchase","context":{{"key":"user-{user}","kind":"user","name":"U{user}"}},"data":{{"sku":"x"}},"metricValue":{i}.5}}"#
            ),
            _ => format!(
                r#"{{"kind":"feature","creationDate":1795267382897,"key":"banner-color","value":"green","default":"red","version":3,"variation":2,"reason":{{"kind":"FALLTHROUGH","inExperiment":true}},"context":{{"kind":"multi","org":{{"key":"org-{seed}"}},"user":{{"key":"user-{user}","name":"U{user}"}}}}}}"#
            ),
        };
        out.push_str(&event);
    }
    out.push(']');
    Bytes::from(out)
}

#[derive(Default)]
struct ConnectionStats {
    requests: u64,
    failed: u64,
    accepted_events: u64,
    accepted_bytes: u64,
    latencies_us: Vec<u32>,
}

async fn drive_connection(
    target: SocketAddr,
    host: String,
    bodies: Arc<Vec<Bytes>>,
    events_per_body: u64,
    index: usize,
    stop: Arc<AtomicBool>,
) -> ConnectionStats {
    let mut stats = ConnectionStats::default();
    let mut sequence = 0usize;
    'reconnect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(target).await else {
            stats.failed += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            stats.failed += 1;
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let body = bodies[(index + sequence) % bodies.len()].clone();
            let length = body.len();
            let request = match http::Request::post("/bulk")
                .header(http::header::HOST, host.as_str())
                .header(http::header::AUTHORIZATION, "bench-sdk-key")
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("x-launchdarkly-event-schema", "4")
                .header(
                    "x-launchdarkly-payload-id",
                    format!("bench-{index}-{sequence}"),
                )
                .header(http::header::USER_AGENT, "flagstream-bench")
                .body(Full::new(body))
            {
                Ok(request) => request,
                Err(_) => break 'reconnect,
            };
            sequence += 1;
            let started = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                Err(_) => {
                    stats.failed += 1;
                    continue 'reconnect;
                }
            };
            let status = response.status();
            // Read the (empty) body so the connection can be reused.
            let _ = response.into_body().collect().await;
            let elapsed = started.elapsed();
            stats.requests += 1;
            if status == http::StatusCode::ACCEPTED {
                stats.accepted_events += events_per_body;
                stats.accepted_bytes += length as u64;
                stats
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
            } else {
                stats.failed += 1;
                if status == http::StatusCode::SERVICE_UNAVAILABLE {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    stats
}

/// The server's delivered-events counter, summed over destinations.
async fn delivered_events(admin: SocketAddr) -> Option<u64> {
    let text = client::get(admin, "/metrics").await.ok()?.text();
    let total: f64 = text
        .lines()
        .filter(|line| line.starts_with(DELIVERED_EVENTS_METRIC))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Some(total as u64)
}

fn percentile_ms(sorted_us: &[u32], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 - 1.0) * quantile).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}

/// Run the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    let server = match options.url {
        Some(_) => None,
        None => Some(StartedServer::start(&options).await?),
    };
    let (target, admin) = match (&server, &options.url) {
        (Some(started), _) => (started.server.ingest(), Some(started.server.admin())),
        (None, Some(url)) => {
            let authority = url
                .strip_prefix("http://")
                .map(|rest| rest.trim_end_matches('/'))
                .ok_or_else(|| BenchError::Url(url.clone()))?;
            let target = tokio::net::lookup_host(authority)
                .await?
                .next()
                .ok_or_else(|| BenchError::Url(url.clone()))?;
            (target, options.admin)
        }
        (None, None) => unreachable!("a server is started when no --url is given"),
    };
    if let Some(admin) = admin {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client::get(admin, "/readyz")
            .await
            .is_ok_and(|response| response.status == 200)
        {
            if Instant::now() > deadline {
                return Err(BenchError::NotReady(format!("{admin}/readyz")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let baseline = match admin {
        Some(admin) => delivered_events(admin).await.unwrap_or(0),
        None => 0,
    };

    let bodies = Arc::new(
        (0..64)
            .map(|seed| bulk_body(seed, options.batch_events))
            .collect::<Vec<_>>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.connections);
    for index in 0..options.connections.max(1) {
        tasks.push(tokio::spawn(drive_connection(
            target,
            target.to_string(),
            bodies.clone(),
            options.batch_events as u64,
            index,
            stop.clone(),
        )));
    }
    tokio::time::sleep(options.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut totals = ConnectionStats::default();
    for task in tasks {
        if let Ok(stats) = task.await {
            totals.requests += stats.requests;
            totals.failed += stats.failed;
            totals.accepted_events += stats.accepted_events;
            totals.accepted_bytes += stats.accepted_bytes;
            totals.latencies_us.extend(stats.latencies_us);
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();

    let mut delivered = None;
    let mut caught_up = None;
    if let Some(admin) = admin {
        let deadline = Instant::now() + options.drain_timeout;
        loop {
            let now = delivered_events(admin)
                .await
                .unwrap_or(0)
                .saturating_sub(baseline);
            delivered = Some(now);
            if now >= totals.accepted_events {
                caught_up = Some(started.elapsed().as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let server_peak_rss_mib = server
        .as_ref()
        .and_then(|started| started.server.peak_rss_mib());
    if let Some(started) = server {
        started.stop().await;
    }

    totals.latencies_us.sort_unstable();
    let delivered_per_second = match (delivered, caught_up) {
        (Some(count), Some(seconds)) => Some(count as f64 / seconds),
        (Some(count), None) => Some(count as f64 / started.elapsed().as_secs_f64()),
        _ => None,
    };
    Ok(BenchReport {
        wal_sync: options.wal_sync,
        connections: options.connections,
        batch_events: options.batch_events,
        duration_seconds: load_seconds,
        requests: totals.requests,
        failed_requests: totals.failed,
        accepted_events: totals.accepted_events,
        accepted_events_per_second: totals.accepted_events as f64 / load_seconds,
        accepted_mib_per_second: totals.accepted_bytes as f64 / load_seconds / (1024.0 * 1024.0),
        ack_latency_p50_ms: percentile_ms(&totals.latencies_us, 0.50),
        ack_latency_p99_ms: percentile_ms(&totals.latencies_us, 0.99),
        ack_latency_max_ms: percentile_ms(&totals.latencies_us, 1.0),
        delivered_events: delivered,
        delivered_events_per_second: delivered_per_second,
        delivery_caught_up_seconds: caught_up,
        server_peak_rss_mib,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let sorted: Vec<u32> = (1..=100).map(|n| n * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 51.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
