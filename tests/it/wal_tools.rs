//! `flagstream wal inspect|verify` through the binary, as an operator types them: given the
//! data dir or the WAL dir, they find the log; a directory without a log, or a log without a
//! segment, never reads as "clean"; damage in the active segment is reported with what
//! recovery will do about it.

use std::path::Path;
use std::process::{Command, Output};

use flagstream::wal::format::HEADER_PAGE_BYTES;
use flagstream::wal::layout::SEGMENT_DIR;
use flagstream::wal::{AppendRequest, Wal, WalOptions};

fn wal_options(root: &Path) -> WalOptions {
    let mut options = WalOptions::new(root);
    options.segment_bytes = 64 * 1024;
    options.max_bytes = 64 * 1024 * 16;
    options.min_free_bytes = 0;
    options
}

/// A data dir whose WAL (`<data>/wal`) holds `records` records of 100 bytes.
fn data_dir_with(records: u64) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let wal = Wal::open(wal_options(&data.path().join("wal"))).unwrap();
        for seq in 1..=records {
            let payload = [seq as u8; 100];
            let request = AppendRequest {
                tag: 0,
                event_count: 1,
                received_at_ms: seq,
                parts: &[&payload],
            };
            wal.append(request).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    data
}

fn flagstream(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn verify_and_inspect_accept_the_data_dir_or_the_wal_dir() {
    let data = data_dir_with(20);
    for dir in [data.path().to_path_buf(), data.path().join("wal")] {
        let verify = flagstream(&["wal", "verify"], &dir);
        let said = text(&verify);
        assert!(verify.status.success(), "{}: {said}", dir.display());
        assert!(
            said.contains("20 record(s)") && said.contains("clean"),
            "{said}"
        );
        let inspect = flagstream(&["wal", "inspect", "--json"], &dir);
        assert!(inspect.status.success(), "{}", text(&inspect));
        let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(report["records"], 20);
        assert_eq!(report["damaged_records"], 0);
    }
}

#[test]
fn verify_fails_clearly_when_there_is_no_log_or_nothing_to_check() {
    let empty = tempfile::tempdir().unwrap();
    let verify = flagstream(&["wal", "verify"], empty.path());
    assert!(!verify.status.success());
    assert!(
        text(&verify).contains("no write-ahead log"),
        "{}",
        text(&verify)
    );

    // A log that was opened but never stored a record: nothing was verified.
    let data = data_dir_with(0);
    let verify = flagstream(&["wal", "verify"], data.path());
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(
        text(&verify).contains("NOTHING VERIFIED"),
        "{}",
        text(&verify)
    );
    assert!(!text(&verify).contains("clean"), "{}", text(&verify));
}

#[test]
fn damage_in_the_active_segment_is_reported_with_what_recovery_keeps() {
    let data = data_dir_with(20);
    let segment = data
        .path()
        .join("wal")
        .join(SEGMENT_DIR)
        .join("00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[(HEADER_PAGE_BYTES + 32 + 10) as usize] ^= 0x01; // payload of seq 1
    std::fs::write(&segment, &bytes).unwrap();

    let verify = flagstream(&["wal", "verify"], data.path());
    let said = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{said}");
    assert!(
        said.contains("records 1..=1 are unreadable") && said.contains("keeps them"),
        "{said}"
    );
    let inspect = flagstream(&["wal", "inspect", "--json"], data.path());
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["damaged_records"], 1, "{report}");
    assert_eq!(report["next_seq"], 21, "{report}");
}
