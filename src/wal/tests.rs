//! Unit tests of the assembled WAL (open, append, read, cursors, GC, recovery).

use std::path::Path;
use std::time::Duration;

use super::*;

pub(crate) const SMALL_SEGMENT: u64 = 64 * 1024;

pub(crate) fn small_options(dir: &Path) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.segment_bytes = SMALL_SEGMENT;
    options.max_bytes = SMALL_SEGMENT * 64;
    options.min_free_bytes = 0;
    options
}

fn payload_for(seq_hint: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| (seq_hint as usize * 31 + index) as u8)
        .collect()
}

async fn append(wal: &Wal, payload: &[u8]) -> u64 {
    wal.append(AppendRequest {
        tag: 7,
        event_count: 3,
        received_at_ms: 1_000 + payload.len() as u64,
        parts: &[payload],
    })
    .await
    .unwrap()
    .seq
}

fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let mut reader = wal.reader(from);
    let mut records = Vec::new();
    while let Some(record) = reader.try_next().unwrap() {
        records.push(record);
    }
    records
}

#[tokio::test]
async fn appends_round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!((wal.first_seq(), wal.next_seq()), (1, 1));
    let mut expected = Vec::new();
    for index in 0..200u64 {
        let payload = payload_for(index, (index as usize * 977) % 5_000);
        let seq = append(&wal, &payload).await;
        assert_eq!(seq, index + 1);
        expected.push(payload);
    }
    assert!(wal.stats().segments > 3, "rolled: {:?}", wal.stats());
    let records = read_all(&wal, 0);
    assert_eq!(records.len(), expected.len());
    for (record, payload) in records.iter().zip(&expected) {
        assert_eq!(&record.payload[..], &payload[..]);
        assert_eq!((record.tag, record.event_count), (7, 3));
        assert_eq!(record.received_at_ms, 1_000 + payload.len() as u64);
    }
    assert_eq!(wal.durable_next_seq(), 201);
}

#[tokio::test]
async fn gather_parts_are_concatenated() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let receipt = wal
        .append(AppendRequest {
            tag: 1,
            event_count: 1,
            received_at_ms: 5,
            parts: &[b"head|", b"", b"body"],
        })
        .await
        .unwrap();
    let record = wal.reader(receipt.seq).try_next().unwrap().unwrap();
    assert_eq!(&record.payload[..], b"head|body");
}

#[tokio::test]
async fn reopening_keeps_every_record_and_continues_the_seq() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(small_options(dir.path())).unwrap();
        for index in 0..50 {
            append(&wal, &payload_for(index, 3_000)).await;
        }
        wal.close().await.unwrap();
        assert!(matches!(
            wal.append(AppendRequest {
                tag: 0,
                event_count: 0,
                received_at_ms: 0,
                parts: &[b"x"]
            })
            .await,
            Err(WalError::Closed)
        ));
    }
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.next_seq(), 51);
    assert_eq!(append(&wal, b"after").await, 51);
    let records = read_all(&wal, 1);
    assert_eq!(records.len(), 51);
    for (index, record) in records.iter().take(50).enumerate() {
        assert_eq!(record.seq, index as u64 + 1);
        assert_eq!(&record.payload[..], &payload_for(index as u64, 3_000)[..]);
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(small_options(dir.path())).unwrap();
    match Wal::open(small_options(dir.path())) {
        Err(WalError::Locked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn open_works_outside_a_runtime_and_validates_options() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = small_options(dir.path());
    options.segment_bytes = 1000;
    assert!(matches!(
        Wal::open(options),
        Err(WalError::InvalidOption {
            option: WalOption::SegmentBytes,
            ..
        })
    ));
    let mut options = small_options(dir.path());
    options.max_bytes = SMALL_SEGMENT;
    assert!(matches!(
        Wal::open(options),
        Err(WalError::InvalidOption {
            option: WalOption::MaxBytes,
            ..
        })
    ));
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.options().max_record_bytes(), SMALL_SEGMENT - 4096 - 32);
}

#[tokio::test]
async fn oversized_records_are_refused_and_the_largest_one_fits() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let max = wal.options().max_record_bytes();
    let too_big = vec![1u8; max as usize + 1];
    match wal
        .append(AppendRequest {
            tag: 0,
            event_count: 1,
            received_at_ms: 0,
            parts: &[&too_big],
        })
        .await
    {
        Err(WalError::TooLarge { size, max: limit }) => assert_eq!((size, limit), (max + 1, max)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    append(&wal, b"small").await;
    let biggest = vec![2u8; max as usize];
    let seq = append(&wal, &biggest).await;
    let record = wal.reader(seq).try_next().unwrap().unwrap();
    assert_eq!(record.payload.len(), biggest.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_unique_seqs_and_all_records_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for index in 0..20u64 {
                let payload = format!("task {task} record {index}");
                seqs.push((append(&wal, payload.as_bytes()).await, payload));
            }
            seqs
        }));
    }
    let mut written = std::collections::BTreeMap::new();
    for task in tasks {
        for (seq, payload) in task.await.unwrap() {
            assert!(
                written.insert(seq, payload).is_none(),
                "seq handed out twice"
            );
        }
    }
    assert_eq!(written.len(), 320);
    let records = read_all(&wal, 1);
    assert_eq!(records.len(), 320);
    for record in records {
        assert_eq!(record.payload, written[&record.seq].as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_reader_wakes_for_new_records_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let mut reader = wal.reader(1);
    assert!(reader.try_next().unwrap().is_none());
    let tail = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 300 {
            seen.push(reader.next().await.unwrap().seq);
        }
        (seen, reader.position())
    });
    for index in 0..300 {
        append(&wal, &payload_for(index, 700)).await;
        if index % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (seen, position) = tokio::time::timeout(Duration::from_secs(20), tail)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    assert_eq!(position, 301);
}

