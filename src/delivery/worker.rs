//! The task that runs one destination: read → batch → dispatch → ack → persist.
//!
//! One worker owns everything mutable about its destination — WAL reader, batcher, ack
//! window, dead-letter buffer, cursor — so there are no locks on the hot path. Sends run as
//! separate tasks ([`super::sender`]) bounded by the destination's concurrency; the worker
//! only hands batches out and takes reports back.
//!
//! ## Ordering guarantees
//!
//! * Spans are registered in the [`AckWindow`] in log order when dispatched; acks arrive in any
//!   order and the cursor advances over the contiguous prefix only.
//! * Persisting is one blocking job at a time, in this order: write + fdatasync pending dead
//!   letters → persist the cursor (pwrite + fdatasync) → `collect_garbage`. A position is
//!   persisted only after the dead letters of every event before it are durable, and segments
//!   are freed only below a persisted cursor.
//! * A batch cut by *linger* (the only non-deterministic cut) is not sent until it is the
//!   oldest in flight and its span is persisted as the cursor's plan, so after a crash it is
//!   re-cut identically and overwrites rather than duplicates (file destination). Count and
//!   byte cuts are deterministic and go out concurrently; linger cuts happen only when traffic
//!   is too light to fill batches, so waiting for the batch before costs little.
//! * After a restart the oldest batch inherits the persisted retry state and waits for its
//!   persisted next-attempt time; nothing else is sent before it ("a restart keeps backing
//!   off instead of hammering").
//! * Memory: at most `concurrency` batches in flight, the batches one part of a record
//!   produced (a huge record is decoded a part at a time, see [`super::pipeline`]) and one
//!   open, plus one part being decoded — whatever the backlog and the record size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::metrics as names;
use crate::wal::{AckWindow, Cursor, Position, Record, Ticket, Wal, WalError, WalReader};

use super::batcher::{Batcher, CutBatch, CutReason};
use super::cursor_state::{DeliveryCursor, RetryState};
use super::cut_log::CutLog;
use super::dead_letter::{AppendError, DeadLetter, DeadLetterBuffer, DeadLetterFile};
use super::dead_letter_budget::StoreFull;
use super::pipeline::{Pipeline, RecordProgress};
use super::redrive::{Handled, RedriveLedger};
use super::redrive_source::{RedriveCut, RedriveSource, RedriveStep};
use super::retry::unix_ms_now;
use super::sender::{self, Progress, SendContext, SendJob, SendReport};
use super::status::{DeliveryState, StatusCell, WorkerStatus};

mod rewind;
pub(crate) use rewind::Control;
pub use rewind::{RewindRefused, Rewound};

/// Most records decoded per wake-up before the worker looks at its other duties.
const DRAIN_BUDGET: usize = 256;
/// How long to wait before reading again after a WAL read error.
const READ_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait for the destination's startup check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often lag gauges are refreshed.
const LAG_GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a destination paused by a full dead-letter store says so again in the log.
const STORE_FULL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Everything a worker is built from (assembled by [`super::Delivery::start`]).
pub(crate) struct WorkerParts {
    pub name: String,
    pub wal: Wal,
    pub reader: WalReader,
    pub cursor: Cursor,
    pub loaded: DeliveryCursor,
    pub dead_file: DeadLetterFile,
    /// Linger cuts and start positions, for replays that cut the same batches.
    pub cut_log: Arc<CutLog>,
    pub pipeline: Pipeline,
    pub batcher: Batcher,
    pub send_ctx: Arc<SendContext>,
    pub progress_rx: mpsc::UnboundedReceiver<Progress>,
    /// Requests from the engine handle (rewinds).
    pub control_rx: mpsc::UnboundedReceiver<Control>,
    pub concurrency: usize,
    pub status: Arc<StatusCell>,
    pub paused: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    pub sync_interval: Duration,
    pub shutdown_grace: Duration,
    pub redrive: RedriveSource,
    pub ledger: Arc<RedriveLedger>,
}

struct InFlight {
    start: Position,
    retry: RetryState,
}

struct PersistOutcome {
    state: DeliveryCursor,
    error: Option<String>,
    /// Dead-letter lines that could not be written, to put back.
    unwritten: Option<(Vec<u8>, u64)>,
    /// The dead-letter store refused the lines: the destination pauses until they fit.
    full: Option<StoreFull>,
    /// Redrive marks (and finished jobs) that could not be written, to put back.
    unwritten_marks: Option<(Vec<Handled>, Vec<u64>)>,
}

