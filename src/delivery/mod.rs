//! The delivery engine: one task per destination, from its WAL cursor to acknowledged sends.
//!
//! ```text
//!  WAL ──reader──▶ pipeline ──▶ batcher ──▶ dispatch ──▶ send tasks (≤ concurrency)
//!   ▲              decode        count/bytes/   ack window      │ Delivered / Partial /
//!   │              filter        linger cuts    (contiguous     │ Retriable (backoff) /
//!   │              map schema    stable ids      prefix)        │ Permanent → dead letters
//!   └── collect_garbage ◀── cursor persist (≈200 ms) ◀── dead letters fsynced ◀──┘
//! ```
//!
//! ## What each module owns
//!
//! | module | owns |
//! |---|---|
//! | [`settings`] | the delivery keys of a `--dest` URL, names, limits, concurrency |
//! | [`pipeline`] | record → events → filter → schema rows (the per-event hot path) |
//! | [`batcher`] | deterministic batch cutting and stable batch ids |
//! | [`cut_log`] | recorded linger cuts and starts, so replays cut the same batches |
//! | [`sender`] | one batch's send/classify/backoff loop |
//! | [`retry`] | the backoff schedule and when to give up |
//! | [`dead_letter`] | the on-disk dead-letter store |
//! | [`rewind`] | moving a running destination's cursor back (`worker/rewind.rs` does it) |
//! | [`start`] | `start=` of a new cursor, rewind targets, RFC 3339 times |
//! | `worker` | the per-destination task tying these together, cursor persistence |
//! | [`status`] | the snapshot behind `GET /v1/destinations` |
//!
//! ## Invariants (design §2)
//!
//! * **At least once, or a dead letter** (2): the cursor only moves over spans whose events are
//!   delivered, filtered out, or written to the dead-letter store — and the dead letters are
//!   fdatasynced before the cursor position that covers them is persisted.
//! * **Usually exactly once** (3): batches are cut deterministically from the cursor; the one
//!   non-deterministic cut (linger) is persisted as the cursor's plan before that batch is sent.
//!   Batch ids are `<destination>-<first seq>.<event>-<last seq>.<event>`. Only the *oldest*
//!   in-flight batch's plan fits in the cursor, so a linger-cut batch waits until it is the
//!   oldest (younger batches in flight are always count or byte cuts, which a restart
//!   reproduces). Destinations that overwrite by batch id (file, object stores) therefore
//!   hold every event once after any crash; streams may hold a re-sent batch twice. Rewinds
//!   re-cut the same batches from the recorded linger cuts and starts ([`cut_log`]).
//! * **Retry state survives restarts** (4): the oldest in-flight batch's attempts, next attempt
//!   and first failure are part of the persisted cursor.
//! * **A slow or dead destination never slows the others** (7): each destination has its own
//!   task, reader, concurrency slots and cursor; the only shared resource is WAL disk space,
//!   which a lagging cursor pins visibly (`flagstream_dest_lag_*`).
//! * **Bounded memory** (6): per destination at most `concurrency` batches in flight plus one
//!   ready and one open batch, each within the destination's byte limit.

pub mod batcher;
pub mod cursor_state;
pub mod cut_log;
pub mod dead_letter;
pub mod dead_letter_budget;
pub mod pipeline;
pub mod retry;
pub mod rewind;
pub mod sender;
pub mod settings;
pub mod start;
pub mod status;
mod worker;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dest::{registry, DestError, DestinationSpec};
use crate::event::Filter;
use crate::wal::{Wal, WalError};

pub use crate::dest::units::{parse_byte_size, parse_duration};
pub use dead_letter::{dead_letter_files, dead_letter_path, read_dead_letters, DeadLetterEntry};
pub use dead_letter_budget::DeadLetterLimits;
pub use retry::{parse_max_age, parse_max_attempts, ErrorClass, RetryPolicy};
pub use settings::{assign_names, ConfiguredDestination, DeliveryDefaults, DeliverySettings};
pub use status::{DeliveryState, DestinationStatus};

