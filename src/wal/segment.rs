//! One segment file in memory: its identity, its mapping, whether it is sealed, and a sparse
//! seq → offset index for positioning readers and measuring lag.
//!
//! Invariants:
//! * Records of a segment carry consecutive seqs `base_seq .. end_seq`; `end_seq` only grows
//!   while the segment is active and is final once `sealed` is set.
//! * `map.frozen_end()` is the committed end of the record area (readers never look past it).
//! * The index holds one `(seq, offset)` entry at least every [`INDEX_STRIDE`] bytes of
//!   records, plus a `covered` point up to which entries are complete; segments found sealed
//!   at recovery start unindexed and are indexed lazily (header hops, no checksums).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::format::{RecordView, Seal, SegmentHeader, Window, HEADER_PAGE_BYTES};
use super::io::WalIo;
use super::mapping::{MapWriter, SegmentMap};
use super::residency::RELEASE_STEP_BYTES;

/// Bytes of records between two index entries.
pub(crate) const INDEX_STRIDE: u64 = 64 * 1024;

/// File name of the segment with `id`.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id encoded in a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// File name of a spare (a preallocated file without a segment identity yet).
pub(crate) fn spare_file_name(number: u64) -> String {
    format!("spare-{number}.seg")
}

/// The number in a spare's file name, if it is one.
pub(crate) fn parse_spare_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("spare-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A live segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u64,
    pub base_seq: u64,
    pub path: PathBuf,
    pub file: File,
    pub map: Arc<SegmentMap>,
    sealed: AtomicBool,
    /// When the segment was sealed (Unix ms, from its seal block); 0 while unsealed.
    sealed_ms: AtomicU64,
    end_seq: AtomicU64,
    index: Mutex<SeqIndex>,
    /// Disjoint seq ranges `[from, to)` known to be unreadable (already counted).
    damaged: Mutex<Vec<(u64, u64)>>,
    /// Some of its written pages may be missing from the page cache (dropped beyond
    /// `--wal-page-cache-bytes`, or written before this process started): recycling it
    /// zeroes it first (`gc.rs`, `page_cache.rs`).
    uncached: AtomicBool,
}

#[derive(Debug)]
struct SeqIndex {
    entries: Vec<(u64, u64)>,
    /// Entries are complete for records before this offset; the record there has this seq.
    covered_offset: u64,
    covered_seq: u64,
    /// Start of the stretch `locate` hopped over (reading record headers) and has not yet
    /// released from resident memory.
    hopped_from: Option<u64>,
}

/// A preallocated, mapped file waiting to become a segment.
#[derive(Debug)]
pub(crate) struct Spare {
    pub path: PathBuf,
    pub file: File,
    pub writer: MapWriter,
}

impl Spare {
    /// Allocate a new spare file of `len` bytes and map it. The caller syncs the directory.
    pub(crate) fn allocate(io: &dyn WalIo, path: PathBuf, len: u64) -> std::io::Result<Spare> {
        let file = io.allocate(&path, len)?;
        let mapped = SegmentMap::map(&file, len).map(|(_, writer)| writer);
        match mapped {
            Ok(writer) => Ok(Spare { path, file, writer }),
            Err(error) => {
                let _ = io.remove_file(&path);
                Err(error)
            }
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.writer.map().len()
    }

    /// Give the spare its identity: rename it to `<id>.seg` and write a fresh header page.
    /// The caller must sync the directory before records in it count as durable.
    pub(crate) fn into_segment(
        mut self,
        io: &dyn WalIo,
        dir: &Path,
        id: u64,
        base_seq: u64,
    ) -> Result<(Arc<Segment>, MapWriter), (Spare, std::io::Error)> {
        let path = dir.join(segment_file_name(id));
        if let Err(error) = io.rename(&self.path, &path) {
            return Err((self, error));
        }
        let header = SegmentHeader {
            segment_id: id,
            base_seq,
            created_unix_ms: now_unix_ms(),
            segment_bytes: self.len(),
        };
        let mut page = [0u8; HEADER_PAGE_BYTES as usize];
        header.encode_into(&mut page);
        self.writer.write_header(&page);
        let segment = Segment::new(id, base_seq, path, self.file, Arc::clone(self.writer.map()));
        Ok((Arc::new(segment), self.writer))
    }
}

impl Segment {
    pub(crate) fn new(
        id: u64,
        base_seq: u64,
        path: PathBuf,
        file: File,
        map: Arc<SegmentMap>,
    ) -> Self {
        Segment {
            id,
            base_seq,
            path,
            file,
            map,
            sealed: AtomicBool::new(false),
            sealed_ms: AtomicU64::new(0),
            end_seq: AtomicU64::new(base_seq),
            index: Mutex::new(SeqIndex {
                entries: Vec::new(),
                covered_offset: HEADER_PAGE_BYTES,
                covered_seq: base_seq,
                hopped_from: None,
            }),
            damaged: Mutex::new(Vec::new()),
            uncached: AtomicBool::new(false),
        }
    }

