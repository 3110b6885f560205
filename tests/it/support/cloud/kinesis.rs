//! Kinesis test helpers over the real `aws-sdk-kinesis` client: stream creation and reading
//! every record of every shard.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};

use super::StandIn;

/// moto accepts any credentials; the destination finds these through the standard chain.
pub fn use_test_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

pub async fn client(moto: &StandIn) -> aws_sdk_kinesis::Client {
    use_test_credentials();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        let summary = summary.stream_description_summary().unwrap();
        if summary.stream_status() == &StreamStatus::Active {
            return summary.stream_arn().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} never became ACTIVE");
}

/// The Kinesis destination for `target` (stream name or ARN) on the stand-in, plus `extra`
/// URL options (`&aggregate=true`).
pub async fn destination(
    stand_in: &StandIn,
    target: &str,
    extra: &str,
) -> std::sync::Arc<dyn flagstream::dest::Destination> {
    use_test_credentials();
    super::destination(&format!(
        "kinesis://{target}?region=us-east-1&endpoint={}{extra}",
        stand_in.endpoint()
    ))
    .await
}

/// `id_of` every record on every shard (shard after shard).
pub async fn read_ids(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    id_of: fn(&[u8]) -> String,
) -> Vec<String> {
    read_all(client, stream)
        .await
        .values()
        .flatten()
        .map(|data| id_of(data))
        .collect()
}

/// Every record on every shard: shard id -> data blobs, in shard order.
pub async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut by_shard = BTreeMap::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_string);
        let mut records = Vec::new();
        while let Some(current) = iterator {
            let page = client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            let fetched = page.records().len();
            records.extend(page.records().iter().map(|r| r.data().as_ref().to_vec()));
            iterator = page.next_shard_iterator().map(str::to_string);
            if fetched == 0 {
                break;
            }
        }
        by_shard.insert(shard.shard_id().to_string(), records);
    }
    by_shard
}
