//! The cut log: positions where a destination's batch sequence was cut in a way a replay
//! could not work out from the data alone, so replays cut the same batches and keep their
//! stable ids.
//!
//! ## Why
//!
//! Batch ids are derived from a batch's first and last item (`batcher.rs`). Count and byte
//! cuts depend only on the events since the previous cut, so from any true batch boundary a
//! replay reproduces them. Two things are not in the data: *linger* cuts (time) and the
//! positions the sequence *started* at (a new cursor, a restart, a rewind). Both are recorded
//! here. A rewind to position `T` then restarts at the last recorded boundary `B ≤ T`, is
//! given every recorded boundary after `B` as forced cuts ([`super::batcher::Batcher::plan_cuts`]),
//! and acks without sending the batches that end at or before `T`: the batch holding `T` and
//! every later one are cut exactly as before, so a destination that overwrites by batch id
//! (file, object stores, BigQuery load jobs, Snowflake MERGE) holds each event once.
//!
//! A replay cuts *differently* (new ids, so such destinations may then hold events twice)
//! only when the batch limits, filters or schema of the destination changed since the
//! original delivery, when the boundary before `T` lies in records already freed (the first
//! replayed batch differs), or for positions recorded by a flagstream without this log (the
//! first batches up to the next recorded boundary differ).
//!
//! ## Format and invariants
//!
//! `<data-dir>/batch-cuts/<destination>.cuts`: 16-byte entries `{seq u64, event u32,
//! crc32 u32 over the 12 bytes before it}`, little-endian, appended in any order (a rewind
//! records a position behind earlier ones); readers sort and deduplicate.
//! * A linger cut's entry is written and fdatasynced in the same persist job as the batch's
//!   plan, before the batch is sent (`worker.rs`), so no sent batch depends on a missing entry.
//! * A torn last entry (crash mid-append) fails its checksum and is cut on open.
//! * Entries below the WAL's first stored seq are useless; they are dropped when the log is
//!   compacted (at start and every [`COMPACT_EVERY`] appends, when at least half are stale:
//!   written to a temporary file, fsynced, renamed over the log), so the log holds about one
//!   entry per linger interval of what the WAL stores.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::wal::Position;

const ENTRY_BYTES: usize = 16;
/// Appended entries between two compaction attempts.
pub const COMPACT_EVERY: usize = 4096;

/// One destination's cut log.
#[derive(Debug)]
pub struct CutLog {
    path: PathBuf,
    file: Mutex<File>,
    appended_since_compaction: AtomicUsize,
}

impl CutLog {
    /// Open (or create) `<dir>/<destination>.cuts`, cutting a torn last entry.
    pub fn open(dir: &Path, destination: &str) -> io::Result<CutLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{destination}.cuts"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let whole = len - len % ENTRY_BYTES as u64;
        if whole != len {
            file.set_len(whole)?;
        }
        Ok(CutLog {
            path,
            file: Mutex::new(file),
            appended_since_compaction: AtomicUsize::new(0),
        })
    }

    /// Every valid recorded position, sorted, without duplicates.
    pub fn read(&self) -> io::Result<Vec<Position>> {
        let mut bytes = Vec::new();
        File::open(&self.path)?.read_to_end(&mut bytes)?;
        let mut positions: Vec<Position> =
            bytes.chunks_exact(ENTRY_BYTES).filter_map(decode).collect();
        positions.sort_unstable();
        positions.dedup();
        Ok(positions)
    }

    /// Append `positions` and fdatasync (nothing to do when empty).
    pub fn append_durably(&self, positions: &[Position]) -> io::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = positions
            .iter()
            .flat_map(|position| encode(*position))
            .collect();
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (&*file).write_all(&bytes)?;
        file.sync_data()?;
        self.appended_since_compaction
            .fetch_add(positions.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Compact (see [`CutLog::compact`]) once [`COMPACT_EVERY`] entries were appended since
    /// the last time, so a long-running process does not grow the log without bound.
    pub fn maybe_compact(&self, first_seq: u64) -> io::Result<()> {
        if self.appended_since_compaction.load(Ordering::Relaxed) < COMPACT_EVERY {
            return Ok(());
        }
        self.compact(first_seq)
    }

    /// Drop entries below `first_seq` when they are at least half the log (so compaction
    /// costs are amortised over appends): write the rest to a temporary file, fsync, rename.
    pub fn compact(&self, first_seq: u64) -> io::Result<()> {
        // Held throughout, so no append lands between reading and replacing the file.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.appended_since_compaction.store(0, Ordering::Relaxed);
        let positions = self.read()?;
        let keep: Vec<Position> = positions
            .iter()
            .copied()
            .filter(|position| position.seq >= first_seq)
            .collect();
        if (positions.len() - keep.len()) * 2 < positions.len().max(1) {
            return Ok(());
        }
        let temporary = self.path.with_extension("cuts.tmp");
        let mut rewritten = File::create(&temporary)?;
        let bytes: Vec<u8> = keep.iter().flat_map(|position| encode(*position)).collect();
        rewritten.write_all(&bytes)?;
        rewritten.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        *file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        Ok(())
    }
}

