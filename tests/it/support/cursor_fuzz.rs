//! The body of the `cursor_file` fuzz target: arbitrary bytes as a cursor file
//! (`<wal>/cursors/<name>.cur`), opened by the WAL and decoded by delivery
//! ([`DeliveryCursor::decode`]), whose position and plan then drive a [`Batcher`] over a
//! small log. Shared with the `cursor_fuzz_harness` test so the same properties run on
//! stable Rust in every CI run.
//!
//! Input layout: byte 0 flags, byte 1 the event counts of the log's three records (two bits
//! each, +1), then content:
//! * flags bits 0-1 — 0: the content is the whole file; 1: the content is a delivery blob
//!   persisted through the WAL's own API, so it passes every checksum;
//!   2: a flagstream 0.1 (version 1) slot made of the content with a valid checksum; 3: like
//!   1, then the content after the blob overwrites bytes of the file (`offset u16, byte`).
//!   Modes 1 and 3 read the content as `blob_len u8, blob, acked_seq u8, patches…`.
//! * bits 2-4: the batcher's `max_items` (+1).
//!
//! Properties: a cursor file never stops the WAL from opening and never panics anything;
//! the state read back is what a slot with a valid checksum says (or a fresh cursor); a blob
//! that decodes re-encodes to the same state; `describe_hex` always describes it; whatever
//! plan and position it holds, the batcher covers every later event of the log exactly once,
//! in contiguous non-empty spans, and a persist repairs the file.

use std::path::Path;

use flagstream::delivery::batcher::{Batcher, ItemMeta, Rows};
use flagstream::delivery::cursor_state::{describe_hex, DeliveryCursor};
use flagstream::dest::BatchLimits;
use flagstream::event::Schema;
use flagstream::wal::{AppendRequest, CursorBlob, CursorState, Position, Wal, WalOptions};

const NAME: &str = "fuzz";
const SLOT_BYTES: usize = 512;

fn options(dir: &Path) -> WalOptions {
    let mut options = WalOptions::new(dir);
    options.segment_bytes = 16 * 1024;
    options.max_bytes = 16 * 1024 * 8;
    options.min_free_bytes = 0;
    options
}

fn cursor_path(dir: &Path) -> std::path::PathBuf {
    dir.join("cursors").join(format!("{NAME}.cur"))
}

/// A log of three records with the given event counts, and a cursor file written by the WAL.
fn make_log(dir: &Path, counts: [u32; 3], runtime: &tokio::runtime::Runtime) {
    let wal = Wal::open(options(dir)).unwrap();
    runtime.block_on(async {
        for count in counts {
            let request = AppendRequest {
                tag: 1,
                event_count: count,
                received_at_ms: 0,
                parts: &[b"[]"],
            };
            wal.append(request).await.unwrap();
        }
    });
    wal.open_cursor(NAME).unwrap();
    runtime.block_on(wal.close()).unwrap();
}

/// Persist `blob` at a position picked by `acked` (seq 0-4, event 0-3, not necessarily
/// normalised) through the WAL's API: a file that passes every checksum.
fn persist_blob(dir: &Path, blob: &[u8], acked: u8) {
    let wal = Wal::open(options(dir)).unwrap();
    let mut cursor = wal.open_cursor(NAME).unwrap();
    let state = CursorState {
        acked: Position {
            seq: u64::from(acked % 5).min(wal.next_seq()),
            event: u32::from(acked / 5 % 4),
        },
        blob: CursorBlob::new(blob).unwrap(),
    };
    cursor.persist(state).unwrap();
}

/// A version 1 slot in slot A holding `content`, with the file's name hash and a valid CRC.
fn write_legacy_slot(path: &Path, content: &[u8]) {
    let mut file = std::fs::read(path).unwrap();
    let name_hash: [u8; 8] = file[16..24].try_into().unwrap();
    let mut slot = [0u8; 100];
    let len = content.len().min(100);
    slot[..len].copy_from_slice(&content[..len]);
    slot[0..4].copy_from_slice(b"CUR1");
    slot[4..6].copy_from_slice(&1u16.to_le_bytes());
    slot[6..8].copy_from_slice(&100u16.to_le_bytes());
    slot[16..24].copy_from_slice(&name_hash);
    let crc = crc32fast::hash(&slot[..96]);
    slot[96..100].copy_from_slice(&crc.to_le_bytes());
    file[..SLOT_BYTES].fill(0);
    file[..100].copy_from_slice(&slot);
    std::fs::write(path, file).unwrap();
}