#[tokio::test]
async fn next_is_cancel_safe_and_ends_when_the_log_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let mut reader = wal.reader(1);
    // A `next` abandoned while waiting must not lose the record that arrives later.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), reader.next())
            .await
            .is_err()
    );
    append(&wal, b"one").await;
    assert_eq!(reader.next().await.unwrap().seq, 1);
    wal.close().await.unwrap();
    assert!(matches!(reader.next().await, Err(WalError::Closed)));
}

#[tokio::test]
async fn payloads_outlive_the_log_and_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let mut cursor = wal.open_cursor("dest").unwrap();
    for index in 0..60 {
        append(&wal, &payload_for(index, 4_000)).await;
    }
    let first = wal.reader(1).try_next().unwrap().unwrap();
    cursor
        .persist(CursorState {
            acked: Position { seq: 55, event: 0 },
            ..Default::default()
        })
        .unwrap();
    assert!(wal.collect_garbage().unwrap() > 0);
    assert!(wal.first_seq() > 1);
    drop(cursor);
    drop(wal);
    assert_eq!(&first.payload[..], &payload_for(0, 4_000)[..]);
}

#[tokio::test]
async fn cursors_start_at_the_oldest_record_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let state = CursorState {
        acked: Position { seq: 4, event: 2 },
        blob: CursorBlob::new(b"owner's state").unwrap(),
    };
    {
        let wal = Wal::open(small_options(dir.path())).unwrap();
        for index in 0..10 {
            append(&wal, &payload_for(index, 10)).await;
        }
        let mut cursor = wal.open_cursor("kinesis").unwrap();
        assert_eq!(cursor.name(), "kinesis");
        assert_eq!(cursor.state().acked, Position { seq: 1, event: 0 });
        cursor.persist(state).unwrap();
        for generation in 0..5u64 {
            let mut next = state;
            next.blob = CursorBlob::new(&generation.to_le_bytes()).unwrap();
            cursor.persist(next).unwrap();
        }
        cursor.persist(state).unwrap();
        assert!(wal.open_cursor("bad/name").is_err());
        assert!(matches!(
            cursor.persist(CursorState {
                acked: Position { seq: 12, event: 0 },
                ..Default::default()
            }),
            Err(WalError::InvalidArgument(_))
        ));
    }
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.cursor_names(), vec!["kinesis".to_owned()]);
    assert_eq!(wal.open_cursor("kinesis").unwrap().state(), state);
    wal.release_cursor("kinesis").unwrap();
    assert!(wal.cursor_names().is_empty());
    drop(wal);
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert!(wal.cursor_names().is_empty());
}

