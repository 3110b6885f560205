//! The write-ahead log: a memory-mapped, crash-safe, segmented log of opaque records with
//! group commit, zero-copy tailing readers and named persisted cursors.
//!
//! Storage knows bytes, sequence numbers and cursors — never events, HTTP or destinations.
//! One ingest body is one record; each destination reads through its own cursor.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/LOCK                            flock'd while open; a second process gets WalError::Locked
//! <dir>/segments/<segment_id:020>.seg   segments, ids consecutive, never reused
//! <dir>/segments/spare-<n>.seg          preallocated files without identity, ready for the next roll
//! <dir>/segments/*.corrupt              files recovery could not use (kept for the operator)
//! <dir>/cursors/<name>.cur              one 4 KiB file per cursor, two checksummed A/B slots
//! ```
//!
//! `flagstream serve` puts `<dir>` at `<data-dir>/wal`. flagstream 0.1 called `segments/`
//! `wal/`; opening such a directory renames it ([`layout`]).
//!
//! # On-disk format
//!
//! Segment files are `segment_bytes` long (default 128 MiB), preallocated with `fallocate`
//! (never sparse), mapped once, never truncated. A 4 KiB header page holds the segment header
//! `{magic "FFWALSEG", version, segment_id, base_seq, created_ms, segment_bytes, crc32}` and,
//! once the segment stops receiving records, a seal block `{last_seq, record_count,
//! end_offset, sealed_ms, crc32}` at offset 512. Records follow from offset 4096, 8-byte
//! aligned: a 32-byte header `{magic 0xF1A6, kind, tag, payload_len, crc32, event_count, seq,
//! received_at_ms}` and the payload. The record CRC-32 covers the segment id, the header and
//! the payload. Byte-level details: [`format`](mod@format); cursor files: `cursor.rs`.
//!
//! # Invariants
//!
//! 1. **Seqs** start at 1, grow by one per record and are never reused: the newest segment is
//!    never collected, so its header and records carry the counter across restarts.
//! 2. **No SIGBUS, no torn visibility.** Segment files are fully allocated before they are
//!    mapped and never shrink while mapped. A record's bytes are written and checksummed
//!    before the segment's frozen end (committed end) moves past them; readers never look past
//!    it. Appends are synchronous under one mutex, so a dropped `append` future never leaves
//!    half a record (`core.rs`).
//! 3. **Durability.** In `Always` mode an append resolves only after an fdatasync covering
//!    its record, the files before it and, after a roll, the directory (`sync.rs`). One sync
//!    covers every record committed before it started (group commit). A failed sync is fatal
//!    and never retried.
//! 4. **Stale bytes never validate.** The record checksum is seeded with the segment id, and
//!    recovery requires consecutive seqs, so leftovers of a recycled file or of a torn write
//!    are rejected.
//! 5. **Recovery never bricks, loops or loads the backlog, and a damaged byte costs only its
//!    record.** Sealed segments are trusted by their seal; only unsealed ones are scanned
//!    (see *Recovery of the unsealed tail* below). Damaged records are skipped, never the
//!    valid records after them; every unreadable seq is logged with its number and counted
//!    once (`flagstream_wal_corrupt_records_total`, [`WalStats::corrupt_records`], `wal
//!    inspect`), whether recovery or a reader finds it. A seq that was ever written is never
//!    handed out again.
//! 6. **GC frees only what every persisted cursor is past** (`gc.rs`): persisted cursor
//!    state first, then unlink/recycle, then directory fsync. With retention
//!    ([`Retention`], `--wal-retention`) the newest passed segments stay for replays, aged by
//!    the `sealed_ms` of their seal block (no format change: every sealed segment written by
//!    any version carries it); retention yields to invariant 7 by evicting the oldest
//!    retained segment first (`retention.rs`), never a segment a cursor still needs. A cursor
//!    may be persisted back into retained segments (a rewind): they are then needed again.
//! 7. **Bounded disk.** All segment and spare files fit in `max_bytes`, and no file is
//!    allocated when free space would fall below `min_free_bytes`; an append that needs a new
//!    segment then evicts retained segments, and with none fails at once with
//!    [`WalError::Full`].
//! 8. **Zero-copy payloads** keep their segment mapped; a segment is recycled only when no
//!    payload or reader references it (`mapping.rs` enforces this with the type system).
//!
//! # Recovery of the unsealed tail
//!
//! The newest segment (and an older one whose seal was not yet durable) is scanned record
//! by record, expecting consecutive seqs (`format::scan_tail`). At the first invalid record
//! recovery tells three cases apart:
//!
//! 1. **Torn tail** — nothing valid follows: a crash mid-append (a process killed while it
//!    writes a record, power loss or a kernel crash; such a record was never
//!    acknowledged, since its sync had not completed). The tail is cut there
//!    and the next append overwrites it. If the invalid record's header still names the
//!    expected seq, that record was written (in `Interval`/`Never` mode a reader may already
//!    have delivered it), so its seq is *retired*: counted as lost and never reused, which
//!    keeps ids derived from seqs unique downstream. A header torn before its seq field
//!    cannot be told from bytes never written; that seq may be reused (cursors further
//!    ahead still push new seqs past theirs).
//! 2. **Damaged record** — the header is intact (magic, kind, expected seq, and its length
//!    leads to the next valid record): a flipped bit in the payload or a checksummed field.
//!    Only that record is lost.
//! 3. **Damaged header whose length cannot be trusted** — the next record cannot be found by
//!    hopping. Recovery resynchronises on the next valid, CRC-checked record at an aligned
//!    offset whose seq is not below the expected one and that leaves at least 32 bytes per
//!    skipped seq; the seqs in between are lost, every record from there on is kept. Stale
//!    records of a recycled file never match (their checksum is bound to another segment id).
//!
//! In cases 2 and 3 valid records follow the damage: [`RecoveryMode::Strict`] refuses to
//! open (the operator decides, with `wal verify`); [`RecoveryMode::TolerateTail`] keeps every
//! valid record and seals the damaged segment at its end, so new records start in a fresh
//! segment after every seq ever used, readers skip the damage exactly as in any sealed
//! segment, and later opens trust the seal instead of finding the same damage again.
//!
//! The anchors: RocksDB's WAL recovery modes `kTolerateCorruptedTailRecords` (cut a torn
//! tail, fail on damage before it) and `kSkipAnyCorruptedRecords` (skip every bad record),
//! and raft-engine's `TolerateTailCorruption` / `TolerateAnyCorruption`. `Strict` is the
//! first kind; `TolerateTail` cuts a torn tail like it but, like the second kind, skips
//! damage before the tail instead of discarding everything after it — a log of
//! acknowledged client data must not drop intact records because an earlier one broke.
//! Damage in *sealed* segments is never scanned for at open; readers skip it (same rule).
//!
//! # Sync modes, honestly
//!
//! * `Always` (default): an acknowledged append survives power loss.
//! * `Interval(d)`: appends resolve after the copy into the page cache; a background fdatasync
//!   runs every `d`. Survives a process crash; a power cut loses up to `d` of acknowledged
//!   appends (the model of Vector's disk buffer).
//! * `Never`: like `Interval`, but only the kernel's writeback (about 30 s by default) and
//!   `close` persist data.
//!
//! # Files
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | public API, options, errors, this design doc |
//! | [`format`](mod@format) | header page, seal block, record framing, checksums, tail scan, resync |
//! | `mapping.rs` | the only `unsafe`: a mapping with frozen/unfrozen access rules |
//! | `segment.rs` | one segment in memory: identity, seal state, sparse seq index |
//! | `core.rs` | shared state, the append path, segment rolls, budget checks |
//! | `sync.rs` | the sync thread: group commit, durable watermark, spare preparation |
//! | `reader.rs` | [`WalReader`]: zero-copy reads, tailing, corruption skipping |
//! | `residency.rs` | dropping mapped pages behind the writer and readers (RSS independent of the backlog) |
//! | `page_cache.rs` | dropping durable pages beyond `--wal-page-cache-bytes` from the OS page cache |
//! | `cursor.rs` | [`Cursor`] files (A/B slots) and the cursor registry |
//! | `ack.rs` | [`AckWindow`]: out-of-order acks, contiguous prefix |
//! | `gc.rs` | garbage collection and orphan-cursor reporting |
//! | `seek.rs` | time → seq lookup over the records' receive times |
//! | `retention.rs` | which passed segments `--wal-retention` keeps, eviction under the budget |
//! | `recovery.rs` | opening a directory: lock, scan, repair |
//! | [`layout`] | directory names, the 0.1 layout migration, finding a WAL for the tools |
//! | [`io`] | the [`io::WalIo`] trait (fault injection) and the real [`io::OsIo`] |
//! | [`inspect`] | read-only `inspect` / `verify` for operators |

