//! Arbitrary bytes as a segment file, fed to recovery, the reader and `wal verify`.
//! Run: `scripts/fuzz.sh wal_recovery SECONDS`. The harness is shared with the
//! `wal_fuzz_harness` test so the same properties run on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/support/wal_fuzz.rs"]
mod harness;

fuzz_target!(|data: &[u8]| {
    // tmpfs when there is one: on a disk, every input's fdatasyncs make the disk, not the
    // code, the bottleneck (about 10 inputs a second).
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let scratch = base.join(format!("flagstream-fuzz-{}", std::process::id()));
    harness::run(data, &scratch);
});