    /// Some of its pages may have left the page cache (see the field).
    pub(crate) fn mark_uncached(&self) {
        self.uncached.store(true, Ordering::Release);
    }

    pub(crate) fn may_be_uncached(&self) -> bool {
        self.uncached.load(Ordering::Acquire)
    }

    /// Seq just past the last committed record (Acquire).
    pub(crate) fn end_seq(&self) -> u64 {
        self.end_seq.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// When the segment was sealed (Unix ms; 0 while it is not): its age for retention.
    pub(crate) fn sealed_unix_ms(&self) -> u64 {
        self.sealed_ms.load(Ordering::Acquire)
    }

    /// Bytes of committed records (header page excluded).
    pub(crate) fn record_bytes(&self) -> u64 {
        self.map.frozen_end() - HEADER_PAGE_BYTES
    }

    /// The committed record area as a parse window.
    pub(crate) fn window(&self) -> Window<'_> {
        let end = self.map.frozen_end();
        Window::new(self.map.frozen(HEADER_PAGE_BYTES..end), HEADER_PAGE_BYTES)
    }

    /// Record the append of a record (already written and frozen by the writer), or a valid
    /// record found by recovery. A record past a damaged stretch (a later seq at a later
    /// offset than the index covers) always gets an index entry, so `locate` hops over the
    /// damage instead of stopping at it.
    pub(crate) fn note_append(&self, seq: u64, offset: u64, next_offset: u64) {
        {
            let mut index = self.index.lock();
            let contiguous = index.covered_seq == seq && index.covered_offset == offset;
            let after_damage = seq > index.covered_seq && offset > index.covered_offset;
            if contiguous || after_damage {
                let due = after_damage
                    || index
                        .entries
                        .last()
                        .is_none_or(|&(_, last)| offset - last >= INDEX_STRIDE);
                if due {
                    index.entries.push((seq, offset));
                }
                index.covered_offset = next_offset;
                index.covered_seq = seq + 1;
            }
        }
        self.end_seq.store(seq + 1, Ordering::Release);
    }

    /// Note that seqs `from..to` of this segment cannot be read; returns how many of them
    /// were not known to be damaged yet. Every damaged seq is counted once per process, by
    /// whoever finds it first (recovery or a reader).
    pub(crate) fn note_damaged(&self, from: u64, to: u64) -> u64 {
        let mut known = self.damaged.lock();
        let mut new = to.saturating_sub(from);
        for &(start, end) in known.iter() {
            new -= end.min(to).saturating_sub(start.max(from));
        }
        if new > 0 {
            // Keep the ranges disjoint and sorted: add, then merge neighbours.
            known.push((from, to));
            known.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(known.len());
            for &(start, end) in known.iter() {
                match merged.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => merged.push((start, end)),
                }
            }
            *known = merged;
        }
        new
    }

    /// Offset of the closest indexed record at or before `seq`: where a resync for `seq`
    /// can start scanning instead of the segment start.
    pub(crate) fn scan_start(&self, seq: u64) -> u64 {
        let index = self.index.lock();
        let after = index
            .entries
            .partition_point(|&(entry_seq, _)| entry_seq <= seq);
        after
            .checked_sub(1)
            .map_or(HEADER_PAGE_BYTES, |position| index.entries[position].1)
    }

    /// Mark state found by recovery: records `base_seq..end_seq` end at the frozen end.
    /// `sealed_ms` is the seal block's time (ignored when not sealed).
    pub(crate) fn set_recovered(&self, end_seq: u64, sealed: bool, sealed_ms: u64) {
        self.end_seq.store(end_seq, Ordering::Release);
        if sealed {
            self.sealed_ms.store(sealed_ms, Ordering::Release);
        }
        self.sealed.store(sealed, Ordering::Release);
    }