#[tokio::test]
async fn gc_frees_only_segments_every_persisted_cursor_is_past() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    // No cursor at all: nothing is ever freed.
    for index in 0..40 {
        append(&wal, &payload_for(index, 8_000)).await;
    }
    assert_eq!(wal.collect_garbage().unwrap(), 0);
    let mut fast = wal.open_cursor("fast").unwrap();
    let mut slow = wal.open_cursor("slow").unwrap();
    fast.persist(CursorState {
        acked: Position { seq: 41, event: 0 },
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        wal.collect_garbage().unwrap(),
        0,
        "slow still needs everything"
    );
    slow.persist(CursorState {
        acked: Position { seq: 20, event: 5 },
        ..Default::default()
    })
    .unwrap();
    let freed = wal.collect_garbage().unwrap();
    assert!(freed > 0);
    assert!(
        wal.first_seq() <= 20,
        "seq 20 is still needed, first is {}",
        wal.first_seq()
    );
    let records = read_all(&wal, 20);
    assert_eq!(records.first().unwrap().seq, 20);
    assert_eq!(records.len(), 21);
    // Releasing the slow cursor lets GC go up to the fast one, but keeps the newest segment.
    wal.release_cursor("slow").unwrap();
    wal.collect_garbage().unwrap();
    assert!(wal.first_seq() > 20);
    assert_eq!(wal.stats().segments, 1);
    drop(fast);
    drop(slow);
    drop(wal);
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(
        wal.next_seq(),
        41,
        "the seq counter survives collecting every old segment"
    );
}

#[tokio::test]
async fn a_full_budget_fails_fast_and_recovers_after_gc() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = small_options(dir.path());
    options.max_bytes = SMALL_SEGMENT * 3;
    let wal = Wal::open(options).unwrap();
    let mut cursor = wal.open_cursor("dest").unwrap();
    let payload = vec![9u8; 20_000];
    let mut last_ok = 0;
    let error = loop {
        match wal
            .append(AppendRequest {
                tag: 0,
                event_count: 1,
                received_at_ms: 0,
                parts: &[&payload],
            })
            .await
        {
            Ok(receipt) => last_ok = receipt.seq,
            Err(error) => break error,
        }
        assert!(last_ok < 100, "budget never enforced");
    };
    assert!(matches!(error, WalError::Full { .. }), "{error:?}");
    assert!(wal.stats().bytes_on_disk <= SMALL_SEGMENT * 3);
    // Everything accepted is intact.
    assert_eq!(read_all(&wal, 1).len() as u64, last_ok);
    cursor
        .persist(CursorState {
            acked: Position {
                seq: last_ok + 1,
                event: 0,
            },
            ..Default::default()
        })
        .unwrap();
    assert!(wal.collect_garbage().unwrap() > 0);
    append(&wal, &payload).await;
}

#[tokio::test]
async fn lag_counts_records_bytes_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.lag(1), Lag::default());
    for index in 0..30u64 {
        wal.append(AppendRequest {
            tag: 0,
            event_count: 1,
            received_at_ms: 100 + index,
            parts: &[&[0u8; 5_000]],
        })
        .await
        .unwrap();
    }
    let footprint = format::record_footprint(5_000);
    let lag = wal.lag(11);
    assert_eq!(lag.records, 20);
    assert_eq!(lag.bytes, 20 * footprint);
    assert_eq!(lag.oldest_received_at_ms, Some(110));
    assert_eq!(wal.lag(0).records, 30);
    assert_eq!(wal.lag(31), Lag::default());
}

#[tokio::test]
async fn interval_and_never_modes_resolve_without_waiting_and_persist_on_close() {
    for mode in [
        SyncMode::Interval(Duration::from_millis(5)),
        SyncMode::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = small_options(dir.path());
        options.sync = mode;
        {
            let wal = Wal::open(options.clone()).unwrap();
            for index in 0..20 {
                append(&wal, &payload_for(index, 100)).await;
            }
            wal.close().await.unwrap();
            assert_eq!(wal.durable_next_seq(), 21, "{mode:?}");
        }
        let wal = Wal::open(options).unwrap();
        assert_eq!(read_all(&wal, 1).len(), 20, "{mode:?}");
    }
}

