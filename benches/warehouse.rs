//! Rows per second into the warehouse destinations, and who spends the CPU: flagstream
//! (this process) or the server (PostgreSQL's postmaster and backends, bqemulator, fakesnow).
//!
//! Not criterion: each case loads a fixed number of fresh rows through `Destination::send`
//! and prints one line — rows/s by wall time, this process's CPU seconds (getrusage via
//! `/proc/self/stat`) and the server's CPU seconds (`/proc/<pid>/stat` of the server and
//! its children) over the same interval:
//!
//! - `postgres`: 10 batches of 5,000 `evaluation_events` rows (binary `COPY` + `INSERT … ON
//!   CONFLICT DO NOTHING`), then the same 10 re-sent (all conflicts);
//! - `bigquery_load`: 4 batches of 5,000 rows as load jobs into bqemulator;
//! - `bigquery_stream`: 4 batches of 500 rows through `insertAll`;
//! - `snowflake`: 2 batches of 100 rows as `MERGE`s into fakesnow.
//!
//! The emulators are Python over DuckDB: their numbers say what the tests can push through
//! them, not what BigQuery or Snowflake take. Run: `cargo bench --bench warehouse`.

#[path = "../tests/it/support/bigquery.rs"]
mod bigquery;
#[path = "../tests/it/support/cloud/mod.rs"]
mod cloud;
#[path = "../tests/it/support/postgres.rs"]
mod postgres;
#[path = "support/rows.rs"]
mod rows;
#[path = "../tests/it/support/snowflake.rs"]
mod snowflake;

use std::sync::Arc;
use std::time::Instant;

use flagstream::dest::{registry, Batch, Destination, DestinationSpec, SendOutcome};

/// The fields of `/proc/<pid>/stat` after the command name (field 3 onward).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds (user + system) of `pid` and, with `children`, of every descendant.
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut pids = vec![pid];
    if children {
        pids.extend(descendants(pid));
    }
    let used = |fields: Vec<String>| -> f64 {
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0)
    };
    pids.into_iter()
        .filter_map(stat_fields)
        .map(used)
        .sum::<f64>()
        / ticks
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?[1].parse().ok()?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn batch(prefix: &str, rows: usize) -> Batch {
    rows::evaluation_batch(prefix, rows)
}

/// Send `batches` and print rows/s, our CPU and the server's.
async fn measure(
    name: &str,
    dest: &Arc<dyn Destination>,
    batches: &[Batch],
    server: &dyn Fn() -> f64,
) {
    let rows: usize = batches.iter().map(|b| b.items.len()).sum();
    let (ours, theirs, start) = (
        cpu_seconds(std::process::id(), false),
        server(),
        Instant::now(),
    );
    for batch in batches {
        assert_eq!(dest.send(batch).await, SendOutcome::Delivered, "{name}");
    }
    let wall = start.elapsed();
    let ours = cpu_seconds(std::process::id(), false) - ours;
    let theirs = server() - theirs;
    println!(
        "{name:<20} {rows:>7} rows  {:>9.0} rows/s  wall {:>7.2}s  flagstream CPU {ours:>6.2}s  server CPU {theirs:>6.2}s",
        rows as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
    );
}

async fn build(url: &str) -> Arc<dyn Destination> {
    let dest = registry::build_named(DestinationSpec::parse(url).unwrap(), "bench")
        .await
        .unwrap();
    dest.check().await.unwrap();
    dest
}

async fn run() {
    let cluster = postgres::Cluster::start();
    cluster.create_database("bench").await;
    let dest = build(&cluster.url("bench", "")).await;
    let postmaster: u32 = std::fs::read_to_string(cluster.data().join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let batches: Vec<Batch> = (0..10).map(|n| batch(&format!("pg{n}"), 5_000)).collect();
    measure("postgres load", &dest, &batches, &|| {
        cpu_seconds(postmaster, true)
    })
    .await;
    measure("postgres resend", &dest, &batches, &|| {
        cpu_seconds(postmaster, true)
    })
    .await;
    drop(cluster);

    let emulator = bigquery::BqEmulator::start();
    emulator.create_dataset("bench").await;
    let pid = emulator.pid().unwrap();
    let load = build(&emulator.url("bench", "")).await;
    let batches: Vec<Batch> = (0..4).map(|n| batch(&format!("bq{n}"), 5_000)).collect();
    measure("bigquery_load", &load, &batches, &|| cpu_seconds(pid, true)).await;
    let stream = build(&emulator.url("bench", "mode=stream")).await;
    let batches: Vec<Batch> = (0..4).map(|n| batch(&format!("bqs{n}"), 500)).collect();
    measure("bigquery_stream", &stream, &batches, &|| {
        cpu_seconds(pid, true)
    })
    .await;
    drop(emulator);

    let server = snowflake::Fakesnow::start();
    server.create_schema("bench", "flags");
    let pid = server.pid();
    let dest = build(&server.url("bench", "flags", "")).await;
    let batches: Vec<Batch> = (0..2).map(|n| batch(&format!("sf{n}"), 100)).collect();
    measure("snowflake", &dest, &batches, &|| cpu_seconds(pid, true)).await;
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter: ignored, every case runs). Without it
    // this binary is being run as a test target (`cargo test --all-targets`, or nextest's
    // `--list`): it is a benchmark that needs the stand-ins, so it lists and runs nothing.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") || !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}
