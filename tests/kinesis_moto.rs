//! The Kinesis destination against a real Kinesis API (moto server), read back with the real
//! `aws-sdk-kinesis` client: GetShardIterator(TRIM_HORIZON) + GetRecords on every shard.

mod cloud;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cloud::kinesis::{client, create_stream, read_all, use_test_credentials};
use cloud::{assert_exactly_once, batch, event_id_of, item, StandIn};
use flagstream::dest::kinesis::MAX_RECORD_BYTES;
use flagstream::dest::{
    registry, Batch, Destination, DestinationSpec, Failure, FailureClass, SendOutcome,
};
use flagstream::event::Schema;

async fn destination(moto: &StandIn, target: &str, extra: &str) -> Arc<dyn Destination> {
    use_test_credentials();
    let url = format!(
        "kinesis://{target}?region=us-east-1&endpoint={}{extra}",
        moto.endpoint()
    );
    let spec = DestinationSpec::parse(&url).unwrap();
    registry::build_named(spec, "kinesis-test").await.unwrap()
}

fn ids(batch: &Batch) -> Vec<String> {
    batch.items.iter().map(|i| i.event_id.clone()).collect()
}

#[tokio::test]
async fn every_event_is_read_back_exactly_once_with_keys_spread_over_shards() {
    let moto = StandIn::moto();
    let client = client(&moto).await;
    create_stream(&client, "flag-events", 4).await;
    let destination = destination(&moto, "flag-events", "").await;
    destination.check().await.unwrap();

    // 1,200 events over 60 contexts: more than one PutRecords request's worth (500).
    let batch = batch("spread", 1_200, 60);
    let outcome = destination.send(&batch).await;
    assert_eq!(outcome, SendOutcome::Delivered);

    let by_shard = read_all(&client, "flag-events").await;
    let mut seen = Vec::new();
    let mut context_shards: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut context_order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (shard, records) in &by_shard {
        for data in records {
            let id = event_id_of(data);
            let value: serde_json::Value = serde_json::from_slice(data).unwrap();
            let context = value["event"]["contextKeys"]["user"]
                .as_str()
                .unwrap()
                .to_string();
            context_shards
                .entry(context.clone())
                .or_default()
                .insert(shard.clone());
            let n: usize = id.rsplit('-').next().unwrap().parse().unwrap();
            context_order.entry(context).or_default().push(n);
            seen.push(id);
        }
    }
    assert_exactly_once(&seen, ids(&batch));
    let used_shards = by_shard
        .values()
        .filter(|records| !records.is_empty())
        .count();
    assert!(
        used_shards >= 3,
        "60 context keys landed on only {used_shards} of 4 shards"
    );
    for (context, shards) in &context_shards {
        assert_eq!(
            shards.len(),
            1,
            "context {context} spread over shards {shards:?}"
        );
    }
    for (context, order) in &context_order {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "context {context} out of order: {order:?}"
        );
    }
}

#[tokio::test]
async fn stream_arn_target_and_event_id_partition_keys() {
    let moto = StandIn::moto();
    let client = client(&moto).await;
    let arn = create_stream(&client, "arn-events", 2).await;
    let destination = destination(&moto, &arn, "&partition_key=event_id").await;
    destination.check().await.unwrap();
    // Events without any context key: partitioning by event id still spreads them.
    let mut batch = batch("arn", 200, 1);
    for item in &mut batch.items {
        item.context_key = None;
    }
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);
    let by_shard = read_all(&client, "arn-events").await;
    assert!(
        by_shard.values().all(|records| !records.is_empty()),
        "one shard got nothing"
    );
    let seen: Vec<String> = by_shard
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ids(&batch));
}

