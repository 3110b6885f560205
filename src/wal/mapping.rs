//! The one place the WAL touches mapped memory. Every `unsafe` block of the WAL lives here.
//!
//! A [`SegmentMap`] is a shared, writable mapping of one whole segment file. The rest of the
//! WAL sees it only through a safe API whose shape makes data races impossible:
//!
//! * The record area `[HEADER_PAGE_BYTES, len)` is split by a monotonic `frozen_end`
//!   watermark. Bytes below it are **frozen**: never written again for the life of the
//!   mapping, so anyone may borrow them as `&[u8]` ([`SegmentMap::frozen`]) — this is what
//!   zero-copy `Bytes` payloads point into.
//! * Bytes at or above `frozen_end` may only be touched through the map's single
//!   [`MapWriter`] (not `Clone`; writing needs `&mut MapWriter`). The borrow checker therefore
//!   guarantees that while anyone reads unfrozen bytes through `&MapWriter`, nobody writes.
//! * Records are written **through the file** (`pwritev` into the page cache, via
//!   [`WalIo::write_vectored_at`]), not through the mapping; readers see them through the
//!   mapping, which shares the same page-cache pages. Storing into a mapped page of a
//!   preallocated (unwritten) extent first takes a read fault that zero-fills the page, and
//!   every writeback write-protects the writer's mapped pages again, which on a multi-threaded
//!   process costs a TLB shootdown (an IPI to every other CPU) and the next store another
//!   fault. On the durable ingest path that was 15 % of the server's CPU (`perf`,
//!   `docs/performance.md`); a write into the page cache does neither. The same `&mut
//!   MapWriter` rule and unfrozen-range check apply, so the aliasing argument is unchanged:
//!   the kernel's copy lands only in bytes nobody may borrow.
//! * The 4 KiB header page (segment header + seal block) is copied in and out under a small
//!   mutex and never borrowed, because sealing rewrites it while readers are active.
//! * Pages of frozen bytes can be dropped from the process ([`SegmentMap::release`],
//!   `MADV_DONTNEED`) once readers have passed them: the mapping is `MAP_SHARED` over a file,
//!   so the next access faults the very same bytes back in from the page cache (dirty pages
//!   keep their data; the kernel moves the dirty bit to the page before unmapping it). This
//!   is what keeps resident memory independent of the backlog (see `docs/performance.md`).
//! * A mapping can be reused for a new segment (recycling) only through
//!   [`SegmentMap::reclaim`], which succeeds only when the caller holds the *only* reference:
//!   no reader, no `Bytes`, no writer can then observe the rewrite.
//!
//! Outside modification (another process truncating or writing the file) would break these
//! guarantees; the data directory's `LOCK` and the never-truncate rule (invariant 2 in the
//! module doc of `wal`) are what keep the kernel from turning such access into SIGBUS.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};
use parking_lot::Mutex;

use super::format::HEADER_PAGE_BYTES;
use super::io::WalIo;

/// A shared writable mapping of one segment file (see the module doc for the access rules).
#[derive(Debug)]
pub(crate) struct SegmentMap {
    raw: MmapRaw,
    /// The mapped file (its own descriptor): records are written through it.
    file: File,
    len: u64,
    /// End of the frozen prefix of the record area; only grows (until `reclaim`).
    frozen_end: AtomicU64,
    /// Serialises copies in and out of the header page.
    header_lock: Mutex<()>,
}

/// The unique right to write a [`SegmentMap`]'s unfrozen bytes and its header page.
#[derive(Debug)]
pub(crate) struct MapWriter {
    map: Arc<SegmentMap>,
}

