//! PostgreSQL destination throughput against a private PostgreSQL 15 cluster (started and
//! stopped by the bench, as in the tests; `fsync=off`, so the server's disk is not measured).
//!
//! - `postgres/load_5000_rows`: wall time to load a batch of 5,000 new `evaluation_events`
//!   rows (≈ 600 bytes of JSON each) through `send`: decode, binary `COPY` into the staging
//!   table, `INSERT … ON CONFLICT DO NOTHING`, commit. Rows/s = elements/s.
//! - `postgres/resend_5000_rows`: the same batch again: every row conflicts, nothing inserted
//!   (the cost of a re-sent batch).
//!
//! Run: `cargo bench --bench postgres`.

#[path = "../tests/it/support/postgres.rs"]
mod postgres;
#[path = "support/rows.rs"]
mod rows;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::{registry, Batch, DestinationSpec, SendOutcome};

const ROWS: usize = 5_000;

fn batch(prefix: &str) -> Batch {
    rows::evaluation_batch(prefix, ROWS)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = postgres::Cluster::start();
    let dest = runtime.block_on(async {
        cluster.create_database("bench").await;
        let spec = DestinationSpec::parse(&cluster.url("bench", "")).unwrap();
        registry::build_named(spec, "bench").await.unwrap()
    });
    let mut group = c.benchmark_group("postgres");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    let mut round = 0usize;
    group.bench_function("load_5000_rows", |b| {
        b.iter_custom(|iterations| {
            let batches: Vec<Batch> = (0..iterations)
                .map(|_| {
                    round += 1;
                    batch(&format!("load{round}"))
                })
                .collect();
            runtime.block_on(async {
                let start = Instant::now();
                for batch in &batches {
                    assert_eq!(dest.send(batch).await, SendOutcome::Delivered);
                }
                start.elapsed()
            })
        })
    });
    let resent = batch("load1");
    group.bench_function("resend_5000_rows", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let start = Instant::now();
                    assert_eq!(dest.send(&resent).await, SendOutcome::Delivered);
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