struct WorkerMetrics {
    filtered: Counter,
    invalid: Counter,
    lag_records: Gauge,
    lag_bytes: Gauge,
    lag_seconds: Gauge,
    paused: Gauge,
    dead_letters_full: Gauge,
    dead_letters_waiting: Gauge,
}

impl WorkerMetrics {
    fn new(destination: &str) -> Self {
        let d = destination.to_string();
        WorkerMetrics {
            filtered: metrics::counter!(names::DEST_FILTERED_EVENTS_TOTAL, "destination" => d.clone()),
            invalid: metrics::counter!(names::DEST_INVALID_EVENTS_TOTAL, "destination" => d.clone()),
            lag_records: metrics::gauge!(names::DEST_LAG_RECORDS, "destination" => d.clone()),
            lag_bytes: metrics::gauge!(names::DEST_LAG_BYTES, "destination" => d.clone()),
            lag_seconds: metrics::gauge!(names::DEST_LAG_SECONDS, "destination" => d.clone()),
            paused: metrics::gauge!(names::DEST_PAUSED, "destination" => d.clone()),
            dead_letters_full: metrics::gauge!(names::DEST_DEAD_LETTERS_FULL, "destination" => d.clone()),
            dead_letters_waiting: metrics::gauge!(names::DEST_DEAD_LETTERS_WAITING, "destination" => d),
        }
    }

    fn dead_lettered(destination: &str, reason: &'static str, count: u64) {
        if count > 0 {
            metrics::counter!(
                names::DEST_DEAD_LETTERED_EVENTS_TOTAL,
                "destination" => destination.to_string(),
                "reason" => reason
            )
            .increment(count);
        }
    }
}

enum Step {
    Shutdown,
    Joined(Result<(tokio::task::Id, SendReport), JoinError>),
    Progress(Progress),
    Persisted(Result<PersistOutcome, JoinError>),
    Tick,
    PauseChanged(bool),
    Linger,
    GateOpen,
    ReadRetry,
    Record(Result<Record, WalError>),
    /// Another destination finished decoding the record this one waits for (or took too long).
    SharedDecoded,
    Redrive(RedriveStep),
    Control(Control),
}

pub(crate) struct Worker {
    name: String,
    wal: Wal,
    reader: WalReader,
    cursor: Arc<Mutex<Cursor>>,
    loaded: DeliveryCursor,
    dead_file: Arc<DeadLetterFile>,
    dead: DeadLetterBuffer,
    cut_log: Arc<CutLog>,
    /// Cut-log entries to write with the next persist (before the batches they cut are sent).
    pending_cuts: Vec<Position>,
    /// After a rewind: batches ending at or before this were delivered and are acked without
    /// sending (the replay restarted at an earlier batch boundary, `cut_log.rs`).
    skip_until: Option<Position>,
    pipeline: Pipeline,
    batcher: Batcher,
    window: AckWindow,
    in_flight: HashMap<u64, InFlight>,
    tasks: JoinSet<SendReport>,
    task_tickets: HashMap<tokio::task::Id, Ticket>,
    send_ctx: Arc<SendContext>,
    progress_rx: mpsc::UnboundedReceiver<Progress>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    /// Configured most batches in flight.
    concurrency_limit: usize,
    /// Current most batches in flight: halved when the target throttles, +1 per clean
    /// delivery back up to the limit (AIMD, as TCP and Vector's adaptive concurrency).
    concurrency: usize,
    /// Retry state inherited from the persisted cursor, for the first batch sent.
    restart_retry: Option<RetryState>,
    /// No batch is dispatched before this (restart backoff).
    gate: Option<Instant>,
    /// A linger-cut oldest batch waiting for its plan to be persisted.
    deferred: Option<(Ticket, CutBatch)>,
    persisted: DeliveryCursor,
    persist_job: Option<JoinHandle<PersistOutcome>>,
    persist_again: bool,
    delivered_total: u64,
    last_error: Option<(String, u64)>,
    failed: bool,
    shutting_down: bool,
    read_backoff: Option<Instant>,
    /// Set while the dead-letter store refuses this destination's lines (with when that was
    /// last logged): nothing is read or sent until they are written.
    store_full: Option<(StoreFull, Instant)>,
    /// A huge record whose remaining parts wait until the batches of the last part are sent,
    /// or a record another destination is decoding for this one (`Pipeline::is_waiting`).
    unfinished: Option<Record>,
    status: Arc<StatusCell>,
    paused: watch::Receiver<bool>,
    shutdown: CancellationToken,
    tick: tokio::time::Interval,
    last_lag_update: Instant,
    shutdown_grace: Duration,
    metrics: WorkerMetrics,
    /// Dead letters being redriven through this destination.
    redrive: RedriveSource,
    ledger: Arc<RedriveLedger>,
}

