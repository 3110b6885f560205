//! Arbitrary bytes as a cursor file, opened by the WAL, decoded by delivery and driving the
//! batcher. Run: `scripts/fuzz.sh cursor_file SECONDS`. The harness is shared with the
//! `cursor_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/cursor_fuzz.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    // tmpfs when there is one: every input opens a WAL, and fdatasync on a disk would make
    // the disk, not the code, the bottleneck.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let scratch = base.join(format!("flagstream-cursor-fuzz-{}", std::process::id()));
    harness::run(data, &scratch);
});
