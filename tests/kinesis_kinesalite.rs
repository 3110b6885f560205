//! The Kinesis destination against a second Kinesis implementation, kinesalite (realistic
//! sequence numbers, API validation of record counts/sizes/keys), read back with the real
//! `aws-sdk-kinesis` client. kinesalite can keep its data in LevelDB, so here a stop/restart
//! is a real outage of a server that keeps its data — the strongest "nothing lost" check.

mod cloud;

use std::sync::Arc;

use cloud::kinesis::{client, create_stream, read_all, use_test_credentials};
use cloud::{assert_exactly_once, batch, event_id_of, item, StandIn};
use flagstream::dest::kinesis::MAX_RECORD_BYTES;
use flagstream::dest::registry;
use flagstream::dest::{Batch, Destination, DestinationSpec, SendOutcome};
use flagstream::event::Schema;

async fn destination(kinesalite: &StandIn, stream: &str) -> Arc<dyn Destination> {
    use_test_credentials();
    let url = format!(
        "kinesis://{stream}?region=us-east-1&endpoint={}",
        kinesalite.endpoint()
    );
    let spec = DestinationSpec::parse(&url).unwrap();
    registry::build_named(spec, "kinesalite").await.unwrap()
}

fn ids(batches: &[&Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.items.iter().map(|i| i.event_id.clone()))
        .collect()
}

#[tokio::test]
async fn every_event_is_read_back_exactly_once_and_spread_over_shards() {
    let kinesalite = StandIn::kinesalite(None);
    let client = client(&kinesalite).await;
    create_stream(&client, "flag-events", 4).await;
    let destination = destination(&kinesalite, "flag-events").await;
    destination.check().await.unwrap();

    let batch = batch("second-opinion", 1_100, 40);
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);
    let by_shard = read_all(&client, "flag-events").await;
    let used = by_shard
        .values()
        .filter(|records| !records.is_empty())
        .count();
    assert!(used >= 3, "40 contexts on {used} of 4 shards");
    let seen: Vec<String> = by_shard
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ids(&[&batch]));
}

/// The largest record our limits admit (data + partition key = 1 MiB) is accepted by a server
/// that validates Kinesis' size rules; one byte more never leaves flagstream.
#[tokio::test]
async fn record_at_the_size_limit_is_accepted() {
    let kinesalite = StandIn::kinesalite(None);
    let client = client(&kinesalite).await;
    create_stream(&client, "edge", 1).await;
    let destination = destination(&kinesalite, "edge").await;

    let template = item("edge-0", Some("k"), 0);
    let exact = item(
        "edge-0",
        Some("k"),
        MAX_RECORD_BYTES - template.payload.len() - "k".len(),
    );
    assert_eq!(exact.payload.len() + 1, MAX_RECORD_BYTES);
    let over = item(
        "edge-1",
        Some("k"),
        MAX_RECORD_BYTES - template.payload.len(),
    );
    let batch = Batch {
        id: "edge".into(),
        schema: Schema::LaunchDarkly,
        items: vec![exact, over],
    };
    match destination.send(&batch).await {
        SendOutcome::Partial { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!((failures[0].index, failures[0].is_retriable()), (1, false));
        }
        other => panic!("expected the oversized record alone to fail, got {other:?}"),
    }
    let seen: Vec<String> = read_all(&client, "edge")
        .await
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ["edge-0".to_string()]);
}

/// Stop the server mid-stream and start it again on the same data: sends during the outage
/// are retriable, the resend afterwards succeeds, and everything — before, during, after — is
/// read back exactly once (nothing delivered twice because nothing was in flight at the stop).
#[tokio::test]
async fn outage_of_a_persistent_server_loses_nothing() {
    let store = tempfile::tempdir().unwrap();
    let mut kinesalite = StandIn::kinesalite(Some(store.path()));
    let client = client(&kinesalite).await;
    create_stream(&client, "durable", 2).await;
    let destination = destination(&kinesalite, "durable").await;

    let before = batch("before", 300, 30);
    assert_eq!(destination.send(&before).await, SendOutcome::Delivered);

    kinesalite.stop();
    let during = batch("during", 300, 30);
    let outcome = destination.send(&during).await;
    assert!(outcome.label() == "retriable", "server down: {outcome:?}");

    kinesalite.start();
    assert_eq!(destination.send(&during).await, SendOutcome::Delivered);
    let after = batch("after", 100, 10);
    assert_eq!(destination.send(&after).await, SendOutcome::Delivered);

    let seen: Vec<String> = read_all(&client, "durable")
        .await
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ids(&[&before, &during, &after]));
}
