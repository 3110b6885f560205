//! The dead-letter store: events a destination gave up on, kept on disk with the reason.
//!
//! ## Format
//!
//! Per destination, under `<data-dir>/dead-letters/`: the active file `<destination>.ndjson`
//! and rotated files `<destination>.<index>.ndjson` (`index` is 20 zero-padded digits, so name
//! order is age order; [`dead_letter_files`] lists them oldest first, active last). Every file
//! holds complete lines, one JSON object per dead-lettered event:
//!
//! ```text
//! {"time_ms":1763734000000,"destination":"kinesis","reason":"permanent: stream not found",
//!  "event_id":"…","seq":42,"event":3,"batch_id":"kinesis-…","payload":{…}}
//! ```
//!
//! `payload` is the mapped event (the JSON the destination would have received) when it is
//! valid JSON, otherwise the raw text as a JSON string with `"payload_encoding":"text"`
//! (invalid events, undecodable records). `seq`/`event` is the event's WAL position.
//!
//! ## Invariants
//!
//! * **Fsynced before the cursor moves past it.** Writers append lines into an in-memory
//!   buffer ([`DeadLetterBuffer`]); the engine writes and fdatasyncs the buffer
//!   ([`DeadLetterFile::append_durably`]) *before* it persists a cursor position, and the
//!   position can only cover dead-lettered events after they entered the buffer. So a crash
//!   never loses a dead letter whose events the cursor has passed. (A crash between the fsync
//!   and the cursor persist replays those events, so a dead letter may appear twice; never
//!   zero times.)
//! * **Bounded, never dropped.** All files together stay within `--dead-letter-max-bytes` and
//!   above the `--wal-min-free-bytes` floor ([`super::dead_letter_budget`]). A write that does
//!   not fit is refused whole; the engine keeps the lines and pauses the destination (its
//!   events wait in the WAL) until room appears.
//! * **Rotation.** Before a write would take the active file past
//!   [`DeadLetterLimits::rotate_bytes`], the active file is renamed to the next rotated name
//!   and a new one started, so dead letters can be handled (and removed) a file at a time.
//! * **Torn tails are cut.** A line is only complete with its `\n`; on open, a partial last
//!   line (a crash mid-write) is truncated away. Its events were not yet covered by a persisted
//!   cursor, so they are dead-lettered again after the replay.
//! * Appends and renames only; nothing in flagstream deletes or rewrites dead letters.
//!   Operators inspect them (`flagstream dead-letters show`, [`read_dead_letters`] or any
//!   NDJSON tool), redrive them (`flagstream dead-letters redrive`, see [`super::redrive`];
//!   which lines were redriven is kept beside the files, the files stay as written) and remove
//!   handled files.
//! * Dead letters of events that were in a batch also carry the item's `kind`, `key`,
//!   `context_key`, `environment` and `received_at_ms`, and a `batch_id`: those are the ones a
//!   redrive can send again (the payload is the mapped row the destination refused).
//!
//! [`DeadLetterLimits::rotate_bytes`]: super::dead_letter_budget::DeadLetterLimits::rotate_bytes

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::dest::BatchItem;
use crate::wal::Position;

use super::dead_letter_budget::{DeadLetterBudget, ReserveError, StoreFull};
use super::retry::unix_ms_now;

/// One dead-lettered event, borrowed, as the engine records it.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    pub event_id: Option<&'a str>,
    pub position: Position,
    pub batch_id: Option<&'a str>,
    pub payload: &'a [u8],
}

/// One line of the store, as read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterEntry {
    pub time_ms: u64,
    pub destination: String,
    pub reason: String,
    #[serde(default)]
    pub event_id: Option<String>,
    pub seq: u64,
    pub event: u32,
    #[serde(default)]
    pub batch_id: Option<String>,
    /// The item's metadata (events given up on after they were batched; absent in lines
    /// written before redrive existed): what a redrive needs to rebuild the batch item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<u64>,
    /// `text` when `payload` is a JSON string holding non-JSON raw text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<String>,
    pub payload: Box<RawValue>,
}

#[derive(Serialize)]
struct LineOut<'a> {
    time_ms: u64,
    destination: &'a str,
    reason: &'a str,
    event_id: Option<&'a str>,
    seq: u64,
    event: u32,
    batch_id: Option<&'a str>,
    #[serde(flatten)]
    item: Option<ItemFields<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_encoding: Option<&'static str>,
    payload: Payload<'a>,
}

/// The metadata of a batched item, kept so a redrive can rebuild it.
#[derive(Serialize)]
struct ItemFields<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_key: Option<&'a str>,
    environment: &'a str,
    received_at_ms: u64,
}

