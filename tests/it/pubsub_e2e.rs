//! End to end: the real `flagstream` binary with `--dest pubsub://…` against Google's Pub/Sub
//! emulator. Events go in as LaunchDarkly `/bulk` bodies and are pulled back from a
//! subscription with the official client.

use crate::support::cloud;

use std::time::{Duration, Instant};

use cloud::pubsub::{create_topic, read_back, topic_path};
use cloud::{assert_exactly_once, ld_bulk, test_seq_of, Flagstream, Gate, StandIn};

fn expected(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i}")).collect()
}

/// Normal path, then an outage: the emulator is stopped, events keep arriving (flagstream
/// accepts them into its WAL), publishes fail and are retried; the emulator comes back and
/// every event accepted during the outage is pulled exactly once, with its attributes.
///
/// The emulator is in-memory: a [`Gate`] (TCP pass-through) stays closed from the restart
/// until topic and subscription exist again, so flagstream sees one continuous outage of a
/// server that keeps its data (see `kinesis_e2e.rs` for the same reasoning).
#[tokio::test]
async fn bulk_events_reach_pubsub_exactly_once_across_a_stand_in_restart() {
    let mut emulator = StandIn::pubsub_emulator();
    let gate = Gate::new(emulator.port()).await;
    let subscription = create_topic(&emulator, "flag-events", false).await;
    let dest = format!(
        "pubsub://{}?name=pubsub&endpoint={}&timeout=5s",
        topic_path("flag-events"),
        gate.endpoint()
    );
    let flagstream = Flagstream::start(&dest, &[]).await;

    for body in 0..5 {
        flagstream
            .post_bulk(&ld_bulk(&format!("before{body}"), 100, 20))
            .await;
    }
    let messages = read_back(&emulator, &subscription, 500).await;
    let seen: Vec<String> = messages.iter().map(|m| test_seq_of(&m.data)).collect();
    assert_exactly_once(
        &seen,
        (0..5).flat_map(|b| expected(&format!("before{b}"), 100)),
    );
    for message in &messages {
        for attribute in [
            "event_id",
            "kind",
            "flag_key",
            "environment",
            "schema",
            "batch_id",
        ] {
            assert!(
                message.attributes.contains_key(attribute),
                "{attribute} missing: {:?}",
                message.attributes
            );
        }
        assert_eq!(message.attributes["kind"], "feature");
        assert_eq!(message.attributes["flag_key"], "new-checkout");
    }

    emulator.stop();
    for body in 0..5 {
        flagstream
            .post_bulk(&ld_bulk(&format!("outage{body}"), 100, 20))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = flagstream.destinations().await.to_string();
        if status.contains("backing_off") || status.contains("could not reach") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry state while the emulator is down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    gate.close();
    emulator.start();
    let subscription = create_topic(&emulator, "flag-events", false).await;
    gate.open();

    let seen: Vec<String> = read_back(&emulator, &subscription, 500)
        .await
        .iter()
        .map(|m| test_seq_of(&m.data))
        .collect();
    assert_exactly_once(
        &seen,
        (0..5).flat_map(|b| expected(&format!("outage{b}"), 100)),
    );
    assert!(
        flagstream.dead_letters("pubsub").is_empty(),
        "nothing may be dead-lettered"
    );
}

/// A missing topic is a permanent error: dead letters name the topic, and
/// `flagstream test-destination` fails with it.
#[tokio::test]
async fn missing_topic_is_reported_everywhere() {
    let emulator = StandIn::pubsub_emulator();
    let dest = format!(
        "pubsub://{}?name=pubsub&endpoint={}",
        topic_path("no-such-topic"),
        emulator.endpoint()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "pubsub", "--dest", &dest])
        .env("FLAGSTREAM_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "test-destination succeeded: {stdout}"
    );
    assert!(
        stdout.contains("no-such-topic") && stdout.contains("not found"),
        "{stdout}"
    );

    let flagstream = Flagstream::start(&dest, &[]).await;
    flagstream.post_bulk(&ld_bulk("lost", 4, 2)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while flagstream.dead_letters("pubsub").len() < 4 {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered; log:\n{}",
            flagstream.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for entry in flagstream.dead_letters("pubsub") {
        let reason = entry["reason"].as_str().unwrap();
        assert!(
            reason.contains("no-such-topic") && reason.contains("not found"),
            "{reason}"
        );
    }
}