mod ack;
mod core;
mod cursor;
pub mod format;
mod gc;
pub mod inspect;
pub mod io;
pub mod layout;
mod mapping;
mod page_cache;
mod reader;
mod recovery;
mod residency;
mod retention;
mod seek;
mod segment;
mod sync;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

pub use self::ack::{AckWindow, Ticket};
use self::core::Core;
pub use self::cursor::{Cursor, CursorBlob, LEGACY_V1_BLOB_TAG, MAX_CURSOR_BLOB_BYTES};
use self::io::{OsIo, WalIo};
pub use self::page_cache::{DEFAULT_PAGE_CACHE_BYTES, MIN_PAGE_CACHE_BYTES};
pub use self::reader::WalReader;
use crate::metrics as names;

/// How appends become durable before [`Wal::append`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Resolve only after an fdatasync that covers the record (group commit).
    Always,
    /// Resolve after the write into the page cache; a background task fdatasyncs at this interval.
    Interval(Duration),
    /// Resolve after the write into the page cache; the kernel writes back whenever it likes.
    Never,
}

/// What recovery does when valid records follow an invalid one in an unsealed segment
/// (damage, as opposed to a torn tail, which is always cut; see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Keep every valid record, skip (log, count) only the damaged seqs.
    TolerateTail,
    /// Refuse to open; the error names the damaged seqs.
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
    /// When an append counts as done. Default [`SyncMode::Always`].
    pub sync: SyncMode,
    /// What to do about valid records after an invalid one in an unsealed segment.
    /// Default [`RecoveryMode::TolerateTail`] (skip only the damage).
    pub recovery: RecoveryMode,
    /// Keep sealed segments every cursor has passed (for replays), within `max_bytes`.
    /// Default off.
    pub retention: Retention,
    /// Durable bytes behind the newest record kept in the OS page cache; older ones are
    /// dropped from it (`page_cache.rs`). `None` leaves the page cache to the kernel.
    /// Default [`DEFAULT_PAGE_CACHE_BYTES`].
    pub page_cache_bytes: Option<u64>,
}

