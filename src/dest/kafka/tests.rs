//! Unit tests of the Kafka destination: option mapping, keys and headers, classification
//! (the tansu tests in tests/it/kafka.rs exercise it end to end).

use std::collections::BTreeMap;

use bytes::Bytes;
use rdkafka::message::Headers;
use rdkafka::types::RDKafkaErrorCode;

use super::*;
use crate::dest::options::OptionBlocks;
use crate::dest::options::OptionMap;
use crate::dest::{BatchItem, FailureClass};

fn blocks(options: &[(&str, &str)]) -> Result<KafkaBlocks, String> {
    let values: BTreeMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let secret = values
        .keys()
        .filter(|k| crate::dest::secrets::is_secret_name(k))
        .cloned()
        .collect();
    let mut map = OptionMap::new("kafka", values, secret);
    let blocks = KafkaBlocks::take(&mut map)?;
    map.finish()?;
    Ok(blocks)
}

fn properties(options: &[(&str, &str)]) -> Result<BTreeMap<String, String>, String> {
    let target = KafkaTarget::parse("b1:9092,b2/flag-events").unwrap();
    let settings = producer_properties(&target, &blocks(options)?, "flagstream-k")?;
    Ok(settings.properties.into_iter().collect())
}

#[test]
fn defaults_are_idempotent_bounded_and_never_auto_create() {
    let p = properties(&[]).unwrap();
    assert_eq!(p["bootstrap.servers"], "b1:9092,b2:9092");
    assert_eq!(p["enable.idempotence"], "true");
    assert_eq!(p["acks"], "all");
    assert_eq!(p["compression.type"], "lz4");
    assert_eq!(p["message.timeout.ms"], "30000");
    assert_eq!(p["message.max.bytes"], "1000000");
    assert_eq!(p["allow.auto.create.topics"], "false");
    assert_eq!(p["security.protocol"], "PLAINTEXT");
    assert_eq!(p["client.id"], "flagstream-k");

    let p = properties(&[
        ("compression", "zstd"),
        ("timeout", "5s"),
        ("max_message_bytes", "2MiB"),
    ])
    .unwrap();
    assert_eq!(p["compression.type"], "zstd");
    assert_eq!(p["message.timeout.ms"], "5000");
    assert_eq!(p["message.max.bytes"], (2 * 1024 * 1024).to_string());
    for name in ["none", "gzip", "snappy", "LZ4"] {
        let p = properties(&[("compression", name)]).unwrap();
        assert_eq!(p["compression.type"], name.to_ascii_lowercase());
    }
    let err = properties(&[("compression", "brotli")]).unwrap_err();
    assert!(err.contains("brotli") && err.contains("zstd"), "{err}");
}

#[test]
fn security_options_map_to_librdkafka() {
    let p = properties(&[
        ("security.protocol", "sasl_ssl"),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "flagstream"),
        ("sasl.password", "pw"),
        ("ssl.ca.location", "/etc/kafka/ca.pem"),
        ("ssl.certificate.location", "/etc/kafka/client.pem"),
        ("ssl.key.location", "/etc/kafka/client.key"),
        ("ssl.key.password", "kpw"),
    ])
    .unwrap();
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
    assert_eq!(p["sasl.username"], "flagstream");
    assert_eq!(p["sasl.password"], "pw");
    assert_eq!(p["ssl.ca.location"], "/etc/kafka/ca.pem");
    assert_eq!(p["ssl.certificate.location"], "/etc/kafka/client.pem");
    assert_eq!(p["ssl.key.location"], "/etc/kafka/client.key");
    assert_eq!(p["ssl.key.password"], "kpw");

    let p = properties(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "scram-sha-256"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
    ])
    .unwrap();
    assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-256");
    assert!(!p.contains_key("ssl.ca.location"));

    let p = properties(&[("security.protocol", "SSL"), ("ssl.ca.location", "/ca")]).unwrap();
    assert_eq!(p["security.protocol"], "SSL");
    assert!(!p.contains_key("sasl.mechanism"));
}

