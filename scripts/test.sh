#!/usr/bin/env bash
# The whole test suite: installs the stand-ins the tests need, then runs every test.
# This is the README's test command and what .ci/run calls. Works on a fresh machine with a
# Rust toolchain and Python 3.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export FLAGSTREAM_TEST_DEPS="$PWD/.test-deps"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
cargo build --bins
cargo nextest run --all-targets --no-fail-fast
cargo test --doc
