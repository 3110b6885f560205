//! The payload-id dedupe survives a crash: an SDK retry (same `X-LaunchDarkly-Payload-ID`)
//! that arrives after `kill -9` and a restart is answered 202 without a second record, because
//! the restarted server rebuilt its cache from the WAL; a new id is stored as usual. With the
//! rebuild off (`--dedupe-recovery-window 0s`) the same retry is stored twice — what the test
//! guards against.

use crate::support::serve::*;

use std::path::Path;

async fn start(data: &Path, extra: &[&str]) -> Flagstream {
    Flagstream::builder(data)
        .args(["--environment", &production_env()])
        .args(extra.iter().copied())
        .start()
        .await
}

async fn post(
    client: &reqwest::Client,
    server: &Flagstream,
    payload_id: &str,
    body: String,
) -> u16 {
    client
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .header("content-type", "application/json")
        .header("x-launchdarkly-payload-id", payload_id)
        .body(body)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

/// Records appended and payloads answered from the cache since this process started.
async fn appended_and_duplicates(server: &Flagstream) -> (f64, f64) {
    (
        metric(server.admin, "flagstream_wal_append_records_total", &[]).await,
        metric(
            server.admin,
            "flagstream_ingest_duplicate_payloads_total",
            &[],
        )
        .await,
    )
}

#[tokio::test]
async fn a_retry_after_kill_9_and_restart_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let retried = numbered_bulk(0, 3);

    let mut server = start(&data, &[]).await;
    assert_eq!(
        post(&client, &server, "payload-1", retried.clone()).await,
        202
    );
    assert_eq!(appended_and_duplicates(&server).await, (1.0, 0.0));
    server.kill9();

    let mut server = start(&data, &[]).await;
    let recovered = metric(server.admin, "flagstream_ingest_dedupe_recovered_ids", &[]).await;
    assert_eq!(recovered, 1.0);
    assert_eq!(
        post(&client, &server, "payload-1", retried.clone()).await,
        202
    );
    assert_eq!(
        post(&client, &server, "payload-2", numbered_bulk(3, 2)).await,
        202
    );
    assert_eq!(
        appended_and_duplicates(&server).await,
        (1.0, 1.0),
        "the retry is answered from the rebuilt cache; only payload-2 is appended"
    );
    server.kill9();

    // Without the rebuild the cache starts empty and the same retry is stored again.
    let server = start(&data, &["--dedupe-recovery-window", "0s"]).await;
    assert_eq!(post(&client, &server, "payload-1", retried).await, 202);
    assert_eq!(appended_and_duplicates(&server).await, (1.0, 0.0));
}
