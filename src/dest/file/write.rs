//! Writing one file atomically and durably, past the page cache where the filesystem allows.
//!
//! ## Atomic and durable
//!
//! A file is written as `.<name>.tmp` beside its final name, fdatasynced, renamed over `<name>`,
//! and its directory fsynced (missing directories are created and fsynced into their parents
//! first). Readers see no file or the whole file; the file is on disk before the engine hears
//! `Delivered`.
//!
//! ## Why direct I/O
//!
//! A file destination writes every byte it exports once and never reads it back. Through the
//! page cache each byte is first copied by the kernel into freshly allocated cache pages, which
//! was the largest single cost of a draining file destination: 12 % of its CPU with one
//! destination and 27 % with four (`perf`, `docs/performance.md`), and those pages then stay
//! cached, evicting the WAL's. With `O_DIRECT` the device reads the bytes from our memory.
//!
//! `O_DIRECT` needs the memory address, the file offset and the length of every write aligned to
//! the device's logical block size. The object writer starts NDJSON bodies on a block boundary
//! (`BodyPool::take_aligned`), so their whole blocks are written straight from memory; the last
//! partial block, and bodies at any other address (gzip, CSV, Parquet), pass through a
//! page-aligned *bounce buffer* (an anonymous mapping, [`BOUNCE_BYTES`] at a time: a copy that
//! stays in the CPU's cache, far cheaper than the kernel's into new pages). Every
//! write is [`ALIGN`]-aligned (4 KiB covers 512-byte and 4 KiB sectors); the last block is
//! padded with zeros and the file truncated to the body's length before the fdatasync, which
//! makes the length durable too.
//!
//! ## Fallback
//!
//! Filesystems without `O_DIRECT` (tmpfs, some FUSE and network filesystems) refuse it with
//! `EINVAL` at the open or the first write; a device with blocks larger than [`ALIGN`] refuses
//! the write. The file is then written again through the page cache and the writer remembers:
//! every later file goes through the page cache at once. `direct_io=false` skips direct I/O
//! from the start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use memmap2::MmapMut;

/// Alignment of every direct write's address, offset and length.
pub const ALIGN: usize = 4096;

/// Bytes copied into the bounce buffer and written per system call: big enough that the calls
/// cost nothing next to the copy, small enough to stay in the CPU's cache.
pub const BOUNCE_BYTES: usize = 1 << 20;

/// Most bounce buffers kept between writes (a file destination has two writes in flight by
/// default).
const MAX_SPARE_BOUNCES: usize = 2;

/// Writes files atomically (see the module doc); shared by a destination's concurrent writes.
#[derive(Debug)]
pub struct AtomicWriter {
    /// Still trying `O_DIRECT`: off when configured so or once the filesystem refused it.
    direct: AtomicBool,
    /// [`ALIGN`]; another value only in tests, to make the kernel refuse direct writes.
    align: usize,
    bounces: Mutex<Vec<MmapMut>>,
}

impl AtomicWriter {
    /// A writer that tries direct I/O when `direct_io` is set.
    pub fn new(direct_io: bool) -> Self {
        AtomicWriter {
            direct: AtomicBool::new(direct_io),
            align: ALIGN,
            bounces: Mutex::new(Vec::new()),
        }
    }

    /// Whether the next file is written with direct I/O.
    pub fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Write `body` as `path` (somewhere under `root`) atomically and durably.
    pub fn write(&self, root: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
        let parent = path.parent().unwrap_or(root);
        create_dirs_durably(parent)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = parent.join(format!(".{name}.tmp"));
        let result = self
            .write_temp(&temp, body)
            .and_then(|()| fs::rename(&temp, path))
            .and_then(|()| File::open(parent)?.sync_all());
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Write and fdatasync `temp`: directly if the filesystem takes it, else through the cache.
    fn write_temp(&self, temp: &Path, body: &[u8]) -> io::Result<()> {
        if self.is_direct() {
            match self.write_direct(temp, body) {
                Err(err) if refuses_direct_io(&err) => {
                    self.direct.store(false, Ordering::Relaxed);
                    tracing::info!(
                        path = %temp.display(),
                        error = %err,
                        "the filesystem refuses direct I/O: files are written through the page cache"
                    );
                }
                written => return written,
            }
        }
        let mut file = File::create(temp)?;
        file.write_all(body)?;
        file.sync_data()
    }

    fn write_direct(&self, temp: &Path, body: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(temp)?;
        let mut bounce = self.take_bounce()?;
        let written = write_aligned(&file, body, &mut bounce, self.align);
        self.give_back(bounce);
        written?;
        if !body.len().is_multiple_of(self.align) {
            file.set_len(body.len() as u64)?;
        }
        file.sync_data()
    }

    fn take_bounce(&self) -> io::Result<MmapMut> {
        match self.lock_bounces().pop() {
            Some(bounce) => Ok(bounce),
            None => MmapMut::map_anon(BOUNCE_BYTES),
        }
    }

    fn give_back(&self, bounce: MmapMut) {
        let mut bounces = self.lock_bounces();
        if bounces.len() < MAX_SPARE_BOUNCES {
            bounces.push(bounce);
        }
    }

    fn lock_bounces(&self) -> std::sync::MutexGuard<'_, Vec<MmapMut>> {
        // A panic while holding the lock leaves a plain list of buffers: still usable.
        self.bounces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Write `body` from offset 0 in `align`ed pieces, zero-padding the last piece to a whole block:
/// whole blocks straight from `body` when it starts on a block boundary (the object writer's
/// NDJSON bodies do: `BodyPool::take_aligned`), everything else through `bounce` (page-aligned).
fn write_aligned(file: &File, body: &[u8], bounce: &mut [u8], align: usize) -> io::Result<()> {
    let mut offset = 0u64;
    let mut rest = body;
    if (body.as_ptr() as usize).is_multiple_of(align) {
        let whole = body.len() / align * align;
        file.write_all_at(&body[..whole], 0)?;
        offset = whole as u64;
        rest = &body[whole..];
    }
    let piece = bounce.len() / align * align;
    for chunk in rest.chunks(piece) {
        let padded = chunk.len().next_multiple_of(align);
        bounce[..chunk.len()].copy_from_slice(chunk);
        bounce[chunk.len()..padded].fill(0);
        file.write_all_at(&bounce[..padded], offset)?;
        offset += padded as u64;
    }
    Ok(())
}

/// How Linux says a filesystem (or its device's block size) does not do `O_DIRECT`.
fn refuses_direct_io(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// Create `dir` and any missing ancestors, fsyncing each new directory's parent so the new
/// entry survives a power cut.
pub fn create_dirs_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Another batch in flight created it meanwhile.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(err) => return Err(err),
        }
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::object::BodyPool;
    use bytes::Bytes;

    /// Whether files in `dir` can be opened with `O_DIRECT` (ext4 and xfs can; tmpfs cannot).
    fn takes_direct_io(dir: &Path) -> bool {
        let probe = dir.join(".probe");
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe);
        let _ = fs::remove_file(&probe);
        opened.is_ok()
    }

