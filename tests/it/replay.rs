//! Replay and backfill through the binary: `--wal-retention`, a destination's `start=`,
//! rewinds over the admin API and the `flagstream destinations rewind` CLI (same batch ids,
//! so the file destination rewrites the same files), and retention eviction under a small
//! budget.

use crate::support::serve as support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::eventually;
use serde_json::{json, Value};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(90);
/// Events per posted body (about 100 KiB of JSON).
const PER_BODY: u64 = 400;

/// Small segments so that a few MiB of events roll, seal and pass several of them.
const SMALL_WAL: [&str; 6] = [
    "--wal-segment-bytes",
    "1MiB",
    "--max-body-bytes",
    "512KiB",
    "--wal-min-free-bytes",
    "1MiB",
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

fn file_dest(dir: &Path, name: &str, extra: &str) -> String {
    format!("file://{}?name={name}{extra}", dir.display())
}

async fn start(data: &Path, args: &[String]) -> Flagstream {
    Flagstream::builder(data.join("data"))
        .args(["--environment", &production_env()])
        .args(SMALL_WAL)
        .args(args.iter().cloned())
        .start()
        .await
}

/// Post `bodies` bodies of [`PER_BODY`] numbered events starting at marker `first`.
async fn post_events(server: &Flagstream, first: u64, bodies: u64) {
    let client = reqwest::Client::new();
    for body in 0..bodies {
        let response = client
            .post(server.url("/bulk"))
            .header("authorization", SDK_KEY)
            .header("content-type", "application/json")
            .body(numbered_bulk(first + body * PER_BODY, PER_BODY))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
}

async fn rewind(server: &Flagstream, name: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.admin_url(&format!("/v1/destinations/{name}/rewind")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every export file of a file destination: name → contents.
fn export_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "ndjson"))
                .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
                .map(|path| {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(&path).unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn status_of(server: &Flagstream, name: &str) -> Value {
    let body = http_get(server.admin, &format!("/v1/destinations/{name}"))
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Wait until `name` has delivered at least `count` events since the server started.
async fn wait_delivered_events(server: &Flagstream, name: &str, count: u64) {
    eventually(
        &format!("{name} delivered {count} events"),
        TIMEOUT,
        || async {
            let status = status_of(server, name).await;
            match status["delivered_events"].as_u64() {
                Some(delivered) if delivered >= count => Ok(()),
                _ => Err(format!("{status:#}")),
            }
        },
    )
    .await;
}

fn sorted_markers(dir: &Path) -> Vec<u64> {
    let mut markers = markers(&read_export(dir));
    markers.sort_unstable();
    markers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_destinations_start_at_a_past_time_latest_or_earliest_of_the_retained_log() {
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("archive");
    let first_run = [
        "--wal-retention".to_string(),
        "1h".to_string(),
        "--dest".to_string(),
        file_dest(&archive, "archive", "&linger=100ms"),
    ];
    let mut server = start(data.path(), &first_run).await;
    // Before `since`: 20 bodies (about 1.3 MiB: a segment rolls and `archive` passes it).
    post_events(&server, 0, 20).await;
    server.wait_delivered(TIMEOUT).await;
    let since = now_ms() + 1;
    eventually("the clock passed `since`", TIMEOUT, || async {
        (now_ms() > since)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    post_events(&server, 100_000, 3).await;
    server.wait_delivered(TIMEOUT).await;
    let destinations = server.destinations().await;
    assert_eq!(
        destinations["wal"]["first_seq"], 1,
        "retained: {destinations:#}"
    );
    let oldest = destinations["wal"]["first_received_at"].as_str().unwrap();
    let oldest = humantime::parse_rfc3339(oldest).unwrap();
    assert!(
        oldest < UNIX_EPOCH + Duration::from_millis(since),
        "{destinations:#}"
    );
    assert!(metric(server.admin, "flagstream_wal_retained_bytes", &[]).await > 0.0);
    server.terminate().await;

    // Restart with three new destinations; `archive` keeps its cursor.
    let (late, latest, earliest) = (
        data.path().join("late"),
        data.path().join("latest"),
        data.path().join("earliest"),
    );
    let mut second_run = first_run.to_vec();
    for (dir, name, start) in [
        (&late, "late", rfc3339(since)),
        (&latest, "latest", "latest".to_string()),
        (&earliest, "earliest", "earliest".to_string()),
    ] {
        second_run.push("--dest".into());
        second_run.push(file_dest(
            dir,
            name,
            &format!("&linger=100ms&start={start}"),
        ));
    }
    let server = start(data.path(), &second_run).await;
    post_events(&server, 200_000, 1).await;
    server.wait_delivered(TIMEOUT).await;
    let after: Vec<u64> = (100_000..100_000 + 3 * PER_BODY)
        .chain(200_000..200_000 + PER_BODY)
        .collect();
    assert_eq!(
        sorted_markers(&late),
        after,
        "exactly the events since {since}"
    );
    let newest: Vec<u64> = (200_000..200_000 + PER_BODY).collect();
    assert_eq!(
        sorted_markers(&latest),
        newest,
        "start=latest: only new events"
    );
    let everything: Vec<u64> = (0..20 * PER_BODY).chain(after.iter().copied()).collect();
    assert_eq!(sorted_markers(&earliest), everything);
    assert_eq!(
        sorted_markers(&archive),
        everything,
        "archive delivered each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewinds_by_api_and_cli_redeliver_the_same_batches() {
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("archive");
    // Small batches and a short linger: both count and linger cuts happen.
    let args = [
        "--dest".to_string(),
        file_dest(&archive, "archive", "&batch_max_events=300&rotate=50ms"),
    ];
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args(SMALL_WAL)
        .env("FLAGSTREAM_WAL_RETENTION", "1h")
        .args(args)
        .start()
        .await;
    let mut posted = 0;
    let mut middle = None;
    for round in 0..6 {
        post_events(&server, round * 10_000, 1 + round % 2).await;
        posted += (1 + round % 2) * PER_BODY;
        server.wait_delivered(TIMEOUT).await;
        if round == 3 {
            middle = Some(now_ms());
        }
    }
    let before = export_files(&archive);
    assert_eq!(sorted_markers(&archive).len() as u64, posted);

    // API: back to the oldest record; everything is delivered again into the same files.
    let (status, answer) = rewind(&server, "archive", json!({"to": "earliest"})).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["to"]["seq"], 1);
    wait_delivered_events(&server, "archive", 2 * posted).await;
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(
        export_files(&archive),
        before,
        "same batch ids, same contents"
    );

    // CLI: back to a time in the middle; only files from there on are rewritten.
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["destinations", "rewind", "archive", "--to"])
        .arg(rfc3339(middle.unwrap()))
        .arg("--admin-url")
        .arg(format!("http://{}", server.admin))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let to = answer["to"]["seq"].as_u64().unwrap();
    assert!(
        to > 1 && answer["replay_from"]["seq"].as_u64().unwrap() <= to,
        "{answer:#}"
    );
    let replayed_events = 2 * PER_BODY + PER_BODY; // rounds 4 and 5
    wait_delivered_events(&server, "archive", 2 * posted + replayed_events).await;
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(export_files(&archive), before);
    // A seq rewind, as the CLI sends it.
    let (status, answer) = rewind(&server, "archive", json!({ "to": to })).await;
    assert_eq!(
        (status, answer["to"]["seq"].as_u64()),
        (200, Some(to)),
        "{answer:#}"
    );
    server.wait_delivered(TIMEOUT).await;
    assert_eq!(export_files(&archive), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rewinds_are_refused_naming_the_problem() {
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("archive");
    let server = start(
        data.path(),
        &["--dest".into(), file_dest(&archive, "archive", "")],
    )
    .await;
    post_events(&server, 0, 1).await;
    server.wait_delivered(TIMEOUT).await;
    for (body, status, code, names) in [
        (
            json!({"to": "yesterday"}),
            400,
            "invalid_rewind",
            "RFC 3339",
        ),
        (json!({"from": 1}), 400, "invalid_rewind", "`to` is missing"),
        (json!({"to": 99}), 400, "invalid_rewind", "beyond the end"),
        (json!({"to": 0}), 400, "invalid_rewind", "not a seq"),
    ] {
        let (got, answer) = rewind(&server, "archive", body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["detail"].as_str().unwrap().contains(names),
            "{answer}"
        );
    }
    let (got, answer) = rewind(&server, "nope", json!({"to": "earliest"})).await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (404, Some("unknown_destination"))
    );
    let (got, _) = http_request(server.admin, "GET", "/v1/destinations/archive/rewind")
        .await
        .unwrap();
    assert_eq!(got, 405);
    // The CLI checks `--to` itself and names the flag.
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["destinations", "rewind", "archive", "--to", "last-week"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--to") && stderr.contains("last-week"),
        "{stderr}"
    );
    // ... and reports the server's refusal.
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args([
            "destinations",
            "rewind",
            "nope",
            "--to",
            "earliest",
            "--admin-url",
        ])
        .arg(format!("http://{}", server.admin))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("nope"),
        "{stderr}"
    );
    // A bad `start=` or `--wal-retention` is refused at startup, naming it.
    for (args, names) in [
        (vec!["--dest", "log:?start=yesterday"], "option `start`"),
        (vec!["--wal-retention", "5x"], "--wal-retention"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
            .arg("validate")
            .arg("--data-dir")
            .arg(data.path().join("validate"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_yields_to_a_small_budget_and_old_rewinds_get_409() {
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("archive");
    let config = data.path().join("flagstream.toml");
    // From the config file: keep a day, at most 8 MiB; the budget is only 4 MiB.
    std::fs::write(&config, "wal-retention = \"24h,8MiB\"\n").unwrap();
    let start_ms = now_ms();
    let server = start(
        data.path(),
        &[
            "--config".into(),
            config.display().to_string(),
            "--wal-max-bytes".into(),
            "4MiB".into(),
            "--dest".into(),
            file_dest(&archive, "archive", "&linger=100ms"),
        ],
    )
    .await;
    // About 5 MiB through a 4 MiB log: every body is accepted, retained segments make room.
    for round in 0..16 {
        post_events(&server, round * PER_BODY * 5, 5).await;
        server.wait_delivered(TIMEOUT).await;
    }
    assert_eq!(sorted_markers(&archive).len() as u64, 16 * 5 * PER_BODY);
    let evicted = metric(
        server.admin,
        "flagstream_wal_retention_evicted_bytes_total",
        &[],
    )
    .await;
    assert!(evicted > 0.0, "evicted {evicted}");
    let wal = server.destinations().await["wal"].clone();
    assert!(wal["bytes_on_disk"].as_u64().unwrap() <= 4 << 20, "{wal:#}");
    let first_seq = wal["first_seq"].as_u64().unwrap();
    assert!(first_seq > 1, "{wal:#}");
    assert!(metric(server.admin, "flagstream_wal_retained_bytes", &[]).await > 0.0);

    let (status, answer) = rewind(&server, "archive", json!({"to": rfc3339(start_ms)})).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("before_earliest")),
        "{answer}"
    );
    assert_eq!(answer["earliest_seq"].as_u64(), Some(first_seq));
    assert!(answer["earliest_received_at"].is_string(), "{answer}");
    let (status, answer) = rewind(&server, "archive", json!({"to": 1})).await;
    assert_eq!(status, 409, "{answer}");
    // What is retained can still be replayed.
    let (status, answer) = rewind(&server, "archive", json!({"to": "earliest"})).await;
    assert_eq!(
        (status, answer["to"]["seq"].as_u64()),
        (200, Some(first_seq)),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_admin_token() {
    const TOKEN: &str = "replay-test-admin-token-0123456789";
    let data = tempfile::tempdir().unwrap();
    let archive = data.path().join("archive");
    let server = start(
        data.path(),
        &[
            "--admin-token".into(),
            TOKEN.into(),
            "--dest".into(),
            file_dest(&archive, "archive", ""),
        ],
    )
    .await;
    let cli = |token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flagstream"));
        command
            .args(["destinations", "rewind", "archive", "--to", "earliest"])
            .arg("--admin-url")
            .arg(format!("http://{}", server.admin))
            .env_remove("FLAGSTREAM_ADMIN_TOKEN")
            .env("REPLAY_TEST_TOKEN", TOKEN);
        if let Some(token) = token {
            command.args(["--admin-token", token]);
        }
        command.output().unwrap()
    };
    let refused = cli(None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let accepted = cli(Some("env:REPLAY_TEST_TOKEN"));
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["destination"], "archive");
}
