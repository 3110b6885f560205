//! Fault injection through the `WalIo` trait: fsync failure is fatal, a failed record write
//! is fatal, ENOSPC during
//! preallocation is `Full`, and a crash at every I/O step of a workload (appends with rolls,
//! cursor persists, garbage collection) never loses an acknowledged record.

use crate::support::wal as wal_support;

use std::sync::Arc;

use flagstream::wal::{CursorState, Position, Wal, WalError};
use wal_support::*;

#[tokio::test]
async fn a_failed_fdatasync_is_fatal_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyIo::new());
    let wal = Wal::open_with_io(options(dir.path()), io.clone()).unwrap();
    for key in 0..5 {
        append(&wal, key, 100).await.unwrap();
    }
    io.fail_syncs_of(".seg");
    match append(&wal, 5, 100).await {
        Err(WalError::Fatal(message)) => assert!(message.contains("fdatasync"), "{message}"),
        other => panic!("expected Fatal, got {other:?}"),
    }
    // Fatal is a latch: no later append succeeds, even once the disk "recovers".
    *io.log.lock().unwrap() = Vec::new();
    io.fail_syncs_of("no-such-path");
    assert!(matches!(
        append(&wal, 6, 100).await,
        Err(WalError::Fatal(_))
    ));
    assert!(wal.stats().fatal.is_some());
    assert!(matches!(wal.fatal_error().await, WalError::Fatal(_)));
    let syncs_after_failure = io
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("sync_data"))
        .count();
    assert_eq!(
        syncs_after_failure, 0,
        "the sync thread retried after a failed fdatasync"
    );
    drop(wal);
    // Restart: every acknowledged record is there.
    let wal = Wal::open(options(dir.path())).unwrap();
    let records = read_all(&wal, 1);
    assert!(records.len() >= 5);
    for (key, record) in records.iter().take(5).enumerate() {
        assert_intact(record, key as u64, 100);
    }
}

#[tokio::test]
async fn a_failed_record_write_is_fatal_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyIo::new());
    let wal = Wal::open_with_io(options(dir.path()), io.clone()).unwrap();
    for key in 0..5 {
        append(&wal, key, 100).await.unwrap();
    }
    io.fail_appends(true);
    match append(&wal, 5, 100).await {
        Err(WalError::Fatal(message)) => assert!(message.contains("writing a record"), "{message}"),
        other => panic!("expected Fatal, got {other:?}"),
    }
    io.fail_appends(false);
    assert!(
        matches!(append(&wal, 6, 100).await, Err(WalError::Fatal(_))),
        "fatal is a latch"
    );
    // Readers never see the half-written record: it was never committed.
    assert_eq!(read_all(&wal, 1).len(), 5);
    drop(wal);
    // Restart: the five acknowledged records, and the torn one cut as a torn tail.
    let wal = Wal::open(options(dir.path())).unwrap();
    let records = read_all(&wal, 1);
    assert_eq!(records.len(), 5);
    for (key, record) in records.iter().enumerate() {
        assert_intact(record, key as u64, 100);
    }
    append(&wal, 7, 100).await.unwrap();
    assert_eq!(read_all(&wal, 1).len(), 6);
}

#[tokio::test]
async fn enospc_while_preallocating_is_full_not_fatal_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FaultyIo::new());
    let wal = Wal::open_with_io(options(dir.path()), io.clone()).unwrap();
    io.no_space(true);
    // Appends go on while a spare prepared before the disk "filled" lasts, then fail fast.
    let mut accepted = 0u64;
    let error = loop {
        match append(&wal, accepted, 10_000).await {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 100);
    };
    assert!(matches!(error, WalError::Full { .. }), "{error:?}");
    assert!(wal.stats().fatal.is_none());
    // No half-allocated file is left behind.
    for name in wal_files(dir.path()) {
        let len = std::fs::metadata(dir.path().join(SEGMENT_DIR).join(&name))
            .unwrap()
            .len();
        assert_eq!(len, SEGMENT, "{name}");
    }
    io.no_space(false);
    let seq = append(&wal, 1_000, 10_000).await.unwrap();
    assert_eq!(seq, accepted + 1);
    let records = read_all(&wal, 1);
    assert_eq!(records.len() as u64, accepted + 1);
}

