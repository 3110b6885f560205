//! The redrive source of one destination's worker: dead letters to send again, fed to the
//! worker's sender between its WAL batches.
//!
//! The worker asks this source for a batch ([`RedriveSource::next_cut`]) whenever it has a free
//! concurrency slot and either no WAL batch is ready or no redrive batch is in flight (so a
//! WAL backlog delays a redrive but never starves it, and the redrive never holds up the WAL
//! stream by more than one slot). Redrive batches carry tickets from their own range
//! ([`REDRIVE_TICKETS`]) and never enter the ack window: the cursor does not know them.
//!
//! Jobs ([`RedriveJob`]) arrive from the admin API (and from the ledger at start); one runs at a
//! time per target. Its dead-letter files are read one at a time in a blocking task, oldest
//! first, keeping the lines the job selects that are not handled yet; each event is queued once
//! per job (a crash replay may have written its dead letter twice). After the last listed file
//! the directory is listed again, so a file rotated while the job ran is read under its new
//! name. When nothing is queued, loading or in flight, the job is finished.
//!
//! Settled events become [`Handled`] marks, written by the worker's persist job after the
//! dead-letter fsync (see [`super::redrive`] for the invariants); finished job ids go with them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};

use crate::dest::{Batch, BatchItem, BatchLimits, CompactString};
use crate::event::Schema;
use crate::metrics as names;
use crate::wal::{Position, Ticket};

use super::batcher::Rejected;
use super::dead_letter::{dead_letter_files, DeadLetter, DeadLetterBuffer, DeadLetterEntry};
use super::redrive::{
    read_complete, Handled, Mark, Outcome, RedriveError, RedriveJob, RedriveLedger,
};
use super::sender::DeadItems;

/// Tickets of redrive batches start here (WAL tickets count up from 0 and never reach it).
pub(crate) const REDRIVE_TICKETS: u64 = 1 << 63;

/// Dead letters of one file that a job selected.
pub(crate) struct Loaded {
    /// `None`: every file of the source has been read.
    path: Option<PathBuf>,
    entries: Vec<DeadLetterEntry>,
}

type LoadResult = Result<Result<Loaded, RedriveError>, JoinError>;

/// What the worker's select loop got from the source.
pub(crate) enum RedriveStep {
    Job(RedriveJob),
    Loaded(LoadResult),
}

struct ActiveJob {
    job: RedriveJob,
    done_files: HashSet<PathBuf>,
    queue: VecDeque<DeadLetterEntry>,
    /// Event id → newest selected line time (the mark covers every line of the event).
    seen: HashMap<String, u64>,
    exhausted: bool,
}

struct SentBatch {
    job: u64,
    source: String,
    cutoff_ms: u64,
    /// Event id and the time its mark gets.
    events: Vec<(String, u64)>,
}

/// A redrive batch ready to send.
pub(crate) struct RedriveCut {
    pub ticket: Ticket,
    pub batch: Batch,
    pub positions: Vec<Position>,
}

/// See the module doc.
pub(crate) struct RedriveSource {
    target: String,
    dir: PathBuf,
    ledger: Arc<RedriveLedger>,
    jobs_rx: mpsc::UnboundedReceiver<RedriveJob>,
    jobs_open: bool,
    waiting: VecDeque<RedriveJob>,
    active: Option<ActiveJob>,
    loading: Option<JoinHandle<Result<Loaded, RedriveError>>>,
    sent: HashMap<u64, SentBatch>,
    next_ticket: u64,
    limits: BatchLimits,
    schema: Schema,
    marks: Vec<Handled>,
    finished: Vec<u64>,
}

