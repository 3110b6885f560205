//! The Kafka destination against a real Kafka-protocol broker (tansu), read back with
//! rdkafka's consumer: keys, headers and per-context order, compression on the wire, an
//! oversized message refused alone, and librdkafka pass-through errors naming the property.
//! (The conformance suite runs the shared checks: `conformance::kafka_tansu`.)

use std::collections::BTreeMap;

use flagstream::dest::{Batch, SendOutcome};
use flagstream::event::Schema;

use crate::support::cloud::{batch, destination, event_id_of, item};
use crate::support::kafka::Tansu;

fn url(broker: &Tansu, topic: &str, options: &str) -> String {
    format!(
        "kafka://{}/{topic}?timeout=10s{options}",
        broker.bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_keys_and_headers_and_keep_each_contexts_order() {
    let broker = Tansu::start().await;
    broker.create_topic("flag-events", 3).await;
    let dest = destination(&url(&broker, "flag-events", "")).await;
    dest.check().await.unwrap();
    let sent = batch("h", 60, 6);
    assert_eq!(dest.send(&sent).await, SendOutcome::Delivered);

    let messages = broker.read_all("flag-events").await;
    assert_eq!(messages.len(), 60);
    let mut partitions_of_context = BTreeMap::<String, Vec<(i32, i64, usize)>>::new();
    for message in &messages {
        let event_id = event_id_of(&message.payload);
        let index: usize = event_id.trim_start_matches("h-").parse().unwrap();
        let context = sent.items[index].context_key.clone().unwrap().to_string();
        assert_eq!(
            message.key.as_deref(),
            Some(context.as_str()),
            "key = context key"
        );
        assert_eq!(message.header("event_id"), Some(event_id.as_str()));
        assert_eq!(message.header("kind"), Some("feature"));
        assert_eq!(message.header("key"), Some("new-checkout"));
        assert_eq!(message.header("environment"), Some("production"));
        assert_eq!(message.header("schema"), Some("launchdarkly"));
        assert_eq!(message.header("batch_id"), Some("batch-h"));
        partitions_of_context.entry(context).or_default().push((
            message.partition,
            message.offset,
            index,
        ));
    }
    let mut used = std::collections::BTreeSet::new();
    for (context, mut placed) in partitions_of_context {
        assert!(
            placed.iter().all(|(p, _, _)| *p == placed[0].0),
            "{context} spans partitions: {placed:?}"
        );
        used.insert(placed[0].0);
        placed.sort();
        let order: Vec<usize> = placed.iter().map(|(_, _, i)| *i).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "{context}: offsets follow the batch order");
    }
    assert!(used.len() > 1, "six contexts all on one partition");
}

/// The same compressible batch into two topics, `compression=none` and `zstd`: reading the
/// zstd topic moves a fraction of the bytes (batches stay compressed broker → consumer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_setting_is_honoured_on_the_wire() {
    let broker = Tansu::start().await;
    let padded = Batch {
        id: "batch-z".into(),
        schema: Schema::LaunchDarkly,
        items: (0..20)
            .map(|i| item(&format!("z-{i}"), Some("user-1"), 20_000))
            .collect(),
        lines: None,
    };
    let mut wire = BTreeMap::new();
    for codec in ["none", "zstd", "gzip", "lz4", "snappy"] {
        let topic = format!("compressed-{codec}");
        broker.create_topic(&topic, 1).await;
        let dest = destination(&url(&broker, &topic, &format!("&compression={codec}"))).await;
        assert_eq!(dest.send(&padded).await, SendOutcome::Delivered, "{codec}");
        let (bytes, messages) = broker.wire_bytes_to_read(&topic).await;
        assert_eq!(messages.len(), 20, "{codec}");
        let sent: Vec<&[u8]> = padded.items.iter().map(|i| &i.payload[..]).collect();
        assert!(
            messages.iter().all(|m| sent.contains(&&m.payload[..])),
            "{codec}: payloads intact"
        );
        wire.insert(codec, bytes);
    }
    let plain = wire["none"];
    assert!(plain > 20 * 20_000, "uncompressed read moved {plain} bytes");
    for codec in ["zstd", "gzip", "lz4", "snappy"] {
        assert!(
            wire[codec] * 5 < plain,
            "{codec} moved {} bytes, uncompressed {plain}",
            wire[codec]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_fails_alone_and_permanently() {
    let broker = Tansu::start().await;
    broker.create_topic("flag-events", 1).await;
    let dest = destination(&url(&broker, "flag-events", "&max_message_bytes=64KiB")).await;
    let sent = Batch {
        id: "batch-big".into(),
        schema: Schema::LaunchDarkly,
        items: vec![
            item("big-0", Some("u"), 10),
            item("big-1", Some("u"), 100_000),
            item("big-2", Some("u"), 10),
        ],
        lines: None,
    };
    match dest.send(&sent).await {
        SendOutcome::Partial { failures } => {
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert_eq!(failures[0].index, 1);
            assert!(!failures[0].is_retriable());
            let reason = &failures[0].failure.reason;
            assert!(
                reason.contains("MSG_SIZE_TOO_LARGE") && reason.contains("flag-events"),
                "{reason}"
            );
        }
        other => panic!("expected one permanent item failure, got {other:?}"),
    }
    let ids: Vec<String> = broker
        .read_all("flag-events")
        .await
        .iter()
        .map(|m| event_id_of(&m.payload))
        .collect();
    assert_eq!(ids, vec!["big-0", "big-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_permanent_and_never_created() {
    let broker = Tansu::start().await;
    let dest = destination(&url(&broker, "absent-topic", "")).await;
    let err = dest.check().await.unwrap_err().to_string();
    assert!(err.contains("`absent-topic` does not exist"), "{err}");
    match dest.send(&batch("m", 3, 1)).await {
        SendOutcome::Failed(failure) => {
            assert!(!failure.is_retriable());
            assert!(
                failure.reason.contains("absent-topic"),
                "{}",
                failure.reason
            );
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }

    let created = destination(&url(
        &broker,
        "made-on-demand",
        "&create_topic=true&partitions=2&replication=1",
    ))
    .await;
    created.check().await.unwrap();
    assert_eq!(
        created.send(&batch("c", 4, 2)).await,
        SendOutcome::Delivered
    );
    assert_eq!(broker.read_all("made-on-demand").await.len(), 4);
}

#[test]
fn a_bad_passthrough_property_is_named_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args([
            "test-destination",
            "k",
            "--dest",
            "kafka://127.0.0.1:9/flag-events?name=k&rdkafka.linger.ms=soon",
        ])
        .env("FLAGSTREAM_DATA_DIR", scratch.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("`rdkafka.linger.ms`"), "{text}");
}

/// `kill -9` flagstream repeatedly while it delivers to Kafka: every event acknowledged with
/// 202 is in the topic afterwards; duplicates (batches in flight at a crash, produced again
/// by the next process) are counted and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_loses_no_acknowledged_event() {
    use crate::conformance::{post, serve, tagged, wait_acknowledged, DEST};
    use crate::support::cloud::{ld_bulk, test_seq_of};

    const ITERATIONS: usize = 5;
    let broker = Tansu::start().await;
    broker.create_topic("flag-events", 3).await;
    let scratch = tempfile::tempdir().unwrap();
    let dest = format!(
        "kafka://{}/flag-events?name={DEST}&timeout=5s",
        broker.bootstrap()
    );
    let mut acknowledged = Vec::new();
    let mut body = 0;
    for iteration in 0..ITERATIONS {
        let mut server = serve(scratch.path(), &dest, &[]).await;
        // More bodies each round, so the kill lands at different points of delivery.
        for _ in 0..2 + 3 * iteration {
            let tag = format!("k{body}-");
            post(&server, &ld_bulk(&tag, 200, 20)).await;
            acknowledged.extend(tagged(&tag, 200));
            body += 1;
        }
        server.kill9();
    }
    let server = serve(scratch.path(), &dest, &[]).await;
    wait_acknowledged(&server).await;

    let messages = broker.read_all("flag-events").await;
    let mut counts = BTreeMap::<String, usize>::new();
    for message in &messages {
        *counts.entry(test_seq_of(&message.payload)).or_default() += 1;
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|seq| !counts.contains_key(*seq))
        .collect();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kafka kill -9 x{ITERATIONS}: {} events acknowledged, {} messages read, {duplicates} \
         duplicates, {} missing",
        acknowledged.len(),
        messages.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lost: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert_eq!(counts.len(), acknowledged.len(), "only what was sent");
}
