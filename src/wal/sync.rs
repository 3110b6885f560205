//! The sync thread: group commit, the durable watermark, and spare preparation.
//!
//! One dedicated OS thread (fdatasync blocks, so it stays off the async runtime) loops:
//!
//! 1. Under the writer mutex, wait until there is something to do: unsynced writes (at once
//!    in `always` mode, at the next tick in `interval` mode; in `never` mode only segments
//!    sealed by a roll, and everything at shutdown), a spare to prepare, or shutdown.
//! 2. Take a snapshot: the target seq (`next_seq`), every segment written since the last
//!    snapshot (at most the active one plus any sealed by a roll) and the directory flag.
//!    Appends keep going meanwhile and are covered by the next round: that is group commit.
//! 3. Outside the mutex, fdatasync each segment, then the directory if files changed.
//! 4. Publish `durable_next = target` (Release) and wake the appenders waiting for it.
//! 5. Drop what it synced from the process (`residency.rs`) and, beyond the budget, from
//!    the page cache (`page_cache.rs`).
//!
//! Any sync error is fatal: after a failed fdatasync the kernel may have dropped the dirty
//! pages and a retry could falsely succeed (fsyncgate), so the thread records the error, wakes
//! every waiter with it, and exits. The WAL refuses appends from then on; the process must
//! exit and recover from disk.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::core::{Core, MAX_SPARES};
use super::page_cache::PageCacheBudget;
use super::residency::Released;
use super::segment::{spare_file_name, Segment, Spare};
use super::SyncMode;
use crate::metrics as names;

/// One round of syncing.
struct SyncJob {
    target_seq: u64,
    segments: Vec<Arc<Segment>>,
    sync_dir: bool,
}

/// Run the sync loop until shutdown (or a fatal error). Meant for a dedicated thread.
pub(crate) fn run(core: Arc<Core>) {
    // Pages of the active segment already durable and released (see `residency.rs`).
    let mut released = Released::new();
    // Durable pages dropped from the OS page cache beyond the budget (see `page_cache.rs`).
    let mut page_cache = PageCacheBudget::new(core.options.page_cache_bytes);
    let mut next_tick = match core.options.sync {
        SyncMode::Interval(every) => Some(Instant::now() + every),
        _ => None,
    };
    loop {
        let (job, shutting_down, prepare_spare) = {
            let mut state = core.writer.lock();
            loop {
                if state.shutdown {
                    break;
                }
                let sync_due = match core.options.sync {
                    SyncMode::Always => state.has_unsynced_writes(),
                    SyncMode::Interval(_) => next_tick.is_some_and(|tick| Instant::now() >= tick),
                    // Only segments sealed by a roll: this keeps them from piling up
                    // (each holds its mapping, and GC can only recycle unshared ones).
                    SyncMode::Never => !state.unsynced.is_empty(),
                };
                if sync_due || state.want_spare {
                    break;
                }
                match next_tick {
                    Some(tick) => {
                        core.sync_wakeup.wait_until(&mut state, tick);
                    }
                    None => core.sync_wakeup.wait(&mut state),
                }
            }
            let shutting_down = state.shutdown;
            let prepare_spare =
                std::mem::take(&mut state.want_spare) && state.spares.len() < MAX_SPARES;
            let mut segments = std::mem::take(&mut state.unsynced);
            let mut target_seq = state.next_seq;
            let include_active = shutting_down || core.options.sync != SyncMode::Never;
            if let Some(active) = state.active.as_mut() {
                if !include_active {
                    // `never` mode: only the sealed segments become durable here.
                    target_seq = active.segment.base_seq;
                } else if active.dirty {
                    active.dirty = false;
                    segments.push(Arc::clone(&active.segment));
                }
            }
            let job = SyncJob {
                target_seq,
                segments,
                sync_dir: std::mem::take(&mut state.dir_dirty),
            };
            (job, shutting_down, prepare_spare)
        };
        if let SyncMode::Interval(every) = core.options.sync {
            if next_tick.is_some_and(|tick| Instant::now() >= tick) {
                next_tick = Some(Instant::now() + every);
            }
        }
        let synced = job.segments.clone();
        if let Err(message) = sync(&core, job) {
            core.set_fatal(message);
            break;
        }
        release_synced(&mut released, &synced);
        page_cache.synced(&synced);
        if shutting_down {
            break;
        }
        if prepare_spare {
            prepare_one_spare(&core);
        }
    }
    // Finish the page-cache drops still queued before `close` sees the thread stopped.
    drop(page_cache);
    core.sync_stopped.store(true, Ordering::Release);
    core.durable.notify_waiters();
}

/// The writer is done with durable bytes: drop their pages (all of a sealed segment, all
/// but the resident tail of the active one).
fn release_synced(released: &mut Released, synced: &[Arc<Segment>]) {
    for segment in synced {
        if segment.is_sealed() {
            Released::new().finish(segment);
        } else {
            released.advance(segment, segment.map.frozen_end());
        }
    }
}

/// fdatasync everything in `job`, then publish the durable watermark.
fn sync(core: &Core, job: SyncJob) -> Result<(), String> {
    let previous = core.durable_next.load(Ordering::Acquire);
    for segment in &job.segments {
        let started = Instant::now();
        core.io
            .sync_data(&segment.file, &segment.path)
            .map_err(|error| format!("fdatasync of {} failed: {error}", segment.path.display()))?;
        metrics::histogram!(names::WAL_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
    }
    if job.sync_dir {
        core.io.sync_dir(&core.wal_dir).map_err(|error| {
            format!(
                "fsync of directory {} failed: {error}",
                core.wal_dir.display()
            )
        })?;
    }
    if job.target_seq > previous {
        core.durable_next.store(job.target_seq, Ordering::Release);
        metrics::histogram!(names::WAL_RECORDS_PER_FSYNC)
            .record((job.target_seq - previous) as f64);
        core.durable.notify_waiters();
    }
    Ok(())
}

/// Allocate one spare outside the writer mutex, so rolls find one ready. Failures (budget,
/// free space, I/O) are logged; the append path will report `Full` if it really needs one.
pub(super) fn prepare_one_spare(core: &Core) {
    let (path, budget_left) = {
        let mut state = core.writer.lock();
        let number = state.next_spare_number;
        state.next_spare_number += 1;
        (
            core.wal_dir.join(spare_file_name(number)),
            core.options.max_bytes.saturating_sub(state.bytes_on_disk),
        )
    };
    let segment_bytes = core.options.segment_bytes;
    if segment_bytes > budget_left {
        return;
    }
    match core.io.available_bytes(&core.wal_dir) {
        Ok(free) if free >= segment_bytes.saturating_add(core.options.min_free_bytes) => {}
        Ok(_) => return,
        Err(error) => {
            tracing::warn!(%error, "Could not read free disk space; not preparing a spare segment.");
            return;
        }
    }
    match Spare::allocate(core.io.as_ref(), path, segment_bytes) {
        Ok(spare) => {
            let mut state = core.writer.lock();
            // Re-check the budget: an append may have allocated meanwhile.
            if state.bytes_on_disk + segment_bytes > core.options.max_bytes
                || state.spares.len() >= MAX_SPARES
            {
                drop(state);
                let _ = core.io.remove_file(&spare.path);
                return;
            }
            state.bytes_on_disk += segment_bytes;
            state.dir_dirty = true;
            state.spares.push(spare);
            metrics::gauge!(names::WAL_BYTES).set(state.bytes_on_disk as f64);
        }
        Err(error) => {
            tracing::warn!(%error, "Could not preallocate a spare write-ahead log segment.")
        }
    }
}
