//! Event-model throughput: decode + filter + map per output schema, plus ingest validation.
//!
//! The workload is the real LaunchDarkly Python SDK payload
//! (`tests/golden/inputs/ld-python-sdk-bulk.json`: index, feature, custom, identify and summary
//! events, ~166 bytes each when compact) repeated with distinct context keys into one
//! 1,000-event record, the size of a busy SDK flush. Throughput is reported in events/s;
//! the target is ≥ 1,000,000 events/s per core for the `launchdarkly` envelope.
//!
//! Two measurements: the usual wall-clock group `event`, and `event_cpu`, which measures the
//! benchmark thread's own CPU time (`/proc/thread-self/schedstat`), i.e. events per second of
//! one core even when the shared machine is busy and the thread is often descheduled.
//!
//! Run: `cargo bench --bench event` (numbers are recorded in docs/performance.md).

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use flagstream::event::{
    decode, map_event, validate, DecodeScratch, ExportOptions, Filter, FilterConfig, InboundFormat,
    RecordContext, Schema, VerbatimText,
};

const EVENTS_PER_RECORD: usize = 1000;

/// A compact JSON array of `EVENTS_PER_RECORD` sample events with distinct users.
fn workload() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/inputs/ld-python-sdk-bulk.json"
    );
    let capture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("sample payload")).unwrap();
    let events: Vec<String> = capture["body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let mut body = String::from("[");
    for i in 0..EVENTS_PER_RECORD {
        if i > 0 {
            body.push(',');
        }
        let event = &events[i % events.len()];
        let user = format!("user-{}", i / events.len());
        body.push_str(&event.replace("user-0", &user).replace("user-1", &user));
    }
    body.push(']');
    body.into_bytes()
}

fn ctx() -> RecordContext<'static> {
    RecordContext {
        format: InboundFormat::LdBulk,
        environment: "production",
        payload_id: Some("e4e80df9-6738-4586-acea-69200e415792"),
        schema_version: Some(4),
        seq: 1,
        received_at_ms: 1_795_267_383_000,
        instance_id: None,
    }
}

/// decode → filter → map every event of the record; returns bytes written (kept alive).
fn pipeline(
    body: &[u8],
    schema: Schema,
    filter: &Filter,
    options: &ExportOptions,
    scratch: &mut DecodeScratch,
    row_buf: &mut Vec<u8>,
) -> usize {
    let ctx = ctx();
    let record = decode(&ctx, body, scratch).expect("decodes");
    let mut bytes = 0;
    for event in &record.events {
        if filter.matches(&ctx, event) {
            map_event(schema, options, &ctx, event, row_buf, &mut |row| {
                bytes += row.len()
            })
            .expect("maps");
        }
    }
    bytes
}

/// CPU time of the calling thread, in nanoseconds (Linux `schedstat`: time spent on a CPU).
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux) is needed for the event_cpu group")
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, like wall time.
        WALL.formatter()
    }
}

/// The headline number: decode + filter + map to the LaunchDarkly envelope, per CPU-second.
fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let body = workload();
    let options = ExportOptions {
        project: "p-123".into(),
        ..ExportOptions::default()
    };
    let (all, _) = FilterConfig::from_query(&[("kinds", "all")]).unwrap();
    let filter = Filter::new(&all).unwrap();
    let mut group = c.benchmark_group("event_cpu");
    group.throughput(Throughput::Elements(EVENTS_PER_RECORD as u64));
    // schedstat advances at scheduler ticks (~1–4 ms): equal, ~100 ms samples keep that
    // granularity below a few percent, where criterion's default linear sampling would start
    // with single-iteration samples shorter than a tick.
    group.sampling_mode(SamplingMode::Flat);
    let mut row_buf = Vec::new();
    for schema in [Schema::LaunchDarkly, Schema::Segment, Schema::Warehouse] {
        let mut scratch = scratch_for(schema);
        group.bench_function(format!("decode_filter_map/{}", schema.name()), |b| {
            b.iter(|| {
                black_box(pipeline(
                    black_box(&body),
                    schema,
                    &filter,
                    &options,
                    &mut scratch,
                    &mut row_buf,
                ))
            })
        });
    }
    // The exact-number paths (docs/performance.md § Event model): every event carries a
    // fraction (number texts kept beside the tape), or a number beyond 64 bits (parsed a
    // second time through placeholders).
    for (name, field, number) in [
        ("fractions", "score", "0.125"),
        ("beyond_64_bits", "big", "18446744073709551616"),
    ] {
        let body = with_number(&body, field, number);
        let mut scratch = scratch_for(Schema::LaunchDarkly);
        group.bench_function(format!("decode_filter_map/launchdarkly/{name}"), |b| {
            b.iter(|| {
                black_box(pipeline(
                    black_box(&body),
                    Schema::LaunchDarkly,
                    &filter,
                    &options,
                    &mut scratch,
                    &mut row_buf,
                ))
            })
        });
    }
    group.finish();
}

/// The scratch the delivery pipeline uses for `schema` (pass-through keeps verbatim events).
fn scratch_for(schema: Schema) -> DecodeScratch {
    match schema {
        Schema::LaunchDarkly => DecodeScratch::with_verbatim(VerbatimText::KeepWithoutNumberTexts),
        _ => DecodeScratch::default(),
    }
}

/// `body` with `"field": number` (number as raw text) added to every event object.
fn with_number(body: &[u8], field: &str, number: &str) -> Vec<u8> {
    const MARK: &str = "number-placeholder";
    let mut events: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    for event in &mut events {
        event[field] = MARK.into();
    }
    serde_json::to_string(&events)
        .unwrap()
        .replace(&format!("\"{MARK}\""), number)
        .into_bytes()
}

fn bench(c: &mut Criterion) {
    let body = workload();
    let options = ExportOptions {
        project: "p-123".into(),
        ..ExportOptions::default()
    };
    // All kinds, so every event is mapped (the default filter would skip index/summary).
    let (all, _) = FilterConfig::from_query(&[("kinds", "all")]).unwrap();
    let filter = Filter::new(&all).unwrap();

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(EVENTS_PER_RECORD as u64));
    let mut row_buf = Vec::new();
    for schema in [Schema::LaunchDarkly, Schema::Segment, Schema::Warehouse] {
        let mut scratch = scratch_for(schema);
        group.bench_function(format!("decode_filter_map/{}", schema.name()), |b| {
            b.iter(|| {
                black_box(pipeline(
                    black_box(&body),
                    schema,
                    &filter,
                    &options,
                    &mut scratch,
                    &mut row_buf,
                ))
            })
        });
    }
    let mut scratch = DecodeScratch::default();
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let ctx = ctx();
            let record = decode(&ctx, black_box(&body), &mut scratch).unwrap();
            black_box(record.events.len())
        })
    });
    group.bench_function("validate", |b| {
        b.iter(|| black_box(validate(InboundFormat::LdBulk, black_box(&body)).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_group! {
    name = cpu_benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench_cpu
}
criterion_main!(benches, cpu_benches);
