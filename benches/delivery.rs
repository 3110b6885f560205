//! Delivery throughput: events per second from the WAL to the file destination.
//!
//! * `pipeline/launchdarkly` — decode → filter → map → batch for one destination, no I/O:
//!   the per-event CPU cost of the hot path on one core.
//! * `engine/file` — the whole engine: a WAL backlog of LaunchDarkly `/bulk` records (100
//!   events each) delivered by one worker to the real file destination (8 MiB files, each
//!   fdatasynced and renamed). The target is ≥ 500,000 events/s on the 2-core CI machine.
//! * `engine/file-page-cache` — the same with `direct_io=false`: files written through the
//!   page cache, as before direct I/O (`src/dest/file/write.rs`).
//!
//! Run with `cargo bench --bench delivery`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use flagstream::delivery::batcher::Batcher;
use flagstream::delivery::dead_letter::DeadLetterBuffer;
use flagstream::delivery::pipeline::Pipeline;
use flagstream::delivery::shared_records::{Fingerprint, SharedRecords};
use flagstream::delivery::{
    ConfiguredDestination, Delivery, DeliveryDefaults, DeliverySettings, EngineOptions,
    DEFAULT_SHARED_RECORDS_MAX_BYTES,
};
use flagstream::dest::file::FileDestination;
use flagstream::dest::{BatchLimits, Input};
use flagstream::event::stored::{encode_header, StoredMeta};
use flagstream::event::{ExportOptions, Filter, FilterConfig, InboundFormat, Schema};
use flagstream::wal::{AppendRequest, Position, Record, RecoveryMode, SyncMode, Wal, WalOptions};

const EVENTS_PER_RECORD: usize = 100;
const RECORDS: usize = 2_000;

/// A realistic server-SDK payload: index, feature and custom events, ~100 per body.
fn body(record: usize) -> String {
    let events: Vec<String> = (0..EVENTS_PER_RECORD)
        .map(|i| match i % 4 {
            0 => format!(
                r#"{{"kind":"index","creationDate":1717000000000,"context":{{"kind":"user","key":"user-{record}-{i}","name":"Sandy"}}}}"#
            ),
            3 => format!(
                r#"{{"kind":"custom","creationDate":1717000000500,"key":"purchase","contextKeys":{{"user":"user-{record}-{i}"}},"data":{{"sku":"sku-{i}"}},"metricValue":42.5}}"#
            ),
            _ => format!(
                r#"{{"kind":"feature","creationDate":1717000000001,"key":"flag-{}","version":12,"context":{{"kind":"user","key":"user-{record}-{i}"}},"variation":1,"value":true,"default":false,"reason":{{"kind":"RULE_MATCH","ruleIndex":0,"ruleId":"r-abc"}}}}"#,
                i % 17
            ),
        })
        .collect();
    format!("[{}]", events.join(","))
}

fn header() -> Vec<u8> {
    let mut header = Vec::new();
    encode_header(
        &StoredMeta {
            format: Some(InboundFormat::LdBulk),
            instance_id: None,
            schema_version: Some(4),
            environment: "production",
            payload_id: "",
            tags: "",
            user_agent: "bench",
            request: Default::default(),
        },
        &mut header,
    );
    header
}

fn bench_records() -> Vec<Record> {
    let header = header();
    (0..100)
        .map(|i| {
            let mut payload = header.clone();
            payload.extend_from_slice(body(i).as_bytes());
            Record {
                seq: i as u64,
                tag: InboundFormat::LdBulk.code(),
                event_count: EVENTS_PER_RECORD as u32,
                received_at_ms: 1_717_000_000_000,
                payload: Bytes::from(payload),
            }
        })
        .collect()
}

/// A pipeline for the bench payload. It mixes in `index` events, which the default filter
/// withholds (as LaunchDarkly does); the bench measures the whole pipeline, so it opts into
/// every kind.
fn bench_pipeline() -> Pipeline {
    let (filter_config, _) =
        FilterConfig::from_query(&[("kinds", "all")]).expect("kinds=all parses");
    let filter = Filter::new(&filter_config).expect("filter");
    Pipeline::new(Schema::LaunchDarkly, ExportOptions::default(), filter)
}

fn bench_fingerprint() -> Fingerprint {
    let (filter, _) = FilterConfig::from_query(&[("kinds", "all")]).expect("kinds=all parses");
    Fingerprint {
        schema: Schema::LaunchDarkly,
        input: Input::MappedEvents,
        export: ExportOptions::default(),
        filter,
    }
}

fn bench_batcher() -> Batcher {
    let limits = BatchLimits {
        max_items: 1_000_000,
        max_bytes: 8 << 20,
        max_item_bytes: 8 << 20,
        per_item_overhead: 1,
        linger: Duration::from_secs(5),
    };
    Batcher::new(
        "bench",
        Schema::LaunchDarkly,
        limits,
        Position::default(),
        None,
    )
}

