//! A model-based test of the whole WAL (as Vector's disk buffer has): random sequences of
//! appends (concurrent, random sizes), reads, cursor acks and persists, garbage collection,
//! clean reopens, crashes (drop, optionally zeroing the newest segment's tail from a random
//! byte) and byte flips, checked after every step against a plain in-memory model:
//!
//! * every appended record that no step damaged is readable from the persisted cursor, in
//!   order, exactly once, with its bytes; whatever is read is exactly what was appended under
//!   that seq (damaged records may be missing, never wrong);
//! * garbage collection never frees a record at or after the persisted cursor;
//! * seqs never repeat, except where the module doc says they may: a crash that took a
//!   record's header with it, or damage to the magic, kind or seq of the last record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::format::{scan_tail, Window, HEADER_PAGE_BYTES};
use super::segment::parse_segment_file_name;
use super::*;

const SEGMENT: u64 = MIN_SEGMENT_BYTES;
const CURSOR: &str = "model";

#[derive(Debug, Clone)]
enum Op {
    /// `count` appends of `len` bytes each, run concurrently.
    Append {
        len: usize,
        count: usize,
    },
    /// Read on with the long-lived tailing reader (and everything from the persisted
    /// cursor, as after every step).
    Read,
    /// Persist the cursor `fraction`/255 of the way from its position to the log end.
    Ack {
        fraction: u8,
    },
    Gc,
    /// Close and reopen.
    Reopen,
    /// Drop without close, then zero the newest segment from `cut`/65535 of its records on.
    Crash {
        cut: Option<u16>,
    },
    /// Drop, flip bits of one byte of one segment file, reopen.
    Flip {
        file: prop::sample::Index,
        byte: prop::sample::Index,
        mask: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3_000, 1usize..5).prop_map(|(len, count)| Op::Append { len, count }),
        2 => Just(Op::Read),
        3 => any::<u8>().prop_map(|fraction| Op::Ack { fraction }),
        2 => Just(Op::Gc),
        1 => Just(Op::Reopen),
        1 => prop::option::of(any::<u16>()).prop_map(|cut| Op::Crash { cut }),
        1 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255)
            .prop_map(|(file, byte, mask)| Op::Flip { file, byte, mask }),
    ]
}

/// What the WAL must hold.
#[derive(Default)]
struct Model {
    /// Bytes of every record ever appended, by seq.
    payloads: BTreeMap<u64, Vec<u8>>,
    /// Seqs no step damaged: must be readable while at or after the persisted cursor.
    intact: BTreeSet<u64>,
    /// Seqs whose reuse the documented limits allow.
    reusable: BTreeSet<u64>,
    persisted: u64,
    appended: u64,
}

struct Harness {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    wal: Option<Wal>,
    cursor: Option<Cursor>,
    /// A reader kept across steps until the next close: `(reader, first seq it was asked
    /// for, last seq it returned)`.
    tail: Option<(WalReader, u64, u64)>,
    model: Model,
}

fn options(dir: &Path) -> WalOptions {
    WalOptions {
        segment_bytes: SEGMENT,
        max_bytes: SEGMENT * 4_096,
        ..super::tests::small_options(dir)
    }
}

fn payload(key: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| (key.wrapping_mul(131) as usize + index * 7) as u8)
        .collect()
}

impl Harness {
    fn new() -> Harness {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut harness = Harness {
            dir,
            runtime,
            wal: None,
            cursor: None,
            tail: None,
            model: Model {
                persisted: 1,
                ..Model::default()
            },
        };
        harness.open();
        harness
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().unwrap()
    }

    fn open(&mut self) {
        let wal = Wal::open(options(self.dir.path())).unwrap();
        let cursor = wal.open_cursor(CURSOR).unwrap();
        assert_eq!(cursor.state().acked.seq, self.model.persisted);
        self.cursor = Some(cursor);
        self.wal = Some(wal);
    }

    fn close(&mut self, clean: bool) {
        self.tail = None;
        self.cursor = None;
        if let Some(wal) = self.wal.take() {
            if clean {
                self.runtime.block_on(wal.close()).unwrap();
            }
        }
    }