impl Worker {
    pub fn new(parts: WorkerParts) -> Self {
        let mut tick = tokio::time::interval(parts.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let loaded = parts.loaded;
        let restart_retry = (loaded.retry.attempts > 0).then_some(loaded.retry);
        Worker {
            metrics: WorkerMetrics::new(&parts.name),
            dead: DeadLetterBuffer::with_total(&parts.name, loaded.dead_lettered),
            name: parts.name,
            wal: parts.wal,
            reader: parts.reader,
            cursor: Arc::new(Mutex::new(parts.cursor)),
            loaded,
            dead_file: Arc::new(parts.dead_file),
            cut_log: parts.cut_log,
            pending_cuts: Vec::new(),
            skip_until: None,
            pipeline: parts.pipeline,
            batcher: parts.batcher,
            window: AckWindow::new(loaded.acked),
            in_flight: HashMap::new(),
            tasks: JoinSet::new(),
            task_tickets: HashMap::new(),
            send_ctx: parts.send_ctx,
            progress_rx: parts.progress_rx,
            control_rx: parts.control_rx,
            concurrency_limit: parts.concurrency.max(1),
            concurrency: parts.concurrency.max(1),
            restart_retry,
            gate: None,
            deferred: None,
            persisted: loaded,
            persist_job: None,
            persist_again: false,
            delivered_total: 0,
            last_error: None,
            failed: false,
            shutting_down: false,
            read_backoff: None,
            store_full: None,
            unfinished: None,
            status: parts.status,
            paused: parts.paused,
            shutdown: parts.shutdown,
            tick,
            last_lag_update: Instant::now() - LAG_GAUGE_INTERVAL,
            shutdown_grace: parts.shutdown_grace,
            redrive: parts.redrive,
            ledger: parts.ledger,
        }
    }

    pub async fn run(mut self) {
        if let Some(retry) = &self.restart_retry {
            tracing::info!(
                destination = %self.name,
                attempts = retry.attempts,
                next_attempt_unix_ms = retry.next_attempt_unix_ms,
                "resuming the retry schedule persisted before the restart"
            );
        }
        self.publish_status();
        self.probe_destination().await;
        loop {
            self.dispatch_ready();
            self.redrive.advance();
            self.dispatch_redrive();
            let paused = *self.paused.borrow();
            let may_decode = !paused
                && !self.failed
                && !self.batcher.has_ready()
                && self.deferred.is_none()
                && self.store_full.is_none();
            let waiting = self.pipeline.is_waiting();
            if may_decode && self.unfinished.is_some() && !waiting {
                self.drain_committed();
                continue;
            }
            // A record waiting for another destination's decoding comes before any next one.
            let want_records =
                may_decode && self.read_backoff.is_none() && self.unfinished.is_none();
            // No linger while a cut batch waits for a free slot: the next cut is by size. Nor
            // while a record waits for another destination's decoding: a linger cut cannot
            // happen before that record is in (`on_linger`), and a linger deadline already past
            // would fire again and again, never letting the wait below be polled.
            let linger = if paused || self.batcher.has_ready() || waiting {
                None
            } else {
                self.batcher.linger_deadline()
            };
            let step = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => Step::Shutdown,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Step::Joined(joined),
                Some(progress) = self.progress_rx.recv() => Step::Progress(progress),
                done = wait_for(&mut self.persist_job), if self.persist_job.is_some() => Step::Persisted(done),
                _ = self.tick.tick() => Step::Tick,
                Some(control) = self.control_rx.recv() => Step::Control(control),
                changed = self.paused.changed() => match changed {
                    Ok(()) => Step::PauseChanged(*self.paused.borrow_and_update()),
                    // The engine handle is gone: nobody can stop us any more but a shutdown.
                    Err(_) => Step::Shutdown,
                },
                _ = sleep_until(linger), if linger.is_some() => Step::Linger,
                _ = sleep_until(self.gate), if self.gate.is_some() => Step::GateOpen,
                _ = sleep_until(self.read_backoff), if self.read_backoff.is_some() => Step::ReadRetry,
                record = self.reader.next(), if want_records => Step::Record(record),
                () = self.pipeline.wait_for_shared(), if may_decode && waiting => Step::SharedDecoded,
                step = self.redrive.wait() => Step::Redrive(step),
            };
            match step {
                Step::Shutdown => break,
                Step::Joined(joined) => self.on_joined(joined),
                Step::Progress(progress) => self.on_progress(progress),
                Step::Persisted(done) => {
                    self.persist_job = None;
                    self.on_persisted(done);
                }
                Step::Tick => self.on_tick(),
                Step::PauseChanged(paused) => {
                    self.metrics.paused.set(if paused { 1.0 } else { 0.0 });
                    tracing::info!(destination = %self.name, paused, "pause state changed");
                    self.publish_status();
                }
                Step::Linger => self.on_linger(),
                Step::GateOpen => {
                    self.gate = None;
                    self.publish_status();
                }
                Step::ReadRetry => self.read_backoff = None,
                Step::Record(Ok(record)) => {
                    self.consume(&record);
                    self.drain_committed();
                }
                Step::SharedDecoded => {
                    self.drain_committed();
                }
                Step::Record(Err(WalError::Closed)) => break,
                Step::Record(Err(err)) => self.on_read_error(err),
                Step::Redrive(RedriveStep::Job(job)) => self.redrive.on_job(job),
                Step::Redrive(RedriveStep::Loaded(loaded)) => {
                    if let Some(error) = self.redrive.on_loaded(loaded) {
                        self.set_error(error);
                    }
                }
                Step::Control(control) => self.on_control(control).await,
            }
        }
        self.finish().await;
    }

