//! `flagstream bench`: an end-to-end load generator.
//!
//! It starts a flagstream (this same binary, `serve` with a fresh data dir, through
//! [`crate::serve`] like the end-to-end tests; its log goes to `flagstream-<n>.log` in the
//! data dir and its warnings are printed at the end) or targets a running one (`--url`), then
//! keeps `--connections` HTTP/1.1 keep-alive connections busy posting LaunchDarkly `/bulk`
//! bodies of `--batch-events` events (the shapes the Python SDK sends: feature, custom,
//! identify) for `--duration`.
//!
//! The started server gets `--destinations N` file destinations `file-0` … `file-<N-1>`, each
//! in its own directory of the data dir, every kind, `rotate=200ms` ([`target`]); a
//! `--serve-arg=--dest=…` replaces them.
//!
//! ## Reported
//!
//! * accepted events/s (events in bodies answered 202) and ack latency p50/p99 (request sent
//!   → 202 received, so it includes the WAL's group-commit fdatasync with `--wal-sync always`);
//! * delivered events per destination and in total (the server's
//!   `flagstream_dest_delivered_events_total`), whether each destination delivered at least
//!   everything accepted, and the time from the first request until all of them did;
//! * **pace** per destination: events it delivered during the second half of the load per
//!   event accepted in that half (counts read at the half-way point and when the load stops).
//!   Delivery that keeps pace with ingest reads about 1.0 whatever its latency (a steady lag
//!   cancels out); below 1.0 the backlog grew by that share of what was accepted. The
//!   delivered/s figure above is from the first request until *caught up*, so it also counts
//!   the last linger window after the load and cannot reach the accepted rate even when
//!   delivery keeps pace;
//! * CPU (see below), the server's `VmHWM`, and its `VmRSS` / `RssAnon` / `RssFile` sampled
//!   every 100 ms ([`crate::procstat`]): peaks, end of run, and peaks during the drain;
//! * during the load, the server's storage writes (MiB/s and bytes per accepted event) and
//!   how this machine's cores were spent (busy / iowait / idle, [`crate::storage`]): a run
//!   with cores waiting on I/O was bound by the disk, not by CPU;
//! * with `--recovery`, the restart after SIGKILL (see below).
//!
//! ## CPU per million events
//!
//! Ingest and delivery run on the same tokio worker threads (one runtime, threads all named
//! `flagstream`; only the WAL's fdatasync thread is separate), so per-thread accounting cannot
//! split them. The split is measured in time instead: with `--pause-delivery` every
//! destination is paused (`POST /v1/destinations/{name}/pause`) before the load, so the
//! server's CPU during the load (`utime + stime` of `/proc/<pid>/stat`) is ingest alone
//! ("ingest CPU s per million accepted events"); then they are resumed and the CPU until every
//! destination caught up is delivery alone ("delivery CPU s per million delivered events",
//! delivered summed over destinations). Without `--pause-delivery` only the sum is
//! meaningful: server CPU from the first request until caught up, per million accepted. The
//! generator's own CPU during the load (this process) is reported too: on a small machine it
//! competes with the server for the same cores, so the numbers are a floor for the server.
//!
//! ## Backlog drain and recovery
//!
//! `--pause-delivery` also makes the drain a measured phase: events/s from the resume until
//! caught up, and the memory peaks of that phase (the "a destination paused behind a backlog
//! resumes and drains it" target). `--recovery` kills the started server with SIGKILL after
//! the load (with `--pause-delivery`, the whole backlog is still in the WAL), restarts it on
//! the same data dir and reports the WAL's size, the time from spawn until `/readyz` answered
//! 200, and the server's own WAL-open and payload-id recovery times from its log. Pauses do not
//! survive a restart, so with `--recovery` the drain starts at the restart: its time and CPU
//! include the recovery.

mod report;
mod target;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

pub use report::{BenchReport, CpuReport, DestinationReport, DrainReport, StorageReport};
pub use target::{file_destinations, RecoveryReport};

