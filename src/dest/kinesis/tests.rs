//! Unit tests of the Kinesis destination (the moto / kinesalite tests exercise it end to end).

use super::*;
use crate::dest::{BatchItem, FailureClass, ItemFailure};
use bytes::Bytes;

fn item(index: usize, context: Option<&str>, payload: &str) -> BatchItem {
    BatchItem {
        event_id: format!("evt-{index}").into(),
        payload: Bytes::from(payload.to_string()),
        kind: "feature".into(),
        key: Some("flag-a".into()),
        context_key: context.map(Into::into),
        environment: "production".into(),
        received_at_ms: 1_700_000_000_000,
    }
}

fn batch(items: Vec<BatchItem>) -> Batch {
    Batch {
        id: "b-1".into(),
        schema: Schema::default(),
        items,
        lines: None,
    }
}

fn stream() -> StreamTarget {
    StreamTarget::Name("flag-events".into())
}

/// A real `PutRecords` response body (shape from the AWS API reference example, values
/// ours): 5 records, 3 failed with both documented error codes.
const RECORDED_PARTIAL_RESPONSE: &str = r#"{
    "FailedRecordCount": 3,
    "Records": [
        {"SequenceNumber": "49543463076548007577105092703039560359975228518395012686", "ShardId": "shardId-000000000000"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."},
        {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
        {"SequenceNumber": "49543463076570308322303623326179887152428262250726293522", "ShardId": "shardId-000000000002"},
        {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."}
    ]
}"#;

fn recorded_results(body: &str) -> Vec<(Option<String>, Option<String>)> {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["ErrorCode"].as_str().map(str::to_string),
                entry["ErrorMessage"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn recorded_partial_failure_lists_exactly_the_failed_records() {
    let items: Vec<BatchItem> = (0..5)
        .map(|i| item(i, Some(&format!("u{i}")), "{}"))
        .collect();
    let batch = batch(items);
    let (records, rejected) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
    assert!(rejected.is_empty());
    let owned = recorded_results(RECORDED_PARTIAL_RESPONSE);
    let results: Vec<RecordResult<'_>> = owned
        .iter()
        .map(|(code, message)| RecordResult {
            error_code: code.as_deref(),
            error_message: message.as_deref(),
        })
        .collect();
    let failures = classify_record_results(&records, &results, &stream());
    assert!(failures.iter().any(|f| f.failure.is_throttled()));
    let indexes: Vec<usize> = failures.iter().map(|f| f.index).collect();
    assert_eq!(indexes, vec![1, 2, 4]);
    assert!(failures.iter().all(ItemFailure::is_retriable));
    assert!(failures[0]
        .failure
        .reason
        .contains("ProvisionedThroughputExceededException"));
    assert!(failures[1].failure.reason.contains("InternalFailure"));
    assert!(failures[0].failure.reason.contains("flag-events"));
    let outcome = SendOutcome::from_item_failures(5, failures, None);
    assert!(outcome.is_throttled());
    match outcome {
        SendOutcome::Partial { failures } => {
            assert_eq!(
                failures.iter().map(|f| f.index).collect::<Vec<_>>(),
                vec![1, 2, 4]
            );
        }
        other => panic!("expected partial, got {other:?}"),
    }
}

#[test]
fn all_records_throttled_is_a_retriable_throttled_batch() {
    let batch = batch((0..3).map(|i| item(i, Some("u"), "{}")).collect());
    let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
    let throttled = RecordResult {
        error_code: Some("ProvisionedThroughputExceededException"),
        error_message: Some("Rate exceeded"),
    };
    let results = [throttled; 3];
    let failures = classify_record_results(&records, &results, &stream());
    let outcome = SendOutcome::from_item_failures(3, failures, None);
    assert!(
        matches!(&outcome, SendOutcome::Failed(f) if f.class == FailureClass::Throttled),
        "{outcome:?}"
    );
}

#[test]
fn mismatched_entry_count_never_claims_delivery() {
    let batch = batch((0..3).map(|i| item(i, Some("u"), "{}")).collect());
    let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
    let accepted = RecordResult {
        error_code: None,
        error_message: None,
    };
    let results = [accepted; 2];
    let failures = classify_record_results(&records, &results, &stream());
    assert_eq!(failures.len(), 3);
    assert!(failures.iter().all(ItemFailure::is_retriable));
}

#[test]
fn aggregated_record_failure_fails_every_event_it_carries() {
    let items = vec![
        item(0, Some("a"), r#"{"n":0}"#),
        item(1, Some("b"), r#"{"n":1}"#),
        item(2, Some("a"), r#"{"n":2}"#),
    ];
    let batch = batch(items);
    let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, true);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].items, vec![0, 2]);
    assert_eq!(records[0].data, b"{\"n\":0}\n{\"n\":2}".to_vec());
    let results = vec![
        RecordResult {
            error_code: Some("InternalFailure"),
            error_message: None,
        },
        RecordResult {
            error_code: None,
            error_message: None,
        },
    ];
    let failures = classify_record_results(&records, &results, &stream());
    assert_eq!(
        failures.iter().map(|f| f.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert!(!failures.iter().any(|f| f.failure.is_throttled()));
}

#[test]
fn oversized_event_is_a_permanent_item_failure() {
    let big = "x".repeat(MAX_RECORD_BYTES);
    let batch = batch(vec![item(0, Some("u"), "{}"), item(1, Some("u"), &big)]);
    let (records, rejected) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
    assert_eq!(records.len(), 1);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 1);
    assert!(!rejected[0].is_retriable());
    let reason = &rejected[0].failure.reason;
    assert!(reason.contains("1048576"), "{reason}");
}

#[test]
fn requests_respect_count_and_byte_limits() {
    let small: Vec<PlannedRecord> = (0..1201)
        .map(|i| PlannedRecord {
            partition_key: format!("k{i}"),
            data: vec![b'x'; 10],
            items: vec![i],
        })
        .collect();
    let ranges = split_requests(&small);
    assert_eq!(ranges, vec![0..500, 500..1000, 1000..1201]);
    let big: Vec<PlannedRecord> = (0..12)
        .map(|i| PlannedRecord {
            partition_key: "k".into(),
            data: vec![b'x'; 1000 * 1000],
            items: vec![i],
        })
        .collect();
    let ranges = split_requests(&big);
    for range in &ranges {
        let bytes: usize = big[range.clone()]
            .iter()
            .map(PlannedRecord::billed_bytes)
            .sum();
        assert!(bytes <= MAX_REQUEST_BYTES, "{range:?} has {bytes} bytes");
    }
    assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 12);
    assert_eq!(ranges.len(), 3);
}

#[test]
fn partition_key_defaults_to_context_then_event_id_and_is_bounded() {
    let keys = PartitionKeySource::ContextKey;
    assert_eq!(keys.key_for(&item(1, Some("user-1"), "{}")), "user-1");
    assert_eq!(keys.key_for(&item(2, None, "{}")), "evt-2");
    assert_eq!(keys.key_for(&item(3, Some(""), "{}")), "evt-3");
    let long = "k".repeat(300);
    let bounded = keys.key_for(&item(4, Some(&long), "{}"));
    assert!(bounded.len() <= MAX_PARTITION_KEY_BYTES);
    assert_eq!(
        bounded,
        keys.key_for(&item(5, Some(&long), "{}")),
        "stable for one context"
    );
}

#[test]
fn partition_key_from_payload_field() {
    let keys: PartitionKeySource = "event.contextKeys.user".parse().unwrap();
    assert_eq!(
        keys,
        PartitionKeySource::PayloadField("/event/contextKeys/user".into())
    );
    let with_field = item(
        1,
        Some("ctx"),
        r#"{"event":{"contextKeys":{"user":"u-9"}}}"#,
    );
    assert_eq!(keys.key_for(&with_field), "u-9");
    let without = item(2, Some("ctx"), r#"{"event":{}}"#);
    assert_eq!(keys.key_for(&without), "ctx");
    assert!("a..b".parse::<PartitionKeySource>().is_err());
}

#[test]
fn service_errors_are_classified() {
    let s = stream();
    let missing = classify_service_error(
        Some("ResourceNotFoundException"),
        Some("Stream flag-events under account 1 not found."),
        400,
        &s,
    );
    assert!(!missing.is_retriable());
    assert!(
        missing.reason.contains("flag-events") && missing.reason.contains("not found"),
        "{}",
        missing.reason
    );
    let throttled = classify_service_error(
        Some("ProvisionedThroughputExceededException"),
        None,
        400,
        &s,
    );
    assert!(throttled.is_throttled());
    let denied = classify_service_error(Some("AccessDeniedException"), None, 400, &s);
    assert!(!denied.is_retriable());
    let bad_key = classify_service_error(Some("UnrecognizedClientException"), None, 400, &s);
    assert!(!bad_key.is_retriable() && bad_key.reason.contains("bad credentials"));
    let internal = classify_service_error(Some("InternalFailure"), None, 500, &s);
    assert!(internal.class == FailureClass::Retriable);
    let unknown_5xx = classify_service_error(None, None, 503, &s);
    assert!(unknown_5xx.is_retriable());
    let unknown_429 = classify_service_error(None, None, 429, &s);
    assert!(unknown_429.is_throttled());
    let kms = classify_service_error(Some("KMSDisabledException"), None, 400, &s);
    assert!(!kms.is_retriable());
}

#[test]
fn stream_targets_parse() {
    assert_eq!(
        StreamTarget::parse("flag-events").unwrap(),
        StreamTarget::Name("flag-events".into())
    );
    let arn = StreamTarget::parse("arn:aws:kinesis:eu-west-1:123456789012:stream/flags").unwrap();
    assert_eq!(arn.arn_region(), Some("eu-west-1"));
    assert!(StreamTarget::parse("").is_err());
    assert!(StreamTarget::parse("arn:aws:s3:::bucket").is_err());
    assert!(StreamTarget::parse("bad name!").is_err());
}

#[tokio::test]
async fn options_are_typed_and_bad_ones_are_named() {
    let build = |url: &str| {
        let spec = crate::dest::DestinationSpec::parse(url).unwrap();
        crate::dest::registry::build_named(spec, "k")
    };
    let destination = build(
        "kinesis://flag-events?region=us-east-1&endpoint=http://127.0.0.1:1&partition_key=event_id&aggregate=true&timeout=5s",
    )
    .await
    .unwrap();
    let debug = format!("{destination:?}");
    assert!(
        debug.contains("EventId") && debug.contains("aggregate: true"),
        "{debug}"
    );

    for (url, needles) in [
        (
            "kinesis://s?region=us-east-1&aggregate=maybe",
            &["aggregate", "maybe"][..],
        ),
        (
            "kinesis://s?region=us-east-1&external_id=x",
            &["role_arn"][..],
        ),
        (
            "kinesis://s?region=us-east-1&other=1",
            &["`other`", "`kinesis`"][..],
        ),
        (
            "kinesis://s?region=us-east-1&timeout=soon",
            &["timeout", "soon"][..],
        ),
        (
            "kinesis://s?region=us-east-1&endpoint=not-a-url",
            &["endpoint"][..],
        ),
        ("kinesis://bad name!?region=us-east-1", &["stream name"][..]),
    ] {
        let err = build(url).await.unwrap_err().to_string();
        assert!(needles.iter().all(|n| err.contains(n)), "{url}: {err}");
    }
}
