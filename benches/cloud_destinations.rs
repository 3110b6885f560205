//! Kinesis and Pub/Sub destinations: our CPU cost per 1,000 events and throughput against
//! the stand-ins (moto, Google's Pub/Sub emulator).
//!
//! - `*/encode_1000`: pure CPU of turning 1,000 events into records/messages (no I/O).
//! - `*/cpu_send_1000`: CPU time of the bench thread (`/proc/thread-self/schedstat`) for
//!   sending 1,000 events to the stand-in with the real client — everything on our side
//!   (encoding, SDK serialization, signing, HTTP/gRPC), not the stand-in's work. The runtime is
//!   single-threaded so all our tasks run on the measured thread.
//! - `*/wall_send_1000`: wall time for the same, i.e. throughput; bounded by the stand-in
//!   (moto is a single-threaded Python server; kinesalite a single Node process; the emulator
//!   an in-memory Java server). Measured first, on a fresh stream: moto slows down as its
//!   in-memory stream grows.
//!
//! - Kafka (`kafka_tansu/*`): a tansu broker, clients connecting directly. librdkafka works
//!   on its own threads, so `cpu_send_1000` there counts every thread of this process
//!   (`/proc/self/task/*/schedstat`); tansu is another process, so it is still our side only.
//!   `FLAGSTREAM_BENCH_KAFKA_OPTIONS=a=b&c=d` appends destination options to the URL (e.g.
//!   `rdkafka.linger.ms=20`, `compression=none`); `FLAGSTREAM_BENCH_KAFKA_QUICK=N` skips the
//!   criterion groups and prints CPU per 1,000 events for N sends, with user/system time per
//!   thread name (our sending thread, librdkafka's broker thread, the polling thread).
//!
//! - Event Hubs (`eventhubs_standin/*`): the AMQP 1.0 stand-in (Qpid Proton, one Python
//!   process), clients connecting directly; Microsoft's client runs on this process's runtime,
//!   so `cpu_send_1000` counts every thread of this process, the stand-in's work not included.
//!
//! - Object stores (`s3_moto_*/*`, `gcs_fake_*/*`): one object of 10,000 events per
//!   iteration (≈ 2 MB as NDJSON) through the object writer to moto's S3 and fake-gcs-server,
//!   per format; each iteration rewrites the same object name (as a re-sent batch would).
//!   `cpu_send` counts every thread of this process (`process_cpu`): the object writer encodes
//!   (gzip, CSV) on tokio's blocking pool; the stand-ins are other processes.
//!
//! Run: `cargo bench --bench cloud_destinations` (starts and stops its own stand-ins).

#[path = "../tests/it/support/cloud/mod.rs"]
mod cloud;
#[path = "../tests/it/support/eventhubs.rs"]
mod eventhubs;
#[path = "../tests/it/support/gcs.rs"]
mod gcs;
#[path = "../tests/it/support/kafka.rs"]
mod kafka;

/// The binary's allocator (`src/main.rs`): jemalloc for Rust and, unprefixed, for the C
/// libraries too. The CPU per event measured here is what the product spends only with it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::kinesis::{plan_records, split_requests, PartitionKeySource};
use flagstream::dest::pubsub::message_for;
use flagstream::dest::{registry, Batch, Destination, DestinationSpec, SendOutcome};

/// 1,000 realistic events (≈ 190 bytes each, 100 contexts) as `parts` batches.
fn events(prefix: &str, parts: usize) -> Vec<Batch> {
    events_n(prefix, parts, 1_000)
}

/// `total` realistic events as `parts` batches.
fn events_n(prefix: &str, parts: usize, total: usize) -> Vec<Batch> {
    (0..parts)
        .map(|part| cloud::batch(&format!("{prefix}-{part}"), total / parts, 100))
        .collect()
}

