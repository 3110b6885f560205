//! Object files read by a reader no one here wrote: DuckDB (PyPI `duckdb`, installed by
//! `scripts/install-test-deps.sh`) reads what the `file` destination wrote — NDJSON.gz in
//! Hive partitions and CSV with a header — and the counts, the partition columns and the
//! equality filters must match what was sent, every event exactly once (a re-sent batch
//! included).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cloud::{self, destination};
use flagstream::dest::{Batch, SendOutcome};

/// DuckDB's Python interpreter; panics (the test fails, never skips) with the install command.
fn duckdb_python() -> PathBuf {
    let deps = std::env::var_os("FLAGSTREAM_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps"));
    let python = deps.join("duckdb-python/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        ok,
        "DuckDB is not installed at {}; run `scripts/install-test-deps.sh`",
        python.display()
    );
    python
}

/// Run one DuckDB query; its single row as JSON values.
fn duckdb_row(sql: &str) -> Vec<serde_json::Value> {
    let script = "import duckdb, json, sys\n\
                  print(json.dumps(duckdb.sql(sys.argv[1]).fetchall()[0], default=str))";
    let out = Command::new(duckdb_python())
        .args(["-c", script, sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 300 events over 10 contexts, two kinds, across an hour boundary.
fn spanning_batch() -> Batch {
    let mut batch = cloud::batch("readers", 300, 10);
    for (i, item) in batch.items.iter_mut().enumerate() {
        item.received_at_ms = 1_700_002_799_000 + i as u64 * 10; // 22:59:59 → 23:00:01
        if i % 3 == 0 {
            item.kind = "custom".into();
        }
    }
    batch
}

#[tokio::test]
async fn duckdb_reads_partitioned_ndjson_gz_exactly_once_with_hive_columns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "file://{}?format=ndjson.gz&partitions=kind,dt,hour",
        dir.path().display()
    );
    let dest = destination(&url).await;
    let batch = spanning_batch();
    assert_eq!(dest.send(&batch).await, SendOutcome::Delivered);
    assert_eq!(dest.send(&batch).await, SendOutcome::Delivered, "re-sent");

    let user3 = batch
        .items
        .iter()
        .filter(|i| i.context_key.as_deref() == Some("user-3"))
        .count();
    let sql = format!(
        "SELECT count(*), count(DISTINCT event.id), \
           count(*) FILTER (WHERE kind = 'custom'), \
           count(*) FILTER (WHERE event.contextKeys.\"user\" = 'user-3'), \
           count(*) FILTER (WHERE event.key = 'new-checkout'), \
           list_sort(list(DISTINCT CAST(dt AS VARCHAR) || ' ' || CAST(hour AS VARCHAR))) \
         FROM read_ndjson('{}/**/*.ndjson.gz', hive_partitioning = true)",
        dir.path().display()
    );
    let row = duckdb_row(&sql);
    assert_eq!(
        row,
        serde_json::json!([
            300,
            300,
            100,
            user3,
            300,
            ["2023-11-14 22", "2023-11-14 23"]
        ])
        .as_array()
        .unwrap()
        .clone()
    );
}

#[tokio::test]
async fn duckdb_reads_csv_with_header_and_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "file://{}?format=csv&csv_columns=id:/event/id,flag:/event/key,user:/event/contextKeys/user,value:/event/value",
        dir.path().display()
    );
    let dest = destination(&url).await;
    let batch = spanning_batch();
    assert_eq!(dest.send(&batch).await, SendOutcome::Delivered);
    let sql = format!(
        "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE \"user\" = 'user-3'), \
           count(*) FILTER (WHERE flag = 'new-checkout'), typeof(any_value(value)) \
         FROM read_csv('{}/*.csv', header = true)",
        dir.path().display()
    );
    assert_eq!(
        duckdb_row(&sql),
        serde_json::json!([300, 300, 30, 300, "BOOLEAN"])
            .as_array()
            .unwrap()
            .clone()
    );
}
