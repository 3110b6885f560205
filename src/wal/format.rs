//! The on-disk format: segment header page, seal block and record framing, with their
//! checksums. Pure functions over byte slices — no I/O — so recovery, readers, `wal verify`
//! and the fuzz target share one parser.
//!
//! **Do not add, remove or reorder fields** in anything below without bumping
//! [`FORMAT_VERSION`]: files written by older builds must keep their meaning.
//!
//! Every integer is little-endian. Offsets are absolute within the segment file.
//!
//! ```text
//! segment file (segment_bytes, preallocated, never sparse)
//! ┌──────────────────────────── header page: 4096 bytes ───────────────────────────┐
//! │ 0   segment header (52 B): magic "FFWALSEG" | version u32 | flags u32 |          │
//! │     segment_id u64 | base_seq u64 | created_unix_ms u64 | segment_bytes u64 |    │
//! │     crc32 u32 (over the 48 bytes before it)                                      │
//! │ 512 seal block (52 B), zero until sealed: magic "FFWALSEL" | segment_id u64 |    │
//! │     last_seq u64 | record_count u64 | end_offset u64 | sealed_unix_ms u64 |      │
//! │     crc32 u32 (over the 48 bytes before it)                                      │
//! ├──────────────────────────── records from offset 4096 ──────────────────────────┤
//! │ record header (32 B)                                                             │
//! │   0 magic u16 = 0xF1A6 | 2 kind u8 (1 = data) | 3 tag u8 (caller's)              │
//! │   4 payload_len u32    | 8 crc32 u32           | 12 event_count u32              │
//! │  16 seq u64            | 24 received_at_ms u64                                   │
//! │ payload (payload_len bytes), zero padding to a multiple of 8                     │
//! │ ... next record ...                                                              │
//! │ stale or zero bytes up to segment_bytes                                          │
//! └──────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Record checksum: CRC-32 (IEEE, `crc32fast`) over `segment_id (u64 LE) ‖ header[0..8] ‖
//! header[12..32] ‖ payload`. Seeding with the segment id binds a record to its file, so the
//! stale records left in a recycled segment can never validate in their new home.
//!
//! The seal lives in the header page (not after the last record) so recovery finds it at a
//! fixed offset in O(1); it is written once, when the writer rolls to the next segment.
//! Its `sealed_unix_ms` is the segment's age for `--wal-retention` (`retention.rs`); the
//! records' `received_at_ms` (the caller's clock at append) serves time lookups (`seek.rs`).
//! Neither needed a format change.

use crc32fast::Hasher;

/// Segment header magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FFWALSEG";
/// Seal block magic.
pub const SEAL_MAGIC: [u8; 8] = *b"FFWALSEL";
/// Version written into every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header page; records start right after it.
pub const HEADER_PAGE_BYTES: u64 = 4096;
/// Offset of the seal block inside the header page.
pub const SEAL_OFFSET: usize = 512;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: u64 = 32;
/// Record magic, the first two bytes of every record.
pub const RECORD_MAGIC: u16 = 0xF1A6;
/// The only record kind so far: a data record carrying one payload.
pub const KIND_DATA: u8 = 1;
/// Records start at multiples of this.
pub const RECORD_ALIGN: u64 = 8;
/// How often a search for the next valid record reports how far it got (1 MiB).
pub const SCAN_NOTE_BYTES: u64 = 1 << 20;

const SEGMENT_HEADER_BODY: usize = 48;
const SEAL_BODY: usize = 48;

