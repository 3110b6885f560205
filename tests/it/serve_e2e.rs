//! End-to-end tests of `flagstream serve`: the real binary, real HTTP, the real WAL and the
//! real file destination. Each test gets its own data dir and ephemeral loopback ports.

use crate::support::serve as support;

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use support::*;

/// method, path, headers, body, expected status, expected error code.
type RefusalCase<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
    &'a str,
);

const TIMEOUT: Duration = Duration::from_secs(60);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A server with the test environment and a fast-rotating file destination.
async fn start(data: &tempfile::TempDir, extra: &[&str]) -> (Flagstream, std::path::PathBuf) {
    start_with(data, "", extra).await
}

/// Like [`start`], with extra query options for the file destination (`&kinds=all`).
async fn start_with(
    data: &tempfile::TempDir,
    dest_options: &str,
    extra: &[&str],
) -> (Flagstream, std::path::PathBuf) {
    let export = data.path().join("export");
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!(
                "file://{}?rotate=100ms&name=archive{dest_options}",
                export.display()
            ),
        ])
        .args(extra.iter().copied())
        .start()
        .await;
    (server, export)
}

async fn post(
    client: &reqwest::Client,
    url: String,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_accepts_and_every_event_reaches_the_file_destination() {
    let data = tempfile::tempdir().unwrap();
    let (server, export) = start(&data, &[]).await;
    let client = client();
    let sdk = ("authorization", SDK_KEY);
    let mobile = ("authorization", MOBILE_KEY);
    let mut expected_markers = Vec::new();
    let mut next = 0u64;
    let mut bulk = |expected: &mut Vec<u64>| {
        let body = numbered_bulk(next, 2);
        expected.extend([next, next + 1]);
        next += 2;
        body
    };

    for (path, auth) in [
        ("/bulk", sdk),
        ("/mobile", mobile),
        ("/mobile/events", mobile),
        ("/mobile/events/bulk", mobile),
    ] {
        let (status, _, body) = post(
            &client,
            server.url(path),
            &[auth],
            bulk(&mut expected_markers),
        )
        .await;
        assert_eq!(status, 202, "{path}: {body}");
    }
    let (status, _, _) = post(
        &client,
        server.url("/bulk"),
        &[sdk, ("content-encoding", "gzip")],
        gzip(bulk(&mut expected_markers).as_bytes()),
    )
    .await;
    assert_eq!(status, 202, "gzip /bulk");
    let (status, headers, _) = post(
        &client,
        server.url(&format!("/events/bulk/{CLIENT_ID}")),
        &[("origin", "https://app.example")],
        bulk(&mut expected_markers),
    )
    .await;
    assert_eq!(status, 202, "browser bulk");
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );

    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/events/bulk/{CLIENT_ID}")),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));

    let pixel = base64::engine::general_purpose::STANDARD.encode(bulk(&mut expected_markers));
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("d", &pixel)
        .finish();
    let response = client
        .get(server.url(&format!("/a/{CLIENT_ID}.gif?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "pixel");
    assert_eq!(response.headers()["content-type"], "image/gif");

    let (status, _, body) = post(
        &client,
        server.url("/v1/events"),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        bulk(&mut expected_markers),
    )
    .await;
    assert_eq!(status, 202, "generic array: {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["accepted"], 2);
    let ndjson = numbered_bulk(next, 2);
    let ndjson: Vec<Value> = serde_json::from_str(&ndjson).unwrap();
    expected_markers.extend([next, next + 1]);
    let ndjson = ndjson
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let (status, _, body) = post(
        &client,
        server.url("/v1/events"),
        &[
            ("x-api-key", API_KEY),
            ("content-type", "application/x-ndjson"),
        ],
        ndjson,
    )
    .await;
    assert_eq!(status, 202, "generic NDJSON: {body}");

    let goff = r#"{"meta":{"provider":"python"},"events":[
        {"kind":"feature","contextKind":"user","userKey":"u1","creationDate":1717000000,"key":"new-checkout","variation":"enabled","value":true,"default":false,"version":"3","source":"PROVIDER_CACHE"},
        {"kind":"tracking","contextKind":"user","userKey":"u1","creationDate":1717000005,"key":"checkout-completed","evaluationContext":{"targetingKey":"u1"},"trackingEventDetails":{"value":99.5}}]}"#;
    let (status, _, body) = post(
        &client,
        server.url("/v1/data/collector"),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        goff,
    )
    .await;
    assert_eq!(status, 200, "goff collector: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["ingestedContentCount"],
        2
    );

    // Diagnostics are accepted and stored but never exported.
    let diagnostic = r#"{"kind":"diagnostic","id":{"diagnosticId":"d1"},"creationDate":1}"#;
    for (path, auth) in [
        ("/diagnostic".to_string(), Some(sdk)),
        ("/mobile/events/diagnostic".to_string(), Some(mobile)),
        (format!("/events/diagnostic/{CLIENT_ID}"), None),
    ] {
        let headers: Vec<(&str, &str)> = auth.into_iter().collect();
        let (status, _, body) = post(&client, server.url(&path), &headers, diagnostic).await;
        assert_eq!(status, 202, "{path}: {body}");
    }

    let total = expected_markers.len() + 2;
    server.wait_delivered(TIMEOUT).await;
    let events = wait_for_export(&export, total, TIMEOUT).await;
    assert_eq!(
        events.len(),
        total,
        "no extra events (diagnostics are not exported)"
    );
    let mut got = markers(&events);
    got.sort_unstable();
    assert_eq!(got, expected_markers, "every numbered event exactly once");
    let ids: HashSet<&str> = events
        .iter()
        .map(|event| event["event"]["id"].as_str().expect("stable event id"))
        .collect();
    assert_eq!(ids.len(), total, "event ids are unique");
    for event in &events {
        assert_eq!(event["environment"], "production", "{event}");
        assert_eq!(event["version"], 1, "{event}");
    }
    assert_eq!(
        metric(
            server.admin,
            "flagstream_ingest_events_total",
            &[("route", "bulk")]
        )
        .await,
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_a_json_error_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let (server, export) = start(&data, &["--max-body-bytes", "64KiB"]).await;
    let client = client();
    let sdk = ("authorization", SDK_KEY);
    let bomb = gzip(&vec![b' '; 1024 * 1024]);
    let pixel_path = format!("/a/{CLIENT_ID}.gif?d=%%%");
    let cases: Vec<RefusalCase> = vec![
        (
            "POST",
            "/bulk",
            vec![sdk],
            b"[{\"kind\":".to_vec(),
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/bulk",
            vec![sdk],
            b"{\"kind\":\"custom\"}".to_vec(),
            400,
            "wrong_shape",
        ),
        ("POST", "/bulk", vec![sdk], Vec::new(), 400, "empty_body"),
        (
            "POST",
            "/bulk",
            vec![sdk, ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
            400,
            "invalid_gzip",
        ),
        (
            "POST",
            "/v1/data/collector",
            vec![("x-api-key", API_KEY)],
            b"{\"meta\":{}}".to_vec(),
            400,
            "missing_events",
        ),
        (
            "POST",
            "/bulk",
            vec![("authorization", "wrong-key")],
            numbered_bulk(0, 1).into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/bulk",
            vec![],
            numbered_bulk(0, 1).into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/events/bulk/unknown-client-id",
            vec![],
            numbered_bulk(0, 1).into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/no/such/route",
            vec![sdk],
            numbered_bulk(0, 1).into_bytes(),
            404,
            "not_found",
        ),
        (
            "GET",
            "/bulk",
            vec![sdk],
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/bulk",
            vec![sdk],
            vec![b' '; 64 * 1024 + 1],
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/bulk",
            vec![sdk, ("content-encoding", "gzip")],
            bomb,
            413,
            "decompressed_too_large",
        ),
        (
            "POST",
            "/bulk",
            vec![sdk, ("content-encoding", "br")],
            numbered_bulk(0, 1).into_bytes(),
            415,
            "unsupported_encoding",
        ),
        (
            "GET",
            pixel_path.as_str(),
            vec![],
            Vec::new(),
            400,
            "invalid_pixel_payload",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let mut request = client
            .request(method.parse().unwrap(), server.url(path))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"], code, "{method} {path}: {json}");
        assert!(
            json["detail"]
                .as_str()
                .is_some_and(|detail| !detail.is_empty()),
            "{method} {path}: {json}"
        );
    }
    // Only this batch may ever reach the destination.
    let (status, _, _) = post(&client, server.url("/bulk"), &[sdk], numbered_bulk(1000, 3)).await;
    assert_eq!(status, 202);
    server.wait_delivered(TIMEOUT).await;
    let events = wait_for_export(&export, 3, TIMEOUT).await;
    assert_eq!(markers(&events), vec![1000, 1001, 1002]);
    assert!(
        metric(
            server.admin,
            "flagstream_ingest_rejected_total",
            &[("reason", "unauthorized")]
        )
        .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("export");
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!("file://{}?rotate=100ms&name=archive", export.display()),
        ])
        // Overrides the harness's sizes: two 1 MiB segments, bodies up to 512 KiB.
        .args(["--wal-segment-bytes", "1MiB", "--wal-max-bytes", "2MiB"])
        .args(["--max-body-bytes", "512KiB"])
        .start()
        .await;
    let client = client();
    // Paused: nothing is delivered, so nothing is freed.
    let paused = client
        .post(server.admin_url("/v1/destinations/archive/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status().as_u16(), 200);

    let per_body = 1000u64;
    let mut accepted = Vec::new();
    let mut full = None;
    for batch in 0..64u64 {
        let body = numbered_bulk(batch * per_body, per_body);
        let (status, headers, text) = post(
            &client,
            server.url("/bulk"),
            &[("authorization", SDK_KEY)],
            body,
        )
        .await;
        match status {
            202 => accepted.push(batch),
            503 => {
                full = Some((headers, text));
                break;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let (headers, text) = full.expect("the WAL fills up within 64 bodies of ~150 KiB");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        "wal_full"
    );
    assert!(!accepted.is_empty());

    let resumed = client
        .post(server.admin_url("/v1/destinations/archive/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status().as_u16(), 200);
    server.wait_delivered(TIMEOUT).await;
    let expected = accepted.len() * per_body as usize;
    let events = wait_for_export(&export, expected, TIMEOUT).await;
    let got: HashSet<u64> = markers(&events).into_iter().collect();
    for batch in accepted {
        for n in batch * per_body..(batch + 1) * per_body {
            assert!(got.contains(&n), "accepted event {n} missing");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_payload_id_is_stored_once() {
    let data = tempfile::tempdir().unwrap();
    let (server, export) = start(&data, &[]).await;
    let client = client();
    let headers = [
        ("authorization", SDK_KEY),
        (
            "x-launchdarkly-payload-id",
            "7b4c9e2a-0000-4000-8000-000000000001",
        ),
        ("x-launchdarkly-event-schema", "4"),
    ];
    for _ in 0..3 {
        let (status, _, _) =
            post(&client, server.url("/bulk"), &headers, numbered_bulk(0, 5)).await;
        assert_eq!(status, 202);
    }
    // Everything accepted is acknowledged: a second copy would already be in the export.
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(read_export(&export).len(), 5, "stored and delivered once");
    assert_eq!(
        metric(
            server.admin,
            "flagstream_ingest_duplicate_payloads_total",
            &[]
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_pauses_and_resumes_destinations() {
    let data = tempfile::tempdir().unwrap();
    // A second, never paused destination on the same log: once it has delivered, the paused
    // one had every chance to send too.
    let control = data.path().join("control");
    let control_dest = format!("file://{}?rotate=100ms&name=control", control.display());
    let (server, export) = start(&data, &["--dest", &control_dest]).await;
    let client = client();
    assert_eq!(http_status(server.admin, "/healthz").await, Some(200));
    assert_eq!(http_status(server.admin, "/readyz").await, Some(200));
    let status = server.destinations().await;
    let archive = &status["destinations"][0];
    assert_eq!(archive["name"], "archive");
    assert_eq!(archive["kind"], "file");
    assert!(archive["lag"]["records"].is_u64(), "{archive}");

    let (code, body) = http_request(server.admin, "POST", "/v1/destinations/archive/pause")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["paused"],
        true
    );
    let (code, _, _) = post(
        &client,
        server.url("/bulk"),
        &[("authorization", SDK_KEY)],
        numbered_bulk(0, 4),
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(wait_for_export(&control, 4, TIMEOUT).await.len(), 4);
    assert!(
        read_export(&export).is_empty(),
        "paused destinations send nothing"
    );
    let lag = &server.destinations().await["destinations"][0]["lag"];
    assert_eq!(lag["records"], 1, "{lag}");

    let (code, _) = http_request(server.admin, "POST", "/v1/destinations/archive/resume")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(wait_for_export(&export, 4, TIMEOUT).await.len(), 4);
    let (code, body) = http_request(server.admin, "POST", "/v1/destinations/nope/pause")
        .await
        .unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "unknown_destination"
    );

    let metrics = http_get(server.admin, "/metrics").await.unwrap();
    for name in [
        "flagstream_ingest_requests_total",
        "flagstream_ingest_events_total",
        "flagstream_ingest_request_duration_seconds",
        "flagstream_ready",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_backlog_resumes_where_it_stopped() {
    let data = tempfile::tempdir().unwrap();
    let client = client();
    let (mut server, export) = start(&data, &[]).await;
    let (code, _, _) = post(
        &client,
        server.url("/bulk"),
        &[("authorization", SDK_KEY)],
        numbered_bulk(0, 100),
    )
    .await;
    assert_eq!(code, 202);
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(wait_for_export(&export, 100, TIMEOUT).await.len(), 100);

    // Build a backlog: pause, accept more, stop gracefully.
    let (code, _) = http_request(server.admin, "POST", "/v1/destinations/archive/pause")
        .await
        .unwrap();
    assert_eq!(code, 200);
    for batch in 1..=20u64 {
        let (code, _, _) = post(
            &client,
            server.url("/bulk"),
            &[("authorization", SDK_KEY)],
            numbered_bulk(batch * 100, 100),
        )
        .await;
        assert_eq!(code, 202);
    }
    let status = server.terminate().await;
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status}\n{}",
        server.log_text()
    );
    assert_eq!(
        read_export(&export).len(),
        100,
        "the backlog was not delivered yet"
    );

    let (server, _) = start(&data, &[]).await;
    server.wait_delivered(TIMEOUT).await;
    let events = wait_for_export(&export, 2100, TIMEOUT).await;
    let mut got = markers(&events);
    got.sort_unstable();
    assert_eq!(
        got,
        (0..2100).collect::<Vec<_>>(),
        "everything once, nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launchdarkly_python_sdk_delivers_every_event_to_the_file_destination() {
    let data = tempfile::tempdir().unwrap();
    // Every kind, including `index` and `summary` (withheld by the default filter).
    let (server, export) = start_with(&data, "&kinds=all", &[]).await;
    let users: u64 = 50;
    let sent = run_ld_sdk(
        &format!("http://{}", server.ingest),
        SDK_KEY,
        users as usize,
        false,
    );
    assert_eq!(sent["feature"], 2 * users);

    server.wait_delivered(TIMEOUT).await;
    let accepted = metric(
        server.admin,
        "flagstream_ingest_events_total",
        &[("route", "bulk")],
    )
    .await;
    assert!(accepted > 0.0, "the SDK posted to /bulk");
    let events = wait_for_export(&export, accepted as usize, TIMEOUT).await;
    assert_eq!(
        events.len(),
        accepted as usize,
        "every accepted event exported once"
    );
    let kinds = kinds(&events);
    assert_eq!(
        kinds.get("feature").copied(),
        Some(2 * users as usize),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.get("custom").copied(),
        Some(users as usize),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.get("identify").copied(),
        Some(users as usize),
        "{kinds:?}"
    );
    assert!(kinds.get("summary").copied().unwrap_or(0) >= 1, "{kinds:?}");
    assert_eq!(
        kinds.get("index").copied(),
        Some(users as usize),
        "{kinds:?}"
    );
    let custom_ns: HashSet<u64> = markers(&events).into_iter().collect();
    assert_eq!(
        custom_ns,
        (0..users).collect(),
        "every tracked event arrived"
    );
    for event in &events {
        assert_eq!(event["environment"], "production");
    }
    let requests = metric(
        server.admin,
        "flagstream_ingest_requests_total",
        &[("route", "bulk"), ("status", "202")],
    )
    .await;
    assert!(requests >= 1.0);
}

#[test]
fn validate_and_bad_flags_exit_with_code_2_naming_the_flag() {
    let data = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_flagstream");
    // The quick start: every default, a relative data dir.
    let quick_start = Command::new(binary)
        .arg("validate")
        .current_dir(data.path())
        .env_remove("FLAGSTREAM_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        quick_start.status.success(),
        "{}",
        String::from_utf8_lossy(&quick_start.stderr)
    );
    let ok = Command::new(binary)
        .args(["validate", "--data-dir", data.path().to_str().unwrap()])
        .args(["--environment", &production_env(), "--dest", "log:"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));

    for (args, needle) in [
        (vec!["serve", "--wal-sync", "sometimes"], "--wal-sync"),
        (
            vec!["validate", "--environment", "production"],
            "--environment",
        ),
        (vec!["validate", "--dest", "bogus://x"], "--dest"),
        (
            vec!["validate", "--dest", "file:///tmp/x?colour=blue"],
            "colour",
        ),
        (
            vec!["validate", "--max-body-bytes", "lots"],
            "--max-body-bytes",
        ),
        (
            vec!["validate", "--max-connections", "0"],
            "--max-connections",
        ),
    ] {
        let output = Command::new(binary)
            .args(&args)
            .args(["--data-dir", data.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }

    let config = data.path().join("flagstream.toml");
    std::fs::write(&config, "listn = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(binary)
        .args(["validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("listn"));

    let help = Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "[default: 127.0.0.1:8030]",
        "[env: FLAGSTREAM_WAL_SYNC=]",
        "[default: always]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn test_destination_sends_a_recognisable_event() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("export");
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", "archive"])
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args([
            "--dest",
            &format!("file://{}?name=archive", export.display()),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("delivered"), "{stdout}");
    let events = read_export(&export);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["key"], "LaunchDarklyDataExportTestEvent");

    let missing = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args([
            "test-destination",
            "nope",
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_inspect_and_verify_read_what_serve_wrote() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, _) = start(&data, &[]).await;
    let client = client();
    for batch in 0..3 {
        let (code, _, _) = post(
            &client,
            server.url("/bulk"),
            &[("authorization", SDK_KEY)],
            numbered_bulk(batch * 10, 10),
        )
        .await;
        assert_eq!(code, 202);
    }
    server.wait_delivered(TIMEOUT).await;
    assert!(server.terminate().await.success());
    let wal_dir = data.path().join("data/wal");
    let binary = env!("CARGO_BIN_EXE_flagstream");
    let verify = Command::new(binary)
        .args(["wal", "verify", wal_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let inspect = Command::new(binary)
        .args(["wal", "inspect", "--json", wal_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let report: Value = serde_json::from_slice(&inspect.stdout).expect("JSON report");
    let text = report.to_string();
    assert!(
        text.contains("archive"),
        "the destination's cursor is listed: {text}"
    );
    let missing = Command::new(binary)
        .args(["wal", "verify", data.path().join("nope").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
