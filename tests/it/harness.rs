//! The serve harness (`flagstream_harness::serve`) and `flagstream bench`'s load generator,
//! checked against the real binary and the real event validator.

use flagstream::event::{validate, InboundFormat};
use flagstream_harness::load::{bulk_body, DELIVERED_EVENTS_METRIC};
use flagstream_harness::{ServeOptions, StartError};

#[test]
fn bench_bodies_are_valid_launchdarkly_payloads() {
    let body = bulk_body(3, 100);
    let count = validate(InboundFormat::LdBulk, &body).unwrap();
    assert_eq!(count, 100);
    assert_ne!(bulk_body(4, 100), body, "seeds vary the bodies");
}

#[test]
fn bench_reads_the_servers_delivered_counter() {
    assert_eq!(
        DELIVERED_EVENTS_METRIC,
        flagstream::metrics::DEST_DELIVERED_EVENTS_TOTAL
    );
}

/// Both servers bind port 0 at the same time: no picked-then-released port to race for.
#[tokio::test]
async fn servers_started_together_get_their_own_ports_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        ServeOptions::new(env!("CARGO_BIN_EXE_flagstream"), dir.path().join(name))
            .args(["--wal-segment-bytes", "16MiB", "--wal-min-free-bytes", "0"])
            .start()
    };
    let (first, second) = tokio::join!(start("a"), start("b"));
    let (mut first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.ingest(), second.ingest());
    assert_ne!(first.admin(), second.admin());
    assert_eq!(first.ingest().ip().to_string(), "127.0.0.1");
    let ready = first.admin_get("/readyz").await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert!(first.log_text().contains("ingest listening"));
    let status = first.terminate(std::time::Duration::from_secs(30)).await;
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
    assert!(first.pid().is_none());
}

/// A server that cannot start is an error carrying its log, which names the problem.
#[tokio::test]
async fn a_server_that_exits_early_reports_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let result = ServeOptions::new(env!("CARGO_BIN_EXE_flagstream"), dir.path())
        .args(["--dest", "nosuch://x"])
        .start()
        .await;
    match result {
        Err(StartError::Exited { status, log }) => {
            assert_eq!(status.code(), Some(2), "{log}");
            assert!(
                log.contains("nosuch"),
                "the log names the bad scheme: {log}"
            );
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
}