/// How much of the log to keep after every cursor has passed it (`--wal-retention`): sealed
/// segments younger than `max_age` (by their seal time) and, newest first, within
/// `max_bytes`. Both set: a segment must satisfy both. Neither: off. Retention always yields
/// to the WAL's byte budget (see `retention.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// True when nothing is retained.
    pub fn is_off(&self) -> bool {
        self.max_age.is_none() && self.max_bytes.is_none()
    }
}

/// Default segment size: 128 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// Default byte budget: 20 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 20 * 1024 * 1024 * 1024;
/// Default free-disk floor: 1 GiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest segment size accepted (small sizes exist for tests and tiny deployments).
pub const MIN_SEGMENT_BYTES: u64 = 16 * 1024;
/// Largest segment size accepted.
pub const MAX_SEGMENT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

impl WalOptions {
    /// Options with the defaults: 128 MiB segments, a 20 GiB budget, a 1 GiB free-disk floor,
    /// `always` sync, tolerate-tail recovery. Set fields afterwards to change them.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            sync: SyncMode::Always,
            recovery: RecoveryMode::TolerateTail,
            retention: Retention::default(),
            page_cache_bytes: Some(DEFAULT_PAGE_CACHE_BYTES),
        }
    }

    /// The largest payload one append can take with this segment size (a record never spans
    /// segments). Ingest caps request bodies at or below this.
    pub fn max_record_bytes(&self) -> u64 {
        format::max_payload_for(self.segment_bytes)
    }

    /// Check the numbers; the error names the offending field.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid =
            |option: WalOption, message: String| Err(WalError::InvalidOption { option, message });
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes)
            || !self.segment_bytes.is_multiple_of(format::HEADER_PAGE_BYTES)
        {
            return invalid(WalOption::SegmentBytes, format!(
                "segment_bytes = {} must be a multiple of 4096 between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return invalid(
                WalOption::MaxBytes,
                format!(
                    "max_bytes = {} must hold at least two segments of {} bytes",
                    self.max_bytes, self.segment_bytes
                ),
            );
        }
        if let SyncMode::Interval(every) = self.sync {
            if every.is_zero() {
                return invalid(
                    WalOption::SyncInterval,
                    "sync interval must be greater than zero".into(),
                );
            }
        }
        Ok(())
    }
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
    /// The record's sequence number (+1 per record, never reused).
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

