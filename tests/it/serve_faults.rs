//! Faults of the machine and of a destination under the real binary:
//!
//! * a failing fdatasync (the WAL's test-only hook `FLAGSTREAM_TEST_FAIL_SEGMENT_SYNCS_AFTER`):
//!   flagstream answers 503 `wal_unavailable`, exits non-zero, and a restart delivers every
//!   acknowledged event;
//! * a destination down for a long outage (retry schedule compressed by flags) with a
//!   flagstream restart in the middle: the restarted process honours the persisted schedule
//!   (attempt count and next-attempt time), then delivers everything — or dead-letters at
//!   exactly the attempt the schedule says.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::Value;

use crate::support::eventually;
use crate::support::http_receivers::{Answer, Contract, Received, Receiver, WebhookContract};
use crate::support::serve::*;
use flagstream::delivery::cursor_state::DeliveryCursor;
use flagstream::wal::io::FAIL_SEGMENT_SYNCS_AFTER_ENV;
use flagstream::wal::{CursorBlob, CursorState};

const EVENTS_PER_BODY: u64 = 10;
const WAIT: Duration = Duration::from_secs(60);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Post numbered bodies one at a time until one is refused; the acknowledged body numbers
/// and the refusal (status, JSON body).
async fn post_until_refused(server: &Flagstream, limit: u64) -> (Vec<u64>, Option<(u16, Value)>) {
    let client = client();
    let mut acked = Vec::new();
    for body_number in 0..limit {
        let response = client
            .post(server.url("/bulk"))
            .header("authorization", SDK_KEY)
            .body(numbered_bulk(
                body_number * EVENTS_PER_BODY,
                EVENTS_PER_BODY,
            ))
            .send()
            .await
            .expect("flagstream answers while it runs");
        let status = response.status().as_u16();
        if status == 202 {
            acked.push(body_number);
            continue;
        }
        let body: Value = response.json().await.expect("a JSON refusal");
        return (acked, Some((status, body)));
    }
    (acked, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_answers_503_exits_non_zero_and_a_restart_keeps_every_acknowledged_event(
) {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let start = |hook: Option<&str>| {
        let mut builder = Flagstream::builder(dir.path().join("data"))
            .args(["--environment", &production_env()])
            .args([
                "--dest",
                &format!("file://{}?rotate=50ms&name=archive", export.display()),
            ]);
        if let Some(after) = hook {
            builder = builder.env(FAIL_SEGMENT_SYNCS_AFTER_ENV, after);
        }
        builder.start()
    };
    let mut server = start(Some("25")).await;
    let (acked, refusal) = post_until_refused(&server, 1000).await;
    let (status, body) = refusal.expect("a failing fdatasync refuses the append waiting for it");
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("wal_unavailable")),
        "{body}"
    );
    assert!(
        acked.len() >= 5,
        "appends before the failure were acknowledged: {acked:?}"
    );
    let exit = server.wait_exit(WAIT).await;
    assert_eq!(exit.code(), Some(1), "flagstream exits non-zero: {exit:?}");
    assert!(
        server.log_text().contains("fatal"),
        "the log says why it stopped"
    );

    let server = start(None).await;
    server.wait_delivered(WAIT).await;
    let events = wait_for_export(&export, acked.len() * EVENTS_PER_BODY as usize, WAIT).await;
    let exported: std::collections::BTreeSet<u64> = markers(&events).into_iter().collect();
    let missing: Vec<u64> = acked
        .iter()
        .flat_map(|body| body * EVENTS_PER_BODY..(body + 1) * EVENTS_PER_BODY)
        .filter(|marker| !exported.contains(marker))
        .collect();
    eprintln!(
        "fdatasync failure: {} bodies acknowledged before it, {} events exported after the restart, {} missing",
        acked.len(),
        exported.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
}

/// A webhook receiver that is down (503, `Retry-After`) until switched up, and records the
/// wall-clock time and status of every attempt.
struct Switchable {
    up: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<(u64, u16)>>>,
    webhook: WebhookContract,
}

impl Contract for Switchable {
    fn answer(&self, request: &Received, accepted: &[Received]) -> Answer {
        let answer = if self.up.load(Ordering::SeqCst) {
            self.webhook.answer(request, accepted)
        } else {
            Answer::new(503, r#"{"error":"down for maintenance"}"#)
                .header("retry-after", BACKOFF_SECONDS.to_string())
        };
        self.attempts
            .lock()
            .push((unix_ms(), answer.status.as_u16()));
        answer
    }
}

/// Every retry waits exactly this long: jitter is at most the backoff ceiling (set to it by
/// flags) and the receiver asks for it with `Retry-After`. Longer than a restart takes, so a
/// restarted process that ignored the schedule would retry early.
const BACKOFF_SECONDS: u64 = 3;

struct Outage {
    dir: tempfile::TempDir,
    up: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<(u64, u16)>>>,
    receiver: Receiver,
}

impl Outage {
    async fn new() -> Outage {
        let up = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let receiver = Receiver::start(Switchable {
            up: up.clone(),
            attempts: attempts.clone(),
            webhook: WebhookContract {
                paths: Arc::new(Mutex::new(vec!["/hook".to_string()])),
                secret: None,
                token: None,
                max_body_bytes: 1 << 20,
            },
        })
        .await;
        Outage {
            dir: tempfile::tempdir().unwrap(),
            up,
            attempts,
            receiver,
        }
    }

    async fn start(&self, max_retries: &str) -> Flagstream {
        let backoff = format!("{BACKOFF_SECONDS}s");
        Flagstream::builder(self.dir.path().join("data"))
            .args(["--environment", &production_env()])
            .args([
                "--dest",
                &format!(
                    "webhook+{}/hook?name=hook&format=ndjson",
                    self.receiver.base_url()
                ),
            ])
            .args(["--retry-initial-backoff", &backoff])
            .args(["--retry-max-backoff", &backoff])
            .args(["--retry-max-attempts", max_retries])
            .args(["--retry-max-age", "1h"])
            .start()
            .await
    }

    fn failed_attempts(&self) -> Vec<u64> {
        let attempts = self.attempts.lock();
        attempts
            .iter()
            .filter(|(_, status)| *status == 503)
            .map(|(at, _)| *at)
            .collect()
    }

    async fn wait_failed_attempts(&self, count: usize) {
        eventually(&format!("{count} failed attempts"), WAIT, || async {
            let failed = self.failed_attempts().len();
            if failed >= count {
                Ok(())
            } else {
                Err(format!("{failed} so far"))
            }
        })
        .await;
    }

    /// The delivery state persisted in the (stopped) data dir, as `wal inspect` reads it.
    fn persisted_state(&self) -> DeliveryCursor {
        let report = flagstream::wal::inspect::inspect(&self.dir.path().join("data")).unwrap();
        let cursor = report
            .cursors
            .iter()
            .find(|cursor| cursor.name.contains("hook"))
            .unwrap_or_else(|| panic!("no cursor for the webhook: {report}"));
        let blob: Vec<u8> = (0..cursor.blob_hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&cursor.blob_hex[at..at + 2], 16).unwrap())
            .collect();
        let state = CursorState {
            acked: Default::default(),
            blob: CursorBlob::new(&blob).unwrap(),
        };
        DeliveryCursor::decode(&state).unwrap()
    }

    /// Run until `before_restart` attempts failed, restart, and check the restarted process
    /// waited for the persisted next-attempt time and continued the attempt count.
    async fn restart_mid_outage(
        &self,
        server: &mut Flagstream,
        max_retries: &str,
        before_restart: usize,
    ) -> Flagstream {
        self.wait_failed_attempts(before_restart).await;
        assert!(server.terminate().await.success());
        let persisted = self.persisted_state();
        let failed = self.failed_attempts();
        assert_eq!(
            persisted.retry.attempts as usize,
            failed.len(),
            "the persisted attempt count is every failed attempt"
        );
        let restarted = self.start(max_retries).await;
        self.wait_failed_attempts(failed.len() + 1).await;
        let first_after_restart = self.failed_attempts()[failed.len()];
        assert!(
            first_after_restart >= persisted.retry.next_attempt_unix_ms,
            "retried at {first_after_restart}, before the persisted next attempt at {}",
            persisted.retry.next_attempt_unix_ms
        );
        eprintln!(
            "restart after {} failed attempts: next attempt persisted for unix ms {}, made at {} (+{} ms)",
            failed.len(),
            persisted.retry.next_attempt_unix_ms,
            first_after_restart,
            first_after_restart - persisted.retry.next_attempt_unix_ms
        );
        restarted
    }
}

/// One body (one record, so one batch: the schedule is that batch's) of numbered events.
async fn post_body(server: &Flagstream, markers: std::ops::Range<u64>) {
    let status = client()
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .body(numbered_bulk(markers.start, markers.end - markers.start))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
}

fn delivered_markers(receiver: &Receiver) -> BTreeMap<u64, usize> {
    let mut markers = BTreeMap::new();
    for request in receiver.accepted() {
        for line in std::str::from_utf8(&request.body).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let marker = event["event"]["data"]["n"]
                .as_u64()
                .expect("a numbered event");
            *markers.entry(marker).or_insert(0) += 1;
        }
    }
    markers
}

