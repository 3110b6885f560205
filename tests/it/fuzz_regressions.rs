//! Inputs that once broke a fuzz target, replayed through its harness in every CI run.
//!
//! `tests/fuzz_regressions/<target>/` holds one file per input, named after what it found;
//! `scripts/fuzz.sh` also seeds each run's corpus with them. A new crash from `fuzz/artifacts/`
//! is fixed, then copied here.

use std::path::{Path, PathBuf};

use crate::support::wal::fast_tempdir;
use crate::support::{cursor_fuzz, event_fuzz, ingest_fuzz, wal_fuzz};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

fn replay(target: &str, run: impl Fn(&[u8], &Path)) -> usize {
    let inputs = inputs(target);
    for (path, bytes) in &inputs {
        eprintln!("replaying {}", path.display());
        let scratch = fast_tempdir();
        run(bytes, &scratch.path().join("scratch"));
    }
    inputs.len()
}

#[test]
fn every_kept_crash_input_passes_its_harness() {
    let replayed = replay("cursor_file", cursor_fuzz::run)
        + replay("ingest_request", |data, _| {
            ingest_fuzz::run(data);
        })
        + replay("event_decode", |data, _| event_fuzz::run(data))
        + replay("wal_recovery", wal_fuzz::run);
    assert!(
        replayed >= 1,
        "no regression inputs found under tests/fuzz_regressions"
    );
}