/// CPU time of every thread of this process (for clients with threads of their own).
fn process_cpu() -> Duration {
    let nanos: u64 = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let nanos: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(nanos)
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1_000));
    let batches = events("enc", 2);
    let keys = PartitionKeySource::ContextKey;
    group.bench_function("kinesis/encode_1000", |b| {
        b.iter(|| {
            for batch in &batches {
                let (records, _) = plan_records(batch, &keys, false);
                std::hint::black_box(split_requests(&records));
            }
        })
    });
    let batch = &events("enc", 1)[0];
    group.bench_function("kafka/encode_1000", |b| {
        b.iter(|| {
            for item in &batch.items {
                std::hint::black_box((
                    keys.unbounded_key_for(item),
                    flagstream::dest::kafka::headers(item, batch),
                ));
            }
        })
    });
    group.bench_function("pubsub/encode_1000", |b| {
        b.iter(|| {
            for item in &batch.items {
                std::hint::black_box(message_for(batch, item, false));
            }
        })
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Measure sending the events of `batches` per iteration (1,000 unless the function name says
/// otherwise), as wall time and as CPU time.
/// `fresh` builds a destination on a new, empty stream/topic; each measurement round gets
/// one (set up outside the timed part), because moto slows down as a stream grows.
fn bench_send(
    c: &mut Criterion,
    name: &str,
    cpu: fn() -> Duration,
    runtime: &tokio::runtime::Runtime,
    fresh: impl Fn(usize) -> Arc<dyn Destination>,
    batches: &[Batch],
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let total: usize = batches.iter().map(|batch| batch.items.len()).sum();
    group.throughput(Throughput::Elements(total as u64));
    let round = std::cell::Cell::new(0);
    let measure = |clock: fn() -> Duration, iterations: u64| {
        round.set(round.get() + 1);
        let destination = fresh(round.get());
        let start = clock();
        for _ in 0..iterations {
            runtime.block_on(async {
                for batch in batches {
                    assert_eq!(destination.send(batch).await, SendOutcome::Delivered);
                }
            });
        }
        clock() - start
    };
    group.bench_function(format!("wall_send_{total}"), |b| {
        b.iter_custom(|iterations| measure(monotonic, iterations))
    });
    group.bench_function(format!("cpu_send_{total}"), |b| {
        b.iter_custom(|iterations| measure(cpu, iterations))
    });
    group.finish();
}

/// Wall-clock time since the first call, as a `Duration` (so both clocks share a type).
fn monotonic() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

fn kinesis(c: &mut Criterion) {
    kinesis_on(c, "kinesis_moto", cloud::StandIn::moto());
    kinesis_on(c, "kinesis_kinesalite", cloud::StandIn::kinesalite(None));
}

fn kinesis_on(c: &mut Criterion, name: &str, server: cloud::StandIn) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let runtime = runtime();
    let admin = runtime.block_on(cloud::kinesis::client(&server));
    let fresh = |round: usize| {
        runtime.block_on(async {
            let stream = format!("bench-{round}");
            cloud::kinesis::create_stream(&admin, &stream, 4).await;
            let url = format!(
                "kinesis://{stream}?region=us-east-1&endpoint={}",
                server.endpoint()
            );
            let spec = DestinationSpec::parse(&url).unwrap();
            registry::build_named(spec, "bench").await.unwrap()
        })
    };
    bench_send(c, name, thread_cpu, &runtime, fresh, &events("kin", 2));
}

fn pubsub(c: &mut Criterion) {
    let emulator = cloud::StandIn::pubsub_emulator();
    let runtime = runtime();
    let topics = runtime.block_on(async {
        google_cloud_pubsub::client::TopicAdmin::builder()
            .with_endpoint(emulator.endpoint())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .build()
            .await
            .unwrap()
    });
    let fresh = |round: usize| {
        runtime.block_on(async {
            let topic = format!("projects/flagstream-bench/topics/bench-{round}");
            topics.create_topic().set_name(&topic).send().await.unwrap();
            let url = format!("pubsub://{topic}?endpoint={}", emulator.endpoint());
            let spec = DestinationSpec::parse(&url).unwrap();
            registry::build_named(spec, "bench").await.unwrap()
        })
    };
    bench_send(
        c,
        "pubsub_emulator",
        thread_cpu,
        &runtime,
        fresh,
        &events("ps", 1),
    );
}

fn kafka(c: &mut Criterion) {
    let runtime = runtime();
    let broker = runtime.block_on(kafka::Tansu::start_ungated());
    let options = std::env::var("FLAGSTREAM_BENCH_KAFKA_OPTIONS").unwrap_or_default();
    let fresh = |round: usize| {
        runtime.block_on(async {
            let topic = format!("bench-{round}");
            broker.create_topic(&topic, 4).await;
            let url = format!("kafka://{}/{topic}?{options}", broker.bootstrap());
            let spec = DestinationSpec::parse(&url).unwrap();
            registry::build_named(spec, "bench").await.unwrap()
        })
    };
    if let Ok(sends) = std::env::var("FLAGSTREAM_BENCH_KAFKA_QUICK") {
        let sends = sends
            .parse()
            .expect("FLAGSTREAM_BENCH_KAFKA_QUICK: a number of sends");
        return quick_cpu_per_thread(&runtime, &fresh(0), &events("kafka", 1)[0], sends);
    }
    bench_send(
        c,
        "kafka_tansu",
        process_cpu,
        &runtime,
        fresh,
        &events("kafka", 1),
    );
    // The Kafka destination's largest batch (`MAX_EVENTS_PER_BATCH`): per-send costs
    // (linger wake-ups, produce requests) spread over 5,000 events.
    bench_send(
        c,
        "kafka_tansu_5000",
        process_cpu,
        &runtime,
        |round| fresh(1_000 + round),
        &events_n("kafka5k", 1, 5_000),
    );
}

/// User and system CPU ticks (1/100 s) of this process's threads, summed by thread name.
fn ticks_per_thread() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut threads = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).ok();
        let (Some(comm), Some(stat)) = (read("comm"), read("stat")) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the `(comm)`: utime and stime are the 12th and 13th.
        let after_comm = stat.rsplit(')').next().unwrap_or_default();
        let mut fields = after_comm.split_whitespace().skip(11);
        let mut next = || {
            fields
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (user, system) = (next(), next());
        let entry = threads.entry(comm.trim().to_string()).or_insert((0, 0));
        entry.0 += user;
        entry.1 += system;
    }
    threads
}

