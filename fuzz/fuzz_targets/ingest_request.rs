//! Arbitrary HTTP requests (method, path, headers, gzip, body) answered by the ingest
//! handler without a socket. Run: `scripts/fuzz.sh ingest_request SECONDS`. The harness is
//! shared with the `ingest_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/ingest_fuzz.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    harness::run(data);
});