/// Round `len` up to the record alignment.
pub fn align_up(len: u64) -> u64 {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// Bytes a record with `payload_len` payload bytes occupies on disk.
pub fn record_footprint(payload_len: u64) -> u64 {
    RECORD_HEADER_BYTES + align_up(payload_len)
}

/// The largest payload that fits in an empty segment of `segment_bytes`.
pub fn max_payload_for(segment_bytes: u64) -> u64 {
    let room = segment_bytes.saturating_sub(HEADER_PAGE_BYTES + RECORD_HEADER_BYTES);
    (room / RECORD_ALIGN * RECORD_ALIGN).min(u64::from(u32::MAX))
}

/// Little-endian integers at byte offsets (the caller guarantees the bytes are there).
pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The segment header (first bytes of the header page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: u64,
    /// Seq of the segment's first record (the next seq when it was created).
    pub base_seq: u64,
    pub created_unix_ms: u64,
    pub segment_bytes: u64,
}

impl SegmentHeader {
    /// Write the header into the start of a header page (the rest is left as is).
    pub fn encode_into(&self, page: &mut [u8]) {
        page[0..8].copy_from_slice(&SEGMENT_MAGIC);
        page[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        page[12..16].copy_from_slice(&0u32.to_le_bytes());
        page[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        page[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        page[32..40].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        page[40..48].copy_from_slice(&self.segment_bytes.to_le_bytes());
        let crc = crc32fast::hash(&page[0..SEGMENT_HEADER_BODY]);
        page[48..52].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parse and check a header page's segment header.
    pub fn decode(page: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if page.len() < HEADER_PAGE_BYTES as usize {
            return Err(HeaderError::Truncated);
        }
        if page[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(page, 8);
        if u32_at(page, 48) != crc32fast::hash(&page[0..SEGMENT_HEADER_BODY]) {
            return Err(HeaderError::BadChecksum);
        }
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            segment_id: u64_at(page, 16),
            base_seq: u64_at(page, 24),
            created_unix_ms: u64_at(page, 32),
            segment_bytes: u64_at(page, 40),
        })
    }
}

/// The seal block: written when a segment stops receiving records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub segment_id: u64,
    /// Seq of the last record (`base_seq - 1` when the segment holds none).
    pub last_seq: u64,
    pub record_count: u64,
    /// Offset just past the last record.
    pub end_offset: u64,
    pub sealed_unix_ms: u64,
}

impl Seal {
    /// Write the seal block into its place in a header page.
    pub fn encode_into(&self, page: &mut [u8]) {
        let block = &mut page[SEAL_OFFSET..SEAL_OFFSET + SEAL_BODY + 4];
        block[0..8].copy_from_slice(&SEAL_MAGIC);
        block[8..16].copy_from_slice(&self.segment_id.to_le_bytes());
        block[16..24].copy_from_slice(&self.last_seq.to_le_bytes());
        block[24..32].copy_from_slice(&self.record_count.to_le_bytes());
        block[32..40].copy_from_slice(&self.end_offset.to_le_bytes());
        block[40..48].copy_from_slice(&self.sealed_unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&block[0..SEAL_BODY]);
        block[48..52].copy_from_slice(&crc.to_le_bytes());
    }

    /// The seal block of a header page: `None` when absent (all zero) or invalid.
    pub fn decode(page: &[u8]) -> Option<Seal> {
        let block = page.get(SEAL_OFFSET..SEAL_OFFSET + SEAL_BODY + 4)?;
        if block[0..8] != SEAL_MAGIC || u32_at(block, 48) != crc32fast::hash(&block[0..SEAL_BODY]) {
            return None;
        }
        Some(Seal {
            segment_id: u64_at(block, 8),
            last_seq: u64_at(block, 16),
            record_count: u64_at(block, 24),
            end_offset: u64_at(block, 32),
            sealed_unix_ms: u64_at(block, 40),
        })
    }
}

/// Why a header page was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file shorter than a header page")]
    Truncated,
    #[error("bad segment magic")]
    BadMagic,
    #[error("segment header checksum mismatch")]
    BadChecksum,
    #[error("unsupported segment format version {0}")]
    UnsupportedVersion(u32),
}

/// The fixed fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub tag: u8,
    pub payload_len: u32,
    pub event_count: u32,
    pub seq: u64,
    pub received_at_ms: u64,
}

impl RecordHeader {
    /// The header bytes without the checksum, plus a hasher that has consumed them (seeded
    /// with the segment id). Feed the payload, then [`RecordHeader::finish`].
    fn encode_unsealed(&self) -> [u8; RECORD_HEADER_BYTES as usize] {
        let mut bytes = [0u8; RECORD_HEADER_BYTES as usize];
        bytes[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        bytes[2] = KIND_DATA;
        bytes[3] = self.tag;
        bytes[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.event_count.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.seq.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.received_at_ms.to_le_bytes());
        bytes
    }

    /// Encode with the checksum, given the CRC of the payload alone (`payload_crc` is a
    /// fresh `Hasher` that consumed the payload; computed outside the append lock).
    pub fn encode(
        &self,
        segment_id: u64,
        payload_crc: &Hasher,
    ) -> [u8; RECORD_HEADER_BYTES as usize] {
        let mut bytes = self.encode_unsealed();
        let mut hasher = header_hasher(segment_id, &bytes);
        hasher.combine(payload_crc);
        bytes[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());
        bytes
    }
}

fn header_hasher(segment_id: u64, header: &[u8]) -> Hasher {
    let mut hasher = Hasher::new();
    hasher.update(&segment_id.to_le_bytes());
    hasher.update(&header[0..8]);
    hasher.update(&header[12..32]);
    hasher
}

/// Checksum of a whole record as stored (used by readers and tests).
pub fn record_crc(segment_id: u64, header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = header_hasher(segment_id, header);
    hasher.update(payload);
    hasher.finalize()
}

/// Why the bytes at an offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no room for a record header")]
    Truncated,
    #[error("bad record magic")]
    BadMagic,
    #[error("unknown record kind {0}")]
    BadKind(u8),
    #[error("payload length {0} runs past the end")]
    BadLength(u32),
    #[error("record checksum mismatch")]
    BadChecksum,
    #[error("expected seq {expected}, found {found}")]
    BadSeq { expected: u64, found: u64 },
}

/// A record located in a window of segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    pub header: RecordHeader,
    /// Absolute offset of the record header.
    pub offset: u64,
    /// Absolute offset of the payload.
    pub payload_offset: u64,
    /// Absolute offset of the next record.
    pub next_offset: u64,
}

