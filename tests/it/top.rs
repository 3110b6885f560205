//! `flagstream top --once` against a running server: one plain-text screen with the ingest
//! total and each destination's delivered count, and a clear refusal without the admin token.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use flagstream_harness::client;
use http::Method;

use crate::support::serve::{numbered_bulk, production_env, Flagstream, SDK_KEY};

const TOKEN: &str = "top-admin-token-0123456789";

fn top(admin: std::net::SocketAddr, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args([
            "top",
            "--once",
            "--interval",
            "200ms",
            "--admin",
            &admin.to_string(),
        ])
        .args(extra)
        .env_remove("FLAGSTREAM_ADMIN_TOKEN")
        .output()
        .unwrap()
}

#[tokio::test]
async fn top_once_shows_ingest_and_every_destination() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("second");
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env(), "--admin-token", TOKEN])
        .args([
            "--dest",
            &format!("file://{}?name=second&linger=10ms", export.display()),
        ])
        .args([
            "--dest",
            &format!(
                "file://{}?name=first&linger=10ms",
                data.path().join("first").display()
            ),
        ])
        .start()
        .await;
    let headers = [
        ("authorization", SDK_KEY),
        ("content-type", "application/json"),
    ];
    let body = Bytes::from(numbered_bulk(0, 25));
    let response = client::request(server.ingest, Method::POST, "/bulk", &headers, body)
        .await
        .unwrap();
    assert_eq!(response.status, 202);

    let admin = server.admin;
    let screen = crate::support::eventually(
        "top shows the delivered events",
        Duration::from_secs(30),
        || async move {
            let output = top(admin, &["--admin-token", TOKEN]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
            let delivered = |name: &str| {
                text.lines()
                    .find(|line| line.starts_with(name))
                    .map(|line| line.split_whitespace().nth(4) == Some("25"))
                    .unwrap_or(false)
            };
            if delivered("first") && delivered("second") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(screen.contains("(total 25)"), "{screen}");
    assert!(
        screen.lines().nth(2).unwrap().starts_with("DESTINATION"),
        "{screen}"
    );

    let refused = top(admin, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--admin-token"), "{stderr}");
    let bad = top(admin, &["--interval", "1ms", "--admin-token", TOKEN]);
    assert_eq!(bad.status.code(), Some(2));
}
