//! The destination conformance suite: the same checks, written once, run against every
//! destination through the real binary (`flagstream serve --dest <url>`), with what arrived
//! read back by the target's own client.
//!
//! A destination takes part by implementing [`Target`] for its stand-in (see [`targets`]) and
//! one [`conformance!`] line below. What a target cannot do is declared in its
//! [`Capabilities`], and the checks branch on those flags, never on the target's name:
//!
//! | check | requires |
//! |---|---|
//! | [`exactly_once`]: every event sent arrives exactly once | — |
//! | [`missing_target`]: permanent, the reason names it in dead letters, `/v1/destinations` and `flagstream test-destination` | `missing_target` |
//! | [`outage`]: unreachable is retriable; the stand-in restarted mid-stream loses nothing | `outage` |
//! | [`oversized_event`]: dead-lettered with the reason, neighbours delivered | `max_event_bytes` |
//! | [`resent_batch`]: the same batch id sent again does not duplicate (or, where the target cannot deduplicate, arrives at least once) | — |
//!
//! Adding a destination: implement [`Target`] in `targets.rs`, add a line to the list at the
//! bottom of this file.

pub mod bigquery;
pub mod eventhubs;
pub mod gcs;
pub mod kafka;
pub mod launchdarkly;
pub mod mparticle;
pub mod postgres_target;
pub mod s3;
pub mod segment;
pub mod snowflake;
pub mod targets;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::time::Duration;

use flagstream_harness::{ServeOptions, Server};
use serde_json::Value;

use crate::support::cloud::{assert_exactly_once, ld_bulk, test_seq_of};
use crate::support::eventually;

/// The destination's `name=` in every `--dest` URL of the suite.
pub const DEST: &str = "conformance";
/// How long a check waits for delivery before it fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// What a target can be asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// A `--dest` URL for a target that does not exist can be made, and its failure is
    /// permanent (not worth retrying).
    pub missing_target: bool,
    /// The stand-in can be made unreachable and brought back with what it held.
    pub outage: bool,
    /// The largest event payload the target accepts, when it has a limit.
    pub max_event_bytes: Option<usize>,
    /// A batch sent again with the same batch id replaces the first copy.
    pub dedupes_resent_batches: bool,
}

/// A destination's stand-in, as the suite drives it.
#[allow(async_fn_in_trait)] // used generically within this crate only; never `dyn`
pub trait Target {
    fn capabilities(&self) -> Capabilities;

