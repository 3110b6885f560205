//! Redriving dead letters: which lines a redrive selects, and which were already handled.
//!
//! A redrive sends dead letters of a *source* destination again, through a *target*
//! destination (the source itself, or another one with the same schema: `--to OTHER`). The
//! target's worker drains them between its WAL batches ([`super::redrive_source`]): they are
//! cut into batches within the target's limits and go through its sender — the same request
//! building, retries, backoff, pause and concurrency as every other batch. The WAL and the
//! cursors are not involved at all: dead letters are events the cursor has already passed.
//!
//! ## What can be redriven
//!
//! Lines of events that were in a batch (`batch_id` set) and whose payload is JSON: the
//! payload is then the mapped row the destination refused, with the item's metadata beside it
//! ([`super::dead_letter`]). Events dead-lettered before batching (invalid, unmappable,
//! oversized, undecodable records) would only fail the same way; they are shown, never sent.
//!
//! ## State on disk (`<dead-letter-dir>/redrive/`, outside the store's byte budget)
//!
//! * `jobs.json`: the redrives not finished yet (`id`, `source`, `target`, `filter`,
//!   `cutoff_ms`). A job selects the redrivable lines of its source with `time_ms <= cutoff_ms`
//!   (the moment it was asked for) matching its filter (`reason` substring) and not yet
//!   handled. A restart resumes every job found here.
//! * `<source>.marks.ndjson`: an append-only log, one line per settled event
//!   (`{"event_id", "time_ms", "outcome"}`): the `time_ms` of the newest line of that event that
//!   was handled and how (`delivered`, or `dead_lettered` again); the newest mark of an event
//!   wins. A line is handled when its event has a mark at or after its time: a crash replay
//!   that wrote the same dead letter twice is sent once, and a line written after the redrive
//!   (the event failed again) is not covered by the old mark.
//!
//! `jobs.json` is replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory), so a crash leaves the old or the new version. Marks are appended and
//! fdatasynced, so a persist costs the new marks only, not the whole history; a torn last
//! line (a crash mid-append) is cut when the log is first read, and the events it would have
//! marked are sent again (at least once).
//!
//! ## Invariants and failure cases
//!
//! * **Marked only when settled.** An event is marked after the target delivered it, or after
//!   its new dead letter (with the new reason, in the *target's* store) is fsynced: marks are
//!   written by the worker's persist job right after the dead-letter fsync. So a second
//!   redrive never resends a delivered event, and nothing is lost in between.
//! * **At least once across a crash.** A crash after a delivery but before its mark is
//!   persisted sends that event again when the job resumes (batch ids repeat per job, so
//!   destinations that overwrite by batch id still hold it once).
//! * **No loop.** An event that fails again gets a new line stamped after the job's cutoff,
//!   so the running job does not pick it up again; another redrive may, once asked.
//! * **One job per source at a time**: a second request while one runs is refused (409), so
//!   two jobs never send the same unmarked line.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::dead_letter::{dead_letter_files, DeadLetterEntry};
use super::retry::unix_ms_now;

/// Which dead letters a redrive (or `show`) selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveFilter {
    /// Lines whose reason contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RedriveFilter {
    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        self.reason
            .as_deref()
            .is_none_or(|reason| entry.reason.contains(reason))
    }
}

/// One redrive: dead letters of `source` up to `cutoff_ms`, matching `filter`, via `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveJob {
    pub id: u64,
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub filter: RedriveFilter,
    pub cutoff_ms: u64,
}

impl RedriveJob {
    /// Whether the job covers `entry` (marks aside).
    pub fn selects(&self, entry: &DeadLetterEntry) -> bool {
        entry.time_ms <= self.cutoff_ms && redrivable(entry) && self.filter.matches(entry)
    }
}

/// A line a redrive can send: a batched event with a JSON payload (see the module doc).
pub fn redrivable(entry: &DeadLetterEntry) -> bool {
    entry.batch_id.is_some() && entry.event_id.is_some() && entry.payload_encoding.is_none()
}

/// How a redriven dead letter was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    /// Failed again: a new dead letter with the new reason was written.
    DeadLettered,
}

/// The newest handled line of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub time_ms: u64,
    pub outcome: Outcome,
}

