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

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flagstream::dest::{registry, Batch, BatchItem, DestinationSpec, SendOutcome};
use flagstream::event::Schema;

const ROWS: usize = 5_000;

fn batch(prefix: &str) -> Batch {
    let items = (0..ROWS)
        .map(|i| {
            let event_id = format!("{prefix}-{i}");
            let row = serde_json::json!({
                "table": "evaluation_events", "event_id": event_id, "project": "default",
                "environment": "production", "kind": "feature", "flag_key": "new-checkout",
                "flag_version": "12", "context_kind": "user", "context_key": format!("user-{}", i % 100),
                "context_anonymous": false, "context_attributes": "{\"plan\":\"pro\"}",
                "variation_index": 1, "variation_name": null, "variation_value": "true",
                "default_value": "false", "used_default": false, "reason_kind": "FALLTHROUGH",
                "reason_detail": null, "in_experiment": false, "prereq_of": null,
                "sampling_ratio": null, "source": null, "creation_date": 1_716_999_999_001i64,
                "timestamp": "2024-05-29T16:26:39.001Z", "received_at": 1_717_000_000_123i64,
            });
            BatchItem {
                event_id,
                payload: Bytes::from(serde_json::to_vec(&row).unwrap()),
                kind: "feature".into(),
                key: Some("new-checkout".into()),
                context_key: None,
                environment: "production".into(),
                received_at_ms: 1_717_000_000_123,
            }
        })
        .collect();
    Batch {
        id: prefix.into(),
        schema: Schema::Warehouse,
        items,
    }
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