    /// Run the destination's own check once at start (creates the export directory and
    /// removes temp files a crash left, verifies a stream exists, …). A failure is logged and
    /// shown in the status but does not stop delivery: sends retry on their own schedule.
    async fn probe_destination(&mut self) {
        let destination = self.send_ctx.destination.clone();
        let checked = tokio::select! {
            checked = tokio::time::timeout(CHECK_TIMEOUT, destination.check()) => checked,
            _ = self.shutdown.cancelled() => return,
        };
        let error = match checked {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {CHECK_TIMEOUT:?}"),
        };
        tracing::warn!(destination = %self.name, %error, "destination check failed at start; delivery will retry");
        self.set_error(format!("startup check: {error}"));
        self.publish_status();
    }

    /// The open batch's linger time passed: cut it, unless committed records are still unread.
    ///
    /// A linger cut is for light traffic. With a backlog (after a restart, or a reader that
    /// fell behind) the open batch must fill by count or bytes exactly as it did in the run
    /// before: those cuts go out without a persisted plan because they are a pure function of
    /// the start and the log, so a linger cut of the same stretch would put its events under a
    /// second batch id (and, in an object store, a second object).
    fn on_linger(&mut self) {
        let caught_up = self.drain_committed();
        if caught_up && self.unfinished.is_none() && !self.batcher.has_ready() {
            self.batcher.cut_lingering();
        }
    }

    /// Decode records that are already committed, until a batch is ready; true when nothing
    /// more is there to read now (or reading failed and is backing off).
    fn drain_committed(&mut self) -> bool {
        for _ in 0..DRAIN_BUDGET {
            if self.batcher.has_ready() || self.pipeline.is_waiting() {
                return false;
            }
            if let Some(record) = self.unfinished.take() {
                self.consume(&record);
                continue;
            }
            match self.reader.try_next() {
                Ok(Some(record)) => self.consume(&record),
                Ok(None) | Err(WalError::Closed) => return true,
                Err(err) => {
                    self.on_read_error(err);
                    return true;
                }
            }
        }
        false
    }

    /// Decode `record` (or its next part) into the batcher; a huge record whose batches must
    /// be sent first, or one another destination is decoding for this one, is kept in
    /// `unfinished`.
    fn consume(&mut self, record: &Record) {
        let (counts, progress) =
            self.pipeline
                .process_part(record, &mut self.batcher, &mut self.dead);
        if progress != RecordProgress::Done {
            self.unfinished = Some(record.clone());
        }
        if counts.filtered > 0 {
            self.metrics.filtered.increment(counts.filtered);
        }
        if counts.invalid > 0 {
            self.metrics.invalid.increment(counts.invalid);
            WorkerMetrics::dead_lettered(&self.name, "invalid", counts.invalid);
        }
        WorkerMetrics::dead_lettered(
            &self.name,
            "unbatchable",
            counts.dead_lettered - counts.invalid,
        );
    }

    fn on_read_error(&mut self, err: WalError) {
        tracing::error!(destination = %self.name, error = %err, "reading the write-ahead log failed");
        self.set_error(format!("reading the write-ahead log: {err}"));
        self.read_backoff = Some(Instant::now() + READ_ERROR_BACKOFF);
    }

