//! Read-only inspection and verification of a WAL directory, for operators
//! (`flagstream wal inspect <dir>` and `flagstream wal verify <dir>`).
//!
//! Neither function takes the directory lock or writes anything, so both can run next to a
//! live server (the newest segment may then be caught mid-append; run `verify` on a stopped
//! instance for an exact answer). Files are read with plain `pread`, one segment image at a
//! time, so memory stays at one segment whatever the size of the log.
//!
//! * [`inspect`] summarises: segments (id, seq range, records, damaged records, bytes, sealed
//!   or not), spares, cursors with their persisted state and lag. Every record checksum is
//!   checked (each segment image is read anyway), and the unsealed tail is scanned exactly as
//!   recovery does (`format::scan_tail`).
//! * [`verify`] checks every header, seal and record checksum, seq continuity within and
//!   across segments, and every cursor file. Anything recovery would drop or a reader would
//!   skip is a problem; [`VerifyReport::is_clean`] says whether there is none.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cursor::{decode_file, name_hash, validate_name, CURSOR_FILE_BYTES};
use super::format::{
    scan_tail, scan_valid_prefix, DamageKind, Seal, SegmentHeader, Window, HEADER_PAGE_BYTES,
};
use super::layout::{self, Layout};
use super::segment::{parse_segment_file_name, parse_spare_file_name};
use super::WalError;

/// One segment as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    pub id: u64,
    pub file: String,
    pub file_bytes: u64,
    pub base_seq: u64,
    /// Seq of the last record, if any.
    pub last_seq: Option<u64>,
    /// Seqs the segment holds (`base_seq ..= last_seq`), unreadable ones included.
    pub records: u64,
    /// Seqs of this segment whose record cannot be read (damaged); readers skip them.
    pub damaged_records: u64,
    /// Bytes of records (header page excluded).
    pub record_bytes: u64,
    pub sealed: bool,
    pub created_unix_ms: u64,
    /// Why the segment could not be read, if it could not.
    pub problem: Option<String>,
}

/// One cursor file as found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct CursorSummary {
    pub name: String,
    /// Every record before this seq is delivered (or dead-lettered).
    pub acked_seq: u64,
    /// Events already delivered inside record `acked_seq`.
    pub acked_event: u32,
    /// The opaque state its owner keeps with the position (delivery: retry state, batch
    /// plan, counters), in hex; `flagstream wal inspect` decodes it for display.
    pub blob_hex: String,
    /// Slot generation (number of persists).
    pub generation: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub problem: Option<String>,
}

/// What `flagstream wal inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub dir: PathBuf,
    pub segments: Vec<SegmentSummary>,
    pub spares: u64,
    /// Bytes of all segment and spare files.
    pub bytes_on_disk: u64,
    /// Oldest stored seq (equals `next_seq` when nothing is stored).
    pub first_seq: u64,
    /// Seq the next append will get.
    pub next_seq: u64,
    pub records: u64,
    /// Stored seqs whose record cannot be read (skipped by readers, lost for destinations).
    pub damaged_records: u64,
    pub cursors: Vec<CursorSummary>,
    /// Files recovery set aside (`*.corrupt`) or does not know.
    pub other_files: Vec<String>,
}

/// One thing `verify` found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub file: String,
    pub offset: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

/// What `flagstream wal verify` prints.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    pub segments_checked: u64,
    pub records_checked: u64,
    pub bytes_checked: u64,
    pub cursors_checked: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// No problem found: at least one segment was checked, every checksum matched, seqs are
    /// continuous, cursors are readable. A log without segments is never called clean:
    /// nothing was verified.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.segments_checked > 0
    }
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> WalError {
    move |source| WalError::Io { context, source }
}

/// The files of a WAL directory, classified.
struct Listing {
    segments: Vec<(u64, PathBuf)>,
    spares: Vec<PathBuf>,
    cursors: Vec<(String, PathBuf)>,
    other: Vec<String>,
}

