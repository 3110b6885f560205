//! WAL benchmarks (criterion). Run once, on a quiet machine if possible:
//! `cargo bench --bench wal`.
//!
//! * `append/{always,never}/{1KiB,16KiB,256KiB}/{1,8,64}`: throughput of concurrent appenders
//!   (tokio tasks on a 2-worker runtime). One criterion iteration = one append per appender.
//!   The cursor is advanced and garbage collected between samples (untimed), so segments are
//!   recycled as in production.
//! * `read/zero_copy_16KiB`: a reader draining 256 MiB of stored 16 KiB records.
//! * `tail/16KiB`: a tailing reader following one appender (`never` mode), end to end.
//! * `recovery/full_tail_segment_128MiB`: `Wal::open` of a directory whose unsealed tail
//!   segment is full (every record scanned and checksummed).
//!
//! Segments are 128 MiB (the default). Measurement times are short on purpose: the point is
//! the order of magnitude on this machine, not the third digit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flagstream::wal::format::{record_footprint, HEADER_PAGE_BYTES};
use flagstream::wal::{AppendRequest, CursorState, Position, SyncMode, Wal, WalOptions};

const KIB: usize = 1024;
const SEGMENT: u64 = 128 * 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bench_options(dir: &std::path::Path, sync: SyncMode) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.segment_bytes = SEGMENT;
    options.max_bytes = 32 * SEGMENT;
    options.min_free_bytes = 1 << 30;
    options.sync = sync;
    options
}

/// Let every record so far be collected.
fn release_everything(wal: &Wal) {
    let mut cursor = wal.open_cursor("bench").unwrap();
    cursor
        .persist(CursorState {
            acked: Position {
                seq: wal.next_seq(),
                event: 0,
            },
            ..Default::default()
        })
        .unwrap();
    wal.collect_garbage().unwrap();
}

fn append_matrix(c: &mut Criterion) {
    let runtime = runtime();
    for (mode_name, mode) in [("always", SyncMode::Always), ("never", SyncMode::Never)] {
        let mut group = c.benchmark_group(format!("append/{mode_name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for size in [KIB, 16 * KIB, 256 * KIB] {
            for appenders in [1usize, 8, 64] {
                let dir = tempfile::tempdir().unwrap();
                let wal = Wal::open(bench_options(dir.path(), mode)).unwrap();
                let payload: Arc<Vec<u8>> = Arc::new((0..size).map(|index| index as u8).collect());
                group.throughput(Throughput::Bytes((size * appenders) as u64));
                group.bench_function(
                    BenchmarkId::new(format!("{}KiB", size / KIB), appenders),
                    |bencher| {
                        bencher.iter_custom(|iterations| {
                            let elapsed = runtime.block_on(async {
                                let started = Instant::now();
                                let tasks: Vec<_> = (0..appenders)
                                    .map(|_| {
                                        let wal = wal.clone();
                                        let payload = Arc::clone(&payload);
                                        tokio::spawn(async move {
                                            for _ in 0..iterations {
                                                wal.append(AppendRequest {
                                                    tag: 1,
                                                    event_count: 1,
                                                    received_at_ms: 0,
                                                    parts: &[&payload],
                                                })
                                                .await
                                                .unwrap();
                                            }
                                        })
                                    })
                                    .collect();
                                for task in tasks {
                                    task.await.unwrap();
                                }
                                started.elapsed()
                            });
                            release_everything(&wal);
                            elapsed
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

fn read_and_tail(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(bench_options(dir.path(), SyncMode::Never)).unwrap();
    let payload = vec![7u8; 16 * KIB];
    let records = 256 * KIB / 16; // 256 MiB
    runtime.block_on(async {
        for _ in 0..records {
            wal.append(AppendRequest {
                tag: 1,
                event_count: 1,
                received_at_ms: 0,
                parts: &[&payload],
            })
            .await
            .unwrap();
        }
    });
    group.throughput(Throughput::Bytes((records * 16 * KIB) as u64));
    group.bench_function("zero_copy_16KiB", |bencher| {
        bencher.iter(|| {
            let mut reader = wal.reader(1);
            let mut bytes = 0usize;
            while let Some(record) = reader.try_next().unwrap() {
                bytes += record.payload.len();
            }
            assert_eq!(bytes, records * 16 * KIB);
        });
    });
    group.finish();
    drop(wal);

    let mut group = c.benchmark_group("tail");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(bench_options(dir.path(), SyncMode::Never)).unwrap();
    let batch = 1_000u64;
    group.throughput(Throughput::Bytes(batch * 16 * KIB as u64));
    group.bench_function("16KiB", |bencher| {
        bencher.iter_custom(|iterations| {
            let elapsed = runtime.block_on(async {
                let mut reader = wal.reader(wal.next_seq());
                let total = iterations * batch;
                let started = Instant::now();
                let follower = tokio::spawn(async move {
                    for _ in 0..total {
                        reader.next().await.unwrap();
                    }
                });
                for _ in 0..total {
                    wal.append(AppendRequest {
                        tag: 1,
                        event_count: 1,
                        received_at_ms: 0,
                        parts: &[&payload],
                    })
                    .await
                    .unwrap();
                }
                follower.await.unwrap();
                started.elapsed()
            });
            release_everything(&wal);
            elapsed
        });
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let options = bench_options(dir.path(), SyncMode::Never);
    let record = 16 * KIB;
    let fit = (SEGMENT - HEADER_PAGE_BYTES) / record_footprint(record as u64);
    {
        let wal = Wal::open(options.clone()).unwrap();
        let payload = vec![3u8; record];
        runtime.block_on(async {
            for _ in 0..fit {
                wal.append(AppendRequest {
                    tag: 1,
                    event_count: 1,
                    received_at_ms: 0,
                    parts: &[&payload],
                })
                .await
                .unwrap();
            }
            wal.close().await.unwrap();
        });
        assert_eq!(
            wal.stats().segments,
            1,
            "the tail segment must be full but not rolled"
        );
    }
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(SEGMENT));
    group.bench_function("full_tail_segment_128MiB", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let wal = Wal::open(options.clone()).unwrap();
                total += started.elapsed();
                assert_eq!(wal.next_seq(), fit + 1);
                drop(wal);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, append_matrix, read_and_tail, recovery);
criterion_main!(benches);
