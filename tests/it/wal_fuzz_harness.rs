//! The `wal_recovery` fuzz target's harness, run on random inputs under proptest (a modest
//! number of cases) so its properties hold in every CI run, not only under `cargo fuzz`.

use crate::support::wal as wal_support;

use crate::support::wal_fuzz as fuzz_harness;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovery_survives_arbitrary_segment_bytes(flags in 0u8..8, content in prop::collection::vec(any::<u8>(), 0..2_000)) {
        let scratch = wal_support::fast_tempdir();
        let mut input = vec![flags];
        input.extend(content);
        fuzz_harness::run(&input, scratch.path());
    }

    /// Well-formed records with random damage: the fix-up flag makes checksums valid so
    /// framing, seq and resync logic are what gets exercised.
    #[test]
    fn recovery_survives_damaged_but_checksummed_records(
        lengths in prop::collection::vec(0u32..300, 1..20),
        seqs in prop::collection::vec(0u64..30, 1..20),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut content = Vec::new();
        for (index, len) in lengths.iter().enumerate() {
            let seq = seqs.get(index).copied().unwrap_or(index as u64 + 1);
            content.extend_from_slice(&0xF1A6u16.to_le_bytes());
            content.push(1);
            content.push(0);
            content.extend_from_slice(&len.to_le_bytes());
            content.extend_from_slice(&[0; 4]);
            content.extend_from_slice(&1u32.to_le_bytes());
            content.extend_from_slice(&seq.to_le_bytes());
            content.extend_from_slice(&0u64.to_le_bytes());
            content.extend(std::iter::repeat_n(0xAB, *len as usize));
            content.resize(content.len().div_ceil(8) * 8, 0);
        }
        for (index, value) in damage {
            let at = index.index(content.len());
            content[at] = value;
        }
        let scratch = wal_support::fast_tempdir();
        let mut input = vec![2u8];
        input.extend(content);
        fuzz_harness::run(&input, scratch.path());
    }
}