    /// Hand ready batches to send tasks while slots are free; ack empty spans at once.
    fn dispatch_ready(&mut self) {
        if self.shutting_down || self.failed {
            return;
        }
        if let Some((ticket, cut)) = self.deferred.take() {
            let span = (cut.start, cut.end);
            if self.persisted.plan == Some(span) {
                self.spawn_send(ticket, cut);
            } else {
                // Became the oldest since it was deferred: persist its plan now.
                if self.window.oldest_in_flight() == Some(span) {
                    self.start_persist();
                }
                self.deferred = Some((ticket, cut));
                return;
            }
        }
        let paused = *self.paused.borrow() || self.store_full.is_some();
        while let Some(front) = self.batcher.peek_ready() {
            let skipped = self.skip_until.is_some_and(|until| front.end <= until);
            let empty = front.batch.items.is_empty() || skipped;
            let blocked = paused || self.gate.is_some() || self.tasks.len() >= self.concurrency;
            if !empty && blocked {
                return;
            }
            let Some(cut) = self.batcher.pop_ready() else {
                return;
            };
            if cut.start >= cut.end {
                continue;
            }
            let ticket = self.window.push(cut.start, cut.end);
            if empty {
                self.window.ack(ticket);
                continue;
            }
            let span = (cut.start, cut.end);
            if cut.reason == CutReason::Linger {
                self.pending_cuts.push(cut.end);
            }
            if cut.reason == CutReason::Linger && self.persisted.plan != Some(span) {
                // Only the oldest batch's plan fits in the cursor, so a linger cut waits until
                // it is the oldest and its plan is durable: a crash then re-cuts it
                // identically instead of re-sending its events under another batch id.
                self.deferred = Some((ticket, cut));
                if self.window.oldest_in_flight() == Some(span) {
                    self.start_persist();
                }
                return;
            }
            self.spawn_send(ticket, cut);
        }
    }

    /// Hand redrive batches to send tasks: only into free slots, and one at a time while WAL
    /// batches wait (see [`super::redrive_source`]).
    fn dispatch_redrive(&mut self) {
        let paused = *self.paused.borrow() || self.store_full.is_some();
        if self.shutting_down || self.failed || paused || self.gate.is_some() {
            return;
        }
        while self.tasks.len() < self.concurrency {
            let wal_waiting = self.batcher.has_ready() || self.deferred.is_some();
            if wal_waiting && self.redrive.in_flight() > 0 {
                return;
            }
            let Some(RedriveCut {
                ticket,
                batch,
                positions,
            }) = self.redrive.next_cut(&mut self.dead)
            else {
                return;
            };
            let job = SendJob {
                ticket,
                batch,
                positions,
                retry: RetryState::default(),
                not_before: None,
                arena: None,
            };
            let handle = self.tasks.spawn(sender::run(self.send_ctx.clone(), job));
            self.task_tickets.insert(handle.id(), ticket);
        }
    }

    fn spawn_send(&mut self, ticket: Ticket, cut: CutBatch) {
        let (retry, not_before) = match self.restart_retry.take() {
            Some(retry) => {
                let wait = self.send_ctx.policy.remaining_wait(&retry, unix_ms_now());
                let at = Instant::now() + wait;
                if !wait.is_zero() {
                    self.gate = Some(at);
                }
                (retry, Some(at))
            }
            None => (RetryState::default(), None),
        };
        self.in_flight.insert(
            ticket.0,
            InFlight {
                start: cut.start,
                retry,
            },
        );
        let job = SendJob {
            ticket,
            batch: cut.batch,
            positions: cut.positions,
            retry,
            not_before,
            arena: Some(cut.arena),
        };
        let handle = self.tasks.spawn(sender::run(self.send_ctx.clone(), job));
        self.task_tickets.insert(handle.id(), ticket);
    }

    fn on_joined(&mut self, joined: Result<(tokio::task::Id, SendReport), JoinError>) {
        match joined {
            Ok((id, report)) => {
                self.task_tickets.remove(&id);
                self.on_report(report);
            }
            Err(err) => {
                let ticket = self.task_tickets.remove(&err.id());
                if let Some(ticket) = ticket.filter(|t| RedriveSource::owns(*t)) {
                    self.redrive.forget(ticket);
                }
                if err.is_cancelled() {
                    // Aborted at the end of the shutdown grace period: not acked, replayed
                    // after the restart.
                    return;
                }
                // A destination panicked. Its batch was never acked, so the cursor cannot move
                // past it; stop here rather than lose it (restart to retry).
                tracing::error!(
                    destination = %self.name,
                    ticket = ?ticket,
                    "send task panicked; delivery for this destination is stopped until restart"
                );
                self.failed = true;
                self.set_error(
                    "the destination panicked while sending a batch; restart to retry".into(),
                );
            }
        }
    }

