//! Recovery properties: truncation at every byte offset and random byte flips recover to the
//! longest valid prefix, never panic and never return wrong data; strict vs tolerate-tail;
//! corrupt records in sealed segments are skipped and counted; cursors survive torn slot
//! writes; GC never frees what a persisted cursor still needs.

use crate::support::wal as wal_support;

use std::collections::BTreeMap;
use std::path::Path;

use flagstream::wal::format::{record_footprint, HEADER_PAGE_BYTES, RECORD_HEADER_BYTES};
use flagstream::wal::{CursorState, Position, RecoveryMode, Wal, WalError, WalOptions};
use proptest::prelude::*;
use wal_support::*;

const TINY_SEGMENT: u64 = 16 * 1024;

fn tiny_options(dir: &Path) -> WalOptions {
    let mut options = options(dir);
    options.segment_bytes = TINY_SEGMENT;
    options.max_bytes = TINY_SEGMENT * 1024;
    options
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Write records with the given payload lengths (keys 0..n) and close the log.
fn write_log(dir: &Path, options: &WalOptions, lengths: &[usize]) {
    block_on(async {
        let wal = Wal::open(options.clone()).unwrap();
        for (key, len) in lengths.iter().enumerate() {
            append(&wal, key as u64, *len).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let _ = dir;
}

fn check_prefix(wal: &Wal, lengths: &[usize], at_least: usize) -> usize {
    let records = read_all(wal, 1);
    assert!(
        records.len() >= at_least,
        "{} records, expected at least {at_least}",
        records.len()
    );
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.seq, index as u64 + 1);
        assert_intact(record, index as u64, lengths[index]);
    }
    records.len()
}

#[test]
fn truncation_or_zeroing_at_every_byte_offset_recovers_the_longest_valid_prefix() {
    let lengths = [0usize, 1, 7, 8, 9, 100, 333, 64];
    // Whether the header of record `index` (0-based) in a damaged image still carries the
    // record magic, the data kind and its seq.
    let names_seq = |image: &[u8], index: usize| {
        let at = (HEADER_PAGE_BYTES
            + lengths[..index]
                .iter()
                .map(|len| record_footprint(*len as u64))
                .sum::<u64>()) as usize;
        let byte = |offset: usize| image.get(at + offset).copied().unwrap_or(0);
        let seq = u64::from_le_bytes(std::array::from_fn(|i| byte(16 + i)));
        [byte(0), byte(1), byte(2)] == [0xA6, 0xF1, 1] && seq == index as u64 + 1
    };
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    write_log(dir.path(), &options, &lengths);
    let segment = segment_path(dir.path(), 1);
    let pristine = std::fs::read(&segment).unwrap();
    // Where each record's checked bytes end (padding is not covered by the checksum).
    let mut offset = HEADER_PAGE_BYTES;
    let mut checked_ends = Vec::new();
    for len in lengths {
        checked_ends.push(offset + RECORD_HEADER_BYTES + len as u64);
        offset += record_footprint(len as u64);
    }
    let log_end = offset;
    let cuts = (0..HEADER_PAGE_BYTES)
        .step_by(97)
        .chain(HEADER_PAGE_BYTES..=log_end + 8);
    for (round, cut) in cuts.enumerate() {
        for truncate in [true, false] {
            let mut damaged = pristine.clone();
            if truncate {
                damaged.truncate(cut as usize);
            } else {
                damaged[cut as usize..].fill(0);
            }
            for name in wal_files(dir.path()) {
                std::fs::remove_file(dir.path().join(SEGMENT_DIR).join(name)).unwrap();
            }
            std::fs::write(&segment, &damaged).unwrap();
            // A byte lost to the cut only matters if it was not zero anyway.
            let survives = |end: u64| {
                end <= cut
                    || pristine[cut as usize..end as usize]
                        .iter()
                        .all(|byte| *byte == 0)
            };
            let expected = if survives(52) {
                checked_ends
                    .iter()
                    .take_while(|end| survives(**end))
                    .count()
            } else {
                0
            };
            // A torn record whose header still names its seq has that seq retired.
            let retired = expected < lengths.len() && names_seq(&damaged, expected);
            let wal =
                Wal::open(options.clone()).unwrap_or_else(|error| panic!("cut {cut}: {error}"));
            let found = check_prefix(&wal, &lengths, expected);
            assert_eq!(found, expected, "cut {cut} truncate {truncate}");
            assert_eq!(wal.stats().corrupt_records, u64::from(retired), "cut {cut}");
            if round % 11 == 0 {
                // Appending after recovery continues the seq and survives another reopen.
                let seq = block_on(append(
                    &wal,
                    found as u64,
                    lengths.get(found).copied().unwrap_or(5),
                ));
                let next = found as u64 + 1 + u64::from(retired);
                assert_eq!(seq.unwrap(), next, "cut {cut}");
                drop(wal);
                let wal = Wal::open(options.clone()).unwrap();
                assert_eq!(read_all(&wal, 1).len(), found + 1, "cut {cut}");
            }
        }
    }
}

#[test]
fn strict_mode_refuses_valid_records_after_a_bad_one_and_tolerate_tail_skips_only_it() {
    let lengths = [50usize, 60, 70, 80, 90];
    let dir = fast_tempdir();
    let mut options = tiny_options(dir.path());
    write_log(dir.path(), &options, &lengths);
    let segment = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&segment).unwrap();
    let third = HEADER_PAGE_BYTES + record_footprint(50) + record_footprint(60);
    bytes[(third + RECORD_HEADER_BYTES + 3) as usize] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    options.recovery = RecoveryMode::Strict;
    match Wal::open(options.clone()) {
        Err(WalError::Corrupt(message)) => assert!(
            message.contains("seq 3") && message.contains("strict"),
            "{message}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let intact_seqs = |wal: &Wal| -> Vec<u64> {
        read_all(wal, 1)
            .iter()
            .map(|record| {
                let key = record.seq - 1;
                assert_intact(
                    record,
                    key,
                    lengths.get(key as usize).copied().unwrap_or(70),
                );
                record.seq
            })
            .collect()
    };
    options.recovery = RecoveryMode::TolerateTail;
    {
        let wal = Wal::open(options.clone()).unwrap();
        assert_eq!(intact_seqs(&wal), [1, 2, 4, 5]);
        assert_eq!(wal.stats().corrupt_records, 1, "only seq 3 is lost");
        assert_eq!(block_on(append(&wal, 5, 70)).unwrap(), 6);
    }
    // The damaged segment was sealed: strict mode opens, readers skip seq 3 as in any
    // sealed segment.
    options.recovery = RecoveryMode::Strict;
    let wal = Wal::open(options).unwrap();
    assert_eq!(intact_seqs(&wal), [1, 2, 4, 5, 6]);
    assert_eq!(wal.stats().corrupt_records, 1);
}

#[test]
fn a_corrupt_record_in_a_sealed_segment_is_skipped_and_counted() {
    let lengths: Vec<usize> = (0..30).map(|index| 1_000 + index * 10).collect();
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    write_log(dir.path(), &options, &lengths);
    // Damage the 2nd record of segment 1 (sealed: the log rolled past it).
    let segment = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&segment).unwrap();
    let second = HEADER_PAGE_BYTES + record_footprint(lengths[0] as u64);
    bytes[(second + RECORD_HEADER_BYTES + 10) as usize] ^= 0xFF;
    std::fs::write(&segment, &bytes).unwrap();

    let wal = Wal::open(options).unwrap();
    let records = read_all(&wal, 1);
    let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    let expected: Vec<u64> = (1..=30).filter(|seq| *seq != 2).collect();
    assert_eq!(seqs, expected);
    for record in &records {
        assert_intact(record, record.seq - 1, lengths[record.seq as usize - 1]);
    }
    assert_eq!(wal.stats().corrupt_records, 1);
}

#[test]
fn cursors_survive_torn_slot_writes_and_fall_back_when_both_slots_are_gone() {
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    let older = CursorState {
        acked: Position { seq: 3, event: 1 },
        ..Default::default()
    };
    let newer = CursorState {
        acked: Position { seq: 5, event: 0 },
        ..Default::default()
    };
    block_on(async {
        let wal = Wal::open(options.clone()).unwrap();
        for key in 0..20 {
            append(&wal, key, 2_000).await.unwrap();
        }
        let mut cursor = wal.open_cursor("dest").unwrap();
        cursor.persist(older).unwrap();
        cursor.persist(newer).unwrap();
    });
    let path = dir.path().join("cursors/dest.cur");
    let pristine = std::fs::read(&path).unwrap();
    // Find the slot holding `newer` (the one with the higher generation) and tear it.
    for torn_bytes in [1usize, 16, 40, 43] {
        let mut torn = pristine.clone();
        let newer_slot = if u64::from_le_bytes(torn[8..16].try_into().unwrap())
            > u64::from_le_bytes(torn[520..528].try_into().unwrap())
        {
            0
        } else {
            512
        };
        // The slot's used length (header, blob, checksum) is at bytes 6..8.
        let used = usize::from(u16::from_le_bytes([
            torn[newer_slot + 6],
            torn[newer_slot + 7],
        ]));
        for byte in &mut torn[newer_slot + used - torn_bytes..newer_slot + used] {
            *byte ^= 0x5A;
        }
        std::fs::write(&path, &torn).unwrap();
        let wal = Wal::open(options.clone()).unwrap();
        assert_eq!(
            wal.open_cursor("dest").unwrap().state(),
            older,
            "torn {torn_bytes} bytes"
        );
    }
    std::fs::write(&path, vec![0xEEu8; 4096]).unwrap();
    let wal = Wal::open(options).unwrap();
    assert_eq!(
        wal.open_cursor("dest").unwrap().state().acked,
        Position { seq: 1, event: 0 },
        "restart from the oldest record"
    );
}

#[test]
fn an_interrupted_roll_leaves_a_headerless_newest_file_that_becomes_a_spare() {
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    write_log(dir.path(), &options, &[100, 200, 300]);
    // Segment 2 exists but its header never reached the disk.
    std::fs::write(
        segment_path(dir.path(), 2),
        vec![0u8; TINY_SEGMENT as usize],
    )
    .unwrap();
    let wal = Wal::open(options).unwrap();
    assert_eq!(read_all(&wal, 1).len(), 3);
    assert!(!segment_path(dir.path(), 2).exists());
    assert_eq!(block_on(append(&wal, 3, 10)).unwrap(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Records of random sizes survive a close and reopen exactly.
    #[test]
    fn random_records_round_trip_through_reopen(lengths in prop::collection::vec(0usize..6_000, 1..60)) {
        let dir = fast_tempdir();
        let options = tiny_options(dir.path());
        write_log(dir.path(), &options, &lengths);
        let wal = Wal::open(options).unwrap();
        prop_assert_eq!(check_prefix(&wal, &lengths, lengths.len()), lengths.len());
        prop_assert_eq!(wal.next_seq(), lengths.len() as u64 + 1);
    }

    /// Random byte flips anywhere in the segment files: opening never panics, reading never
    /// returns a record that differs from what was written under that seq, and every record
    /// before the first damaged byte is still there.
    #[test]
    fn byte_flips_never_panic_and_never_return_wrong_data(
        lengths in prop::collection::vec(0usize..4_000, 1..40),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let dir = fast_tempdir();
        let options = tiny_options(dir.path());
        write_log(dir.path(), &options, &lengths);
        let files: Vec<_> = wal_files(dir.path()).into_iter().filter(|name| !name.starts_with("spare")).collect();
        let mut images: Vec<Vec<u8>> = files.iter().map(|name| std::fs::read(dir.path().join(SEGMENT_DIR).join(name)).unwrap()).collect();
        let total: usize = images.iter().map(Vec::len).sum();
        let mut first_flip = usize::MAX;
        for (index, mask) in &flips {
            let global = index.index(total);
            first_flip = first_flip.min(global);
            let (file, at) = (global / TINY_SEGMENT as usize, global % TINY_SEGMENT as usize);
            images[file][at] ^= mask;
        }
        for (name, image) in files.iter().zip(&images) {
            std::fs::write(dir.path().join(SEGMENT_DIR).join(name), image).unwrap();
        }
        // Records whose checked bytes all lie before the first flip must survive.
        let mut intact_prefix = 0;
        let (mut file, mut offset) = (0usize, HEADER_PAGE_BYTES);
        for len in &lengths {
            if offset + record_footprint(*len as u64) > TINY_SEGMENT {
                file += 1;
                offset = HEADER_PAGE_BYTES;
            }
            let checked_end = file * TINY_SEGMENT as usize + (offset + RECORD_HEADER_BYTES) as usize + len;
            if checked_end > first_flip || (file * TINY_SEGMENT as usize) + 52 > first_flip {
                break;
            }
            intact_prefix += 1;
            offset += record_footprint(*len as u64);
        }
        let wal = Wal::open(options).unwrap();
        let records = read_all(&wal, 1);
        let mut previous = 0;
        let by_seq: BTreeMap<u64, usize> = lengths.iter().enumerate().map(|(key, len)| (key as u64 + 1, *len)).collect();
        for record in &records {
            prop_assert!(record.seq > previous);
            previous = record.seq;
            let len = by_seq.get(&record.seq).copied();
            prop_assert!(len.is_some(), "unknown seq {}", record.seq);
            assert_intact(record, record.seq - 1, len.unwrap_or_default());
        }
        prop_assert!(records.len() >= intact_prefix, "{} records, {} intact before the first flip", records.len(), intact_prefix);
        prop_assert!(records.iter().take(intact_prefix).enumerate().all(|(index, record)| record.seq == index as u64 + 1));
    }

    /// Garbage collection never frees a record a persisted cursor still needs.
    #[test]
    fn gc_never_frees_what_a_persisted_cursor_needs(
        lengths in prop::collection::vec(500usize..5_000, 5..60),
        positions in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    ) {
        let dir = fast_tempdir();
        let options = tiny_options(dir.path());
        block_on(async {
            let wal = Wal::open(options.clone()).unwrap();
            for (key, len) in lengths.iter().enumerate() {
                append(&wal, key as u64, *len).await.unwrap();
            }
            let mut acked = Vec::new();
            for (index, position) in positions.iter().enumerate() {
                let mut cursor = wal.open_cursor(&format!("dest-{index}")).unwrap();
                let seq = position.index(lengths.len() + 1) as u64 + 1;
                cursor.persist(CursorState { acked: Position { seq, event: 0 }, ..Default::default() }).unwrap();
                acked.push(seq);
            }
            wal.collect_garbage().unwrap();
            drop(wal);
            let wal = Wal::open(options).unwrap();
            let lowest = *acked.iter().min().unwrap();
            assert!(wal.first_seq() <= lowest, "first {} > lowest cursor {lowest}", wal.first_seq());
            for seq in acked {
                let records = read_all(&wal, seq);
                assert_eq!(records.len() as u64, lengths.len() as u64 + 1 - seq);
                for record in records {
                    assert_intact(&record, record.seq - 1, lengths[record.seq as usize - 1]);
                }
            }
        });
    }
}

#[test]
fn a_damaged_header_over_real_records_is_set_aside_and_its_seqs_are_never_reused() {
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    let lengths: Vec<usize> = (0..12).map(|_| 3_000).collect();
    write_log(dir.path(), &options, &lengths);
    let files = wal_files(dir.path());
    let newest = files
        .iter()
        .rfind(|name| !name.starts_with("spare"))
        .unwrap()
        .clone();
    let newest_path = dir.path().join(SEGMENT_DIR).join(&newest);
    let mut bytes = std::fs::read(&newest_path).unwrap();
    bytes[20] ^= 0xFF; // breaks the header checksum, records stay valid
    std::fs::write(&newest_path, &bytes).unwrap();

    let wal = Wal::open(options).unwrap();
    assert!(
        dir.path()
            .join(SEGMENT_DIR)
            .join(format!("{newest}.corrupt"))
            .exists(),
        "{:?}",
        wal_files(dir.path())
    );
    let kept = read_all(&wal, 1).len() as u64;
    assert!(kept < 12);
    // Seqs up to 12 were used by the file set aside: the next append must not reuse them.
    assert_eq!(block_on(append(&wal, 12, 10)).unwrap(), 13);
    assert!(!flagstream::wal::inspect::verify(dir.path())
        .unwrap()
        .is_clean());
}

#[test]
fn a_cursor_ahead_of_a_lost_tail_pushes_new_seqs_past_it() {
    let dir = fast_tempdir();
    let options = tiny_options(dir.path());
    write_log(dir.path(), &options, &[100, 100, 100, 100]);
    block_on(async {
        let wal = Wal::open(options.clone()).unwrap();
        let mut cursor = wal.open_cursor("dest").unwrap();
        cursor
            .persist(CursorState {
                acked: Position { seq: 5, event: 0 },
                ..Default::default()
            })
            .unwrap();
    });
    // Lose the last two records (as a power cut could, had they not been synced).
    let segment = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&segment).unwrap();
    let cut = (HEADER_PAGE_BYTES + 2 * record_footprint(100)) as usize;
    bytes[cut..].fill(0);
    std::fs::write(&segment, &bytes).unwrap();

    let wal = Wal::open(options.clone()).unwrap();
    assert_eq!(
        wal.next_seq(),
        5,
        "seqs 3 and 4 may have been delivered already"
    );
    assert_eq!(block_on(append(&wal, 4, 100)).unwrap(), 5);
    drop(wal);
    let wal = Wal::open(options).unwrap();
    let seqs: Vec<u64> = read_all(&wal, 1).iter().map(|record| record.seq).collect();
    // Records 1 and 2 are behind the only cursor, so garbage collection was free to drop them.
    assert_eq!(seqs, vec![5]);
}