impl<'a> ItemFields<'a> {
    fn of(item: &'a BatchItem) -> Self {
        ItemFields {
            kind: &item.kind,
            key: item.key.as_deref(),
            context_key: item.context_key.as_deref(),
            environment: &item.environment,
            received_at_ms: item.received_at_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Payload<'a> {
    Json(&'a RawValue),
    Text(std::borrow::Cow<'a, str>),
}

/// Dead letters serialised but not yet on disk.
#[derive(Debug, Default)]
pub struct DeadLetterBuffer {
    destination: String,
    pending: Vec<u8>,
    count: u64,
    /// Dead letters over the destination's lifetime (carried in the cursor).
    total: u64,
}

impl DeadLetterBuffer {
    pub fn new(destination: &str) -> Self {
        Self::with_total(destination, 0)
    }

    /// A buffer whose lifetime count continues from `total`.
    pub fn with_total(destination: &str, total: u64) -> Self {
        DeadLetterBuffer {
            destination: destination.to_string(),
            pending: Vec::new(),
            count: 0,
            total,
        }
    }

    /// Dead letters pushed over the destination's lifetime, pending ones included.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Serialise one dead letter into the buffer.
    pub fn push(&mut self, letter: DeadLetter<'_>) {
        self.push_line(letter, None, unix_ms_now());
    }

    /// Serialise a dead letter of a batched `item` with the item's metadata (so it can be
    /// redriven), stamped no earlier than `not_before_ms` (a redrive's cutoff: see
    /// [`super::redrive`]).
    pub fn push_item(&mut self, letter: DeadLetter<'_>, item: &BatchItem, not_before_ms: u64) {
        let time_ms = unix_ms_now().max(not_before_ms);
        self.push_line(letter, Some(ItemFields::of(item)), time_ms);
    }

    fn push_line(&mut self, letter: DeadLetter<'_>, item: Option<ItemFields<'_>>, time_ms: u64) {
        let trimmed = trim_ascii(letter.payload);
        let json = serde_json::from_slice::<&RawValue>(trimmed).ok();
        let (payload, encoding) = match json {
            Some(raw) => (Payload::Json(raw), None),
            None => (
                Payload::Text(String::from_utf8_lossy(letter.payload)),
                Some("text"),
            ),
        };
        let line = LineOut {
            time_ms,
            destination: &self.destination,
            reason: letter.reason,
            event_id: letter.event_id,
            seq: letter.position.seq,
            event: letter.position.event,
            batch_id: letter.batch_id,
            item,
            payload_encoding: encoding,
            payload,
        };
        // Serialising plain strings and validated raw JSON into a Vec cannot fail.
        if serde_json::to_writer(&mut self.pending, &line).is_ok() {
            self.pending.push(b'\n');
            self.count += 1;
            self.total += 1;
        }
    }

    /// Dead letters pushed since the last [`DeadLetterBuffer::take`].
    pub fn pending_count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Take the serialised lines (and their count) for writing.
    pub fn take(&mut self) -> (Vec<u8>, u64) {
        (
            std::mem::take(&mut self.pending),
            std::mem::take(&mut self.count),
        )
    }

    /// Put back lines whose write failed, in front of anything pushed since.
    pub fn restore(&mut self, mut lines: Vec<u8>, count: u64) {
        lines.append(&mut self.pending);
        self.pending = lines;
        self.count += count;
    }
}

/// Why dead letters could not be written; the lines stay with the writer.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The budget or the free-space floor refuses the write: the destination pauses.
    #[error(transparent)]
    Full(#[from] StoreFull),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<ReserveError> for AppendError {
    fn from(err: ReserveError) -> Self {
        match err {
            ReserveError::Full(full) => AppendError::Full(full),
            ReserveError::Io(err) => AppendError::Io(err),
        }
    }
}

/// The on-disk files of one destination's dead letters: the active file and the rotated ones.
#[derive(Debug)]
pub struct DeadLetterFile {
    dir: PathBuf,
    destination: String,
    path: PathBuf,
    budget: Arc<DeadLetterBudget>,
    active: Mutex<Active>,
}

#[derive(Debug)]
struct Active {
    file: File,
    len: u64,
}

impl DeadLetterFile {
    /// `<dir>/<destination>.ndjson`, created if missing; a torn last line is cut.
    pub fn open(budget: Arc<DeadLetterBudget>, destination: &str) -> io::Result<Self> {
        let dir = budget.dir().to_path_buf();
        let path = dead_letter_path(&dir, destination);
        let active = open_active(&dir, &path)?;
        Ok(DeadLetterFile {
            dir,
            destination: destination.to_string(),
            path,
            budget,
            active: Mutex::new(active),
        })
    }

    /// The active file (rotated ones: [`dead_letter_files`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append complete lines and fdatasync, within the budget; rotates the active file first
    /// when the lines would take it past the rotation size. Blocking.
    pub fn append_durably(&self, lines: &[u8]) -> Result<(), AppendError> {
        if lines.is_empty() {
            return Ok(());
        }
        let needed = lines.len() as u64;
        Ok(self
            .budget
            .write_within(needed, || self.write_within_budget(lines))?)
    }

    fn write_within_budget(&self, lines: &[u8]) -> io::Result<()> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let rotate_at = self.budget.limits().rotate_bytes();
        if active.len > 0 && active.len + lines.len() as u64 > rotate_at {
            self.rotate(&mut active)?;
        }
        (&active.file).write_all(lines)?;
        active.len += lines.len() as u64;
        active.file.sync_data()
    }

    /// Rename the active file to the next rotated name and start an empty one.
    fn rotate(&self, active: &mut Active) -> io::Result<()> {
        let next = dead_letter_files(&self.dir, &self.destination)?
            .iter()
            .filter_map(|path| rotation_index(path, &self.destination))
            .max()
            .map_or(1, |last| last + 1);
        let rotated = self.dir.join(rotated_name(&self.destination, next));
        std::fs::rename(&self.path, &rotated)?;
        *active = open_active(&self.dir, &self.path)?;
        tracing::info!(destination = %self.destination, rotated = %rotated.display(), "dead-letter file rotated");
        Ok(())
    }
}

/// Open (or create) the active file, cut a torn tail, and make a new file's name durable.
fn open_active(dir: &Path, path: &Path) -> io::Result<Active> {
    std::fs::create_dir_all(dir)?;
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    cut_torn_tail(&mut file)?;
    if created {
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
    }
    let len = file.metadata()?.len();
    Ok(Active { file, len })
}

/// `<destination>.<index:020>.ndjson`: rotated files sort by age in plain name order.
fn rotated_name(destination: &str, index: u64) -> String {
    format!("{destination}.{index:020}.ndjson")
}

/// The index of a rotated file of `destination` (`None` for the active file or others).
fn rotation_index(path: &Path, destination: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name
        .strip_prefix(destination)?
        .strip_prefix('.')?
        .strip_suffix(".ndjson")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Every dead-letter file of `destination` under `dir`, oldest first: the rotated files by
/// index, then the active file (when it exists).
pub fn dead_letter_files(dir: &Path, destination: &str) -> io::Result<Vec<PathBuf>> {
    let mut rotated = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let path = entry?.path();
        if let Some(index) = rotation_index(&path, destination) {
            rotated.push((index, path));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, path)| path).collect();
    let active = dead_letter_path(dir, destination);
    if active.exists() {
        files.push(active);
    }
    Ok(files)
}

/// Truncate a partial last line (no trailing `\n`) left by a crash.
pub(super) fn cut_torn_tail(file: &mut File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Scan backwards in chunks for the last newline.
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if end == len && buf.last() == Some(&b'\n') {
            return Ok(());
        }
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            file.set_len(start + i as u64 + 1)?;
            return file.sync_all();
        }
        if start == 0 {
            file.set_len(0)?;
            return file.sync_all();
        }
        end = start;
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Read every dead letter of a store file (for operators, `/v1` endpoints and tests). Lines
/// that do not parse are reported as errors naming the line number.
pub fn read_dead_letters(path: &Path) -> io::Result<Vec<DeadLetterEntry>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut entries = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}:{}: {err}", path.display(), number + 1),
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The store file of `destination` under `dir`.
pub fn dead_letter_path(dir: &Path, destination: &str) -> PathBuf {
    dir.join(format!("{destination}.ndjson"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::dead_letter_budget::DeadLetterLimits;

    fn store(dir: &Path, max_bytes: u64) -> Arc<DeadLetterBudget> {
        let limits = DeadLetterLimits {
            max_bytes,
            min_free_bytes: 0,
        };
        Arc::new(DeadLetterBudget::open(dir, limits).unwrap())
    }

    fn letter<'a>(reason: &'a str, payload: &'a [u8], seq: u64) -> DeadLetter<'a> {
        DeadLetter {
            reason,
            event_id: Some("ev-1"),
            position: Position { seq, event: 2 },
            batch_id: Some("file-1"),
            payload,
        }
    }

    #[test]
    fn round_trips_json_and_text_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let file = DeadLetterFile::open(store(dir.path(), u64::MAX), "kinesis").unwrap();
        let mut buffer = DeadLetterBuffer::new("kinesis");
        buffer.push(letter("permanent: nope", br#"{"kind":"feature","n":1}"#, 7));
        buffer.push(letter("invalid event: not json", b"{oops \"", 8));
        assert_eq!(buffer.pending_count(), 2);
        let (lines, count) = buffer.take();
        assert_eq!(count, 2);
        assert!(buffer.is_empty());
        file.append_durably(&lines).unwrap();

        let entries = read_dead_letters(file.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].reason, "permanent: nope");
        assert_eq!(entries[0].payload.get(), r#"{"kind":"feature","n":1}"#);
        assert_eq!(entries[0].payload_encoding, None);
        assert_eq!((entries[0].seq, entries[0].event), (7, 2));
        assert_eq!(entries[0].destination, "kinesis");
        assert_eq!(entries[1].payload_encoding.as_deref(), Some("text"));
        let text: String = serde_json::from_str(entries[1].payload.get()).unwrap();
        assert_eq!(text, "{oops \"");
    }

    #[test]
    fn a_torn_last_line_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dead_letter_path(dir.path(), "d");
        {
            let file = DeadLetterFile::open(store(dir.path(), u64::MAX), "d").unwrap();
            let mut buffer = DeadLetterBuffer::new("d");
            buffer.push(letter("r", b"1", 1));
            file.append_durably(&buffer.take().0).unwrap();
        }
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(br#"{"time_ms":1,"destin"#).unwrap();
        drop(raw);
        assert!(
            read_dead_letters(&path).is_err(),
            "torn line must not parse"
        );
        let file = DeadLetterFile::open(store(dir.path(), u64::MAX), "d").unwrap();
        assert_eq!(read_dead_letters(&path).unwrap().len(), 1);
        let mut buffer = DeadLetterBuffer::new("d");
        buffer.push(letter("r2", b"2", 2));
        file.append_durably(&buffer.take().0).unwrap();
        let entries = read_dead_letters(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].reason, "r2");
    }

    #[test]
    fn a_file_of_one_torn_line_becomes_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dead_letter_path(dir.path(), "d"), b"{\"half").unwrap();
        DeadLetterFile::open(store(dir.path(), u64::MAX), "d").unwrap();
        assert_eq!(
            std::fs::read(dead_letter_path(dir.path(), "d")).unwrap(),
            b""
        );
    }

    #[test]
    fn files_rotate_and_a_full_budget_refuses_whole_writes() {
        let dir = tempfile::tempdir().unwrap();
        // Rotation at 16 KiB (the smallest); room for a bit more than three files.
        let file = DeadLetterFile::open(store(dir.path(), 50_000), "d").unwrap();
        let mut buffer = DeadLetterBuffer::new("d");
        let payload = format!("\"{}\"", "x".repeat(5000));
        let mut written = 0;
        let refused = loop {
            buffer.push(letter("r", payload.as_bytes(), written + 1));
            let (lines, count) = buffer.take();
            match file.append_durably(&lines) {
                Ok(()) => written += count,
                Err(err) => break err,
            }
        };
        assert!(
            matches!(refused, AppendError::Full(StoreFull::Budget { .. })),
            "{refused}"
        );
        let files = dead_letter_files(dir.path(), "d").unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.last().map(String::as_str),
            Some("d.ndjson"),
            "{names:?}"
        );
        assert_eq!(names[0], "d.00000000000000000001.ndjson", "{names:?}");
        assert!(names.len() >= 3, "{names:?}");
        let sizes: u64 = files
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(sizes <= 50_000, "{sizes}");
        let seqs: Vec<u64> = files
            .iter()
            .flat_map(|p| read_dead_letters(p).unwrap())
            .map(|entry| entry.seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=written).collect::<Vec<_>>(),
            "oldest first, none lost"
        );

        // Removing the oldest file makes room; the next write lands in the active file.
        std::fs::remove_file(&files[0]).unwrap();
        buffer.push(letter("r", payload.as_bytes(), written + 1));
        file.append_durably(&buffer.take().0).unwrap();
    }

    #[test]
    fn restore_keeps_order() {
        let mut buffer = DeadLetterBuffer::new("d");
        buffer.push(letter("first", b"1", 1));
        let (lines, count) = buffer.take();
        buffer.push(letter("second", b"2", 2));
        buffer.restore(lines, count);
        let (lines, count) = buffer.take();
        assert_eq!(count, 2);
        let text = String::from_utf8(lines).unwrap();
        assert!(text.find("first").unwrap() < text.find("second").unwrap());
    }

    #[test]
    fn missing_store_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_dead_letters(&dir.path().join("none.ndjson"))
            .unwrap()
            .is_empty());
    }
}