/// Everything persisted for one named cursor: a position and an opaque blob its owner
/// encodes (delivery keeps its retry state, batch plan and counters there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorState {
    /// Every position before this one is delivered (or dead-lettered); garbage collection
    /// keeps every record from `acked.seq` on.
    pub acked: Position,
    /// At most [`MAX_CURSOR_BLOB_BYTES`], checksummed with the position.
    pub blob: CursorBlob,
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
    /// An option or argument is out of range; the message names it.
    #[error("invalid write-ahead log argument: {0}")]
    InvalidArgument(String),
    /// A cursor cannot be moved to `seq`: the records before `first_seq` are no longer stored.
    #[error("seq {seq} is no longer stored; the oldest stored seq is {first_seq}")]
    Trimmed { seq: u64, first_seq: u64 },
    /// One of [`WalOptions`]' fields is out of range.
    #[error("invalid write-ahead log option: {message}")]
    InvalidOption { option: WalOption, message: String },
}

/// The [`WalOptions`] field an [`WalError::InvalidOption`] is about (callers map it to their
/// own name for it, e.g. a CLI flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalOption {
    SegmentBytes,
    MaxBytes,
    SyncInterval,
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
    /// Oldest seq still stored.
    pub first_seq: u64,
    /// `received_at_ms` of the oldest stored record: how far back a replay can reach.
    pub first_received_at_ms: Option<u64>,
    /// Seq of the next append; everything below it is committed.
    pub next_seq: u64,
    /// Live segment files (spares not included).
    pub segments: u64,
    /// Bytes of all segment and spare files.
    pub bytes_on_disk: u64,
    /// The byte budget (`max_bytes`).
    pub capacity_bytes: u64,
    /// Records found corrupt and skipped since open (recovery and reads).
    pub corrupt_records: u64,
    /// Set once an fdatasync failed; the process must restart.
    pub fatal: Option<String>,
}

/// The log. Cheap to clone (an `Arc` inside).
///
/// ```
/// use flagstream::wal::{AppendRequest, AckWindow, CursorState, Position, Wal, WalOptions};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let mut options = WalOptions::new(dir.path());
/// options.segment_bytes = 1 << 20;
/// options.min_free_bytes = 0;
/// let wal = Wal::open(options).unwrap();
///
/// // Ingest: one body, one record; resolves once it is durable.
/// let receipt = wal
///     .append(AppendRequest { tag: 1, event_count: 2, received_at_ms: 0, parts: &[b"[{},{}]"] })
///     .await
///     .unwrap();
///
/// // Delivery: read from the cursor, ack, persist.
/// let mut cursor = wal.open_cursor("file").unwrap();
/// let mut reader = wal.reader(cursor.state().acked.seq);
/// let record = reader.next().await.unwrap();
/// assert_eq!((record.seq, &record.payload[..]), (receipt.seq, &b"[{},{}]"[..]));
/// let mut window = AckWindow::new(cursor.state().acked);
/// let ticket = window.push(Position { seq: record.seq, event: 0 }, Position { seq: record.seq + 1, event: 0 });
/// let acked = window.ack(ticket).unwrap();
/// cursor.persist(CursorState { acked, ..cursor.state() }).unwrap();
/// assert_eq!(wal.lag(acked.seq).records, 0);
/// # });
/// ```
#[derive(Clone)]
pub struct Wal {
    inner: Arc<WalInner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Wal")
            .field("dir", &self.inner.core.options.dir)
            .finish()
    }
}