/// The issue's Event Hubs Kafka endpoint URL maps to what Microsoft documents for
/// librdkafka: SASL_SSL, PLAIN, user `$ConnectionString`, password = the connection string.
#[test]
fn event_hubs_kafka_endpoint_maps_to_sasl_plain_over_tls() {
    let target = KafkaTarget::parse("myns.servicebus.windows.net:9093/flag-hub").unwrap();
    assert_eq!(target.brokers, vec!["myns.servicebus.windows.net:9093"]);
    assert_eq!(target.topic, "flag-hub");
    let connection =
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc=";
    let p = properties(&[
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "PLAIN"),
        ("sasl.username", "$ConnectionString"),
        ("sasl.password", connection),
    ])
    .unwrap();
    assert_eq!(p["security.protocol"], "SASL_SSL");
    assert_eq!(p["sasl.mechanism"], "PLAIN");
    assert_eq!(p["sasl.username"], "$ConnectionString");
    assert_eq!(p["sasl.password"], connection);
}

#[test]
fn inconsistent_security_options_are_named() {
    for (options, needles) in [
        (
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ][..],
            &["sasl.mechanism"][..],
        ),
        (
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
            ][..],
            &["sasl.username", "sasl.password"][..],
        ),
        (
            &[("sasl.mechanism", "PLAIN")][..],
            &["SASL_SSL", "PLAINTEXT"][..],
        ),
        (&[("ssl.ca.location", "/ca")][..], &["ssl.*", "SSL"][..]),
        (
            &[
                ("security.protocol", "SSL"),
                ("ssl.certificate.location", "/c"),
            ][..],
            &["ssl.key.location"][..],
        ),
        (
            &[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "GSSAPI"),
            ][..],
            &["GSSAPI", "SCRAM-SHA-256"][..],
        ),
        (
            &[("security.protocol", "TLS")][..],
            &["TLS", "SASL_SSL"][..],
        ),
        (&[("partitions", "3")][..], &["create_topic=true"][..]),
        (&[("endpoint", "http://x")][..], &["endpoint"][..]),
        (
            &[("rdkafka.acks", "1")][..],
            &["rdkafka.acks", "all in-sync"][..],
        ),
        (
            &[("rdkafka.enable.idempotence", "false")][..],
            &["rdkafka.enable.idempotence"][..],
        ),
        (
            &[("rdkafka.sasl.username", "u")][..],
            &["rdkafka.sasl.username", "`sasl.username=`"][..],
        ),
        (
            &[("max_message_bytes", "100")][..],
            &["max_message_bytes"][..],
        ),
    ] {
        let err = properties(options).unwrap_err();
        assert!(
            needles.iter().all(|n| err.contains(n)),
            "{options:?}: {err}"
        );
    }
}

#[test]
fn targets_parse() {
    let target = KafkaTarget::parse("127.0.0.1:19092/flag-events").unwrap();
    assert_eq!(target.brokers, vec!["127.0.0.1:19092"]);
    assert_eq!(target.to_string(), "Kafka topic `flag-events`");
    assert!(KafkaTarget::parse("broker:9092")
        .unwrap_err()
        .contains("topic"));
    assert!(KafkaTarget::parse("broker:9092/").is_err());
    assert!(KafkaTarget::parse("broker:port/t")
        .unwrap_err()
        .contains("port"));
    assert!(KafkaTarget::parse(",broker/t").is_err());
    assert!(KafkaTarget::parse("b/bad topic")
        .unwrap_err()
        .contains("topic name"));
    assert!(KafkaTarget::parse(&format!("b/{}", "t".repeat(250))).is_err());
}