/// A settled dead letter, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub source: String,
    pub event_id: String,
    pub mark: Mark,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("a redrive of `{destination}` is already running (job {job}); wait until it finishes")]
    Busy { destination: String, job: u64 },
    #[error("redrive state under {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Jobs {
    next_id: u64,
    jobs: Vec<RedriveJob>,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Marks per source, loaded on first use.
    marks: HashMap<String, HashMap<String, Mark>>,
    jobs: Jobs,
}

/// The redrive state of the whole dead-letter store (see the module doc). Shared by the
/// engine's workers and the admin API; every method does small blocking file I/O.
#[derive(Debug)]
pub struct RedriveLedger {
    dir: PathBuf,
    state: Mutex<LedgerState>,
}

impl RedriveLedger {
    /// Open `<dead_letter_dir>/redrive`, created if missing.
    pub fn open(dead_letter_dir: &Path) -> io::Result<Self> {
        let dir = dead_letter_dir.join("redrive");
        std::fs::create_dir_all(&dir)?;
        let jobs = read_json(&dir.join("jobs.json"))?.unwrap_or_default();
        Ok(RedriveLedger {
            dir,
            state: Mutex::new(LedgerState {
                marks: HashMap::new(),
                jobs,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io_error(&self, source: io::Error) -> RedriveError {
        RedriveError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// The unfinished jobs, oldest first.
    pub fn jobs(&self) -> Vec<RedriveJob> {
        self.lock().jobs.jobs.clone()
    }

    /// Record a new job for `source` (refused while one runs).
    pub fn create_job(
        &self,
        source: &str,
        target: &str,
        filter: RedriveFilter,
    ) -> Result<RedriveJob, RedriveError> {
        let mut state = self.lock();
        if let Some(running) = state.jobs.jobs.iter().find(|job| job.source == source) {
            return Err(RedriveError::Busy {
                destination: source.to_string(),
                job: running.id,
            });
        }
        state.jobs.next_id += 1;
        let job = RedriveJob {
            id: state.jobs.next_id,
            source: source.to_string(),
            target: target.to_string(),
            filter,
            cutoff_ms: unix_ms_now(),
        };
        state.jobs.jobs.push(job.clone());
        write_json_atomically(&self.dir, "jobs.json", &state.jobs).map_err(|err| {
            state.jobs.jobs.pop();
            self.io_error(err)
        })?;
        Ok(job)
    }

    /// Forget finished (or abandoned) jobs.
    pub fn finish_jobs(&self, ids: &[u64]) -> Result<(), RedriveError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        state.jobs.jobs.retain(|job| !ids.contains(&job.id));
        write_json_atomically(&self.dir, "jobs.json", &state.jobs).map_err(|e| self.io_error(e))
    }

    /// How `entry` of `source` was handled, if it was.
    pub fn handled(
        &self,
        source: &str,
        entry: &DeadLetterEntry,
    ) -> Result<Option<Outcome>, RedriveError> {
        let Some(event_id) = &entry.event_id else {
            return Ok(None);
        };
        let mut state = self.lock();
        let marks = self.marks_of(&mut state, source)?;
        Ok(marks
            .get(event_id)
            .filter(|mark| mark.time_ms >= entry.time_ms)
            .map(|mark| mark.outcome))
    }

    /// Record settled dead letters (durably) before returning.
    pub fn record(&self, handled: &[Handled]) -> Result<(), RedriveError> {
        let mut state = self.lock();
        let mut by_source: BTreeMap<&str, Vec<&Handled>> = BTreeMap::new();
        for item in handled {
            by_source.entry(&item.source).or_default().push(item);
        }
        for (source, items) in by_source {
            // Loads (and cuts a torn tail) before the first append of this process.
            self.marks_of(&mut state, source)?;
            let mut lines = Vec::new();
            for item in &items {
                let line = MarkLine {
                    event_id: item.event_id.clone(),
                    time_ms: item.mark.time_ms,
                    outcome: item.mark.outcome,
                };
                serde_json::to_writer(&mut lines, &line).map_err(|e| self.io_error(e.into()))?;
                lines.push(b'\n');
            }
            append_durably(&self.dir, &marks_name(source), &lines).map_err(|e| self.io_error(e))?;
            let marks = self.marks_of(&mut state, source)?;
            for item in items {
                merge(marks, item.event_id.clone(), item.mark);
            }
        }
        Ok(())
    }

    fn marks_of<'s>(
        &self,
        state: &'s mut LedgerState,
        source: &str,
    ) -> Result<&'s mut HashMap<String, Mark>, RedriveError> {
        if !state.marks.contains_key(source) {
            let loaded =
                load_marks(&self.dir.join(marks_name(source))).map_err(|e| self.io_error(e))?;
            state.marks.insert(source.to_string(), loaded);
        }
        Ok(state.marks.entry(source.to_string()).or_default())
    }
}

fn marks_name(source: &str) -> String {
    format!("{source}.marks.ndjson")
}

/// One line of a marks log.
#[derive(Serialize, Deserialize)]
struct MarkLine {
    event_id: String,
    time_ms: u64,
    outcome: Outcome,
}

/// Keep the newest mark of an event.
fn merge(marks: &mut HashMap<String, Mark>, event_id: String, mark: Mark) {
    let kept = marks.entry(event_id).or_insert(mark);
    if mark.time_ms >= kept.time_ms {
        *kept = mark;
    }
}

/// Read a marks log (newest mark per event), cutting a torn last line a crash left.
fn load_marks(path: &Path) -> io::Result<HashMap<String, Mark>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(err) => return Err(err),
    };
    super::dead_letter::cut_torn_tail(&mut file)?;
    let mut text = Vec::new();
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    file.read_to_end(&mut text)?;
    let mut marks = HashMap::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line: MarkLine = serde_json::from_slice(line).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {err}", path.display()),
            )
        })?;
        let mark = Mark {
            time_ms: line.time_ms,
            outcome: line.outcome,
        };
        merge(&mut marks, line.event_id, mark);
    }
    Ok(marks)
}

