//! The disk budget of the dead-letter store, shared by every destination's files.
//!
//! Dead letters are the only copy of events the cursor has moved past, so a full store never
//! drops or overwrites anything: a write that does not fit is *refused* as a whole
//! ([`StoreFull`]), the writer keeps its lines, and its destination pauses (events wait in the
//! WAL) until room appears. Room appears when an operator removes (or redrives and removes)
//! files, or raises `--dead-letter-max-bytes`; nothing in flagstream deletes dead letters.
//!
//! ## Invariants
//!
//! * **Budget.** The bytes of every file in the store directory (all destinations, rotated
//!   files included) plus a write never exceed `max_bytes`: the write is refused instead.
//!   Usage is counted once at start and kept up to date by [`DeadLetterBudget::write_within`];
//!   when a write would not fit, the directory is measured again first, so files an operator
//!   removed are noticed by the next attempt.
//! * **Free-space floor.** A write is refused when it would leave less than the WAL's
//!   `--wal-min-free-bytes` free on the store's filesystem, so dead letters can never eat the
//!   room the WAL needs to keep accepting (both are counted against the same floor).
//! * Writes run under one lock, so destinations writing at once cannot together overshoot the
//!   budget.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a dead-letter write was refused; the destination pauses until it fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFull {
    #[error(
        "the dead-letter store is full: writing {needed} bytes would exceed \
         --dead-letter-max-bytes {max} ({used} bytes used); remove files from {dir} \
         or raise --dead-letter-max-bytes"
    )]
    Budget {
        needed: u64,
        used: u64,
        max: u64,
        dir: String,
    },
    #[error(
        "no room for dead letters: writing {needed} bytes would leave less than \
         --wal-min-free-bytes {floor} free under {dir} ({available} bytes available)"
    )]
    Disk {
        needed: u64,
        available: u64,
        floor: u64,
        dir: String,
    },
}

impl StoreFull {
    /// Metric label: `budget` or `disk`.
    pub fn label(&self) -> &'static str {
        match self {
            StoreFull::Budget { .. } => "budget",
            StoreFull::Disk { .. } => "disk",
        }
    }
}

/// Limits of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Most bytes all dead-letter files may take together (`--dead-letter-max-bytes`).
    pub max_bytes: u64,
    /// Free space the filesystem must keep after a write (`--wal-min-free-bytes`).
    pub min_free_bytes: u64,
}

impl DeadLetterLimits {
    /// Unlimited (tests and embedders that do not configure a budget).
    pub const UNLIMITED: DeadLetterLimits = DeadLetterLimits {
        max_bytes: u64::MAX,
        min_free_bytes: 0,
    };

    /// Size at which a destination's active file is rotated: an eighth of the budget (so the
    /// files of one destination are few and each can be removed once handled), between 16 KiB
    /// and 256 MiB.
    pub fn rotate_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(16 * 1024, 256 * 1024 * 1024)
    }
}

/// Shared usage accounting of the store directory. See the module doc.
#[derive(Debug)]
pub struct DeadLetterBudget {
    dir: PathBuf,
    limits: DeadLetterLimits,
    used: Mutex<u64>,
}

