//! The Segment destination end to end against the Segment stand-in: every message checked
//! field by field against Segment's spec and the `segment` schema, authentication, and the
//! 32 KB message limit (the oversized message is dead-lettered, its neighbours delivered).

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

use crate::conformance::{post, serve, wait_acknowledged, wait_dead_letters, DEST};
use crate::support::cloud::ld_bulk;
use crate::support::http_receivers::{
    basic_credentials, segment_messages, Receiver, SegmentContract, SEGMENT_MAX_MESSAGE_BYTES,
};

const WRITE_KEY: (&str, &str) = ("FLAGSTREAM_TEST_SEGMENT_KEY", "seg-write-key");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_follow_segments_spec_and_oversized_ones_are_dead_lettered() {
    let scratch = tempfile::tempdir().unwrap();
    let invalid = Arc::new(Mutex::new(Vec::new()));
    let segment = Receiver::start(SegmentContract {
        write_key: WRITE_KEY.1.to_string(),
        invalid: invalid.clone(),
    })
    .await;
    let dest = format!(
        "segment:?name={DEST}&write_key=env:{}&endpoint={}&project=acme",
        WRITE_KEY.0,
        segment.base_url()
    );
    let server = serve(scratch.path(), &dest, &[WRITE_KEY]).await;

    let mut body = ld_bulk("seg", 4, 2);
    body[2]["context"]["anonymous"] = json!(true);
    body[3]["variationName"] = json!("x".repeat(SEGMENT_MAX_MESSAGE_BYTES + 10));
    let events = body.as_array_mut().unwrap();
    events.push(
        json!({"kind": "custom", "key": "checkout-completed", "creationDate": 1_700_000_000_500u64,
        "context": {"kind": "user", "key": "user-9"}, "metricValue": 9.5}),
    );
    events.push(
        json!({"kind": "pageview", "key": "home", "creationDate": 1_700_000_000_600u64,
        "context": {"kind": "user", "key": "user-9"}, "url": "https://example.com/home"}),
    );
    post(&server, &body).await;
    wait_acknowledged(&server).await;

    for request in segment.accepted() {
        assert_eq!(request.path, "/v1/batch");
        assert_eq!(
            basic_credentials(&request),
            Some((WRITE_KEY.1.to_string(), String::new()))
        );
        assert_eq!(request.headers["content-type"], "application/json");
    }
    assert!(invalid.lock().is_empty(), "{:#?}", invalid.lock());
    let messages = segment_messages(&segment);
    assert_eq!(messages.len(), 5, "{messages:#?}");
    let by_seq = |seq: &str| {
        messages
            .iter()
            .find(|m| m["properties"]["variationName"] == seq)
            .unwrap_or_else(|| panic!("no {seq} in {messages:#?}"))
    };

    let first = by_seq("seg-0");
    let id = first["messageId"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(first["type"], "track");
    assert_eq!(first["event"], "feature");
    assert_eq!(first["userId"], "user-0");
    assert_eq!(first["timestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(first["originalTimestamp"], "2023-11-14T22:13:20.000Z");
    assert_eq!(first["integrations"], json!({}));
    let properties = &first["properties"];
    assert_eq!(properties["project"], "acme");
    assert!(properties["environment"].is_string());
    assert_eq!(properties["eventId"], id);
    assert_eq!(properties["key"], "new-checkout");
    assert_eq!(properties["version"], 1);
    assert_eq!(properties["value"], true);
    assert_eq!(properties["flagVersion"], 12);
    assert_eq!(properties["variation"], 1);
    assert_eq!(properties["default"], false);

    let anonymous = by_seq("seg-2");
    assert_eq!(anonymous["anonymousId"], "user-0");
    assert!(anonymous.get("userId").is_none(), "{anonymous}");

    let custom = messages.iter().find(|m| m["event"] == "custom").unwrap();
    assert_eq!(
        (
            &custom["type"],
            &custom["userId"],
            &custom["properties"]["metricValue"]
        ),
        (&json!("track"), &json!("user-9"), &json!(9.5))
    );
    assert_eq!(custom["properties"]["key"], "checkout-completed");
    let page = messages.iter().find(|m| m["type"] == "page").unwrap();
    assert_eq!(page["properties"]["url"], "https://example.com/home");
    let ids: std::collections::HashSet<&str> = messages
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), messages.len(), "message ids are unique");

    let dead = wait_dead_letters(scratch.path(), 1, &server).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("bytes"), "{reason}");
    assert!(dead[0]["payload"]["properties"]["variationName"]
        .as_str()
        .is_some_and(|v| v.starts_with("xxxx")));
    // Nothing Segment would have refused reached it.
    assert!(segment.answered().iter().all(|(_, status)| *status == 200));
}

/// `flagstream test-destination` sends its recognisable test event through the real
/// destination: to Segment as a valid track call, to mParticle as a valid batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_destination_reaches_segment_and_mparticle() {
    use crate::conformance::mparticle::{MParticle, KEY, SECRET};
    use crate::support::http_receivers::mparticle_events;

    let scratch = tempfile::tempdir().unwrap();
    let invalid = Arc::new(Mutex::new(Vec::new()));
    let segment = Receiver::start(SegmentContract {
        write_key: WRITE_KEY.1.to_string(),
        invalid: invalid.clone(),
    })
    .await;
    let mparticle = MParticle::start(scratch.path()).await;
    let segment_url = format!(
        "segment:?name={DEST}&write_key=env:{}&endpoint={}",
        WRITE_KEY.0,
        segment.base_url()
    );
    for (url, env) in [
        (segment_url, vec![WRITE_KEY]),
        (mparticle.url(""), vec![KEY, SECRET]),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
            .args(["test-destination", DEST, "--dest", &url])
            .envs(env)
            .env("FLAGSTREAM_DATA_DIR", scratch.path().join("data"))
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{url}: {stdout}");
        assert!(stdout.contains("delivered"), "{stdout}");
    }

    assert!(invalid.lock().is_empty(), "{:#?}", invalid.lock());
    let messages = segment_messages(&segment);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(messages[0]["properties"]["key"], TEST_EVENT_KEY);
    assert_eq!(messages[0]["userId"], TEST_EVENT_KEY);

    assert!(
        mparticle.invalid.lock().is_empty(),
        "{:#?}",
        mparticle.invalid.lock()
    );
    let events = mparticle_events(&mparticle.receiver);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0].0["user_identities"]["customer_id"],
        TEST_EVENT_KEY
    );
    assert_eq!(
        events[0].1["data"]["custom_attributes"]["key"],
        TEST_EVENT_KEY
    );
}

/// The key of `flagstream test-destination`'s event (LaunchDarkly's own test event key).
const TEST_EVENT_KEY: &str = "LaunchDarklyDataExportTestEvent";