#[tokio::test]
async fn aggregated_records_carry_every_event_once() {
    let moto = StandIn::moto();
    let client = client(&moto).await;
    create_stream(&client, "aggregated", 2).await;
    let destination = destination(&moto, "aggregated", "&aggregate=true").await;
    let batch = batch("agg", 300, 5);
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);

    let by_shard = read_all(&client, "aggregated").await;
    let records: Vec<&Vec<u8>> = by_shard.values().flatten().collect();
    assert_eq!(
        records.len(),
        5,
        "one record per context key when aggregating small events"
    );
    let seen: Vec<String> = records
        .iter()
        .flat_map(|data| {
            data.split(|b| *b == b'\n')
                .map(event_id_of)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_exactly_once(&seen, ids(&batch));
}

#[tokio::test]
async fn too_large_event_is_rejected_by_limits_and_the_rest_delivered() {
    let moto = StandIn::moto();
    let client = client(&moto).await;
    create_stream(&client, "limits", 1).await;
    let destination = destination(&moto, "limits", "").await;

    let limits = destination.limits();
    assert_eq!(limits.max_items, 500);
    assert_eq!(limits.max_bytes, 5 * 1024 * 1024);
    assert_eq!(limits.max_item_bytes, 1024 * 1024);
    assert!(
        limits.per_item_overhead >= 256,
        "partition key counts against the record limit"
    );

    // Exactly at the limit the payload fits, but payload + partition key does not.
    let mut big = item("too-big", Some("user-big"), 0);
    let padding = MAX_RECORD_BYTES - big.payload.len() + 1;
    big = item("too-big", Some("user-big"), padding);
    assert!(big.payload.len() + limits.per_item_overhead > limits.max_item_bytes);
    let batch = Batch {
        id: "batch-limits".into(),
        schema: Schema::LaunchDarkly,
        items: vec![
            item("small-0", Some("u"), 10),
            big,
            item("small-1", Some("u"), 10),
        ],
    };
    match destination.send(&batch).await {
        SendOutcome::Partial { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].index, 1);
            assert!(
                !failures[0].is_retriable(),
                "an oversized event must go to the dead letters"
            );
            assert!(
                failures[0].failure.reason.contains("at most"),
                "{}",
                failures[0].failure.reason
            );
        }
        other => panic!("expected a partial outcome, got {other:?}"),
    }
    let seen: Vec<String> = read_all(&client, "limits")
        .await
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ["small-0".to_string(), "small-1".to_string()]);
}

#[tokio::test]
async fn missing_stream_is_permanent_and_check_names_it() {
    let moto = StandIn::moto();
    let destination = destination(&moto, "no-such-stream", "").await;
    let err = destination.check().await.unwrap_err().to_string();
    assert!(
        err.contains("no-such-stream") && err.contains("not found"),
        "{err}"
    );
    match destination.send(&batch("missing", 3, 3)).await {
        SendOutcome::Failed(Failure {
            class: FailureClass::Permanent,
            reason,
            ..
        }) => {
            assert!(
                reason.contains("no-such-stream") && reason.contains("not found"),
                "{reason}"
            );
        }
        other => panic!("expected permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_retriable_and_check_fails() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint_of_stopped = format!("http://127.0.0.1:{port}");
    use_test_credentials();
    let spec = DestinationSpec::parse(&format!(
        "kinesis://flag-events?region=us-east-1&endpoint={endpoint_of_stopped}"
    ))
    .unwrap();
    let destination = registry::build_named(spec, "k").await.unwrap();
    assert!(destination.check().await.is_err());
    let outcome = destination.send(&batch("down", 2, 2)).await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Failed(Failure {
                class: FailureClass::Retriable,
                ..
            })
        ),
        "{outcome:?}"
    );
}

/// moto is in-memory: stopping it loses the stream and everything in it. What this proves is
/// the destination's side of "nothing lost": while the server is down every send is reported
/// retriable (never delivered, never permanent), and after it is back the very same batch —
/// resent as the engine would — is delivered and read back exactly once.
#[tokio::test]
async fn stand_in_stopped_mid_stream_gives_retriable_then_success() {
    let mut moto = StandIn::moto();
    let client = client(&moto).await;
    create_stream(&client, "restart", 2).await;
    let destination = destination(&moto, "restart", "").await;
    assert_eq!(
        destination.send(&batch("before", 50, 10)).await,
        SendOutcome::Delivered
    );

    moto.stop();
    let in_flight = batch("during", 120, 12);
    for _ in 0..2 {
        let outcome = destination.send(&in_flight).await;
        assert!(outcome.label() == "retriable", "server down: {outcome:?}");
    }

    moto.start();
    create_stream(&client, "restart", 2).await;
    assert_eq!(destination.send(&in_flight).await, SendOutcome::Delivered);
    let seen: Vec<String> = read_all(&client, "restart")
        .await
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ids(&in_flight));
}

/// `role_arn` + `external_id`: credentials come from STS AssumeRole (moto implements STS on the
/// same endpoint) on top of the chain's base credentials.
#[tokio::test]
async fn role_is_assumed_through_sts() {
    let moto = StandIn::moto();
    let client = client(&moto).await;
    create_stream(&client, "cross-account", 1).await;
    let destination = destination(
        &moto,
        "cross-account",
        "&role_arn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2FLaunchDarkly-data-export&external_id=ext-1",
    )
    .await;
    destination.check().await.unwrap();
    let batch = batch("role", 20, 4);
    assert_eq!(destination.send(&batch).await, SendOutcome::Delivered);
    let seen: Vec<String> = read_all(&client, "cross-account")
        .await
        .values()
        .flatten()
        .map(|d| event_id_of(d))
        .collect();
    assert_exactly_once(&seen, ids(&batch));
}
