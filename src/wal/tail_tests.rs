//! Recovery of the unsealed tail (module doc, "Recovery of the unsealed tail"): a damaged
//! byte in record k of N in the active segment costs exactly record k, whatever k and
//! whichever field; a torn tail is cut; strict mode refuses damage; seqs are never reused.

use std::path::{Path, PathBuf};

use super::format::{record_footprint, HEADER_PAGE_BYTES};
use super::tests::small_options;
use super::*;

const RECORDS: u64 = 20;

fn payload_of(seq: u64) -> Vec<u8> {
    let len = 40 + (seq as usize * 53) % 300;
    (0..len)
        .map(|index| (seq as usize * 7 + index) as u8)
        .collect()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

async fn append_seq(wal: &Wal, seq: u64) -> u64 {
    let payload = payload_of(seq);
    wal.append(AppendRequest {
        tag: 1,
        event_count: 1,
        received_at_ms: seq,
        parts: &[&payload],
    })
    .await
    .unwrap()
    .seq
}

/// Write records 1..=RECORDS (payloads derived from their seq) into one active segment.
fn write_log(options: &WalOptions) {
    block_on(async {
        let wal = Wal::open(options.clone()).unwrap();
        for seq in 1..=RECORDS {
            assert_eq!(append_seq(&wal, seq).await, seq);
        }
        wal.close().await.unwrap();
    });
}

fn segment_file(dir: &Path) -> PathBuf {
    dir.join(layout::SEGMENT_DIR)
        .join(segment::segment_file_name(1))
}

/// Offset of record `seq` in the first segment.
fn offset_of(seq: u64) -> u64 {
    HEADER_PAGE_BYTES
        + (1..seq)
            .map(|earlier| record_footprint(payload_of(earlier).len() as u64))
            .sum::<u64>()
}

fn flip(dir: &Path, at: u64, mask: u8) {
    let path = segment_file(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize] ^= mask;
    std::fs::write(&path, &bytes).unwrap();
}

/// Every readable record, checked against what was written under its seq.
fn readable_seqs(wal: &Wal) -> Vec<u64> {
    let mut reader = wal.reader(1);
    let mut seqs = Vec::new();
    while let Some(record) = reader.try_next().unwrap() {
        assert_eq!(
            record.payload[..],
            payload_of(record.seq)[..],
            "seq {}",
            record.seq
        );
        assert_eq!(record.received_at_ms, record.seq);
        seqs.push(record.seq);
    }
    seqs
}

fn all_but(lost: &[u64], end: u64) -> Vec<u64> {
    (1..end).filter(|seq| !lost.contains(seq)).collect()
}

fn strict(options: &WalOptions) -> WalOptions {
    WalOptions {
        recovery: RecoveryMode::Strict,
        ..options.clone()
    }
}

/// Where a flip lands inside a record.
#[derive(Debug, Clone, Copy)]
enum Field {
    Payload,
    Length,
    Seq,
    Magic,
}

impl Field {
    fn offset_in_record(self) -> u64 {
        match self {
            Field::Payload => 32 + 5,
            Field::Length => 5,
            Field::Seq => 16,
            Field::Magic => 0,
        }
    }
}

/// Damage record `k`, then check: strict refuses (or, for the last record, opens), tolerant
/// recovery keeps every other record, counts one, gives the next append a fresh seq, and the
/// result survives a reopen in strict mode.
fn damaged_record_costs_only_itself(k: u64, field: Field, mask: u8) {
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    flip(dir.path(), offset_of(k) + field.offset_in_record(), mask);
    let case = format!("record {k}, {field:?} ^ {mask:#x}");

    let verify = inspect::verify(dir.path()).unwrap();
    assert!(!verify.is_clean(), "{case}: verify saw nothing");
    assert_eq!(
        inspect::inspect(dir.path()).unwrap().damaged_records,
        1,
        "{case}"
    );

    if k < RECORDS {
        match Wal::open(strict(&options)) {
            Err(WalError::Corrupt(message)) => assert!(
                message.contains(&format!("seq {k}")) && message.contains("strict"),
                "{case}: {message}"
            ),
            other => panic!("{case}: strict mode opened: {other:?}"),
        }
    }
    {
        let wal = Wal::open(options.clone()).unwrap();
        assert_eq!(
            wal.stats().corrupt_records,
            1,
            "{case}: counted at recovery"
        );
        assert_eq!(readable_seqs(&wal), all_but(&[k], RECORDS + 1), "{case}");
        assert_eq!(
            wal.stats().corrupt_records,
            1,
            "{case}: readers do not count it twice"
        );
        assert_eq!(
            block_on(append_seq(&wal, RECORDS + 1)),
            RECORDS + 1,
            "{case}: fresh seq"
        );
        block_on(wal.close()).unwrap();
    }
    let wal = Wal::open(strict(&options)).unwrap();
    assert_eq!(
        readable_seqs(&wal),
        all_but(&[k], RECORDS + 2),
        "{case}: after reopen"
    );
    assert_eq!(wal.stats().corrupt_records, 1, "{case}: after reopen");
}

#[test]
fn a_flipped_payload_byte_costs_only_its_record_first_middle_or_last() {
    for k in [1, 2, RECORDS / 2, RECORDS - 1, RECORDS] {
        damaged_record_costs_only_itself(k, Field::Payload, 0x01);
    }
}

#[test]
fn a_damaged_length_field_costs_only_its_record() {
    // Longer (lands inside later records), shorter (lands inside its own payload), huge
    // (runs past the segment end).
    for mask in [0x02, 0x80] {
        for k in [1, RECORDS / 2, RECORDS] {
            damaged_record_costs_only_itself(k, Field::Length, mask);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    flip(dir.path(), offset_of(3) + 7, 0xFF);
    let wal = Wal::open(options).unwrap();
    assert_eq!(readable_seqs(&wal), all_but(&[3], RECORDS + 1));
}

#[test]
fn a_damaged_seq_or_magic_before_the_last_record_costs_only_its_record() {
    for field in [Field::Seq, Field::Magic] {
        for k in [1, RECORDS / 2, RECORDS - 1] {
            damaged_record_costs_only_itself(k, field, 0x04);
        }
    }
}

#[test]
fn damage_across_several_records_costs_only_those_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    for k in [3, 4, 9] {
        flip(dir.path(), offset_of(k) + 40, 0x10);
    }
    let wal = Wal::open(options).unwrap();
    assert_eq!(readable_seqs(&wal), all_but(&[3, 4, 9], RECORDS + 1));
    assert_eq!(wal.stats().corrupt_records, 3);
    assert_eq!(block_on(append_seq(&wal, RECORDS + 1)), RECORDS + 1);
}

#[test]
fn a_torn_tail_is_cut_and_a_header_that_survived_retires_its_seq() {
    // Nothing of the last record reached the disk: cut, its seq was never written.
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    let path = segment_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset_of(RECORDS) as usize..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    {
        let wal = Wal::open(strict(&options)).unwrap();
        assert_eq!(readable_seqs(&wal), all_but(&[], RECORDS));
        assert_eq!(wal.stats().corrupt_records, 0);
        assert_eq!(block_on(append_seq(&wal, RECORDS)), RECORDS);
    }
    // Its header reached the disk, its payload did not: the seq is retired, strict mode
    // included (a torn tail is not damage), and never handed out again.
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    let path = segment_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(offset_of(RECORDS) + 32 + 3) as usize..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    {
        let wal = Wal::open(strict(&options)).unwrap();
        assert_eq!(readable_seqs(&wal), all_but(&[RECORDS], RECORDS));
        assert_eq!(wal.stats().corrupt_records, 1);
        assert_eq!(block_on(append_seq(&wal, RECORDS + 1)), RECORDS + 1);
    }
    let wal = Wal::open(strict(&options)).unwrap();
    assert_eq!(readable_seqs(&wal), all_but(&[RECORDS], RECORDS + 2));
}

#[test]
fn the_tail_scan_classifies_each_case() {
    use super::format::{scan_tail, DamageKind, Window};
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    let pristine = std::fs::read(segment_file(dir.path())).unwrap();
    let scan = |bytes: &[u8]| {
        let window = Window::new(&bytes[HEADER_PAGE_BYTES as usize..], HEADER_PAGE_BYTES);
        scan_tail(&window, 1, HEADER_PAGE_BYTES, 1, |_| {})
    };
    let clean = scan(&pristine);
    assert_eq!((clean.records, clean.next_seq), (RECORDS, RECORDS + 1));
    assert!(clean.damage.is_empty());

    let kinds = |at: u64, mask: u8| {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= mask;
        let tail = scan(&bytes);
        assert_eq!(
            (tail.records, tail.lost(), tail.next_seq),
            (RECORDS - 1, 1, RECORDS + 1)
        );
        tail.damage.iter().map(|span| span.kind).collect::<Vec<_>>()
    };
    assert_eq!(kinds(offset_of(5) + 40, 1), [DamageKind::Record]);
    assert_eq!(kinds(offset_of(5) + 5, 1), [DamageKind::Span]);
    assert_eq!(kinds(offset_of(5), 1), [DamageKind::Span]);
    assert_eq!(kinds(offset_of(RECORDS) + 40, 1), [DamageKind::TornRecord]);
}

/// Found by the model test: the seqs of a segment set aside as `*.corrupt` were protected
/// only during the open that set it aside; the next restart handed them out again.
#[test]
fn seqs_of_a_set_aside_segment_are_never_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    write_log(&options);
    flip(dir.path(), 0, 0x01); // the segment header
    for _ in 0..2 {
        let wal = Wal::open(options.clone()).unwrap();
        assert_eq!(wal.next_seq(), RECORDS + 1);
    }
    let wal = Wal::open(options).unwrap();
    assert_eq!(block_on(append_seq(&wal, RECORDS + 1)), RECORDS + 1);
}

/// Found by the model test: a newest segment whose header is damaged and whose only record
/// was a retired torn one has no valid record, but its seal still names it: it is set aside
/// (its seqs stay used), not mistaken for an interrupted roll and reused as a spare.
#[test]
fn a_sealed_newest_segment_with_a_damaged_header_is_set_aside_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_options(dir.path());
    block_on(async {
        let wal = Wal::open(options.clone()).unwrap();
        assert_eq!(append_seq(&wal, 1).await, 1);
        wal.close().await.unwrap();
    });
    // Tear seq 1 after its header: recovery retires it and seals the segment.
    let path = segment_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(HEADER_PAGE_BYTES + 32 + 1) as usize..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    drop(Wal::open(options.clone()).unwrap());
    flip(dir.path(), 0, 0x01);
    let wal = Wal::open(options).unwrap();
    assert_eq!(wal.next_seq(), 2, "seq 1 stays used");
}
