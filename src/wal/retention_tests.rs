//! Tests of `--wal-retention` with garbage collection, eviction under the budget, rewinding
//! cursors into retained segments and finding seqs by time, including a randomised model.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::tests::{small_options, SMALL_SEGMENT};
use super::*;

const PAYLOAD: usize = 6_000;

async fn append_at(wal: &Wal, received_at_ms: u64) -> Result<u64, WalError> {
    let payload = vec![(received_at_ms % 251) as u8; PAYLOAD];
    wal.append(AppendRequest {
        tag: 1,
        event_count: 1,
        received_at_ms,
        parts: &[&payload],
    })
    .await
    .map(|receipt| receipt.seq)
}

fn at(seq: u64) -> CursorState {
    CursorState {
        acked: Position { seq, event: 0 },
        ..Default::default()
    }
}

fn retaining(dir: &std::path::Path, retention: Retention, segments: u64) -> WalOptions {
    WalOptions {
        max_bytes: SMALL_SEGMENT * segments,
        retention,
        ..small_options(dir)
    }
}

const KEEP_AN_HOUR: Retention = Retention {
    max_age: Some(Duration::from_secs(3600)),
    max_bytes: None,
};

#[tokio::test]
async fn passed_segments_are_kept_by_size_and_a_rewound_cursor_reads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age: None,
        max_bytes: Some(3 * SMALL_SEGMENT),
    };
    let wal = Wal::open(retaining(dir.path(), retention, 64)).unwrap();
    let mut cursor = wal.open_cursor("dest").unwrap();
    for time in 0..100 {
        append_at(&wal, time).await.unwrap();
    }
    cursor.persist(at(wal.next_seq())).unwrap();
    wal.collect_garbage().unwrap();
    let stats = wal.stats();
    // Three passed segments kept besides the newest (which is never freed).
    assert_eq!(stats.segments, 4, "{stats:?}");
    let first = wal.first_seq();
    assert!(first > 1, "older segments were freed");
    cursor.rewind(at(first)).unwrap();
    let mut reader = wal.reader(cursor.state().acked.seq);
    let mut count = 0;
    while let Some(record) = reader.try_next().unwrap() {
        assert_eq!(record.seq, first + count);
        count += 1;
    }
    assert_eq!(first + count, wal.next_seq());
    // Needed again, they survive GC whatever retention says.
    let mut off = retaining(dir.path(), Retention::default(), 64);
    off.dir = dir.path().to_path_buf();
    drop((reader, cursor));
    drop(wal);
    let wal = Wal::open(off).unwrap();
    wal.collect_garbage().unwrap();
    assert_eq!(wal.first_seq(), first);
    let mut cursor = wal.open_cursor("dest").unwrap();
    let trimmed = cursor.rewind(at(first - 1)).unwrap_err();
    assert!(
        matches!(trimmed, WalError::Trimmed { seq, first_seq } if seq == first - 1 && first_seq == first),
        "{trimmed:?}"
    );
}

#[tokio::test]
async fn age_retention_uses_the_seal_time_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(retaining(dir.path(), KEEP_AN_HOUR, 64)).unwrap();
    let mut cursor = wal.open_cursor("dest").unwrap();
    for time in 0..60 {
        append_at(&wal, time).await.unwrap();
    }
    cursor.persist(at(wal.next_seq())).unwrap();
    wal.collect_garbage().unwrap();
    assert_eq!(wal.first_seq(), 1, "young segments are retained");
    drop(cursor);
    drop(wal);
    // Reopened with a zero-ish age limit: every passed segment has expired.
    let mut options = retaining(dir.path(), KEEP_AN_HOUR, 64);
    options.retention.max_age = Some(Duration::from_millis(1));
    // Expiry is by age: wait on the clock until every segment sealed above is older than
    // the 1 ms limit (seal times are whole milliseconds, hence the margin).
    let sealed_by = std::time::SystemTime::now();
    while sealed_by.elapsed().unwrap_or_default() <= Duration::from_millis(3) {
        std::thread::yield_now();
    }
    let wal = Wal::open(options).unwrap();
    wal.collect_garbage().unwrap();
    assert_eq!(wal.stats().segments, 1, "{:?}", wal.stats());
}

#[tokio::test]
async fn retention_yields_to_the_budget_but_never_evicts_what_a_cursor_needs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(retaining(dir.path(), KEEP_AN_HOUR, 6)).unwrap();
    let mut fast = wal.open_cursor("fast").unwrap();
    let slow = wal.open_cursor("slow").unwrap();
    // The slow cursor pins seq 1: the budget fills up and appends fail; nothing is evicted.
    let mut accepted = 0;
    let full = loop {
        match append_at(&wal, accepted).await {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
        fast.persist(at(wal.next_seq())).unwrap();
        wal.collect_garbage().unwrap();
    };
    assert!(matches!(full, WalError::Full { .. }), "{full:?}");
    assert_eq!(wal.first_seq(), 1);
    // Once the slow cursor is past, retention keeps what fits and the log keeps accepting,
    // evicting the oldest retained segments for new ones.
    drop(slow);
    wal.release_cursor("slow").unwrap();
    for time in accepted..accepted + 200 {
        append_at(&wal, time).await.unwrap();
        fast.persist(at(wal.next_seq())).unwrap();
        wal.collect_garbage().unwrap();
        assert!(wal.stats().bytes_on_disk <= 6 * SMALL_SEGMENT);
    }
    assert!(wal.first_seq() > 1);
    assert!(
        wal.stats().segments > 2,
        "retained what fits: {:?}",
        wal.stats()
    );
}

