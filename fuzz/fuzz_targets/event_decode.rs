//! Arbitrary bytes as an inbound body for every format, fed to validation, decoding and every
//! output schema. Run: `scripts/fuzz.sh event_decode SECONDS`. The harness is shared
//! with the `event_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/event_fuzz.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
