//! Object formats: how fast the `file` destination writes each format, and how small.
//!
//! Input: `warehouse` rows of the real SDK payload (the Python SDK capture's expected rows,
//! `tests/golden/expected/ld-python-sdk-bulk.warehouse.expanded.ndjson`: evaluation, metric
//! and summary rows), replicated into a batch of [`ROWS`] rows with unique event ids and
//! 1,000 distinct context keys — an object of the size a busy destination writes.
//!
//! - `objects/<format>/encode`: `ObjectWriter::encode` alone (rows → object bytes), on this
//!   thread: the CPU work per object.
//! - `objects/<format>/file_send`: `Destination::send` of the `file` destination (encode on a
//!   blocking thread, temp file, fdatasync, rename, directory fsync), one batch at a time on a
//!   current-thread runtime: one core's worth.
//!
//! Criterion reports events/s (`Throughput::Elements`); bytes/s of mapped JSON in = events/s ×
//! the bytes per event printed first, with every format's output size and compression ratio,
//! on the batch and on the SDK payload alone (15 rows: Parquet's footer dominates there).
//!
//! Targets (one core, release): Parquet ≥ 500,000 events/s, NDJSON.gz ≥ 500,000 events/s.
//! Run: `cargo bench --bench objects` (or with a filter: `-- objects/parquet`).

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
const CSV_COLUMNS: &str = "table,event_id,flag_key,metric_key,context_kind,context_key,\
                           variation_index,variation_value,metric_value,count,timestamp";

/// `(name, URL query)` of every format.
const FORMATS: [(&str, &str); 5] = [
    ("ndjson", "format=ndjson"),
    ("ndjson.gz", "format=ndjson.gz"),
    ("csv", "format=csv"),
    ("parquet", "format=parquet"),
    ("parquet-zstd", "format=parquet&parquet_compression=zstd"),
];

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
                event_id,
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
            _ => unreachable!("{key}"),
        }
    }
    options
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
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
    for (name, format) in FORMATS {
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

fn bench(c: &mut Criterion) {
    let batch = batch("bench-1-50000", ROWS);
    print_sizes(&batch, &self::batch("sdk-1-15", golden_rows().len()));
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("objects");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    for (name, format) in FORMATS {
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
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
