//! The Kinesis destination against a real Kinesis API (moto server), read back with the real
//! `aws-sdk-kinesis` client: GetShardIterator(TRIM_HORIZON) + GetRecords on every shard.

use crate::support::cloud;

use std::collections::{BTreeMap, BTreeSet};

use cloud::kinesis::{client, create_stream, destination, read_all, read_ids};
use cloud::{assert_exactly_once, batch, event_id_of, ids, StandIn};
use flagstream::dest::SendOutcome;

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
    let seen = read_ids(&client, "cross-account", event_id_of).await;
    assert_exactly_once(&seen, ids(&batch));
}
