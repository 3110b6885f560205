//! Object formats: how fast the `file` destination writes each format, and how small.
//!
//! Input: `warehouse` rows of the real SDK payload (the Python SDK capture's expected rows,
//! `tests/golden/expected/ld-python-sdk-bulk.warehouse.expanded.ndjson`: evaluation, metric
//! and summary rows), replicated into a batch of [`ROWS`] rows with unique event ids and
//! 1,000 distinct context keys — an object of the size a busy destination writes.
//!
//! - `objects/<format>/encode`: `ObjectWriter::encode` alone (rows → object bytes), on this
//!   thread: the CPU work per object.
//! - `objects/<format>/file_send`: `Destination::send` of the `file` destination (encode,
//!   temp file, fdatasync, rename, directory fsync), one batch at a time on a runtime with one
//!   worker thread: one core's worth.
//!
//! Before Criterion's wall-clock figures, a CPU pass prints events per CPU-second (every
//! thread's user + system time, `/proc/self/stat`) of both, per format: on a shared machine
//! wall time includes waiting for a core, CPU time does not. `OBJECTS_FORMATS=parquet,ndjson.gz`
//! limits both passes to those formats; `OBJECTS_PROFILE=<format>` only encodes the batch
//! [`PROFILE_ROUNDS`] times (for `valgrind --tool=callgrind`).
//!
//! Criterion reports events/s (`Throughput::Elements`); bytes/s of mapped JSON in = events/s ×
//! the bytes per event printed first, with every format's output size and compression ratio,
//! on the batch and on the SDK payload alone (15 rows: Parquet's footer dominates there).
//!
//! Targets (one core, release): Parquet ≥ 500,000 events/s, NDJSON.gz ≥ 500,000 events/s.
//! Run: `cargo bench --bench objects` (or with a filter: `-- objects/parquet`).

/// The binary's allocator (`src/main.rs`): the CPU per event measured here is what the
/// product spends only with it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use flagstream::dest::object::ObjectOptions;
use flagstream::dest::options::Parsed;
use flagstream::dest::{registry, Batch, BatchItem, Destination, DestinationSpec, SendOutcome};
use flagstream::event::Schema;

/// Rows per benchmarked batch.
const ROWS: usize = 50_000;
/// Batches encoded by `OBJECTS_PROFILE`.
const PROFILE_ROUNDS: usize = 3;
/// Batches per format of the CPU-time pass.
const CPU_ROUNDS: usize = 10;
const CSV_COLUMNS: &str = "table,event_id,flag_key,metric_key,context_kind,context_key,\
                           variation_index,variation_value,metric_value,count,timestamp";

/// `(name, URL query)` of every format.
const FORMATS: [(&str, &str); 11] = [
    ("ndjson", "format=ndjson"),
    ("ndjson.gz", "format=ndjson.gz"),
    ("ndjson.gz-2", "format=ndjson.gz&gzip_level=2"),
    ("ndjson.gz-4", "format=ndjson.gz&gzip_level=4"),
    ("ndjson.gz-6", "format=ndjson.gz&gzip_level=6"),
    ("ndjson.gz-9", "format=ndjson.gz&gzip_level=9"),
    ("ndjson.zst", "format=ndjson.zst"),
    ("ndjson.zst-3", "format=ndjson.zst&zstd_level=3"),
    ("csv", "format=csv"),
    ("parquet", "format=parquet"),
    ("parquet-zstd", "format=parquet&parquet_compression=zstd"),
];

/// The formats `OBJECTS_FORMATS` names (every format when unset).
fn formats() -> impl Iterator<Item = (&'static str, &'static str)> {
    let wanted = std::env::var("OBJECTS_FORMATS").ok();
    FORMATS.into_iter().filter(move |(name, _)| {
        wanted
            .as_deref()
            .is_none_or(|list| list.split(',').any(|w| w == *name))
    })
}

fn golden_rows() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/expected/ld-python-sdk-bulk.warehouse.expanded.ndjson"
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(str::to_string).collect()
}

/// `rows` rows cycling through the SDK payload's, each with its own event id and one of
/// 1,000 context keys (edited in the text, so columns keep the mapper's order).
fn batch(id: &str, rows: usize) -> Batch {
    let golden = golden_rows();
    let items = (0..rows)
        .map(|i| {
            let text = &golden[i % golden.len()];
            let row: serde_json::Value = serde_json::from_str(text).unwrap();
            let event_id = format!("{:08x}-1bc1-8a18-86ed-{i:012x}", i / golden.len());
            let mut edited = text.replace(row["event_id"].as_str().unwrap(), &event_id);
            if let (Some(key), true) = (row["context_key"].as_str(), i >= golden.len()) {
                let quoted = format!("\"context_key\":\"{key}\"");
                edited = edited.replace(&quoted, &format!("\"context_key\":\"user-{}\"", i % 1000));
            }
            BatchItem {
                event_id: event_id.into(),
                payload: Bytes::from(edited),
                kind: row["kind"].as_str().unwrap_or("summary").into(),
                key: None,
                context_key: None,
                environment: "production".into(),
                received_at_ms: 1_795_939_199_000,
            }
        })
        .collect();
    Batch {
        id: id.into(),
        schema: Schema::Warehouse,
        items,
        lines: None,
    }
}

fn query(format: &str) -> String {
    if format == "format=csv" {
        format!("{format}&csv_columns={CSV_COLUMNS}")
    } else {
        format.to_string()
    }
}

