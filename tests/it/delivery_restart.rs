//! What survives a restart of the delivery engine: retry state, batch plans (so batch ids and
//! contents are identical), and the file destination's exactly-once overwrite.

use crate::support::delivery as delivery_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;

use delivery_support::*;
use flagstream::delivery::cursor_state::DeliveryCursor;
use flagstream::delivery::ConfiguredDestination;
use flagstream::delivery::{DeliveryDefaults, DeliverySettings, DeliveryState, RetryPolicy};
use flagstream::dest::file::FileDestination;
use flagstream::dest::{Failure, SendOutcome};
use flagstream::event::Schema;
use flagstream::wal::{CursorState, Position};

const WAIT: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_state_survives_a_restart_and_keeps_backing_off() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let keys = append_records(&wal, 0, 1, 4).await;
    let policy = RetryPolicy {
        max_attempts: Some(5),
        max_age: None,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };

    // Run 1: the target is throttling and asks for 1.5 s.
    let failing = Remote::new("remote", limits(10, 20), |_, _| {
        async {
            SendOutcome::Failed(
                Failure::throttled("HTTP 429").with_retry_after(Some(Duration::from_millis(1500))),
            )
        }
        .boxed()
    });
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(failing.clone(), policy, 1)],
    );
    wait_until("first failure recorded", WAIT, || {
        delivery.status("remote").unwrap().retry.is_some()
    })
    .await;
    let status = delivery.status("remote").unwrap();
    assert_eq!(status.state, DeliveryState::BackingOff);
    delivery.shutdown().await;
    assert_eq!(failing.sent().len(), 1);
    let first_batch = failing.sent()[0].batch_id.clone();

    let persisted = DeliveryCursor::decode(&wal.open_cursor("remote").unwrap().state()).unwrap();
    assert_eq!(persisted.retry.attempts, 1);
    assert!(persisted.retry.first_failure_unix_ms > 0);
    let next_attempt = persisted.retry.next_attempt_unix_ms;
    assert!(
        next_attempt > unix_ms(),
        "the persisted next attempt is still ahead"
    );
    assert!(persisted.plan.is_some());

    // Run 2: the target works again, but the engine must wait for the persisted time.
    let healthy = Remote::accepting("remote", limits(10, 20));
    let restarted = Instant::now();
    let restarted_unix = unix_ms();
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(healthy.clone(), policy, 1)],
    );
    // The restarted worker picks up the persisted retry state instead of sending at once.
    wait_until("backing off on the persisted retry state", WAIT, || {
        delivery.status("remote").unwrap().state == DeliveryState::BackingOff
    })
    .await;
    let status = delivery.status("remote").unwrap();
    assert!(
        healthy.sent().is_empty(),
        "sent before the persisted next attempt"
    );
    assert_eq!(status.retry.map(|r| r.attempts), Some(1));
    wait_until("delivered after the backoff", WAIT, || {
        healthy.delivered_keys().len() == keys.len()
    })
    .await;
    let sent = healthy.sent();
    let resent_unix = restarted_unix + sent[0].at.duration_since(restarted).as_millis() as u64;
    assert!(
        resent_unix + 20 >= next_attempt,
        "resent at {resent_unix}, before the persisted next attempt {next_attempt}"
    );
    assert_eq!(
        sent[0].batch_id, first_batch,
        "the retried batch keeps its id across the restart"
    );
    delivery.shutdown().await;
    let persisted = DeliveryCursor::decode(&wal.open_cursor("remote").unwrap().state()).unwrap();
    assert_eq!(
        persisted.retry.attempts, 0,
        "retry state cleared once delivered"
    );
    assert_eq!(persisted.acked.seq, wal.next_seq());
}

