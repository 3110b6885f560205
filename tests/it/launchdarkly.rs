//! The LaunchDarkly upstream destination end to end: SDK traffic through the real binary to
//! an in-process LaunchDarkly events service ([`LdEventsContract`]: keys checked per route,
//! bodies checked per shape, 202), compared with what the senders sent.
//!
//! * The LaunchDarkly Python SDK, behind a recording proxy, posts through flagstream: every
//!   request it made (events and diagnostics) reaches LaunchDarkly at the same path with the
//!   same body bytes, the same `X-LaunchDarkly-*` and `User-Agent` headers and the key it used
//!   (the second of its environment's two SDK keys), and no key is in the data dir.
//! * Mobile and browser routes (and the pixel) keep their paths and credentials (sent
//!   gzipped with `gzip=true`, the bodies identical once decoded);
//!   go-feature-flag records are skipped and counted.
//! * 503 and 429 are retried; a record LaunchDarkly kept but whose answer was lost is
//!   re-sent with the same payload id and stored once; a key LaunchDarkly refuses (401)
//!   dead-letters the record (by record: the suite's `missing_target` and `resent_batch`
//!   count events, which a raw-records destination does not).
//! * `flagstream test-destination` posts its test event to `/bulk` with the environment's
//!   SDK key; with no credential configured the destination is refused (exit 2).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::support::eventually;
use crate::support::http_receivers::{Fault, Received, Receiver};
use crate::support::ld_events::{header_of, LdEventsContract, Proxied, RecordingProxy};
use crate::support::serve::{metric, run_ld_sdk, Flagstream};

const SDK_KEY: &str = "sdk-5a1e0000-0000-4000-8000-00000000a11c";
const OTHER_SDK_KEY: &str = "sdk-5a1e0000-0000-4000-8000-00000000b0b0";
const MOBILE_KEY: &str = "mob-5a1e0000-0000-4000-8000-0000000000ff";
const CLIENT_SIDE_ID: &str = "5f0c0ffee0ddba11cafe0001";
/// Known to flagstream (environment `staging`), unknown to LaunchDarkly: refused with 401.
const STAGING_KEY: &str = "sdk-5a1e0000-0000-4000-8000-00000057a61e";
const TIMEOUT: Duration = Duration::from_secs(60);

/// The headers LaunchDarkly relies on, which must arrive as the sender sent them.
const SENDER_HEADERS: [&str; 6] = [
    "user-agent",
    "x-launchdarkly-event-schema",
    "x-launchdarkly-payload-id",
    "x-launchdarkly-user-agent",
    "x-launchdarkly-tags",
    "x-launchdarkly-wrapper",
];

async fn launchdarkly() -> Receiver {
    Receiver::start(LdEventsContract {
        sdk_keys: vec![SDK_KEY.into(), OTHER_SDK_KEY.into()],
        mobile_keys: vec![MOBILE_KEY.into()],
        client_side_ids: vec![CLIENT_SIDE_ID.into()],
    })
    .await
}

/// flagstream with `production` (two SDK keys, a mobile key, a client-side id) and `staging`,
/// forwarding to `ld` with the extra destination `options` (`&gzip=true`).
async fn flagstream(scratch: &Path, ld: &Receiver, options: &str) -> Flagstream {
    let production = format!("production={SDK_KEY},{OTHER_SDK_KEY},{MOBILE_KEY},{CLIENT_SIDE_ID}");
    Flagstream::builder(scratch.join("data"))
        .args(["--environment", &production])
        .args(["--environment", &format!("staging={STAGING_KEY}")])
        .args([
            "--dest",
            &format!("launchdarkly:?name=ld&endpoint={}{options}", ld.base_url()),
        ])
        .args(["--retry-initial-backoff", "100ms"])
        .args(["--retry-max-backoff", "1s"])
        .start()
        .await
}

/// The request LaunchDarkly accepted with `path` and exactly `body`.
fn forwarded<'a>(accepted: &'a [Received], path: &str, body: &[u8]) -> &'a Received {
    accepted
        .iter()
        .find(|request| request.path == path && request.body == body)
        .unwrap_or_else(|| {
            panic!(
                "LaunchDarkly got no {path} with {}",
                String::from_utf8_lossy(body)
            )
        })
}

