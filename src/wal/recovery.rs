//! Opening a WAL directory: lock it, rebuild the in-memory state from the files, and repair
//! whatever a crash left behind. Streaming and O(1) memory in the size of the log (one
//! segment's header page at a time; the tail is scanned through its mapping).
//!
//! Steps:
//! 1. Take an exclusive `flock` on `LOCK` (a second process gets [`WalError::Locked`]),
//!    rename a 0.1 `wal/` segment directory to `segments/` (`layout.rs`), create `segments/`
//!    and `cursors/` if needed.
//! 2. List `segments/`: `<id:020>.seg` segments in id order, `spare-<n>.seg` spares (at
//!    most `MAX_SPARES` kept, the rest deleted: spares pin disk for nothing).
//! 3. For each segment: read its header page. A missing/invalid header on the *newest*
//!    file is a roll that crashed before its header was durable — nothing in it was ever
//!    acknowledged — so it becomes a spare again. On an older file it is corruption: the file
//!    is renamed `*.corrupt` (never deleted) and its loss logged at ERROR.
//!    A file shorter than its header says was truncated behind our back; it is grown back
//!    (fallocate) so it can be mapped without SIGBUS, and the scan finds where records end.
//! 4. A segment with a valid seal block is trusted as is (O(1)); record checksums are checked
//!    lazily by readers. An unsealed segment (the tail, or one whose seal was not yet
//!    durable) is fdatasync'd first — a killed process leaves its writes in the page cache —
//!    then scanned by `format::scan_tail`, which tells a torn tail (cut; a record whose
//!    header survived gets its seq retired) from damage followed by valid records (skipped,
//!    the valid records kept; `Strict` refuses to open). See "Recovery of the unsealed
//!    tail" in the `wal` module doc. Unsealed older segments, and a newest one with damage,
//!    get sealed at their end.
//! 5. Seq continuity across segments is checked: a gap (lost files) is logged and counted,
//!    an overlap refuses to open (two files claim the same seqs; an operator must decide).
//! 6. Cursors are loaded (`cursor.rs`), then interrupted garbage collection is finished by
//!    running a normal GC pass (done by the caller once the `Core` exists).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::core::{Active, WriterState, MAX_SPARES};
use super::format::{
    scan_tail_noting, DamageKind, DamagedSpan, Seal, SegmentHeader, TailScan, Window,
    HEADER_PAGE_BYTES, RECORD_HEADER_BYTES,
};
use super::io::WalIo;
use super::layout::{CURSOR_DIR, LOCK_FILE, SEGMENT_DIR};
use super::mapping::{MapWriter, SegmentMap};
use super::residency::RELEASE_STEP_BYTES;
use super::segment::{
    parse_segment_file_name, parse_spare_file_name, spare_file_name, Segment, Spare,
};
use super::{RecoveryMode, WalError, WalOptions};
use crate::metrics as names;

/// Largest segment size accepted from a header (guards against absurd values in garbage).
const MAX_SEGMENT_BYTES: u64 = 1 << 40;

/// What recovery rebuilt.
pub(crate) struct Recovered {
    pub segments: VecDeque<Arc<Segment>>,
    pub state: WriterState,
    pub corrupt_records: u64,
    /// Highest seq seen in files set aside as corrupt: seqs up to it must never be reused.
    pub highest_quarantined_seq: Option<u64>,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let context = context.into();
    move |source| WalError::Io { context, source }
}

/// Take the directory lock. The returned file must stay open for as long as the WAL is.
pub(crate) fn lock_directory(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(format!("opening lock file {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(WalError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(WalError::Io {
                context: format!("locking {}", path.display()),
                source,
            })
        }
    }
    // The pid is only a hint for operators; failing to write it is harmless.
    let pid = format!("{}\n", std::process::id());
    let _ = file
        .set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
    Ok(file)
}

/// Create the directory layout (and make the new entries durable).
pub(crate) fn prepare_directories(io: &dyn WalIo, dir: &Path) -> Result<(), WalError> {
    for sub in [SEGMENT_DIR, CURSOR_DIR] {
        let path = dir.join(sub);
        if !path.is_dir() {
            std::fs::create_dir_all(&path)
                .map_err(io_error(format!("creating {}", path.display())))?;
            io.sync_dir(dir)
                .map_err(io_error(format!("fsync of directory {}", dir.display())))?;
        }
    }
    Ok(())
}

