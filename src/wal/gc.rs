//! Garbage collection: free segments every *persisted* cursor is past.
//!
//! Rules (invariant 6 of the module doc):
//! * A segment is freeable iff it is sealed, it is not the newest segment (the newest carries
//!   the seq counter across restarts), and all its records are below the lowest persisted
//!   acked seq over **every** cursor on disk — configured or not. No cursor at all frees
//!   nothing: data nobody has read yet is never thrown away. `--wal-retention` keeps the
//!   newest freeable segments for replays, within the budget (`retention.rs`).
//! * Only persisted positions count (they are on disk before GC reads them), so a crash can
//!   never leave a cursor pointing into a freed segment.
//! * Order: drop the segment from the in-memory list, then recycle (rename to a spare) or
//!   unlink it, then fsync the directory. A crash after any step is repaired by recovery,
//!   which frees the same segments again (or finds them already gone / turned into spares).
//! * Recycling needs the only reference to the mapping (no reader or payload holds it);
//!   otherwise the file is unlinked and the inode lives until the last payload is dropped.
//! * A cursor no process has opened that holds the log back is reported loudly: a WARN line
//!   once per process and the `flagstream_wal_orphan_cursors{cursor}` gauge.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::core::{Core, MAX_SPARES};
use super::format::HEADER_PAGE_BYTES;
use super::mapping::SegmentMap;
use super::retention::{self, Passed};
use super::segment::{now_unix_ms, spare_file_name, Segment, Spare};
use super::WalError;
use crate::metrics as names;

/// Whether a GC pass should report cursors nobody opened (not at startup: no destination
/// has had a chance to open its cursor yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unclaimed {
    Report,
    Ignore,
}

/// Free every segment that all persisted cursors are past and `--wal-retention` does not
/// keep (`retention.rs`). Returns how many were freed.
pub(crate) fn collect_garbage(core: &Core, unclaimed: Unclaimed) -> Result<u64, WalError> {
    let _one_at_a_time = core.gc_lock.lock();
    // Read before the segment lock: the append path takes `writer` then `segments`.
    let (bytes_on_disk, spare_bytes) = {
        let state = core.writer.lock();
        let spares: u64 = state.spares.iter().map(|spare| spare.len()).sum();
        (state.bytes_on_disk, spares)
    };
    let victims = {
        // Holding the registry while choosing victims keeps `open_cursor` from creating a
        // cursor at a seq we are about to free.
        let registry = core.cursors.lock();
        let Some(min_acked) = registry.min_persisted_seq() else {
            return Ok(0);
        };
        if unclaimed == Unclaimed::Report {
            report_unclaimed_cursors(core, &registry, min_acked);
        }
        let mut segments = core.segments.write();
        let passed: Vec<Passed> = segments
            .iter()
            .take(passed_count(&segments, min_acked))
            .map(|segment| Passed {
                bytes: segment.map.len(),
                sealed_ms: segment.sealed_unix_ms(),
            })
            .collect();
        let passed_bytes: u64 = passed.iter().map(|segment| segment.bytes).sum();
        // Retained bytes may use the budget minus what cursors still need minus one segment
        // of headroom (a spare counts), so the next roll need not evict on the append path.
        let needed = bytes_on_disk.saturating_sub(passed_bytes + spare_bytes);
        let headroom = spare_bytes.max(core.options.segment_bytes);
        let room = core.options.max_bytes.saturating_sub(needed + headroom);
        let plan = retention::plan(&passed, core.options.retention, now_unix_ms(), room);
        metrics::gauge!(names::WAL_RETAINED_BYTES).set(plan.retained_bytes as f64);
        if plan.evicted > 0 {
            metrics::counter!(names::WAL_RETENTION_EVICTED_BYTES_TOTAL)
                .increment(plan.evicted_bytes);
            tracing::info!(
                segments = plan.evicted,
                bytes = plan.evicted_bytes,
                "Evicted retained write-ahead log segments to stay within --wal-max-bytes."
            );
        }
        let victims: Vec<_> = segments.drain(..plan.free).collect();
        metrics::gauge!(names::WAL_SEGMENTS).set(segments.len() as f64);
        victims
    };
    free_all(core, victims)
}

/// How many of the oldest segments every persisted cursor has passed: sealed, not the newest,
/// all records below `min_acked`.
fn passed_count(segments: &VecDeque<Arc<Segment>>, min_acked: u64) -> usize {
    let newest = segments.len().saturating_sub(1);
    segments
        .iter()
        .take(newest)
        .take_while(|segment| segment.is_sealed() && segment.end_seq() <= min_acked)
        .count()
}

/// Make room for an append that found the budget or the free-disk floor exhausted: free the
/// oldest segment retention keeps (never one a cursor needs). Returns whether one was freed.
pub(crate) fn evict_for_space(core: &Core) -> Result<bool, WalError> {
    if core.options.retention.is_off() {
        return Ok(false);
    }
    let _one_at_a_time = core.gc_lock.lock();
    let victim = {
        let registry = core.cursors.lock();
        let Some(min_acked) = registry.min_persisted_seq() else {
            return Ok(false);
        };
        let mut segments = core.segments.write();
        if passed_count(&segments, min_acked) == 0 {
            return Ok(false);
        }
        let victim = segments.pop_front();
        metrics::gauge!(names::WAL_SEGMENTS).set(segments.len() as f64);
        let retained: u64 = segments
            .iter()
            .take(passed_count(&segments, min_acked))
            .map(|segment| segment.map.len())
            .sum();
        metrics::gauge!(names::WAL_RETAINED_BYTES).set(retained as f64);
        victim
    };
    let Some(victim) = victim else {
        return Ok(false);
    };
    metrics::counter!(names::WAL_RETENTION_EVICTED_BYTES_TOTAL).increment(victim.map.len());
    tracing::info!(
        segment = victim.id,
        bytes = victim.map.len(),
        "Evicted a retained write-ahead log segment to make room for new records."
    );
    free_all(core, vec![victim]).map(|freed| freed > 0)
}