/// Every record through each pipeline in turn (destinations reading in step); items batched.
fn deliver(pipelines: &mut [Pipeline], records: &[Record], dead: &mut DeadLetterBuffer) -> usize {
    let mut batchers: Vec<Batcher> = pipelines.iter().map(|_| bench_batcher()).collect();
    let mut items = 0;
    for record in records {
        for (pipeline, batcher) in pipelines.iter_mut().zip(&mut batchers) {
            pipeline.process(record, batcher, dead);
            while let Some(cut) = batcher.pop_ready() {
                items += cut.batch.items.len();
            }
        }
    }
    for batcher in &mut batchers {
        batcher.cut_lingering();
        while let Some(cut) = batcher.pop_ready() {
            items += cut.batch.items.len();
        }
    }
    items
}

/// `launchdarkly`: one destination. `launchdarkly-4-alone` / `-4-shared`: four destinations
/// configured alike, each decoding on its own / sharing each record's decoding
/// (`--shared-records-max-bytes`); throughput counts delivered events (4 per event).
fn pipeline_bench(c: &mut Criterion) {
    let records = bench_records();
    let events = records.len() * EVENTS_PER_RECORD;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("launchdarkly", |b| {
        let mut pipelines = [bench_pipeline()];
        let mut dead = DeadLetterBuffer::new("bench");
        b.iter(|| assert_eq!(deliver(&mut pipelines, &records, &mut dead), events));
    });
    group.throughput(Throughput::Elements(4 * events as u64));
    group.bench_function("launchdarkly-4-alone", |b| {
        let mut pipelines: Vec<Pipeline> = (0..4).map(|_| bench_pipeline()).collect();
        let mut dead = DeadLetterBuffer::new("bench");
        b.iter(|| assert_eq!(deliver(&mut pipelines, &records, &mut dead), 4 * events));
    });
    group.bench_function("launchdarkly-4-shared", |b| {
        let shared = SharedRecords::new(DEFAULT_SHARED_RECORDS_MAX_BYTES);
        let mut pipelines: Vec<Pipeline> = (0..4)
            .map(|_| bench_pipeline().with_shared(shared.join(bench_fingerprint())))
            .collect();
        let mut dead = DeadLetterBuffer::new("bench");
        let mut next_seq = 0;
        b.iter(|| {
            // Further along the log each time, as readers move: a member records only for
            // members whose last position is behind it.
            let records: Vec<Record> = records
                .iter()
                .map(|record| {
                    next_seq += 1;
                    Record {
                        seq: next_seq,
                        ..record.clone()
                    }
                })
                .collect();
            assert_eq!(deliver(&mut pipelines, &records, &mut dead), 4 * events);
        });
    });
    group.finish();
}

fn fill_wal(runtime: &tokio::runtime::Runtime, dir: &Path) -> Wal {
    let wal = Wal::open(WalOptions {
        dir: dir.join("wal"),
        segment_bytes: 128 << 20,
        max_bytes: 4 << 30,
        min_free_bytes: 0,
        sync: SyncMode::Never,
        recovery: RecoveryMode::TolerateTail,
        retention: Default::default(),
        // The bench measures delivery's CPU over a log in the page cache, not the disk.
        page_cache_bytes: None,
    })
    .expect("open WAL");
    let header = header();
    runtime.block_on(async {
        for record in 0..RECORDS {
            let body = body(record);
            let parts: [&[u8]; 2] = [&header, body.as_bytes()];
            wal.append(AppendRequest {
                tag: InboundFormat::LdBulk.code(),
                event_count: EVENTS_PER_RECORD as u32,
                received_at_ms: 1_717_000_000_000,
                parts: &parts,
            })
            .await
            .expect("append");
        }
    });
    wal
}

fn engine_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = fill_wal(&runtime, dir.path());
    let end = wal.next_seq();
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((RECORDS * EVENTS_PER_RECORD) as u64));
    let mut run = 0u64;
    for (id, direct_io) in [("file", true), ("file-page-cache", false)] {
        group.bench_function(id, |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    run += 1;
                    // A fresh destination name = a fresh cursor at the start of the backlog.
                    let name = format!("file{run}");
                    let export = dir.path().join(&name);
                    let destination = FileDestination::new(
                        &name,
                        export.clone(),
                        Schema::LaunchDarkly,
                        Duration::from_millis(20),
                        8 << 20,
                    )
                    .with_direct_io(direct_io);
                    let configured = ConfiguredDestination {
                        settings: DeliverySettings::named(&name, &DeliveryDefaults::default()),
                        destination: Arc::new(destination),
                    };
                    let options = EngineOptions::new(dir.path());
                    let started = Instant::now();
                    runtime.block_on(async {
                        let delivery =
                            Delivery::start(&wal, vec![configured], &options).expect("start");
                        while delivery.status(&name).expect("status").cursor.seq < end {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        total += started.elapsed();
                        delivery.shutdown().await;
                    });
                    wal.release_cursor(&name).expect("release cursor");
                    let _ = std::fs::remove_dir_all(&export);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline_bench, engine_bench);
criterion_main!(benches);