/// Rebuild segments and writer state from `wal_dir`.
pub(crate) fn recover_segments(
    options: &WalOptions,
    io: &dyn WalIo,
    wal_dir: &Path,
) -> Result<Recovered, WalError> {
    let mut segment_paths = BTreeMap::new();
    let mut spare_paths = BTreeMap::new();
    let mut set_aside = BTreeMap::new();
    let entries =
        std::fs::read_dir(wal_dir).map_err(io_error(format!("listing {}", wal_dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("listing {}", wal_dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = parse_segment_file_name(name) {
            segment_paths.insert(id, entry.path());
        } else if let Some(number) = parse_spare_file_name(name) {
            spare_paths.insert(number, entry.path());
        } else if let Some(id) = name
            .strip_suffix(".corrupt")
            .and_then(parse_segment_file_name)
        {
            set_aside.insert(id, entry.path());
        }
    }

    let mut recovery = Recovery {
        options,
        io,
        wal_dir,
        segments: VecDeque::new(),
        spares: Vec::new(),
        active: None,
        bytes_on_disk: 0,
        corrupt_records: 0,
        next_spare_number: spare_paths
            .keys()
            .next_back()
            .map_or(0, |number| number + 1),
        dir_dirty: false,
        highest_quarantined_seq: None,
    };
    for (_, path) in spare_paths {
        recovery.adopt_spare(path)?;
    }
    let newest_id = segment_paths.keys().next_back().copied();
    // Files set aside by an earlier recovery still hold ids and seqs that must never be
    // handed out again (the rename does not carry the floor across restarts by itself).
    for (id, path) in &set_aside {
        if let Some(seq) = Recovery::open_rw(path)
            .ok()
            .and_then(|file| highest_own_seq(&file, *id))
        {
            recovery.highest_quarantined_seq = recovery.highest_quarantined_seq.max(Some(seq));
        }
    }
    let highest_id = newest_id.max(set_aside.keys().next_back().copied());
    let next_segment_id = highest_id.map_or(1, |id| id + 1);
    for (id, path) in segment_paths {
        recovery.recover_segment(id, path, Some(id) == newest_id)?;
    }
    if recovery.dir_dirty {
        io.sync_dir(wal_dir).map_err(io_error(format!(
            "fsync of directory {}",
            wal_dir.display()
        )))?;
    }
    let next_seq = recovery
        .segments
        .back()
        .map_or(1, |segment| segment.end_seq());
    let want_spare = recovery.spares.is_empty();
    Ok(Recovered {
        state: WriterState {
            active: recovery.active,
            next_seq,
            next_segment_id,
            spares: recovery.spares,
            next_spare_number: recovery.next_spare_number,
            unsynced: Vec::new(),
            dir_dirty: false,
            bytes_on_disk: recovery.bytes_on_disk,
            want_spare,
            shutdown: false,
        },
        segments: recovery.segments,
        corrupt_records: recovery.corrupt_records,
        highest_quarantined_seq: recovery.highest_quarantined_seq,
    })
}

struct Recovery<'a> {
    options: &'a WalOptions,
    io: &'a dyn WalIo,
    wal_dir: &'a Path,
    segments: VecDeque<Arc<Segment>>,
    spares: Vec<Spare>,
    active: Option<Active>,
    bytes_on_disk: u64,
    corrupt_records: u64,
    next_spare_number: u64,
    dir_dirty: bool,
    highest_quarantined_seq: Option<u64>,
}

impl Recovery<'_> {
    fn open_rw(path: &Path) -> Result<File, WalError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(format!("opening {}", path.display())))
    }

    /// Keep a spare left by a previous run if it has the configured size and there is room
    /// for it (`MAX_SPARES`, as while running), else delete it.
    fn adopt_spare(&mut self, path: PathBuf) -> Result<(), WalError> {
        let file = Self::open_rw(&path)?;
        let len = file
            .metadata()
            .map_err(io_error(format!("reading {}", path.display())))?
            .len();
        if len != self.options.segment_bytes || self.spares.len() >= MAX_SPARES {
            self.io
                .remove_file(&path)
                .map_err(io_error(format!("deleting {}", path.display())))?;
            self.dir_dirty = true;
            return Ok(());
        }
        // A recycled segment's old records: zeroed so appends never read a block back from
        // disk (`page_cache.rs`); a spare that cannot be cleared is not worth keeping.
        if let Err(error) = self.io.zero_range(&file, &path, HEADER_PAGE_BYTES, len) {
            tracing::warn!(file = %path.display(), %error, "Could not clear a spare segment; deleting it.");
            self.io
                .remove_file(&path)
                .map_err(io_error(format!("deleting {}", path.display())))?;
            self.dir_dirty = true;
            return Ok(());
        }
        let (_, writer) =
            SegmentMap::map(&file, len).map_err(io_error(format!("mapping {}", path.display())))?;
        self.bytes_on_disk += len;
        self.spares.push(Spare { path, file, writer });
        Ok(())
    }

    /// Turn a segment file without a valid identity back into a spare (or delete it).
    fn demote_to_spare(&mut self, path: PathBuf, file: File) -> Result<(), WalError> {
        let len = file
            .metadata()
            .map_err(io_error(format!("reading {}", path.display())))?
            .len();
        self.dir_dirty = true;
        if len != self.options.segment_bytes {
            return self
                .io
                .remove_file(&path)
                .map_err(io_error(format!("deleting {}", path.display())));
        }
        let spare_path = self.wal_dir.join(spare_file_name(self.next_spare_number));
        self.next_spare_number += 1;
        self.io
            .rename(&path, &spare_path)
            .map_err(io_error(format!("renaming {}", path.display())))?;
        self.adopt_spare(spare_path)
    }

    fn quarantine(&mut self, path: &Path, id: u64, file: &File, why: &str) -> Result<(), WalError> {
        if let Some(seq) = highest_own_seq(file, id) {
            self.highest_quarantined_seq = self.highest_quarantined_seq.max(Some(seq));
        }
        let mut target = path.as_os_str().to_owned();
        target.push(".corrupt");
        tracing::error!(file = %path.display(), reason = why,
            "Unreadable write-ahead log segment moved aside; the records it held are lost.");
        self.io
            .rename(path, Path::new(&target))
            .map_err(io_error(format!("renaming {}", path.display())))?;
        self.dir_dirty = true;
        Ok(())
    }

    fn recover_segment(&mut self, id: u64, path: PathBuf, newest: bool) -> Result<(), WalError> {
        let file = Self::open_rw(&path)?;
        let file_len = file
            .metadata()
            .map_err(io_error(format!("reading {}", path.display())))?
            .len();
        let mut page = vec![0u8; HEADER_PAGE_BYTES as usize];
        read_prefix(&file, &mut page).map_err(io_error(format!("reading {}", path.display())))?;
        let header = SegmentHeader::decode(&page).ok().filter(|header| {
            header.segment_id == id
                && header.segment_bytes >= 2 * HEADER_PAGE_BYTES
                && header.segment_bytes.is_multiple_of(HEADER_PAGE_BYTES)
                && header.segment_bytes <= MAX_SEGMENT_BYTES
        });
        let mut gap = None;
        let Some(header) = header else {
            if newest && !holds_own_records(&file, file_len, id) {
                tracing::warn!(file = %path.display(),
                    "Newest segment has no valid header (a roll was interrupted); reusing it as a spare.");
                return self.demote_to_spare(path, file);
            }
            // Records that validate under this file's id mean real data behind a damaged
            // header: keep the file for the operator rather than reuse it.
            return self.quarantine(&path, id, &file, "invalid segment header");
        };
        if let Some(previous) = self.segments.back() {
            let expected = previous.end_seq();
            if header.base_seq < expected {
                return Err(WalError::Corrupt(format!(
                    "segment {} starts at seq {} but segment {} already holds seqs up to {}; \
                     two files claim the same records — move one of them out of {}",
                    id,
                    header.base_seq,
                    previous.id,
                    expected - 1,
                    self.wal_dir.display()
                )));
            }
            if header.base_seq > expected {
                let missing = header.base_seq - expected;
                self.corrupt_records += missing;
                gap = Some((expected, header.base_seq));
                tracing::error!(
                    first_seq = expected,
                    last_seq = header.base_seq - 1,
                    count = missing,
                    "Write-ahead log records are missing between segments (segment files lost?)."
                );
            }
        }
        let len = header.segment_bytes;
        if file_len < len {
            tracing::warn!(file = %path.display(), file_len, expected_len = len,
                "Segment file was truncated; restoring its size. Records past the cut are lost.");
            self.io.extend(&file, &path, len).map_err(io_error(format!(
                "restoring the size of {}",
                path.display()
            )))?;
        }
        let (map, mut writer) =
            SegmentMap::map(&file, len).map_err(io_error(format!("mapping {}", path.display())))?;
        let segment = Arc::new(Segment::new(id, header.base_seq, path.clone(), file, map));
        // Written by an earlier process: its pages may be anywhere but the page cache.
        segment.mark_uncached();
        if let Some((from, to)) = gap {
            // Counted here; readers crossing the gap must not count it again.
            segment.note_damaged(from, to);
        }
        self.bytes_on_disk += file_len.max(len);

        let seal = Seal::decode(&page).filter(|seal| {
            seal.segment_id == id
                && seal.end_offset >= HEADER_PAGE_BYTES
                && seal.end_offset <= len
                && seal
                    .record_count
                    .checked_mul(RECORD_HEADER_BYTES)
                    .is_some_and(|least| least <= seal.end_offset - HEADER_PAGE_BYTES)
                && header.base_seq.checked_add(seal.record_count).is_some()
        });
        if let Some(seal) = seal.filter(|_| file_len >= len) {
            writer.freeze(seal.end_offset);
            segment.set_recovered(
                header.base_seq + seal.record_count,
                true,
                seal.sealed_unix_ms,
            );
        } else {
            self.io.sync_data(&segment.file, &path).map_err(|error| {
                WalError::Fatal(format!(
                    "fdatasync of {} failed during recovery: {error}",
                    path.display()
                ))
            })?;
            let tail = self.scan_unsealed(&segment, &writer)?;
            writer.freeze(tail.end_offset);
            // The scan read the segment to its end: drop those pages, or after a restart the
            // whole segment stays resident (measured: RssFile 110 MiB while a restarted
            // server drained its backlog).
            writer.release_all();
            segment.set_recovered(tail.next_seq, false, 0);
            if newest && tail.damage.is_empty() {
                self.active = Some(Active {
                    segment: Arc::clone(&segment),
                    writer,
                    offset: tail.end_offset,
                    dirty: false,
                });
            } else {
                // Older segments are sealed as a roll would have. A damaged newest segment is
                // sealed too: readers then skip its damage as in any sealed segment, later
                // opens trust the seal instead of finding the same damage again (strict mode
                // included), and new records start in a fresh segment after every seq used.
                segment.seal(&mut writer);
                self.io.sync_data(&segment.file, &path).map_err(|error| {
                    WalError::Fatal(format!(
                        "fdatasync of {} failed during recovery: {error}",
                        path.display()
                    ))
                })?;
            }
        }
        self.segments.push_back(segment);
        Ok(())
    }

    /// Scan an unsealed segment (`format::scan_tail`): keep every valid record, count and log
    /// damaged stretches, cut a torn tail. Refuses in strict mode when valid records follow
    /// an invalid one.
    fn scan_unsealed(
        &mut self,
        segment: &Segment,
        writer: &MapWriter,
    ) -> Result<TailScan, WalError> {
        let len = segment.map.len();
        let window = Window::new(writer.read(HEADER_PAGE_BYTES..len), HEADER_PAGE_BYTES);
        // Pages behind the scan are dropped as it goes (a full segment at once was the peak
        // of a restart's RSS); a resynchronisation after damage that looks back faults them in
        // again, unchanged.
        let released_to = std::cell::Cell::new(HEADER_PAGE_BYTES);
        let release_to = |offset: u64| {
            if offset >= released_to.get() + RELEASE_STEP_BYTES {
                writer.release_read(released_to.get()..offset);
                released_to.set(offset);
            }
        };
        let tail = scan_tail_noting(
            &window,
            segment.id,
            HEADER_PAGE_BYTES,
            segment.base_seq,
            |view| {
                segment.note_append(view.header.seq, view.offset, view.next_offset);
                release_to(view.offset);
            },
            &mut |offset| release_to(offset),
        );
        if tail.has_valid_records_after_damage() && self.options.recovery == RecoveryMode::Strict {
            return Err(WalError::Corrupt(format!(
                "segment {}: {}; refusing to open in strict recovery mode",
                segment.id,
                describe_damage(&tail.damage)
            )));
        }
        for span in &tail.damage {
            let lost = segment.note_damaged(span.first_seq, span.end_seq);
            self.corrupt_records += lost;
            metrics::counter!(names::WAL_CORRUPT_RECORDS_TOTAL).increment(lost);
            let what = match span.kind {
                DamageKind::Record => "damaged record (header intact), valid records follow",
                DamageKind::Span => "damaged header whose length cannot be trusted, resynchronised on the next valid record",
                DamageKind::TornRecord => "torn or damaged last record; its seq is retired",
            };
            tracing::error!(segment = segment.id, offset = span.offset, first_lost_seq = span.first_seq,
                last_lost_seq = span.end_seq - 1, lost, reason = %span.error,
                "Write-ahead log recovery skipped a {what}; every other record is kept.");
        }
        if let Some(reason) = tail.cut_by {
            let clean = window
                .slice(
                    tail.end_offset,
                    (tail.end_offset + RECORD_HEADER_BYTES).min(len),
                )
                .iter()
                .all(|byte| *byte == 0);
            if !clean {
                tracing::info!(segment = segment.id, offset = tail.end_offset, next_seq = tail.next_seq,
                    %reason, "Cut a torn or stale tail off the write-ahead log.");
            }
        }
        Ok(tail)
    }
}

