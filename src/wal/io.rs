//! The file operations the WAL performs, behind a trait so tests can inject faults.
//!
//! [`WalIo`] covers every operation whose failure or interruption matters for durability:
//! preallocating files, fdatasync, directory fsync, rename, unlink, cursor-slot writes and the
//! free-space probe. [`OsIo`] is the real implementation. A test implementation can fail the
//! n-th sync (fsyncgate), return ENOSPC from preallocation, or "crash" at step k by failing
//! every operation from then on — the WAL must stay consistent on disk whatever happens.
//!
//! Reads, `open` of existing files and memory mapping are not behind the trait: they change
//! nothing on disk.
//!
//! [`FailSegmentSyncs`] is the one fault kept in the library: the binary can be told to use it
//! through a test-only environment variable ([`from_env`]), so the end-to-end tests can prove
//! that a failed fdatasync stops the service and loses nothing acknowledged.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::WalError;

/// File operations used by the WAL. Implementations must be thread-safe.
pub trait WalIo: Send + Sync + fmt::Debug + 'static {
    /// Create `path` (it must not exist) with `len` bytes of real, non-sparse storage
    /// (fallocate), opened read-write. Not synced: the caller syncs file and directory.
    fn allocate(&self, path: &Path, len: u64) -> io::Result<File>;
    /// Grow an existing file to `len` bytes of real storage (used to restore a segment file
    /// that was truncated behind our back, so it can be mapped without SIGBUS).
    fn extend(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// fdatasync `file` (at `path`, for diagnostics and fault targeting).
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()>;
    /// fsync a directory, making creations, renames and unlinks in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Rename a file (atomic within a directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unlink a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Write all of `buf` at `offset` (pwrite).
    fn write_at(&self, file: &File, path: &Path, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Write `parts` back to back at `offset` (pwritev, continued after short writes, which
    /// advance `parts`): every record append. Defaults to the real write, so fault-injecting implementations count
    /// and fail only the operations they choose.
    fn write_vectored_at(
        &self,
        file: &File,
        _path: &Path,
        parts: &mut [io::IoSlice<'_>],
        offset: u64,
    ) -> io::Result<()> {
        write_all_vectored_at(file, parts, offset)
    }
    /// Bytes available to unprivileged users on the filesystem holding `dir` (statvfs).
    fn available_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// Make `[from, to)` of `file` read as zeros while keeping its storage allocated
    /// (`FALLOC_FL_ZERO_RANGE`; punch and re-allocate where that is unsupported): a reused
    /// segment file's old blocks become unwritten, so an append ending inside one never reads
    /// it back from disk (`page_cache.rs`). Defaults to the real operation, like
    /// [`WalIo::write_vectored_at`].
    fn zero_range(&self, file: &File, _path: &Path, from: u64, to: u64) -> io::Result<()> {
        zero_range(file, from, to)
    }
}

/// The real operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

impl WalIo for OsIo {
    fn allocate(&self, path: &Path, len: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(error) = preallocate(&file, 0, len) {
            // Do not leave a half-allocated file behind; the caller reports the error.
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(file)
    }

    fn extend(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        let current = file.metadata()?.len();
        if current >= len {
            return Ok(());
        }
        preallocate(file, current, len)
    }

    fn sync_data(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn write_at(&self, file: &File, _path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        let stats = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

/// The environment variable of the test-only fault hook read by [`from_env`].
pub const FAIL_SEGMENT_SYNCS_AFTER_ENV: &str = "FLAGSTREAM_TEST_FAIL_SEGMENT_SYNCS_AFTER";

/// The [`WalIo`] `flagstream serve` uses: [`OsIo`], unless the test-only variable
/// [`FAIL_SEGMENT_SYNCS_AFTER_ENV`] is set to a number N, in which case it is
/// [`FailSegmentSyncs`] after N segment fdatasyncs. The hook lets the end-to-end tests drive
/// the real binary into the fatal state a failing disk causes (fsyncgate); it is never set in
/// production, and setting it is logged at WARN.
pub fn from_env() -> Result<Arc<dyn WalIo>, WalError> {
    let Some(value) = std::env::var_os(FAIL_SEGMENT_SYNCS_AFTER_ENV) else {
        return Ok(Arc::new(OsIo));
    };
    let after = value
        .to_str()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            WalError::InvalidArgument(format!(
                "{FAIL_SEGMENT_SYNCS_AFTER_ENV} = {value:?} must be a number of fdatasyncs"
            ))
        })?;
    tracing::warn!(after, "TEST HOOK {FAIL_SEGMENT_SYNCS_AFTER_ENV} is set: segment fdatasyncs will fail after this many; never set it in production");
    Ok(Arc::new(FailSegmentSyncs::new(after)))
}

/// [`OsIo`], except that after `after` successful fdatasyncs of segment files (`*.seg`) every
/// further one fails with EIO without syncing, as a dying disk does. Cursor files and
/// directories are synced normally. A test tool (see [`from_env`]).
#[derive(Debug)]
pub struct FailSegmentSyncs {
    after: u64,
    done: AtomicU64,
}

impl FailSegmentSyncs {
    pub fn new(after: u64) -> Self {
        FailSegmentSyncs {
            after,
            done: AtomicU64::new(0),
        }
    }
}

impl WalIo for FailSegmentSyncs {
    fn allocate(&self, path: &Path, len: u64) -> io::Result<File> {
        OsIo.allocate(path, len)
    }
    fn extend(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        OsIo.extend(file, path, len)
    }
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        let segment = path.extension().is_some_and(|extension| extension == "seg");
        if segment && self.done.fetch_add(1, Ordering::SeqCst) >= self.after {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ));
        }
        OsIo.sync_data(file, path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsIo.remove_file(path)
    }
    fn write_at(&self, file: &File, path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        OsIo.write_at(file, path, buf, offset)
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        OsIo.available_bytes(dir)
    }
}

/// Linux's `UIO_MAXIOV`: a `pwritev` with more slices fails with EINVAL.
const MAX_IOVECS: usize = 1024;

/// `pwritev` of every byte of `parts` at `offset`, resumed where a short write stopped (a
/// signal or a full pipe of dirty pages may cut one short; each call advances the offset).
fn write_all_vectored_at(
    file: &File,
    parts: &mut [io::IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    let mut remaining = parts;
    // Empty slices (a record without padding) need no call of their own.
    while remaining.iter().any(|part| !part.is_empty()) {
        let batch = &remaining[..remaining.len().min(MAX_IOVECS)];
        match rustix::io::pwritev(file, batch, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => {
                offset += written as u64;
                io::IoSlice::advance_slices(&mut remaining, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
    Ok(())
}

fn zero_range(file: &File, from: u64, to: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    let len = to.saturating_sub(from);
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(
        file,
        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        from,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(errno) if errno == rustix::io::Errno::OPNOTSUPP => {
            // tmpfs and a few others: a hole reads as zeros; re-allocating it keeps the file
            // non-sparse (a sparse mapped file turns ENOSPC into SIGBUS).
            rustix::fs::fallocate(
                file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                from,
                len,
            )
            .map_err(io::Error::from)?;
            preallocate(file, from, to)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Give `file` real blocks for `[from, to)`, growing it to at least `to` bytes.
fn preallocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from, to - from) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: write real zeros (never leave a sparse file: a
        // sparse mapped file turns ENOSPC into SIGBUS).
        Err(errno)
            if errno == rustix::io::Errno::OPNOTSUPP || errno == rustix::io::Errno::NOSYS =>
        {
            write_zeros(file, from, to)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let step = (to - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..step], at)?;
        at += step as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_makes_a_full_sized_non_sparse_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seg");
        let file = OsIo.allocate(&path, 1 << 20).unwrap();
        let metadata = file.metadata().unwrap();
        assert_eq!(metadata.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(metadata.blocks() * 512 >= 1 << 20, "file is sparse");
        assert_eq!(
            OsIo.allocate(&path, 10).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(OsIo.available_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn fail_segment_syncs_fails_only_segment_syncs_after_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let io = FailSegmentSyncs::new(2);
        let segment = dir.path().join("00000000000000000001.seg");
        let cursor = dir.path().join("a.cur");
        let segment_file = io.allocate(&segment, 4096).unwrap();
        let cursor_file = io.allocate(&cursor, 4096).unwrap();
        io.sync_data(&segment_file, &segment).unwrap();
        io.sync_data(&segment_file, &segment).unwrap();
        for _ in 0..3 {
            let error = io.sync_data(&segment_file, &segment).unwrap_err();
            assert_eq!(error.raw_os_error(), Some(libc::EIO));
            io.sync_data(&cursor_file, &cursor).unwrap();
        }
    }
}
