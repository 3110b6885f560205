//! Dead letters you can act on, end to end through the binary: a webhook receiver (the
//! in-process stand-in) refuses events permanently (404: no hook at the path yet; an injected
//! 422), `flagstream dead-letters list/show` and the admin API show them with their reasons,
//! the receiver is fixed, and `redrive` sends each event exactly once — by reason first, then
//! the rest; a second redrive sends nothing, also after a restart. A redrive that fails again
//! leaves new dead letters with the new reason (nothing lost, no loop), `--to other` sends
//! them through another destination, and a redrive interrupted by a restart finishes after it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flagstream_harness::{client, ServeOptions, Server};
use http::Method;
use parking_lot::Mutex;
use serde_json::Value;

use crate::conformance::post;
use crate::support::cloud::ld_bulk;
use crate::support::eventually;
use crate::support::http_receivers::{Fault, Receiver, WebhookContract};
use crate::support::serve::metric;

const WAIT: Duration = Duration::from_secs(60);

async fn start(dir: &Path, hook: &Receiver) -> Server {
    let dest = |name: &str, extra: &str| {
        format!(
            "webhook+http://{}/{name}?name={name}&schema=gofeatureflag&linger=50ms{extra}",
            hook.authority()
        )
    };
    ServeOptions::new(env!("CARGO_BIN_EXE_flagstream"), dir.join("data"))
        .args(["--dest", &dest("hook", "")])
        // `other` takes no feature events from the log: whatever it gets is redriven.
        .args(["--dest", &dest("other", "&kinds=custom")])
        .args(["--wal-segment-bytes", "16MiB", "--wal-min-free-bytes", "0"])
        .args([
            "--retry-initial-backoff",
            "100ms",
            "--retry-max-backoff",
            "500ms",
        ])
        .start()
        .await
        .unwrap_or_else(|err| panic!("{err}"))
}

/// `flagstream dead-letters ARGS --admin-url …`: stdout, or the failure with stderr.
async fn cli(admin: SocketAddr, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .arg("dead-letters")
        .args(args)
        .args(["--admin-url", &format!("http://{admin}")])
        .env_remove("FLAGSTREAM_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn api(server: &Server, method: Method, path: &str, body: &str) -> (u16, Value) {
    let headers = [("content-type", "application/json")];
    let response = client::request(
        server.admin(),
        method,
        path,
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap();
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap_or(Value::Null),
    )
}

async fn summary(server: &Server, name: &str) -> Value {
    api(server, Method::GET, &format!("/v1/dead-letters/{name}"), "")
        .await
        .1
}

/// Wait until `name`'s summary satisfies `done`.
async fn wait_summary(
    server: &Server,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, WAIT, || async {
        let summary = summary(server, name).await;
        if done(&summary) {
            Ok(summary)
        } else {
            Err(format!("{summary:#}"))
        }
    })
    .await
}

