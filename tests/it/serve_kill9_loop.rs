//! kill -9 in a loop with three destinations — the file destination, Kinesis and S3 (both on
//! moto) — while clients post: no acknowledged event is ever lost by any, and duplicates are
//! counted per destination. The file and S3 destinations re-cut every batch identically after
//! a crash and overwrite its objects (names derive from the batch id), so they must show none:
//! every acknowledged event is in the bucket exactly once, across all objects. Kinesis cannot
//! deduplicate a re-sent record and may. S3 runs with a small `max_bytes`, so byte-cut batches
//! go out concurrently and linger cuts wait for their persisted plan (both paths are crossed).
//!
//! Cycles: `FLAGSTREAM_KILL9_CYCLES` (default 12, about 40 s in CI; docs/reliability.md records
//! a run of 50).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::serve_crash::{Load, EVENTS_PER_BODY};
use crate::support::cloud::kinesis::{client, create_stream, read_all, use_test_credentials};
use crate::support::cloud::{s3, StandIn};
use crate::support::serve::*;

const DEFAULT_CYCLES: usize = 12;
/// Fewer clients than `serve_crash`: moto stores records slowly, and the Kinesis destination
/// runs one batch at a time here (see `start`).
const CLIENTS: usize = 2;
const STREAM: &str = "flag-events";
const BUCKET: &str = "kill9-bucket";

fn cycles() -> usize {
    std::env::var("FLAGSTREAM_KILL9_CYCLES")
        .ok()
        .map(|text| text.parse().expect("FLAGSTREAM_KILL9_CYCLES is a number"))
        .unwrap_or(DEFAULT_CYCLES)
}

/// `concurrency=1` for Kinesis: moto's in-memory shard numbers records as "highest sequence
/// number + 1" without a lock (`moto/kinesis/models.py`, `Shard.put_record`), so concurrent
/// PutRecords calls overwrite each other's records inside the stand-in (seen as acknowledged
/// events missing from the stream with concurrency 4, none with 1).
async fn start(data: &std::path::Path, export: &std::path::Path, moto: &StandIn) -> Flagstream {
    Flagstream::builder(data)
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!("file://{}?rotate=50ms&name=archive", export.display()),
        ])
        .args([
            "--dest",
            &format!(
                "kinesis://{STREAM}?name=stream&region=us-east-1&endpoint={}&linger=50ms&concurrency=1",
                moto.endpoint()
            ),
        ])
        .args([
            "--dest",
            &format!(
                "s3://{BUCKET}/events?name=bucket&region=us-east-1&endpoint={}&rotate=50ms\
                 &max_bytes=64KiB&format=ndjson.gz",
                moto.endpoint()
            ),
        ])
        .start()
        .await
}

/// How often each marker arrived.
fn count(markers: impl IntoIterator<Item = u64>) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for marker in markers {
        *counts.entry(marker).or_insert(0) += 1;
    }
    counts
}

