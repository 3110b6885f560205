//! Arbitrary bytes as a segment file, fed to recovery, the reader and `wal verify`.
//! Run: `scripts/fuzz.sh wal_recovery SECONDS`. The harness is shared with the
//! `wal_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/wal_fuzz.rs"]
mod harness;

mod scratch;

fuzz_target!(|data: &[u8]| {
    harness::run(data, &scratch::dir("flagstream-fuzz"));
});
