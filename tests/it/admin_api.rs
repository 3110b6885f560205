//! The admin API as an operator reaches it through the binary: the bearer token that guards
//! every route but the probes, and the refusal to start an unguarded admin listener off
//! loopback.

use std::process::Command;

use bytes::Bytes;
use flagstream_harness::client;
use http::Method;
use serde_json::Value;

use crate::support::serve::Flagstream;

const TOKEN: &str = "s3cret-admin-token-0123456789";

async fn call(
    server: &Flagstream,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, String) {
    let response = client::request(server.admin, method, path, headers, Bytes::new())
        .await
        .expect("admin answers");
    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response.status, json, response.text())
}

#[tokio::test]
async fn the_admin_token_guards_every_route_but_the_probes() {
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--admin-token", &format!("file:{}", token_file.display())])
        .start()
        .await;
    let bearer = format!("Bearer {TOKEN}");
    let authorized = [("authorization", bearer.as_str())];

    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            call(&server, Method::GET, probe, &[]).await.0,
            200,
            "{probe}"
        );
    }
    for path in ["/metrics", "/v1/destinations", "/v1/destinations/file"] {
        let (status, body, _) = call(&server, Method::GET, path, &[]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let wrong = [("authorization", "Bearer s3cret-admin-token-0123456788")];
        let (status, _, _) = call(&server, Method::GET, path, &wrong).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, _, text) = call(&server, Method::GET, path, &authorized).await;
        assert_eq!(status, 200, "{path}: {text}");
    }
    let pause = "/v1/destinations/file/pause";
    let (status, _, _) = call(&server, Method::POST, pause, &[]).await;
    assert_eq!(status, 401);
    // The token proves the caller is no browser page, so the content-type rule does not apply.
    let with_text = [authorized[0], ("content-type", "text/plain")];
    let (status, body, text) = call(&server, Method::POST, pause, &with_text).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["paused"], true, "{text}");
}

#[tokio::test]
async fn metrics_can_be_public_while_the_api_stays_guarded() {
    let data = tempfile::tempdir().unwrap();
    let server = Flagstream::builder(data.path())
        .args(["--admin-token", TOKEN, "--admin-metrics-public"])
        .start()
        .await;
    let (status, _, text) = call(&server, Method::GET, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(text.contains("flagstream_"), "{text}");
    assert_eq!(
        call(&server, Method::GET, "/v1/destinations", &[]).await.0,
        401
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let data = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_flagstream");
    let run = |extra: &[&str]| {
        Command::new(binary)
            .args(["validate", "--data-dir", data.path().to_str().unwrap()])
            .args(extra)
            .env_remove("FLAGSTREAM_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let open = run(&["--admin-listen", "0.0.0.0:8031"]);
    assert_eq!(open.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(stderr.contains("--admin-token"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");

    let short = run(&["--admin-listen", "0.0.0.0:8031", "--admin-token", "short"]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16"));

    let missing_env = run(&["--admin-token", "env:FLAGSTREAM_TEST_NO_SUCH_VARIABLE"]);
    assert_eq!(missing_env.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing_env.stderr);
    assert!(
        stderr.contains("FLAGSTREAM_TEST_NO_SUCH_VARIABLE"),
        "{stderr}"
    );

    let guarded = run(&["--admin-listen", "0.0.0.0:8031", "--admin-token", TOKEN]);
    assert!(
        guarded.status.success(),
        "{}",
        String::from_utf8_lossy(&guarded.stderr)
    );
}
