//! The body of the `wal_recovery` fuzz target, shared with a proptest so it also runs in
//! the normal test suite on stable Rust.
//!
//! Input layout: byte 0 holds flags, the rest is segment content.
//! * bit 0: the input starts at file offset 0 (the fuzzer controls the header page too);
//!   otherwise a valid header for segment 1 is written and the input is the record area.
//! * bit 1: fix up record checksums along the chain of headers with the right magic, so the
//!   fuzzer gets past the CRC and exercises framing, seq and resync logic.
//! * bit 2: strict recovery mode.
//!
//! Properties: `verify`, `inspect`, `Wal::open` and reading never panic or hang; when the
//! log opens, every record read is one that passed its checksum, seqs increase, and the log
//! accepts and keeps a new append across a reopen.

use std::path::Path;

use flagstream::wal::format::{
    record_crc, scan_tail, SegmentHeader, Window, HEADER_PAGE_BYTES, RECORD_HEADER_BYTES,
};
use flagstream::wal::{AppendRequest, RecoveryMode, Wal, WalOptions};

pub const FUZZ_SEGMENT: u64 = 16 * 1024;

fn fix_checksums(image: &mut [u8]) {
    let mut offset = HEADER_PAGE_BYTES as usize;
    while offset + RECORD_HEADER_BYTES as usize <= image.len() {
        if image[offset..offset + 2] != 0xF1A6u16.to_le_bytes() {
            return;
        }
        let payload_len =
            u32::from_le_bytes(image[offset + 4..offset + 8].try_into().unwrap()) as usize;
        let payload_start = offset + RECORD_HEADER_BYTES as usize;
        let Some(payload_end) = payload_start
            .checked_add(payload_len)
            .filter(|end| *end <= image.len())
        else {
            return;
        };
        let header: Vec<u8> = image[offset..payload_start].to_vec();
        let crc = record_crc(1, &header, &image[payload_start..payload_end]);
        image[offset + 8..offset + 12].copy_from_slice(&crc.to_le_bytes());
        offset = payload_start + payload_len.div_ceil(8) * 8;
    }
}

pub fn run(data: &[u8], scratch: &Path) {
    let Some((&flags, content)) = data.split_first() else {
        return;
    };
    let mut image = vec![0u8; FUZZ_SEGMENT as usize];
    if flags & 1 != 0 {
        let len = content.len().min(image.len());
        image[..len].copy_from_slice(&content[..len]);
    } else {
        let header = SegmentHeader {
            segment_id: 1,
            base_seq: 1,
            created_unix_ms: 0,
            segment_bytes: FUZZ_SEGMENT,
        };
        header.encode_into(&mut image);
        let room = image.len() - HEADER_PAGE_BYTES as usize;
        let len = content.len().min(room);
        image[HEADER_PAGE_BYTES as usize..HEADER_PAGE_BYTES as usize + len]
            .copy_from_slice(&content[..len]);
    }
    if flags & 2 != 0 {
        fix_checksums(&mut image);
    }

    // The pure parser on arbitrary bytes and offsets.
    let window = Window::new(&image[HEADER_PAGE_BYTES as usize..], HEADER_PAGE_BYTES);
    for offset in [
        HEADER_PAGE_BYTES,
        HEADER_PAGE_BYTES + 8,
        FUZZ_SEGMENT - 8,
        FUZZ_SEGMENT,
        u64::MAX - 4,
    ] {
        let _ = window.header_at(offset);
        let _ = window.record_at(offset, 1);
    }
    let _ = window.find_valid_from(HEADER_PAGE_BYTES, 1, 0);
    let tail = scan_tail(&window, 1, HEADER_PAGE_BYTES, 1, |_| {});
    // Every seq up to the end is either a valid record or counted as lost.
    assert!(tail.end_offset <= FUZZ_SEGMENT && tail.next_seq == 1 + tail.records + tail.lost());

    let dir = scratch.join("wal-fuzz");
    let _ = std::fs::remove_dir_all(&dir);
    let segment_dir = dir.join(flagstream::wal::layout::SEGMENT_DIR);
    std::fs::create_dir_all(&segment_dir).unwrap();
    std::fs::write(segment_dir.join("00000000000000000001.seg"), &image).unwrap();
    let _ = flagstream::wal::inspect::verify(&dir);
    let _ = flagstream::wal::inspect::inspect(&dir);

    let mut options = WalOptions::new(&dir);
    options.segment_bytes = FUZZ_SEGMENT;
    options.max_bytes = FUZZ_SEGMENT * 16;
    options.min_free_bytes = 0;
    options.recovery = if flags & 4 != 0 {
        RecoveryMode::Strict
    } else {
        RecoveryMode::TolerateTail
    };
    let Ok(wal) = Wal::open(options.clone()) else {
        return;
    };
    let mut reader = wal.reader(0);
    let mut previous = 0;
    let mut count = 0u64;
    while let Ok(Some(record)) = reader.try_next() {
        assert!(record.seq > previous, "seqs must increase");
        previous = record.seq;
        count += 1;
        assert!(count <= FUZZ_SEGMENT, "more records than could fit: a loop");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let appended = runtime
        .block_on(wal.append(AppendRequest {
            tag: 9,
            event_count: 1,
            received_at_ms: 42,
            parts: &[b"after-fuzz"],
        }))
        .expect("a recovered log accepts appends");
    drop(reader);
    drop(wal);
    let wal = Wal::open(options).expect("a log reopens after recovery");
    let record = wal
        .reader(appended.seq)
        .try_next()
        .unwrap()
        .expect("the new record survives a reopen");
    assert_eq!(
        (record.seq, &record.payload[..]),
        (appended.seq, &b"after-fuzz"[..])
    );
}