use batcher::Batcher;
use cursor_state::DeliveryCursor;
use dead_letter::DeadLetterFile;
use dead_letter_budget::DeadLetterBudget;
use pipeline::Pipeline;
use sender::{SendContext, SendMetrics};
use status::{StatusCell, WorkerStatus};
use worker::{Worker, WorkerParts};

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where `<destination>.ndjson` dead-letter files live.
    pub dead_letter_dir: PathBuf,
    /// The store's byte budget and free-space floor (see [`dead_letter_budget`]).
    pub dead_letter_limits: DeadLetterLimits,
    /// How often cursors are persisted (and GC runs). Replays after a crash are bounded by
    /// this interval times the delivery rate.
    pub cursor_sync_interval: Duration,
    /// How long sends already on the wire may finish at shutdown.
    pub shutdown_grace: Duration,
    /// Where `<destination>.cuts` cut logs live ([`cut_log`]).
    pub cut_log_dir: PathBuf,
}

impl EngineOptions {
    /// Defaults for a data directory: `<data-dir>/dead-letters`, 200 ms, 5 s.
    pub fn new(data_dir: &Path) -> Self {
        EngineOptions {
            dead_letter_dir: data_dir.join("dead-letters"),
            dead_letter_limits: DeadLetterLimits::UNLIMITED,
            cursor_sync_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            cut_log_dir: data_dir.join("batch-cuts"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("destination `{0}` is configured twice")]
    DuplicateName(String),
    #[error("destination name {0}")]
    InvalidName(String),
    #[error("no destination named `{0}`")]
    UnknownDestination(String),
    #[error("destination `{name}`: invalid filter: {reason}")]
    Filter { name: String, reason: String },
    #[error("destination `{name}`: opening its cursor: {source}")]
    Cursor {
        name: String,
        #[source]
        source: WalError,
    },
    #[error("destination `{name}`: opening its cut log: {source}")]
    CutLog {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("destination `{name}`: opening its dead-letter store: {source}")]
    DeadLetters {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Turn parsed `--dest` specs into configured destinations: `env:` / `file:` values first,
/// then names, delivery keys, filter keys, and the destination's own keys; any key left over
/// is an error naming it.
pub async fn configure(
    mut specs: Vec<DestinationSpec>,
    defaults: &DeliveryDefaults,
    data_dir: &Path,
) -> Result<Vec<ConfiguredDestination>, DestError> {
    let redactions = specs
        .iter_mut()
        .map(registry::prepare)
        .collect::<Result<Vec<_>, _>>()?;
    let names = assign_names(&mut specs)?;
    let mut configured = Vec::with_capacity(specs.len());
    for ((mut spec, name), redaction) in specs.into_iter().zip(names).zip(redactions) {
        let mut settings = DeliverySettings::take_from(&mut spec, name, defaults)?;
        settings.shown_options = redaction.shown;
        let destination = registry::build_with_keys(
            &mut spec,
            &settings.name,
            settings.schema,
            data_dir,
            &redaction.secret,
            &defaults.environment_keys,
        )
        .await?;
        configured.push(ConfiguredDestination {
            settings,
            destination,
        });
    }
    Ok(configured)
}

struct DestinationHandle {
    name: String,
    paused: watch::Sender<bool>,
    control: mpsc::UnboundedSender<worker::Control>,
    status: Arc<StatusCell>,
}

struct Shared {
    wal: Wal,
    destinations: Vec<DestinationHandle>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// The running engine. Cheap to clone; every clone controls the same workers.
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("destinations", &self.names())
            .finish()
    }
}

impl Delivery {
    /// Open each destination's cursor and dead-letter store and start its worker. Must be
    /// called inside a tokio runtime; does small blocking file I/O (startup only).
    pub fn start(
        wal: &Wal,
        destinations: Vec<ConfiguredDestination>,
        options: &EngineOptions,
    ) -> Result<Delivery, DeliveryError> {
        let mut seen = HashSet::new();
        for configured in &destinations {
            settings::validate_name(&configured.settings.name)
                .map_err(DeliveryError::InvalidName)?;
            if !seen.insert(configured.settings.name.clone()) {
                return Err(DeliveryError::DuplicateName(
                    configured.settings.name.clone(),
                ));
            }
        }
        let budget = DeadLetterBudget::open(&options.dead_letter_dir, options.dead_letter_limits)
            .map_err(|source| DeliveryError::DeadLetters {
            name: "*".to_string(),
            source,
        })?;
        let budget = Arc::new(budget);
        let shutdown = CancellationToken::new();
        let mut handles = Vec::with_capacity(destinations.len());
        let mut workers = Vec::with_capacity(destinations.len());
        for ConfiguredDestination {
            settings,
            destination,
        } in destinations
        {
            let name = settings.name.clone();
            let filter = Filter::new(&settings.filter).map_err(|reason| DeliveryError::Filter {
                name: name.clone(),
                reason,
            })?;
            // `start=` matters only when the cursor is created here; an existing one wins.
            let cursor = wal
                .open_cursor_from(&name, settings.start.resolve(wal))
                .map_err(|source| DeliveryError::Cursor {
                    name: name.clone(),
                    source,
                })?;
            let loaded = DeliveryCursor::load(&name, &cursor.state());
            let dead_file = DeadLetterFile::open(budget.clone(), &name).map_err(|source| {
                DeliveryError::DeadLetters {
                    name: name.clone(),
                    source,
                }
            })?;
            let schema = destination.schema();
            let limits = settings.effective_limits(destination.limits());
            let concurrency = settings.effective_concurrency(destination.kind());
            let (paused_tx, paused_rx) = watch::channel(false);
            let (progress_tx, progress_rx) = mpsc::unbounded_channel();
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            let status = Arc::new(StatusCell {
                name: name.clone(),
                kind: destination.kind().to_string(),
                schema: schema.name().to_string(),
                concurrency,
                options: settings.shown_options.clone(),
                dead_letter_path: dead_file.path().display().to_string(),
                current: Mutex::new(WorkerStatus {
                    state: DeliveryState::Running,
                    paused: false,
                    acked: loaded.acked,
                    in_flight_batches: 0,
                    concurrency,
                    retry: loaded.retry,
                    delivered_events: 0,
                    dead_lettered_events: loaded.dead_lettered,
                    last_error: None,
                }),
            });
            let send_ctx = Arc::new(SendContext {
                destination: destination.clone(),
                policy: settings.retry,
                paused: paused_rx.clone(),
                shutdown: shutdown.clone(),
                progress: progress_tx,
                metrics: SendMetrics::new(&name),
            });
            tracing::info!(
                destination = %name,
                kind = destination.kind(),
                cursor_seq = loaded.acked.seq,
                cursor_event = loaded.acked.event,
                max_items = limits.max_items,
                max_bytes = limits.max_bytes,
                linger_ms = limits.linger.as_millis() as u64,
                concurrency,
                "starting delivery"
            );
            let (cut_log, recorded_cuts) =
                cut_log::open_for_start(&options.cut_log_dir, &name, loaded.acked, wal.first_seq())
                    .map_err(|source| DeliveryError::CutLog {
                        name: name.clone(),
                        source,
                    })?;
            let mut batcher = Batcher::new(&name, schema, limits, loaded.acked, loaded.plan);
            batcher.plan_cuts(recorded_cuts);
            workers.push(WorkerParts {
                reader: wal.reader(loaded.acked.seq),
                batcher,
                cut_log: Arc::new(cut_log),
                pipeline: Pipeline::new(schema, settings.export.clone(), filter)
                    .with_input(destination.input()),
                name: name.clone(),
                wal: wal.clone(),
                cursor,
                loaded,
                dead_file,
                send_ctx,
                progress_rx,
                control_rx,
                concurrency,
                status: status.clone(),
                paused: paused_rx,
                shutdown: shutdown.clone(),
                sync_interval: options.cursor_sync_interval,
                shutdown_grace: options.shutdown_grace,
            });
            handles.push(DestinationHandle {
                name,
                paused: paused_tx,
                control: control_tx,
                status,
            });
        }
        let mut tasks: Vec<_> = workers
            .into_iter()
            .map(|parts| tokio::spawn(Worker::new(parts).run()))
            .collect();
        tasks.extend(spawn_retention_expiry(wal, shutdown.clone()));
        Ok(Delivery {
            shared: Arc::new(Shared {
                wal: wal.clone(),
                destinations: handles,
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Destination names in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.shared
            .destinations
            .iter()
            .map(|handle| handle.name.clone())
            .collect()
    }

    /// Status of every destination, in configuration order.
    pub fn statuses(&self) -> Vec<DestinationStatus> {
        self.shared
            .destinations
            .iter()
            .map(|handle| handle.status.snapshot(&self.shared.wal))
            .collect()
    }

    pub fn status(&self, name: &str) -> Option<DestinationStatus> {
        self.handle(name)
            .ok()
            .map(|handle| handle.status.snapshot(&self.shared.wal))
    }

    /// Stop sending to `name` (batches waiting to retry wait too); reading stops as well.
    pub fn pause(&self, name: &str) -> Result<(), DeliveryError> {
        let handle = self.handle(name)?;
        handle.paused.send_replace(true);
        handle.status.update(|status| {
            status.paused = true;
            status.state = DeliveryState::Paused;
        });
        Ok(())
    }

    pub fn resume(&self, name: &str) -> Result<(), DeliveryError> {
        let handle = self.handle(name)?;
        handle.paused.send_replace(false);
        handle.status.update(|status| status.paused = false);
        Ok(())
    }

    /// Stop every worker: sends on the wire get the grace period, cursors are persisted.
    /// Idempotent; returns when all workers have stopped.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let tasks = match self.shared.tasks.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "delivery worker ended abnormally");
            }
        }
    }

    fn handle(&self, name: &str) -> Result<&DestinationHandle, DeliveryError> {
        self.shared
            .destinations
            .iter()
            .find(|handle| handle.name == name)
            .ok_or_else(|| DeliveryError::UnknownDestination(name.to_string()))
    }
}

/// With `--wal-retention` by age, segments expire while no cursor moves (GC otherwise runs
/// only after a cursor advanced): collect garbage periodically.
fn spawn_retention_expiry(wal: &Wal, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let max_age = wal.options().retention.max_age?;
    let every = (max_age / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let wal = wal.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let wal = wal.clone();
            if let Ok(Err(err)) = tokio::task::spawn_blocking(move || wal.collect_garbage()).await {
                tracing::warn!(error = %err, "WAL garbage collection (retention expiry) failed");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configure_names_layers_options_and_refuses_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let export = dir.path().join("export");
        let specs = vec![
            DestinationSpec::parse(&format!(
                "file://{}?rotate=1s&batch_max_events=50&kinds=feature&project=acme",
                export.display()
            ))
            .unwrap(),
            DestinationSpec::parse("log:stderr?schema=segment&concurrency=1").unwrap(),
            DestinationSpec::parse(&format!("file://{}", dir.path().join("b").display())).unwrap(),
        ];
        let configured = configure(specs, &DeliveryDefaults::default(), dir.path())
            .await
            .unwrap();
        let names: Vec<&str> = configured
            .iter()
            .map(|c| c.settings.name.as_str())
            .collect();
        assert_eq!(names, vec!["file", "log", "file-2"]);
        let file = &configured[0];
        assert_eq!(file.destination.name(), "file");
        assert_eq!(file.settings.batch_max_events, Some(50));
        assert_eq!(file.settings.export.project, "acme");
        let limits = file.settings.effective_limits(file.destination.limits());
        assert_eq!(limits.max_items, 50);
        assert_eq!(limits.linger, Duration::from_secs(1));
        let log = &configured[1];
        assert_eq!(log.destination.schema(), crate::event::Schema::Segment);
        assert_eq!(
            log.settings.effective_concurrency(log.destination.kind()),
            1
        );

        let typo = vec![DestinationSpec::parse("log:?lingr=1s").unwrap()];
        let err = configure(typo, &DeliveryDefaults::default(), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("lingr"), "{err}");
    }

    /// Records what it is sent; asks for raw records.
    #[derive(Debug)]
    struct RawSink {
        sent: tokio::sync::mpsc::UnboundedSender<crate::dest::BatchItem>,
    }

    impl crate::dest::Destination for RawSink {
        fn name(&self) -> &str {
            "raw"
        }
        fn kind(&self) -> &'static str {
            "raw-test"
        }
        fn schema(&self) -> crate::event::Schema {
            crate::event::Schema::default()
        }
        fn input(&self) -> crate::dest::Input {
            crate::dest::Input::RawRecords
        }
        fn limits(&self) -> crate::dest::BatchLimits {
            crate::dest::BatchLimits {
                linger: Duration::from_millis(10),
                ..Default::default()
            }
        }
        fn send<'a>(
            &'a self,
            batch: &'a crate::dest::Batch,
        ) -> futures::future::BoxFuture<'a, crate::dest::SendOutcome> {
            for item in &batch.items {
                let _ = self.sent.send(item.clone());
            }
            Box::pin(async { crate::dest::SendOutcome::Delivered })
        }
        fn check(&self) -> futures::future::BoxFuture<'_, Result<(), DestError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn test_wal(dir: &Path) -> Wal {
        let mut options = crate::wal::WalOptions::new(dir.join("wal"));
        (options.segment_bytes, options.min_free_bytes) = (1 << 20, 0);
        Wal::open(options).unwrap()
    }

    #[tokio::test]
    async fn the_engine_hands_raw_records_with_their_metadata() {
        use crate::event::stored::{encode_header, StoredMeta};
        use crate::event::InboundFormat;
        let dir = tempfile::tempdir().unwrap();
        let wal = test_wal(dir.path());
        let body = br#"[{"kind":"custom","creationDate":1,"key":"k","contextKeys":{"user":"u"}}]"#;
        let mut header = Vec::new();
        encode_header(
            &StoredMeta {
                format: Some(InboundFormat::LdBulk),
                instance_id: None,
                schema_version: Some(4),
                environment: "production",
                payload_id: "payload-1",
                tags: "application-id=shop",
                user_agent: "NodeJSClient/9",
                request: Default::default(),
            },
            &mut header,
        );
        wal.append(crate::wal::AppendRequest {
            tag: InboundFormat::LdBulk.code(),
            event_count: 1,
            received_at_ms: 1_717_000_000_000,
            parts: &[&header, body],
        })
        .await
        .unwrap();
        let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
        let configured = ConfiguredDestination {
            settings: DeliverySettings::named("raw", &DeliveryDefaults::default()),
            destination: Arc::new(RawSink { sent }),
        };
        let delivery =
            Delivery::start(&wal, vec![configured], &EngineOptions::new(dir.path())).unwrap();
        let item = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("the raw record is delivered")
            .unwrap();
        delivery.shutdown().await;
        let raw = crate::dest::RawRecord::of(&item).unwrap();
        assert_eq!(raw.stored.body, body);
        assert_eq!(raw.stored.payload_id, Some("payload-1"));
        assert_eq!(raw.stored.tags, Some("application-id=shop"));
        assert_eq!(raw.stored.user_agent, Some("NodeJSClient/9"));
        assert_eq!(raw.stored.schema_version, Some(4));
        assert_eq!(raw.received_at_ms, 1_717_000_000_000);
        assert_eq!(item.environment, "production");
    }

    #[tokio::test]
    async fn secrets_never_show_in_debug_admin_or_validate_output() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("aws-secret");
        std::fs::write(&key_file, "SECRET-FROM-FILE\n").unwrap();
        std::env::set_var("FLAGSTREAM_TEST_DELIVERY_KEY_ID", "SECRET-FROM-ENV");
        let url = format!(
            "kinesis://flag-events?region=us-east-1&endpoint=http://127.0.0.1:1\
             &access_key_id=env:FLAGSTREAM_TEST_DELIVERY_KEY_ID\
             &secret_access_key=file:{}&session_token=SECRET-INLINE",
            key_file.display()
        );
        let specs = vec![DestinationSpec::parse(&url).unwrap()];
        let configured = configure(specs, &DeliveryDefaults::default(), dir.path())
            .await
            .unwrap();
        let shown = configured[0].settings.shown_options.clone();
        assert_eq!(
            shown["access_key_id"],
            "env:FLAGSTREAM_TEST_DELIVERY_KEY_ID"
        );
        assert_eq!(shown["session_token"], crate::dest::secrets::REDACTED);
        let debug = format!("{:?}", configured[0]);
        let wal = test_wal(dir.path());
        let delivery = Delivery::start(&wal, configured, &EngineOptions::new(dir.path())).unwrap();
        let admin = serde_json::to_string(&delivery.statuses()).unwrap();
        delivery.shutdown().await;
        assert!(
            admin.contains("env:FLAGSTREAM_TEST_DELIVERY_KEY_ID"),
            "{admin}"
        );
        for rendering in [&debug, &admin, &format!("{shown:?}")] {
            for secret in ["SECRET-FROM-ENV", "SECRET-FROM-FILE", "SECRET-INLINE"] {
                assert!(!rendering.contains(secret), "{secret} in {rendering}");
            }
        }

        // A bad reference names the option and the variable, never a value.
        let bad = DestinationSpec::parse(
            "kinesis://s?region=us-east-1&secret_access_key=env:FLAGSTREAM_TEST_UNSET_VARIABLE",
        )
        .unwrap();
        let err = configure(vec![bad], &DeliveryDefaults::default(), dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret_access_key") && err.contains("FLAGSTREAM_TEST_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
