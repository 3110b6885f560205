//! End to end: the real `flagstream` binary with `--dest kinesis://…` against moto. Events go
//! in as LaunchDarkly `/bulk` bodies and are read back from every shard with the real
//! `aws-sdk-kinesis` client.

use crate::support::cloud;

use std::time::{Duration, Instant};

use cloud::kinesis::{client, create_stream, read_all, use_test_credentials};
use cloud::{assert_exactly_once, ld_bulk, test_seq_of, Flagstream, Gate, StandIn};

const CREDENTIALS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

fn expected(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i}")).collect()
}

/// Read the stream until `count` events with a tag starting with `prefix` arrived (then a
/// little longer, so duplicates would show), returning every testSeq read.
async fn read_until(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    prefix: &str,
    count: usize,
    flagstream: &Flagstream,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: Vec<String> = read_all(client, stream)
            .await
            .values()
            .flatten()
            .map(|data| test_seq_of(data))
            .collect();
        let matching = seen.iter().filter(|s| s.starts_with(prefix)).count();
        if matching >= count {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return read_all(client, stream)
                .await
                .values()
                .flatten()
                .map(|data| test_seq_of(data))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "only {matching}/{count} `{prefix}` events reached Kinesis; destinations: {}\nlog:\n{}",
            flagstream.destinations().await,
            flagstream.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Normal path, then an outage: moto is stopped, events keep arriving (flagstream accepts
/// them into its WAL), sends fail and are retried; moto comes back and every event accepted
/// during the outage is read back exactly once.
///
/// moto keeps everything in memory, so what it held before the stop is gone, and a restarted
/// moto needs its stream re-created: a [`Gate`] (TCP pass-through) stays closed from the
/// restart until the stream exists, so flagstream sees one continuous outage of a server that
/// keeps its data. Events are posted during the outage rather than just before it, because
/// events delivered to the old moto would vanish with it and could not be counted.
#[tokio::test]
async fn bulk_events_reach_kinesis_exactly_once_across_a_stand_in_restart() {
    use_test_credentials();
    let mut moto = StandIn::moto();
    let gate = Gate::new(moto.port()).await;
    let kinesis = client(&moto).await;
    create_stream(&kinesis, "flag-events", 2).await;
    let dest = format!(
        "kinesis://flag-events?name=kinesis&region=us-east-1&endpoint={}",
        gate.endpoint()
    );
    let flagstream = Flagstream::start(&dest, CREDENTIALS).await;

    for body in 0..5 {
        flagstream
            .post_bulk(&ld_bulk(&format!("before{body}"), 100, 20))
            .await;
    }
    let seen = read_until(&kinesis, "flag-events", "before", 500, &flagstream).await;
    assert_exactly_once(
        &seen,
        (0..5).flat_map(|b| expected(&format!("before{b}"), 100)),
    );

    moto.stop();
    for body in 0..5 {
        flagstream
            .post_bulk(&ld_bulk(&format!("outage{body}"), 100, 20))
            .await;
    }
    // Let the engine fail and back off at least once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = flagstream.destinations().await.to_string();
        if status.contains("backing_off") || status.contains("could not reach") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry state while moto is down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    gate.close();
    moto.start();
    create_stream(&kinesis, "flag-events", 2).await;
    gate.open();

    let seen = read_until(&kinesis, "flag-events", "outage", 500, &flagstream).await;
    assert_exactly_once(
        &seen,
        (0..5).flat_map(|b| expected(&format!("outage{b}"), 100)),
    );
    assert!(
        flagstream.dead_letters("kinesis").is_empty(),
        "nothing may be dead-lettered"
    );
}

/// An event over Kinesis' 1 MiB record limit goes to the dead letters with the reason; its
/// neighbours are delivered.
#[tokio::test]
async fn oversized_event_lands_in_dead_letters() {
    use_test_credentials();
    let moto = StandIn::moto();
    let kinesis = client(&moto).await;
    create_stream(&kinesis, "big-events", 1).await;
    let dest = format!(
        "kinesis://big-events?name=kinesis&region=us-east-1&endpoint={}",
        moto.endpoint()
    );
    let flagstream = Flagstream::start(&dest, CREDENTIALS).await;

    let mut body = ld_bulk("big", 3, 3);
    body[1]["padding"] = serde_json::Value::String("x".repeat(1024 * 1024 + 10));
    flagstream.post_bulk(&body).await;

    let seen = read_until(&kinesis, "big-events", "big", 2, &flagstream).await;
    assert_exactly_once(&seen, ["big-0".to_string(), "big-2".to_string()]);
    let dead = flagstream.dead_letters("kinesis");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"]["event"]["testSeq"], "big-1");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("large") || reason.contains("bytes"),
        "{reason}"
    );
}

/// A missing stream is a permanent error: the events go to the dead letters with a reason
/// naming the stream, `/v1/destinations` shows it, and `flagstream test-destination` fails
/// with it.
#[tokio::test]
async fn missing_stream_is_reported_everywhere() {
    use_test_credentials();
    let moto = StandIn::moto();
    let dest = format!(
        "kinesis://no-such-stream?name=kinesis&region=us-east-1&endpoint={}",
        moto.endpoint()
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "kinesis", "--dest", &dest])
        .envs(CREDENTIALS.iter().copied())
        .env("FLAGSTREAM_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "test-destination succeeded: {stdout}"
    );
    assert!(
        stdout.contains("no-such-stream") && stdout.contains("not found"),
        "{stdout}"
    );

    let flagstream = Flagstream::start(&dest, CREDENTIALS).await;
    flagstream.post_bulk(&ld_bulk("lost", 4, 2)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while flagstream.dead_letters("kinesis").len() < 4 {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered; log:\n{}",
            flagstream.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead = flagstream.dead_letters("kinesis");
    assert_eq!(dead.len(), 4);
    for entry in &dead {
        let reason = entry["reason"].as_str().unwrap();
        assert!(
            reason.contains("no-such-stream") && reason.contains("not found"),
            "{reason}"
        );
    }
    let status = flagstream.destinations().await.to_string();
    assert!(status.contains("no-such-stream"), "{status}");
}

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
        "kinesis://flag-events?name=kinesis&region=us-east-1&endpoint={}",
        kinesalite.endpoint()
    );
    let flagstream = Flagstream::start(&dest, CREDENTIALS).await;

    const BODIES: usize = 30;
    const EVENTS: usize = 100;
    for body in 0..BODIES {
        flagstream
            .post_bulk(&ld_bulk(&format!("b{body:02}"), EVENTS, 25))
            .await;
        if body == 10 {
            kinesalite.stop();
        }
        if body == 20 {
            kinesalite.start();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let total = BODIES * EVENTS;
    let seen = read_until(&kinesis, "flag-events", "b", total, &flagstream).await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for id in &seen {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let expected: Vec<String> = (0..BODIES)
        .flat_map(|b| expected(&format!("b{b:02}"), EVENTS))
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
    let status = flagstream.destination("kinesis").await;
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
        flagstream.dead_letters("kinesis").is_empty(),
        "nothing may be dead-lettered"
    );
}