impl DeadLetterBudget {
    /// Measure what `dir` holds now (created if missing).
    pub fn open(dir: &Path, limits: DeadLetterLimits) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let used = measure(dir)?;
        metrics::gauge!(crate::metrics::DEAD_LETTER_BYTES).set(used as f64);
        Ok(DeadLetterBudget {
            dir: dir.to_path_buf(),
            limits,
            used: Mutex::new(used),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> DeadLetterLimits {
        self.limits
    }

    /// Bytes the store's files take (as last counted).
    pub fn used(&self) -> u64 {
        *lock(&self.used)
    }

    /// Run `write` (which adds `needed` bytes to the store) if the budget and the floor leave
    /// room for it, else say why not. Writes of all destinations go through here one at a time,
    /// so the count cannot be overtaken by a concurrent writer (dead letters are the exception
    /// path: serialising their fsyncs costs nothing in the common case).
    pub fn write_within<T>(
        &self,
        needed: u64,
        write: impl FnOnce() -> io::Result<T>,
    ) -> Result<T, ReserveError> {
        let mut used = lock(&self.used);
        if used.saturating_add(needed) > self.limits.max_bytes {
            // Files may have been removed since the last count.
            *used = measure(&self.dir)?;
        }
        if used.saturating_add(needed) > self.limits.max_bytes {
            return Err(ReserveError::Full(StoreFull::Budget {
                needed,
                used: *used,
                max: self.limits.max_bytes,
                dir: self.dir.display().to_string(),
            }));
        }
        if self.limits.min_free_bytes > 0 {
            let available = available_bytes(&self.dir)?;
            if available < needed.saturating_add(self.limits.min_free_bytes) {
                return Err(ReserveError::Full(StoreFull::Disk {
                    needed,
                    available,
                    floor: self.limits.min_free_bytes,
                    dir: self.dir.display().to_string(),
                }));
            }
        }
        let written = write();
        *used = match written {
            Ok(_) => *used + needed,
            // A failed write may have left part of itself (or rotated): count again.
            Err(_) => measure(&self.dir).unwrap_or(*used + needed),
        };
        metrics::gauge!(crate::metrics::DEAD_LETTER_BYTES).set(*used as f64);
        Ok(written?)
    }
}

/// A refused or failed write.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Full(StoreFull),
    #[error("measuring the dead-letter store: {0}")]
    Io(#[from] io::Error),
}

fn lock(used: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    used.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes of the regular files directly in `dir`.
fn measure(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let metadata = match entry?.metadata() {
            Ok(metadata) => metadata,
            // Removed between listing and stat: it takes no room.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if metadata.is_file() {
            total += metadata.len();
        }
    }
    Ok(total)
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64) -> DeadLetterLimits {
        DeadLetterLimits {
            max_bytes,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn writes_stop_at_the_budget_and_removed_files_free_room() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.ndjson");
        std::fs::write(&old, vec![b'x'; 600]).unwrap();
        let budget = DeadLetterBudget::open(dir.path(), limits(1000)).unwrap();
        assert_eq!(budget.used(), 600);
        let new = dir.path().join("new.ndjson");
        let write = |bytes: usize| {
            let new = new.clone();
            move || std::fs::write(new, vec![b'y'; bytes])
        };
        budget.write_within(300, write(300)).unwrap();
        assert_eq!(budget.used(), 900);
        let mut called = false;
        let refused = budget
            .write_within(200, || {
                called = true;
                Ok(())
            })
            .unwrap_err();
        assert!(!called, "a refused write does not run");
        assert!(
            matches!(
                refused,
                ReserveError::Full(StoreFull::Budget {
                    needed: 200,
                    used: 900,
                    max: 1000,
                    ..
                })
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("--dead-letter-max-bytes"));
        std::fs::remove_file(&old).unwrap();
        budget.write_within(200, || Ok(())).unwrap();
        assert_eq!(budget.used(), 500, "re-measured (300) plus the write");
        let failed = budget.write_within(100, || Err::<(), _>(io::Error::other("disk gone")));
        assert!(matches!(failed, Err(ReserveError::Io(_))));
        assert_eq!(budget.used(), 300, "a failed write is measured again");
    }

    #[test]
    fn the_free_space_floor_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let budget = DeadLetterBudget::open(
            dir.path(),
            DeadLetterLimits {
                max_bytes: u64::MAX,
                min_free_bytes: u64::MAX / 2,
            },
        )
        .unwrap();
        let refused = budget.write_within(1, || Ok(())).unwrap_err();
        assert!(
            matches!(refused, ReserveError::Full(StoreFull::Disk { .. })),
            "{refused}"
        );
        assert!(refused.to_string().contains("--wal-min-free-bytes"));
    }

    #[test]
    fn files_rotate_at_an_eighth_of_the_budget_within_bounds() {
        assert_eq!(limits(8 << 20).rotate_bytes(), 1 << 20);
        assert_eq!(limits(1000).rotate_bytes(), 16 * 1024);
        assert_eq!(limits(u64::MAX).rotate_bytes(), 256 << 20);
    }
}
