#!/usr/bin/env bash
# Installs (idempotently) the real servers the integration tests talk to, under .test-deps/.
# Each test starts its own instance on a free loopback port; nothing here starts a server.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-deps
