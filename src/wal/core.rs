//! Shared state of an open WAL and the append path (reserve, copy, publish, roll).
//!
//! Invariants kept here:
//! * Appends are serialised by the `writer` mutex; each one is written *and* published
//!   (frozen + `end_seq` + `committed_next`) before the mutex is released, with no `.await`
//!   in between. A dropped append future therefore either never started or left a whole,
//!   visible record — never half of one.
//! * `committed_next` (Release) is stored after the record's bytes are frozen; readers load
//!   it (Acquire) before parsing, and `appended.notify_waiters()` runs after the store, so a
//!   reader that registered interest before re-checking never misses a record.
//! * `durable_next` only advances after every file holding records below it (and the
//!   directory, after a roll) has been fdatasync'd; see `sync.rs`.
//! * On roll the next segment is in the segment list *before* the old one is marked sealed,
//!   so a reader that sees "sealed" always finds the successor.
//! * `bytes_on_disk` counts every segment and spare file; a new file is allocated only if it
//!   fits both the byte budget and the free-disk floor; otherwise the oldest segment kept by
//!   `--wal-retention` is evicted (never one a cursor needs) and, with none left, the append
//!   fails with [`WalError::Full`] at once.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crc32fast::Hasher;
use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::Notify;

use super::cursor::CursorRegistry;
use super::format::{
    align_up, record_footprint, RecordHeader, HEADER_PAGE_BYTES, RECORD_HEADER_BYTES,
};
use super::io::WalIo;
use super::mapping::MapWriter;
use super::segment::{spare_file_name, Segment, Spare};
use super::{AppendRequest, SyncMode, WalError, WalOptions};
use crate::metrics as names;

/// Zeros for the padding after a payload (records are 8-byte aligned).
const ZERO_PADDING: [u8; 8] = [0; 8];

/// Spares kept ready (recycled or preallocated) so rolls do not allocate.
pub(crate) const MAX_SPARES: usize = 2;

/// The segment currently receiving appends.
#[derive(Debug)]
pub(crate) struct Active {
    pub segment: Arc<Segment>,
    pub writer: MapWriter,
    /// Where the next record goes (== the segment's frozen end).
    pub offset: u64,
    /// Written since the sync thread last took a snapshot.
    pub dirty: bool,
}

/// Everything the append path and the sync thread share under the `writer` mutex.
#[derive(Debug)]
pub(crate) struct WriterState {
    pub active: Option<Active>,
    pub next_seq: u64,
    pub next_segment_id: u64,
    pub spares: Vec<Spare>,
    pub next_spare_number: u64,
    /// Segments with writes (records or a seal) not yet covered by a sync, besides `active`.
    pub unsynced: Vec<Arc<Segment>>,
    /// A file was created, renamed or removed in the segment directory since the last sync.
    pub dir_dirty: bool,
    /// Bytes of all segment and spare files.
    pub bytes_on_disk: u64,
    /// The sync thread should prepare a spare.
    pub want_spare: bool,
    pub shutdown: bool,
}

impl WriterState {
    pub(crate) fn has_unsynced_writes(&self) -> bool {
        self.dir_dirty
            || !self.unsynced.is_empty()
            || self.active.as_ref().is_some_and(|active| active.dirty)
    }
}

/// State shared by every handle of one open WAL.
pub(crate) struct Core {
    pub options: WalOptions,
    pub io: Arc<dyn WalIo>,
    pub wal_dir: PathBuf,
    pub cursor_dir: PathBuf,
    pub max_record_bytes: u64,
    /// Live segments, oldest first.
    pub segments: RwLock<VecDeque<Arc<Segment>>>,
    pub writer: Mutex<WriterState>,
    /// Wakes the sync thread (paired with `writer`).
    pub sync_wakeup: Condvar,
    /// Seq the next append will get; every smaller seq is committed (visible).
    pub committed_next: AtomicU64,
    /// Every seq below this is durable (fdatasync'd).
    pub durable_next: AtomicU64,
    /// Woken after records are committed (readers).
    pub appended: Notify,
    /// Woken after `durable_next` moves, on fatal errors and when the sync thread stops.
    pub durable: Notify,
    fatal: OnceLock<String>,
    pub closed: AtomicBool,
    pub sync_stopped: AtomicBool,
    pub corrupt_records: AtomicU64,
    pub cursors: Mutex<CursorRegistry>,
    /// Serialises garbage collection runs.
    pub gc_lock: Mutex<()>,
}

