//! Where things live in a WAL directory, the one migration of that layout, and how the
//! operator tools find a WAL from whatever directory they are given.
//!
//! ```text
//! <data-dir>/wal/            the WAL directory (`WalOptions::dir`; flagstream serve)
//!     LOCK                   flock'd while open
//!     segments/              <id:020>.seg, spare-<n>.seg, *.corrupt
//!     cursors/               <name>.cur
//! ```
//!
//! flagstream 0.1 named the segment directory `wal/`, which made the path
//! `<data-dir>/wal/wal/` — easy to mistake for the WAL directory itself (`wal verify` pointed
//! at the wrong level checked nothing). Opening a 0.1 directory renames `wal/` to `segments/`
//! (one atomic rename, then a directory fsync; nothing is copied or deleted). A directory
//! that has both is refused rather than guessed at.

use std::path::{Path, PathBuf};

use super::io::WalIo;
use super::WalError;

/// Segment files, spares and files set aside as corrupt.
pub const SEGMENT_DIR: &str = "segments";
/// Cursor files.
pub const CURSOR_DIR: &str = "cursors";
/// The lock file.
pub const LOCK_FILE: &str = "LOCK";
/// Where flagstream 0.1 kept segments.
pub const LEGACY_SEGMENT_DIR: &str = "wal";
/// The WAL directory inside a data dir.
pub const WAL_DIR_IN_DATA_DIR: &str = "wal";

/// The directories of one WAL, as found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The WAL directory (holds `LOCK`).
    pub root: PathBuf,
    /// The segment directory (`segments/`, or `wal/` in a 0.1 directory not opened since).
    pub segments: PathBuf,
    pub cursors: PathBuf,
}

impl Layout {
    fn at(root: &Path, segment_dir: &str) -> Layout {
        Layout {
            root: root.to_path_buf(),
            segments: root.join(segment_dir),
            cursors: root.join(CURSOR_DIR),
        }
    }
}

/// The layout if `dir` itself is a WAL directory (current or 0.1).
fn as_wal_dir(dir: &Path) -> Option<Layout> {
    if dir.join(SEGMENT_DIR).is_dir() {
        return Some(Layout::at(dir, SEGMENT_DIR));
    }
    // A 0.1 WAL directory: `wal/` next to `LOCK` or `cursors/` (a data dir has neither).
    let legacy = dir.join(LEGACY_SEGMENT_DIR).is_dir()
        && (dir.join(LOCK_FILE).is_file() || dir.join(CURSOR_DIR).is_dir());
    legacy.then(|| Layout::at(dir, LEGACY_SEGMENT_DIR))
}

/// Find the WAL an operator means by `dir`: the WAL directory itself or the data dir that
/// holds it (current or 0.1 layout). Read-only. Fails with a message naming where it looked.
pub fn find(dir: &Path) -> Result<Layout, WalError> {
    if !dir.is_dir() {
        return Err(WalError::InvalidArgument(format!(
            "{} does not exist or is not a directory",
            dir.display()
        )));
    }
    as_wal_dir(dir)
        .or_else(|| as_wal_dir(&dir.join(WAL_DIR_IN_DATA_DIR)))
        .ok_or_else(|| {
            WalError::InvalidArgument(format!(
                "no write-ahead log in {}: expected {} (a WAL directory) or {} (a data dir)",
                dir.display(),
                dir.join(SEGMENT_DIR).display(),
                dir.join(WAL_DIR_IN_DATA_DIR).join(SEGMENT_DIR).display()
            ))
        })
}