fn list(layout: &Layout) -> Result<Listing, WalError> {
    let wal_dir = &layout.segments;
    let segment_dir_name = file_name(wal_dir);
    let mut listing = Listing {
        segments: Vec::new(),
        spares: Vec::new(),
        cursors: Vec::new(),
        other: Vec::new(),
    };
    for entry in
        std::fs::read_dir(wal_dir).map_err(io_error(format!("listing {}", wal_dir.display())))?
    {
        let entry = entry.map_err(io_error(format!("listing {}", wal_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = parse_segment_file_name(&name) {
            listing.segments.push((id, entry.path()));
        } else if parse_spare_file_name(&name).is_some() {
            listing.spares.push(entry.path());
        } else {
            listing.other.push(format!("{segment_dir_name}/{name}"));
        }
    }
    listing.segments.sort();
    let cursor_dir = &layout.cursors;
    if cursor_dir.is_dir() {
        for entry in std::fs::read_dir(cursor_dir)
            .map_err(io_error(format!("listing {}", cursor_dir.display())))?
        {
            let entry = entry.map_err(io_error(format!("listing {}", cursor_dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".cur") {
                Some(cursor) if validate_name(cursor).is_ok() => {
                    listing.cursors.push((cursor.to_owned(), entry.path()))
                }
                _ => listing.other.push(format!("cursors/{name}")),
            }
        }
    }
    listing.cursors.sort();
    listing.other.sort();
    Ok(listing)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

/// Read a whole file into `buffer` (reused between segments).
fn read_image(path: &Path, buffer: &mut Vec<u8>) -> Result<(), WalError> {
    let file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_error(format!("reading {}", path.display())))?
        .len();
    buffer.clear();
    buffer.resize(len as usize, 0);
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file
            .read_at(&mut buffer[filled..], filled as u64)
            .map_err(io_error(format!("reading {}", path.display())))?;
        if read == 0 {
            buffer.truncate(filled);
            break;
        }
        filled += read;
    }
    Ok(())
}

/// Per-segment facts shared by inspect and verify.
struct SegmentScan {
    summary: SegmentSummary,
    /// Problems found (verify only fills these beyond the header check).
    problems: Vec<Problem>,
    records_checked: u64,
}

/// Summarise and fully verify one segment image (every checksum: the image is read anyway).
fn scan_segment(id: u64, path: &Path, image: &[u8]) -> SegmentScan {
    let file = file_name(path);
    let mut summary = SegmentSummary {
        id,
        file: file.clone(),
        file_bytes: image.len() as u64,
        base_seq: 0,
        last_seq: None,
        records: 0,
        damaged_records: 0,
        record_bytes: 0,
        sealed: false,
        created_unix_ms: 0,
        problem: None,
    };
    let mut problems = Vec::new();
    let problem = |offset: Option<u64>, seq: Option<u64>, message: String| Problem {
        file: file.clone(),
        offset,
        seq,
        message,
    };
    let header = match SegmentHeader::decode(image) {
        Ok(header) if header.segment_id == id => header,
        Ok(header) => {
            let message = format!(
                "header names segment {} (an interrupted roll or a misplaced file)",
                header.segment_id
            );
            problems.push(problem(Some(0), None, message.clone()));
            summary.problem = Some(message);
            return SegmentScan {
                summary,
                problems,
                records_checked: 0,
            };
        }
        Err(error) => {
            let message = format!("unreadable segment header: {error}");
            problems.push(problem(Some(0), None, message.clone()));
            summary.problem = Some(message);
            return SegmentScan {
                summary,
                problems,
                records_checked: 0,
            };
        }
    };
    summary.base_seq = header.base_seq;
    summary.created_unix_ms = header.created_unix_ms;
    if (image.len() as u64) < header.segment_bytes {
        let message = format!(
            "file is {} bytes, its header says {}",
            image.len(),
            header.segment_bytes
        );
        problems.push(problem(None, None, message.clone()));
        summary.problem = Some(message);
    }
    let seal = Seal::decode(image)
        .filter(|seal| seal.segment_id == id && seal.end_offset <= image.len() as u64);
    let records_area = image.get(HEADER_PAGE_BYTES as usize..).unwrap_or_default();
    let window = Window::new(records_area, HEADER_PAGE_BYTES);
    let mut records_checked = 0;
    match seal {
        Some(seal) => {
            summary.sealed = true;
            summary.records = seal.record_count;
            summary.record_bytes = seal.end_offset.saturating_sub(HEADER_PAGE_BYTES);
            let sealed_window = Window::new(
                image
                    .get(HEADER_PAGE_BYTES as usize..seal.end_offset as usize)
                    .unwrap_or_default(),
                HEADER_PAGE_BYTES,
            );
            let mut offset = HEADER_PAGE_BYTES;
            let mut expected = header.base_seq;
            let end_seq = header.base_seq.saturating_add(seal.record_count);
            while offset < seal.end_offset && expected < end_seq {
                let scan = scan_valid_prefix(&sealed_window, id, offset, expected, |_| {});
                records_checked += scan.records;
                offset = scan.end_offset;
                expected = scan.next_seq;
                let Some(error) = scan.stopped_by else { break };
                if expected >= end_seq {
                    break;
                }
                match sealed_window.resync_after(offset, id, expected) {
                    Some(next) => {
                        summary.damaged_records += next.header.seq - expected;
                        problems.push(problem(
                            Some(offset),
                            Some(expected),
                            format!("{error}: records {expected}..={} are unreadable and will be skipped", next.header.seq - 1),
                        ));
                        offset = next.offset;
                        expected = next.header.seq;
                    }
                    None => {
                        summary.damaged_records += end_seq - expected;
                        problems.push(problem(
                            Some(offset),
                            Some(expected),
                            format!("{error}: records {expected}..={} are unreadable and will be skipped", end_seq - 1),
                        ));
                        expected = end_seq;
                        offset = seal.end_offset;
                    }
                }
            }
            if expected == end_seq && offset != seal.end_offset && problems.is_empty() {
                problems.push(problem(
                    Some(offset),
                    None,
                    format!(
                        "records end at offset {offset} but the seal says {}",
                        seal.end_offset
                    ),
                ));
            }
        }
        None => {
            let tail = scan_tail(&window, id, HEADER_PAGE_BYTES, header.base_seq, |_| {});
            records_checked = tail.records;
            summary.records = tail.next_seq - header.base_seq;
            summary.record_bytes = tail.end_offset - HEADER_PAGE_BYTES;
            summary.damaged_records = tail.lost();
            for span in &tail.damage {
                let outcome = match span.kind {
                    DamageKind::TornRecord => "the last record is torn or damaged: recovery retires its seq",
                    DamageKind::Record | DamageKind::Span => {
                        "valid records follow: recovery keeps them and skips only these seqs (strict recovery refuses to open)"
                    }
                };
                problems.push(problem(
                    Some(span.offset),
                    Some(span.first_seq),
                    format!(
                        "{}: records {}..={} are unreadable; {outcome}",
                        span.error,
                        span.first_seq,
                        span.end_seq - 1
                    ),
                ));
            }
        }
    }
    if summary.records > 0 {
        summary.last_seq = Some(header.base_seq + summary.records - 1);
    }
    SegmentScan {
        summary,
        problems,
        records_checked,
    }
}

/// Offset of record `seq` in a segment image, by hopping headers (no checksums).
fn offset_of(image: &[u8], base_seq: u64, seq: u64) -> Option<u64> {
    let window = Window::new(image.get(HEADER_PAGE_BYTES as usize..)?, HEADER_PAGE_BYTES);
    let mut offset = HEADER_PAGE_BYTES;
    for expected in base_seq..seq {
        let view = window
            .header_at(offset)
            .ok()
            .filter(|view| view.header.seq == expected)?;
        offset = view.next_offset;
    }
    Some(offset)
}

fn read_cursor(name: &str, path: &Path) -> (CursorSummary, Option<String>) {
    let mut bytes = vec![0u8; CURSOR_FILE_BYTES as usize];
    let loaded = File::open(path)
        .and_then(|file| file.read_at(&mut bytes, 0))
        .map(|read| {
            bytes.truncate(read);
            decode_file(&bytes, name_hash(name))
        });
    let mut summary = CursorSummary {
        name: name.to_owned(),
        acked_seq: 0,
        acked_event: 0,
        blob_hex: String::new(),
        generation: 0,
        lag_records: 0,
        lag_bytes: 0,
        problem: None,
    };
    let problem = match loaded {
        Ok(Some(slot)) => {
            summary.acked_seq = slot.state.acked.seq;
            summary.acked_event = slot.state.acked.event;
            summary.blob_hex = slot
                .state
                .blob
                .as_bytes()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            summary.generation = slot.generation;
            None
        }
        Ok(None) => {
            Some("no valid slot: the cursor will restart from the oldest stored record".to_owned())
        }
        Err(error) => Some(format!("unreadable: {error}")),
    };
    summary.problem = problem.clone();
    (summary, problem)
}

/// Summarise a WAL without modifying it. `dir` is the WAL directory or the data dir that
/// holds it (see [`layout::find`](super::layout::find)).
pub fn inspect(dir: &Path) -> Result<InspectReport, WalError> {
    let layout = layout::find(dir)?;
    let listing = list(&layout)?;
    let mut image = Vec::new();
    let mut segments = Vec::new();
    let mut bytes_on_disk = 0;
    for (id, path) in &listing.segments {
        read_image(path, &mut image)?;
        bytes_on_disk += image.len() as u64;
        segments.push(scan_segment(*id, path, &image).summary);
    }
    for spare in &listing.spares {
        bytes_on_disk += std::fs::metadata(spare).map_or(0, |metadata| metadata.len());
    }
    let readable: Vec<&SegmentSummary> = segments
        .iter()
        .filter(|segment| segment.problem.is_none())
        .collect();
    let next_seq = readable
        .last()
        .map_or(1, |segment| segment.base_seq + segment.records);
    let first_seq = readable
        .first()
        .map_or(next_seq, |segment| segment.base_seq);
    let records = readable.iter().map(|segment| segment.records).sum();
    let damaged_records = readable.iter().map(|segment| segment.damaged_records).sum();
    let mut cursors = Vec::new();
    for (name, path) in &listing.cursors {
        let (mut cursor, _) = read_cursor(name, path);
        let from = cursor.acked_seq.max(first_seq);
        cursor.lag_records = next_seq.saturating_sub(from);
        for segment in &readable {
            let end_seq = segment.base_seq + segment.records;
            if end_seq <= from {
                continue;
            }
            if segment.base_seq >= from {
                cursor.lag_bytes += segment.record_bytes;
                continue;
            }
            read_image(&layout.segments.join(&segment.file), &mut image)?;
            let start = offset_of(&image, segment.base_seq, from).unwrap_or(HEADER_PAGE_BYTES);
            cursor.lag_bytes += (HEADER_PAGE_BYTES + segment.record_bytes).saturating_sub(start);
        }
        cursors.push(cursor);
    }
    Ok(InspectReport {
        dir: layout.root,
        segments,
        spares: listing.spares.len() as u64,
        bytes_on_disk,
        first_seq,
        next_seq,
        records,
        damaged_records,
        cursors,
        other_files: listing.other,
    })
}

/// Check every checksum, seq and cursor of a WAL without modifying it. `dir` is the WAL
/// directory or the data dir that holds it; a directory holding neither is an error.
pub fn verify(dir: &Path) -> Result<VerifyReport, WalError> {
    let layout = layout::find(dir)?;
    let listing = list(&layout)?;
    let mut report = VerifyReport {
        dir: layout.root.clone(),
        segments_checked: 0,
        records_checked: 0,
        bytes_checked: 0,
        cursors_checked: 0,
        problems: Vec::new(),
    };
    let mut image = Vec::new();
    let mut previous: Option<(u64, u64)> = None; // (id, end_seq)
    let newest = listing.segments.last().map(|(id, _)| *id);
    for (id, path) in &listing.segments {
        read_image(path, &mut image)?;
        let scan = scan_segment(*id, path, &image);
        report.segments_checked += 1;
        report.records_checked += scan.records_checked;
        report.bytes_checked += scan.summary.record_bytes;
        report.problems.extend(scan.problems);
        let summary = scan.summary;
        if summary.problem.is_some() {
            continue;
        }
        if !summary.sealed && Some(*id) != newest {
            report.problems.push(Problem {
                file: summary.file.clone(),
                offset: None,
                seq: None,
                message:
                    "older segment is not sealed (a crash during a roll; recovery will seal it)"
                        .into(),
            });
        }
        if let Some((previous_id, end_seq)) = previous {
            if previous_id + 1 != *id {
                report.problems.push(Problem {
                    file: summary.file.clone(),
                    offset: None,
                    seq: None,
                    message: format!("segment ids jump from {previous_id} to {id} (files missing)"),
                });
            }
            if summary.base_seq != end_seq {
                report.problems.push(Problem {
                    file: summary.file.clone(),
                    offset: None,
                    seq: Some(end_seq),
                    message: format!(
                        "starts at seq {} but the previous segment ends before seq {end_seq}",
                        summary.base_seq
                    ),
                });
            }
        }
        previous = Some((*id, summary.base_seq + summary.records));
    }
    let first_seq = oldest_stored_seq(&listing)?;
    for (name, path) in &listing.cursors {
        report.cursors_checked += 1;
        let (cursor, problem) = read_cursor(name, path);
        if let Some(message) = problem {
            report.problems.push(Problem {
                file: format!("cursors/{name}.cur"),
                offset: None,
                seq: None,
                message,
            });
        } else if let Some(first_seq) = first_seq.filter(|first| cursor.acked_seq < *first) {
            report.problems.push(Problem {
                file: format!("cursors/{name}.cur"),
                offset: None,
                seq: Some(cursor.acked_seq),
                message: format!(
                    "cursor needs seq {} but the oldest stored record is {first_seq}",
                    cursor.acked_seq
                ),
            });
        }
    }
    for other in &listing.other {
        if other.ends_with(".corrupt") {
            report.problems.push(Problem {
                file: other.clone(),
                offset: None,
                seq: None,
                message: "set aside by recovery as unreadable; inspect it, then delete it".into(),
            });
        }
    }
    Ok(report)
}

/// Oldest stored seq from the first readable segment header, if any.
fn oldest_stored_seq(listing: &Listing) -> Result<Option<u64>, WalError> {
    for (id, path) in &listing.segments {
        let file = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
        let mut page = vec![0u8; HEADER_PAGE_BYTES as usize];
        let read = file
            .read_at(&mut page, 0)
            .map_err(io_error(format!("reading {}", path.display())))?;
        page.truncate(read);
        if let Ok(header) = SegmentHeader::decode(&page) {
            if header.segment_id == *id {
                return Ok(Some(header.base_seq));
            }
        }
    }
    Ok(None)
}

impl fmt::Display for InspectReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(out, "write-ahead log {}", self.dir.display())?;
        writeln!(
            out,
            "  seqs {}..{} ({} records stored), {} segment(s) + {} spare(s), {} bytes on disk",
            self.first_seq,
            self.next_seq,
            self.records,
            self.segments.len(),
            self.spares,
            self.bytes_on_disk
        )?;
        if self.damaged_records > 0 {
            writeln!(
                out,
                "  DAMAGED: {} stored record(s) cannot be read and are skipped by every reader (run `wal verify` for where)",
                self.damaged_records
            )?;
        }
        writeln!(out, "\nsegments")?;
        writeln!(
            out,
            "  {:>8}  {:>12}  {:>12}  {:>9}  {:>12}  state",
            "id", "first seq", "last seq", "records", "bytes"
        )?;
        for segment in &self.segments {
            let last = segment
                .last_seq
                .map_or_else(|| "-".to_owned(), |seq| seq.to_string());
            let mut state = match (&segment.problem, segment.sealed) {
                (Some(problem), _) => format!("UNREADABLE: {problem}"),
                (None, true) => "sealed".to_owned(),
                (None, false) => "active".to_owned(),
            };
            if segment.damaged_records > 0 {
                state += &format!(", {} damaged", segment.damaged_records);
            }
            writeln!(
                out,
                "  {:>8}  {:>12}  {:>12}  {:>9}  {:>12}  {}",
                segment.id, segment.base_seq, last, segment.records, segment.record_bytes, state
            )?;
        }
        writeln!(out, "\ncursors")?;
        if self.cursors.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for cursor in &self.cursors {
            write!(
                out,
                "  {}: acked seq {} (event {}), lag {} records / {} bytes",
                cursor.name,
                cursor.acked_seq,
                cursor.acked_event,
                cursor.lag_records,
                cursor.lag_bytes
            )?;
            if let Some(problem) = &cursor.problem {
                write!(out, ", PROBLEM: {problem}")?;
            }
            writeln!(out)?;
        }
        if !self.other_files.is_empty() {
            writeln!(out, "\nother files")?;
            for other in &self.other_files {
                writeln!(out, "  {other}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "verified {}: {} segment(s), {} record(s), {} bytes, {} cursor(s)",
            self.dir.display(),
            self.segments_checked,
            self.records_checked,
            self.bytes_checked,
            self.cursors_checked
        )?;
        if self.is_clean() {
            return writeln!(out, "clean: every checksum matched");
        }
        if self.segments_checked == 0 {
            writeln!(
                out,
                "NOTHING VERIFIED: the log holds no segment (no record was ever stored, or the segment files are gone)"
            )?;
        }
        if self.problems.is_empty() {
            return Ok(());
        }
        writeln!(out, "{} problem(s):", self.problems.len())?;
        for problem in &self.problems {
            write!(out, "  {}", problem.file)?;
            if let Some(offset) = problem.offset {
                write!(out, " @{offset}")?;
            }
            if let Some(seq) = problem.seq {
                write!(out, " seq {seq}")?;
            }
            writeln!(out, ": {}", problem.message)?;
        }
        Ok(())
    }
}
