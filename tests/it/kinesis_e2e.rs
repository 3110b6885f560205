//! End to end, Kinesis-specific (the behaviour every destination shares is in
//! `conformance`): the real `flagstream` binary with `--dest kinesis://…` against kinesalite
//! killed mid-stream without a gate, read back from every shard with `aws-sdk-kinesis`.

use crate::conformance::{dead_letters, post, serve, status, tagged, wait_acknowledged, DEST};
use crate::support::cloud::kinesis::{client, create_stream, read_ids, use_test_credentials};
use crate::support::cloud::{ld_bulk, test_seq_of, StandIn};

const CREDENTIALS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The acceptance test on a server that keeps its data (kinesalite with LevelDB): SDK
/// bodies keep arriving while the Kinesis server is stopped mid-stream and started again on
/// the same data. Every accepted event is read back; duplicates may only come from batches
/// that were in flight at the stop (at most one batch of ≤ 500 records per in-flight send).
#[tokio::test]
async fn stand_in_killed_mid_stream_and_restarted_loses_nothing() {
    use_test_credentials();
    let store = tempfile::tempdir().unwrap();
    let mut kinesalite = StandIn::kinesalite(Some(store.path()));
    let kinesis = client(&kinesalite).await;
    create_stream(&kinesis, "flag-events", 2).await;
    let dest = format!(
        "kinesis://flag-events?name={DEST}&region=us-east-1&endpoint={}",
        kinesalite.endpoint()
    );
    let dir = tempfile::tempdir().unwrap();
    let flagstream = serve(dir.path(), &dest, CREDENTIALS).await;

    const BODIES: usize = 30;
    const EVENTS: usize = 100;
    for body in 0..BODIES {
        post(&flagstream, &ld_bulk(&format!("b{body:02}"), EVENTS, 25)).await;
        if body == 10 {
            kinesalite.stop();
        }
        if body == 20 {
            kinesalite.start();
        }
        // Pacing, so the stop falls mid-stream with sends in flight (not an assertion).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Everything accepted is acknowledged: what Kinesis will ever hold of it is there now.
    wait_acknowledged(&flagstream).await;
    let seen = read_ids(&kinesis, "flag-events", test_seq_of).await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for id in &seen {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let expected: Vec<String> = (0..BODIES)
        .flat_map(|b| tagged(&format!("b{b:02}"), EVENTS).collect::<Vec<_>>())
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let status = status(&flagstream).await;
    eprintln!("after the outage: {duplicates} duplicates; status {status}");
    // The outage was seen (otherwise this test proves nothing): a send failed while down.
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("flag-events"),
        "no failed send recorded: {status}"
    );
    let concurrency = status["concurrency"].as_u64().unwrap_or(1) as usize;
    assert!(
        duplicates <= concurrency * 500,
        "{duplicates} duplicates: more than the in-flight batches' worth ({status})"
    );
    assert!(
        dead_letters(dir.path()).is_empty(),
        "nothing may be dead-lettered"
    );
}