    fn on_report(&mut self, report: SendReport) {
        match report {
            SendReport::Finished {
                ticket,
                batch_id,
                delivered,
                dead,
                spare: _,
            } if RedriveSource::owns(ticket) => {
                self.redrive
                    .on_finished(ticket, &batch_id, &dead, &mut self.dead);
                for group in &dead {
                    WorkerMetrics::dead_lettered(&self.name, group.label, group.items.len() as u64);
                    self.set_error(format!("redrive batch {batch_id}: {}", group.reason));
                }
                self.delivered_total += delivered as u64;
                self.publish_status();
            }
            SendReport::Interrupted { ticket, .. } if RedriveSource::owns(ticket) => {
                self.redrive.forget(ticket);
            }
            SendReport::Finished {
                ticket,
                batch_id,
                delivered,
                dead,
                spare,
            } => {
                if let Some(spare) = spare {
                    self.batcher.recycle(spare);
                }
                for group in &dead {
                    for (item, position) in &group.items {
                        self.dead.push(DeadLetter {
                            reason: &group.reason,
                            event_id: Some(&item.event_id),
                            position: *position,
                            batch_id: Some(&batch_id),
                            payload: &item.payload,
                        });
                    }
                    WorkerMetrics::dead_lettered(&self.name, group.label, group.items.len() as u64);
                    self.set_error(format!("batch {batch_id}: {}", group.reason));
                }
                self.delivered_total += delivered as u64;
                let clean = self
                    .in_flight
                    .remove(&ticket.0)
                    .is_some_and(|flight| flight.retry.attempts == 0);
                if clean && self.concurrency < self.concurrency_limit {
                    self.concurrency += 1;
                }
                self.window.ack(ticket);
                self.publish_status();
            }
            SendReport::Interrupted { ticket, retry } => {
                if let Some(flight) = self.in_flight.get_mut(&ticket.0) {
                    flight.retry = retry;
                }
            }
        }
    }

    fn on_progress(&mut self, progress: Progress) {
        if let Some(flight) = self.in_flight.get_mut(&progress.ticket.0) {
            flight.retry = progress.retry;
        }
        if progress.throttled && self.concurrency > 1 {
            self.concurrency = (self.concurrency / 2).max(1);
            tracing::info!(destination = %self.name, concurrency = self.concurrency, "target throttles; lowering concurrency");
        }
        self.set_error(progress.error);
        self.publish_status();
    }

    fn on_tick(&mut self) {
        self.start_persist();
        self.batcher.trim_spares(Instant::now());
        if self.last_lag_update.elapsed() >= LAG_GAUGE_INTERVAL {
            self.last_lag_update = Instant::now();
            let lag = self.wal.lag(self.window.acked().seq);
            self.metrics.lag_records.set(lag.records as f64);
            self.metrics.lag_bytes.set(lag.bytes as f64);
            let seconds = lag
                .oldest_received_at_ms
                .map(|oldest| unix_ms_now().saturating_sub(oldest) as f64 / 1000.0)
                .unwrap_or(0.0);
            self.metrics.lag_seconds.set(seconds);
        }
        self.publish_status();
    }

    /// What the cursor should say now.
    fn cursor_state(&self) -> DeliveryCursor {
        let acked = self.window.acked();
        let oldest = self.window.oldest_in_flight();
        let (plan, retry) = match oldest {
            Some((start, end)) => {
                let retry = self
                    .in_flight
                    .values()
                    .find(|flight| flight.start == start)
                    .map(|flight| flight.retry)
                    // Not sent yet: the state it will inherit (if any).
                    .unwrap_or_else(|| self.restart_retry.unwrap_or_default());
                (Some((start, end)), retry)
            }
            // Nothing re-cut yet since the restart: keep what was persisted.
            None if acked == self.loaded.acked => (self.loaded.plan, self.loaded.retry),
            None => (None, RetryState::default()),
        };
        DeliveryCursor {
            acked,
            plan,
            retry,
            dead_lettered: self.dead.total(),
        }
    }

