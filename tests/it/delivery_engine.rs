//! Delivery engine behaviour against a real WAL: ordering, out-of-order acks, partial
//! resends, retries, dead letters, pause/resume, isolation between destinations.

use crate::support::delivery as delivery_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;

use delivery_support::*;
use flagstream::delivery::cursor_state::DeliveryCursor;
use flagstream::delivery::{read_dead_letters, Delivery, DeliveryState};
use flagstream::dest::{Failure, FailureClass, ItemFailure, SendOutcome};
use flagstream::wal::Wal;

const WAIT: Duration = Duration::from_secs(10);

/// The engine with `remote` alone: three fast retries, one batch in flight.
fn start_remote(wal: &Wal, dir: &std::path::Path, remote: &Arc<Remote>) -> Delivery {
    start(
        wal,
        dir,
        vec![configured(remote.clone(), fast_retry(Some(3)), 1)],
    )
}

/// Wait until the `remote` destination's cursor has reached the end of the log.
async fn wait_caught_up(delivery: &Delivery, wal: &Wal, what: &str) {
    wait_until(what, WAIT, || {
        delivery.status("remote").unwrap().cursor.seq == wal.next_seq()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_once_in_log_order_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let keys = append_records(&wal, 0, 30, 7).await;
    let remote = Remote::accepting("remote", limits(10, 20));
    let delivery = start_remote(&wal, dir.path(), &remote);

    wait_until("all delivered", WAIT, || {
        remote.delivered_keys().len() >= keys.len()
    })
    .await;
    assert_eq!(
        remote.delivered_keys(),
        keys,
        "concurrency 1 delivers in log order, once"
    );
    let sent = remote.sent();
    assert!(sent.iter().all(|s| s.keys.len() <= 10));
    let ids: HashSet<&str> = sent.iter().map(|s| s.batch_id.as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "batch ids are unique");
    assert!(
        sent.windows(2).all(|w| w[0].batch_id < w[1].batch_id),
        "ids sort in log order"
    );

    wait_caught_up(&delivery, &wal, "cursor at the end").await;
    let status = delivery.status("remote").unwrap();
    assert_eq!(status.state, DeliveryState::Running);
    assert_eq!(status.delivered_events, keys.len() as u64);
    assert_eq!(status.lag.records, 0);
    delivery.shutdown().await;
    // The cursor was persisted on shutdown.
    let cursor = wal.open_cursor("remote").unwrap();
    assert_eq!(cursor.state().acked.seq, wal.next_seq());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_advances_only_over_the_contiguous_acked_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let first_seq = wal.next_seq();
    let keys = append_records(&wal, 0, 8, 5).await;
    let release = Arc::new(Notify::new());
    let held = Arc::new(AtomicBool::new(false));
    let (release2, held2) = (release.clone(), held.clone());
    // The first batch is held until released; later batches complete at once (out of order).
    let remote = Remote::new("remote", limits(5, 20), move |batch, _| {
        let first = batch
            .items
            .iter()
            .any(|item| item.payload.windows(4).any(|w| w == b"r0e0"));
        let (release, held) = (release2.clone(), held2.clone());
        async move {
            if first {
                held.store(true, Ordering::SeqCst);
                release.notified().await;
            }
            SendOutcome::Delivered
        }
        .boxed()
    });
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(remote.clone(), fast_retry(Some(3)), 4)],
    );

    wait_until("later batches delivered", WAIT, || {
        remote.delivered_keys().len() >= 15
    })
    .await;
    assert!(held.load(Ordering::SeqCst));
    // The engine has persisted since batch 1 was planned (its plan is in the cursor file);
    // the in-memory cursor, which is what gets persisted, must not have passed it either.
    wait_until("the first batch's plan persisted", WAIT, || {
        DeliveryCursor::decode(&wal.open_cursor("remote").unwrap().state())
            .is_ok_and(|cursor| cursor.plan.is_some())
    })
    .await;
    let status = delivery.status("remote").unwrap();
    assert_eq!(
        (status.cursor.seq, status.cursor.event),
        (first_seq, 0),
        "cursor must not pass the unacked first batch: {status:?}"
    );
    assert!(status.in_flight_batches >= 1);
    let persisted = DeliveryCursor::decode(&wal.open_cursor("remote").unwrap().state()).unwrap();
    assert_eq!(persisted.acked.seq, first_seq);
    assert_eq!(persisted.plan.map(|(start, _)| start.seq), Some(first_seq));

    release.notify_one();
    wait_caught_up(&delivery, &wal, "everything acked").await;
    assert_eq!(sorted(remote.delivered_keys()), sorted(keys));
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failures_resend_only_the_retriable_items_and_dead_letter_the_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let seq = wal.next_seq();
    let keys = append_records(&wal, 0, 1, 6).await;
    // First send: items 1 and 3 fail retriably, item 4 permanently. Then accept.
    let remote = Remote::new("remote", limits(6, 20), |_, call| {
        async move {
            if call == 0 {
                SendOutcome::Partial {
                    failures: vec![
                        ItemFailure::new(1, FailureClass::Retriable, "throttled"),
                        ItemFailure::new(3, FailureClass::Retriable, "internal"),
                        ItemFailure::new(4, FailureClass::Permanent, "too large"),
                    ],
                }
            } else {
                SendOutcome::Delivered
            }
        }
        .boxed()
    });
    let delivery = start_remote(&wal, dir.path(), &remote);
    wait_caught_up(&delivery, &wal, "cursor at the end").await;
    let sent = remote.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].keys, keys);
    assert_eq!(
        sent[1].keys,
        vec![keys[1].clone(), keys[3].clone()],
        "only retriable items resent"
    );
    assert_eq!(
        sent[0].batch_id, sent[1].batch_id,
        "a resend keeps the batch id"
    );
    delivery.shutdown().await;

    let dead = read_dead_letters(&dead_letter_file(dir.path(), "remote")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(event_key(dead[0].payload.get().as_bytes()), keys[4]);
    assert!(dead[0].reason.contains("permanent"), "{}", dead[0].reason);
    assert_eq!((dead[0].seq, dead[0].event), (seq, 4));
    assert_eq!(dead[0].batch_id.as_deref(), Some(sent[0].batch_id.as_str()));
    let persisted = DeliveryCursor::decode(&wal.open_cursor("remote").unwrap().state()).unwrap();
    assert_eq!(persisted.dead_lettered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_failures_back_off_then_dead_letter_when_the_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let keys = append_records(&wal, 0, 1, 3).await;
    let remote = Remote::new("remote", limits(10, 20), |_, _| {
        async { SendOutcome::failed(FailureClass::Retriable, "HTTP 503") }.boxed()
    });
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(remote.clone(), fast_retry(Some(2)), 1)],
    );
    wait_caught_up(&delivery, &wal, "cursor moves past the dead-lettered batch").await;
    let sent = remote.sent();
    assert_eq!(sent.len(), 3, "one attempt + 2 retries");
    for pair in sent.windows(2) {
        assert!(pair[1].at >= pair[0].at);
    }
    let status = delivery.status("remote").unwrap();
    assert_eq!(status.dead_lettered_events, 3);
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("503"),
        "{status:?}"
    );
    delivery.shutdown().await;
    let dead = read_dead_letters(&dead_letter_file(dir.path(), "remote")).unwrap();
    let dead_keys: Vec<String> = dead
        .iter()
        .map(|d| event_key(d.payload.get().as_bytes()))
        .collect();
    assert_eq!(
        dead_keys, keys,
        "nothing dropped: every event is in the dead-letter store"
    );
    assert!(
        dead[0].reason.contains("gave up after 3 failed attempts"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    append_records(&wal, 0, 1, 1).await;
    let remote = Remote::new("remote", limits(10, 20), |_, call| {
        async move {
            if call == 0 {
                SendOutcome::Failed(
                    Failure::throttled("HTTP 429")
                        .with_retry_after(Some(Duration::from_millis(400))),
                )
            } else {
                SendOutcome::Delivered
            }
        }
        .boxed()
    });
    let delivery = start_remote(&wal, dir.path(), &remote);
    wait_until("delivered", WAIT, || remote.delivered_keys().len() == 1).await;
    let sent = remote.sent();
    assert!(sent[1].at.duration_since(sent[0].at) >= Duration::from_millis(400));
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_oversized_and_invalid_events_go_to_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    // Record 0: a normal event, an oversized one, a structurally invalid one (not an object).
    let seq = wal.next_seq();
    append_events(
        &wal,
        &[
            custom_event(0, 0, 8),
            custom_event(0, 1, 5000),
            "42".to_string(),
            custom_event(0, 3, 8),
        ],
    )
    .await;
    let mut small = limits(10, 20);
    small.max_item_bytes = 1024;
    let remote = Remote::new("remote", small, |batch, _| {
        let rejected = batch
            .items
            .iter()
            .any(|item| item.payload.windows(4).any(|w| w == b"r1e0"));
        async move {
            if rejected {
                SendOutcome::failed(FailureClass::Permanent, "schema rejected")
            } else {
                SendOutcome::Delivered
            }
        }
        .boxed()
    });
    let delivery = start_remote(&wal, dir.path(), &remote);
    wait_caught_up(&delivery, &wal, "record 0 done").await;
    // Record 1, in a batch of its own: rejected by the target for good.
    append_events(&wal, &[custom_event(1, 0, 8)]).await;
    wait_caught_up(&delivery, &wal, "record 1 done").await;
    delivery.shutdown().await;
    assert_eq!(sorted(remote.delivered_keys()), vec!["r0e0", "r0e3"]);

    let dead = read_dead_letters(&dead_letter_file(dir.path(), "remote")).unwrap();
    let by_position: HashMap<(u64, u32), &str> = dead
        .iter()
        .map(|d| ((d.seq, d.event), d.reason.as_str()))
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(
        by_position[&(seq, 1)].contains("oversized"),
        "{by_position:?}"
    );
    assert!(
        by_position[&(seq, 2)].contains("invalid"),
        "{by_position:?}"
    );
    assert!(
        by_position[&(seq + 1, 0)].contains("schema rejected"),
        "{by_position:?}"
    );
    let invalid = dead.iter().find(|d| d.event == 2).unwrap();
    assert_eq!(invalid.payload.get(), "42", "the raw invalid event is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_does_not_slow_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let first_seq = wal.next_seq();
    let keys = append_records(&wal, 0, 20, 10).await;
    // "stuck" never answers; "healthy" accepts everything.
    let stuck = Remote::new("stuck", limits(10, 20), |_, _| {
        std::future::pending::<SendOutcome>().boxed()
    });
    let healthy = Remote::accepting("healthy", limits(10, 20));
    let delivery = start(
        &wal,
        dir.path(),
        vec![
            configured(stuck.clone(), fast_retry(None), 2),
            configured(healthy.clone(), fast_retry(None), 2),
        ],
    );
    wait_until("healthy destination delivered everything", WAIT, || {
        healthy.delivered_keys().len() >= keys.len()
    })
    .await;
    // More traffic keeps flowing to the healthy one.
    let more = append_records(&wal, 20, 5, 10).await;
    wait_until("new traffic delivered", WAIT, || {
        healthy.delivered_keys().len() >= keys.len() + more.len()
    })
    .await;
    let stuck_status = delivery.status("stuck").unwrap();
    assert_eq!(stuck_status.cursor.seq, first_seq);
    assert_eq!(
        stuck_status.in_flight_batches, 2,
        "bounded by its concurrency"
    );
    assert!(stuck_status.lag.records >= 25);
    // Shutdown is bounded by the grace period even with a send that never returns.
    tokio::time::timeout(Duration::from_secs(5), delivery.shutdown())
        .await
        .expect("shutdown finishes despite a hung destination");
    assert_eq!(
        wal.open_cursor("stuck").unwrap().state().acked.seq,
        first_seq
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_sending_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let remote = Remote::accepting("remote", limits(10, 20));
    // Never paused, reading the same log: once it has everything, the paused one had every
    // chance to send too (a counter that would move, instead of a sleep).
    let control = Remote::accepting("control", limits(10, 20));
    let delivery = start(
        &wal,
        dir.path(),
        vec![
            configured(remote.clone(), fast_retry(None), 1),
            configured(control.clone(), fast_retry(None), 1),
        ],
    );
    delivery.pause("remote").unwrap();
    assert!(delivery.pause("nope").is_err());
    let keys = append_records(&wal, 0, 3, 3).await;
    wait_until("the control destination delivered", WAIT, || {
        control.delivered_keys().len() == keys.len()
    })
    .await;
    assert!(
        remote.sent().is_empty(),
        "paused destination sent something"
    );
    let status = delivery.status("remote").unwrap();
    assert_eq!(status.state, DeliveryState::Paused);
    assert!(status.paused);
    delivery.resume("remote").unwrap();
    wait_until("delivered after resume", WAIT, || {
        remote.delivered_keys().len() == keys.len()
    })
    .await;
    assert_eq!(
        delivery.status("remote").unwrap().state,
        DeliveryState::Running
    );
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_serialises_for_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let remote = Remote::accepting("remote", limits(10, 20));
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(remote, fast_retry(None), 1)],
    );
    let json = serde_json::to_value(delivery.statuses()).unwrap();
    let first = &json[0];
    assert_eq!(first["name"], "remote");
    assert_eq!(first["state"], "running");
    for field in [
        "cursor",
        "lag",
        "retry",
        "dead_lettered_events",
        "last_error",
        "in_flight_batches",
    ] {
        assert!(first.get(field).is_some(), "missing {field}: {first}");
    }
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_lowers_concurrency_and_clean_deliveries_restore_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(dir.path());
    let keys = append_records(&wal, 0, 12, 5).await;
    let remote = Remote::new("remote", limits(5, 20), |_, call| {
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if call < 4 {
                SendOutcome::failed(FailureClass::Throttled, "ProvisionedThroughputExceeded")
            } else {
                SendOutcome::Delivered
            }
        }
        .boxed()
    });
    let delivery = start(
        &wal,
        dir.path(),
        vec![configured(remote.clone(), fast_retry(None), 4)],
    );
    let mut lowest = usize::MAX;
    let deadline = std::time::Instant::now() + WAIT;
    while remote.delivered_keys().len() < keys.len() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        let status = delivery.status("remote").unwrap();
        assert!(status.in_flight_batches <= 4);
        lowest = lowest.min(status.concurrency);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(lowest < 4, "concurrency never lowered while throttled");
    wait_until("concurrency restored", WAIT, || {
        delivery.status("remote").unwrap().concurrency == 4
    })
    .await;
    assert_eq!(delivery.status("remote").unwrap().concurrency_limit, 4);
    delivery.shutdown().await;
}
