//! Arbitrary bytes as a cursor file, opened by the WAL, decoded by delivery and driving the
//! batcher. Run: `scripts/fuzz.sh cursor_file SECONDS`. The harness is shared with the
//! `cursor_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/cursor_fuzz.rs"]
mod harness;

mod scratch;

fuzz_target!(|data: &[u8]| {
    harness::run(data, &scratch::dir("flagstream-cursor-fuzz"));
});