impl SegmentMap {
    /// Map `file` (already allocated to `len` bytes, never sparse) read-write and shared.
    pub(crate) fn map(file: &File, len: u64) -> io::Result<(Arc<SegmentMap>, MapWriter)> {
        if len < 2 * HEADER_PAGE_BYTES || usize::try_from(len).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("segment length {len} is too small or does not fit in memory"),
            ));
        }
        // `map_raw` is safe: it only hands out raw pointers; every dereference below is
        // bounds-checked and justified.
        let raw = MmapOptions::new().len(len as usize).map_raw(file)?;
        // Everyone reads a segment front to back (readers, recovery's scan): a fault on a page
        // not in the page cache (a destination behind `--wal-page-cache-bytes`, or after a
        // restart) then reads ahead of it instead of around it, and pages read through the
        // mapping are not promoted to the active list. Advice only: refusing it changes nothing.
        if let Err(error) = raw.advise(memmap2::Advice::Sequential) {
            tracing::debug!(%error, "madvise(MADV_SEQUENTIAL) refused");
        }
        let map = Arc::new(SegmentMap {
            raw,
            file: file.try_clone()?,
            len,
            frozen_end: AtomicU64::new(HEADER_PAGE_BYTES),
            header_lock: Mutex::new(()),
        });
        let writer = MapWriter {
            map: Arc::clone(&map),
        };
        Ok((map, writer))
    }

    /// Total mapped length (the segment file's size).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// End of the frozen (immutable, readable) prefix of the record area. Acquire: bytes
    /// below the returned offset are fully written.
    pub(crate) fn frozen_end(&self) -> u64 {
        self.frozen_end.load(Ordering::Acquire)
    }

    /// Borrow frozen bytes. Panics if `range` is not inside `[HEADER_PAGE_BYTES, frozen_end)`,
    /// which would be a bug in the WAL (callers derive ranges from `frozen_end`).
    pub(crate) fn frozen(&self, range: Range<u64>) -> &[u8] {
        let frozen_end = self.frozen_end();
        assert!(
            range.start >= HEADER_PAGE_BYTES && range.start <= range.end && range.end <= frozen_end,
            "frozen read {range:?} outside [{HEADER_PAGE_BYTES}, {frozen_end})"
        );
        // SAFETY: the range lies inside the mapping (frozen_end <= len, checked when frozen),
        // the mapping lives as long as `&self`, and frozen bytes are never written again while
        // this `SegmentMap` exists: writes need the `MapWriter` and are confined to offsets
        // >= frozen_end, and `reclaim` (which resets the watermark) needs the only `Arc`, so
        // it cannot run while this borrow exists.
        unsafe {
            std::slice::from_raw_parts(
                self.raw.as_ptr().add(range.start as usize),
                (range.end - range.start) as usize,
            )
        }
    }

    /// Drop the pages of the frozen bytes in `range` from this process (`MADV_DONTNEED`), so
    /// they stop counting in its resident memory; the next access faults them back in from
    /// the page cache or the file. Whole pages inside `[HEADER_PAGE_BYTES, frozen_end)` are
    /// released, from the page holding `range.start` (owners release consecutive ranges, so
    /// rounding the start up would keep one page per release resident for the segment's
    /// lifetime) to the last page wholly before `range.end`. Returns the bytes released (0
    /// when the kernel refused: the advice is only an optimisation, and refusing it changes
    /// nothing readers can observe).
    pub(crate) fn release(&self, range: Range<u64>) -> u64 {
        let page = page_bytes();
        let start = (range.start / page * page).max(HEADER_PAGE_BYTES);
        let end = range.end.min(self.frozen_end()) / page * page;
        if end <= start {
            return 0;
        }
        // SAFETY: the range is page-aligned and inside the mapping (end <= frozen_end <= len).
        // The mapping is MAP_SHARED over a regular file, so MADV_DONTNEED only removes page
        // table entries: any later access, through a `frozen` borrow or a `Bytes` payload
        // alive right now, repopulates them from the file's up-to-date contents (the kernel
        // first transfers a dirty PTE's state to the page cache page). Those contents equal
        // what every borrower saw, because frozen bytes are never written again while this
        // mapping exists (see `frozen`), and the data dir's LOCK plus the never-truncate rule
        // keep other processes from changing or truncating the file (which would be SIGBUS,
        // with or without this call). So no borrow observes a change: this is not a write.
        let result = unsafe {
            self.raw.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
        match result {
            Ok(()) => end - start,
            Err(error) => {
                tracing::debug!(%error, "madvise(MADV_DONTNEED) refused; pages stay resident");
                0
            }
        }
    }

    /// A copy of the header page.
    pub(crate) fn read_header_page(&self) -> [u8; HEADER_PAGE_BYTES as usize] {
        let _guard = self.header_lock.lock();
        let mut page = [0u8; HEADER_PAGE_BYTES as usize];
        // SAFETY: the header page is inside the mapping (len >= 2 pages, checked in `map`),
        // and every write to it happens in `MapWriter::write_header` under `header_lock`,
        // which we hold, so the copy cannot race with a write.
        unsafe {
            std::ptr::copy_nonoverlapping(self.raw.as_ptr(), page.as_mut_ptr(), page.len());
        }
        page
    }

    /// Turn the last reference to a mapping into a fresh writer with nothing frozen, so the
    /// file can be reused as a new segment. Returns the `Arc` back if anyone else holds it.
    pub(crate) fn reclaim(map: Arc<SegmentMap>) -> Result<MapWriter, Arc<SegmentMap>> {
        if Arc::strong_count(&map) != 1 {
            return Err(map);
        }
        // With a single strong reference (and no weak ones are ever made) nobody can hold a
        // frozen borrow or another writer, so resetting the watermark is unobservable.
        map.frozen_end.store(HEADER_PAGE_BYTES, Ordering::Release);
        Ok(MapWriter { map })
    }
}

