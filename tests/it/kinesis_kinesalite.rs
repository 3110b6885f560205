//! The Kinesis destination against a second Kinesis implementation, kinesalite (realistic
//! sequence numbers, API validation of record counts/sizes/keys), read back with the real
//! `aws-sdk-kinesis` client. kinesalite can keep its data in LevelDB, so here a stop/restart
//! is a real outage of a server that keeps its data — the strongest "nothing lost" check.

use crate::support::cloud;

use cloud::kinesis::{client, create_stream, destination, read_ids};
use cloud::{assert_exactly_once, event_id_of, item, StandIn};
use flagstream::dest::kinesis::MAX_RECORD_BYTES;
use flagstream::dest::{Batch, SendOutcome};
use flagstream::event::Schema;

/// The largest record our limits admit (data + partition key = 1 MiB) is accepted by a server
/// that validates Kinesis' size rules; one byte more never leaves flagstream.
#[tokio::test]
async fn record_at_the_size_limit_is_accepted() {
    let kinesalite = StandIn::kinesalite(None);
    let client = client(&kinesalite).await;
    create_stream(&client, "edge", 1).await;
    let destination = destination(&kinesalite, "edge", "").await;

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
        lines: None,
    };
    match destination.send(&batch).await {
        SendOutcome::Partial { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].index, 1);
            assert!(!failures[0].failure.class.is_retriable());
        }
        other => panic!("expected the oversized record alone to fail, got {other:?}"),
    }
    let seen = read_ids(&client, "edge", event_id_of).await;
    assert_exactly_once(&seen, ["edge-0".to_string()]);
}
