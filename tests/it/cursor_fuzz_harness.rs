//! The `cursor_file` fuzz target's harness, run under proptest (modest case counts) so its
//! properties hold in every CI run, not only under `cargo fuzz`.

use crate::support::cursor_fuzz as fuzz_harness;
use crate::support::wal::fast_tempdir;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_cursor_files(flags in any::<u8>(), counts in any::<u8>(), content in prop::collection::vec(any::<u8>(), 0..1200)) {
        let scratch = fast_tempdir();
        let mut data = vec![flags, counts];
        data.extend(content);
        fuzz_harness::run(&data, &scratch.path().join("wal"));
    }

    /// Version 2 delivery blobs (56 bytes, version byte 2) with random fields: plans and
    /// positions that delivery never wrote but a checksummed slot can hold.
    #[test]
    fn arbitrary_delivery_states(flags in 0u8..64, counts in any::<u8>(), fields in prop::collection::vec(0u8..8, 55), acked in any::<u8>()) {
        let scratch = fast_tempdir();
        let mut data = vec![flags & !3 | 1, counts, 56, 2];
        data.extend(fields);
        data.push(acked);
        fuzz_harness::run(&data, &scratch.path().join("wal"));
    }
}