    /// Start a persist job unless one is running (then run another right after it).
    fn start_persist(&mut self) {
        if self.persist_job.is_some() {
            self.persist_again = true;
            return;
        }
        self.persist_again = false;
        let state = self.cursor_state();
        if state == self.persisted
            && self.dead.is_empty()
            && !self.redrive.has_unpersisted()
            && self.pending_cuts.is_empty()
        {
            return;
        }
        let job = PersistJob {
            name: self.name.clone(),
            state,
            dead: self.dead.take(),
            marks: self.redrive.take_unpersisted(),
            collect: state.acked.seq > self.persisted.acked.seq,
        };
        let cuts = std::mem::take(&mut self.pending_cuts);
        let cut_log = self.cut_log.clone();
        let cursor = self.cursor.clone();
        let dead_file = self.dead_file.clone();
        let wal = self.wal.clone();
        let ledger = self.ledger.clone();
        self.persist_job = Some(tokio::task::spawn_blocking(move || {
            let first_seq = wal.first_seq();
            let written = cut_log
                .append_durably(&cuts)
                .and_then(|()| cut_log.maybe_compact(first_seq));
            if let Err(err) = written {
                // Only later replays depend on it (their batch ids may then differ).
                tracing::warn!(destination = %job.name, error = %err, "writing the cut log failed");
            }
            persist_blocking(job, &dead_file, &cursor, &wal, &ledger)
        }));
    }

    fn on_persisted(&mut self, done: Result<PersistOutcome, JoinError>) {
        match done {
            Ok(outcome) => {
                if let Some((lines, count)) = outcome.unwritten {
                    self.dead.restore(lines, count);
                }
                if let Some(marks) = outcome.unwritten_marks {
                    self.redrive.restore(marks);
                }
                self.on_store_state(outcome.full);
                match outcome.error {
                    None => self.persisted = outcome.state,
                    Some(error) => self.set_error(error),
                }
            }
            Err(err) => self.set_error(format!("cursor persist task failed: {err}")),
        }
        if self.persist_again {
            self.start_persist();
        }
    }

    /// Pause while the dead-letter store refuses our lines (log loudly, count, show it);
    /// resume once a write went through.
    fn on_store_state(&mut self, full: Option<StoreFull>) {
        let waiting = self.dead.pending_count();
        self.metrics.dead_letters_waiting.set(waiting as f64);
        match full {
            Some(full) => {
                metrics::counter!(
                    names::DEAD_LETTER_REFUSED_WRITES_TOTAL,
                    "destination" => self.name.clone(),
                    "reason" => full.label()
                )
                .increment(1);
                let due = self
                    .store_full
                    .as_ref()
                    .is_none_or(|(_, logged)| logged.elapsed() >= STORE_FULL_LOG_INTERVAL);
                if due {
                    tracing::error!(destination = %self.name, waiting, "{full}; delivery to this destination is paused (its events wait in the WAL) until the dead letters fit");
                    self.store_full = Some((full, Instant::now()));
                }
                self.metrics.dead_letters_full.set(1.0);
            }
            None => {
                if self.store_full.take().is_some() {
                    tracing::info!(destination = %self.name, "the dead-letter store has room again; delivery resumes");
                    self.metrics.dead_letters_full.set(0.0);
                }
            }
        }
        self.publish_status();
    }

    fn set_error(&mut self, error: String) {
        self.last_error = Some((error, unix_ms_now()));
    }

    fn publish_status(&self) {
        let paused = *self.paused.borrow();
        let oldest_retry = self.cursor_state().retry;
        let backing_off = self.gate.is_some()
            || self
                .in_flight
                .values()
                .any(|flight| flight.retry.attempts > 0);
        let state = if self.failed {
            DeliveryState::Failed
        } else if self.shutting_down {
            DeliveryState::Stopped
        } else if self.store_full.is_some() {
            DeliveryState::DeadLettersFull
        } else if paused {
            DeliveryState::Paused
        } else if backing_off {
            DeliveryState::BackingOff
        } else {
            DeliveryState::Running
        };
        self.status.publish(WorkerStatus {
            state,
            paused,
            acked: self.window.acked(),
            in_flight_batches: self.in_flight.len(),
            concurrency: self.concurrency,
            retry: oldest_retry,
            delivered_events: self.delivered_total,
            dead_lettered_events: self.dead.total(),
            last_error: self.last_error.clone(),
        });
    }

