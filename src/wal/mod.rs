//! The write-ahead log. CONTRACT SKELETON — the WAL owner replaces the bodies (and this doc
//! with the real design doc) but keeps every public signature below, because `ingest`,
//! `delivery`, `admin` and `main` are written against them.
//!
//! Storage knows bytes, sequence numbers and cursors — never events or destinations.
#![allow(unused_variables, dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

/// How appends become durable before [`Wal::append`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Resolve only after an fdatasync that covers the record (group commit).
    Always,
    /// Resolve after the memcpy; a background task fdatasyncs at this interval.
    Interval(Duration),
    /// Resolve after the memcpy; the kernel writes back whenever it likes.
    Never,
}

/// What recovery does when valid records follow an invalid one in the tail segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Keep the valid prefix, count and log what was cut.
    TolerateTail,
    /// Refuse to open.
    Strict,
}

/// Everything the WAL needs from outside: a directory and some numbers.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Root directory (holds `LOCK`, segments and cursor files).
    pub dir: PathBuf,
    /// Size of every segment file. Default 128 MiB.
    pub segment_bytes: u64,
    /// Byte budget for all segment files together (spares included).
    pub max_bytes: u64,
    /// Refuse to allocate a segment when the filesystem's free space would drop below this.
    pub min_free_bytes: u64,
    pub sync: SyncMode,
    pub recovery: RecoveryMode,
}

/// One append: an opaque payload given as parts that are written back to back (gather write),
/// plus the small header fields the WAL stores for readers without interpreting them.
#[derive(Debug, Clone, Copy)]
pub struct AppendRequest<'a> {
    /// Opaque one-byte tag chosen by the caller (ingest stores its format code).
    pub tag: u8,
    /// Number of events in the payload, for lag metrics and `wal inspect`.
    pub event_count: u32,
    /// Wall-clock time the body was received, Unix milliseconds.
    pub received_at_ms: u64,
    /// Payload parts, concatenated in the record.
    pub parts: &'a [&'a [u8]],
}

/// What a successful append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    pub seq: u64,
}

/// A record handed to readers; `payload` is zero-copy and keeps its segment mapped.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub tag: u8,
    pub event_count: u32,
    pub received_at_ms: u64,
    pub payload: Bytes,
}

/// A point in the log: a record and an event index inside it (for partially delivered
/// records). Ordered lexicographically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub seq: u64,
    pub event: u32,
}

/// Retry state of a cursor's oldest in-flight batch; persisted so restarts keep backing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryState {
    pub attempts: u32,
    pub next_attempt_unix_ms: u64,
    pub first_failure_unix_ms: u64,
    /// Opaque class code chosen by the delivery layer (0 = none).
    pub last_error_class: u16,
}

/// Everything persisted for one named cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorState {
    /// Every position before this one is delivered (or dead-lettered).
    pub acked: Position,
    /// The oldest in-flight batch `[start, end)`, so a restart re-cuts it identically.
    pub plan: Option<(Position, Position)>,
    pub retry: RetryState,
    /// Records given up on (dead-lettered) over the cursor's lifetime.
    pub dead_lettered: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log is full: {needed} bytes needed, {available} available")]
    Full { needed: u64, available: u64 },
    #[error("record of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("write-ahead log is in a fatal state: {0}")]
    Fatal(String),
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt write-ahead log: {0}")]
    Corrupt(String),
    #[error("write-ahead log is closed")]
    Closed,
}

/// Backlog behind a position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    pub records: u64,
    pub bytes: u64,
    pub oldest_received_at_ms: Option<u64>,
}

/// Gauges for `/metrics` and `/v1/destinations`.
#[derive(Debug, Clone, Default)]
pub struct WalStats {
    pub first_seq: u64,
    pub next_seq: u64,
    pub segments: u64,
    pub bytes_on_disk: u64,
    pub capacity_bytes: u64,
    pub corrupt_records: u64,
    pub fatal: Option<String>,
}

/// The log. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Wal {}

impl Wal {
    /// Lock the directory, recover, and start the sync task. Blocking.
    pub fn open(options: WalOptions) -> Result<Wal, WalError> {
        todo!()
    }
    /// Append one record; resolves when it is durable according to [`SyncMode`].
    pub async fn append(&self, request: AppendRequest<'_>) -> Result<AppendReceipt, WalError> {
        todo!()
    }
    /// A reader starting at `from_seq` (clamped to the oldest stored record).
    pub fn reader(&self, from_seq: u64) -> WalReader {
        todo!()
    }
    /// The seq the next append will get.
    pub fn next_seq(&self) -> u64 {
        todo!()
    }
    /// The oldest seq still stored.
    pub fn first_seq(&self) -> u64 {
        todo!()
    }
    pub fn stats(&self) -> WalStats {
        todo!()
    }
    /// Backlog from `from_seq` to the committed end.
    pub fn lag(&self, from_seq: u64) -> Lag {
        todo!()
    }
    /// Open (or create at the oldest stored record) the named cursor.
    pub fn open_cursor(&self, name: &str) -> Result<Cursor, WalError> {
        todo!()
    }
    /// Names of every cursor persisted on disk, configured or not.
    pub fn cursor_names(&self) -> Vec<String> {
        todo!()
    }
    /// Forget a cursor so it no longer pins segments.
    pub fn release_cursor(&self, name: &str) -> Result<(), WalError> {
        todo!()
    }
    /// Free every segment that all persisted cursors are past. Blocking.
    pub fn collect_garbage(&self) -> Result<u64, WalError> {
        todo!()
    }
    /// Final sync; later appends fail with `Closed`.
    pub async fn close(&self) -> Result<(), WalError> {
        todo!()
    }
}

/// Follows the log. `next` waits for new records without polling or lost wake-ups.
pub struct WalReader {}

impl WalReader {
    /// The next record, or `None` when caught up with the committed end.
    pub fn try_next(&mut self) -> Result<Option<Record>, WalError> {
        todo!()
    }
    /// The next record, waiting for one to be committed. Cancel-safe.
    pub async fn next(&mut self) -> Result<Record, WalError> {
        todo!()
    }
    /// The seq the next call will return.
    pub fn position(&self) -> u64 {
        todo!()
    }
}

/// A named, persisted cursor.
pub struct Cursor {}

impl Cursor {
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn state(&self) -> CursorState {
        todo!()
    }
    /// Persist atomically (pwrite + fdatasync); GC sees the new position afterwards. Blocking.
    pub fn persist(&mut self, state: CursorState) -> Result<(), WalError> {
        todo!()
    }
}

/// In-memory tracking of in-flight batches: acks may arrive out of order, the acked position
/// advances only over the contiguous prefix.
#[derive(Debug)]
pub struct AckWindow {}

/// Handle for one batch registered in an [`AckWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub u64);

impl AckWindow {
    pub fn new(acked: Position) -> Self {
        todo!()
    }
    /// Register the next batch `[start, end)`; `start` must equal the previous batch's end.
    pub fn push(&mut self, start: Position, end: Position) -> Ticket {
        todo!()
    }
    /// Mark a batch done; returns the new acked position if the contiguous prefix grew.
    pub fn ack(&mut self, ticket: Ticket) -> Option<Position> {
        todo!()
    }
    pub fn acked(&self) -> Position {
        todo!()
    }
    /// Start and end of the oldest batch still in flight.
    pub fn oldest_in_flight(&self) -> Option<(Position, Position)> {
        todo!()
    }
    pub fn in_flight(&self) -> usize {
        todo!()
    }
}