/// A window of segment bytes: `bytes` are the file's bytes starting at absolute `start`.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub bytes: &'a [u8],
    pub start: u64,
}

impl<'a> Window<'a> {
    pub fn new(bytes: &'a [u8], start: u64) -> Self {
        Window { bytes, start }
    }

    /// Absolute end offset of the window.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Bytes at absolute `[from, to)`; the caller guarantees the range is inside.
    pub fn slice(&self, from: u64, to: u64) -> &'a [u8] {
        &self.bytes[(from - self.start) as usize..(to - self.start) as usize]
    }

    /// Parse the header at `offset` and check that the record fits in the window, without
    /// checking the payload checksum (cheap hops when building an index).
    pub fn header_at(&self, offset: u64) -> Result<RecordView, RecordError> {
        if offset < self.start || offset.saturating_add(RECORD_HEADER_BYTES) > self.end() {
            return Err(RecordError::Truncated);
        }
        let header = self.slice(offset, offset + RECORD_HEADER_BYTES);
        if u16_at(header, 0) != RECORD_MAGIC {
            return Err(RecordError::BadMagic);
        }
        if header[2] != KIND_DATA {
            return Err(RecordError::BadKind(header[2]));
        }
        let payload_len = u32_at(header, 4);
        let next_offset = offset + record_footprint(u64::from(payload_len));
        if next_offset > self.end() {
            return Err(RecordError::BadLength(payload_len));
        }
        Ok(RecordView {
            header: RecordHeader {
                tag: header[3],
                payload_len,
                event_count: u32_at(header, 12),
                seq: u64_at(header, 16),
                received_at_ms: u64_at(header, 24),
            },
            offset,
            payload_offset: offset + RECORD_HEADER_BYTES,
            next_offset,
        })
    }

    /// Parse and fully validate the record at `offset` (framing and checksum).
    pub fn record_at(&self, offset: u64, segment_id: u64) -> Result<RecordView, RecordError> {
        let view = self.header_at(offset)?;
        let header = self.slice(offset, offset + RECORD_HEADER_BYTES);
        let payload = self.payload(&view);
        if u32_at(header, 8) != record_crc(segment_id, header, payload) {
            return Err(RecordError::BadChecksum);
        }
        Ok(view)
    }

    /// Validate the record at `offset` and require it to carry `expected_seq`.
    pub fn record_with_seq(
        &self,
        offset: u64,
        segment_id: u64,
        expected_seq: u64,
    ) -> Result<RecordView, RecordError> {
        let view = self.record_at(offset, segment_id)?;
        if view.header.seq != expected_seq {
            return Err(RecordError::BadSeq {
                expected: expected_seq,
                found: view.header.seq,
            });
        }
        Ok(view)
    }

    /// The payload bytes of a record parsed from this window.
    pub fn payload(&self, view: &RecordView) -> &'a [u8] {
        self.slice(
            view.payload_offset,
            view.payload_offset + u64::from(view.header.payload_len),
        )
    }

    /// Resynchronise after a bad record: the first valid record at an aligned offset
    /// `>= from` whose seq is at least `min_seq`. Stale records of a recycled segment never
    /// match (their checksum is bound to another segment id, and their seqs are older).
    /// Linear in the window, O(1) memory.
    pub fn find_valid_from(&self, from: u64, segment_id: u64, min_seq: u64) -> Option<RecordView> {
        self.find_valid_from_noting(from, segment_id, min_seq, &mut |_| {})
    }

    /// [`Self::find_valid_from`], calling `passed(offset)` at every [`SCAN_NOTE_BYTES`]
    /// boundary it searches past (everything before `offset` is done with), so a caller can
    /// drop what a long search has read.
    fn find_valid_from_noting(
        &self,
        from: u64,
        segment_id: u64,
        min_seq: u64,
        passed: &mut dyn FnMut(u64),
    ) -> Option<RecordView> {
        let mut offset = align_up(from.max(self.start));
        while offset.saturating_add(RECORD_HEADER_BYTES) <= self.end() {
            if offset.is_multiple_of(SCAN_NOTE_BYTES) {
                passed(offset);
            }
            let at = (offset - self.start) as usize;
            // Cheap pre-filter before the header parse and the checksum.
            if u16_at(self.bytes, at) == RECORD_MAGIC
                && self.bytes[at + 2] == KIND_DATA
                && u64_at(self.bytes, at + 16) >= min_seq
            {
                if let Ok(view) = self.record_at(offset, segment_id) {
                    return Some(view);
                }
            }
            offset += RECORD_ALIGN;
        }
        None
    }

    /// The next valid record after an invalid one at `bad_offset` that was expected to carry
    /// `expected_seq`: the first valid record at an aligned offset `>= bad_offset` with a seq
    /// `>= expected_seq` that leaves at least a record header's worth of bytes for every seq
    /// it skips (so a stray lookalike far ahead cannot swallow a run of real records).
    pub fn resync_after(
        &self,
        bad_offset: u64,
        segment_id: u64,
        expected_seq: u64,
    ) -> Option<RecordView> {
        self.resync_after_noting(bad_offset, segment_id, expected_seq, &mut |_| {})
    }

    /// [`Self::resync_after`], noting its progress as [`Self::find_valid_from_noting`] does.
    fn resync_after_noting(
        &self,
        bad_offset: u64,
        segment_id: u64,
        expected_seq: u64,
        passed: &mut dyn FnMut(u64),
    ) -> Option<RecordView> {
        let mut from = bad_offset;
        while let Some(view) = self.find_valid_from_noting(from, segment_id, expected_seq, passed) {
            let skipped = view.header.seq - expected_seq;
            let room = (view.offset - bad_offset) / RECORD_HEADER_BYTES;
            if skipped <= room {
                return Some(view);
            }
            from = view.offset + RECORD_ALIGN;
        }
        None
    }

    /// Whether a record header at `offset` carries the magic, the data kind and `seq`
    /// (whatever its length and checksum say): proof that record `seq` was written here.
    pub fn names_seq(&self, offset: u64, seq: u64) -> bool {
        if offset < self.start || offset.saturating_add(RECORD_HEADER_BYTES) > self.end() {
            return false;
        }
        let header = self.slice(offset, offset + RECORD_HEADER_BYTES);
        u16_at(header, 0) == RECORD_MAGIC && header[2] == KIND_DATA && u64_at(header, 16) == seq
    }
}