/// Free `victims` (already out of the segment list), then fsync the directory.
fn free_all(core: &Core, victims: Vec<Arc<Segment>>) -> Result<u64, WalError> {
    if victims.is_empty() {
        return Ok(0);
    }
    let freed = victims.len() as u64;
    let mut first_error = None;
    for victim in victims {
        if let Err(error) = free_segment(core, victim) {
            first_error.get_or_insert(error);
        }
    }
    core.io
        .sync_dir(&core.wal_dir)
        .map_err(|source| WalError::Io {
            context: format!(
                "fsync of directory {} after freeing segments",
                core.wal_dir.display()
            ),
            source,
        })?;
    if let Some(error) = first_error {
        return Err(error);
    }
    metrics::counter!(names::WAL_SEGMENTS_FREED_TOTAL).increment(freed);
    tracing::debug!(freed, "Freed write-ahead log segments.");
    Ok(freed)
}

/// Recycle `segment` into a spare if possible, else unlink it.
fn free_segment(core: &Core, segment: Arc<Segment>) -> Result<(), WalError> {
    let file_bytes = segment.map.len();
    let want_spare = {
        let state = core.writer.lock();
        state.spares.len() < MAX_SPARES && file_bytes == core.options.segment_bytes
    };
    if !want_spare {
        return delete(core, &segment.path, file_bytes);
    }
    match Arc::try_unwrap(segment) {
        Ok(owned) => recycle(core, owned),
        // A reader or a payload still holds it: unlink (the inode lives until they are done).
        Err(shared) => delete(core, &shared.path, file_bytes),
    }
}

/// Rename a freed segment to a spare and keep its mapping for the next roll; fall back to
/// deleting it when its mapping is still referenced or the rename fails.
fn recycle(core: &Core, segment: Segment) -> Result<(), WalError> {
    let uncached = segment.may_be_uncached();
    let Segment {
        id,
        path,
        file,
        map,
        ..
    } = segment;
    let file_bytes = map.len();
    // A spare waits, maybe long, for the next roll: it should not keep the pages its last
    // readers left resident (see `residency.rs`).
    map.release(0..file_bytes);
    let writer = match SegmentMap::reclaim(map) {
        Ok(writer) => writer,
        Err(_still_mapped) => return delete(core, &path, file_bytes),
    };
    let spare_path = {
        let mut state = core.writer.lock();
        let spare_path = core.wal_dir.join(spare_file_name(state.next_spare_number));
        if let Err(error) = core.io.rename(&path, &spare_path) {
            drop(state);
            tracing::warn!(segment = id, %error, "Could not recycle a segment; deleting it instead.");
            return delete(core, &path, file_bytes);
        }
        state.next_spare_number += 1;
        state.dir_dirty = true;
        spare_path
    };
    // Its old records' pages may be gone from the page cache (`page_cache.rs`): zero them
    // on disk so appends into the spare never read a block back. Renamed first, so a crash
    // meanwhile leaves a spare (whose contents never matter), not a damaged segment.
    if uncached {
        if let Err(error) = core
            .io
            .zero_range(&file, &spare_path, HEADER_PAGE_BYTES, file_bytes)
        {
            tracing::warn!(segment = id, %error, "Could not clear a recycled segment; deleting it instead.");
            return delete(core, &spare_path, file_bytes);
        }
    }
    let mut state = core.writer.lock();
    // Checked again: the sync thread may have prepared a spare since `free_segment` looked
    // (`sync.rs` re-checks the same way), and `MAX_SPARES` bounds the disk spares pin.
    if state.spares.len() >= MAX_SPARES {
        drop(state);
        return delete(core, &spare_path, file_bytes);
    }
    state.spares.push(Spare {
        path: spare_path,
        file,
        writer,
    });
    Ok(())
}

fn delete(core: &Core, path: &std::path::Path, file_bytes: u64) -> Result<(), WalError> {
    core.io.remove_file(path).map_err(|source| WalError::Io {
        context: format!("deleting segment {}", path.display()),
        source,
    })?;
    let mut state = core.writer.lock();
    state.bytes_on_disk = state.bytes_on_disk.saturating_sub(file_bytes);
    metrics::gauge!(names::WAL_BYTES).set(state.bytes_on_disk as f64);
    Ok(())
}

fn report_unclaimed_cursors(core: &Core, registry: &super::cursor::CursorRegistry, min_acked: u64) {
    let oldest_sealed_end = core
        .segments
        .read()
        .front()
        .filter(|segment| segment.is_sealed())
        .map(|segment| segment.end_seq());
    for cursor in registry.cursors.values() {
        if cursor.is_claimed() {
            continue;
        }
        metrics::gauge!(names::WAL_ORPHAN_CURSORS, "cursor" => cursor.name.clone()).set(1.0);
        let acked = cursor.persisted_state().acked.seq;
        let pins = acked == min_acked && oldest_sealed_end.is_some_and(|end| end > acked);
        if pins && !cursor.warned_pinning.swap(true, Ordering::AcqRel) {
            tracing::warn!(cursor = %cursor.name, acked_seq = acked,
                "A cursor that no configured destination uses pins the write-ahead log; disk use will grow until it is released (flagstream wal inspect shows its lag).");
        }
    }
}
