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
//! | `recording` | what processing one record produced, replayed by destinations configured alike |
//! | [`shared_records`] | decode once for several destinations: the bounded cache of recordings |
//! | [`batcher`] | deterministic batch cutting and stable batch ids |
//! | [`spare_buffers`] | a sent batch's buffers, reused for the next batch (warm memory) |
//! | [`cut_log`] | recorded linger cuts and starts, so replays cut the same batches |
//! | [`sender`] | one batch's send/classify/backoff loop |
//! | [`retry`] | the backoff schedule and when to give up |
//! | [`dead_letter`] | the on-disk dead-letter store |
//! | [`redrive`] | which dead letters a redrive selects and which were handled (on disk) |
//! | `redrive_source` | a worker's queue of dead letters to send again, between WAL batches |
//! | [`rewind`] | moving a running destination's cursor back (`worker/rewind.rs` does it) |
//! | [`start`] | `start=` of a new cursor, rewind targets, RFC 3339 times |
//! | `worker` | the per-destination task tying these together, cursor persistence |
//! | [`status`] | the snapshot behind `GET /v1/destinations` |
//! | [`destination_set`] | destinations added, changed and removed while running (admin API, reload) |
//! | [`destination_store`] | the API-created destinations persisted in the data dir |
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
//!   ready and one open batch, each within the destination's byte limit, and at most
//!   [`spare_buffers::MAX_SPARES`] emptied buffer sets of sent batches (freed after a second
//!   unused).

pub mod batcher;
pub mod cursor_state;
pub mod cut_log;
pub mod dead_letter;
pub mod dead_letter_budget;
pub mod destination_set;
pub mod destination_store;
pub mod pipeline;
mod recording;
pub mod redrive;
mod redrive_source;
pub mod retry;
pub mod rewind;
pub mod sender;
pub mod settings;
pub mod shared_records;
pub mod spare_buffers;
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
use crate::event::{Filter, Schema};
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
use redrive::{Page, RedriveError, RedriveFilter, RedriveJob, RedriveLedger, Summary};
use redrive_source::RedriveSource;
use sender::{SendContext, SendMetrics};
use shared_records::{Fingerprint, SharedRecords};
use status::{StatusCell, WorkerStatus};
use worker::{Worker, WorkerParts};

/// Default of [`EngineOptions::shared_records_max_bytes`] (`--shared-records-max-bytes`):
/// about 1,200 records of 100 events mapped to LaunchDarkly envelopes. Destinations drift
/// apart by the batches they have in flight (two 8 MiB file batches are ~600 such records), and
/// a follower further behind than the cache holds decodes on its own: at 16 MiB the followers
/// of a four-destination drain missed 86 % of records, at 64 MiB none (`docs/performance.md`).
pub const DEFAULT_SHARED_RECORDS_MAX_BYTES: usize = 64 * 1024 * 1024;

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
    /// Memory bound of decoded records shared by destinations configured alike
    /// ([`shared_records`]); 0 turns sharing off.
    pub shared_records_max_bytes: usize,
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
            shared_records_max_bytes: DEFAULT_SHARED_RECORDS_MAX_BYTES,
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
    #[error(transparent)]
    Redrive(#[from] RedriveError),
    #[error(
        "dead letters of `{from}` are `{source_schema}` rows; `{target}` takes \
         `{target_schema}`: redrive to a destination with the same schema"
    )]
    SchemaMismatch {
        from: String,
        target: String,
        source_schema: &'static str,
        target_schema: &'static str,
    },
    #[error("`{0}` takes raw records, which dead letters are not: redrive to another destination")]
    RawTarget(String),
}

/// What a redrive request started.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedriveStarted {
    /// Dead letters (distinct events) the job will send; 0 starts no job.
    pub events: u64,
    pub job: Option<RedriveJob>,
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
    /// Stops this worker only (a child of the engine's shutdown token).
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    schema: Schema,
    raw_records: bool,
    redrive: mpsc::UnboundedSender<RedriveJob>,
}