/// Rename a 0.1 segment directory to [`SEGMENT_DIR`] (called with the lock held, before
/// recovery). Refuses a directory that has both and a legacy one that holds files.
pub(crate) fn migrate(io: &dyn WalIo, root: &Path) -> Result<(), WalError> {
    let legacy = root.join(LEGACY_SEGMENT_DIR);
    if !legacy.is_dir() {
        return Ok(());
    }
    let current = root.join(SEGMENT_DIR);
    let io_error = |context: String| move |source| WalError::Io { context, source };
    if current.is_dir() {
        let mut entries = std::fs::read_dir(&legacy)
            .map_err(io_error(format!("listing {}", legacy.display())))?;
        if entries.next().is_some() {
            return Err(WalError::Corrupt(format!(
                "{} holds both {} and the 0.1 segment directory {}; move the one you do not \
                 want out of the way (nothing was changed)",
                root.display(),
                current.display(),
                legacy.display()
            )));
        }
        // An empty leftover: nothing to keep.
        std::fs::remove_dir(&legacy).map_err(io_error(format!("removing {}", legacy.display())))?;
    } else {
        io.rename(&legacy, &current).map_err(io_error(format!(
            "renaming {} to {}",
            legacy.display(),
            current.display()
        )))?;
        tracing::info!(from = %legacy.display(), to = %current.display(),
            "Moved the write-ahead log segments to the current layout.");
    }
    io.sync_dir(root)
        .map_err(io_error(format!("fsync of directory {}", root.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::tests::small_options;
    use crate::wal::{inspect, AppendRequest, Wal};

    fn write_records(dir: &Path, count: u64) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let wal = Wal::open(small_options(dir)).unwrap();
                for seq in 1..=count {
                    let payload = seq.to_le_bytes();
                    let request = AppendRequest {
                        tag: 0,
                        event_count: 1,
                        received_at_ms: seq,
                        parts: &[&payload],
                    };
                    assert_eq!(wal.append(request).await.unwrap().seq, seq);
                }
                wal.open_cursor("file").unwrap();
                wal.close().await.unwrap();
            });
    }

    /// Turn a current WAL directory into the 0.1 layout (segments in `wal/`).
    fn downgrade_to_0_1(root: &Path) {
        std::fs::rename(root.join(SEGMENT_DIR), root.join(LEGACY_SEGMENT_DIR)).unwrap();
    }

    fn seqs(wal: &Wal) -> Vec<u64> {
        let mut reader = wal.reader(1);
        std::iter::from_fn(|| reader.try_next().unwrap())
            .map(|record| record.seq)
            .collect()
    }

    #[test]
    fn a_0_1_directory_is_migrated_on_open_without_losing_a_record() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join(WAL_DIR_IN_DATA_DIR);
        write_records(&root, 5);
        downgrade_to_0_1(&root);
        // The tools read the old layout as it is, from either directory.
        for dir in [data.path(), root.as_path()] {
            assert_eq!(find(dir).unwrap().segments, root.join(LEGACY_SEGMENT_DIR));
            let report = inspect::verify(dir).unwrap();
            assert!(report.is_clean(), "{report}");
            assert_eq!(report.records_checked, 5);
        }
        let wal = Wal::open(small_options(&root)).unwrap();
        assert_eq!(seqs(&wal), [1, 2, 3, 4, 5]);
        assert_eq!(wal.cursor_names(), ["file"]);
        assert!(root.join(SEGMENT_DIR).is_dir() && !root.join(LEGACY_SEGMENT_DIR).exists());
        drop(wal);
        assert_eq!(find(data.path()).unwrap().segments, root.join(SEGMENT_DIR));
    }

    #[test]
    fn both_layouts_at_once_are_refused_unless_the_old_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        write_records(dir.path(), 3);
        let legacy = dir.path().join(LEGACY_SEGMENT_DIR);
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("00000000000000000001.seg"), b"old").unwrap();
        match Wal::open(small_options(dir.path())) {
            Err(WalError::Corrupt(message)) => assert!(message.contains("both"), "{message}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            legacy.join("00000000000000000001.seg").exists(),
            "nothing was touched"
        );
        std::fs::remove_file(legacy.join("00000000000000000001.seg")).unwrap();
        let wal = Wal::open(small_options(dir.path())).unwrap();
        assert_eq!(seqs(&wal), [1, 2, 3]);
        assert!(!legacy.exists());
    }

    #[test]
    fn find_accepts_the_data_dir_or_the_wal_dir_and_names_what_it_looked_for() {
        let data = tempfile::tempdir().unwrap();
        let root = data.path().join(WAL_DIR_IN_DATA_DIR);
        match find(data.path()) {
            Err(WalError::InvalidArgument(message)) => {
                assert!(message.contains("no write-ahead log"), "{message}");
                assert!(message.contains("wal/segments"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(find(&data.path().join("missing")).is_err());
        write_records(&root, 1);
        for dir in [data.path(), root.as_path()] {
            let layout = find(dir).unwrap();
            assert_eq!(layout.root, root);
            assert_eq!(layout.cursors, root.join(CURSOR_DIR));
        }
    }
}