/// Open a destination's cut log as its worker starts at `acked`: drop entries below
/// `first_seq` when worthwhile, record `acked` (a start is a boundary), and return the
/// recorded boundaries after `acked` (non-empty when a replay was interrupted by a restart),
/// for [`super::batcher::Batcher::plan_cuts`].
pub fn open_for_start(
    dir: &Path,
    destination: &str,
    acked: Position,
    first_seq: u64,
) -> io::Result<(CutLog, Vec<Position>)> {
    let log = CutLog::open(dir, destination)?;
    log.compact(first_seq)?;
    let ahead: Vec<Position> = log
        .read()?
        .into_iter()
        .filter(|boundary| *boundary > acked)
        .collect();
    log.append_durably(&[acked])?;
    Ok((log, ahead))
}

/// Where a replay that must include `target` starts, given the recorded boundaries (sorted)
/// and the first stored seq: the last boundary at or before `target` that is still stored,
/// or `target` itself when there is none (see the module doc for what that costs).
pub fn replay_start(boundaries: &[Position], target: Position, first_seq: u64) -> Position {
    let at_or_before = boundaries.partition_point(|boundary| *boundary <= target);
    boundaries[..at_or_before]
        .last()
        .copied()
        .filter(|boundary| boundary.seq >= first_seq)
        .unwrap_or(target)
}

fn encode(position: Position) -> [u8; ENTRY_BYTES] {
    let mut entry = [0u8; ENTRY_BYTES];
    entry[0..8].copy_from_slice(&position.seq.to_le_bytes());
    entry[8..12].copy_from_slice(&position.event.to_le_bytes());
    let crc = crc32fast::hash(&entry[0..12]);
    entry[12..16].copy_from_slice(&crc.to_le_bytes());
    entry
}

fn decode(entry: &[u8]) -> Option<Position> {
    let word = |range: std::ops::Range<usize>| entry.get(range);
    let seq = u64::from_le_bytes(word(0..8)?.try_into().ok()?);
    let event = u32::from_le_bytes(word(8..12)?.try_into().ok()?);
    let crc = u32::from_le_bytes(word(12..16)?.try_into().ok()?);
    (crc == crc32fast::hash(&entry[0..12])).then_some(Position { seq, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, event: u32) -> Position {
        Position { seq, event }
    }

    #[test]
    fn entries_round_trip_sorted_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = CutLog::open(dir.path(), "file").unwrap();
        log.append_durably(&[at(9, 0), at(3, 2)]).unwrap();
        log.append_durably(&[at(3, 2), at(5, 1)]).unwrap();
        assert_eq!(log.read().unwrap(), vec![at(3, 2), at(5, 1), at(9, 0)]);
        drop(log);
        // A crash mid-append: half an entry, and a flipped byte in another.
        let path = dir.path().join("file.cuts");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ENTRY_BYTES + 1] ^= 0xFF;
        bytes.extend_from_slice(&encode(at(11, 0))[..7]);
        std::fs::write(&path, &bytes).unwrap();
        let log = CutLog::open(dir.path(), "file").unwrap();
        assert_eq!(log.read().unwrap(), vec![at(3, 2), at(5, 1), at(9, 0)]);
        log.append_durably(&[at(12, 0)]).unwrap();
        assert_eq!(log.read().unwrap().last(), Some(&at(12, 0)));
    }

    #[test]
    fn compaction_drops_what_the_wal_no_longer_stores() {
        let dir = tempfile::tempdir().unwrap();
        let log = CutLog::open(dir.path(), "s3").unwrap();
        log.append_durably(&[at(1, 0), at(2, 0), at(3, 0), at(8, 0)])
            .unwrap();
        log.compact(2).unwrap();
        assert_eq!(
            log.read().unwrap().len(),
            4,
            "a quarter stale: not worth it yet"
        );
        log.compact(4).unwrap();
        assert_eq!(log.read().unwrap(), vec![at(8, 0)]);
        log.append_durably(&[at(9, 0)]).unwrap();
        assert_eq!(log.read().unwrap(), vec![at(8, 0), at(9, 0)]);
        // A long-running worker compacts every COMPACT_EVERY appends.
        let many: Vec<Position> = (10..10 + COMPACT_EVERY as u64)
            .map(|seq| at(seq, 0))
            .collect();
        log.maybe_compact(1_000_000).unwrap();
        assert_eq!(log.read().unwrap().len(), 2, "not due yet");
        log.append_durably(&many).unwrap();
        log.maybe_compact(1_000_000).unwrap();
        assert_eq!(log.read().unwrap(), Vec::new());
    }

    #[test]
    fn a_replay_starts_at_the_last_stored_boundary_before_the_target() {
        let boundaries = [at(2, 0), at(5, 3), at(9, 0)];
        assert_eq!(replay_start(&boundaries, at(7, 0), 1), at(5, 3));
        assert_eq!(replay_start(&boundaries, at(5, 3), 1), at(5, 3));
        assert_eq!(replay_start(&boundaries, at(1, 0), 1), at(1, 0));
        // The boundary's records are gone: start at the target itself.
        assert_eq!(replay_start(&boundaries, at(7, 0), 6), at(7, 0));
    }
}