fn write_file(dir: &Path, flags: u8, content: &[u8]) {
    let path = cursor_path(dir);
    match flags & 3 {
        0 => std::fs::write(&path, content).unwrap(),
        2 => write_legacy_slot(&path, content),
        mode => {
            let Some((&blob_len, content)) = content.split_first() else {
                return;
            };
            let (blob, rest) = content.split_at(content.len().min(usize::from(blob_len)));
            persist_blob(dir, blob, rest.first().copied().unwrap_or(1));
            if mode == 3 {
                let mut file = std::fs::read(&path).unwrap();
                for patch in rest.chunks_exact(3) {
                    let offset = usize::from(u16::from_le_bytes([patch[0], patch[1]]));
                    if let Some(byte) = file.get_mut(offset) {
                        *byte = patch[2];
                    }
                }
                std::fs::write(&path, file).unwrap();
            }
        }
    }
}

pub fn run(data: &[u8], scratch: &Path) {
    let [flags, counts, content @ ..] = data else {
        return;
    };
    let (flags, counts) = (*flags, *counts);
    let _ = std::fs::remove_dir_all(scratch);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counts = [0, 2, 4].map(|shift| u32::from((counts >> shift) & 3) + 1);
    make_log(scratch, counts, &runtime);
    write_file(scratch, flags, content);

    let wal = Wal::open(options(scratch)).expect("a cursor file never stops the WAL opening");
    let mut cursor = wal.open_cursor(NAME).unwrap();
    let state = cursor.state();
    check_blob(&state);
    let loaded = DeliveryCursor::load(NAME, &state);
    assert_eq!(loaded.acked, state.acked);
    let max_items = usize::from((flags >> 2) & 7) + 1;
    cover_log_once(&wal, loaded, max_items);

    // A persist repairs whatever was in the file.
    let repaired = CursorState {
        acked: Position {
            seq: wal.next_seq(),
            event: 0,
        },
        blob: CursorBlob::default(),
    };
    cursor.persist(repaired).unwrap();
    drop(cursor);
    runtime.block_on(wal.close()).unwrap();
    drop(wal);
    let wal = Wal::open(options(scratch)).unwrap();
    assert_eq!(wal.open_cursor(NAME).unwrap().state(), repaired);
}

fn check_blob(state: &CursorState) {
    let hex: String = state
        .blob
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert!(describe_hex(&hex).is_some(), "{hex}");
    if let Ok(decoded) = DeliveryCursor::decode(state) {
        assert_eq!(decoded.acked, state.acked);
        assert_eq!(DeliveryCursor::decode(&decoded.encode()), Ok(decoded));
    }
}

/// Drive a batcher from the loaded position and plan over every stored record: each event
/// from the position on is in exactly one item, spans are contiguous and non-empty.
fn cover_log_once(wal: &Wal, loaded: DeliveryCursor, max_items: usize) {
    let limits = BatchLimits {
        max_items,
        ..BatchLimits::default()
    };
    let mut batcher = Batcher::new(
        NAME,
        Schema::LaunchDarkly,
        limits,
        loaded.acked,
        loaded.plan,
    );
    let mut reader = wal.reader(loaded.acked.seq);
    let mut offered = Vec::new();
    while let Some(record) = reader.try_next().unwrap() {
        let Some(first) = batcher.begin_record(record.seq, record.event_count) else {
            continue;
        };
        for index in first..record.event_count {
            let event_id = format!("{}.{index}", record.seq);
            let meta = ItemMeta {
                event_id: &event_id,
                kind: "custom",
                key: None,
                context_key: None,
                environment: "fuzz",
                received_at_ms: 0,
            };
            let row = Rows {
                bytes: b"{}",
                ends: &[2],
            };
            batcher.offer(index, meta, row).unwrap();
            offered.push(Position {
                seq: record.seq,
                event: index,
            });
        }
        batcher.end_record();
    }
    batcher.cut_lingering();
    let mut items = Vec::new();
    let mut previous_end: Option<Position> = None;
    while let Some(cut) = batcher.pop_ready() {
        assert!(
            cut.start < cut.end,
            "empty span {:?}..{:?}",
            cut.start,
            cut.end
        );
        if let Some(end) = previous_end {
            assert_eq!(cut.start, end, "spans not contiguous");
        }
        previous_end = Some(cut.end);
        assert!(cut
            .positions
            .iter()
            .all(|p| cut.start <= *p && *p < cut.end));
        items.extend(cut.positions);
    }
    assert_eq!(
        items, offered,
        "every event offered is batched once, in order"
    );
    for position in &offered {
        assert!(
            *position >= loaded.acked,
            "an acked event was offered again"
        );
    }
}