/// Append `lines` to `dir/name` and fdatasync (and make a new file's name durable).
fn append_durably(dir: &Path, name: &str, lines: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let created = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)?;
    file.write_all(lines)?;
    file.sync_data()?;
    if created {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut text)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    serde_json::from_slice(&text).map(Some).map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {err}", path.display()),
        )
    })
}

/// Replace `dir/name` with `value` as JSON: temp file, fsync, rename, fsync the directory.
fn write_json_atomically<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&temp)?;
    serde_json::to_writer(&mut file, value).map_err(io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Every file of `source` under `dir`, oldest first, with its complete lines and how many
/// lines did not parse ([`read_complete`]).
pub fn read_files(
    dir: &Path,
    source: &str,
) -> Result<Vec<(PathBuf, Vec<DeadLetterEntry>, usize)>, RedriveError> {
    let io_error = |err| RedriveError::Io {
        dir: dir.display().to_string(),
        source: err,
    };
    let mut files = Vec::new();
    for path in dead_letter_files(dir, source).map_err(io_error)? {
        let (entries, unreadable) = read_complete(&path).map_err(io_error)?;
        files.push((path, entries, unreadable));
    }
    Ok(files)
}

/// The complete lines of one dead-letter file. A last line without its `\n` (being written
/// right now) is left for later; a complete line that does not parse is counted, not fatal.
pub fn read_complete(path: &Path) -> io::Result<(Vec<DeadLetterEntry>, usize)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(err),
    };
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..end]);
    let mut entries = Vec::new();
    let mut unreadable = 0;
    for line in complete.split(|&b| b == b'\n') {
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(entry) => entries.push(entry),
            Err(_) => unreadable += 1,
        }
    }
    Ok((entries, unreadable))
}

/// One dead-letter file in a summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSummary {
    pub path: String,
    pub bytes: u64,
    pub events: u64,
}

/// What `GET /v1/dead-letters/{name}` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub destination: String,
    pub files: Vec<FileSummary>,
    pub events: u64,
    pub bytes: u64,
    pub by_reason: BTreeMap<String, u64>,
    /// Lines a redrive would send now.
    pub redrivable: u64,
    /// Lines whose event was redriven and delivered. Counted per line by the event's latest
    /// settlement: once a redrive of a line that failed again delivers the event, its older
    /// lines count as delivered too.
    pub redriven: u64,
    /// Lines whose event was redriven and failed again (a newer line holds the new reason).
    pub redriven_dead_lettered: u64,
    /// Complete lines that do not parse.
    pub unreadable: u64,
    /// The redrive running for this destination, if any.
    pub redrive: Option<RedriveJob>,
}

