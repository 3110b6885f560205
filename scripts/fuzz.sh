#!/usr/bin/env bash
# Run the libFuzzer targets in fuzz/ beyond what CI does (CI runs the same harnesses under
# proptest, see tests/it/*_fuzz_harness.rs).
#
#   scripts/fuzz.sh TARGET SECONDS     one target for SECONDS of fuzzing
#   scripts/fuzz.sh all SECONDS        every target, one after the other
#   scripts/fuzz.sh list               the targets
#
# Installs cargo-fuzz (`cargo install cargo-fuzz --locked`) when it is missing. Stable Rust
# is enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the nightly-only flags it needs.
#
# Choices, and why:
# * `--sanitizer none`: the library is safe Rust except the mmap module (src/wal/mapping.rs),
#   whose accesses are bounds-checked slices; AddressSanitizer would mostly instrument the C
#   libraries linked in (librdkafka, aws-lc) that no target reaches, and costs 2-3x speed.
#   Panics, overflow checks (`-a`, debug assertions on) and the harnesses' own assertions are
#   what finds bugs here.
# * release (`-O`) with debug assertions (`-a`): integer overflow panics instead of wrapping.
#   fuzz/Cargo.toml optimises only the crates the targets run (flagstream, simd-json, …) and
#   builds the cloud SDKs at opt-level 0, which no target reaches: a much shorter first build.
# * its own target dir (FUZZ_TARGET_DIR, default /work/target-fuzz or fuzz/target): the
#   instrumented build shares nothing with normal builds; the first one is long because the
#   fuzz crate links the whole library (rdkafka, AWS, GCP clients).
# * corpus in fuzz/corpus/TARGET (git-ignored, grows run to run); crashes in
#   fuzz/artifacts/TARGET. A crash found here is fixed and its input copied to
#   tests/fuzz_regressions/TARGET/, which `it fuzz_regressions` replays in every CI run.
# * libFuzzer's final statistics (executions, exec/s, cov, ft) go to
#   fuzz/artifacts/TARGET/last-run.log; docs/reliability.md records them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"
TARGETS=(event_decode wal_recovery ingest_request cursor_file)

usage() {
    echo "usage: scripts/fuzz.sh TARGET|all SECONDS   (targets: ${TARGETS[*]})" >&2
    exit 2
}

if [[ "${1:-}" == list ]]; then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi
[[ $# -eq 2 ]] || usage
TARGET="$1"
SECONDS_EACH="$2"
[[ "$SECONDS_EACH" =~ ^[0-9]+$ ]] || usage

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [[ -d /work ]]; then
    export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/work/target-fuzz}"
else
    export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
fi
export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own lockfile; start it from the main one so the fuzzed build uses
# the dependency versions the test suite uses.
[[ -f Cargo.lock ]] || cp "$ROOT/Cargo.lock" Cargo.lock

run_one() {
    local target="$1"
    local artifacts="$ROOT/fuzz/artifacts/$target"
    local corpus="$ROOT/fuzz/corpus/$target"
    local seeds="$ROOT/tests/fuzz_regressions/$target"
    mkdir -p "$artifacts" "$corpus"
    # Regression inputs seed the corpus, so each run starts from what once broke.
    if [[ -d "$seeds" ]]; then
        cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    fi
    echo "fuzz.sh: $target for ${SECONDS_EACH}s" >&2
    cargo fuzz run --sanitizer none -O -a "$target" "$corpus" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" 2>&1 | tee "$artifacts/last-run.log"
}

if [[ "$TARGET" == all ]]; then
    # A crash in one target does not stop the others; the exit status reports it.
    failed=()
    for target in "${TARGETS[@]}"; do
        run_one "$target" || failed+=("$target")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        echo "fuzz.sh: failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
        exit 1
    fi
else
    [[ " ${TARGETS[*]} " == *" $TARGET "* ]] || usage
    run_one "$TARGET"
fi