/// Lost acknowledged events and duplicate deliveries of one destination (printed).
fn check(
    name: &str,
    seen: &BTreeMap<u64, usize>,
    acked: &[u64],
    sent_bound: u64,
) -> (usize, usize) {
    let missing = acked
        .iter()
        .flat_map(|body| body * EVENTS_PER_BODY..(body + 1) * EVENTS_PER_BODY)
        .filter(|marker| !seen.contains_key(marker))
        .count();
    let duplicates: usize = seen.values().map(|count| count - 1).sum();
    assert!(
        seen.keys().all(|marker| *marker < sent_bound),
        "{name}: an event nobody sent was delivered"
    );
    eprintln!(
        "{name}: {} distinct events delivered ({} from unacknowledged bodies), {duplicates} duplicate deliveries, {missing} acknowledged events missing",
        seen.len(),
        seen.len().saturating_sub(acked.len() * EVENTS_PER_BODY as usize)
    );
    (missing, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_with_file_kinesis_and_s3_loses_nothing_and_file_and_s3_duplicate_nothing() {
    let started = Instant::now();
    let cycles = cycles();
    let moto = StandIn::moto();
    use_test_credentials();
    let kinesis = client(&moto).await;
    create_stream(&kinesis, STREAM, 2).await;
    let bucket = s3::client(&moto).await;
    s3::create_bucket(&bucket, BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, export) = (dir.path().join("data"), dir.path().join("export"));
    let next_body = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    for cycle in 0..cycles {
        let mut server = start(&data, &export, &moto).await;
        let load = Load::with_clients(CLIENTS, &http, server.url("/bulk"), &next_body, &acked);
        let load_for = Duration::from_millis(rand::rng().random_range(50..300));
        tokio::time::sleep(load_for).await;
        server.kill9();
        load.stop().await;
        if cycle % 10 == 9 {
            eprintln!(
                "cycle {}: {} bodies acknowledged so far",
                cycle + 1,
                acked.lock().unwrap().len()
            );
        }
    }

    let server = start(&data, &export, &moto).await;
    // A bound, not a wait: moto stores a few hundred records a second.
    server.wait_delivered(Duration::from_secs(600)).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > cycles,
        "the load generator got acknowledgements"
    );
    let sent_bound = next_body.load(Ordering::Relaxed) * EVENTS_PER_BODY;
    let file = count(markers(&read_export(&export)));
    let stream = count(
        read_all(&kinesis, STREAM)
            .await
            .values()
            .flatten()
            .filter_map(|data| {
                let event: serde_json::Value = serde_json::from_slice(data).ok()?;
                event["event"]["data"]["n"].as_u64()
            }),
    );
    let objects = s3::read_objects(&bucket, BUCKET, "events/").await;
    let s3_markers = count(objects.iter().flat_map(|object| {
        object.text.lines().filter_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: bad line {line}: {err}", object.key));
            event["event"]["data"]["n"].as_u64()
        })
    }));
    eprintln!(
        "kill -9 x{cycles} with file + Kinesis + S3 ({} objects): {} bodies ({} events) acknowledged, {:?}",
        objects.len(),
        acked.len(),
        acked.len() as u64 * EVENTS_PER_BODY,
        started.elapsed()
    );
    let (file_missing, file_duplicates) = check("file", &file, &acked, sent_bound);
    let (stream_missing, _stream_duplicates) = check("kinesis", &stream, &acked, sent_bound);
    let (s3_missing, s3_duplicates) = check("s3", &s3_markers, &acked, sent_bound);
    if s3_duplicates > 0 {
        eprintln!(
            "s3 objects holding events twice:\n{}",
            duplicate_holders(&objects)
        );
    }
    assert_eq!(
        (file_missing, stream_missing, s3_missing),
        (0, 0, 0),
        "acknowledged events lost"
    );
    assert_eq!(
        (file_duplicates, s3_duplicates),
        (0, 0),
        "the file or S3 destination delivered events twice"
    );
}

/// For the first few events held by more than one object: the objects (key, marker range)
/// that hold them, to show how the batches overlap.
fn duplicate_holders(objects: &[s3::StoredObject]) -> String {
    let mut holders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut ranges = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        let markers: Vec<u64> = markers(
            &object
                .text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect::<Vec<_>>(),
        );
        for marker in &markers {
            holders.entry(*marker).or_default().push(index);
        }
        let (low, high) = (markers.iter().min(), markers.iter().max());
        ranges.push(format!(
            "{} [{low:?}..={high:?}, {} events]",
            object.key,
            markers.len()
        ));
    }
    let mut shown = std::collections::BTreeSet::new();
    for indices in holders.values().filter(|i| i.len() > 1).take(200) {
        shown.extend(indices.iter().copied());
    }
    shown
        .iter()
        .take(12)
        .map(|i| format!("  {}\n", ranges[*i]))
        .collect()
}