/// The system's page size (`madvise` needs page-aligned ranges; 4 KiB on x86-64, up to 64 KiB
/// on some arm64 kernels).
fn page_bytes() -> u64 {
    rustix::param::page_size() as u64
}

impl MapWriter {
    /// The mapping this writer writes.
    pub(crate) fn map(&self) -> &Arc<SegmentMap> {
        &self.map
    }

    /// Write `parts` back to back starting at `offset` (unfrozen bytes only) through the file
    /// into the page cache, where readers of the mapping see them once frozen (see the module
    /// doc for why not through the mapping). `path` names the file for errors and for fault
    /// injection. On an error some of the bytes may have been written: they are unfrozen, so
    /// no reader sees them, and the caller treats the segment as unwritable.
    pub(crate) fn write(
        &mut self,
        io: &dyn WalIo,
        path: &Path,
        offset: u64,
        parts: &mut [io::IoSlice<'_>],
    ) -> io::Result<()> {
        let total: u64 = parts.iter().map(|part| part.len() as u64).sum();
        self.check_unfrozen(offset, total);
        // No `unsafe`: the kernel copies into the page cache. What makes it sound for the
        // borrows handed out by `frozen` is the check above and `&mut self`: the written range
        // is unfrozen, so no borrow covers it, and this writer is the only one.
        io.write_vectored_at(&self.map.file, path, parts, offset)
    }

    /// Drop every page of the record area from this process (`MADV_DONTNEED`), written or
    /// not: recovery's scan of an unsealed segment reads it to the end looking for valid
    /// records past damage, and would otherwise leave the whole segment resident.
    pub(crate) fn release_all(&mut self) -> u64 {
        self.release_read(HEADER_PAGE_BYTES..self.map.len)
    }

    /// Drop the pages of `range` of the record area from this process (`MADV_DONTNEED`) while
    /// borrows from [`Self::read`] may be alive: recovery's scan of an unsealed segment drops
    /// what it has read as it goes, so a full 128 MiB segment is never resident at once (it
    /// was, for the tens of milliseconds of the scan: the restart's peak RSS). Whole pages
    /// from the one holding `range.start` to the last one wholly before `range.end`; returns
    /// the bytes released (0 when the kernel refused the advice).
    pub(crate) fn release_read(&self, range: Range<u64>) -> u64 {
        let page = page_bytes();
        let start = (range.start / page * page).max(HEADER_PAGE_BYTES);
        let end = range.end.min(self.map.len) / page * page;
        if end <= start {
            return 0;
        }
        // SAFETY: page-aligned and inside the mapping. Nothing writes while `&self` is held:
        // writes need `&mut self` and this writer is the only one. The mapping is MAP_SHARED
        // over a regular file, so the advice only removes page table entries (a dirty entry's
        // state goes to the page cache first): a later access through a borrow alive now
        // faults the same bytes back in. No borrow observes a change: this is not a write.
        let result = unsafe {
            self.map.raw.unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start as usize,
                (end - start) as usize,
            )
        };
        result.map_or(0, |()| end - start)
    }