    fn segment_files(&self) -> Vec<(u64, PathBuf)> {
        let dir = self.dir.path().join(layout::SEGMENT_DIR);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|entry| {
                let entry = entry.unwrap();
                let id = parse_segment_file_name(entry.file_name().to_str()?)?;
                Some((id, entry.path()))
            })
            .collect();
        files.sort();
        files
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { len, count } => self.append(*len, *count),
            Op::Read => self.read_on(),
            Op::Ack { fraction } => self.ack(*fraction),
            Op::Gc => self.gc(),
            Op::Reopen => {
                self.close(true);
                self.open();
            }
            Op::Crash { cut } => {
                self.close(false);
                if let Some(cut) = cut {
                    self.cut_newest_segment(*cut);
                }
                self.open();
            }
            Op::Flip { file, byte, mask } => {
                self.close(true);
                self.flip(file, byte, *mask);
                self.open();
            }
        }
        self.check_invariants(op);
    }

    fn append(&mut self, len: usize, count: usize) {
        let handles: Vec<_> = (0..count)
            .map(|index| {
                let wal = self.wal().clone();
                let key = self.model.appended + index as u64;
                self.runtime.spawn(async move {
                    let body = payload(key, len);
                    let request = AppendRequest {
                        tag: 0,
                        event_count: 1,
                        received_at_ms: key,
                        parts: &[&body],
                    };
                    let seq = wal.append(request).await.unwrap().seq;
                    (seq, body)
                })
            })
            .collect();
        self.model.appended += count as u64;
        for handle in handles {
            let (seq, body) = self.runtime.block_on(handle).unwrap();
            let repeated = self.model.payloads.contains_key(&seq);
            assert!(
                !repeated || self.model.reusable.remove(&seq),
                "seq {seq} handed out twice"
            );
            self.model.payloads.insert(seq, body);
            self.model.intact.insert(seq);
        }
    }

    fn ack(&mut self, fraction: u8) {
        let next = self.wal().next_seq();
        let from = self.model.persisted.min(next);
        let target = from + (next - from) * u64::from(fraction) / 255;
        let state = CursorState {
            acked: Position {
                seq: target.max(self.model.persisted),
                event: 0,
            },
            ..CursorState::default()
        };
        if state.acked.seq <= next {
            self.cursor.as_mut().unwrap().persist(state).unwrap();
            self.model.persisted = state.acked.seq;
        }
    }

    /// GC never frees a record at or after the persisted cursor: whatever was readable from
    /// it before is readable after.
    fn gc(&mut self) {
        let before = self.readable_from_cursor();
        self.wal().collect_garbage().unwrap();
        assert_eq!(
            self.readable_from_cursor(),
            before,
            "GC freed what the cursor needs"
        );
    }

    fn readable_from_cursor(&self) -> Vec<u64> {
        let mut reader = self.wal().reader(self.model.persisted);
        std::iter::from_fn(|| reader.try_next().unwrap())
            .map(|record| record.seq)
            .collect()
    }

    /// Records of a segment file, valid or retired: `(seq, offset, checked_end)`.
    fn records_of(path: &Path, id: u64) -> Vec<(u64, u64, u64)> {
        let image = std::fs::read(path).unwrap();
        let Ok(header) = format::SegmentHeader::decode(&image) else {
            return Vec::new();
        };
        let window = Window::new(&image[HEADER_PAGE_BYTES as usize..], HEADER_PAGE_BYTES);
        let mut records = Vec::new();
        let tail = scan_tail(&window, id, HEADER_PAGE_BYTES, header.base_seq, |view| {
            let end = view.payload_offset + u64::from(view.header.payload_len);
            records.push((view.header.seq, view.offset, end));
        });
        // A retired torn record keeps its seq only through its header.
        for span in tail.damage {
            if span.kind == format::DamageKind::TornRecord {
                records.push((span.first_seq, span.offset, span.offset + 24));
            }
        }
        records
    }

    fn cut_newest_segment(&mut self, cut: u16) {
        let Some((id, path)) = self.segment_files().pop() else {
            return;
        };
        let records = Self::records_of(&path, id);
        let end = records.last().map_or(HEADER_PAGE_BYTES, |record| record.2);
        let at = HEADER_PAGE_BYTES + (end - HEADER_PAGE_BYTES) * u64::from(cut) / 65_535;
        let mut image = std::fs::read(&path).unwrap();
        image[at as usize..].fill(0);
        std::fs::write(&path, &image).unwrap();
        for (seq, offset, checked_end) in records {
            if checked_end > at {
                self.model.intact.remove(&seq);
                // Bytes never written: the seq may be handed out again unless the header
                // kept it (then recovery retires it).
                if at < offset + 24 {
                    self.model.reusable.insert(seq);
                }
            }
        }
    }

    fn flip(&mut self, file: &prop::sample::Index, byte: &prop::sample::Index, mask: u8) {
        let files = self.segment_files();
        if files.is_empty() {
            return;
        }
        let newest = files.last().map(|(id, _)| *id);
        let (id, path) = &files[file.index(files.len())];
        let records = Self::records_of(path, *id);
        let mut image = std::fs::read(path).unwrap();
        let at = byte.index(image.len()) as u64;
        image[at as usize] ^= mask;
        std::fs::write(path, &image).unwrap();
        if at < HEADER_PAGE_BYTES {
            // The segment header or seal: the whole segment may be set aside.
            for (seq, _, _) in &records {
                self.model.intact.remove(seq);
            }
            return;
        }
        let last = records.last().map(|record| record.0);
        for (seq, offset, checked_end) in &records {
            if (*offset..*checked_end).contains(&at) {
                self.model.intact.remove(seq);
                // The module doc's limit: a last record whose magic, kind or seq is damaged
                // cannot be told from bytes never written.
                let identity = matches!(at - offset, 0..=2 | 16..=23);
                if Some(*id) == newest && Some(*seq) == last && identity {
                    self.model.reusable.insert(*seq);
                }
            }
        }
    }

    /// The tailing reader returns each record once, in order, with its bytes, and skips no
    /// intact record since it started (below the persisted cursor GC may free records under
    /// a lagging reader; that is allowed).
    fn read_on(&mut self) {
        let persisted = self.model.persisted;
        let (reader, start, last) = self.tail.get_or_insert_with(|| {
            let reader = self.wal.as_ref().unwrap().reader(persisted);
            (reader, persisted, persisted.saturating_sub(1))
        });
        while let Some(record) = reader.try_next().unwrap() {
            assert!(record.seq > *last, "seq {} again after {last}", record.seq);
            let expected = self.model.payloads.get(&record.seq).map(Vec::as_slice);
            assert_eq!(Some(&record.payload[..]), expected, "seq {}", record.seq);
            let from = (*last + 1).max(*start).max(persisted);
            let skipped: Vec<_> = self
                .model
                .intact
                .range(from..record.seq.max(from))
                .collect();
            assert!(skipped.is_empty(), "tailing reader skipped {skipped:?}");
            *last = record.seq;
        }
        let from = (*last + 1).max(*start).max(persisted);
        let unread: Vec<_> = self.model.intact.range(from..).collect();
        assert!(
            unread.is_empty(),
            "tailing reader stopped before {unread:?}"
        );
    }

    /// Read everything from the persisted cursor: in order, exactly once, right bytes, and
    /// every intact record present.
    fn check_reads(&self) {
        let mut reader = self.wal().reader(self.model.persisted);
        let mut read = BTreeSet::new();
        let mut previous = 0;
        while let Some(record) = reader.try_next().unwrap() {
            assert!(record.seq > previous, "seq {} after {previous}", record.seq);
            previous = record.seq;
            let expected = self.model.payloads.get(&record.seq);
            assert_eq!(
                Some(&record.payload[..]),
                expected.map(Vec::as_slice),
                "seq {} read back wrong",
                record.seq
            );
            read.insert(record.seq);
        }
        let missing: Vec<_> = self
            .model
            .intact
            .range(self.model.persisted..)
            .filter(|seq| !read.contains(seq))
            .collect();
        assert!(missing.is_empty(), "intact records lost: {missing:?}");
    }

    fn check_invariants(&self, op: &Op) {
        self.check_reads();
        let highest_fixed = self
            .model
            .payloads
            .keys()
            .rev()
            .find(|seq| !self.model.reusable.contains(seq));
        if let Some(highest) = highest_fixed {
            assert!(
                self.wal().next_seq() > *highest,
                "after {op:?}: next seq {} would repeat seq {highest}",
                self.wal().next_seq()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_wal_behaves_like_its_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
        }
    }
}