/// Ingest and delivery run these on multi-threaded runtimes (`tokio::spawn` needs `Send`).
#[test]
fn handles_and_futures_are_send_and_sync_where_callers_need_it() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Wal>();
    send_sync::<Record>();
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    let mut reader = wal.reader(1);
    let mut cursor = wal.open_cursor("send").unwrap();
    let body = b"x".to_vec();
    let parts: [&[u8]; 1] = [&body];
    send(&wal.append(AppendRequest {
        tag: 0,
        event_count: 0,
        received_at_ms: 0,
        parts: &parts,
    }));
    send(&reader.next());
    send(&wal.close());
    send(&wal.fatal_error());
    send(&reader);
    send(&cursor);
    cursor.persist(CursorState::default()).unwrap();
}

/// Mappings of files GC unlinked while something still held them.
fn deleted_mappings_under(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let needle = dir.to_string_lossy().into_owned();
    maps.lines()
        .filter(|line| line.contains(&needle) && line.ends_with("(deleted)"))
        .count()
}

#[tokio::test]
async fn freed_segments_release_their_disk_space_in_every_sync_mode() {
    for mode in [
        SyncMode::Always,
        SyncMode::Never,
        SyncMode::Interval(Duration::from_millis(2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = small_options(dir.path());
        options.sync = mode;
        let wal = Wal::open(options).unwrap();
        let mut cursor = wal.open_cursor("dest").unwrap();
        for index in 0..300u64 {
            append(&wal, &payload_for(index, 8_000)).await;
            if index % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(5)).await;
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
        }
        let stats = wal.stats();
        assert!(stats.segments <= 3, "{mode:?}: {stats:?}");
        assert!(
            stats.bytes_on_disk <= 6 * SMALL_SEGMENT,
            "{mode:?}: {stats:?}"
        );
        let files = std::fs::read_dir(dir.path().join(layout::SEGMENT_DIR))
            .unwrap()
            .count();
        assert!(files <= 6, "{mode:?}: {files} files");
        // A sync round in flight may still hold a segment GC had to unlink; it lets go when
        // its fdatasync returns (slow on a loaded machine).
        let mut deleted = deleted_mappings_under(dir.path());
        for _ in 0..500 {
            if deleted <= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            deleted = deleted_mappings_under(dir.path());
        }
        if deleted > 2 {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let needle = dir.path().to_string_lossy().into_owned();
            for line in maps.lines().filter(|line| line.contains(&needle)) {
                eprintln!("{line}");
            }
        }
        assert!(
            deleted <= 2,
            "{mode:?}: {deleted} unlinked segments still mapped"
        );
    }
}

/// Resident bytes of every mapping of a file under `dir`, from `/proc/self/smaps`.
fn resident_under(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let prefix = dir.display().to_string();
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let header = line.split_whitespace().next().is_some_and(|range| {
            range.contains('-') && range.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if header {
            inside = line.contains(&prefix);
        } else if inside {
            if let Some(rest) = line.strip_prefix("Rss:") {
                kib += rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    kib * 1024
}

/// What one owner (writer or reader) may keep resident of a segment it is in, with room for
/// the segment it just left (released when it leaves) and the header pages.
const RESIDENT_BOUND: u64 =
    2 * (super::residency::RESIDENT_TAIL_BYTES + super::residency::RELEASE_STEP_BYTES);

#[tokio::test]
async fn resident_memory_does_not_grow_with_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = WalOptions::new(dir.path());
    // 64 MiB end two thirds into the third segment: the writer and the reader stop mid-segment,
    // where only their tails may stay resident.
    options.segment_bytes = 24 << 20;
    options.max_bytes = 256 << 20;
    options.min_free_bytes = 0;
    let wal = Wal::open(options).unwrap();
    let payload = vec![7u8; 60 << 10];
    // 64 MiB appended and nobody reading: a backlog.
    for _ in 0..(64 << 20) / payload.len() {
        append(&wal, &payload).await;
    }
    let resident = resident_under(dir.path());
    assert!(
        resident < RESIDENT_BOUND,
        "writer keeps {resident} bytes resident"
    );
    // A reader going through the whole backlog keeps only a tail resident too.
    let mut reader = wal.reader(1);
    let mut count = 0;
    while let Some(record) = reader.try_next().unwrap() {
        assert_eq!(record.payload.len(), payload.len());
        count += 1;
    }
    assert_eq!(count, (64 << 20) / payload.len());
    let resident = resident_under(dir.path());
    assert!(
        resident < RESIDENT_BOUND,
        "reader keeps {resident} bytes resident"
    );
    wal.close().await.unwrap();
}

/// A WAL of 32 MiB segments (no fsync) holding `bytes` of `record_bytes`-sized records,
/// closed and opened again (recovery ran); returns it and the number of records.
async fn reopened_with(dir: &Path, bytes: usize, record_bytes: usize) -> (Wal, u64) {
    let mut options = WalOptions::new(dir);
    options.segment_bytes = 32 << 20;
    options.min_free_bytes = 0;
    options.sync = SyncMode::Never;
    let wal = Wal::open(options.clone()).unwrap();
    let payload = vec![5u8; record_bytes];
    let count = (bytes / record_bytes) as u64;
    for _ in 0..count {
        append(&wal, &payload).await;
    }
    wal.close().await.unwrap();
    drop(wal);
    let reopened = Wal::open(options).unwrap();
    assert_eq!(reopened.next_seq(), count + 1);
    (reopened, count)
}

#[tokio::test]
async fn recovery_scan_of_the_tail_leaves_it_out_of_resident_memory() {
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB in the active segment, which a restart scans to its end (it is not sealed).
    let (reopened, _) = reopened_with(dir.path(), 16 << 20, 60 << 10).await;
    let resident = resident_under(dir.path());
    assert!(
        resident < RESIDENT_BOUND,
        "recovery keeps {resident} bytes resident"
    );
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn finding_a_seq_deep_in_a_recovered_segment_leaves_no_backlog_resident() {
    let dir = tempfile::tempdir().unwrap();
    // Segment 1 sealed full, a little in segment 2; a header on every page, as with
    // SDK-sized bodies (a few KiB).
    let (reopened, count) = reopened_with(dir.path(), 40 << 20, 4000).await;
    // A recovered sealed segment has no seq index: the lag probe (delivery's lag metrics,
    // which follow the acked position) finding seq 8000 reads every record header before it.
    let lag = reopened.lag(8000);
    assert_eq!(lag.records, count + 1 - 8000);
    let resident = resident_under(dir.path());
    assert!(
        resident < RESIDENT_BOUND,
        "the lag probe keeps {resident} bytes resident"
    );
    reopened.close().await.unwrap();
}

/// Bytes of `dir`'s segment files (spares excluded) in the page cache.
fn cached_segment_bytes(dir: &Path) -> u64 {
    let page = rustix::param::page_size() as u64;
    std::fs::read_dir(dir.join(layout::SEGMENT_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.to_string_lossy().contains("spare"))
        .map(|path| {
            let file = std::fs::File::open(path).unwrap();
            let len = file.metadata().unwrap().len();
            mapping::cached_pages(&file, len) * page
        })
        .sum()
}

#[tokio::test]
async fn durable_bytes_beyond_the_page_cache_budget_leave_the_cache_and_read_back() {
    const MIB: u64 = 1 << 20;
    // Beside the test binary: a real filesystem (tmpfs keeps its pages whatever we advise).
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
    let mut options = WalOptions::new(dir.path());
    options.segment_bytes = 4 * MIB;
    options.max_bytes = 256 * MIB;
    options.min_free_bytes = 0;
    options.page_cache_bytes = Some(MIN_PAGE_CACHE_BYTES);
    let wal = Wal::open(options).unwrap();
    let mut payloads = Vec::new();
    for index in 0..160u64 {
        let payload = payload_for(index, 256 * 1024);
        append(&wal, &payload).await;
        payloads.push(payload);
    }
    // The oldest segments were dropped rounds before the last append resolved, so are marked:
    // garbage collection zeroes them as it recycles them.
    let kept_from = 41;
    assert_zeroed_behind_their_headers(&pass_and_collect(&wal, dir.path(), kept_from));
    // Closing ends the sync thread, which waits for the drops it queued.
    wal.close().await.unwrap();
    drop(wal);
    // The budget, the segment it crosses (less than a step beyond it stays), and slack for
    // the large folios holding the ends of the kept segments.
    let bound = MIN_PAGE_CACHE_BYTES + 4 * MIB + MIB;
    let cached = cached_segment_bytes(dir.path());
    assert!(
        (MIN_PAGE_CACHE_BYTES - 4 * MIB..=bound).contains(&cached),
        "{} KiB of 40 MiB written stayed cached, budget 16 MiB",
        cached / 1024
    );
    let mut options = WalOptions::new(dir.path());
    options.segment_bytes = 4 * MIB;
    options.max_bytes = 256 * MIB;
    options.min_free_bytes = 0;
    let wal = Wal::open(options).unwrap();
    let records = read_all(&wal, kept_from);
    let expected = &payloads[kept_from as usize - 1..];
    assert_eq!(records.len(), expected.len());
    for (record, payload) in records.iter().zip(expected) {
        assert_eq!(&record.payload[..], &payload[..], "read back from disk");
    }
}

/// Persist a cursor at `seq`, collect garbage, and read the recycled spares.
fn pass_and_collect(wal: &Wal, dir: &Path, seq: u64) -> Vec<Vec<u8>> {
    let mut cursor = wal.open_cursor("dest").unwrap();
    let acked = Position { seq, event: 0 };
    cursor
        .persist(CursorState {
            acked,
            ..Default::default()
        })
        .unwrap();
    assert!(wal.collect_garbage().unwrap() > 0, "segments freed");
    recycled_spares(dir)
}

fn assert_zeroed_behind_their_headers(recycled: &[Vec<u8>]) {
    assert!(!recycled.is_empty(), "freed segments became spares");
    for bytes in recycled {
        let records = &bytes[format::HEADER_PAGE_BYTES as usize..];
        assert!(records.iter().all(|&byte| byte == 0), "old records zeroed");
    }
}

/// Spare files that were segments (their old header page is still there; a freshly prepared
/// spare is all zeros), read whole.
fn recycled_spares(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(dir.join(layout::SEGMENT_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("spare"))
        .map(|path| std::fs::read(path).unwrap())
        .filter(|bytes| {
            bytes[..format::HEADER_PAGE_BYTES as usize]
                .iter()
                .any(|&byte| byte != 0)
        })
        .collect()
}

/// Fill a few segments, close and reopen the log if `reopen`, pass them with a cursor and
/// collect them; returns the recycled spares, the (reopened) log and the next seq.
async fn recycle_after(dir: &Path, reopen: bool) -> (Vec<Vec<u8>>, Wal, u64) {
    let wal = Wal::open(small_options(dir)).unwrap();
    for index in 0..40u64 {
        append(&wal, &payload_for(index, 8_000)).await;
    }
    let wal = if reopen {
        wal.close().await.unwrap();
        drop(wal);
        Wal::open(small_options(dir)).unwrap()
    } else {
        wal
    };
    let next = wal.next_seq();
    (pass_and_collect(&wal, dir, next), wal, next)
}

#[tokio::test]
async fn a_recycled_segment_is_zeroed_behind_its_header_only_when_it_may_be_uncached() {
    // Written by this process and never dropped from the page cache: reused as it is.
    let dir = tempfile::tempdir().unwrap();
    let (recycled, _wal, _) = recycle_after(dir.path(), false).await;
    assert!(!recycled.is_empty(), "a freed segment became a spare");
    for bytes in &recycled {
        let records = &bytes[format::HEADER_PAGE_BYTES as usize..];
        assert!(
            records.iter().any(|&byte| byte != 0),
            "cached: not rewritten"
        );
    }

    // Written before a restart, so maybe not cached: zeroed.
    let dir = tempfile::tempdir().unwrap();
    let (recycled, wal, next) = recycle_after(dir.path(), true).await;
    assert_zeroed_behind_their_headers(&recycled);
    for index in 40..80u64 {
        append(&wal, &payload_for(index, 8_000)).await;
    }
    assert_eq!(
        read_all(&wal, next).len(),
        40,
        "appends into recycled segments read back"
    );
}

/// [`OsIo`] that, when a recycled segment is about to be zeroed, first has the sync thread's
/// spare preparation fill the spare list: the window between `free_segment`'s look at the
/// spare count and `recycle`'s push.
#[derive(Debug, Default)]
struct PreparesSparesWhileRecycling {
    core: std::sync::OnceLock<std::sync::Weak<core::Core>>,
    hooked: std::sync::atomic::AtomicBool,
}

impl WalIo for PreparesSparesWhileRecycling {
    fn allocate(&self, path: &Path, len: u64) -> std::io::Result<std::fs::File> {
        OsIo.allocate(path, len)
    }
    fn extend(&self, file: &std::fs::File, path: &Path, len: u64) -> std::io::Result<()> {
        OsIo.extend(file, path, len)
    }
    fn sync_data(&self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
        OsIo.sync_data(file, path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        OsIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        OsIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        OsIo.remove_file(path)
    }
    fn write_at(
        &self,
        file: &std::fs::File,
        path: &Path,
        buf: &[u8],
        offset: u64,
    ) -> std::io::Result<()> {
        OsIo.write_at(file, path, buf, offset)
    }
    fn available_bytes(&self, dir: &Path) -> std::io::Result<u64> {
        OsIo.available_bytes(dir)
    }
    fn zero_range(
        &self,
        file: &std::fs::File,
        path: &Path,
        from: u64,
        to: u64,
    ) -> std::io::Result<()> {
        if let Some(core) = self.core.get().and_then(std::sync::Weak::upgrade) {
            for _ in 0..core::MAX_SPARES {
                sync::prepare_one_spare(&core);
            }
            self.hooked.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        OsIo.zero_range(file, path, from, to)
    }
}

#[tokio::test]
async fn spares_prepared_while_a_segment_is_recycled_never_exceed_the_spare_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    for index in 0..40u64 {
        append(&wal, &payload_for(index, 8_000)).await;
    }
    wal.close().await.unwrap();
    drop(wal);
    // Exactly one spare at the restart: below the limit, so GC recycles, and not none, so
    // the sync thread has no spare of its own to prepare meanwhile.
    let segments = dir.path().join(layout::SEGMENT_DIR);
    for entry in std::fs::read_dir(&segments).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("spare") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let spare = std::fs::File::create(segments.join(segment::spare_file_name(0))).unwrap();
    spare.set_len(SMALL_SEGMENT).unwrap();
    // Reopened, its segments may be uncached, so recycling one zeroes it (the hook's moment).
    let io = Arc::new(PreparesSparesWhileRecycling::default());
    let wal = Wal::open_with_io(small_options(dir.path()), io.clone()).unwrap();
    assert_eq!(wal.inner.core.writer.lock().spares.len(), 1);
    let _ = io.core.set(Arc::downgrade(&wal.inner.core));
    pass_and_collect(&wal, dir.path(), wal.next_seq());

    assert!(
        io.hooked.load(std::sync::atomic::Ordering::SeqCst),
        "a spare was prepared while a segment was being recycled"
    );
    assert_eq!(wal.inner.core.writer.lock().spares.len(), core::MAX_SPARES);
    assert_eq!(
        spare_file_count(&segments),
        core::MAX_SPARES,
        "no spare file beyond the limit"
    );
}

fn spare_file_count(segments: &Path) -> usize {
    std::fs::read_dir(segments)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().contains("spare")
        })
        .count()
}

#[tokio::test]
async fn spares_beyond_the_limit_left_by_an_earlier_run_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    append(&wal, &payload_for(1, 1_000)).await;
    wal.close().await.unwrap();
    drop(wal);
    let segments = dir.path().join(layout::SEGMENT_DIR);
    for number in 100..100 + 2 * core::MAX_SPARES as u64 {
        let spare = std::fs::File::create(segments.join(segment::spare_file_name(number)));
        spare.unwrap().set_len(SMALL_SEGMENT).unwrap();
    }

    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.inner.core.writer.lock().spares.len(), core::MAX_SPARES);
    assert_eq!(spare_file_count(&segments), core::MAX_SPARES);
    assert_eq!(read_all(&wal, 1).len(), 1, "the log itself is untouched");
}