impl Core {
    pub(crate) fn new(
        options: WalOptions,
        io: Arc<dyn WalIo>,
        segments: VecDeque<Arc<Segment>>,
        state: WriterState,
        cursors: CursorRegistry,
        corrupt_records: u64,
    ) -> Core {
        let next_seq = state.next_seq;
        Core {
            max_record_bytes: options.max_record_bytes(),
            wal_dir: options.dir.join(super::layout::SEGMENT_DIR),
            cursor_dir: options.dir.join(super::layout::CURSOR_DIR),
            options,
            io,
            segments: RwLock::new(segments),
            writer: Mutex::new(state),
            sync_wakeup: Condvar::new(),
            committed_next: AtomicU64::new(next_seq),
            durable_next: AtomicU64::new(next_seq),
            appended: Notify::new(),
            durable: Notify::new(),
            fatal: OnceLock::new(),
            closed: AtomicBool::new(false),
            sync_stopped: AtomicBool::new(false),
            corrupt_records: AtomicU64::new(corrupt_records),
            cursors: Mutex::new(cursors),
            gc_lock: Mutex::new(()),
        }
    }

    /// The fatal error, once one happened (a failed fdatasync; never cleared).
    pub(crate) fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }

    /// Enter the fatal state: appends fail from now on, waiters wake up with the error.
    pub(crate) fn set_fatal(&self, message: String) {
        if self.fatal.set(message.clone()).is_ok() {
            tracing::error!(error = %message, "Write-ahead log entered its fatal state; no more appends are accepted and the process must restart.");
        }
        self.durable.notify_waiters();
        self.appended.notify_waiters();
    }

    pub(crate) fn committed_next(&self) -> u64 {
        self.committed_next.load(Ordering::Acquire)
    }

    /// Oldest seq still stored.
    pub(crate) fn first_seq(&self) -> u64 {
        let segments = self.segments.read();
        segments
            .front()
            .map_or_else(|| self.committed_next(), |segment| segment.base_seq)
    }

    /// The segment that holds (or will hold) `seq`: the last one starting at or before it,
    /// or the oldest one when `seq` is older than everything stored.
    pub(crate) fn segment_for(&self, seq: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let after = segments.partition_point(|segment| segment.base_seq <= seq);
        segments.get(after.saturating_sub(1)).cloned()
    }

    /// The segment following `id`, if any.
    pub(crate) fn segment_after(&self, id: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        segments.iter().find(|segment| segment.id > id).cloned()
    }

    /// Write one record and publish it. Synchronous and never awaits (see module doc).
    pub(crate) fn append_now(&self, request: &AppendRequest<'_>) -> Result<u64, WalError> {
        let payload_len: u64 = request.parts.iter().map(|part| part.len() as u64).sum();
        if payload_len > self.max_record_bytes {
            metrics::counter!(names::WAL_REJECTED_APPENDS_TOTAL, "reason" => "too_large")
                .increment(1);
            return Err(WalError::TooLarge {
                size: payload_len,
                max: self.max_record_bytes,
            });
        }
        // The payload checksum is the expensive part; compute it before taking the lock.
        let mut payload_crc = Hasher::new();
        for part in request.parts {
            payload_crc.update(part);
        }
        let footprint = record_footprint(payload_len);

        let mut state = self.lock_with_room(footprint)?;
        let seq = state.next_seq;
        let Some(active) = state.active.as_mut() else {
            return Err(WalError::Fatal(
                "no active segment after a successful roll".into(),
            ));
        };
        let header = RecordHeader {
            tag: request.tag,
            payload_len: payload_len as u32,
            event_count: request.event_count,
            seq,
            received_at_ms: request.received_at_ms,
        }
        .encode(active.segment.id, &payload_crc);
        let offset = active.offset;
        let next_offset = offset + footprint;
        let padding = next_offset - (offset + RECORD_HEADER_BYTES + payload_len);
        debug_assert_eq!(
            next_offset - offset,
            RECORD_HEADER_BYTES + align_up(payload_len)
        );
        let mut parts = Vec::with_capacity(request.parts.len() + 2);
        parts.push(IoSlice::new(&header));
        parts.extend(request.parts.iter().map(|part| IoSlice::new(part)));
        parts.push(IoSlice::new(&ZERO_PADDING[..padding as usize]));
        let written = active
            .writer
            .write(&*self.io, &active.segment.path, offset, &mut parts);
        if let Err(error) = written {
            // Part of the record may be in the page cache (unfrozen, unseen by readers); the
            // file is in a state we did not choose, as after a failed sync: stop appending.
            let message = format!(
                "writing a record to {}: {error}",
                active.segment.path.display()
            );
            drop(state);
            self.set_fatal(message.clone());
            return Err(WalError::Fatal(message));
        }
        active.writer.freeze(next_offset);
        active.segment.note_append(seq, offset, next_offset);
        active.offset = next_offset;
        active.dirty = true;
        state.next_seq = seq + 1;
        self.committed_next.store(seq + 1, Ordering::Release);
        if self.options.sync == SyncMode::Always {
            self.sync_wakeup.notify_one();
        }
        drop(state);
        self.appended.notify_waiters();
        metrics::counter!(names::WAL_APPEND_RECORDS_TOTAL).increment(1);
        metrics::counter!(names::WAL_APPEND_BYTES_TOTAL).increment(footprint);
        Ok(seq)
    }

    /// Lock the writer with room for a record of `footprint` bytes in the active segment,
    /// rolling to a new one if needed. When the budget or the free-disk floor refuses the new
    /// segment, the oldest segment `--wal-retention` keeps is evicted and the roll retried
    /// (retention yields to new records; `retention.rs`).
    fn lock_with_room(
        &self,
        footprint: u64,
    ) -> Result<parking_lot::MutexGuard<'_, WriterState>, WalError> {
        let mut evictions_left = 2;
        loop {
            let mut state = self.writer.lock();
            if let Some(message) = self.fatal() {
                metrics::counter!(names::WAL_REJECTED_APPENDS_TOTAL, "reason" => "fatal")
                    .increment(1);
                return Err(WalError::Fatal(message.to_owned()));
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(WalError::Closed);
            }
            let fits = state
                .active
                .as_ref()
                .is_some_and(|active| active.offset + footprint <= active.segment.map.len());
            if fits {
                return Ok(state);
            }
            match self.roll(&mut state) {
                Ok(()) => return Ok(state),
                Err(WalError::Full { .. }) if evictions_left > 0 => {
                    // Eviction takes the GC locks, which are taken before `writer`.
                    drop(state);
                    evictions_left -= 1;
                    if super::gc::evict_for_space(self)? {
                        continue;
                    }
                    evictions_left = 0;
                }
                Err(error) => {
                    if matches!(error, WalError::Full { .. }) {
                        metrics::counter!(names::WAL_REJECTED_APPENDS_TOTAL, "reason" => "full")
                            .increment(1);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Switch to a new segment: take a spare (or allocate one within budget), give it its
    /// identity, publish it, then seal the old active segment.
    fn roll(&self, state: &mut WriterState) -> Result<(), WalError> {
        let spare = match state.spares.pop() {
            Some(spare) => spare,
            None => self.allocate_spare(state)?,
        };
        let id = state.next_segment_id;
        let (segment, writer) =
            match spare.into_segment(self.io.as_ref(), &self.wal_dir, id, state.next_seq) {
                Ok(created) => created,
                Err((spare, source)) => {
                    state.spares.push(spare);
                    return Err(WalError::Io {
                        context: format!("renaming a spare to segment {id}"),
                        source,
                    });
                }
            };
        state.next_segment_id = id + 1;
        state.dir_dirty = true;
        if state.spares.is_empty() {
            state.want_spare = true;
        }
        {
            let mut segments = self.segments.write();
            segments.push_back(Arc::clone(&segment));
            metrics::gauge!(names::WAL_SEGMENTS).set(segments.len() as f64);
        }
        let new_active = Active {
            segment,
            writer,
            offset: HEADER_PAGE_BYTES,
            dirty: true,
        };
        if let Some(mut old) = state.active.replace(new_active) {
            old.segment.seal(&mut old.writer);
            state.unsynced.push(old.segment);
        }
        // Every mode syncs sealed segments promptly (see `sync.rs`).
        self.sync_wakeup.notify_one();
        Ok(())
    }

    /// Allocate a new spare file if the byte budget and the free-disk floor allow it.
    pub(crate) fn allocate_spare(&self, state: &mut WriterState) -> Result<Spare, WalError> {
        let segment_bytes = self.options.segment_bytes;
        let budget_left = self.options.max_bytes.saturating_sub(state.bytes_on_disk);
        if segment_bytes > budget_left {
            return Err(WalError::Full {
                needed: segment_bytes,
                available: budget_left,
            });
        }
        let free = self
            .io
            .available_bytes(&self.wal_dir)
            .map_err(|source| WalError::Io {
                context: format!("checking free space under {}", self.wal_dir.display()),
                source,
            })?;
        let needed = segment_bytes.saturating_add(self.options.min_free_bytes);
        if free < needed {
            return Err(WalError::Full {
                needed,
                available: free,
            });
        }
        let path = self.wal_dir.join(spare_file_name(state.next_spare_number));
        state.next_spare_number += 1;
        match Spare::allocate(self.io.as_ref(), path.clone(), segment_bytes) {
            Ok(spare) => {
                state.bytes_on_disk += segment_bytes;
                state.dir_dirty = true;
                metrics::gauge!(names::WAL_BYTES).set(state.bytes_on_disk as f64);
                Ok(spare)
            }
            Err(error)
                if error.raw_os_error() == Some(libc::ENOSPC)
                    || error.raw_os_error() == Some(libc::EDQUOT) =>
            {
                tracing::warn!(path = %path.display(), "No space left to preallocate a write-ahead log segment.");
                Err(WalError::Full {
                    needed,
                    available: free,
                })
            }
            Err(source) => Err(WalError::Io {
                context: format!("preallocating {}", path.display()),
                source,
            }),
        }
    }
}
