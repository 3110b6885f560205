//! Event ids through the real binary (issue 14): unique across instances and data dirs, stable
//! across re-deliveries, and instance-independent for payload-id'd bodies.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::serve::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A server with the test environment and file destinations `(name, dir)`.
async fn start(data_dir: PathBuf, dests: &[(&str, &Path)]) -> Flagstream {
    let mut builder = Flagstream::builder(data_dir).args(["--environment", &production_env()]);
    for (name, dir) in dests {
        builder = builder.args([
            "--dest".to_string(),
            format!("file://{}?rotate=100ms&name={name}", dir.display()),
        ]);
    }
    builder.start().await
}

/// A `/bulk` body of custom events for `user`, one per metric key.
fn bulk(user: &str, keys: &[&str]) -> String {
    let events: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                r#"{{"kind":"custom","creationDate":1717000000000,"key":"{key}","context":{{"kind":"user","key":"{user}"}}}}"#
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

async fn post_bulk(server: &Flagstream, body: String, payload_id: Option<&str>) {
    let mut request = reqwest::Client::new()
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .body(body);
    if let Some(id) = payload_id {
        request = request.header("x-launchdarkly-payload-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

/// `event.id` of every exported row whose metric key starts with `prefix`.
fn ids(rows: &[Value], prefix: &str) -> BTreeSet<String> {
    rows.iter()
        .filter(|row| {
            row["event"]["key"]
                .as_str()
                .is_some_and(|key| key.starts_with(prefix))
        })
        .map(|row| {
            row["event"]["id"]
                .as_str()
                .expect("every row has an id")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_give_different_events_disjoint_ids_and_shared_payloads_equal_ids() {
    let root = tempfile::tempdir().unwrap();
    let (export_a, export_b) = (root.path().join("export-a"), root.path().join("export-b"));
    let a = start(root.path().join("a"), &[("archive", &export_a)]).await;
    let b = start(root.path().join("b"), &[("archive", &export_b)]).await;

    // Without payload ids (as every go-feature-flag collector request): seq 1 on both.
    post_bulk(&a, bulk("alice", &["seq-a1", "seq-a2", "seq-a3"]), None).await;
    post_bulk(&b, bulk("bob", &["seq-b1", "seq-b2", "seq-b3"]), None).await;
    // The same payload, retried by an SDK against the other instance behind a load balancer.
    let shared = bulk("carol", &["payload-1", "payload-2"]);
    post_bulk(
        &a,
        shared.clone(),
        Some("e4e80df9-6738-4586-acea-69200e415792"),
    )
    .await;
    post_bulk(&b, shared, Some("e4e80df9-6738-4586-acea-69200e415792")).await;

    let rows_a = wait_for_export(&export_a, 5, TIMEOUT).await;
    let rows_b = wait_for_export(&export_b, 5, TIMEOUT).await;
    let (seq_a, seq_b) = (ids(&rows_a, "seq-"), ids(&rows_b, "seq-"));
    assert_eq!((seq_a.len(), seq_b.len()), (3, 3), "{rows_a:?} {rows_b:?}");
    assert!(
        seq_a.is_disjoint(&seq_b),
        "different events on two instances share ids: {seq_a:?} {seq_b:?}"
    );
    let (payload_a, payload_b) = (ids(&rows_a, "payload-"), ids(&rows_b, "payload-"));
    assert_eq!(payload_a.len(), 2);
    assert_eq!(
        payload_a, payload_b,
        "a payload-id'd body must get the same ids on every instance"
    );
    assert!(payload_a.is_disjoint(&seq_a) && payload_a.is_disjoint(&seq_b));

    let instance = |name: &str| {
        std::fs::read_to_string(root.path().join(name).join("instance-id"))
            .expect("instance-id file")
    };
    assert_ne!(instance("a"), instance("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_redelivers_a_record_with_the_same_ids() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (archive, replay) = (root.path().join("archive"), root.path().join("replay"));

    let mut server = start(data.clone(), &[("archive", &archive)]).await;
    post_bulk(&server, bulk("dave", &["seq-1", "seq-2", "seq-3"]), None).await;
    let first = ids(&wait_for_export(&archive, 3, TIMEOUT).await, "seq-");
    let instance_before = std::fs::read_to_string(data.join("instance-id")).unwrap();
    assert!(server.terminate().await.success());

    // A destination added after the restart reads the WAL from its oldest record: the same
    // record is delivered a second time, by a new process.
    let server = start(data.clone(), &[("archive", &archive), ("replay", &replay)]).await;
    let again = ids(&wait_for_export(&replay, 3, TIMEOUT).await, "seq-");
    assert_eq!(first.len(), 3);
    assert_eq!(first, again, "re-delivery after a restart changed the ids");
    assert_eq!(
        std::fs::read_to_string(data.join("instance-id")).unwrap(),
        instance_before,
        "the instance id is created once per data dir"
    );
    drop(server);
}
