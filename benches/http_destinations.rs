//! HTTP destinations (webhook, Segment, mParticle): throughput and our CPU per 1,000 events
//! against an in-process receiver that answers every request `200` after 1 ms.
//!
//! - `*/wall_send_1000`: wall time to send 1,000 events (two batches of 500, one after the
//!   other, as one delivery worker does), i.e. events/s of one worker.
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
use flagstream::dest::{registry, Batch, Destination, DestinationSpec, SendOutcome};
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

fn bench_destination(c: &mut Criterion, name: &str, url: &str, schema: flagstream::event::Schema) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    std::env::set_var("FLAGSTREAM_BENCH_SECRET", "bench-secret");
    let mut spec = DestinationSpec::parse(url).unwrap();
    let redaction = registry::prepare(&mut spec).unwrap();
    let destination: Arc<dyn Destination> = runtime
        .block_on(registry::build(
            &mut spec,
            name,
            Some(schema),
            std::path::Path::new("."),
            &redaction.secret,
        ))
        .unwrap();
    let batches: Vec<Batch> = (0..2)
        .map(|part| {
            let mut batch = cloud::batch(&format!("{name}-{part}"), 500, 100);
            batch.schema = schema;
            batch
        })
        .collect();
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
        Schema::LaunchDarkly,
    );
    bench_destination(
        c,
        "segment",
        &format!("segment:?write_key=env:FLAGSTREAM_BENCH_SECRET&endpoint=http://{addr}"),
        Schema::Segment,
    );
}

criterion_group!(benches, http_destinations);
criterion_main!(benches);