    /// At an orderly stop, export what was accepted before it instead of leaving it for the
    /// next start: read the records already committed, cut the open batch now instead of at
    /// its linger deadline, and hand every ready batch to a send task (`finish` then waits
    /// for them within the same grace period). A linger cut is non-deterministic, so its plan
    /// is persisted before it is sent, exactly as in the main loop. Stops early (the rest
    /// waits in the WAL for the next start) when the destination is paused, failed or backing
    /// off, or at `deadline`.
    async fn flush_lingering(&mut self, deadline: Instant) {
        if *self.paused.borrow() || self.failed || self.store_full.is_some() {
            return;
        }
        while Instant::now() < deadline {
            let read_everything = self.drain_committed();
            if read_everything && !self.batcher.has_ready() {
                self.batcher.cut_lingering();
            }
            self.dispatch_ready();
            let blocked = self.batcher.has_ready() || self.deferred.is_some();
            if !blocked {
                if read_everything && self.batcher.open_items() == 0 {
                    return;
                }
                continue;
            }
            if self.gate.is_some() {
                return;
            }
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.on_joined(joined),
                Some(progress) = self.progress_rx.recv() => self.on_progress(progress),
                done = wait_for(&mut self.persist_job), if self.persist_job.is_some() => {
                    self.persist_job = None;
                    self.on_persisted(done);
                }
                _ = tokio::time::sleep_until(deadline.into()) => return,
            }
        }
    }

    /// Send the batch that only waits for its linger time, let sends on the wire finish (up to
    /// the grace period), then persist the cursor.
    async fn finish(&mut self) {
        let deadline = Instant::now() + self.shutdown_grace;
        self.flush_lingering(deadline).await;
        self.shutting_down = true;
        let mut aborted = false;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id() => self.on_joined(joined),
                _ = tokio::time::sleep_until(deadline.into()), if !aborted => {
                    tracing::warn!(destination = %self.name, "shutdown grace period over; aborting sends in flight (they are replayed after restart)");
                    self.tasks.abort_all();
                    aborted = true;
                }
            }
        }
        while let Ok(progress) = self.progress_rx.try_recv() {
            self.on_progress(progress);
        }
        if let Some(job) = self.persist_job.take() {
            let done = job.await;
            self.persist_again = false;
            self.on_persisted(done);
        }
        self.start_persist();
        if let Some(job) = self.persist_job.take() {
            let done = job.await;
            self.persist_again = false;
            self.on_persisted(done);
        }
        if let Some((error, _)) = &self.last_error {
            tracing::debug!(destination = %self.name, last_error = %error, "destination stopped");
        }
        self.publish_status();
    }
}

/// What one persist job writes, in order: dead letters, redrive marks, the cursor.
struct PersistJob {
    name: String,
    state: DeliveryCursor,
    dead: (Vec<u8>, u64),
    marks: (Vec<Handled>, Vec<u64>),
    collect: bool,
}

impl PersistJob {
    /// Nothing of this job's dead letters or marks was written: hand them back.
    fn failed(self, error: String, full: Option<StoreFull>) -> PersistOutcome {
        PersistOutcome {
            state: self.state,
            error: Some(error),
            unwritten: Some(self.dead),
            full,
            unwritten_marks: Some(self.marks),
        }
    }
}

fn persist_blocking(
    job: PersistJob,
    dead_file: &DeadLetterFile,
    cursor: &Mutex<Cursor>,
    wal: &Wal,
    ledger: &RedriveLedger,
) -> PersistOutcome {
    let name = job.name.as_str();
    match dead_file.append_durably(&job.dead.0) {
        Ok(()) => {}
        Err(AppendError::Full(full)) => return job.failed(full.to_string(), Some(full)),
        Err(AppendError::Io(err)) => {
            tracing::error!(destination = name, error = %err, path = %dead_file.path().display(), "writing dead letters failed; the cursor waits");
            let error = format!(
                "writing dead letters to {}: {err}",
                dead_file.path().display()
            );
            return job.failed(error, None);
        }
    }
    // After the dead-letter fsync: a redriven event that failed again is durable in its new
    // line before its old line is marked handled.
    let (marks, finished) = &job.marks;
    let recorded = ledger
        .record(marks)
        .and_then(|()| ledger.finish_jobs(finished));
    let unwritten_marks = match recorded {
        Ok(()) => None,
        Err(err) => {
            tracing::error!(destination = name, error = %err, "recording redriven dead letters failed; retrying");
            Some(job.marks.clone())
        }
    };
    let state = job.state;
    let persisted = match cursor.lock() {
        Ok(mut cursor) => cursor.persist(state.encode()),
        Err(poisoned) => poisoned.into_inner().persist(state.encode()),
    };
    if let Err(err) = persisted {
        tracing::error!(destination = name, error = %err, "persisting the cursor failed");
        return PersistOutcome {
            state,
            error: Some(format!("persisting the cursor: {err}")),
            unwritten: None,
            full: None,
            unwritten_marks,
        };
    }
    if job.collect {
        if let Err(err) = wal.collect_garbage() {
            tracing::warn!(destination = name, error = %err, "WAL garbage collection failed");
        }
    }
    PersistOutcome {
        state,
        error: None,
        unwritten: None,
        full: None,
        unwritten_marks,
    }
}

async fn wait_for<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match job {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