/// Wait until the destination's reported attempt count matches the receiver's count of
/// failed attempts (over both processes): a restart that reset the count never gets there.
async fn wait_attempt_count_matches(server: &Flagstream, outage: &Outage) {
    eventually(
        "the reported attempt count to match the receiver's",
        WAIT,
        || async {
            let status = server.destinations().await;
            let reported = status["destinations"][0]["retry"]["attempts"].as_u64();
            let failed = outage.failed_attempts().len() as u64;
            if reported == Some(failed) {
                Ok(())
            } else {
                Err(format!("reported {reported:?}, receiver saw {failed}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_across_a_restart_follows_the_persisted_schedule_then_delivers_everything() {
    let outage = Outage::new().await;
    let mut server = outage.start("unlimited").await;
    post_body(&server, 0..30).await;
    let server = outage.restart_mid_outage(&mut server, "unlimited", 2).await;
    wait_attempt_count_matches(&server, &outage).await;
    outage.wait_failed_attempts(4).await;
    outage.up.store(true, Ordering::SeqCst);
    server.wait_delivered(WAIT).await;
    let delivered = delivered_markers(&outage.receiver);
    let expected: Vec<u64> = (0..30).collect();
    assert_eq!(delivered.keys().copied().collect::<Vec<_>>(), expected);
    assert!(
        delivered.values().all(|count| *count == 1),
        "each event once (the receiver deduplicates on Idempotency-Key): {delivered:?}"
    );
    let status = server.destinations().await;
    assert_eq!(
        status["destinations"][0]["dead_lettered_events"], 0,
        "{status:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_schedule_dead_letters_at_exactly_the_last_attempt_across_a_restart(
) {
    // 2 retries: the first attempt and two more, then the dead letters.
    let outage = Outage::new().await;
    let mut server = outage.start("2").await;
    post_body(&server, 0..30).await;
    let server = outage.restart_mid_outage(&mut server, "2", 2).await;
    eventually("the batch dead-lettered", WAIT, || async {
        let status = server.destinations().await;
        match status["destinations"][0]["dead_lettered_events"].as_u64() {
            Some(30) => Ok(()),
            _ => Err(format!("{status:#}")),
        }
    })
    .await;
    // Up again: later events are delivered; the dead-lettered batch is not retried.
    outage.up.store(true, Ordering::SeqCst);
    post_body(&server, 30..40).await;
    server.wait_delivered(WAIT).await;
    let delivered = delivered_markers(&outage.receiver);
    let expected: Vec<u64> = (30..40).collect();
    assert_eq!(delivered.keys().copied().collect::<Vec<_>>(), expected);
    assert_eq!(
        outage.failed_attempts().len(),
        3,
        "exactly 1 + 2 retries over both processes, then the dead letters"
    );
}