/// Summarise the dead letters of `destination` under `dir`.
pub fn summarize(
    dir: &Path,
    destination: &str,
    ledger: &RedriveLedger,
) -> Result<Summary, RedriveError> {
    let mut summary = Summary {
        destination: destination.to_string(),
        redrive: ledger
            .jobs()
            .into_iter()
            .find(|job| job.source == destination),
        ..Summary::default()
    };
    for (path, entries, unreadable) in read_files(dir, destination)? {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        summary.files.push(FileSummary {
            path: path.display().to_string(),
            bytes,
            events: entries.len() as u64,
        });
        summary.bytes += bytes;
        summary.events += entries.len() as u64;
        summary.unreadable += unreadable as u64;
        for entry in &entries {
            *summary.by_reason.entry(entry.reason.clone()).or_default() += 1;
            match ledger.handled(destination, entry)? {
                Some(Outcome::Delivered) => summary.redriven += 1,
                Some(Outcome::DeadLettered) => summary.redriven_dead_lettered += 1,
                None if redrivable(entry) => summary.redrivable += 1,
                None => {}
            }
        }
    }
    Ok(summary)
}

/// Distinct events of `source` a redrive with `filter` would send now.
pub fn pending(
    dir: &Path,
    source: &str,
    filter: &RedriveFilter,
    ledger: &RedriveLedger,
) -> Result<u64, RedriveError> {
    let probe = RedriveJob {
        id: 0,
        source: source.to_string(),
        target: source.to_string(),
        filter: filter.clone(),
        cutoff_ms: unix_ms_now(),
    };
    let mut events = std::collections::HashSet::new();
    for (_, entries, _) in read_files(dir, source)? {
        for entry in entries {
            if probe.selects(&entry) && ledger.handled(source, &entry)?.is_none() {
                events.extend(entry.event_id);
            }
        }
    }
    Ok(events.len() as u64)
}

/// One line as `show` lists it: the entry and whether (how) it was redriven. (Serialise only:
/// the raw payload cannot be read back through `flatten`.)
#[derive(Debug, Clone, Serialize)]
pub struct ShownEntry {
    #[serde(flatten)]
    pub entry: DeadLetterEntry,
    pub redrivable: bool,
    pub redriven: Option<Outcome>,
}

/// A page of `show`.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub destination: String,
    /// Lines matching the filter, in all files.
    pub total: u64,
    pub offset: u64,
    pub entries: Vec<ShownEntry>,
}