fn proxied_header<'a>(request: &'a Proxied, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// No file under `dir` contains any of `secrets`.
fn assert_nowhere_in(dir: &Path, secrets: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_nowhere_in(&path, secrets);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for secret in secrets {
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "{} contains the key {secret}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_traffic_reaches_launchdarkly_byte_for_byte_with_the_senders_key() {
    let scratch = tempfile::tempdir().unwrap();
    let ld = launchdarkly().await;
    let server = flagstream(scratch.path(), &ld, "").await;
    let proxy = RecordingProxy::start(format!("http://{}", server.ingest)).await;

    // The second of production's two SDK keys: what LaunchDarkly gets must be this one.
    let report = run_ld_sdk(&proxy.url(), OTHER_SDK_KEY, 20, true);
    assert_eq!(report["feature"], 40, "{report}");
    let sent = proxy.requests();
    for path in ["/bulk", "/diagnostic"] {
        assert!(sent.iter().any(|r| r.path == path), "the SDK posted {path}");
    }
    assert!(sent.iter().all(|r| r.status == 202), "{sent:#?}");
    assert!(
        sent.iter()
            .all(|r| proxied_header(r, "content-encoding").is_empty()),
        "the Python SDK does not gzip: bodies compare as sent"
    );

    server.wait_delivered(TIMEOUT).await;
    let accepted = ld.accepted();
    assert_eq!(accepted.len(), sent.len(), "one forward per SDK request");
    for original in &sent {
        let copy = forwarded(&accepted, &original.path, &original.body);
        assert_eq!(header_of(copy, "authorization"), OTHER_SDK_KEY);
        assert_eq!(proxied_header(original, "authorization"), OTHER_SDK_KEY);
        for name in SENDER_HEADERS {
            assert_eq!(
                header_of(copy, name),
                proxied_header(original, name),
                "{name} of {}",
                original.path
            );
        }
    }
    let bulk = sent.iter().find(|r| r.path == "/bulk").unwrap();
    assert!(proxied_header(bulk, "user-agent").starts_with("PythonClient/"));
    assert!(!proxied_header(bulk, "x-launchdarkly-payload-id").is_empty());
    assert_nowhere_in(
        &scratch.path().join("data"),
        &[SDK_KEY, OTHER_SDK_KEY, MOBILE_KEY],
    );
}

/// A request as a mobile or browser SDK makes it.
struct SdkPost {
    path: String,
    key: Option<&'static str>,
    body: &'static str,
    payload_id: &'static str,
}

const EVENTS: &str =
    r#"[{"kind":"identify","creationDate":1700000000000,"context":{"kind":"user","key":"m-1"}}]"#;
const DIAGNOSTIC: &str =
    r#"{"kind":"diagnostic","id":{"diagnosticId":"d-1"},"creationDate":1700000000000}"#;

async fn post_as_sdk(server: &Flagstream, post: &SdkPost) {
    let mut request = reqwest::Client::new()
        .post(server.url(&post.path))
        .header("content-type", "application/json")
        .header("user-agent", "okhttp/4.12.0")
        .header("x-launchdarkly-user-agent", "AndroidClient/5.4.0")
        .header("x-launchdarkly-wrapper", "ReactNativeClient/10.1.0")
        .header("x-launchdarkly-tags", "application-id/shop")
        .header("x-launchdarkly-event-schema", "4")
        .body(post.body);
    if let Some(key) = post.key {
        request = request.header("authorization", key);
    }
    if !post.payload_id.is_empty() {
        request = request.header("x-launchdarkly-payload-id", post.payload_id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202, "{}", post.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_and_browser_requests_keep_their_paths_and_credentials() {
    let scratch = tempfile::tempdir().unwrap();
    let ld = launchdarkly().await;
    let server = flagstream(scratch.path(), &ld, "&gzip=true").await;
    let post = |path: &str, key, body, payload_id| SdkPost {
        path: path.to_string(),
        key,
        body,
        payload_id,
    };
    let posts = [
        post("/mobile/events/bulk", Some(MOBILE_KEY), EVENTS, "p-mobile"),
        post("/mobile", Some(MOBILE_KEY), EVENTS, "p-mobile-short"),
        post(
            "/mobile/events/diagnostic",
            Some(MOBILE_KEY),
            DIAGNOSTIC,
            "",
        ),
        post(
            &format!("/events/bulk/{CLIENT_SIDE_ID}"),
            None,
            EVENTS,
            "p-browser",
        ),
        post(
            &format!("/events/diagnostic/{CLIENT_SIDE_ID}"),
            None,
            DIAGNOSTIC,
            "",
        ),
    ];
    for sdk_post in &posts {
        post_as_sdk(&server, sdk_post).await;
    }
    let pixel_events = r#"[{"kind":"custom","creationDate":1700000000001,"key":"pixel","context":{"kind":"user","key":"b-1"}}]"#;
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "d",
            &base64::engine::general_purpose::STANDARD.encode(pixel_events),
        )
        .finish();
    let pixel = reqwest::get(server.url(&format!("/a/{CLIENT_SIDE_ID}.gif?{query}")))
        .await
        .unwrap();
    assert_eq!(pixel.status().as_u16(), 202);
    let goff = r#"{"meta":{"provider":"python"},"events":[{"kind":"feature","contextKind":"user","userKey":"u1","creationDate":1717000000,"key":"f","variation":"on","value":true,"default":false,"version":"3"}]}"#;
    let response = reqwest::Client::new()
        .post(server.url("/v1/data/collector"))
        .header("authorization", format!("Bearer {MOBILE_KEY}"))
        .header("content-type", "application/json")
        .body(goff)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the collector answers as go-feature-flag"
    );

    server.wait_delivered(TIMEOUT).await;
    let accepted = ld.accepted();
    assert_eq!(accepted.len(), posts.len() + 1, "{accepted:#?}");
    for sdk_post in &posts {
        let copy = forwarded(&accepted, &sdk_post.path, sdk_post.body.as_bytes());
        assert_eq!(header_of(copy, "content-encoding"), "gzip", "gzip=true");
        assert_ne!(copy.wire_body, copy.body);
        assert_eq!(header_of(copy, "authorization"), sdk_post.key.unwrap_or(""));
        assert_eq!(header_of(copy, "user-agent"), "okhttp/4.12.0");
        assert_eq!(
            header_of(copy, "x-launchdarkly-user-agent"),
            "AndroidClient/5.4.0"
        );
        assert_eq!(
            header_of(copy, "x-launchdarkly-wrapper"),
            "ReactNativeClient/10.1.0"
        );
        assert_eq!(
            header_of(copy, "x-launchdarkly-tags"),
            "application-id/shop"
        );
        assert_eq!(
            header_of(copy, "x-launchdarkly-payload-id"),
            sdk_post.payload_id
        );
    }
    // The pixel's events go to the browser bulk route, as a POST.
    let from_pixel = forwarded(
        &accepted,
        &format!("/events/bulk/{CLIENT_SIDE_ID}"),
        pixel_events.as_bytes(),
    );
    assert_eq!(header_of(from_pixel, "authorization"), "");
    let skipped = metric(
        server.admin,
        "flagstream_dest_skipped_records_total",
        &[("destination", "ld"), ("format", "goff_collector")],
    )
    .await;
    assert_eq!(
        skipped, 1.0,
        "the go-feature-flag record is skipped, counted"
    );
}

async fn post_bulk(server: &Flagstream, key: &str, payload_id: &str) {
    let response = reqwest::Client::new()
        .post(server.url("/bulk"))
        .header("authorization", key)
        .header("content-type", "application/json")
        .header("x-launchdarkly-payload-id", payload_id)
        .body(EVENTS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_errors_and_lost_answers_are_retried_and_refused_keys_dead_lettered() {
    let scratch = tempfile::tempdir().unwrap();
    let ld = launchdarkly().await;
    ld.inject(Fault::Status(503, None));
    ld.inject(Fault::Status(429, Some(1)));
    // Kept by LaunchDarkly, but the answer is a 502: the re-send carries the same payload id,
    // and LaunchDarkly keeps one copy.
    ld.inject(Fault::LostAnswer(502));
    let server = flagstream(scratch.path(), &ld, "").await;
    post_bulk(&server, SDK_KEY, "p-retried").await;
    server.wait_delivered(TIMEOUT).await;
    let tries: Vec<u16> = ld
        .answered()
        .iter()
        .filter(|(request, _)| header_of(request, "x-launchdarkly-payload-id") == "p-retried")
        .map(|(_, status)| *status)
        .collect();
    assert_eq!(
        tries,
        [503, 429, 502, 202],
        "failed, throttled, lost, duplicate"
    );
    let accepted = ld.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(
        header_of(&accepted[0], "x-launchdarkly-payload-id"),
        "p-retried"
    );

    post_bulk(&server, STAGING_KEY, "p-refused").await;
    let letters = scratch.path().join("data/dead-letters/ld.ndjson");
    let dead: Vec<Value> = eventually("the refused record is dead-lettered", TIMEOUT, || {
        let letters = letters.clone();
        async move {
            let text = std::fs::read_to_string(&letters).map_err(|err| err.to_string())?;
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            if lines.is_empty() {
                Err("no dead letter yet".to_string())
            } else {
                Ok(lines)
            }
        }
    })
    .await;
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("401"), "{reason}");
    assert!(
        !reason.contains(STAGING_KEY),
        "the key is never shown: {reason}"
    );
    assert_eq!(ld.accepted().len(), 1, "nothing else reached LaunchDarkly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_destination_posts_to_bulk_with_the_first_environments_sdk_key() {
    let scratch = tempfile::tempdir().unwrap();
    let ld = launchdarkly().await;
    let dest = format!("launchdarkly:?name=ld&endpoint={}", ld.base_url());
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "ld", "--dest", &dest])
        .args([
            "--environment",
            &format!("production={SDK_KEY},{MOBILE_KEY}"),
        ])
        .env("FLAGSTREAM_DATA_DIR", scratch.path().join("data"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("delivered"), "{stdout}");
    let accepted = ld.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(accepted[0].path, "/bulk");
    assert_eq!(header_of(&accepted[0], "authorization"), SDK_KEY);
    let events: Value = serde_json::from_slice(&accepted[0].body).unwrap();
    assert_eq!(events[0]["key"], "LaunchDarklyDataExportTestEvent");

    // Without --environment or `sdk_key` there is nothing to forward with: refused, naming why.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "ld", "--dest", &dest])
        .env("FLAGSTREAM_DATA_DIR", scratch.path().join("data"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--environment"), "{stderr}");
}
