#!/usr/bin/env bash
# Installs (idempotently) the real servers and SDKs the integration tests talk to, under
# .test-deps/. Each test starts its own instance on a free loopback port; nothing here starts
# a server.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-deps
DEPS="$PWD/.test-deps"

# The LaunchDarkly Python server SDK (real /bulk payloads for tests/serve_e2e.rs).
LD_SDK_VERSION="9.18.2"
if ! "$DEPS/ld-python/bin/python" -c "import ldclient, sys; sys.exit(0 if ldclient.VERSION == '$LD_SDK_VERSION' else 1)" 2>/dev/null; then
  echo "installing launchdarkly-server-sdk $LD_SDK_VERSION into $DEPS/ld-python"
  python3 -m venv "$DEPS/ld-python"
  "$DEPS/ld-python/bin/pip" install --quiet --disable-pip-version-check "launchdarkly-server-sdk==$LD_SDK_VERSION"
fi