/// One line naming every damaged stretch, for errors.
fn describe_damage(damage: &[DamagedSpan]) -> String {
    damage
        .iter()
        .map(|span| {
            format!(
                "the record at offset {} (seq {}) is invalid ({}); seqs {}..={} are unreadable",
                span.offset,
                span.first_seq,
                span.error,
                span.first_seq,
                span.end_seq - 1
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a segment file holds anything of segment `id`: a valid seal naming it, or any
/// record checksummed for it (stale records of a recycled file are bound to another id and
/// do not count). A full scan, only done for a newest file whose header is unreadable.
fn holds_own_records(file: &File, file_len: u64, id: u64) -> bool {
    own_seal(file, id).is_some()
        || map_whole(file, file_len).is_some_and(|writer| {
            let window = Window::new(writer.read(HEADER_PAGE_BYTES..file_len), HEADER_PAGE_BYTES);
            window.find_valid_from(HEADER_PAGE_BYTES, id, 0).is_some()
        })
}

/// The seal block of `file` if it is valid and names segment `id`.
fn own_seal(file: &File, id: u64) -> Option<Seal> {
    let mut page = vec![0u8; HEADER_PAGE_BYTES as usize];
    read_prefix(file, &mut page).ok()?;
    Seal::decode(&page).filter(|seal| seal.segment_id == id && seal.record_count > 0)
}

/// The highest seq segment `id` used, from its seal and every record checksummed for it in
/// `file` (a full scan; only used on files set aside, so their seqs are never handed out
/// again).
fn highest_own_seq(file: &File, id: u64) -> Option<u64> {
    let from_seal = own_seal(file, id).map(|seal| seal.last_seq);
    let file_len = file.metadata().ok()?.len();
    let Some(writer) = map_whole(file, file_len) else {
        return from_seal;
    };
    let window = Window::new(writer.read(HEADER_PAGE_BYTES..file_len), HEADER_PAGE_BYTES);
    let mut highest = from_seal;
    let mut from = HEADER_PAGE_BYTES;
    while let Some(view) = window.find_valid_from(from, id, 0) {
        highest = highest.max(Some(view.header.seq));
        from = view.next_offset;
    }
    highest
}

fn map_whole(file: &File, file_len: u64) -> Option<MapWriter> {
    if file_len < 2 * HEADER_PAGE_BYTES || !file_len.is_multiple_of(HEADER_PAGE_BYTES) {
        return None;
    }
    SegmentMap::map(file, file_len)
        .ok()
        .map(|(_, writer)| writer)
}

/// Read as much of the start of `file` as fits in `buffer` (short files leave zeros).
fn read_prefix(file: &File, buffer: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read_at(&mut buffer[filled..], filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(())
}