/// Outcome of scanning records from some offset to the first invalid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixScan {
    /// Offset just past the last valid record (where the next record goes).
    pub end_offset: u64,
    /// Seq the next record must carry.
    pub next_seq: u64,
    /// Valid records found.
    pub records: u64,
    /// Why the scan stopped before the window's end, if it did.
    pub stopped_by: Option<RecordError>,
}

/// Walk valid records from `offset` expecting `next_seq`, stopping at the first invalid one
/// (a torn tail). Calls `on_record` for each valid record. O(1) memory.
pub fn scan_valid_prefix(
    window: &Window<'_>,
    segment_id: u64,
    mut offset: u64,
    mut next_seq: u64,
    mut on_record: impl FnMut(&RecordView),
) -> PrefixScan {
    let mut records = 0;
    loop {
        if offset.saturating_add(RECORD_HEADER_BYTES) > window.end() {
            return PrefixScan {
                end_offset: offset,
                next_seq,
                records,
                stopped_by: None,
            };
        }
        match window.record_with_seq(offset, segment_id, next_seq) {
            Ok(view) => {
                on_record(&view);
                records += 1;
                next_seq += 1;
                offset = view.next_offset;
            }
            Err(error) => {
                return PrefixScan {
                    end_offset: offset,
                    next_seq,
                    records,
                    stopped_by: Some(error),
                };
            }
        }
    }
}

