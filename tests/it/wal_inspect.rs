//! `wal inspect` / `wal verify`: read-only reports for operators.

use crate::support::wal as wal_support;

use flagstream::wal::format::{record_footprint, HEADER_PAGE_BYTES, RECORD_HEADER_BYTES};
use flagstream::wal::inspect::{inspect, verify};
use flagstream::wal::{CursorState, Position, Wal, WalError};
use wal_support::*;

fn directory_snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in [SEGMENT_DIR, "cursors"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let entry = entry.unwrap();
            files.push((
                format!("{sub}/{}", entry.file_name().to_string_lossy()),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn inspect_summarises_segments_records_and_cursor_lag() {
    let dir = fast_tempdir();
    let wal = Wal::open(options(dir.path())).unwrap();
    for key in 0..40 {
        append(&wal, key, 5_000).await.unwrap();
    }
    let mut cursor = wal.open_cursor("kinesis").unwrap();
    cursor
        .persist(CursorState {
            acked: Position { seq: 31, event: 2 },
            ..Default::default()
        })
        .unwrap();
    wal.open_cursor("s3").unwrap();
    drop(cursor);
    drop(wal);

    let report = inspect(dir.path()).unwrap();
    assert_eq!(
        (report.first_seq, report.next_seq, report.records),
        (1, 41, 40)
    );
    assert!(report.segments.len() >= 3);
    assert!(report
        .segments
        .iter()
        .rev()
        .skip(1)
        .all(|segment| segment.sealed));
    assert!(!report.segments.last().unwrap().sealed);
    let total: u64 = report.segments.iter().map(|segment| segment.records).sum();
    assert_eq!(total, 40);
    let kinesis = report
        .cursors
        .iter()
        .find(|cursor| cursor.name == "kinesis")
        .unwrap();
    assert_eq!(
        (kinesis.acked_seq, kinesis.acked_event, kinesis.lag_records),
        (31, 2, 10)
    );
    assert_eq!(kinesis.lag_bytes, 10 * record_footprint(5_000));
    let s3 = report
        .cursors
        .iter()
        .find(|cursor| cursor.name == "s3")
        .unwrap();
    assert_eq!((s3.acked_seq, s3.lag_records), (1, 40));
    assert_eq!(s3.lag_bytes, 40 * record_footprint(5_000));

    let text = report.to_string();
    assert!(text.contains("seqs 1..41 (40 records stored)"), "{text}");
    assert!(
        text.contains("kinesis: acked seq 31 (event 2), lag 10 records"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["next_seq"], 41);
    assert_eq!(json["cursors"][0]["name"], "kinesis");
}

#[tokio::test]
async fn verify_is_clean_on_a_healthy_log_and_names_every_problem_otherwise() {
    let dir = fast_tempdir();
    {
        let wal = Wal::open(options(dir.path())).unwrap();
        for key in 0..40 {
            append(&wal, key, 5_000).await.unwrap();
        }
        wal.open_cursor("dest").unwrap();
    }
    let before = directory_snapshot(dir.path());
    let report = verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.records_checked, report.cursors_checked), (40, 1));
    assert!(report.to_string().contains("clean"));
    assert_eq!(
        directory_snapshot(dir.path()),
        before,
        "verify must not modify anything"
    );

    // Damage record 3 (in the sealed first segment) and the cursor file.
    let segment = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&segment).unwrap();
    let third = HEADER_PAGE_BYTES + 2 * record_footprint(5_000);
    bytes[(third + RECORD_HEADER_BYTES + 100) as usize] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    std::fs::write(dir.path().join("cursors/dest.cur"), vec![1u8; 4096]).unwrap();

    let report = verify(dir.path()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems.len(), 2, "{report}");
    assert_eq!(report.problems[0].seq, Some(3));
    assert!(report.problems[0].message.contains("checksum"), "{report}");
    assert_eq!(report.records_checked, 39);
    assert!(report.problems[1].file.contains("dest.cur"));
    let text = report.to_string();
    assert!(
        text.contains("2 problem(s)") && text.contains("seq 3"),
        "{text}"
    );
    assert!(serde_json::to_string(&report)
        .unwrap()
        .contains("\"problems\""));
}

#[test]
fn a_directory_that_is_not_a_wal_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    match inspect(dir.path()) {
        Err(WalError::InvalidArgument(message)) => assert!(message.contains("wal/"), "{message}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(verify(dir.path()).is_err());
}