/// Markers (`variation`) of every event the receiver answered 200 at `/path`, counted (a
/// resent duplicate counts twice: exactly once means every count is 1).
fn delivered(hook: &Receiver, path: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (request, status) in hook.answered() {
        if request.path != path || status != 200 {
            continue;
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        for event in body["events"].as_array().unwrap() {
            *counts
                .entry(event["variation"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    counts
}

fn markers(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{tag}-{i}")).collect()
}

/// Wait until the receiver got exactly `expected` at `path`, each once.
async fn wait_delivered(hook: &Receiver, path: &str, expected: &[String]) {
    eventually("the redriven events arrive", WAIT, || async {
        let got = delivered(hook, path);
        let want: BTreeMap<String, usize> = expected.iter().map(|m| (m.clone(), 1)).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("got {got:?}, want {want:?}"))
        }
    })
    .await
}

/// A webhook receiver with a hook at `/other` only (`/hook` is added to the paths to fix it).
async fn receiver() -> (Arc<Mutex<Vec<String>>>, Receiver) {
    let paths = Arc::new(Mutex::new(vec!["/other".to_string()]));
    let hook = Receiver::start(WebhookContract {
        paths: paths.clone(),
        secret: None,
        token: None,
        max_body_bytes: 1 << 20,
    })
    .await;
    (paths, hook)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_once_each() {
    let scratch = tempfile::tempdir().unwrap();
    let (paths, hook) = receiver().await;
    let mut server = start(scratch.path(), &hook).await;

    // No hook at /hook yet: 404, permanent. Then one injected 422. Reasons are matched with
    // their `HTTP ` prefix: a bare `422` also matches a random port such as 42291.
    post(&server, &ld_bulk("a", 5, 2)).await;
    wait_summary(&server, "hook", "5 dead letters", |s| s["events"] == 5).await;
    hook.inject(Fault::Status(422, None));
    post(&server, &ld_bulk("b", 3, 2)).await;
    let listed = wait_summary(&server, "hook", "8 dead letters", |s| s["events"] == 8).await;
    assert_eq!(listed["redrivable"], 8, "{listed:#}");
    let reasons = listed["by_reason"].as_object().unwrap();
    assert_eq!(reasons.len(), 2, "{listed:#}");
    assert!(reasons.keys().any(|r| r.contains("HTTP 404")), "{listed:#}");

    let admin = server.admin();
    let text = cli(admin, &["list", "hook"]).await.unwrap();
    assert!(text.contains("hook: 8 dead letters"), "{text}");
    assert!(text.contains("8 redrivable, 0 redriven"), "{text}");
    let shown = cli(admin, &["show", "hook", "--filter", "reason=HTTP 422"])
        .await
        .unwrap();
    assert!(shown.contains("hook: 3 dead letters"), "{shown}");
    assert!(
        shown.contains("reason:") && shown.contains("HTTP 422"),
        "{shown}"
    );
    assert!(
        shown.contains("\"b-0\"") && !shown.contains("\"a-0\""),
        "{shown}"
    );
    let (status, page) = api(
        &server,
        Method::GET,
        "/v1/dead-letters/hook/events?reason=HTTP%20404&limit=2&offset=1",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["total"].as_u64(),
            page["entries"].as_array().map(Vec::len)
        ),
        (Some(5), Some(2))
    );
    assert_eq!(
        page["entries"][0]["payload"]["variation"], "a-1",
        "{page:#}"
    );

    refuses_bad_requests(&server).await;

    // Fix the receiver; redrive by reason, then the rest.
    paths.lock().push("/hook".to_string());
    let answer = cli(admin, &["redrive", "hook", "--filter", "reason=HTTP 422"])
        .await
        .unwrap();
    assert!(answer.contains("redriving 3 dead letters"), "{answer}");
    wait_delivered(&hook, "/hook", &markers("b", 3)).await;
    wait_summary(&server, "hook", "3 redriven, job done", |s| {
        s["redriven"] == 3 && s["redrive"].is_null()
    })
    .await;
    let answer = cli(admin, &["redrive", "hook"]).await.unwrap();
    assert!(answer.contains("redriving 5 dead letters"), "{answer}");
    let all: Vec<String> = markers("a", 5).into_iter().chain(markers("b", 3)).collect();
    wait_delivered(&hook, "/hook", &all).await;
    wait_summary(&server, "hook", "8 redriven, job done", |s| {
        s["redriven"] == 8 && s["redrive"].is_null()
    })
    .await;
    assert_eq!(
        metric(
            admin,
            "flagstream_dead_letters_redriven_total",
            &[("destination", "hook")]
        )
        .await,
        8.0
    );

    // A second redrive sends nothing, before and after a restart.
    let again = cli(admin, &["redrive", "hook"]).await.unwrap();
    assert!(again.contains("nothing to redrive"), "{again}");
    server.terminate(WAIT).await.expect("orderly stop");
    let server = start(scratch.path(), &hook).await;
    let again = cli(server.admin(), &["redrive", "hook"]).await.unwrap();
    assert!(again.contains("nothing to redrive"), "{again}");
    let listed = summary(&server, "hook").await;
    assert_eq!(
        (listed["redriven"].as_u64(), listed["redrivable"].as_u64()),
        (Some(8), Some(0)),
        "{listed:#}"
    );
    assert_eq!(
        delivered(&hook, "/hook").len(),
        8,
        "nothing resent after the restart"
    );
}

async fn refuses_bad_requests(server: &Server) {
    let cases = [
        (
            Method::POST,
            "/v1/dead-letters/hook/redrive",
            r#"{"too":"other"}"#,
            400,
            "too",
        ),
        (
            Method::POST,
            "/v1/dead-letters/hook/redrive",
            r#"{"filter":{"reason":""}}"#,
            400,
            "reason",
        ),
        (
            Method::POST,
            "/v1/dead-letters/hook/redrive",
            "[1",
            400,
            "redrive body",
        ),
        (
            Method::POST,
            "/v1/dead-letters/hook/redrive",
            r#"{"to":"nope"}"#,
            404,
            "nope",
        ),
        (
            Method::POST,
            "/v1/dead-letters/nope/redrive",
            "",
            404,
            "nope",
        ),
        (Method::GET, "/v1/dead-letters/nope", "", 404, "nope"),
        (
            Method::GET,
            "/v1/dead-letters/hook/events?limit=0",
            "",
            400,
            "limit",
        ),
        (
            Method::GET,
            "/v1/dead-letters/hook/events?colour=red",
            "",
            400,
            "colour",
        ),
        (
            Method::GET,
            "/v1/dead-letters/hook/redrive",
            "",
            405,
            "POST",
        ),
    ];
    for (method, path, body, status, named) in cases {
        let (got, answer) = api(server, method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap_or("").contains(named),
            "{method} {path} {body}: {answer}"
        );
    }
    let err = cli(server.admin(), &["redrive", "hook", "--filter", "kind=x"])
        .await
        .unwrap_err();
    assert!(err.contains("--filter"), "{err}");
    let err = cli(server.admin(), &["show", "nope"]).await.unwrap_err();
    assert!(err.contains("404") && err.contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_redrives_dead_letter_again_and_redrives_go_elsewhere_and_survive_restarts() {
    let scratch = tempfile::tempdir().unwrap();
    let (paths, hook) = receiver().await;
    let mut server = start(scratch.path(), &hook).await;
    let admin = server.admin();
    post(&server, &ld_bulk("c", 4, 2)).await;
    wait_summary(&server, "hook", "4 dead letters", |s| s["events"] == 4).await;

    // Still broken: the redrive fails again with a new reason; nothing lost, no loop.
    hook.inject(Fault::Status(410, None));
    cli(admin, &["redrive", "hook"]).await.unwrap();
    let listed = wait_summary(&server, "hook", "the redrive failed again", |s| {
        s["redriven_dead_lettered"] == 4 && s["redrive"].is_null()
    })
    .await;
    assert_eq!(
        (listed["events"].as_u64(), listed["redrivable"].as_u64()),
        (Some(8), Some(4)),
        "{listed:#}"
    );
    assert!(
        listed["by_reason"]
            .as_object()
            .unwrap()
            .keys()
            .any(|r| r.contains("410")),
        "{listed:#}"
    );
    assert_eq!(
        metric(
            admin,
            "flagstream_dead_letters_redrive_failed_total",
            &[("destination", "hook")]
        )
        .await,
        4.0
    );

    // `--to other` sends the new dead letters through `other`, once.
    let answer = cli(admin, &["redrive", "hook", "--to", "other"])
        .await
        .unwrap();
    assert!(
        answer.contains("redriving 4 dead letters of `hook` through `other`"),
        "{answer}"
    );
    wait_delivered(&hook, "/other", &markers("c", 4)).await;
    wait_summary(&server, "hook", "redriven to other", |s| {
        s["redriven"] == 8 && s["redrive"].is_null()
    })
    .await;
    assert!(delivered(&hook, "/hook").is_empty());

    // A redrive queued while its destination is paused survives a crash (kill -9) and
    // finishes after the restart; nothing redriven before is sent again.
    post(&server, &ld_bulk("d", 3, 2)).await;
    wait_summary(&server, "hook", "3 more dead letters", |s| {
        s["redrivable"] == 3
    })
    .await;
    let (status, _) = api(&server, Method::POST, "/v1/destinations/hook/pause", "").await;
    assert_eq!(status, 200);
    cli(admin, &["redrive", "hook"]).await.unwrap();
    let busy = cli(admin, &["redrive", "hook"]).await.unwrap_err();
    assert!(
        busy.contains("409") && busy.contains("already running"),
        "{busy}"
    );
    paths.lock().push("/hook".to_string());
    server.kill9();
    assert!(
        delivered(&hook, "/hook").is_empty(),
        "paused: nothing sent before the crash"
    );
    let server = start(scratch.path(), &hook).await;
    wait_delivered(&hook, "/hook", &markers("d", 3)).await;
    let listed = wait_summary(&server, "hook", "the resumed job finished", |s| {
        s["redrive"].is_null() && s["redriven"] == 11
    })
    .await;
    assert_eq!(listed["redrivable"], 0, "{listed:#}");
    wait_delivered(&hook, "/other", &markers("c", 4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_needs_and_passes_the_admin_token() {
    const TOKEN: &str = "dead-letters-admin-token-0123";
    let scratch = tempfile::tempdir().unwrap();
    let (_, hook) = receiver().await;
    let server = ServeOptions::new(
        env!("CARGO_BIN_EXE_flagstream"),
        scratch.path().join("data"),
    )
    .args(["--admin-token", TOKEN, "--wal-min-free-bytes", "0"])
    .args([
        "--dest",
        &format!("webhook+http://{}/other?name=other", hook.authority()),
    ])
    .start()
    .await
    .unwrap_or_else(|err| panic!("{err}"));
    let refused = cli(server.admin(), &["list"]).await.unwrap_err();
    assert!(
        refused.contains("401") && refused.contains("--admin-token"),
        "{refused}"
    );
    let listed = cli(server.admin(), &["list", "--admin-token", TOKEN])
        .await
        .unwrap();
    assert!(listed.contains("other: 0 dead letters"), "{listed}");
    let answer = cli(
        server.admin(),
        &["redrive", "other", "--admin-token", TOKEN],
    )
    .await
    .unwrap();
    assert!(answer.contains("nothing to redrive"), "{answer}");
}