/// How a damaged stretch of an unsealed segment was recognised (see [`scan_tail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The record's header still names the expected seq and its length leads exactly to the
    /// next valid record: only that record's bytes are bad.
    Record,
    /// The length (or the whole header) cannot be trusted: the scan resynchronised on the
    /// next valid, checksummed record with a later seq at an aligned offset.
    Span,
    /// The last record is invalid but its header still names the expected seq: a torn or
    /// damaged final append. Nothing follows it; its seq is retired, never handed out again.
    TornRecord,
}

/// Seqs `first_seq..end_seq` that cannot be read, starting at byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedSpan {
    pub offset: u64,
    pub first_seq: u64,
    pub end_seq: u64,
    pub error: RecordError,
    pub kind: DamageKind,
}

impl DamagedSpan {
    /// Number of seqs lost.
    pub fn lost(&self) -> u64 {
        self.end_seq - self.first_seq
    }
}

/// Outcome of [`scan_tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailScan {
    /// Where the records end: just past the last valid record, or past the header of a
    /// retired torn record.
    pub end_offset: u64,
    /// The seq after the last record (valid or retired).
    pub next_seq: u64,
    /// Valid records found.
    pub records: u64,
    /// Damaged stretches, in order. Valid records follow every one except a
    /// [`DamageKind::TornRecord`], which is always last.
    pub damage: Vec<DamagedSpan>,
    /// Why the scan stopped at `end_offset` without a retired record (a torn or stale tail
    /// that is cut), if the bytes there are not simply the end of the window.
    pub cut_by: Option<RecordError>,
}

impl TailScan {
    /// Seqs lost to damage (retired torn record included).
    pub fn lost(&self) -> u64 {
        self.damage.iter().map(DamagedSpan::lost).sum()
    }

    /// Whether valid records follow an invalid one (what strict recovery refuses).
    pub fn has_valid_records_after_damage(&self) -> bool {
        self.damage
            .iter()
            .any(|span| span.kind != DamageKind::TornRecord)
    }
}

/// Scan the records of an unsealed segment the way recovery does, telling a torn tail from
/// damage (the three cases of the module doc of `wal`):
///
/// * valid records are followed from `offset`, expecting consecutive seqs from `next_seq`;
/// * at an invalid record, the scan looks for the next valid, checksummed record at an
///   aligned offset whose seq is at least the expected one and which leaves room for the
///   records it skips (32 bytes each). Found: the seqs in between are a [`DamagedSpan`] and
///   the scan goes on from there. Not found: this is the tail;
/// * at the tail, a header that still names the expected seq means that record was written
///   (its seq may have been read and delivered): it is retired as a
///   [`DamageKind::TornRecord`]. Anything else (zeros, stale bytes of a recycled file, a
///   header torn before its seq) is cut.
///
/// `on_record` is called for every valid record, in order. O(1) memory besides `damage`.
pub fn scan_tail(
    window: &Window<'_>,
    segment_id: u64,
    offset: u64,
    next_seq: u64,
    on_record: impl FnMut(&RecordView),
) -> TailScan {
    scan_tail_noting(window, segment_id, offset, next_seq, on_record, &mut |_| {})
}

