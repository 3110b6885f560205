//! HTTP destinations (webhook, Segment, LaunchDarkly upstream): throughput and our CPU per
//! 1,000 events against an in-process receiver that answers every request `200` after 1 ms.
//!
//! - `*/wall_send_1000`: wall time to send 1,000 events (two batches of 500, one after the
//!   other, as one delivery worker does), i.e. events/s of one worker. For `launchdarkly`,
//!   1,000 events are 20 stored SDK payloads of 50 events, one batch, one request each (sent
//!   concurrently, as the destination does).
//! - `*/cpu_send_1000`: CPU time of the sending thread for the same (body building, TLS-less
//!   HTTP/1.1, classification); the receiver runs on its own thread and is not counted.
//!
//! Run: `cargo bench --bench http_destinations`.

#[path = "../tests/it/support/cloud/mod.rs"]
mod cloud;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::{
    registry, Batch, BatchItem, Destination, DestinationSpec, EnvironmentKeys, SendOutcome,
};
use flagstream::event::stored::{credential_fingerprint, encode_header, RequestMeta, StoredMeta};
use flagstream::event::{InboundFormat, InstanceId};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A receiver answering `200 {}` 1 ms after reading each body, on its own thread.
fn start_receiver() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async {
                            let _ = request.into_body().collect().await;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let nanos: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(nanos)
}

fn monotonic() -> Duration {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// The SDK key of the benchmark's environment.
const SDK_KEY: &str = "sdk-bench-0000-4000-8000-000000000001";

/// Build the destination `url` named `name`.
fn build(runtime: &tokio::runtime::Runtime, name: &str, url: &str) -> Arc<dyn Destination> {
    std::env::set_var("FLAGSTREAM_BENCH_SECRET", "bench-secret");
    let mut spec = DestinationSpec::parse(url).unwrap();
    let redaction = registry::prepare(&mut spec).unwrap();
    let keys = EnvironmentKeys::from_pairs([(SDK_KEY, "production")]);
    runtime
        .block_on(registry::build_with_keys(
            &mut spec,
            name,
            None,
            std::path::Path::new("."),
            &redaction.secret,
            &keys,
        ))
        .unwrap()
}

/// Two batches of 500 mapped events.
fn event_batches(name: &str, schema: flagstream::event::Schema) -> Vec<Batch> {
    (0..2)
        .map(|part| {
            let mut batch = cloud::batch(&format!("{name}-{part}"), 500, 100);
            batch.schema = schema;
            batch
        })
        .collect()
}

/// One batch of 20 stored `/bulk` records of 50 events each, as ingest stores them.
fn record_batches() -> Vec<Batch> {
    let fingerprint = credential_fingerprint(SDK_KEY);
    let items = (0..20)
        .map(|record| {
            let payload_id = format!("bench-payload-{record}");
            let mut payload = Vec::new();
            encode_header(
                &StoredMeta {
                    format: Some(InboundFormat::LdBulk),
                    instance_id: Some(InstanceId([1; 16])),
                    schema_version: Some(4),
                    environment: "production",
                    payload_id: &payload_id,
                    tags: "",
                    user_agent: "PythonClient/9.18.2",
                    request: RequestMeta {
                        path: "/bulk",
                        credential: &fingerprint,
                        user_agent: "PythonClient/9.18.2",
                        ..RequestMeta::default()
                    },
                },
                &mut payload,
            );
            payload.extend_from_slice(&serde_json::to_vec(&cloud::ld_bulk("b", 50, 10)).unwrap());
            BatchItem {
                event_id: payload_id.as_str().into(),
                payload: payload.into(),
                kind: "ld_bulk".into(),
                key: Some(payload_id.into()),
                context_key: None,
                environment: "production".into(),
                received_at_ms: 0,
            }
        })
        .collect();
    vec![Batch {
        id: "records".into(),
        schema: flagstream::event::Schema::default(),
        items,
        lines: None,
    }]
}

fn bench_destination(c: &mut Criterion, name: &str, url: &str, batches: fn(&str) -> Vec<Batch>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let destination = build(&runtime, name, url);
    let batches = batches(name);
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1_000));
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
    group.bench_function("wall_send_1000", |b| {
        b.iter_custom(|n| measure(monotonic, n))
    });
    group.bench_function("cpu_send_1000", |b| {
        b.iter_custom(|n| measure(thread_cpu, n))
    });
    group.finish();
}

fn http_destinations(c: &mut Criterion) {
    use flagstream::event::Schema;
    let addr = start_receiver();
    bench_destination(
        c,
        "webhook",
        &format!("webhook+http://{addr}/hook?secret=env:FLAGSTREAM_BENCH_SECRET"),
        |name| event_batches(name, Schema::LaunchDarkly),
    );
    bench_destination(
        c,
        "segment",
        &format!("segment:?write_key=env:FLAGSTREAM_BENCH_SECRET&endpoint=http://{addr}"),
        |name| event_batches(name, Schema::Segment),
    );
    bench_destination(
        c,
        "launchdarkly",
        &format!("launchdarkly:?endpoint=http://{addr}"),
        |_| record_batches(),
    );
}

criterion_group!(benches, http_destinations);
criterion_main!(benches);