    /// Bodies of every length class (empty, within a block, block edges, bounce edges), each
    /// once starting on a block boundary (as the object writer's NDJSON bodies do) and once a
    /// byte past one (as any other body may).
    fn bodies() -> Vec<Bytes> {
        let lengths = [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BOUNCE_BYTES - 1,
            BOUNCE_BYTES,
            BOUNCE_BYTES + ALIGN + 7,
            3 * BOUNCE_BYTES + 1,
        ];
        let pool = BodyPool::default();
        let mut bodies = Vec::new();
        for len in lengths {
            let (mut buffer, pad) = pool.take_aligned(len + 1);
            buffer.extend((0..=len).map(|i| (i * 7 + len) as u8));
            let whole = Bytes::from(buffer);
            let aligned = whole.slice(pad..pad + len);
            assert!((aligned.as_ptr() as usize).is_multiple_of(ALIGN));
            bodies.push(aligned);
            bodies.push(whole.slice(pad + 1..));
        }
        bodies
    }

    fn write_all_bodies(writer: &AtomicWriter, dir: &Path) {
        let bodies = bodies();
        for (i, body) in bodies.iter().enumerate() {
            let path = dir.join(format!("sub/file-{i}.ndjson"));
            writer.write(dir, &path, body).unwrap();
            let read = fs::read(&path).unwrap();
            assert_eq!(read.len(), body.len(), "length of body {i}");
            assert!(read == *body, "contents of body {i} ({} bytes)", body.len());
        }
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), bodies.len(), "no temp file left behind");
    }

    #[test]
    fn direct_writes_leave_exactly_the_body_and_stay_direct_where_the_filesystem_allows() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(true);
        write_all_bodies(&writer, dir.path());
        assert_eq!(writer.is_direct(), takes_direct_io(dir.path()));
        // A second round overwrites whole files, longer ones with shorter ones included.
        let again = dir.path().join("sub/file-8.ndjson");
        writer.write(dir.path(), &again, b"{}\n").unwrap();
        assert_eq!(fs::read(&again).unwrap(), b"{}\n");
    }

    #[test]
    fn page_cache_writes_leave_exactly_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(false);
        write_all_bodies(&writer, dir.path());
        assert!(!writer.is_direct());
    }

    /// A refused direct write (here: blocks of 1000 bytes, which no device has, so the kernel
    /// answers `EINVAL` as it does on filesystems without `O_DIRECT`) is written again through
    /// the page cache, and so is every later file.
    #[test]
    fn a_refused_direct_write_is_redone_through_the_page_cache_and_direct_io_stays_off() {
        let dir = tempfile::tempdir().unwrap();
        if !takes_direct_io(dir.path()) {
            // Refused at the open already: the same fallback, taken one step earlier.
            let writer = AtomicWriter::new(true);
            write_all_bodies(&writer, dir.path());
            assert!(!writer.is_direct());
            return;
        }
        let writer = AtomicWriter {
            align: 1000,
            ..AtomicWriter::new(true)
        };
        write_all_bodies(&writer, dir.path());
        assert!(!writer.is_direct());
    }

    #[test]
    fn only_einval_and_eopnotsupp_mean_no_direct_io() {
        assert!(refuses_direct_io(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
        assert!(refuses_direct_io(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(!refuses_direct_io(&io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(!refuses_direct_io(&io::Error::other("anything else")));
    }
}
