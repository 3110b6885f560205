//! Decode once for several destinations (issue 15), through the binary: destinations with the
//! same schema, export options and filter share each record's decoding, and every one of them
//! still exports every event exactly once; a destination with another filter decodes on its
//! own and exports exactly what its filter selects; a destination added and deleted while
//! running leaves the others delivering.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::serve::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const BODIES: u64 = 30;
const EVENTS: u64 = 40;

/// Events `first..first + count`, `data.n` = their number, metric `refund` for every third.
fn body(first: u64, count: u64) -> String {
    let events: Vec<String> = (first..first + count)
        .map(|n| {
            let key = if n % 3 == 0 { "refund" } else { "purchase" };
            format!(
                r#"{{"kind":"custom","creationDate":1717000000000,"key":"{key}","context":{{"kind":"user","key":"user-{}"}},"data":{{"n":{n}}},"metricValue":1.5}}"#,
                n % 97
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

async fn post_bodies(server: &Flagstream, from_body: u64, bodies: u64) {
    let client = reqwest::Client::new();
    for b in from_body..from_body + bodies {
        let response = client
            .post(server.url("/bulk"))
            .header("authorization", SDK_KEY)
            .body(body(b * EVENTS, EVENTS))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(response.status().as_u16(), 202, "body {b}");
    }
}

/// Every marker exported to `dir`, failing on a duplicate.
fn exported_once(dir: &Path) -> BTreeSet<u64> {
    let markers = markers(&read_export(dir));
    let unique: BTreeSet<u64> = markers.iter().copied().collect();
    assert_eq!(
        unique.len(),
        markers.len(),
        "{}: an event exported twice",
        dir.display()
    );
    unique
}

fn file_dest(dir: &Path, name: &str, extra: &str) -> String {
    format!("file://{}?rotate=50ms&name={name}{extra}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_configured_alike_decode_once_and_each_exports_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let server = Flagstream::builder(out("data"))
        .args(["--environment", &production_env()])
        .args(["--dest", &file_dest(&out("a"), "a", "")])
        .args(["--dest", &file_dest(&out("b"), "b", "")])
        .args(["--dest", &file_dest(&out("c"), "c", "")])
        .args([
            "--dest",
            &file_dest(&out("refunds"), "refunds", "&metrics=refund"),
        ])
        .start()
        .await;
    post_bodies(&server, 0, BODIES).await;
    server.wait_delivered(TIMEOUT).await;

    let all: BTreeSet<u64> = (0..BODIES * EVENTS).collect();
    for name in ["a", "b", "c"] {
        assert_eq!(exported_once(&out(name)), all, "{name}");
    }
    let refunds: BTreeSet<u64> = all.iter().copied().filter(|n| n % 3 == 0).collect();
    assert_eq!(exported_once(&out("refunds")), refunds, "its own filter");
    let hits = metric(server.admin, "flagstream_shared_records_hits_total", &[]).await;
    let recorded = metric(
        server.admin,
        "flagstream_shared_records_recorded_total",
        &[],
    )
    .await;
    assert!(
        hits > 0.0 && recorded > 0.0,
        "hits {hits}, recorded {recorded}"
    );
    assert!(
        metric(server.admin, "flagstream_shared_records_bytes", &[]).await
            <= 16.0 * 1024.0 * 1024.0
    );

    // A destination added while running joins the group; deleting it leaves the others whole.
    let client = reqwest::Client::new();
    let created = client
        .post(server.admin_url("/v1/destinations"))
        .json(&json!({"name": "d", "url": format!("file://{}?rotate=50ms", out("d").display())}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{:?}", created.text().await);
    server.wait_delivered(TIMEOUT).await;
    let deleted = client
        .delete(server.admin_url("/v1/destinations/d"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{:?}", deleted.text().await);
    post_bodies(&server, BODIES, BODIES).await;
    server.wait_delivered(TIMEOUT).await;
    let all: BTreeSet<u64> = (0..2 * BODIES * EVENTS).collect();
    for name in ["a", "b", "c"] {
        assert_eq!(exported_once(&out(name)), all, "{name} after d left");
    }
    let later_hits = metric(server.admin, "flagstream_shared_records_hits_total", &[]).await;
    assert!(
        later_hits > hits,
        "still sharing after d left: {later_hits} vs {hits}"
    );
}
