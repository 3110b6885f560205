//! A full WAL through the binary (issue 14): with the destination paused, ingest fills the
//! disk budget and then answers `503 wal_full` with `Retry-After`; nothing acknowledged is
//! harmed (`wal verify` is clean afterwards), ingest resumes by itself once the destination
//! drains, and every acknowledged event is exported.
//!
//! The budget flag stands in for a small filesystem: the same `WalError::Full` path is taken
//! for the budget and for the free-space floor (`tests/it/wal_faults.rs` covers ENOSPC).

use std::process::Command;
use std::time::Duration;

use crate::support::eventually;
use crate::support::serve::*;

const EVENTS_PER_BODY: u64 = 50;

/// Post body `number`; the status, the error code of a refusal and its Retry-After.
async fn post(
    client: &reqwest::Client,
    server: &Flagstream,
    number: u64,
) -> (u16, String, Option<String>) {
    let response = client
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .body(numbered_bulk(number * EVENTS_PER_BODY, EVENTS_PER_BODY))
        .send()
        .await
        .expect("ingest answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let code = body["error"].as_str().unwrap_or_default().to_string();
    (status, code, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_refuses_with_503_keeps_everything_and_resumes_when_drained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let export = dir.path().join("export");
    let mut server = Flagstream::builder(&data)
        .args(["--environment", &production_env()])
        .args(["--wal-segment-bytes", "1MiB", "--wal-max-bytes", "4MiB"])
        .args(["--max-body-bytes", "256KiB"])
        .args([
            "--dest",
            &format!("file://{}?rotate=50ms&name=archive", export.display()),
        ])
        .start()
        .await;
    let client = reqwest::Client::new();
    let paused = http_request(server.admin, "POST", "/v1/destinations/archive/pause").await;
    assert_eq!(paused.map(|(status, _)| status), Some(200));

    let mut acked = Vec::new();
    let refusal = loop {
        let number = acked.len() as u64;
        assert!(number < 2_000, "the 4 MiB budget never filled");
        match post(&client, &server, number).await {
            (202, _, _) => acked.push(number),
            refused => break refused,
        }
    };
    assert_eq!(refusal.0, 503, "{refusal:?}");
    assert_eq!(refusal.1, "wal_full", "{refusal:?}");
    assert!(refusal.2.is_some(), "503 without Retry-After");

    let resumed = http_request(server.admin, "POST", "/v1/destinations/archive/resume").await;
    assert_eq!(resumed.map(|(status, _)| status), Some(200));
    let next = acked.len() as u64;
    eventually("ingest accepting again", Duration::from_secs(60), || {
        let (client, server) = (&client, &server);
        async move {
            match post(client, server, next).await {
                (202, _, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    acked.push(next);

    let expected: Vec<u64> = acked
        .iter()
        .flat_map(|body| body * EVENTS_PER_BODY..(body + 1) * EVENTS_PER_BODY)
        .collect();
    let exported = wait_for_export(&export, expected.len(), Duration::from_secs(60)).await;
    let mut seen = markers(&exported);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, expected, "every acknowledged event exported");

    assert!(server.terminate().await.success());
    let verify = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["wal", "verify"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "wal verify after the full WAL: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