    /// Borrow any bytes of the record area (frozen or not). Safe because writing needs
    /// `&mut self`, which cannot coexist with the returned borrow.
    pub(crate) fn read(&self, range: Range<u64>) -> &[u8] {
        assert!(
            range.start >= HEADER_PAGE_BYTES
                && range.start <= range.end
                && range.end <= self.map.len,
            "writer read {range:?} outside the record area"
        );
        // SAFETY: in bounds (checked); frozen bytes are immutable, and unfrozen bytes are
        // written only through `&mut self` (this writer is unique), which the borrow of `self`
        // held by the returned slice excludes.
        unsafe {
            std::slice::from_raw_parts(
                self.map.raw.as_ptr().add(range.start as usize),
                (range.end - range.start) as usize,
            )
        }
    }

    /// Make `[HEADER_PAGE_BYTES, end)` frozen (Release), publishing it to readers.
    pub(crate) fn freeze(&mut self, end: u64) {
        let current = self.map.frozen_end.load(Ordering::Relaxed);
        assert!(
            end >= current && end <= self.map.len,
            "freeze {end} behind {current} or past the end"
        );
        self.map.frozen_end.store(end, Ordering::Release);
    }

    /// Overwrite the header page with `page`.
    pub(crate) fn write_header(&mut self, page: &[u8; HEADER_PAGE_BYTES as usize]) {
        let _guard = self.map.header_lock.lock();
        // SAFETY: the header page is inside the mapping; it is never borrowed (only copied
        // under `header_lock`, which we hold), and this writer is unique.
        unsafe {
            std::ptr::copy_nonoverlapping(page.as_ptr(), self.map.raw.as_mut_ptr(), page.len());
        }
    }

    fn check_unfrozen(&self, offset: u64, len: u64) {
        let frozen_end = self.map.frozen_end.load(Ordering::Relaxed);
        let end = offset.checked_add(len).expect("write range overflows u64");
        assert!(
            offset >= frozen_end && end <= self.map.len,
            "write [{offset}, {end}) not in the unfrozen area [{frozen_end}, {})",
            self.map.len
        );
    }
}