    /// Environment the flagstream process needs for this target (credentials).
    fn env(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// Create the target `name` (stream, topic, directory) and return its `--dest` URL,
    /// with `name=` [`DEST`].
    async fn create(&mut self, name: &str) -> String;

    /// A `--dest` URL for a target that does not exist, and the name its reason must carry.
    fn missing(&self) -> (String, String) {
        unreachable!("only called when capabilities().missing_target")
    }

    /// The `testSeq` of every event target `name` holds (or received, for a queue), read
    /// with the target's own client. Called once everything sent was acknowledged, so a
    /// target can read what it has now; `expected` is the least that must be there.
    async fn read_back(&mut self, name: &str, expected: usize) -> Vec<String>;

    /// Make the target unreachable to flagstream.
    async fn stop(&mut self) {
        unreachable!("only called when capabilities().outage")
    }

    /// Make it reachable again, holding what it held when stopped (targets created so far
    /// exist again).
    async fn restart(&mut self) {
        unreachable!("only called when capabilities().outage")
    }
}

/// `flagstream serve` for the suite: small WAL, fast and unlimited retries (so only a
/// permanent failure dead-letters), bodies large enough for any target's size limit.
pub async fn serve(dir: &Path, dest: &str, env: &[(&str, &str)]) -> Server {
    let mut options = ServeOptions::new(env!("CARGO_BIN_EXE_flagstream"), dir.join("data"))
        .log_path(next_log(dir))
        .args(["--dest", dest])
        .args(["--wal-segment-bytes", "32MiB", "--wal-min-free-bytes", "0"])
        .args(["--max-body-bytes", "16MiB"])
        .args([
            "--retry-initial-backoff",
            "200ms",
            "--retry-max-backoff",
            "1s",
        ])
        .args([
            "--retry-max-attempts",
            "unlimited",
            "--retry-max-age",
            "unlimited",
        ])
        .args(["--log-level", "info,flagstream=debug"]);
    for (name, value) in env {
        options = options.env(name, value);
    }
    options.start().await.unwrap_or_else(|err| panic!("{err}"))
}

/// Logs live beside the data dir (a snapshot of the data dir must not carry them).
fn next_log(dir: &Path) -> PathBuf {
    (0..)
        .map(|n| dir.join(format!("flagstream-{n}.log")))
        .find(|path| !path.exists())
        .unwrap()
}

/// POST a LaunchDarkly `/bulk` body; panics unless flagstream accepted it (202).
pub async fn post(server: &Server, events: &Value) {
    let response = reqwest::Client::new()
        .post(server.url("/bulk"))
        .header("content-type", "application/json")
        .header("x-launchdarkly-event-schema", "4")
        .header(
            "x-launchdarkly-payload-id",
            format!("{:032x}", rand::random::<u128>()),
        )
        .body(serde_json::to_vec(events).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 202, "POST /bulk answered {status}: {body}");
}

/// The suite's destination as `/v1/destinations` reports it.
pub async fn status(server: &Server) -> Value {
    let response = server.admin_get("/v1/destinations").await.unwrap();
    let all: Value = serde_json::from_slice(&response.body).unwrap();
    all["destinations"]
        .as_array()
        .and_then(|list| list.iter().find(|d| d["name"] == DEST))
        .cloned()
        .unwrap_or_else(|| panic!("no destination `{DEST}` in {all}"))
}

/// Poll `/v1/destinations` until `done` holds for the suite's destination.
pub async fn wait_status(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let done = &done;
    eventually(what, DELIVERY_TIMEOUT, || async move {
        let current = status(server).await;
        if done(&current) {
            Ok(current)
        } else {
            Err(format!("{current:#}"))
        }
    })
    .await
}

/// Wait until everything accepted was acknowledged by the destination (no lag, nothing in
/// flight): after this, whatever the target will ever hold of it is there.
pub async fn wait_acknowledged(server: &Server) -> Value {
    wait_status(server, "caught up", |d| {
        d["lag"]["records"] == 0 && d["in_flight_batches"] == 0
    })
    .await
}

/// The dead letters of the suite's destination: complete lines only (the server may be
/// writing the next one).
pub fn dead_letters(dir: &Path) -> Vec<Value> {
    let path = dir.join(format!("data/dead-letters/{DEST}.ndjson"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Wait until `count` events are dead-lettered; returns them.
pub async fn wait_dead_letters(dir: &Path, count: usize, server: &Server) -> Vec<Value> {
    let what = format!("{count} events dead-lettered");
    eventually(&what, DELIVERY_TIMEOUT, || async move {
        let dead = dead_letters(dir);
        if dead.len() >= count {
            Ok(dead)
        } else {
            Err(format!("{} so far; {}", dead.len(), status(server).await))
        }
    })
    .await
}

/// `testSeq`s `{tag}-0` … `{tag}-{count - 1}`.
pub fn tagged(tag: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count).map(move |i| format!("{tag}-{i}"))
}

/// Bodies `{tag}{b}` of `per_body` events each.
async fn post_bodies(server: &Server, tag: &str, bodies: usize, per_body: usize) -> Vec<String> {
    let mut expected = Vec::new();
    for body in 0..bodies {
        let body_tag = format!("{tag}{body}");
        post(server, &ld_bulk(&body_tag, per_body, 20)).await;
        expected.extend(tagged(&body_tag, per_body));
    }
    expected
}

/// Every event sent arrives exactly once in the normal path.
pub async fn exactly_once(mut target: impl Target, dir: &Path) {
    let dest = target.create("flag-events").await;
    let server = serve(dir, &dest, &target.env()).await;
    let expected = post_bodies(&server, "normal", 5, 100).await;
    wait_acknowledged(&server).await;
    let seen = target.read_back("flag-events", expected.len()).await;
    assert_exactly_once(&seen, expected);
    assert!(dead_letters(dir).is_empty(), "{:?}", dead_letters(dir));
}

/// A missing target is permanent and its reason names it: in the dead letters, in
/// `/v1/destinations`, and in `flagstream test-destination`'s failure.
pub async fn missing_target(target: impl Target, dir: &Path) {
    assert!(target.capabilities().missing_target);
    let (dest, missing) = target.missing();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["test-destination", DEST, "--dest", &dest])
        .envs(target.env())
        .env("FLAGSTREAM_DATA_DIR", dir.join("test-destination"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "test-destination passed: {stdout}"
    );
    assert!(stdout.contains(&missing), "test-destination: {stdout}");

    // Retries are unlimited: only a permanent failure dead-letters.
    let server = serve(dir, &dest, &target.env()).await;
    post(&server, &ld_bulk("lost", 4, 2)).await;
    let dead = wait_dead_letters(dir, 4, &server).await;
    for letter in &dead {
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(&missing), "reason: {reason}");
    }
    let reported = status(&server).await.to_string();
    assert!(reported.contains(&missing), "/v1/destinations: {reported}");
}

/// An unreachable target is retriable (the engine backs off, nothing is dead-lettered) and
/// a stand-in restarted mid-stream loses nothing: every event accepted during the outage is
/// read back exactly once.
pub async fn outage(mut target: impl Target, dir: &Path) {
    assert!(target.capabilities().outage);
    let dest = target.create("flag-events").await;
    let server = serve(dir, &dest, &target.env()).await;
    let before = post_bodies(&server, "before", 2, 100).await;
    wait_acknowledged(&server).await;
    assert_exactly_once(&target.read_back("flag-events", before.len()).await, before);

    target.stop().await;
    let during = post_bodies(&server, "outage", 5, 100).await;
    let failing = wait_status(&server, "retrying while unreachable", |d| {
        d["state"] == "backing_off" && d["last_error"].is_string()
    })
    .await;
    target.restart().await;
    wait_acknowledged(&server).await;

    let seen: Vec<String> = target
        .read_back("flag-events", during.len())
        .await
        .into_iter()
        .filter(|seq| seq.starts_with("outage"))
        .collect();
    assert_exactly_once(&seen, during);
    assert!(
        dead_letters(dir).is_empty(),
        "an outage is retriable, nothing may be dead-lettered (status while down: {failing})"
    );
}

/// An event over the target's size limit lands in the dead letters with the reason; its
/// neighbours are delivered.
pub async fn oversized_event(mut target: impl Target, dir: &Path) {
    let limit = target.capabilities().max_event_bytes.expect("a size limit");
    let dest = target.create("flag-events").await;
    let server = serve(dir, &dest, &target.env()).await;
    let mut body = ld_bulk("big", 3, 3);
    body[1]["padding"] = Value::String("x".repeat(limit + 10));
    post(&server, &body).await;
    let dead = wait_dead_letters(dir, 1, &server).await;
    wait_acknowledged(&server).await;

    let seen = target.read_back("flag-events", 2).await;
    assert_exactly_once(&seen, ["big-0".to_string(), "big-2".to_string()]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"]["event"]["testSeq"], "big-1");
    let reason = dead[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bytes"), "reason: {reason}");
}

/// A batch re-sent with the same batch id: flagstream delivers one body's events, then starts
/// again from a copy of its data dir taken before that delivery, so the engine cuts and
/// re-sends the very same batch (batch ids are the first and last event positions). A target that deduplicates holds every event once; any
/// other holds every event at least once.
pub async fn resent_batch(mut target: impl Target, dir: &Path) {
    let dest = target.create("flag-events").await;
    let data = dir.join("data");
    let snapshot = dir.join("snapshot");

    let mut server = serve(dir, &dest, &target.env()).await;
    pause_destination(&server).await;
    let expected = post_bodies(&server, "resent", 1, 50).await;
    stop(&mut server).await;
    copy_dir(&data, &snapshot);

    for run in ["first delivery", "re-send from the snapshot"] {
        if run != "first delivery" {
            std::fs::remove_dir_all(&data).unwrap();
            copy_dir(&snapshot, &data);
        }
        let mut server = serve(dir, &dest, &target.env()).await;
        let delivered = wait_acknowledged(&server).await["delivered_events"].clone();
        assert_eq!(delivered, expected.len(), "{run}: every event sent");
        stop(&mut server).await;
    }

    let seen = target.read_back("flag-events", expected.len()).await;
    if target.capabilities().dedupes_resent_batches {
        assert_exactly_once(&seen, expected);
    } else {
        let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique,
            expected.iter().cloned().collect(),
            "every event arrives"
        );
        assert_eq!(
            seen.len(),
            2 * expected.len(),
            "the re-sent batch arrives again"
        );
    }
}

/// Pause the suite's destination through the admin API and check it took.
async fn pause_destination(server: &Server) {
    let response = reqwest::Client::new()
        .post(server.admin_url(&format!("/v1/destinations/{DEST}/pause")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "pause: {response:?}");
    wait_status(server, "paused", |d| d["paused"] == true).await;
}

/// An orderly stop (cursors persisted).
async fn stop(server: &mut Server) {
    let status = server.terminate(Duration::from_secs(60)).await;
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `testSeq` of each exported LaunchDarkly envelope in NDJSON text.
pub fn test_seqs_of_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| test_seq_of(line.as_bytes()))
        .collect()
}

/// One test per check for a target: `conformance!(module, constructor)` runs every check,
/// `conformance!(module, constructor, [checks])` the listed ones (what the target's
/// capabilities allow); `constructor(scratch_dir).await` starts the stand-in.
macro_rules! conformance {
    ($module:ident, $start:path) => {
        conformance!(
            $module,
            $start,
            [exactly_once, missing_target, outage, oversized_event, resent_batch]
        );
    };
    ($module:ident, $start:path, [$($check:ident),+ $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::{bigquery, launchdarkly, mparticle, segment, snowflake, targets, webhook};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let scratch = tempfile::tempdir().unwrap();
                    let target = $start(scratch.path()).await;
                    super::$check(target, scratch.path()).await;
                }
            )+
        }
    };
}

conformance!(
    file,
    targets::File::start,
    [exactly_once, outage, oversized_event, resent_batch]
);
conformance!(log, targets::Log::start, [exactly_once, resent_batch]);
conformance!(kinesis_moto, targets::Kinesis::moto);
conformance!(kinesis_kinesalite, targets::Kinesis::kinesalite);
conformance!(pubsub_emulator, targets::PubSub::emulator);
conformance!(kafka_tansu, targets::Kafka::tansu);
conformance!(s3_moto, targets::S3::moto);
conformance!(gcs_fake, targets::Gcs::fake);
conformance!(
    postgres,
    targets::Postgres::start,
    [exactly_once, missing_target, outage, resent_batch]
);
conformance!(
    bigquery_emulator,
    bigquery::BigQuery::start,
    [exactly_once, missing_target, outage, resent_batch]
);
conformance!(
    snowflake_fakesnow,
    snowflake::Snowflake::start,
    [exactly_once, resent_batch]
);
conformance!(webhook_receiver, webhook::Webhook::start);
conformance!(
    segment_api,
    segment::Segment::start,
    [exactly_once, outage, resent_batch]
);
conformance!(
    mparticle_api,
    mparticle::MParticle::start,
    [exactly_once, outage, resent_batch]
);
conformance!(eventhubs_standin, targets::EventHubs::standin);
// `missing_target` and `resent_batch` count delivered and dead-lettered *events*; a
// raw-records destination counts records. Their record-level equivalents (404/401 are
// permanent with the reason; a re-send is deduplicated on the payload id) are in
// `tests/it/launchdarkly.rs`.
conformance!(
    launchdarkly_events,
    launchdarkly::LaunchDarkly::start,
    [exactly_once, outage]
);