struct Shared {
    wal: Wal,
    options: EngineOptions,
    budget: Arc<DeadLetterBudget>,
    /// Running destinations in the order they were added; changes while running
    /// ([`Delivery::add`], [`Delivery::remove`], [`Delivery::replace`]).
    destinations: Mutex<Vec<Arc<DestinationHandle>>>,
    dead_letter_dir: PathBuf,
    ledger: Arc<RedriveLedger>,
    shutdown: CancellationToken,
    /// Decoded records shared by destinations configured alike.
    shared_records: Arc<SharedRecords>,
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let names: Vec<&str> = destinations
            .iter()
            .map(|d| d.settings.name.as_str())
            .collect();
        let ledger = open_redrive_ledger(&options.dead_letter_dir, &names)?;
        let delivery = Delivery {
            shared: Arc::new(Shared {
                wal: wal.clone(),
                options: options.clone(),
                budget: Arc::new(budget),
                dead_letter_dir: options.dead_letter_dir.clone(),
                ledger,
                destinations: Mutex::new(Vec::with_capacity(destinations.len())),
                shutdown: CancellationToken::new(),
                shared_records: SharedRecords::new(options.shared_records_max_bytes),
            }),
        };
        for configured in destinations {
            if let Err(err) = delivery.add(configured) {
                delivery.shared.shutdown.cancel();
                return Err(err);
            }
        }
        // Ends with the engine's shutdown token; nothing to wait for at shutdown.
        drop(spawn_retention_expiry(
            wal,
            delivery.shared.shutdown.clone(),
        ));
        Ok(delivery)
    }

    /// Start one more destination while running: open (or create) its cursor, open its
    /// dead-letter file, spawn its worker. Small blocking file I/O; call inside a runtime.
    pub fn add(&self, configured: ConfiguredDestination) -> Result<(), DeliveryError> {
        let name = configured.settings.name.clone();
        settings::validate_name(&name).map_err(DeliveryError::InvalidName)?;
        // Held across the open so two adds of one name cannot both pass the check.
        let mut destinations = lock(&self.shared.destinations);
        if destinations.iter().any(|handle| handle.name == name) {
            return Err(DeliveryError::DuplicateName(name));
        }
        let (parts, handle) = self.worker_parts(configured)?;
        let task = tokio::spawn(Worker::new(parts).run());
        *lock(&handle.task) = Some(task);
        destinations.push(Arc::new(handle));
        Ok(())
    }

    /// Stop `name`'s worker (its in-flight batches get the shutdown grace period, then are
    /// abandoned unacknowledged and re-read later) and forget it. Its cursor stays on disk.
    pub async fn stop(&self, name: &str) -> Result<(), DeliveryError> {
        let handle = {
            let mut destinations = lock(&self.shared.destinations);
            let index = destinations
                .iter()
                .position(|handle| handle.name == name)
                .ok_or_else(|| DeliveryError::UnknownDestination(name.to_string()))?;
            destinations.remove(index)
        };
        handle.stop.cancel();
        let task = lock(&handle.task).take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::error!(destination = name, error = %err, "delivery worker ended abnormally");
            }
        }
        tracing::info!(destination = name, "destination stopped");
        Ok(())
    }

    /// Stop `name` (if it runs) and release its cursor, so it no longer holds back WAL garbage
    /// collection (a destination created later under this name starts afresh). Idempotent.
    pub async fn remove(&self, name: &str) -> Result<(), DeliveryError> {
        self.stop_if_running(name).await?;
        let wal = self.shared.wal.clone();
        let owned = name.to_string();
        // A destination created later under this name starts afresh: no recorded cuts.
        let cuts = self.shared.options.cut_log_dir.join(format!("{name}.cuts"));
        let released = tokio::task::spawn_blocking(move || {
            wal.release_cursor(&owned)?;
            if let Err(err) = std::fs::remove_file(&cuts) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(destination = %owned, error = %err, "removing the cut log failed");
                }
            }
            wal.collect_garbage()
        })
        .await
        .unwrap_or_else(|err| Err(WalError::InvalidArgument(err.to_string())));
        // The series stay in /metrics; zero them so a removed destination raises no lag alert.
        for gauge in [
            crate::metrics::DEST_LAG_RECORDS,
            crate::metrics::DEST_LAG_BYTES,
            crate::metrics::DEST_LAG_SECONDS,
            crate::metrics::DEST_PAUSED,
            crate::metrics::DEST_DEAD_LETTERS_FULL,
            crate::metrics::DEST_DEAD_LETTERS_WAITING,
        ] {
            metrics::gauge!(gauge, "destination" => name.to_string()).set(0.0);
        }
        released.map(drop).map_err(|source| DeliveryError::Cursor {
            name: name.to_string(),
            source,
        })
    }

    /// Restart `configured.settings.name` with new options, keeping its cursor (and its
    /// pause state): the old worker settles or abandons its in-flight batches first.
    pub async fn replace(&self, configured: ConfiguredDestination) -> Result<(), DeliveryError> {
        let name = configured.settings.name.clone();
        // Not running (an earlier replace failed to start it again): just start it.
        let paused = self
            .handle(&name)
            .is_ok_and(|handle| *handle.paused.borrow());
        self.stop_if_running(&name).await?;
        self.add(configured)?;
        if paused {
            self.pause(&name)?;
        }
        Ok(())
    }

    async fn stop_if_running(&self, name: &str) -> Result<(), DeliveryError> {
        match self.stop(name).await {
            Err(DeliveryError::UnknownDestination(_)) => Ok(()),
            other => other,
        }
    }

    /// Everything one worker is built from, and the handle that controls it.
    fn worker_parts(
        &self,
        configured: ConfiguredDestination,
    ) -> Result<(WorkerParts, DestinationHandle), DeliveryError> {
        let ConfiguredDestination {
            settings,
            destination,
        } = configured;
        let (wal, options) = (&self.shared.wal, &self.shared.options);
        let name = settings.name.clone();
        let filter = Filter::new(&settings.filter).map_err(|reason| DeliveryError::Filter {
            name: name.clone(),
            reason,
        })?;
        let cursor = open_cursor(wal, &name, &settings)?;
        let loaded = DeliveryCursor::load(&name, &cursor.state());
        let dead_file =
            DeadLetterFile::open(self.shared.budget.clone(), &name).map_err(|source| {
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
        let (redrive_tx, redrive_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(status_cell(
            &settings,
            destination.as_ref(),
            &dead_file,
            &loaded,
            concurrency,
        ));
        let stop = self.shared.shutdown.child_token();
        let send_ctx = Arc::new(SendContext {
            destination: destination.clone(),
            policy: settings.retry,
            paused: paused_rx.clone(),
            shutdown: stop.clone(),
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
        // Left again when the worker (and with it the pipeline) is dropped.
        let member = self.shared.shared_records.join(Fingerprint {
            schema,
            input: destination.input(),
            export: settings.export.clone(),
            filter: settings.filter.clone(),
        });
        let parts = WorkerParts {
            reader: wal.reader(loaded.acked.seq),
            batcher,
            cut_log: Arc::new(cut_log),
            pipeline: Pipeline::new(schema, settings.export.clone(), filter)
                .with_input(destination.input())
                .with_shared(member),
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
            shutdown: stop.clone(),
            sync_interval: options.cursor_sync_interval,
            shutdown_grace: options.shutdown_grace,
            redrive: RedriveSource::new(
                &name,
                self.shared.ledger.clone(),
                &options.dead_letter_dir,
                redrive_rx,
                (limits, schema),
            ),
            ledger: self.shared.ledger.clone(),
        };
        let handle = DestinationHandle {
            name,
            paused: paused_tx,
            control: control_tx,
            status,
            stop,
            task: Mutex::new(None),
            schema,
            raw_records: destination.input() == crate::dest::Input::RawRecords,
            redrive: redrive_tx,
        };
        Ok((parts, handle))
    }

    /// Destination names in the order they were added.
    pub fn names(&self) -> Vec<String> {
        lock(&self.shared.destinations)
            .iter()
            .map(|handle| handle.name.clone())
            .collect()
    }

    /// Status of every destination, in the order they were added.
    pub fn statuses(&self) -> Vec<DestinationStatus> {
        let handles = lock(&self.shared.destinations).clone();
        handles
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
        let handles = lock(&self.shared.destinations).clone();
        for handle in handles {
            let task = lock(&handle.task).take();
            if let Some(task) = task {
                if let Err(err) = task.await {
                    tracing::error!(error = %err, "delivery worker ended abnormally");
                }
            }
        }
    }

    /// Dead letters of `name`: files, counts by reason, redriven counts. Blocking file I/O.
    pub fn dead_letter_summary(&self, name: &str) -> Result<Summary, DeliveryError> {
        self.handle(name)?;
        Ok(redrive::summarize(
            &self.shared.dead_letter_dir,
            name,
            &self.shared.ledger,
        )?)
    }

    /// Lines `offset..offset + limit` of `name`'s dead letters matching `filter`. Blocking.
    pub fn dead_letter_page(
        &self,
        name: &str,
        filter: &RedriveFilter,
        offset: u64,
        limit: u64,
    ) -> Result<Page, DeliveryError> {
        self.handle(name)?;
        let dir = &self.shared.dead_letter_dir;
        Ok(redrive::page(
            dir,
            name,
            filter,
            (offset, limit),
            &self.shared.ledger,
        )?)
    }

    /// Send the dead letters of `source` matching `filter` again, through `target` (default:
    /// `source`). See [`redrive`]. Blocking file I/O (counts what it will send).
    pub fn redrive(
        &self,
        source: &str,
        target: Option<&str>,
        filter: RedriveFilter,
    ) -> Result<RedriveStarted, DeliveryError> {
        let from = self.handle(source)?;
        let to = self.handle(target.unwrap_or(source))?;
        if to.raw_records {
            return Err(DeliveryError::RawTarget(to.name.clone()));
        }
        if from.schema != to.schema {
            return Err(DeliveryError::SchemaMismatch {
                from: from.name.clone(),
                target: to.name.clone(),
                source_schema: from.schema.name(),
                target_schema: to.schema.name(),
            });
        }
        let (dir, ledger) = (&self.shared.dead_letter_dir, &self.shared.ledger);
        let events = redrive::pending(dir, source, &filter, ledger)?;
        if events == 0 {
            return Ok(RedriveStarted { events, job: None });
        }
        let job = ledger.create_job(source, &to.name, filter)?;
        tracing::info!(source, target = %to.name, job = job.id, events, "redrive requested");
        // A closed channel means the worker stopped (shutdown): the job resumes at the next start.
        let _ = to.redrive.send(job.clone());
        Ok(RedriveStarted {
            events,
            job: Some(job),
        })
    }

    fn handle(&self, name: &str) -> Result<Arc<DestinationHandle>, DeliveryError> {
        lock(&self.shared.destinations)
            .iter()
            .find(|handle| handle.name == name)
            .cloned()
            .ok_or_else(|| DeliveryError::UnknownDestination(name.to_string()))
    }
}

/// Open (or create) the cursor a destination starts from. The one place a new destination's
/// start position is decided: `start=` matters only when the cursor is created here; an
/// existing one wins.
fn open_cursor(
    wal: &Wal,
    name: &str,
    settings: &DeliverySettings,
) -> Result<crate::wal::Cursor, DeliveryError> {
    wal.open_cursor_from(name, settings.start.resolve(wal))
        .map_err(|source| DeliveryError::Cursor {
            name: name.to_string(),
            source,
        })
}

/// The status a worker starts with, from its persisted cursor.
fn status_cell(
    settings: &DeliverySettings,
    destination: &dyn crate::dest::Destination,
    dead_file: &DeadLetterFile,
    loaded: &DeliveryCursor,
    concurrency: usize,
) -> StatusCell {
    StatusCell {
        name: settings.name.clone(),
        kind: destination.kind().to_string(),
        schema: destination.schema().name().to_string(),
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
    }
}

/// Open the redrive ledger; jobs whose source or target is no longer configured are dropped
/// (with a warning) so they do not block new redrives of their source.
fn open_redrive_ledger(dir: &Path, names: &[&str]) -> Result<Arc<RedriveLedger>, DeliveryError> {
    let dead_letters = |source| DeliveryError::DeadLetters {
        name: "*".to_string(),
        source,
    };
    let ledger = RedriveLedger::open(dir).map_err(dead_letters)?;
    let orphans: Vec<u64> = ledger
        .jobs()
        .into_iter()
        .filter(|job| !names.contains(&job.source.as_str()) || !names.contains(&job.target.as_str()))
        .inspect(|job| tracing::warn!(job = job.id, source = %job.source, target = %job.target, "dropping a redrive whose destination is no longer configured"))
        .map(|job| job.id)
        .collect();
    ledger.finish_jobs(&orphans)?;
    Ok(Arc::new(ledger))
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
    async fn destinations_are_added_replaced_and_removed_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let wal = test_wal(dir.path());
        let (sent, _received) = tokio::sync::mpsc::unbounded_channel();
        let raw = || ConfiguredDestination {
            settings: DeliverySettings::named("raw", &DeliveryDefaults::default()),
            destination: Arc::new(RawSink { sent: sent.clone() }),
        };
        let delivery = Delivery::start(&wal, vec![], &EngineOptions::new(dir.path())).unwrap();
        delivery.add(raw()).unwrap();
        assert!(matches!(
            delivery.add(raw()),
            Err(DeliveryError::DuplicateName(_))
        ));
        assert_eq!(wal.cursor_names(), vec!["raw"]);
        delivery.pause("raw").unwrap();
        delivery.replace(raw()).await.unwrap();
        assert_eq!(delivery.names(), vec!["raw"]);
        assert!(
            delivery.status("raw").unwrap().paused,
            "a restart keeps the pause"
        );
        assert_eq!(
            wal.cursor_names(),
            vec!["raw"],
            "a restart keeps the cursor"
        );
        delivery.remove("raw").await.unwrap();
        assert!(delivery.names().is_empty());
        assert!(
            wal.cursor_names().is_empty(),
            "removing releases the cursor"
        );
        delivery
            .remove("raw")
            .await
            .expect("removing is idempotent");
        assert!(matches!(
            delivery.stop("raw").await,
            Err(DeliveryError::UnknownDestination(_))
        ));
        delivery.shutdown().await;
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
