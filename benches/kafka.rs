//! Kafka destination: our CPU cost per event and throughput into a tansu broker.
//!
//! - `kafka/encode_1000`: pure CPU of keys and headers for 1,000 events (no I/O).
//! - `kafka_tansu/cpu_send_10000`: CPU time of *this process* (every thread: ours and
//!   librdkafka's, from `/proc/self/task/*/schedstat`) for producing 10,000 events (two
//!   batches of 5,000, the batch limit) and awaiting every delivery report. The broker is
//!   another process, so this is our side only. Throughput per CPU-second = events per core.
//! - `kafka_tansu/wall_send_10000`: wall time for the same, bounded by tansu (memory storage).
//!
//! Run: `cargo bench --bench kafka` (starts and stops its own tansu; needs
//! `scripts/install-test-deps.sh`).

#[path = "../tests/it/support/cloud/mod.rs"]
mod cloud;
#[path = "../tests/it/support/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::kafka::headers;
use flagstream::dest::kinesis::PartitionKeySource;
use flagstream::dest::{registry, Batch, DestinationSpec, SendOutcome};

/// Events per batch: the destination's batch limit.
const BATCH: usize = flagstream::dest::kafka::MAX_EVENTS_PER_BATCH;

fn events(prefix: &str, batches: usize) -> Vec<Batch> {
    (0..batches)
        .map(|part| cloud::batch(&format!("{prefix}-{part}"), BATCH, 100))
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("kafka");
    group.throughput(Throughput::Elements(1_000));
    let batch = cloud::batch("enc", 1_000, 100);
    let keys = PartitionKeySource::ContextKey;
    group.bench_function("encode_1000", |b| {
        b.iter(|| {
            for item in &batch.items {
                std::hint::black_box((keys.unbounded_key_for(item), headers(item, &batch)));
            }
        })
    });
    group.finish();
}

/// CPU time of every thread of this process.
fn process_cpu() -> Duration {
    let nanos: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn monotonic() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

fn send(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = runtime.block_on(kafka::Tansu::start_ungated());
    runtime.block_on(broker.create_topic("bench", 4));
    let url = format!("kafka://{}/bench", broker.bootstrap());
    let destination = runtime.block_on(async {
        registry::build_named(DestinationSpec::parse(&url).unwrap(), "bench")
            .await
            .unwrap()
    });
    let batches = events("send", 2);
    let mut group = c.benchmark_group("kafka_tansu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements((2 * BATCH) as u64));
    let measure = |clock: fn() -> Duration, iterations: u64| {
        let start = clock();
        for _ in 0..iterations {
            runtime.block_on(async {
                for batch in &batches {
                    assert_eq!(destination.send(batch).await, SendOutcome::Delivered);
                }
            });
        }
        clock() - start
    };
    group.bench_function("wall_send_10000", |b| {
        b.iter_custom(|iterations| measure(monotonic, iterations))
    });
    group.bench_function("cpu_send_10000", |b| {
        b.iter_custom(|iterations| measure(process_cpu, iterations))
    });
    group.finish();
}

criterion_group!(benches, encode, send);
criterion_main!(benches);