/// Owner of the directory lock and the sync thread; shared by `Wal`, readers and cursors.
pub(crate) struct WalInner {
    pub(crate) core: Arc<Core>,
    sync_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (flock'd) for as long as anything of this WAL is alive.
    _lock: std::fs::File,
}

impl Drop for WalInner {
    fn drop(&mut self) {
        {
            let mut state = self.core.writer.lock();
            state.shutdown = true;
        }
        self.core.sync_wakeup.notify_all();
        if let Some(thread) = self.sync_thread.lock().take() {
            // The thread does a final sync and exits; a panic there is already reported.
            let _ = thread.join();
        }
    }
}

impl Wal {
    /// Lock the directory, recover, and start the sync task. Blocking (recovery does I/O);
    /// works inside or outside a tokio runtime (it starts an OS thread, not a task).
    pub fn open(options: WalOptions) -> Result<Wal, WalError> {
        Wal::open_with_io(options, Arc::new(OsIo))
    }

    /// [`Wal::open`] with a custom [`WalIo`] (fault injection in tests).
    pub fn open_with_io(options: WalOptions, io: Arc<dyn WalIo>) -> Result<Wal, WalError> {
        let started = Instant::now();
        options.validate()?;
        std::fs::create_dir_all(&options.dir).map_err(|source| WalError::Io {
            context: format!("creating {}", options.dir.display()),
            source,
        })?;
        let lock = recovery::lock_directory(&options.dir)?;
        layout::migrate(io.as_ref(), &options.dir)?;
        recovery::prepare_directories(io.as_ref(), &options.dir)?;
        let wal_dir = options.dir.join(layout::SEGMENT_DIR);
        let mut recovered = recovery::recover_segments(&options, io.as_ref(), &wal_dir)?;
        let first_seq = recovered
            .segments
            .front()
            .map_or(recovered.state.next_seq, |segment| segment.base_seq);
        let (cursors, corrupt_cursors) = cursor::load_all(
            io.as_ref(),
            &options.dir.join(layout::CURSOR_DIR),
            first_seq,
        )?;
        // Never hand out a seq that a cursor already counts as delivered or that a file set
        // aside as corrupt used (segment files lost or damaged): skip past them instead.
        let highest_acked = cursors
            .cursors
            .values()
            .map(|cursor| cursor.persisted_state().acked.seq)
            .max();
        let floor = highest_acked
            .unwrap_or(1)
            .max(recovered.highest_quarantined_seq.map_or(1, |seq| seq + 1));
        if floor > recovered.state.next_seq {
            tracing::warn!(log_end = recovered.state.next_seq, next_seq = floor,
                "Seqs beyond the stored log are already in use (by a cursor or a damaged file); new records start after them.");
            let state = &mut recovered.state;
            // Records in a segment must be consecutive: continue in a new segment.
            if let Some(mut active) = state.active.take() {
                active.segment.seal(&mut active.writer);
                state.unsynced.push(active.segment);
            }
            state.next_seq = floor;
        }
        let bytes_on_disk = recovered.state.bytes_on_disk;
        let segment_count = recovered.segments.len();
        let core = Arc::new(Core::new(
            options,
            io,
            recovered.segments,
            recovered.state,
            cursors,
            recovered.corrupt_records,
        ));
        // Finish any garbage collection a crash interrupted.
        gc::collect_garbage(&core, gc::Unclaimed::Ignore)?;
        let thread_core = Arc::clone(&core);
        let sync_thread = std::thread::Builder::new()
            .name("flagstream-wal-sync".into())
            .spawn(move || sync::run(thread_core))
            .map_err(|source| WalError::Io {
                context: "starting the WAL sync thread".into(),
                source,
            })?;
        let elapsed = started.elapsed();
        metrics::gauge!(names::WAL_RECOVERY_SECONDS).set(elapsed.as_secs_f64());
        metrics::gauge!(names::WAL_CAPACITY_BYTES).set(core.options.max_bytes as f64);
        metrics::gauge!(names::WAL_BYTES).set(bytes_on_disk as f64);
        metrics::gauge!(names::WAL_SEGMENTS).set(core.segments.read().len() as f64);
        if let Ok(free) = core.io.available_bytes(&core.wal_dir) {
            if core.options.max_bytes > free.saturating_add(bytes_on_disk) {
                tracing::warn!(max_bytes = core.options.max_bytes, free_bytes = free, wal_bytes = bytes_on_disk,
                    "The write-ahead log budget is larger than the free disk space; appends will fail with 'full' before the budget is reached.");
            }
        }
        tracing::info!(
            dir = %core.options.dir.display(),
            segments = segment_count,
            first_seq = core.first_seq(),
            next_seq = core.committed_next(),
            corrupt_records = core.corrupt_records.load(Ordering::Relaxed),
            corrupt_cursors,
            recovery_ms = elapsed.as_millis() as u64,
            "Opened the write-ahead log."
        );
        Ok(Wal {
            inner: Arc::new(WalInner {
                core,
                sync_thread: Mutex::new(Some(sync_thread)),
                _lock: lock,
            }),
        })
    }