impl RedriveSource {
    pub fn new(
        target: &str,
        ledger: Arc<RedriveLedger>,
        dir: &Path,
        jobs_rx: mpsc::UnboundedReceiver<RedriveJob>,
        (limits, schema): (BatchLimits, Schema),
    ) -> Self {
        let waiting = ledger
            .jobs()
            .into_iter()
            .filter(|job| job.target == target)
            .collect();
        RedriveSource {
            target: target.to_string(),
            dir: dir.to_path_buf(),
            ledger,
            jobs_rx,
            jobs_open: true,
            waiting,
            active: None,
            loading: None,
            sent: HashMap::new(),
            next_ticket: REDRIVE_TICKETS,
            limits,
            schema,
            marks: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// Wait for a new job or a finished load (cancel-safe; pending when there is neither).
    pub async fn wait(&mut self) -> RedriveStep {
        loop {
            tokio::select! {
                job = self.jobs_rx.recv(), if self.jobs_open => match job {
                    Some(job) => return RedriveStep::Job(job),
                    None => self.jobs_open = false,
                },
                loaded = wait_for(&mut self.loading), if self.loading.is_some() => {
                    self.loading = None;
                    return RedriveStep::Loaded(loaded);
                }
                else => std::future::pending::<()>().await,
            }
        }
    }

    pub fn on_job(&mut self, job: RedriveJob) {
        tracing::info!(destination = %self.target, job = job.id, source = %job.source, filter = ?job.filter, "redrive queued");
        self.waiting.push_back(job);
    }

    /// Take a loaded file's lines; an error is returned for the status (the job stays in the
    /// ledger and resumes at the next start).
    pub fn on_loaded(&mut self, loaded: LoadResult) -> Option<String> {
        let Some(active) = &mut self.active else {
            return None;
        };
        let error = match loaded {
            Ok(Ok(Loaded { path: None, .. })) => {
                active.exhausted = true;
                return None;
            }
            Ok(Ok(Loaded {
                path: Some(path),
                entries,
            })) => {
                active.done_files.insert(path);
                for entry in entries {
                    let Some(event_id) = entry.event_id.clone() else {
                        continue;
                    };
                    match active.seen.get_mut(&event_id) {
                        Some(newest) => *newest = (*newest).max(entry.time_ms),
                        None => {
                            active.seen.insert(event_id, entry.time_ms);
                            active.queue.push_back(entry);
                        }
                    }
                }
                return None;
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => format!("redrive load task failed: {err}"),
        };
        tracing::error!(destination = %self.target, job = active.job.id, %error, "redrive stopped; it resumes at the next start");
        self.active = None;
        Some(format!("redrive: {error}"))
    }

    /// Start the next job, load the next file, or finish the active job, as due.
    pub fn advance(&mut self) {
        if self.active.is_none() {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            tracing::info!(destination = %self.target, job = job.id, source = %job.source, "redrive started");
            self.active = Some(ActiveJob {
                job,
                done_files: HashSet::new(),
                queue: VecDeque::new(),
                seen: HashMap::new(),
                exhausted: false,
            });
        }
        let Some(active) = &self.active else {
            return;
        };
        if !active.queue.is_empty() || self.loading.is_some() {
            return;
        }
        if !active.exhausted {
            let (dir, ledger) = (self.dir.clone(), self.ledger.clone());
            let (job, done) = (active.job.clone(), active.done_files.clone());
            self.loading = Some(tokio::task::spawn_blocking(move || {
                load_next(&dir, &job, &done, &ledger)
            }));
            return;
        }
        let id = active.job.id;
        if self.sent.values().all(|batch| batch.job != id) {
            tracing::info!(destination = %self.target, job = id, "redrive finished");
            self.finished.push(id);
            self.active = None;
            self.advance();
        }
    }

    /// Redrive batches on the wire.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    pub fn owns(ticket: Ticket) -> bool {
        ticket.0 >= REDRIVE_TICKETS
    }

    /// Cut the next batch within the target's limits; lines too big for it are dead-lettered
    /// again at once (into `dead`, with the reason).
    pub fn next_cut(&mut self, dead: &mut DeadLetterBuffer) -> Option<RedriveCut> {
        let limits = self.limits;
        let active = self.active.as_mut()?;
        let (mut items, mut positions, mut events, mut bytes) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        while let Some(entry) = active.queue.front() {
            let size = entry.payload.get().len() + limits.per_item_overhead;
            if items.len() >= limits.max_items.max(1)
                || (!items.is_empty() && bytes + size > limits.max_bytes)
            {
                break;
            }
            let entry = active.queue.pop_front()?;
            let newest = active
                .seen
                .get(entry.event_id.as_deref().unwrap_or(""))
                .copied()
                .unwrap_or(entry.time_ms);
            let item = item_of(&entry);
            if size > limits.max_item_bytes || size > limits.max_bytes {
                let reason = Rejected::Oversized {
                    size,
                    max: limits.max_item_bytes.min(limits.max_bytes),
                }
                .to_string();
                let settled = settle_dead(
                    &active.job,
                    &self.target,
                    &entry,
                    &item,
                    &reason,
                    newest,
                    dead,
                );
                self.marks.push(settled);
                continue;
            }
            bytes += size;
            positions.push(Position {
                seq: entry.seq,
                event: entry.event,
            });
            events.push((item.event_id.to_string(), newest));
            items.push(item);
        }
        if items.is_empty() {
            return None;
        }
        let (first, last) = (positions[0], positions[positions.len() - 1]);
        let id = format!(
            "{}-redrive{}-{:020}.{}-{:020}.{}-{}",
            self.target,
            active.job.id,
            first.seq,
            first.event,
            last.seq,
            last.event,
            items.len()
        );
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.sent.insert(
            ticket.0,
            SentBatch {
                job: active.job.id,
                source: active.job.source.clone(),
                cutoff_ms: active.job.cutoff_ms,
                events,
            },
        );
        Some(RedriveCut {
            ticket,
            batch: Batch {
                id,
                schema: self.schema,
                items,
                lines: None,
            },
            positions,
        })
    }

    /// A redrive batch finished: dead items get new dead letters (into `dead`), everything is
    /// marked, and counted.
    pub fn on_finished(
        &mut self,
        ticket: Ticket,
        batch_id: &str,
        dead_items: &[DeadItems],
        dead: &mut DeadLetterBuffer,
    ) {
        let Some(sent) = self.sent.remove(&ticket.0) else {
            return;
        };
        let newest: HashMap<&str, u64> = sent
            .events
            .iter()
            .map(|(id, time)| (id.as_str(), *time))
            .collect();
        let mut failed = HashSet::new();
        for group in dead_items {
            for (item, position) in &group.items {
                let letter = DeadLetter {
                    reason: &group.reason,
                    event_id: Some(&item.event_id),
                    position: *position,
                    batch_id: Some(batch_id),
                    payload: &item.payload,
                };
                dead.push_item(letter, item, sent.cutoff_ms + 1);
                failed.insert(item.event_id.as_str());
            }
        }
        let mark = |event_id: &str, outcome| Handled {
            source: sent.source.clone(),
            event_id: event_id.to_string(),
            mark: Mark {
                time_ms: newest.get(event_id).copied().unwrap_or(0),
                outcome,
            },
        };
        for (event_id, _) in &sent.events {
            let outcome = if failed.contains(event_id.as_str()) {
                Outcome::DeadLettered
            } else {
                Outcome::Delivered
            };
            self.marks.push(mark(event_id, outcome));
        }
        let delivered = (sent.events.len() - failed.len()) as u64;
        count(&sent.source, &self.target, delivered, failed.len() as u64);
    }

    /// A redrive batch that will not finish (shutdown): its events stay unmarked and are sent
    /// again when the job resumes.
    pub fn forget(&mut self, ticket: Ticket) {
        self.sent.remove(&ticket.0);
    }

    pub fn has_unpersisted(&self) -> bool {
        !self.marks.is_empty() || !self.finished.is_empty()
    }

    /// Marks and finished job ids for the persist job.
    pub fn take_unpersisted(&mut self) -> (Vec<Handled>, Vec<u64>) {
        (
            std::mem::take(&mut self.marks),
            std::mem::take(&mut self.finished),
        )
    }

    /// Put back what the persist job could not write.
    pub fn restore(&mut self, (marks, finished): (Vec<Handled>, Vec<u64>)) {
        self.marks.splice(0..0, marks);
        self.finished.splice(0..0, finished);
    }
}

/// The batch item a dead letter was made from.
fn item_of(entry: &DeadLetterEntry) -> BatchItem {
    BatchItem {
        event_id: entry.event_id.as_deref().unwrap_or_default().into(),
        payload: Bytes::copy_from_slice(entry.payload.get().as_bytes()),
        kind: entry.kind.as_deref().unwrap_or_default().into(),
        key: entry.key.as_deref().map(CompactString::from),
        context_key: entry.context_key.as_deref().map(CompactString::from),
        environment: entry.environment.as_deref().unwrap_or_default().into(),
        received_at_ms: entry.received_at_ms.unwrap_or(entry.time_ms),
    }
}

/// Dead-letter `entry` again with `reason` and return its mark.
fn settle_dead(
    job: &RedriveJob,
    target: &str,
    entry: &DeadLetterEntry,
    item: &BatchItem,
    reason: &str,
    newest: u64,
    dead: &mut DeadLetterBuffer,
) -> Handled {
    let letter = DeadLetter {
        reason,
        event_id: Some(&item.event_id),
        position: Position {
            seq: entry.seq,
            event: entry.event,
        },
        batch_id: entry.batch_id.as_deref(),
        payload: entry.payload.get().as_bytes(),
    };
    dead.push_item(letter, item, job.cutoff_ms + 1);
    count(&job.source, target, 0, 1);
    metrics::counter!(names::DEST_DEAD_LETTERED_EVENTS_TOTAL, "destination" => target.to_string(), "reason" => "unbatchable")
        .increment(1);
    Handled {
        source: job.source.clone(),
        event_id: item.event_id.to_string(),
        mark: Mark {
            time_ms: newest,
            outcome: Outcome::DeadLettered,
        },
    }
}

fn count(source: &str, target: &str, delivered: u64, failed: u64) {
    let (source, target) = (source.to_string(), target.to_string());
    if delivered > 0 {
        metrics::counter!(names::DEAD_LETTERS_REDRIVEN_TOTAL, "destination" => source.clone(), "to" => target.clone())
            .increment(delivered);
    }
    if failed > 0 {
        metrics::counter!(names::DEAD_LETTERS_REDRIVE_FAILED_TOTAL, "destination" => source, "to" => target)
            .increment(failed);
    }
}

/// Read the next file of `job`'s source not read yet; its selected, unhandled lines.
fn load_next(
    dir: &Path,
    job: &RedriveJob,
    done: &HashSet<PathBuf>,
    ledger: &RedriveLedger,
) -> Result<Loaded, RedriveError> {
    let io_error = |source| RedriveError::Io {
        dir: dir.display().to_string(),
        source,
    };
    let files = dead_letter_files(dir, &job.source).map_err(io_error)?;
    let Some(path) = files.into_iter().find(|path| !done.contains(path)) else {
        return Ok(Loaded {
            path: None,
            entries: Vec::new(),
        });
    };
    let (entries, _) = read_complete(&path).map_err(io_error)?;
    let mut selected = Vec::new();
    for entry in entries {
        if job.selects(&entry) && ledger.handled(&job.source, &entry)?.is_none() {
            selected.push(entry);
        }
    }
    Ok(Loaded {
        path: Some(path),
        entries: selected,
    })
}

async fn wait_for<T: Send + 'static>(job: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match job {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::redrive::RedriveFilter;

    fn line(event_id: &str, time_ms: u64, payload: &str) -> String {
        format!(
            r#"{{"time_ms":{time_ms},"destination":"d","reason":"permanent failure: 404","event_id":"{event_id}","seq":{time_ms},"event":0,"batch_id":"d-1","kind":"custom","environment":"production","received_at_ms":7,"payload":{payload}}}"#
        ) + "\n"
    }

    async fn step(source: &mut RedriveSource) {
        match source.wait().await {
            RedriveStep::Job(job) => source.on_job(job),
            RedriveStep::Loaded(loaded) => assert_eq!(source.on_loaded(loaded), None),
        }
        source.advance();
    }

    #[tokio::test]
    async fn batches_within_limits_once_per_event_and_settles_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!("\"{}\"", "x".repeat(300));
        let lines = [
            line("e1", 1, "{\"n\":1}"),
            line("e2", 2, "{\"n\":2}"),
            line("e1", 3, "{\"n\":1}"), // the same event again (a crash replay)
            line("e3", 4, &big),
            line("e4", 5, "{\"n\":4}"),
        ];
        std::fs::write(dir.path().join("d.ndjson"), lines.concat()).unwrap();
        let ledger = Arc::new(RedriveLedger::open(dir.path()).unwrap());
        let job = ledger
            .create_job("d", "d", RedriveFilter::default())
            .unwrap();
        let limits = BatchLimits {
            max_items: 2,
            max_item_bytes: 100,
            ..BatchLimits::default()
        };
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let mut source = RedriveSource::new(
            "d",
            ledger,
            dir.path(),
            jobs_rx,
            (limits, Schema::default()),
        );
        source.advance(); // the job from the ledger starts and its file loads
        step(&mut source).await;
        drop(jobs);

        let mut dead = DeadLetterBuffer::new("d");
        let first = source.next_cut(&mut dead).unwrap();
        let second = source.next_cut(&mut dead).unwrap();
        assert!(source.next_cut(&mut dead).is_none());
        let ids = |cut: &RedriveCut| {
            cut.batch
                .items
                .iter()
                .map(|i| i.event_id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (ids(&first), ids(&second)),
            (vec!["e1".to_string(), "e2".into()], vec!["e4".to_string()])
        );
        assert_eq!(first.batch.items[0].environment, "production");
        assert_eq!(&first.batch.items[0].payload[..], b"{\"n\":1}");
        assert!(
            first.batch.id.starts_with("d-redrive1-"),
            "{}",
            first.batch.id
        );
        assert_eq!(
            dead.pending_count(),
            1,
            "e3 is too big: dead-lettered again at once"
        );

        let refused = DeadItems {
            reason: "permanent failure: 410".into(),
            label: "permanent",
            items: vec![(second.batch.items[0].clone(), second.positions[0])],
        };
        source.on_finished(second.ticket, &second.batch.id, &[refused], &mut dead);
        source.advance();
        step(&mut source).await; // nothing more to load: the job can finish
        source.on_finished(first.ticket, &first.batch.id, &[], &mut dead);
        source.advance();
        let (marks, finished) = source.take_unpersisted();
        assert_eq!(finished, vec![job.id]);
        let settled: Vec<(&str, u64, Outcome)> = marks
            .iter()
            .map(|h| (h.event_id.as_str(), h.mark.time_ms, h.mark.outcome))
            .collect();
        assert_eq!(
            settled,
            vec![
                ("e3", 4, Outcome::DeadLettered),
                ("e4", 5, Outcome::DeadLettered),
                ("e1", 3, Outcome::Delivered), // covers both lines of e1
                ("e2", 2, Outcome::Delivered),
            ]
        );
        let (written, count) = dead.take();
        assert_eq!(count, 2);
        let text = String::from_utf8(written).unwrap();
        assert!(text.contains("oversized") && text.contains("410"), "{text}");
        for new_line in text.lines() {
            let entry: DeadLetterEntry = serde_json::from_str(new_line).unwrap();
            assert!(
                entry.time_ms > job.cutoff_ms,
                "after the job's cutoff: {new_line}"
            );
            assert_eq!(
                entry.environment.as_deref(),
                Some("production"),
                "{new_line}"
            );
        }
    }
}
