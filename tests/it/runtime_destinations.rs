//! Destinations changed while running, through the binary (issue 13): created, changed and
//! deleted through the admin API (and kept over a restart), bad input refused with nothing
//! changed, a deleted destination's cursor no longer pinning the WAL, and `--config` reloaded
//! on SIGHUP under load without a failed ingest request.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::eventually;
use crate::support::serve::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// One admin request with a JSON body (or none): status and JSON answer.
async fn admin(server: &Flagstream, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, server.admin_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Post events `first..first + count` as one body; the status.
async fn post_events(client: &reqwest::Client, server: &Flagstream, first: u64, count: u64) -> u16 {
    client
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .body(numbered_bulk(first, count))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

fn file_url(dir: &Path) -> String {
    format!("file://{}?rotate=50ms", dir.display())
}

fn exported(dir: &Path) -> BTreeSet<u64> {
    markers(&read_export(dir)).into_iter().collect()
}

fn server(data: &Path, archive: &Path) -> FlagstreamBuilder {
    Flagstream::builder(data)
        .args(["--environment", &production_env()])
        .args(["--dest", &format!("{}&name=archive", file_url(archive))])
}

async fn status_of(server: &Flagstream, name: &str) -> (u16, Value) {
    admin(server, "GET", &format!("/v1/destinations/{name}"), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_created_changed_and_deleted_through_the_api_and_kept_over_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (data, archive) = (dir.path().join("data"), dir.path().join("archive"));
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let client = reqwest::Client::new();
    let mut server = server(&data, &archive).start().await;

    let (status, body) = admin(
        &server,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "live", "url": file_url(&first)})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["source"].as_str()),
        (Some("live"), Some("api"))
    );
    for taken in ["live", "archive"] {
        let (status, body) = admin(
            &server,
            "POST",
            "/v1/destinations",
            Some(json!({"name": taken, "url": "log:"})),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("conflict")),
            "{taken}: {body}"
        );
    }
    assert_eq!(post_events(&client, &server, 0, 10).await, 202);
    wait_for_export(&first, 10, TIMEOUT).await;

    // Change its options (here: where it writes) as a TOML-style table: the cursor stays, so
    // the new target gets only what comes after.
    let change = json!({"url": format!("file://{}", second.display()), "rotate": "50ms"});
    let (status, body) = admin(&server, "PUT", "/v1/destinations/live", Some(change)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["options"]["rotate"], "50ms", "{body}");
    let (status, body) = admin(
        &server,
        "PUT",
        "/v1/destinations/archive",
        Some(json!({"url": "log:"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("managed_by_config")),
        "{body}"
    );
    let (status, _) = admin(
        &server,
        "PUT",
        "/v1/destinations/nope",
        Some(json!({"url": "log:"})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(post_events(&client, &server, 10, 10).await, 202);
    server.wait_delivered(TIMEOUT).await;
    wait_for_export(&second, 10, TIMEOUT).await;
    assert_eq!(exported(&first), (0..10).collect());
    assert_eq!(exported(&second), (10..20).collect());

    // A restart keeps it, with its options and its position.
    server.terminate().await;
    let mut server = self::server(&data, &archive).start().await;
    let (status, body) = status_of(&server, "live").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "api", "{body}");
    assert_eq!(post_events(&client, &server, 20, 10).await, 202);
    server.wait_delivered(TIMEOUT).await;
    wait_for_export(&second, 20, TIMEOUT).await;
    assert_eq!(exported(&second), (10..30).collect());

    // Delete: gone from the API, its cursor released, and it stays gone over a restart.
    let (status, body) = admin(&server, "DELETE", "/v1/destinations/live", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&server, "live").await.0, 404);
    assert!(!data.join("wal/cursors/live.cur").exists());
    assert_eq!(
        admin(&server, "DELETE", "/v1/destinations/live", None)
            .await
            .0,
        404
    );
    assert_eq!(
        admin(&server, "DELETE", "/v1/destinations/archive", None)
            .await
            .0,
        409
    );
    assert_eq!(post_events(&client, &server, 30, 10).await, 202);
    server.wait_delivered(TIMEOUT).await;
    wait_for_export(&archive, 40, TIMEOUT).await;
    assert_eq!(
        exported(&second),
        (10..30).collect(),
        "nothing after the delete"
    );
    server.terminate().await;
    let server = self::server(&data, &archive).start().await;
    assert_eq!(status_of(&server, "live").await.0, 404);
    let names: Vec<Value> = server.destinations().await["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("archive")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_option_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, archive) = (dir.path().join("data"), dir.path().join("archive"));
    let server = server(&data, &archive).start().await;
    let live = json!({"name": "live", "url": file_url(&dir.path().join("live"))});
    assert_eq!(
        admin(&server, "POST", "/v1/destinations", Some(live))
            .await
            .0,
        201
    );
    let store = data.join("destinations.json");
    let stored = std::fs::read_to_string(&store).unwrap();
    let before = server.destinations().await["destinations"].clone();

    for (body, needle) in [
        (json!({"name": "x", "url": "log:", "rotat": "1s"}), "rotat"),
        (json!({"name": "x", "url": "log:?level=loud"}), "level"),
        (json!({"name": "x", "url": "nosuch://y"}), "nosuch"),
        (json!({"url": "log:"}), "name"),
        (json!({"name": "x y", "url": "log:"}), "name"),
        (json!({"name": "x", "url": "log:", "kinds": null}), "kinds"),
        (
            json!({"name": "x", "url": "segment:?write_key=inline-secret-value"}),
            "write_key",
        ),
        (
            json!({"name": "x", "url": "segment:?write_key=env:FLAGSTREAM_TEST_UNSET_VARIABLE"}),
            "write_key",
        ),
    ] {
        let (status, answer) = admin(&server, "POST", "/v1/destinations", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{body}: {answer}");
        assert!(
            !answer.to_string().contains("inline-secret-value"),
            "{answer}"
        );
    }
    let (status, answer) = admin(
        &server,
        "PUT",
        "/v1/destinations/live",
        Some(json!({"url": "log:", "lingr": "1s"})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("lingr"),
        "{answer}"
    );
    let not_json = reqwest::Client::new()
        .post(server.admin_url("/v1/destinations"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);

    assert_eq!(
        std::fs::read_to_string(&store).unwrap(),
        stored,
        "the store is unchanged"
    );
    let after = server.destinations().await["destinations"].clone();
    let view = |list: &Value| -> Vec<(Value, Value)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| (d["name"].clone(), d["options"].clone()))
            .collect()
    };
    assert_eq!(view(&after), view(&before), "no destination changed");

    // Without --config, SIGHUP is refused with a warning instead of ending the process.
    sighup(&server);
    wait_reloads(&server, "failure", 1.0).await;
    assert_eq!(status_of(&server, "live").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_destinations_cursor_no_longer_holds_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (data, archive) = (dir.path().join("data"), dir.path().join("archive"));
    let server = server(&data, &archive)
        .args(["--wal-segment-bytes", "1MiB", "--wal-max-bytes", "64MiB"])
        .args(["--max-body-bytes", "256KiB"])
        .start()
        .await;
    let held = json!({"name": "held", "url": file_url(&dir.path().join("held"))});
    assert_eq!(
        admin(&server, "POST", "/v1/destinations", Some(held))
            .await
            .0,
        201
    );
    assert_eq!(
        admin(&server, "POST", "/v1/destinations/held/pause", None)
            .await
            .0,
        200
    );
    let client = reqwest::Client::new();
    for body in 0..24u64 {
        assert_eq!(post_events(&client, &server, body * 1000, 1000).await, 202);
    }
    let caught_up = |status: &Value| {
        status["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "archive" && d["lag"]["records"] == 0)
    };
    let pinned = eventually(
        "archive caught up while held pins the log",
        TIMEOUT,
        || async {
            let status = server.destinations().await;
            if caught_up(&status) {
                Ok(status)
            } else {
                Err(format!("{status:#}"))
            }
        },
    )
    .await;
    let first_pinned = pinned["wal"]["first_seq"].as_u64().unwrap();
    let segments_pinned = pinned["wal"]["segments"].as_u64().unwrap();
    assert!(segments_pinned >= 3, "{pinned:#}");

    assert_eq!(
        admin(&server, "DELETE", "/v1/destinations/held", None)
            .await
            .0,
        200
    );
    assert!(!data.join("wal/cursors/held.cur").exists());
    eventually(
        "segments freed once the cursor is released",
        TIMEOUT,
        || async {
            let status = server.destinations().await;
            let first_seq = status["wal"]["first_seq"].as_u64().unwrap();
            let segments = status["wal"]["segments"].as_u64().unwrap();
            if first_seq > first_pinned && segments < segments_pinned {
                Ok(())
            } else {
                Err(format!("{:#}", status["wal"]))
            }
        },
    )
    .await;
}

/// The config file with one `[[destination]]` per `(name, extra keys)`.
fn write_config(path: &Path, dir: &Path, destinations: &[(&str, &str)]) {
    let mut text = String::from("[environments]\n");
    text.push_str(&format!("production = [\"{SDK_KEY}\"]\n"));
    for (name, extra) in destinations {
        text.push_str(&format!(
            "[[destination]]\nname = \"{name}\"\nurl = \"file://{}\"\nrotate = \"50ms\"\n{extra}\n",
            dir.join(name).display()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn sighup(server: &Flagstream) {
    let pid = server.pid().expect("the server runs");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Wait until `flagstream_config_reloads_total{outcome}` reaches `count` (a reload is
/// counted once it has been applied or refused).
async fn wait_reloads(server: &Flagstream, outcome: &str, count: f64) {
    eventually(&format!("{count} {outcome} reloads"), TIMEOUT, || async {
        let labels = [("outcome", outcome)];
        let seen = metric(server.admin, "flagstream_config_reloads_total", &labels).await;
        if seen == count {
            Ok(())
        } else {
            Err(format!("{seen}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_config_destinations_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flagstream.toml");
    write_config(&config, dir.path(), &[("a", "")]);
    let server = Arc::new(
        Flagstream::builder(dir.path().join("data"))
            .args(["--config", config.to_str().unwrap()])
            .start()
            .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicU64::new(0));
    let load = {
        let (server, stop, posted) = (server.clone(), stop.clone(), posted.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut accepted, mut failed) = (Vec::new(), Vec::new());
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match post_events(&client, &server, next, 5).await {
                    202 => accepted.extend(next..next + 5),
                    other => failed.push(other),
                }
                next += 5;
                posted.fetch_add(1, Ordering::Relaxed);
            }
            (accepted, failed)
        })
    };

    let load_running = |at_least: u64| {
        let posted = posted.clone();
        async move {
            let seen = posted.load(Ordering::Relaxed);
            if seen >= at_least {
                Ok(seen)
            } else {
                Err(format!("{seen} requests so far"))
            }
        }
    };
    eventually("the load running", TIMEOUT, || load_running(10)).await;
    write_config(&config, dir.path(), &[("a", ""), ("b", "")]);
    sighup(&server);
    wait_reloads(&server, "success", 1.0).await;
    let (status, added) = status_of(&server, "b").await;
    assert_eq!(
        (status, added["source"].as_str()),
        (200, Some("config")),
        "{added}"
    );

    // A bad file changes nothing and is counted.
    write_config(&config, dir.path(), &[("b", "rotat = \"1s\"")]);
    sighup(&server);
    wait_reloads(&server, "failure", 1.0).await;
    assert_eq!(
        status_of(&server, "a").await.0,
        200,
        "a stays after a refused reload"
    );
    assert!(
        server.log_text().contains("rotat"),
        "the log names the option"
    );

    write_config(&config, dir.path(), &[("b", "")]);
    sighup(&server);
    wait_reloads(&server, "success", 2.0).await;
    assert_eq!(
        status_of(&server, "a").await.0,
        404,
        "a removed by the reload"
    );
    assert!(!dir.path().join("data/wal/cursors/a.cur").exists());

    let seen = posted.load(Ordering::Relaxed);
    eventually("the load still running after the reloads", TIMEOUT, || {
        load_running(seen + 10)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "failed ingest requests: {failed:?}");
    assert!(accepted.len() >= 5, "the load ran");
    server.wait_delivered(TIMEOUT).await;
    // b was created at the oldest stored record, so it holds everything ever accepted.
    let expected: BTreeSet<u64> = accepted.into_iter().collect();
    wait_for_export(&dir.path().join("b"), expected.len(), TIMEOUT).await;
    assert_eq!(exported(&dir.path().join("b")), expected);
}

#[tokio::test]
async fn a_name_in_both_the_config_and_the_api_store_refuses_to_start_naming_both() {
    let data = tempfile::tempdir().unwrap();
    let stored = json!({"version": 1, "destinations": [{"name": "dup", "url": "log:"}]});
    std::fs::write(data.path().join("destinations.json"), stored.to_string()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["serve", "--data-dir", data.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--dest", "log:?name=dup"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in ["`dup`", "--dest/--config", "admin API", "destinations.json"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}