    /// Append one record; resolves when it is durable according to [`SyncMode`].
    ///
    /// Cancel-safe: the record is written and published synchronously on the first poll, so a
    /// dropped future either appended nothing or a whole record (which then becomes durable
    /// with the next sync, unacknowledged to whoever dropped the future).
    pub async fn append(&self, request: AppendRequest<'_>) -> Result<AppendReceipt, WalError> {
        let core = &self.inner.core;
        let seq = core.append_now(&request)?;
        if core.options.sync == SyncMode::Always {
            self.wait_durable(seq).await?;
        }
        Ok(AppendReceipt { seq })
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), WalError> {
        let core = &self.inner.core;
        loop {
            let durable = core.durable.notified();
            tokio::pin!(durable);
            durable.as_mut().enable();
            if core.durable_next.load(Ordering::Acquire) > seq {
                return Ok(());
            }
            if let Some(message) = core.fatal() {
                return Err(WalError::Fatal(message.to_owned()));
            }
            if core.sync_stopped.load(Ordering::Acquire) {
                return Err(WalError::Closed);
            }
            durable.await;
        }
    }

    /// A reader starting at `from_seq` (clamped to the oldest stored record).
    pub fn reader(&self, from_seq: u64) -> WalReader {
        WalReader::new(Arc::clone(&self.inner), from_seq)
    }

    /// The seq the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.core.committed_next()
    }

    /// The oldest seq still stored.
    pub fn first_seq(&self) -> u64 {
        self.inner.core.first_seq()
    }

    /// The first stored seq whose record was received (`received_at_ms`) at or after
    /// `unix_ms`, or [`Wal::next_seq`] when every stored record is older (`seek.rs`).
    pub fn seq_at_time(&self, unix_ms: u64) -> u64 {
        seek::seq_at_time(&self.inner.core, unix_ms)
    }

    /// `received_at_ms` of the oldest stored record, if there is one.
    pub fn first_record_time(&self) -> Option<u64> {
        seek::first_record_time(&self.inner.core)
    }