use crate::client::{self, Endpoint};
use crate::procstat::{self, MemorySampler};
use crate::serve::StartError;
use crate::storage;
use report::per_million;
use target::Target;

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
    /// File destinations of the started server.
    pub destinations: usize,
    /// Pause every destination during the load, resume after it.
    pub pause_delivery: bool,
    /// SIGKILL and restart the started server after the load; time its recovery.
    pub recovery: bool,
    /// PEM file of the CA that signed the server's TLS certificates.
    pub ca: Option<PathBuf>,
    /// The name the server's certificates must carry.
    pub tls_server_name: String,
    /// The `--admin` address of a `--url` target speaks TLS.
    pub admin_tls: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("starting flagstream: {0}")]
    Start(#[from] Box<StartError>),
    #[error("flagstream did not become ready: {0}")]
    NotReady(String),
    #[error("bad --url `{0}`: expected http://host:port or https://host:port")]
    Url(String),
    #[error("--pause-delivery needs the server's admin address (--admin with --url)")]
    NoAdmin,
    #[error("--recovery needs a server started by the bench (not --url)")]
    NoRestart,
    #[error("admin API: {0}")]
    Admin(String),
    #[error("{0} speaks TLS: pass the CA that signed its certificate with --ca")]
    NoCa(SocketAddr),
    #[error("admin API: {0}")]
    Client(#[from] client::ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
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
    target: Endpoint,
    host: String,
    bodies: Arc<Vec<Bytes>>,
    events_per_body: u64,
    index: usize,
    stop: Arc<AtomicBool>,
    accepted_so_far: Arc<AtomicU64>,
) -> ConnectionStats {
    let mut stats = ConnectionStats::default();
    let mut sequence = 0usize;
    'reconnect: while !stop.load(Ordering::Relaxed) {
        let Ok(mut sender) = client::open(&target).await else {
            stats.failed += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
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
                accepted_so_far.fetch_add(events_per_body, Ordering::Relaxed);
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

/// Delivered by `name` in the second half of the load per event accepted in it (see the
/// module doc); `None` when nothing was accepted in that half.
fn pace(
    name: &str,
    (half_accepted, half_delivered): &(u64, BTreeMap<String, u64>),
    accepted: u64,
    at_load_end: &BTreeMap<String, u64>,
) -> Option<f64> {
    let accepted = accepted.checked_sub(*half_accepted).filter(|&n| n > 0)?;
    let delivered_then = half_delivered.get(name).copied().unwrap_or(0);
    let delivered = at_load_end.get(name)?.saturating_sub(delivered_then);
    Some(delivered as f64 / accepted as f64)
}

fn percentile_ms(sorted_us: &[u32], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 - 1.0) * quantile).round() as usize;
    f64::from(sorted_us[rank.min(sorted_us.len() - 1)]) / 1000.0
}

/// Keep the connections busy for the duration; their summed stats, latencies sorted.
async fn generate(
    options: &BenchOptions,
    target: &Endpoint,
    accepted_so_far: &Arc<AtomicU64>,
) -> ConnectionStats {
    let bodies = Arc::new(
        (0..64)
            .map(|seed| bulk_body(seed, options.batch_events))
            .collect::<Vec<_>>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(options.connections);
    for index in 0..options.connections.max(1) {
        tasks.push(tokio::spawn(drive_connection(
            target.clone(),
            target.addr.to_string(),
            bodies.clone(),
            options.batch_events as u64,
            index,
            stop.clone(),
            accepted_so_far.clone(),
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
    totals.latencies_us.sort_unstable();
    totals
}

/// Delivered per destination since `baseline`.
async fn delivered_since(
    target: &Target,
    baseline: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut counts = target.delivered().await;
    for (name, count) in counts.iter_mut() {
        *count = count.saturating_sub(baseline.get(name).copied().unwrap_or(0));
    }
    counts
}

/// Poll until every destination delivered `accepted` events (or the timeout); the last
/// counts and, when caught up, the instant it was seen.
async fn wait_caught_up(
    target: &Target,
    baseline: &BTreeMap<String, u64>,
    accepted: u64,
    timeout: Duration,
) -> (BTreeMap<String, u64>, Option<Instant>) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = delivered_since(target, baseline).await;
        if !counts.is_empty() && counts.values().all(|&count| count >= accepted) {
            return (counts, Some(Instant::now()));
        }
        if target.admin.is_none() || Instant::now() > deadline {
            return (counts, None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn elapsed_cpu(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// Run the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    let mut target = Target::connect(&options).await?;
    let result = measure(&options, &mut target).await;
    target.stop().await;
    result
}

/// The load phase, the optional restart, the drain; the report.
async fn measure(options: &BenchOptions, target: &mut Target) -> Result<BenchReport, BenchError> {
    let paused = if options.pause_delivery {
        let names = target.destination_names().await?;
        target.control("pause", &names).await?;
        names
    } else {
        Vec::new()
    };
    let baseline = target.delivered().await;
    let sampler = target.memory_source().map(MemorySampler::start);
    let load = load_phase(options, target, &baseline).await;
    if let Some(sampler) = &sampler {
        sampler.begin_phase();
    }
    let drained = drain_phase(options, target, &sampler, &baseline, &paused, &load).await?;
    let memory = match sampler {
        Some(sampler) => Some(sampler.finish().await),
        None => None,
    };
    // Read after the sampler's last reading, so the high-water mark covers every sample.
    let server_peak_rss_mib = target.peak_rss_mib();
    let known = target.admin.is_some() && !drained.delivered.is_empty();
    Ok(report(
        options,
        load,
        drained,
        known,
        server_peak_rss_mib,
        memory,
    ))
}

/// What the load phase measured.
struct Load {
    totals: ConnectionStats,
    /// Accepted, and delivered per destination since the baseline, half-way through.
    half_way: (u64, BTreeMap<String, u64>),
    started: Instant,
    seconds: f64,
    server_cpu: Option<f64>,
    generator_cpu: Option<f64>,
    /// Bytes the server sent to storage during the load (started servers only).
    server_write_bytes: Option<u64>,
    /// How this machine's cores spent the load (started servers only: otherwise the server
    /// runs elsewhere and this machine's split says nothing of it).
    machine: Option<storage::MachineShare>,
}

async fn load_phase(
    options: &BenchOptions,
    target: &Target,
    baseline: &BTreeMap<String, u64>,
) -> Load {
    let own_pid = std::process::id();
    let (server_cpu, own_cpu) = (target.cpu_seconds(), procstat::cpu_seconds(own_pid));
    let server_written = target.write_bytes();
    let machine = target.pid().and_then(|_| storage::machine_ticks());
    let started = Instant::now();
    let accepted_so_far = Arc::new(AtomicU64::new(0));
    let half_way = async {
        tokio::time::sleep(options.duration / 2).await;
        let accepted = accepted_so_far.load(Ordering::Relaxed);
        (accepted, delivered_since(target, baseline).await)
    };
    let (totals, half_way) = tokio::join!(
        generate(options, &target.ingest, &accepted_so_far),
        half_way
    );
    Load {
        totals,
        half_way,
        started,
        seconds: started.elapsed().as_secs_f64(),
        server_cpu: elapsed_cpu(server_cpu, target.cpu_seconds()),
        generator_cpu: elapsed_cpu(own_cpu, procstat::cpu_seconds(own_pid)),
        server_write_bytes: target
            .write_bytes()
            .and_then(|after| after.checked_sub(server_written?)),
        machine: machine.and_then(|before| storage::machine_ticks()?.since(&before)),
    }
}

/// What the drain (after the load, or after the restart) measured.
struct Drained {
    /// Per destination since the baseline.
    delivered: BTreeMap<String, u64>,
    caught_up: Option<Instant>,
    started: Instant,
    /// Delivered per destination since the baseline when the load stopped (the drain started).
    at_load_end: BTreeMap<String, u64>,
    /// Delivered (all destinations) when the drain started.
    before: u64,
    server_cpu: Option<f64>,
    recovery: Option<RecoveryReport>,
}

async fn drain_phase(
    options: &BenchOptions,
    target: &mut Target,
    sampler: &Option<MemorySampler>,
    baseline: &BTreeMap<String, u64>,
    paused: &[String],
    load: &Load,
) -> Result<Drained, BenchError> {
    let at_load_end = delivered_since(target, baseline).await;
    let before = at_load_end.values().sum();
    let mut server_cpu = target.cpu_seconds();
    let mut started = Instant::now();
    // Pauses do not survive the restart: the drain starts with the new process, whose CPU
    // from its start (recovery included) is the drain's.
    let recovery = if options.recovery {
        let recovery = target.restart().await?;
        if let (Some(sampler), Some(source)) = (sampler, target.memory_source()) {
            sampler.set_source(source);
        }
        server_cpu = Some(0.0);
        Some(recovery)
    } else {
        if options.pause_delivery {
            target.control("resume", paused).await?;
        }
        started = Instant::now();
        None
    };
    let accepted = load.totals.accepted_events;
    let (delivered, caught_up) =
        wait_caught_up(target, baseline, accepted, options.drain_timeout).await;
    Ok(Drained {
        delivered,
        caught_up,
        started,
        at_load_end,
        before,
        server_cpu: elapsed_cpu(server_cpu, target.cpu_seconds()),
        recovery,
    })
}

fn cpu_report(load: &Load, drained: &Drained, drain: Option<&DrainReport>) -> CpuReport {
    let accepted = load.totals.accepted_events;
    let server = match (load.server_cpu, drained.server_cpu) {
        (Some(load), Some(drain)) => Some(load + drain),
        _ => None,
    };
    CpuReport {
        server_load_seconds: load.server_cpu,
        server_drain_seconds: drained.server_cpu,
        generator_seconds: load.generator_cpu.unwrap_or(0.0),
        server_per_million_events: per_million(server, accepted),
        // Only a paused load is ingest alone, and only its drain delivery alone.
        ingest_per_million_events: drain.and_then(|_| per_million(load.server_cpu, accepted)),
        delivery_per_million_events: drain
            .and_then(|drain| per_million(drained.server_cpu, drain.delivered_events)),
        generator_per_million_events: per_million(load.generator_cpu, accepted),
    }
}

fn storage_report(load: &Load) -> StorageReport {
    let written = load.server_write_bytes;
    StorageReport {
        server_write_mib_per_second: written
            .map(|bytes| bytes as f64 / load.seconds / (1024.0 * 1024.0)),
        server_write_bytes_per_accepted_event: written
            .filter(|_| load.totals.accepted_events > 0)
            .map(|bytes| bytes as f64 / load.totals.accepted_events as f64),
        machine_cpu: load.machine,
    }
}

fn report(
    options: &BenchOptions,
    load: Load,
    drained: Drained,
    known: bool,
    server_peak_rss_mib: Option<f64>,
    memory: Option<procstat::MemoryReport>,
) -> BenchReport {
    let accepted = load.totals.accepted_events;
    let total_delivered: u64 = drained.delivered.values().sum();
    let drain = options.pause_delivery.then(|| {
        let seconds = (drained.caught_up.unwrap_or_else(Instant::now) - drained.started)
            .as_secs_f64()
            .max(1e-9);
        let events = total_delivered.saturating_sub(drained.before);
        DrainReport {
            delivered_events: events,
            seconds,
            events_per_second: events as f64 / seconds,
            caught_up: drained.caught_up.is_some(),
        }
    });
    let cpu = cpu_report(&load, &drained, drain.as_ref());
    let storage = storage_report(&load);
    let caught_up_seconds = drained
        .caught_up
        .map(|at| (at - load.started).as_secs_f64());
    let delivered_seconds =
        caught_up_seconds.unwrap_or_else(|| load.started.elapsed().as_secs_f64());
    let totals = &load.totals;
    BenchReport {
        wal_sync: options.wal_sync.clone(),
        connections: options.connections,
        batch_events: options.batch_events,
        paused_delivery: options.pause_delivery,
        duration_seconds: load.seconds,
        requests: totals.requests,
        failed_requests: totals.failed,
        accepted_events: accepted,
        accepted_events_per_second: accepted as f64 / load.seconds,
        accepted_mib_per_second: totals.accepted_bytes as f64 / load.seconds / (1024.0 * 1024.0),
        ack_latency_p50_ms: percentile_ms(&totals.latencies_us, 0.50),
        ack_latency_p99_ms: percentile_ms(&totals.latencies_us, 0.99),
        ack_latency_max_ms: percentile_ms(&totals.latencies_us, 1.0),
        delivered_events: known.then_some(total_delivered),
        delivered_events_per_second: known.then(|| total_delivered as f64 / delivered_seconds),
        delivery_caught_up_seconds: caught_up_seconds,
        destinations: drained
            .delivered
            .into_iter()
            .map(|(name, count)| DestinationReport {
                pace: (!options.pause_delivery)
                    .then(|| pace(&name, &load.half_way, accepted, &drained.at_load_end))
                    .flatten(),
                name,
                delivered_events: count,
                delivered_all_accepted: count >= accepted,
            })
            .collect(),
        drain,
        cpu,
        storage,
        server_peak_rss_mib,
        memory,
        recovery: drained.recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_compares_the_second_half_of_the_load() {
        let half_way = (
            1_000,
            BTreeMap::from([("a".to_owned(), 900), ("b".to_owned(), 500)]),
        );
        let at_end = BTreeMap::from([("a".to_owned(), 1_900), ("b".to_owned(), 1_100)]);
        // 1,000 accepted in the second half: `a` delivered 1,000 of them, `b` only 600.
        assert_eq!(pace("a", &half_way, 2_000, &at_end), Some(1.0));
        assert_eq!(pace("b", &half_way, 2_000, &at_end), Some(0.6));
        assert_eq!(pace("c", &half_way, 2_000, &at_end), None, "no count read");
        assert_eq!(
            pace("a", &half_way, 1_000, &at_end),
            None,
            "nothing accepted"
        );
    }

    #[test]
    fn percentiles_pick_ranks() {
        let sorted: Vec<u32> = (1..=100).map(|n| n * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 51.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
