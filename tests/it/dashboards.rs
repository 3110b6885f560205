//! The operator-facing monitoring files in `docs/` against a real server: every metric that
//! `docs/grafana-dashboard.json` and `docs/prometheus-alerts.yaml` query exists in `/metrics`
//! of a running flagstream that saw ordinary traffic, the dashboard is well formed, and the
//! alert rules pass `promtool check rules` and their unit tests (`promtool test rules`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use flagstream_harness::client;
use http::Method;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::eventually;
use crate::support::serve::{http_get, numbered_bulk, production_env, Flagstream, SDK_KEY};

const INSTALL_PROMTOOL: &str =
    "scripts/install-test-deps.sh (apt-get install -y --no-install-recommends prometheus)";

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

/// Every `flagstream_*` name in `text`, with histogram sample suffixes folded to the family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("flagstream_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

/// Families that `/metrics` exposes with at least one sample.
fn exposed_families(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .flat_map(metric_names)
        .collect()
}

fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

/// Traffic that makes every queried series appear: accepted, refused and partly invalid
/// bodies, a delivered batch with a dead letter, and a connection closed for silence.
async fn ordinary_traffic(server: &Flagstream) {
    let post = |body: String, key: &'static str| {
        let headers = [("authorization", key), ("content-type", "application/json")];
        let addr = server.ingest;
        async move {
            client::request(addr, Method::POST, "/bulk", &headers, Bytes::from(body))
                .await
                .expect("ingest answers")
                .status
        }
    };
    assert_eq!(post(numbered_bulk(0, 10), SDK_KEY).await, 202);
    let partly_invalid = numbered_bulk(10, 1).replacen('[', r#"[{"no_kind":true},"#, 1);
    assert_eq!(post(partly_invalid, SDK_KEY).await, 202);
    assert_eq!(post(numbered_bulk(20, 1), "wrong-key").await, 401);
    let mut silent = TcpStream::connect(server.ingest).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "silent connection not closed: {closed:?}"
    );
    server.wait_delivered(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_exists_in_a_running_server() {
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(docs("grafana-dashboard.json")).unwrap()).unwrap();
    let alerts = std::fs::read_to_string(docs("prometheus-alerts.yaml")).unwrap();
    let mut queried = metric_names(&dashboard_exprs(&dashboard).join("\n"));
    queried.extend(metric_names(&alerts));
    assert!(queried.len() >= 20, "too few metrics found: {queried:?}");

    let data = tempfile::tempdir().unwrap();
    let server = Flagstream::builder(data.path())
        .args([
            "--environment",
            &production_env(),
            "--header-timeout",
            "300ms",
        ])
        .start()
        .await;
    ordinary_traffic(&server).await;
    let admin = server.admin;
    eventually(
        "every queried metric exposed",
        Duration::from_secs(10),
        || {
            let queried = queried.clone();
            async move {
                let metrics = http_get(admin, "/metrics").await.unwrap_or_default();
                let missing: Vec<_> = queried
                    .difference(&exposed_families(&metrics))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("missing {missing:?}"))
                }
            }
        },
    )
    .await;
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(docs("grafana-dashboard.json")).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "flagstream-overview");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id {panel}"
        );
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(right <= 24, "panel wider than the grid: {}", panel["title"]);
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
        }
    }
}

fn promtool() -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join("promtool").is_file()))
        .unwrap_or(false);
    assert!(found, "promtool is not installed: run {INSTALL_PROMTOOL}");
    let mut command = Command::new("promtool");
    command.current_dir(docs(""));
    command
}

#[test]
fn the_alert_rules_parse_and_pass_their_unit_tests() {
    for args in [
        ["check", "rules", "prometheus-alerts.yaml"],
        ["test", "rules", "prometheus-alerts.test.yaml"],
    ] {
        let output = promtool().args(args).output().unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn metric_names_fold_histogram_suffixes() {
    let names = metric_names("rate(flagstream_a_bucket{x=\"y\"}[1m]) / flagstream_b_total");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["flagstream_a", "flagstream_b_total"]
    );
}