    /// Every seq below this is durable (fdatasync'd). Equals `next_seq` in `Always` mode
    /// once pending appends resolved.
    pub fn durable_next_seq(&self) -> u64 {
        self.inner.core.durable_next.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> WalStats {
        let core = &self.inner.core;
        let bytes_on_disk = core.writer.lock().bytes_on_disk;
        let segments = core.segments.read().len() as u64;
        metrics::gauge!(names::WAL_BYTES).set(bytes_on_disk as f64);
        metrics::gauge!(names::WAL_SEGMENTS).set(segments as f64);
        WalStats {
            first_seq: core.first_seq(),
            first_received_at_ms: seek::first_record_time(core),
            next_seq: core.committed_next(),
            segments,
            bytes_on_disk,
            capacity_bytes: core.options.max_bytes,
            corrupt_records: core.corrupt_records.load(Ordering::Relaxed),
            fatal: core.fatal().map(str::to_owned),
        }
    }

    /// Backlog from `from_seq` to the committed end: records, record bytes (headers
    /// included) and the receive time of the oldest record in it.
    pub fn lag(&self, from_seq: u64) -> Lag {
        let core = &self.inner.core;
        let end = core.committed_next();
        let from = from_seq.max(core.first_seq());
        if from >= end {
            return Lag::default();
        }
        let segments: Vec<_> = core
            .segments
            .read()
            .iter()
            .filter(|segment| segment.end_seq() > from)
            .cloned()
            .collect();
        let mut bytes = 0;
        let mut oldest_received_at_ms = None;
        for segment in &segments {
            if segment.base_seq >= from {
                bytes += segment.record_bytes();
                continue;
            }
            // The segment holding `from`: count from its record on.
            match segment.header_of(from) {
                Some(view) => {
                    bytes += segment.map.frozen_end() - view.offset;
                    oldest_received_at_ms = Some(view.header.received_at_ms);
                }
                None => bytes += segment.record_bytes(),
            }
        }
        if oldest_received_at_ms.is_none() {
            oldest_received_at_ms = segments
                .first()
                .and_then(|segment| segment.header_of(from.max(segment.base_seq)))
                .map(|view| view.header.received_at_ms);
        }
        Lag {
            records: end - from,
            bytes,
            oldest_received_at_ms,
        }
    }

    /// Open (or create at the oldest stored record) the named cursor. Opening marks the
    /// cursor as claimed by this process (its destination is configured). Blocking when it
    /// creates the file.
    pub fn open_cursor(&self, name: &str) -> Result<Cursor, WalError> {
        self.open_cursor_from(name, 0)
    }

    /// Like [`Wal::open_cursor`], but a cursor that does not exist yet is created at
    /// `seq_if_new` (clamped to the stored records: oldest stored .. next to append). An
    /// existing cursor keeps its position.
    pub fn open_cursor_from(&self, name: &str, seq_if_new: u64) -> Result<Cursor, WalError> {
        let core = &self.inner.core;
        let mut registry = core.cursors.lock();
        let start = seq_if_new.clamp(core.first_seq(), core.committed_next());
        let shared = cursor::open_or_create(core, &mut registry, name, start)?;
        Ok(Cursor {
            wal: Arc::clone(&self.inner),
            shared,
        })
    }

    /// Names of every cursor persisted on disk, configured or not.
    pub fn cursor_names(&self) -> Vec<String> {
        self.inner
            .core
            .cursors
            .lock()
            .cursors
            .keys()
            .cloned()
            .collect()
    }

    /// Forget a cursor so it no longer pins segments (deletes its file). Unknown names are
    /// not an error. Handles still open for it fail to persist afterwards.
    pub fn release_cursor(&self, name: &str) -> Result<(), WalError> {
        let core = &self.inner.core;
        let mut registry = core.cursors.lock();
        cursor::release(core, &mut registry, name)
    }

    /// Free every segment that all persisted cursors are past. Blocking. Returns how many
    /// segments were freed.
    pub fn collect_garbage(&self) -> Result<u64, WalError> {
        gc::collect_garbage(&self.inner.core, gc::Unclaimed::Report)
    }

    /// Final sync; later appends fail with `Closed`. Readers can still read what is stored.
    pub async fn close(&self) -> Result<(), WalError> {
        let core = &self.inner.core;
        {
            let mut state = core.writer.lock();
            core.closed.store(true, Ordering::Release);
            state.shutdown = true;
        }
        core.sync_wakeup.notify_all();
        core.appended.notify_waiters();
        loop {
            let stopped = core.durable.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if core.sync_stopped.load(Ordering::Acquire) {
                break;
            }
            stopped.await;
        }
        match core.fatal() {
            Some(message) => Err(WalError::Fatal(message.to_owned())),
            None => Ok(()),
        }
    }

    /// Resolves once the WAL enters its fatal state (an fdatasync failed). `main` should then
    /// stop serving and exit non-zero: the state on disk must be re-read by recovery.
    pub async fn fatal_error(&self) -> WalError {
        let core = &self.inner.core;
        loop {
            let changed = core.durable.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(message) = core.fatal() {
                return WalError::Fatal(message.to_owned());
            }
            changed.await;
        }
    }

    /// The options this WAL was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.inner.core.options
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