/// Only the oldest batch's plan fits in the cursor, so a younger linger-cut batch must wait
/// until it is the oldest: sent earlier, a crash would re-cut it differently and its events
/// would reach the target twice under two batch ids (the kill -9 loop with the file
/// destination found exactly that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_cut_batches_are_recut_identically_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());

    // Run 1: records arrive slowly, so batches are cut by linger; the target never answers.
    let hung = Remote::new("remote", limits(100, 20), |_, _| {
        std::future::pending::<SendOutcome>().boxed()
    });
    let policy = fast_retry(None);
    let delivery = start(&wal, dir.path(), vec![configured(hung.clone(), policy, 2)]);
    let first = append_records(&wal, 0, 1, 3).await;
    wait_until("first batch on the wire", WAIT, || {
        !hung.calls_started().is_empty()
    })
    .await;
    append_records(&wal, 1, 1, 3).await;
    // The stop cuts the second record's lingering batch at once (deterministically) and
    // would send it within the grace period if it were allowed to go out.
    delivery.shutdown().await;
    let before: Vec<(String, Vec<String>)> = hung.calls_started();
    assert_eq!(
        before
            .iter()
            .map(|(_, keys)| keys.clone())
            .collect::<Vec<_>>(),
        vec![first],
        "a younger linger-cut batch is not sent while an older one is in flight"
    );

    // Run 2: everything is available at once (plus a third record). The first batch is
    // re-cut exactly from its persisted plan; whatever run 1 sent is re-sent under the same id.
    append_records(&wal, 2, 1, 3).await;
    let healthy = Remote::accepting("remote", limits(100, 20));
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(healthy.clone(), policy, 2)],
    );
    wait_until("all delivered", WAIT, || {
        healthy.delivered_keys().len() == 9
    })
    .await;
    delivery.shutdown().await;
    let after: Vec<(String, Vec<String>)> = healthy
        .sent()
        .into_iter()
        .map(|s| (s.batch_id, s.keys))
        .collect();
    // Recorded linger cuts (`cut_log.rs`) are re-cut as planned cuts, which may go out
    // concurrently: look the batch up by id rather than by send order.
    assert!(
        after.contains(&before[0]),
        "first batch re-cut with the same id and items: {before:?} vs {after:?}"
    );
    let mut keys: Vec<String> = after.iter().flat_map(|(_, keys)| keys.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 9, "every event sent once in run 2: {after:?}");
}

fn file_destination(export: &std::path::Path) -> ConfiguredDestination {
    let destination = FileDestination::new(
        "file",
        export.to_path_buf(),
        Schema::LaunchDarkly,
        Duration::from_millis(50),
        1 << 20,
    );
    let mut settings = DeliverySettings::named("file", &DeliveryDefaults::default());
    settings.batch_max_events = Some(10);
    settings.retry = fast_retry(None);
    ConfiguredDestination {
        settings,
        destination: std::sync::Arc::new(destination),
    }
}

/// Every key in every `.ndjson` file under `export`, with its number of occurrences.
fn exported(export: &std::path::Path) -> (BTreeMap<String, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(export).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temp file left behind: {name}");
        files += 1;
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            *counts.entry(event_key(line.as_bytes())).or_insert(0) += 1;
        }
    }
    (counts, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_destination_redelivery_after_a_crash_overwrites_instead_of_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let wal = open_wal(dir.path());
    let start_seq = wal.next_seq();
    let keys = append_records(&wal, 0, 12, 10).await;

    let delivery = start(&wal, dir.path(), vec![file_destination(&export)]);
    wait_until("everything exported", WAIT, || {
        delivery.status("file").unwrap().cursor.seq == wal.next_seq()
    })
    .await;
    delivery.shutdown().await;
    let (counts, files) = exported(&export);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        sorted(keys.clone())
    );
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(files, 12);

    // A crash before the cursor was persisted: the cursor is back at the start, so every
    // batch is delivered again after the restart.
    wal.open_cursor("file")
        .unwrap()
        .persist(CursorState {
            acked: Position {
                seq: start_seq,
                event: 0,
            },
            ..CursorState::default()
        })
        .unwrap();
    let delivery = start(&wal, dir.path(), vec![file_destination(&export)]);
    wait_until("everything exported again", WAIT, || {
        delivery.status("file").unwrap().delivered_events == keys.len() as u64
    })
    .await;
    delivery.shutdown().await;
    let (counts, files) = exported(&export);
    assert_eq!(files, 12, "same file names: overwritten, not duplicated");
    assert_eq!(counts.len(), keys.len());
    assert!(
        counts.values().all(|&n| n == 1),
        "an event appears twice: {counts:?}"
    );
}
