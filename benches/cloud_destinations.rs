//! Kinesis and Pub/Sub destinations: our CPU cost per 1,000 events and throughput against
//! the stand-ins (moto, Google's Pub/Sub emulator).
//!
//! - `*/encode_1000`: pure CPU of turning 1,000 events into records/messages (no I/O).
//! - `*/cpu_send_1000`: CPU time of the bench thread (`/proc/thread-self/schedstat`) for
//!   sending 1,000 events to the stand-in with the real client — everything on our side
//!   (encoding, SDK serialization, signing, HTTP/gRPC), not the stand-in's work. The runtime is
//!   single-threaded so all our tasks run on the measured thread.
//! - `*/wall_send_1000`: wall time for the same, i.e. throughput; bounded by the stand-in
//!   (moto is a single-threaded Python server; the emulator is an in-memory Java server).
//!
//! Run: `cargo bench --bench cloud_destinations` (starts and stops its own stand-ins).

#[path = "../tests/cloud/mod.rs"]
mod cloud;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::kinesis::{
    plan_records, split_requests, KinesisDestination, PartitionKeySource,
};
use flagstream::dest::pubsub::{message_for, PubSubDestination};
use flagstream::dest::{Batch, Destination, DestinationSpec, SendOutcome};

/// 1,000 realistic events (~330 bytes each, 100 contexts) as `parts` batches.
fn events(prefix: &str, parts: usize) -> Vec<Batch> {
    (0..parts)
        .map(|part| cloud::batch(&format!("{prefix}-{part}"), 1_000 / parts, 100))
        .collect()
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

/// Measure sending 1,000 events (`batches`) per iteration, as CPU and as wall time.
fn bench_send(
    c: &mut Criterion,
    name: &str,
    destination: &dyn Destination,
    runtime: &tokio::runtime::Runtime,
    batches: &[Batch],
) {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(1_000));
    let send_all = || async {
        for batch in batches {
            let outcome = destination.send(batch).await;
            assert_eq!(outcome, SendOutcome::Delivered);
        }
    };
    group.bench_function("cpu_send_1000", |b| {
        b.iter_custom(|iterations| {
            let start = thread_cpu();
            for _ in 0..iterations {
                runtime.block_on(send_all());
            }
            thread_cpu() - start
        })
    });
    group.bench_function("wall_send_1000", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            for _ in 0..iterations {
                runtime.block_on(send_all());
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn kinesis(c: &mut Criterion) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let moto = cloud::StandIn::moto();
    let runtime = runtime();
    let destination = runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto.endpoint())
            .load()
            .await;
        let admin = aws_sdk_kinesis::Client::new(&config);
        admin
            .create_stream()
            .stream_name("bench")
            .shard_count(4)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut spec = DestinationSpec::parse(&format!(
            "kinesis://bench?region=us-east-1&endpoint={}",
            moto.endpoint()
        ))
        .unwrap();
        let destination = KinesisDestination::from_spec(&mut spec, "bench")
            .await
            .unwrap();
        destination.check().await.unwrap();
        destination
    });
    bench_send(c, "kinesis_moto", &destination, &runtime, &events("kin", 2));
}

fn pubsub(c: &mut Criterion) {
    let emulator = cloud::StandIn::pubsub_emulator();
    let runtime = runtime();
    let destination = runtime.block_on(async {
        let topics = google_cloud_pubsub::client::TopicAdmin::builder()
            .with_endpoint(emulator.endpoint())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .build()
            .await
            .unwrap();
        topics
            .create_topic()
            .set_name("projects/flagstream-bench/topics/bench")
            .send()
            .await
            .unwrap();
        let mut spec = DestinationSpec::parse(&format!(
            "pubsub://projects/flagstream-bench/topics/bench?endpoint={}",
            emulator.endpoint()
        ))
        .unwrap();
        let destination = PubSubDestination::from_spec(&mut spec, "bench")
            .await
            .unwrap();
        destination.check().await.unwrap();
        destination
    });
    bench_send(
        c,
        "pubsub_emulator",
        &destination,
        &runtime,
        &events("ps", 1),
    );
}

criterion_group!(benches, encode, kinesis, pubsub);
criterion_main!(benches);