/// [`scan_tail`], also calling `passed(offset)` while it searches past damage (the search for
/// the next valid record reads the rest of the segment, zeros included, after a torn tail),
/// so the caller can drop what the scan has read (see `Window::find_valid_from_noting`).
pub fn scan_tail_noting(
    window: &Window<'_>,
    segment_id: u64,
    mut offset: u64,
    mut next_seq: u64,
    mut on_record: impl FnMut(&RecordView),
    passed: &mut dyn FnMut(u64),
) -> TailScan {
    let mut records = 0;
    let mut damage = Vec::new();
    loop {
        let scan = scan_valid_prefix(window, segment_id, offset, next_seq, &mut on_record);
        records += scan.records;
        (offset, next_seq) = (scan.end_offset, scan.next_seq);
        let Some(error) = scan.stopped_by else {
            return TailScan {
                end_offset: offset,
                next_seq,
                records,
                damage,
                cut_by: None,
            };
        };
        if let Some(next) = window.resync_after_noting(offset, segment_id, next_seq, passed) {
            let header_trusted = window
                .header_at(offset)
                .is_ok_and(|view| view.header.seq == next_seq && view.next_offset == next.offset);
            damage.push(DamagedSpan {
                offset,
                first_seq: next_seq,
                end_seq: next.header.seq,
                error,
                kind: if header_trusted {
                    DamageKind::Record
                } else {
                    DamageKind::Span
                },
            });
            (offset, next_seq) = (next.offset, next.header.seq);
            continue;
        }
        if window.names_seq(offset, next_seq) {
            damage.push(DamagedSpan {
                offset,
                first_seq: next_seq,
                end_seq: next_seq + 1,
                error,
                kind: DamageKind::TornRecord,
            });
            return TailScan {
                end_offset: offset + RECORD_HEADER_BYTES,
                next_seq: next_seq + 1,
                records,
                damage,
                cut_by: None,
            };
        }
        return TailScan {
            end_offset: offset,
            next_seq,
            records,
            damage,
            cut_by: Some(error),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_record(segment_id: u64, header: RecordHeader, payload: &[u8]) -> Vec<u8> {
        let mut payload_crc = Hasher::new();
        payload_crc.update(payload);
        let mut out = header.encode(segment_id, &payload_crc).to_vec();
        out.extend_from_slice(payload);
        out.resize(record_footprint(payload.len() as u64) as usize, 0);
        out
    }

    fn header(seq: u64, len: usize) -> RecordHeader {
        RecordHeader {
            tag: 3,
            payload_len: len as u32,
            event_count: 2,
            seq,
            received_at_ms: 99,
        }
    }

    #[test]
    fn record_round_trips_and_binds_to_its_segment() {
        let bytes = encode_record(7, header(5, 11), b"hello world");
        let window = Window::new(&bytes, 4096);
        let view = window.record_with_seq(4096, 7, 5).unwrap();
        assert_eq!(view.header, header(5, 11));
        assert_eq!(window.payload(&view), b"hello world");
        assert_eq!(view.next_offset, 4096 + 32 + 16);
        assert_eq!(window.record_at(4096, 8), Err(RecordError::BadChecksum));
        assert_eq!(
            window.record_with_seq(4096, 7, 6),
            Err(RecordError::BadSeq {
                expected: 6,
                found: 5
            })
        );
    }

    #[test]
    fn crc_combine_matches_a_single_pass() {
        let payload = b"payload bytes";
        let bytes = encode_record(42, header(1, payload.len()), payload);
        let stored = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        assert_eq!(stored, record_crc(42, &bytes[..32], payload));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode_record(1, header(1, 5), b"abcde");
        for bit in 0..(bytes.len() * 8) {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let window = Window::new(&damaged, 4096);
            let intact = window
                .record_with_seq(4096, 1, 1)
                .map(|view| window.payload(&view).to_vec());
            // Flipping a padding bit leaves the record valid; anything else must not.
            if bit / 8 >= 32 + 5 {
                assert_eq!(intact.unwrap(), b"abcde");
            } else {
                assert!(intact.is_err(), "bit {bit} flip went unnoticed");
            }
        }
    }

    #[test]
    fn lengths_past_the_window_are_rejected_not_followed() {
        let mut bytes = encode_record(1, header(1, 5), b"abcde");
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let window = Window::new(&bytes, 4096);
        assert_eq!(
            window.header_at(4096),
            Err(RecordError::BadLength(u32::MAX))
        );
        assert_eq!(window.header_at(4096 + 40), Err(RecordError::Truncated));
        assert_eq!(window.header_at(0), Err(RecordError::Truncated));
    }

    #[test]
    fn a_scan_past_a_torn_tail_notes_its_progress_through_the_zeros() {
        let mut bytes = Vec::new();
        for seq in 1..4 {
            bytes.extend(encode_record(3, header(seq, 100), &[seq as u8; 100]));
        }
        bytes.extend(encode_record(3, header(4, 100), &[4; 100])[..60].iter());
        bytes.resize(bytes.len() + 3 * SCAN_NOTE_BYTES as usize, 0);
        let window = Window::new(&bytes, 4096);
        let (mut seen, mut passed) = (Vec::new(), Vec::new());
        let scan = scan_tail_noting(&window, 3, 4096, 1, |v| seen.push(v.header.seq), &mut |o| {
            passed.push(o)
        });
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(scan.next_seq, 5, "the torn record's seq is retired");
        let end = window.end();
        assert_eq!(
            passed,
            (1..=end / SCAN_NOTE_BYTES)
                .map(|n| n * SCAN_NOTE_BYTES)
                .collect::<Vec<_>>(),
            "every MiB of the search, in order, up to the window's end ({end})"
        );
    }

    #[test]
    fn prefix_scan_stops_at_the_first_bad_record_and_resync_finds_the_next() {
        let mut bytes = Vec::new();
        for seq in 10..15 {
            bytes.extend(encode_record(3, header(seq, 100), &[seq as u8; 100]));
        }
        let footprint = record_footprint(100);
        bytes[(2 * footprint + 40) as usize] ^= 0xFF; // damage seq 12's payload
        let window = Window::new(&bytes, 4096);
        let scan = scan_valid_prefix(&window, 3, 4096, 10, |_| {});
        assert_eq!(scan.records, 2);
        assert_eq!(scan.next_seq, 12);
        assert_eq!(scan.end_offset, 4096 + 2 * footprint);
        assert_eq!(scan.stopped_by, Some(RecordError::BadChecksum));
        let next = window.find_valid_from(scan.end_offset + 8, 3, 12).unwrap();
        assert_eq!(next.header.seq, 13);
        assert!(window.find_valid_from(scan.end_offset + 8, 4, 12).is_none());
    }

    #[test]
    fn segment_header_and_seal_round_trip() {
        let mut page = vec![0u8; HEADER_PAGE_BYTES as usize];
        let header = SegmentHeader {
            segment_id: 9,
            base_seq: 100,
            created_unix_ms: 5,
            segment_bytes: 1 << 20,
        };
        header.encode_into(&mut page);
        assert_eq!(SegmentHeader::decode(&page), Ok(header));
        assert_eq!(Seal::decode(&page), None);
        let seal = Seal {
            segment_id: 9,
            last_seq: 150,
            record_count: 51,
            end_offset: 9000,
            sealed_unix_ms: 6,
        };
        seal.encode_into(&mut page);
        assert_eq!(Seal::decode(&page), Some(seal));
        page[SEAL_OFFSET + 20] ^= 1;
        assert_eq!(Seal::decode(&page), None);
        page[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&page), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn max_payload_fills_an_empty_segment_exactly() {
        let segment_bytes = 1 << 20;
        let max = max_payload_for(segment_bytes);
        assert_eq!(HEADER_PAGE_BYTES + record_footprint(max), segment_bytes);
    }
}