#[tokio::test]
async fn an_append_evicts_a_retained_segment_when_the_budget_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(retaining(dir.path(), KEEP_AN_HOUR, 4)).unwrap();
    let mut cursor = wal.open_cursor("dest").unwrap();
    // The cursor persists without GC running: the passed segments are still listed, so the
    // append path itself must make room.
    for time in 0..200 {
        append_at(&wal, time)
            .await
            .expect("retained segments make room");
        cursor.persist(at(wal.next_seq())).unwrap();
    }
    assert!(wal.first_seq() > 1);
    assert!(wal.stats().bytes_on_disk <= 4 * SMALL_SEGMENT);
}

#[tokio::test]
async fn seqs_are_found_by_receive_time_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(small_options(dir.path())).unwrap();
    assert_eq!(wal.seq_at_time(5), 1);
    assert_eq!(wal.first_record_time(), None);
    // Times 10, 20, 20, 30, ... (a repeated time and many segments).
    let mut times = Vec::new();
    for index in 0..120u64 {
        let time = 10 * (index - index / 7);
        append_at(&wal, time).await.unwrap();
        times.push(time);
    }
    assert!(wal.stats().segments > 5);
    assert_eq!(wal.first_record_time(), Some(times[0]));
    for probe in [0, 5, 10, 11, 20, 95, 100, 500, 990, 1_000, 5_000] {
        let expected = times
            .iter()
            .position(|time| *time >= probe)
            .map_or(wal.next_seq(), |index| index as u64 + 1);
        assert_eq!(wal.seq_at_time(probe), expected, "time {probe}");
    }
}

/// Random appends, cursor moves (forward and back) and GC passes under retention by size
/// and a small budget: the log never exceeds the budget, never loses a record some cursor
/// needs, keeps a contiguous run of seqs, and keeps passed segments within the retention.
#[tokio::test]
async fn retention_behaves_like_its_model() {
    for seed in 0..4u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_age: None,
            max_bytes: Some(SMALL_SEGMENT * rng.random_range(1..6)),
        };
        let wal = Wal::open(retaining(dir.path(), retention, 8)).unwrap();
        let mut cursors = [wal.open_cursor("a").unwrap(), wal.open_cursor("b").unwrap()];
        let mut time = 0;
        for _ in 0..400 {
            match rng.random_range(0..10) {
                0..=5 => {
                    time += 1;
                    if append_at(&wal, time).await.is_err() {
                        assert!(wal.stats().bytes_on_disk + SMALL_SEGMENT > 8 * SMALL_SEGMENT);
                    }
                }
                6 | 7 => {
                    let cursor = &mut cursors[rng.random_range(0..2)];
                    let to = rng.random_range(cursor.state().acked.seq..=wal.next_seq());
                    cursor.persist(at(to)).unwrap();
                }
                8 => {
                    let cursor = &mut cursors[rng.random_range(0..2)];
                    let to = rng.random_range(wal.first_seq()..=cursor.state().acked.seq);
                    cursor.rewind(at(to)).unwrap();
                }
                _ => {
                    wal.collect_garbage().unwrap();
                    let min = cursors.iter().map(|c| c.state().acked.seq).min().unwrap();
                    let segments = wal.inner.core.segments.read();
                    let retained: u64 = segments
                        .iter()
                        .take(segments.len().saturating_sub(1))
                        .take_while(|segment| segment.is_sealed() && segment.end_seq() <= min)
                        .map(|segment| segment.map.len())
                        .sum();
                    assert!(
                        retained <= retention.max_bytes.unwrap(),
                        "seed {seed}: {retained} bytes retained"
                    );
                }
            }
            let stats = wal.stats();
            assert!(
                stats.bytes_on_disk <= 8 * SMALL_SEGMENT,
                "seed {seed}: {stats:?}"
            );
            let min = cursors.iter().map(|c| c.state().acked.seq).min().unwrap();
            assert!(
                wal.first_seq() <= min,
                "seed {seed}: freed what a cursor needs"
            );
            let mut reader = wal.reader(min);
            let mut expected = min.max(wal.first_seq());
            while let Some(record) = reader.try_next().unwrap() {
                assert_eq!(record.seq, expected, "seed {seed}: a gap");
                expected += 1;
            }
            assert_eq!(expected, wal.next_seq());
        }
    }
}