fn item(index: usize, context: Option<&str>, key: Option<&str>) -> BatchItem {
    BatchItem {
        event_id: format!("evt-{index}").into(),
        payload: Bytes::from_static(br#"{"event":{"contextKeys":{"user":"u-9"}}}"#),
        kind: "feature".into(),
        key: key.map(Into::into),
        context_key: context.map(Into::into),
        environment: "production".into(),
        received_at_ms: 1_700_000_000_000,
    }
}

#[test]
fn headers_carry_the_event_metadata() {
    let batch = Batch {
        id: "b-7".into(),
        schema: Schema::LaunchDarkly,
        items: vec![item(0, Some("u"), Some("flag-a")), item(1, Some("u"), None)],
        lines: None,
    };
    let read = |headers: &rdkafka::message::OwnedHeaders| -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    };
    let all = read(&headers(&batch.items[0], &batch));
    let expected: Vec<(String, String)> = [
        ("event_id", "evt-0"),
        ("kind", "feature"),
        ("key", "flag-a"),
        ("environment", "production"),
        ("schema", "launchdarkly"),
        ("batch_id", "b-7"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(all, expected);
    let without_key = read(&headers(&batch.items[1], &batch));
    assert_eq!(without_key.len(), 5);
    assert!(without_key.iter().all(|(name, _)| name != "key"));
}

#[test]
fn message_keys_follow_the_configured_field_and_never_collapse() {
    let context = PartitionKeySource::ContextKey;
    assert_eq!(
        message::key(&item(0, Some("user-1"), None), &context),
        "user-1"
    );
    assert_eq!(message::key(&item(1, None, None), &context), "evt-1");
    let long = "k".repeat(400);
    assert_eq!(message::key(&item(2, Some(&long), None), &context), long);
    let field: PartitionKeySource = "event.contextKeys.user".parse().unwrap();
    assert_eq!(message::key(&item(3, Some("ctx"), None), &field), "u-9");
}

fn target() -> KafkaTarget {
    KafkaTarget::parse("b:9092/flag-events").unwrap()
}

#[test]
fn delivery_errors_are_classified() {
    let t = target();
    let too_large = classify_code(
        RDKafkaErrorCode::MessageSizeTooLarge,
        &t,
        "Broker: Message size too large",
        2_000_000,
    );
    assert_eq!(too_large.class, FailureClass::Permanent);
    assert!(
        too_large.reason.contains("MSG_SIZE_TOO_LARGE")
            && too_large.reason.contains("2000000 bytes"),
        "{}",
        too_large.reason
    );
    for code in [
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::UnknownTopic,
    ] {
        let missing = classify_code(code, &t, "", 0);
        assert!(!missing.is_retriable());
        assert!(
            missing.reason.contains("`flag-events` does not exist"),
            "{}",
            missing.reason
        );
    }
    let denied = classify_code(RDKafkaErrorCode::TopicAuthorizationFailed, &t, "x", 0);
    assert!(!denied.is_retriable() && denied.reason.contains("not authorised"));
    let sasl = classify_code(RDKafkaErrorCode::SaslAuthenticationFailed, &t, "x", 0);
    assert!(!sasl.is_retriable() && sasl.reason.contains("authentication"));
    assert!(classify_code(RDKafkaErrorCode::QueueFull, &t, "x", 0).is_throttled());
    for code in [
        RDKafkaErrorCode::MessageTimedOut,
        RDKafkaErrorCode::BrokerTransportFailure,
        RDKafkaErrorCode::AllBrokersDown,
        RDKafkaErrorCode::NotEnoughReplicas,
        RDKafkaErrorCode::RequestTimedOut,
    ] {
        let failure = classify_code(code, &t, "detail", 0);
        assert_eq!(failure.class, FailureClass::Retriable, "{code:?}");
        assert!(failure.reason.contains("flag-events"));
    }
}

#[test]
fn one_oversized_message_among_delivered_ones_is_a_partial_outcome() {
    let t = target();
    let failures =
        vec![classify_code(RDKafkaErrorCode::MessageSizeTooLarge, &t, "", 5).for_item(1)];
    match SendOutcome::from_item_failures(3, failures, None) {
        SendOutcome::Partial { failures } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].index, 1);
            assert!(!failures[0].is_retriable());
        }
        other => panic!("expected partial, got {other:?}"),
    }
}

#[tokio::test]
async fn passthrough_is_validated_by_librdkafka_and_names_the_property() {
    let build = |url: &str| {
        let spec = crate::dest::DestinationSpec::parse(url).unwrap();
        crate::dest::registry::build_named(spec, "k")
    };
    let destination = build("kafka://127.0.0.1:1/flag-events?rdkafka.linger.ms=20&compression=gzip&message_key=event_id")
        .await
        .unwrap();
    let debug = format!("{destination:?}");
    assert!(
        debug.contains("EventId") && debug.contains("flag-events"),
        "{debug}"
    );
    assert_eq!(destination.kind(), "kafka");

    let err = build("kafka://127.0.0.1:1/t?rdkafka.no.such.property=1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`rdkafka.no.such.property`"), "{err}");
    let err = build("kafka://127.0.0.1:1/t?rdkafka.linger.ms=soon")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`rdkafka.linger.ms`"), "{err}");
    let err = build("kafka://127.0.0.1:1/t?rdkafka.my.secret=hunter2")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`rdkafka.my.secret`") && !err.contains("hunter2"),
        "{err}"
    );
    let err = build("kafka://127.0.0.1:1/t?colour=blue")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`colour`") && err.contains("`kafka`"), "{err}");
}
