//! Shared helpers for the WAL integration tests: a fault-injecting [`WalIo`], deterministic
//! payloads and small options.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use flagstream::wal::io::{OsIo, WalIo};
pub use flagstream::wal::layout::SEGMENT_DIR;
use flagstream::wal::{AppendRequest, Record, Wal, WalOptions};

pub const SEGMENT: u64 = 64 * 1024;

/// A temporary directory on tmpfs when available: for tests that simulate crashes through
/// `FaultyIo` (real fdatasync latency adds nothing there but minutes of CI time).
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

pub fn options(dir: &Path) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.segment_bytes = SEGMENT;
    options.max_bytes = SEGMENT * 256;
    options.min_free_bytes = 0;
    options
}

/// A payload that identifies itself: `len` bytes derived from `key`.
pub fn payload(key: u64, len: usize) -> Vec<u8> {
    let mut state = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub async fn append(wal: &Wal, key: u64, len: usize) -> Result<u64, flagstream::wal::WalError> {
    let body = payload(key, len);
    wal.append(AppendRequest {
        tag: (key % 251) as u8,
        event_count: len as u32,
        received_at_ms: key,
        parts: &[&body],
    })
    .await
    .map(|receipt| receipt.seq)
}

pub fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let mut reader = wal.reader(from);
    let mut records = Vec::new();
    while let Some(record) = reader.try_next().unwrap() {
        records.push(record);
    }
    records
}

/// Check that a record written by [`append`] with `key`/`len` is intact.
pub fn assert_intact(record: &Record, key: u64, len: usize) {
    assert_eq!(record.received_at_ms, key, "seq {}", record.seq);
    assert_eq!(record.event_count as usize, len, "seq {}", record.seq);
    assert_eq!(record.tag, (key % 251) as u8, "seq {}", record.seq);
    assert!(
        record.payload[..] == payload(key, len)[..],
        "seq {} payload differs",
        record.seq
    );
}

/// Files in `<dir>/segments`, sorted.
pub fn wal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(SEGMENT_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(SEGMENT_DIR).join(format!("{id:020}.seg"))
}

/// A [`WalIo`] that can fail on purpose.
///
/// * `crash_at(k)`: the k-th mutating operation (counting from 0 since creation) and every
///   later one fail without doing anything, as if the process had died there (pages already
///   written through the mapping stay in the page cache, like after a real kill -9).
/// * `fail_syncs_of(substring)`: fdatasync of matching paths fails with EIO.
/// * `no_space(true)`: preallocation fails with ENOSPC.
/// * `fail_appends(true)`: record writes fail with EIO after writing half their bytes (a
///   record write is not a counted step, so crash points stay where they were).
#[derive(Debug, Default)]
pub struct FaultyIo {
    operations: AtomicU64,
    crash_at: AtomicU64,
    crash_armed: AtomicBool,
    fail_sync_path: Mutex<Option<String>>,
    no_space: AtomicBool,
    fail_appends: AtomicBool,
    pub log: Mutex<Vec<String>>,
}

impl FaultyIo {
    pub fn new() -> Self {
        FaultyIo::default()
    }
    pub fn crash_at(&self, operation: u64) {
        self.crash_at.store(operation, Ordering::SeqCst);
        self.crash_armed.store(true, Ordering::SeqCst);
    }
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::SeqCst)
    }
    pub fn fail_syncs_of(&self, substring: &str) {
        *self.fail_sync_path.lock().unwrap() = Some(substring.to_owned());
    }
    pub fn no_space(&self, on: bool) {
        self.no_space.store(on, Ordering::SeqCst);
    }
    pub fn fail_appends(&self, on: bool) {
        self.fail_appends.store(on, Ordering::SeqCst);
    }

    fn step(&self, what: &str, path: &Path) -> io::Result<()> {
        let number = self.operations.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push(format!("{number} {what} {}", path.display()));
        if self.crash_armed.load(Ordering::SeqCst) && number >= self.crash_at.load(Ordering::SeqCst)
        {
            return Err(io::Error::other(format!(
                "simulated crash before operation {number} ({what})"
            )));
        }
        Ok(())
    }
}

impl WalIo for FaultyIo {
    fn allocate(&self, path: &Path, len: u64) -> io::Result<File> {
        self.step("allocate", path)?;
        if self.no_space.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        OsIo.allocate(path, len)
    }
    fn extend(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
        self.step("extend", path)?;
        OsIo.extend(file, path, len)
    }
    fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.step("sync_data", path)?;
        let failing = self.fail_sync_path.lock().unwrap().clone();
        if failing.is_some_and(|substring| path.to_string_lossy().contains(&substring)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        OsIo.sync_data(file, path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step("sync_dir", dir)?;
        OsIo.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step("rename", from)?;
        OsIo.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step("remove_file", path)?;
        OsIo.remove_file(path)
    }
    fn write_at(&self, file: &File, path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        self.step("write_at", path)?;
        OsIo.write_at(file, path, buf, offset)
    }
    fn write_vectored_at(
        &self,
        file: &File,
        path: &Path,
        parts: &mut [io::IoSlice<'_>],
        offset: u64,
    ) -> io::Result<()> {
        if !self.fail_appends.load(Ordering::SeqCst) {
            return OsIo.write_vectored_at(file, path, parts, offset);
        }
        // A torn write: the first half of the record reaches the page cache, then EIO.
        let bytes: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
        OsIo.write_at(file, path, &bytes[..bytes.len() / 2], offset)?;
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
    fn available_bytes(&self, dir: &Path) -> io::Result<u64> {
        OsIo.available_bytes(dir)
    }
    fn zero_range(&self, file: &File, path: &Path, from: u64, to: u64) -> io::Result<()> {
        self.step("zero_range", path)?;
        OsIo.zero_range(file, path, from, to)
    }
}