/// Pages of the first `len` bytes of `file` that are in the page cache (`mincore` over a
/// fresh read-only mapping): tests of `page_cache.rs` check the advice took effect.
#[cfg(test)]
pub(crate) fn cached_pages(file: &File, len: u64) -> u64 {
    let page = rustix::param::page_size();
    // SAFETY: a read-only mapping of a file this test owns, only handed to mincore (no byte
    // is read through it), unmapped when `map` drops at the end of this function.
    let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }.unwrap();
    let mut residency = vec![0u8; (len as usize).div_ceil(page)];
    // SAFETY: `map` is a live mapping of `len` bytes and `residency` has a byte per page of it.
    let status = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            len as usize,
            residency.as_mut_ptr(),
        )
    };
    assert_eq!(status, 0, "mincore: {}", std::io::Error::last_os_error());
    residency.iter().filter(|&&byte| byte & 1 == 1).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::io::OsIo;

    /// Write through the file as the append path does.
    fn write(writer: &mut MapWriter, offset: u64, parts: &[&[u8]]) {
        let mut slices: Vec<_> = parts.iter().map(|part| io::IoSlice::new(part)).collect();
        writer
            .write(&OsIo, Path::new("m"), offset, &mut slices)
            .expect("write into the page cache");
    }

    fn mapped(len: u64) -> (tempfile::TempDir, File, Arc<SegmentMap>, MapWriter) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("m"))
            .unwrap();
        file.set_len(len).unwrap();
        let (map, writer) = SegmentMap::map(&file, len).unwrap();
        (dir, file, map, writer)
    }

    #[test]
    fn writes_become_readable_once_frozen() {
        let (_dir, _file, map, mut writer) = mapped(3 * HEADER_PAGE_BYTES);
        write(&mut writer, HEADER_PAGE_BYTES, &[b"abc", b"def"]);
        assert_eq!(
            writer.read(HEADER_PAGE_BYTES..HEADER_PAGE_BYTES + 6),
            b"abcdef"
        );
        writer.freeze(HEADER_PAGE_BYTES + 6);
        assert_eq!(
            map.frozen(HEADER_PAGE_BYTES..HEADER_PAGE_BYTES + 6),
            b"abcdef"
        );
    }

    #[test]
    fn bytes_written_through_the_file_are_in_the_file_and_the_mapping_alike() {
        let (_dir, file, map, mut writer) = mapped(4 * HEADER_PAGE_BYTES);
        // Read the page through the mapping first, so the write must update a mapped page.
        map.frozen_end
            .store(3 * HEADER_PAGE_BYTES, Ordering::Release);
        assert_eq!(map.frozen(HEADER_PAGE_BYTES..HEADER_PAGE_BYTES + 4), [0; 4]);
        map.frozen_end.store(HEADER_PAGE_BYTES, Ordering::Release);
        let big = vec![9u8; 2 * HEADER_PAGE_BYTES as usize];
        write(&mut writer, HEADER_PAGE_BYTES, &[b"head", &big, b"tail"]);
        let end = HEADER_PAGE_BYTES + 8 + big.len() as u64;
        writer.freeze(end);
        let through_map = map.frozen(HEADER_PAGE_BYTES..end);
        assert_eq!(&through_map[..4], b"head");
        assert_eq!(&through_map[4..4 + big.len()], &big[..]);
        assert_eq!(&through_map[4 + big.len()..], b"tail");
        let mut through_file = vec![0u8; through_map.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut through_file, HEADER_PAGE_BYTES)
            .unwrap();
        assert_eq!(through_file, through_map);
    }

    #[test]
    #[should_panic(expected = "not in the unfrozen area")]
    fn frozen_bytes_cannot_be_rewritten() {
        let (_dir, _file, _map, mut writer) = mapped(3 * HEADER_PAGE_BYTES);
        write(&mut writer, HEADER_PAGE_BYTES, &[b"abc"]);
        writer.freeze(HEADER_PAGE_BYTES + 8);
        write(&mut writer, HEADER_PAGE_BYTES + 4, &[b"x"]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn unfrozen_bytes_cannot_be_borrowed_by_readers() {
        let (_dir, _file, map, _writer) = mapped(3 * HEADER_PAGE_BYTES);
        let _ = map.frozen(HEADER_PAGE_BYTES..HEADER_PAGE_BYTES + 1);
    }

    #[test]
    fn reclaim_needs_the_only_reference() {
        let (_dir, _file, map, mut writer) = mapped(3 * HEADER_PAGE_BYTES);
        writer.freeze(HEADER_PAGE_BYTES + 8);
        drop(writer);
        let second = Arc::clone(&map);
        let map = SegmentMap::reclaim(map).unwrap_err();
        drop(second);
        let writer = SegmentMap::reclaim(map).unwrap();
        assert_eq!(writer.map().frozen_end(), HEADER_PAGE_BYTES);
    }

    /// Resident bytes of the mapping that starts at `address`, from `/proc/self/smaps`.
    fn resident_bytes(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{address:x}-");
        let mut lines = smaps.lines().skip_while(|line| !line.starts_with(&start));
        lines.next().expect("mapping listed in smaps");
        let rss = lines.find(|line| line.starts_with("Rss:")).unwrap();
        let kib: u64 = rss.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// A mapping of `pages` record pages (after the header page) written with a pattern
    /// that differs page to page, and the pattern.
    type Written = (tempfile::TempDir, File, Arc<SegmentMap>, MapWriter, Vec<u8>);
    fn written(pages: u64) -> Written {
        let len = (pages + 1) * HEADER_PAGE_BYTES;
        let (dir, file, map, mut writer) = mapped(len);
        let data: Vec<u8> = (0..len - HEADER_PAGE_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        write(&mut writer, HEADER_PAGE_BYTES, &[&data]);
        (dir, file, map, writer, data)
    }

    #[test]
    fn released_pages_leave_resident_memory_and_read_back_unchanged() {
        let pages = 64;
        let len = (pages + 1) * HEADER_PAGE_BYTES;
        let (_dir, _file, map, mut writer, data) = written(pages);
        writer.freeze(len - 100);
        let borrowed = map.frozen(HEADER_PAGE_BYTES..len - 100);
        assert_eq!(borrowed, &data[..data.len() - 100]);
        let address = map.raw.as_ptr() as usize;
        assert!(resident_bytes(address) >= pages * HEADER_PAGE_BYTES);

        let released = map.release(0..len);
        // The partly frozen last page stays: its tail may still be written.
        assert_eq!(released, (pages - 1) * HEADER_PAGE_BYTES);
        assert!(resident_bytes(address) <= 2 * HEADER_PAGE_BYTES);
        assert_eq!(
            borrowed,
            &data[..data.len() - 100],
            "same bytes after the re-fault"
        );
        assert_eq!(
            map.release(HEADER_PAGE_BYTES + 1..HEADER_PAGE_BYTES + 4000),
            0
        );
    }

    #[test]
    fn consecutive_releases_at_unaligned_offsets_leave_no_page_behind() {
        let pages = 64;
        let len = (pages + 1) * HEADER_PAGE_BYTES;
        let (_dir, _file, map, mut writer) = mapped(len);
        write(
            &mut writer,
            HEADER_PAGE_BYTES,
            &[&vec![3u8; (len - HEADER_PAGE_BYTES) as usize]],
        );
        writer.freeze(len);
        let touched: u64 = map
            .frozen(HEADER_PAGE_BYTES..len)
            .iter()
            .map(|&b| u64::from(b))
            .sum();
        assert_eq!(touched, 3 * (len - HEADER_PAGE_BYTES));
        // Owners release from where they stopped last time: record ends, not page ends.
        let mut from = HEADER_PAGE_BYTES;
        for step in 1..=pages / 4 {
            let to = HEADER_PAGE_BYTES + step * 4 * HEADER_PAGE_BYTES - 1000;
            map.release(from..to);
            from = to;
        }
        map.release(from..len);
        assert!(resident_bytes(map.raw.as_ptr() as usize) <= HEADER_PAGE_BYTES);
    }

    #[test]
    fn pages_released_under_a_read_borrow_read_back_the_same_bytes() {
        let pages = 32;
        let len = (pages + 1) * HEADER_PAGE_BYTES;
        let (_dir, _file, map, writer, data) = written(pages);
        let read = writer.read(HEADER_PAGE_BYTES..len);
        assert_eq!(read, &data[..]);
        let released = writer.release_read(HEADER_PAGE_BYTES + 100..len - 100);
        assert_eq!(
            released,
            (pages - 1) * HEADER_PAGE_BYTES,
            "whole pages only"
        );
        assert!(resident_bytes(map.raw.as_ptr() as usize) <= 2 * HEADER_PAGE_BYTES);
        assert_eq!(read, &data[..], "faulted back from the file, unchanged");
    }

    #[test]
    fn header_page_round_trips() {
        let (_dir, _file, map, mut writer) = mapped(2 * HEADER_PAGE_BYTES);
        let mut page = [0u8; HEADER_PAGE_BYTES as usize];
        page[0] = 7;
        page[4095] = 9;
        writer.write_header(&page);
        assert_eq!(map.read_header_page(), page);
    }
}
