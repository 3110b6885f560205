//! Idle rotation: an object destination writes at least every `rotate`, however little
//! arrives — one event and then silence, or a trickle slower than any size limit — through
//! the real binary and the `file` destination (Parquet, the format with the most work per
//! object). The deadline is `rotate` plus slack for a loaded machine; the lower bound (never
//! before `rotate`) shows it is the rotation, not some other flush, that wrote the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::eventually;
use crate::support::serve::{production_env, Flagstream, SDK_KEY};

const ROTATE: Duration = Duration::from_secs(2);
/// Scheduling slack on a shared, loaded test machine.
const SLACK: Duration = Duration::from_secs(8);

async fn start(dir: &Path) -> (Flagstream, PathBuf) {
    let export = dir.join("export");
    let server = Flagstream::builder(dir.join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!(
                "file://{}?name=idle&format=parquet&schema=warehouse&partitions=dt,hour&rotate={}s",
                export.display(),
                ROTATE.as_secs()
            ),
        ])
        .start()
        .await;
    (server, export)
}

async fn send_one(server: &Flagstream, n: u64) {
    let body = format!(
        r#"[{{"kind":"custom","creationDate":1795910400000,"key":"tick","context":{{"kind":"user","key":"u{n}"}},"data":{{"n":{n}}}}}]"#
    );
    let response = reqwest::Client::new()
        .post(server.url("/bulk"))
        .header("Authorization", SDK_KEY)
        .header("Content-Type", "application/json")
        .header("X-LaunchDarkly-Event-Schema", "4")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Every Parquet file under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

async fn wait_for_files(export: &Path, count: usize, timeout: Duration) -> Vec<PathBuf> {
    eventually("the rotated Parquet file", timeout, || async {
        let files = parquet_files(export);
        if files.len() >= count {
            Ok(files)
        } else {
            Err(format!("{} files", files.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_then_silence_is_written_within_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, export) = start(dir.path()).await;
    let sent = Instant::now();
    send_one(&server, 1).await;
    let files = wait_for_files(&export, 1, ROTATE + SLACK).await;
    let waited = sent.elapsed();
    assert!(
        waited >= ROTATE - Duration::from_millis(100),
        "written after {waited:?}"
    );
    assert_eq!(files.len(), 1);
    assert!(
        files[0].starts_with(export.join("metric_events")),
        "{files:?}"
    );
}

/// Events every 500 ms never fill a batch; the first file still comes `rotate` after the
/// first event (the linger runs from the oldest event, new ones do not extend it), while
/// the trickle goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_does_not_postpone_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (server, export) = start(dir.path()).await;
    let started = Instant::now();
    let trickle = async {
        for n in 0..30 {
            send_one(&server, n).await;
            if !parquet_files(&export).is_empty() {
                return Some(started.elapsed());
            }
            // The pacing of the trickle itself (what is sent when), not a wait for a result.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    };
    let first_file_seen = trickle.await;
    let waited = first_file_seen.expect("a file appeared while events were still arriving");
    assert!(waited < ROTATE + SLACK, "first file after {waited:?}");
    assert!(
        waited >= ROTATE - Duration::from_millis(100),
        "first file after {waited:?}"
    );
}
