#!/usr/bin/env bash
# The whole test suite: installs the stand-ins the tests need, then runs every test.
# This is the README's test command and what .ci/run calls. Works on a fresh machine with a
# Rust toolchain and Python 3.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export FLAGSTREAM_TEST_DEPS="$PWD/.test-deps"
# mold links the test binaries several times faster than the default linker; used when it can
# be installed (Debian's package), the default linker otherwise.
if ! command -v mold >/dev/null 2>&1; then
  apt-get install -y mold >/dev/null 2>&1 || echo "mold not installed: linking with the default linker"
fi
if command -v mold >/dev/null 2>&1; then
  export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
# Style and lints first: cheap, and CI enforces them like tests.
for tool in fmt clippy; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    echo "installing cargo $tool"
    rustup component add "$([ "$tool" = fmt ] && echo rustfmt || echo clippy)"
  fi
done
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --bins
# Every test (the integration tests are one crate, `tests/it`, with the destination
# conformance suite in `tests/it/conformance`). A missing stand-in fails its tests with the
# command that installs it; nothing is skipped.
cargo nextest run --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
