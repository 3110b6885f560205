//! The mParticle destination end to end against the mParticle stand-in: every batch checked
//! against the Events API schema, one batch per user, the `environment` / `identity`
//! options, 429 with `Retry-After`, and the 128 KB batch limit.

use std::time::Duration;

use serde_json::json;

use crate::conformance::mparticle::{MParticle, KEY, SECRET};
use crate::conformance::{post, serve, wait_acknowledged, wait_dead_letters};
use crate::support::cloud::ld_bulk;
use crate::support::http_receivers::{
    basic_credentials, mparticle_events, Fault, MPARTICLE_MAX_BATCH_BYTES,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_per_user_follow_the_events_api_and_limits_are_respected() {
    let scratch = tempfile::tempdir().unwrap();
    let mparticle = MParticle::start(scratch.path()).await;
    mparticle.receiver.inject(Fault::Status(429, Some(2)));
    let dest = mparticle.url("&environment=development&identity=other&project=acme");
    let server = serve(scratch.path(), &dest, &[KEY, SECRET]).await;

    let mut body = ld_bulk("mp", 6, 2);
    body[5]["variationName"] = json!("x".repeat(MPARTICLE_MAX_BATCH_BYTES + 10));
    post(&server, &body).await;
    wait_acknowledged(&server).await;

    let answered = mparticle.receiver.answered();
    assert_eq!(answered[0].1, 429);
    let waited = answered[1].0.at - answered[0].0.at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {waited:?}"
    );
    assert!(
        answered[1..].iter().all(|(_, status)| *status == 202),
        "{:?}",
        answered.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    for request in mparticle.receiver.accepted() {
        assert_eq!(
            basic_credentials(&request),
            Some((KEY.1.to_string(), SECRET.1.to_string()))
        );
        let batches: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
        assert!(batches.len() <= 2, "one batch per user: {batches:#?}");
    }
    assert!(
        mparticle.invalid.lock().is_empty(),
        "{:#?}",
        mparticle.invalid.lock()
    );

    let events = mparticle_events(&mparticle.receiver);
    assert_eq!(events.len(), 5, "{events:#?}");
    let mut ids = std::collections::HashSet::new();
    for (i, (batch, event)) in events.iter().enumerate() {
        assert_eq!(batch["environment"], "development");
        let user = batch["user_identities"]["other"].as_str().unwrap();
        let data = &event["data"];
        let seq = data["custom_attributes"]["variation_name"]
            .as_str()
            .unwrap();
        let n: usize = seq.strip_prefix("mp-").unwrap().parse().unwrap();
        assert_eq!(user, format!("user-{}", n % 2), "event {i}");
        assert_eq!(event["event_type"], "custom_event");
        assert_eq!(data["event_name"], "Feature");
        assert_eq!(data["custom_event_type"], "other");
        assert_eq!(
            data["timestamp_unixtime_ms"],
            1_700_000_000_000u64 + n as u64
        );
        let id = data["source_message_id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "the event id: {id}");
        assert!(ids.insert(id.to_string()), "unique source_message_id");
        let attributes = &data["custom_attributes"];
        assert_eq!(attributes["project"], "acme");
        assert_eq!(attributes["key"], "new-checkout");
        assert_eq!(attributes["version"], "1");
        assert_eq!(attributes["value"], "true");
        assert_eq!(attributes["flag_version"], "12");
        assert_eq!(attributes["default"], "false");
    }

    let dead = wait_dead_letters(scratch.path(), 1, &server).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("bytes"), "{reason}");
}