    /// Write the seal block and mark the segment sealed. `writer` must be this segment's.
    pub(crate) fn seal(&self, writer: &mut MapWriter) {
        debug_assert!(Arc::ptr_eq(writer.map(), &self.map));
        let end_seq = self.end_seq();
        let seal = Seal {
            segment_id: self.id,
            last_seq: end_seq.wrapping_sub(1),
            record_count: end_seq - self.base_seq,
            end_offset: self.map.frozen_end(),
            sealed_unix_ms: now_unix_ms(),
        };
        let mut page = self.map.read_header_page();
        seal.encode_into(&mut page);
        writer.write_header(&page);
        self.sealed_ms.store(seal.sealed_unix_ms, Ordering::Release);
        self.sealed.store(true, Ordering::Release);
    }

    /// Offset of the record with `seq`, if it is committed here and reachable through valid
    /// headers. Uses the sparse index, extending it lazily (over damaged headers too: the
    /// index resumes at the next valid record, so records past damage stay cheap to find).
    pub(crate) fn locate(&self, seq: u64) -> Option<u64> {
        if seq < self.base_seq || seq >= self.end_seq() {
            return None;
        }
        let window = self.window();
        let mut index = self.index.lock();
        if index.covered_seq <= seq && index.hopped_from.is_none() {
            index.hopped_from = Some(index.covered_offset);
        }
        while index.covered_seq <= seq {
            let (offset, expected) = (index.covered_offset, index.covered_seq);
            let Some(view) = hop(&window, offset, expected) else {
                // A damaged header: carry the index on from the next valid record.
                let next = window.resync_after(offset, self.id, expected)?;
                index.entries.push((next.header.seq, next.offset));
                index.covered_offset = next.offset;
                index.covered_seq = next.header.seq;
                continue;
            };
            let due = index
                .entries
                .last()
                .is_none_or(|&(_, last)| offset - last >= INDEX_STRIDE);
            if due {
                index.entries.push((expected, offset));
            }
            index.covered_offset = view.next_offset;
            index.covered_seq = expected + 1;
            // As it goes: a first lookup deep into a 128 MiB segment hops over all of it.
            self.release_hopped(&mut index);
        }
        let after = index
            .entries
            .partition_point(|&(entry_seq, _)| entry_seq <= seq);
        let (mut at_seq, mut offset) = match after.checked_sub(1) {
            Some(position) => index.entries[position],
            None => (self.base_seq, HEADER_PAGE_BYTES),
        };
        drop(index);
        while at_seq < seq {
            offset = hop(&window, offset, at_seq)?.next_offset;
            at_seq += 1;
        }
        Some(offset)
    }

    /// Hops read a header on every page or so of a recovered segment (whose index starts
    /// empty): the lag-age probe follows the acked position, behind every reader, and would
    /// leave everything behind it resident until the segment is collected, and one lookup
    /// deep into the segment (a reader starting there, the payload-id recovery's search) would
    /// make all of it resident at once. Drop what was hopped over in release steps as the hop
    /// goes (see `residency.rs`).
    fn release_hopped(&self, index: &mut SeqIndex) {
        let Some(from) = index.hopped_from else {
            return;
        };
        if index.covered_offset >= from + RELEASE_STEP_BYTES {
            let bytes = self.map.release(from..index.covered_offset);
            metrics::counter!(crate::metrics::WAL_RELEASED_BYTES_TOTAL).increment(bytes);
            index.hopped_from = Some(index.covered_offset);
        }
    }

    /// Header of the record with `seq` (no checksum check), for lag ages.
    pub(crate) fn header_of(&self, seq: u64) -> Option<RecordView> {
        let offset = self.locate(seq)?;
        self.window().header_at(offset).ok()
    }
}

/// Step over the record at `offset`, which must carry `expected_seq`.
fn hop(window: &Window<'_>, offset: u64, expected_seq: u64) -> Option<RecordView> {
    window
        .header_at(offset)
        .ok()
        .filter(|view| view.header.seq == expected_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_spare_file_name(&spare_file_name(7)), Some(7));
        assert_eq!(parse_spare_file_name("spare-.seg"), None);
    }
}