#[tokio::test]
async fn the_free_disk_floor_refuses_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.min_free_bytes = u64::MAX / 2;
    let wal = Wal::open(options).unwrap();
    match append(&wal, 1, 10).await {
        Err(WalError::Full { needed, available }) => assert!(needed > available),
        other => panic!("expected Full, got {other:?}"),
    }
}

/// One deterministic workload: appends that roll segments, a cursor that persists and GC.
/// Returns the keys of every append that was acknowledged (seq → key).
async fn workload(wal: &Wal) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let Ok(mut cursor) = wal.open_cursor("dest") else {
        return acked;
    };
    for key in 0..40u64 {
        match append(wal, key, 3_000 + (key as usize * 811) % 9_000).await {
            Ok(seq) => acked.push((seq, key)),
            Err(_) => return acked,
        }
        if key % 10 == 9 {
            let state = CursorState {
                acked: Position {
                    seq: acked[acked.len() / 2].0,
                    event: 0,
                },
                ..Default::default()
            };
            if cursor.persist(state).is_err() || wal.collect_garbage().is_err() {
                return acked;
            }
        }
    }
    acked
}

fn len_of(key: u64) -> usize {
    3_000 + (key as usize * 811) % 9_000
}

#[tokio::test]
async fn a_crash_at_every_io_step_loses_no_acknowledged_record() {
    // Count the steps of a clean run first.
    let total_steps = {
        let dir = fast_tempdir();
        let io = Arc::new(FaultyIo::new());
        let wal = Wal::open_with_io(options(dir.path()), io.clone()).unwrap();
        let before = io.operations();
        let acked = workload(&wal).await;
        assert_eq!(acked.len(), 40);
        io.operations() - before
    };
    assert!(total_steps > 40, "workload too small: {total_steps} steps");
    eprintln!("crashing at each of {total_steps} I/O steps");
    for crash_step in 0..total_steps {
        let dir = fast_tempdir();
        let io = Arc::new(FaultyIo::new());
        let wal = Wal::open_with_io(options(dir.path()), io.clone()).unwrap();
        io.crash_at(io.operations() + crash_step);
        let acked = workload(&wal).await;
        let cursor_before = wal.open_cursor("dest").map(|cursor| cursor.state());
        drop(wal);

        let wal = Wal::open(options(dir.path()))
            .unwrap_or_else(|error| panic!("step {crash_step}: reopen failed: {error}"));
        let cursor = wal.open_cursor("dest").unwrap().state();
        if let Ok(before) = cursor_before {
            // On disk the cursor is at least where the process last persisted it (a slot
            // written just before the crash may have reached the page cache, never less).
            assert!(
                cursor.acked >= before.acked,
                "step {crash_step}: {cursor:?} < {before:?}"
            );
        }
        // Everything the cursor still needs and every acknowledged record after it is there.
        let records = read_all(&wal, cursor.acked.seq);
        let by_seq: std::collections::BTreeMap<u64, _> =
            records.iter().map(|record| (record.seq, record)).collect();
        for &(seq, key) in &acked {
            if seq >= cursor.acked.seq {
                let record = by_seq
                    .get(&seq)
                    .unwrap_or_else(|| panic!("step {crash_step}: acked seq {seq} lost"));
                assert_intact(record, key, len_of(key));
            }
        }
        // Seqs are contiguous from the cursor to the end and new appends continue them.
        for pair in records.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "step {crash_step}");
        }
        let expected_next = wal.next_seq();
        if let Some(last) = records.last() {
            assert_eq!(expected_next, last.seq + 1, "step {crash_step}");
        }
        assert_eq!(
            append(&wal, 999, 10).await.unwrap(),
            expected_next,
            "step {crash_step}"
        );
        assert!(wal.collect_garbage().is_ok(), "step {crash_step}");
    }
}
