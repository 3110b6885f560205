//! Crash safety of the whole product: `kill -9` flagstream repeatedly while clients post, then
//! prove that every event answered with 202 reaches the file destination (at least once), and
//! report how many arrived twice.
//!
//! Bounded: a fixed number of crash iterations, each a fraction of a second of load.

use crate::support::serve as support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use support::*;

const ITERATIONS: usize = 6;
const CLIENTS: usize = 8;
pub(crate) const EVENTS_PER_BODY: u64 = 100;

async fn start(data: &std::path::Path, export: &std::path::Path) -> Flagstream {
    Flagstream::builder(data.join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!("file://{}?rotate=50ms&name=archive", export.display()),
        ])
        .start()
        .await
}

/// `clients` connections posting numbered bodies until stopped, recording each body number
/// answered 202 in `acked`.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(
        client: &reqwest::Client,
        url: String,
        next_body: &Arc<AtomicU64>,
        acked: &Arc<Mutex<Vec<u64>>>,
    ) -> Load {
        Load::with_clients(CLIENTS, client, url, next_body, acked)
    }

    pub(crate) fn with_clients(
        clients: usize,
        client: &reqwest::Client,
        url: String,
        next_body: &Arc<AtomicU64>,
        acked: &Arc<Mutex<Vec<u64>>>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..clients)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                let (next_body, acked) = (next_body.clone(), acked.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let body_number = next_body.fetch_add(1, Ordering::Relaxed);
                        let body = numbered_bulk(body_number * EVENTS_PER_BODY, EVENTS_PER_BODY);
                        let response = client
                            .post(&url)
                            .header("authorization", SDK_KEY)
                            .body(body)
                            .send()
                            .await;
                        match response {
                            Ok(response) if response.status().as_u16() == 202 => {
                                acked.lock().unwrap().push(body_number);
                            }
                            // Refused, or the server died under us: never acknowledged.
                            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                })
            })
            .collect();
        Load { stop, workers }
    }

    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_never_loses_an_acknowledged_event() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let next_body = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    for iteration in 0..ITERATIONS {
        let mut server = start(dir.path(), &export).await;
        let load = Load::start(&client, server.url("/bulk"), &next_body, &acked);
        let load_for = Duration::from_millis(rand::rng().random_range(300..1200));
        tokio::time::sleep(load_for).await;
        server.kill9();
        load.stop().await;
        eprintln!(
            "iteration {iteration}: killed after {load_for:?}, {} bodies acknowledged so far",
            acked.lock().unwrap().len()
        );
    }

    // Recover and let delivery finish.
    let server = start(dir.path(), &export).await;
    server.wait_delivered(Duration::from_secs(120)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > ITERATIONS,
        "the load generator got acknowledgements"
    );
    let expected_events = acked.len() as u64 * EVENTS_PER_BODY;
    let events = wait_for_export(&export, expected_events as usize, Duration::from_secs(120)).await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for marker in markers(&events) {
        *seen.entry(marker).or_default() += 1;
    }
    let mut missing = Vec::new();
    for body in &acked {
        for marker in body * EVENTS_PER_BODY..(body + 1) * EVENTS_PER_BODY {
            if !seen.contains_key(&marker) {
                missing.push(marker);
            }
        }
    }
    let sent_bound = next_body.load(Ordering::Relaxed) * EVENTS_PER_BODY;
    assert!(
        seen.keys().all(|marker| *marker < sent_bound),
        "an event nobody sent was exported"
    );
    let duplicates: usize = seen.values().map(|count| count - 1).sum();
    eprintln!(
        "kill -9 x{ITERATIONS}: {} bodies ({} events) acknowledged, {} distinct events exported \
         ({} from unacknowledged bodies), {duplicates} duplicate deliveries, {} missing, {:?}",
        acked.len(),
        expected_events,
        seen.len(),
        seen.len() as u64 - expected_events.min(seen.len() as u64),
        missing.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events were lost, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let mut server = start(dir.path(), &export).await;
    let next_body = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let load = Load::start(&client, server.url("/bulk"), &next_body, &acked);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SIGTERM while requests are in flight: they finish (202) or are refused, never half-done.
    let status = server.terminate().await;
    load.stop().await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.log_text()
    );

    let server = start(dir.path(), &export).await;
    server.wait_delivered(Duration::from_secs(120)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let events = wait_for_export(
        &export,
        acked.len() * EVENTS_PER_BODY as usize,
        Duration::from_secs(120),
    )
    .await;
    let seen: std::collections::HashSet<u64> = markers(&events).into_iter().collect();
    let missing = acked
        .iter()
        .flat_map(|body| body * EVENTS_PER_BODY..(body + 1) * EVENTS_PER_BODY)
        .filter(|marker| !seen.contains(marker))
        .count();
    assert_eq!(
        missing, 0,
        "acknowledged events lost across a graceful restart"
    );
}

/// An orderly stop exports what was accepted before it (issue 14): with `rotate=1h` the open
/// batch would wait an hour for its linger deadline, and before the fix a SIGTERM left it for
/// the next start. Every acknowledged event must be in the export when the process has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exports_batches_that_only_wait_for_their_linger_time() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let mut server = Flagstream::builder(dir.path().join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!("file://{}?rotate=1h&name=archive", export.display()),
        ])
        .start()
        .await;
    let client = reqwest::Client::new();
    for body_number in 0..5 {
        let response = client
            .post(server.url("/bulk"))
            .header("authorization", SDK_KEY)
            .body(numbered_bulk(body_number * 10, 10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let status = server.terminate().await;
    assert!(status.success(), "flagstream exited with {status}");
    let mut exported = markers(&read_export(&export));
    exported.sort_unstable();
    assert_eq!(exported, (0..50).collect::<Vec<u64>>());
}