/// The `file` destination writing `format` into `dir`, as `serve` builds it.
fn file_destination(dir: &Path, format: &str) -> Arc<dyn Destination> {
    let url = format!(
        "file://{}?{}&partitions=dt,hour",
        dir.display(),
        query(format)
    );
    let mut spec = DestinationSpec::parse(&url).unwrap();
    let redaction = registry::prepare(&mut spec).unwrap();
    let build = registry::build(
        &mut spec,
        "bench",
        Some(Schema::Warehouse),
        dir,
        &redaction.secret,
    );
    runtime().block_on(build).unwrap()
}

fn object_options(format: &str) -> ObjectOptions {
    let mut options = ObjectOptions::default();
    for (key, value) in query(format).split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "format" => options.format = Some(Parsed(value.parse().unwrap())),
            "parquet_compression" => {
                options.parquet_compression = Some(Parsed(value.parse().unwrap()))
            }
            "csv_columns" => options.csv_columns = Some(value.to_string()),
            "gzip_level" => options.gzip_level = Some(value.parse().unwrap()),
            "zstd_level" => options.zstd_level = Some(value.parse().unwrap()),
            _ => unreachable!("{key}"),
        }
    }
    options
}

/// One worker thread, multi-threaded like `serve`'s (so encoding takes the same path).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Output bytes per format and compression ratio (mapped JSON in / object bytes out).
fn print_sizes(batch: &Batch, sdk: &Batch) {
    let input = |b: &Batch| b.payload_bytes() + b.items.len();
    println!(
        "input: {ROWS} rows, {} bytes of mapped JSON ({:.0} bytes/row); SDK payload: {} rows, {} bytes",
        input(batch),
        input(batch) as f64 / ROWS as f64,
        sdk.items.len(),
        input(sdk)
    );
    for (name, format) in formats() {
        let writer = object_options(format)
            .writer("", &[], Schema::Warehouse)
            .unwrap();
        let size =
            |b: &Batch| -> usize { writer.encode(b).unwrap().iter().map(|o| o.body.len()).sum() };
        let (big, small) = (size(batch), size(sdk));
        println!(
            "{name:>12}: batch {big:>9} bytes (ratio {:5.2}); SDK payload {small:>6} bytes (ratio {:5.2})",
            input(batch) as f64 / big as f64,
            input(sdk) as f64 / small as f64
        );
    }
}

/// CPU seconds (user + system) of every thread this process ran, exited ones included
/// (`/proc/self/stat`, in USER_HZ ticks of 10 ms: the CPU pass runs a second or more).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPU time per event (every thread) of `run` repeated [`CPU_ROUNDS`] times, and
/// the wall time: the honest figure on a shared machine, where wall time includes waiting for
/// a core.
fn cpu_per_event(mut run: impl FnMut()) -> (f64, f64) {
    run(); // warm-up: allocator, page cache, directories
    let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
    for _ in 0..CPU_ROUNDS {
        run();
    }
    let events = (CPU_ROUNDS * ROWS) as f64;
    (
        (cpu_seconds() - cpu) / events,
        wall.elapsed().as_secs_f64() / events,
    )
}

/// Events per CPU-second and per wall second of encode and file send, per format.
fn print_cpu(batch: &Batch, dir: &Path) {
    println!("per core (CPU time of every thread, {CPU_ROUNDS} batches of {ROWS}):");
    for (name, format) in formats() {
        let writer = object_options(format)
            .writer("", &[], Schema::Warehouse)
            .unwrap();
        let (encode_cpu, encode_wall) = cpu_per_event(|| drop(writer.encode(batch).unwrap()));
        let destination = file_destination(&dir.join(format!("cpu-{name}")), format);
        let runtime = runtime();
        let (send_cpu, send_wall) = cpu_per_event(|| {
            let outcome = runtime.block_on(destination.send(batch));
            assert_eq!(outcome, SendOutcome::Delivered);
        });
        println!(
            "{name:>12}: encode {:>9.0} events/CPU-s ({:.2} µs/event, wall {:>9.0}/s); \
             file send {:>9.0} events/CPU-s ({:.2} µs/event, wall {:>9.0}/s)",
            1.0 / encode_cpu,
            encode_cpu * 1e6,
            1.0 / encode_wall,
            1.0 / send_cpu,
            send_cpu * 1e6,
            1.0 / send_wall
        );
    }
}

fn bench(c: &mut Criterion) {
    let batch = batch("bench-1-50000", ROWS);
    print_sizes(&batch, &self::batch("sdk-1-15", golden_rows().len()));
    let dir = tempfile::tempdir().unwrap();
    print_cpu(&batch, dir.path());
    let mut group = c.benchmark_group("objects");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    for (name, format) in formats() {
        let writer = object_options(format)
            .writer("", &[], Schema::Warehouse)
            .unwrap();
        group.bench_function(BenchmarkId::new(name, "encode"), |b| {
            b.iter(|| writer.encode(&batch).unwrap())
        });
        let destination = file_destination(&dir.path().join(name), format);
        let runtime = runtime();
        group.bench_function(BenchmarkId::new(name, "file_send"), |b| {
            b.iter(|| {
                let outcome = runtime.block_on(destination.send(&batch));
                assert_eq!(outcome, SendOutcome::Delivered);
            })
        });
    }
    group.finish();
}

fn main() {
    // `cargo bench` passes `--bench`; run as a test target (`cargo test --all-targets`,
    // nextest's `--list`) this lists and runs nothing: a full batch per iteration is too slow
    // for a test.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--list") || !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    if let Ok(name) = std::env::var("OBJECTS_PROFILE") {
        let (_, format) = FORMATS.into_iter().find(|(n, _)| *n == name).unwrap();
        let writer = object_options(format)
            .writer("", &[], Schema::Warehouse)
            .unwrap();
        let batch = batch("bench-1-50000", ROWS);
        for _ in 0..PROFILE_ROUNDS {
            drop(writer.encode(&batch).unwrap());
        }
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