/// Lines `offset..offset + limit` of `destination` (oldest first) that match `filter`.
pub fn page(
    dir: &Path,
    destination: &str,
    filter: &RedriveFilter,
    (offset, limit): (u64, u64),
    ledger: &RedriveLedger,
) -> Result<Page, RedriveError> {
    let mut page = Page {
        destination: destination.to_string(),
        total: 0,
        offset,
        entries: Vec::new(),
    };
    for (_, entries, _) in read_files(dir, destination)? {
        for entry in entries.into_iter().filter(|entry| filter.matches(entry)) {
            let index = page.total;
            page.total += 1;
            if index < offset || index - offset >= limit {
                continue;
            }
            page.entries.push(ShownEntry {
                redrivable: redrivable(&entry),
                redriven: ledger.handled(destination, &entry)?,
                entry,
            });
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event_id: &str, time_ms: u64, reason: &str) -> DeadLetterEntry {
        serde_json::from_value(serde_json::json!({
            "time_ms": time_ms, "destination": "d", "reason": reason, "event_id": event_id,
            "seq": 1, "event": 0, "batch_id": "d-1", "payload": {"n": 1},
        }))
        .unwrap()
    }

    #[test]
    fn marks_cover_older_lines_of_an_event_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RedriveLedger::open(dir.path()).unwrap();
        let (old, replayed, newer) = (
            entry("e1", 10, "r"),
            entry("e1", 5, "r"),
            entry("e1", 20, "r2"),
        );
        assert_eq!(ledger.handled("d", &old).unwrap(), None);
        let mark = Mark {
            time_ms: 10,
            outcome: Outcome::Delivered,
        };
        ledger
            .record(&[Handled {
                source: "d".into(),
                event_id: "e1".into(),
                mark,
            }])
            .unwrap();
        let reopened = RedriveLedger::open(dir.path()).unwrap();
        assert_eq!(
            reopened.handled("d", &old).unwrap(),
            Some(Outcome::Delivered)
        );
        assert_eq!(
            reopened.handled("d", &replayed).unwrap(),
            Some(Outcome::Delivered)
        );
        assert_eq!(
            reopened.handled("d", &newer).unwrap(),
            None,
            "failed again later"
        );
        assert_eq!(reopened.handled("other", &old).unwrap(), None);
    }

    #[test]
    fn a_torn_mark_is_cut_and_later_marks_append_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let handled = |event_id: &str, time_ms| Handled {
            source: "d".into(),
            event_id: event_id.into(),
            mark: Mark {
                time_ms,
                outcome: Outcome::Delivered,
            },
        };
        let ledger = RedriveLedger::open(dir.path()).unwrap();
        ledger.record(&[handled("e1", 10)]).unwrap();
        let log = dir.path().join("redrive").join(marks_name("d"));
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(br#"{"event_id":"e2","ti"#).unwrap();
        let reopened = RedriveLedger::open(dir.path()).unwrap();
        assert_eq!(
            reopened.handled("d", &entry("e2", 20, "r")).unwrap(),
            None,
            "torn: sent again"
        );
        reopened
            .record(&[handled("e2", 20), handled("e1", 5)])
            .unwrap();
        let again = RedriveLedger::open(dir.path()).unwrap();
        assert_eq!(
            again.handled("d", &entry("e2", 20, "r")).unwrap(),
            Some(Outcome::Delivered)
        );
        assert_eq!(
            again.handled("d", &entry("e1", 10, "r")).unwrap(),
            Some(Outcome::Delivered),
            "the newest mark wins"
        );
    }

    #[test]
    fn one_job_per_source_and_jobs_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = RedriveLedger::open(dir.path()).unwrap();
        let filter = RedriveFilter {
            reason: Some("404".into()),
        };
        let job = ledger.create_job("a", "b", filter.clone()).unwrap();
        assert!(matches!(
            ledger.create_job("a", "a", RedriveFilter::default()),
            Err(RedriveError::Busy { job: 1, .. })
        ));
        ledger
            .create_job("b", "b", RedriveFilter::default())
            .unwrap();
        let reopened = RedriveLedger::open(dir.path()).unwrap();
        assert_eq!(reopened.jobs().len(), 2);
        assert_eq!(reopened.jobs()[0], job);
        reopened.finish_jobs(&[job.id]).unwrap();
        let again = RedriveLedger::open(dir.path()).unwrap();
        assert_eq!(again.jobs().len(), 1);
        assert_eq!(
            again.create_job("a", "a", filter).unwrap().id,
            3,
            "ids never repeat"
        );
    }

    #[test]
    fn jobs_select_batched_lines_up_to_the_cutoff_matching_the_reason() {
        let job = RedriveJob {
            id: 1,
            source: "d".into(),
            target: "d".into(),
            filter: RedriveFilter {
                reason: Some("404".into()),
            },
            cutoff_ms: 100,
        };
        assert!(job.selects(&entry("e", 100, "permanent failure: 404 Not Found")));
        assert!(!job.selects(&entry("e", 101, "permanent failure: 404 Not Found")));
        assert!(!job.selects(&entry("e", 50, "permanent failure: 422")));
        let mut invalid = entry("e", 50, "invalid event: 404");
        invalid.batch_id = None;
        assert!(!job.selects(&invalid), "never batched: not redrivable");
    }

    #[test]
    fn a_line_being_written_is_left_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ndjson");
        let line = serde_json::to_string(&entry("e", 1, "r")).unwrap();
        std::fs::write(&path, format!("{line}\nnot json\n{{\"time_ms\":")).unwrap();
        let (entries, unreadable) = read_complete(&path).unwrap();
        assert_eq!((entries.len(), unreadable), (1, 1));
    }
}