/// `FLAGSTREAM_BENCH_KAFKA_QUICK=N`: N sends of `batch` after 50 warm-up sends; prints
/// CPU per 1,000 events per thread name (where the CPU goes, without a profiler).
fn quick_cpu_per_thread(
    runtime: &tokio::runtime::Runtime,
    destination: &Arc<dyn Destination>,
    batch: &Batch,
    sends: usize,
) {
    let send_all = |count: usize| {
        runtime.block_on(async {
            for _ in 0..count {
                assert_eq!(destination.send(batch).await, SendOutcome::Delivered);
            }
        })
    };
    send_all(50);
    let (cpu, wall, before) = (process_cpu(), Instant::now(), ticks_per_thread());
    send_all(sends);
    let (cpu, wall, after) = (process_cpu() - cpu, wall.elapsed(), ticks_per_thread());
    let per_1000 = |total: Duration| total / sends as u32 * 1_000 / batch.items.len() as u32;
    println!(
        "quick: {sends} sends: CPU {:?} per 1,000 events, wall {:?} per 1,000",
        per_1000(cpu),
        per_1000(wall)
    );
    // Ticks are 10 ms (USER_HZ = 100): per 1,000 events over all the sends.
    let events = (sends * batch.items.len()) as f64;
    let per_1000_ms = |ticks: u64| ticks as f64 * 10.0 * 1_000.0 / events;
    for (name, (user, system)) in after {
        let (user0, system0) = before.get(&name).copied().unwrap_or((0, 0));
        println!(
            "  {name:<28} user {:.2} ms  sys {:.2} ms per 1,000 events",
            per_1000_ms(user.saturating_sub(user0)),
            per_1000_ms(system.saturating_sub(system0))
        );
    }
}

fn eventhubs(c: &mut Criterion) {
    let runtime = runtime();
    let hub = runtime.block_on(eventhubs::EventHubsStandIn::start_with(
        eventhubs::StandInOptions {
            gated: false,
            ..Default::default()
        },
    ));
    let fresh = |_round: usize| {
        runtime.block_on(async {
            let spec = DestinationSpec::parse(&hub.url("flag-events", "")).unwrap();
            registry::build_named(spec, "bench").await.unwrap()
        })
    };
    bench_send(
        c,
        "eventhubs_standin",
        process_cpu,
        &runtime,
        fresh,
        &events("eh", 1),
    );
}

/// One object of 10,000 events per iteration into moto (S3) and fake-gcs-server (GCS).
fn object_stores(c: &mut Criterion) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let runtime = runtime();
    let object = [cloud::batch("obj", 10_000, 100)];
    let moto = cloud::StandIn::moto();
    let s3 = runtime.block_on(cloud::s3::client(&moto));
    let fake_gcs = gcs::FakeGcs::start();
    let build = |url: String| async move {
        registry::build_named(DestinationSpec::parse(&url).unwrap(), "bench")
            .await
            .unwrap()
    };
    for format in ["ndjson", "ndjson.gz"] {
        let label = format.replace('.', "_");
        let bucket = |round: usize| format!("bench-{}-{round}", label.replace('_', "-"));
        let fresh_s3 = |round: usize| {
            runtime.block_on(async {
                cloud::s3::create_bucket(&s3, &bucket(round)).await;
                let endpoint = moto.endpoint();
                build(format!(
                    "s3://{}?region=us-east-1&endpoint={endpoint}&format={format}",
                    bucket(round)
                ))
                .await
            })
        };
        let name = format!("s3_moto_{label}");
        bench_send(c, &name, process_cpu, &runtime, fresh_s3, &object);
        let fresh_gcs = |round: usize| {
            runtime.block_on(async {
                fake_gcs.create_bucket(&bucket(round)).await;
                let endpoint = fake_gcs.endpoint();
                build(format!(
                    "gs://{}?endpoint={endpoint}&format={format}",
                    bucket(round)
                ))
                .await
            })
        };
        let name = format!("gcs_fake_{label}");
        bench_send(c, &name, process_cpu, &runtime, fresh_gcs, &object);
    }
}

criterion_group!(
    benches,
    encode,
    kinesis,
    pubsub,
    kafka,
    eventhubs,
    object_stores
);
criterion_main!(benches);
