//! The webhook destination end to end (`flagstream serve` → an in-process receiver): the
//! go-feature-flag envelope field by field, signature, gzip, auth and custom headers, and
//! status handling (429 with `Retry-After`, 5xx, a receiver slower than the timeout).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::conformance::{post, serve, wait_acknowledged, DEST};
use crate::support::cloud::ld_bulk;
use crate::support::http_receivers::{hmac_sha256_hex, Fault, Receiver, WebhookContract};

const SECRET: (&str, &str) = ("FLAGSTREAM_TEST_HOOK_SECRET", "It's a Secret to Everybody");
const TOKEN: (&str, &str) = ("FLAGSTREAM_TEST_HOOK_TOKEN", "hook-token-1");

async fn receiver(token: bool) -> Receiver {
    Receiver::start(WebhookContract {
        paths: Arc::new(Mutex::new(vec!["/hook".to_string()])),
        secret: Some(SECRET.1.to_string()),
        token: token.then(|| TOKEN.1.to_string()),
        max_body_bytes: 1 << 20,
    })
    .await
}

fn header<'a>(request: &'a crate::support::http_receivers::Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_feature_flag_envelope_signed_gzipped_with_auth_and_custom_headers() {
    let scratch = tempfile::tempdir().unwrap();
    let hook = receiver(true).await;
    let dest = format!(
        "webhook+http://{}/hook?name={DEST}&schema=gofeatureflag&secret=env:{}&token=env:{}\
         &gzip=true&header.X-Team=flags&meta.service=checkout",
        hook.authority(),
        SECRET.0,
        TOKEN.0
    );
    let server = serve(scratch.path(), &dest, &[SECRET, TOKEN]).await;
    post(&server, &ld_bulk("goff", 10, 3)).await;
    wait_acknowledged(&server).await;

    let accepted = hook.accepted();
    assert!(!accepted.is_empty());
    let mut events = Vec::new();
    for request in &accepted {
        assert_eq!(header(request, "content-encoding"), "gzip");
        assert_eq!(header(request, "content-type"), "application/json");
        assert_eq!(header(request, "x-team"), "flags");
        assert_eq!(header(request, "authorization"), "Bearer hook-token-1");
        assert!(!header(request, "idempotency-key").is_empty());
        // The signature covers the gzipped bytes on the wire, not the decoded body.
        let expected = format!(
            "sha256={}",
            hmac_sha256_hex(SECRET.1.as_bytes(), &request.wire_body)
        );
        assert_eq!(header(request, "x-hub-signature-256"), expected);
        assert_ne!(request.wire_body, request.body, "gzipped on the wire");
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let meta = body["meta"].as_object().unwrap();
        assert!(
            meta["hostname"].as_str().is_some_and(|h| !h.is_empty()),
            "{body}"
        );
        assert_eq!(meta["service"], "checkout");
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(events.len(), 10);
    for (i, event) in events.iter().enumerate() {
        // go-feature-flag's exporter.FeatureEvent, field by field, in its order.
        let expected = json!({
            "kind": "feature",
            "contextKind": "user",
            "userKey": format!("user-{}", i % 3),
            "creationDate": 1_700_000_000u64,
            "key": "new-checkout",
            "variation": format!("goff-{i}"),
            "value": true,
            "default": false,
            "version": "12",
            "source": "INPROCESS",
        });
        assert_eq!(event, &expected, "event {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_errors_and_timeouts_are_retried_through_the_classifier() {
    let scratch = tempfile::tempdir().unwrap();
    let hook = receiver(false).await;
    hook.inject(Fault::Status(429, Some(2)));
    hook.inject(Fault::Status(503, None));
    // Slower than the destination's timeout: flagstream gives up and re-sends; the receiver
    // stored the first copy and deduplicates the re-send on its Idempotency-Key.
    hook.inject(Fault::Delay(Duration::from_secs(3)));
    let dest = format!(
        "webhook+http://{}/hook?name={DEST}&secret=env:{}&format=ndjson&timeout=1s",
        hook.authority(),
        SECRET.0
    );
    let server = serve(scratch.path(), &dest, &[SECRET]).await;
    post(&server, &ld_bulk("retry", 5, 1)).await;
    wait_acknowledged(&server).await;

    let answered = hook.answered();
    let statuses: Vec<u16> = answered.iter().map(|(_, status)| *status).collect();
    assert_eq!(&statuses[..3], &[429, 503, 200], "{statuses:?}");
    let throttle_wait = answered[1].0.at - answered[0].0.at;
    assert!(
        throttle_wait >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {throttle_wait:?}"
    );
    let keys: std::collections::BTreeSet<&str> = answered
        .iter()
        .map(|(request, _)| header(request, "idempotency-key"))
        .collect();
    let accepted = hook.accepted();
    let accepted_keys: std::collections::BTreeSet<&str> = accepted
        .iter()
        .map(|r| header(r, "idempotency-key"))
        .collect();
    assert_eq!(keys, accepted_keys, "every retry re-used its batch id");
    let seqs: Vec<String> = accepted
        .iter()
        .flat_map(|request| {
            crate::conformance::test_seqs_of_lines(std::str::from_utf8(&request.body).unwrap())
        })
        .collect();
    crate::support::cloud::assert_exactly_once(&seqs, crate::conformance::tagged("retry", 5));
}
