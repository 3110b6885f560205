//! Object files read by readers no one here wrote: DuckDB and pyarrow (PyPI, installed by
//! `scripts/install-test-deps.sh`) read what the `file` and `s3` destinations wrote, and the
//! counts, values, types, partition columns and equality filters must match what was sent,
//! every event exactly once (a re-sent batch included).
//!
//! [`load`] runs the binary with
//! one destination per format (Parquet, CSV, NDJSON, NDJSON.gz to files, Parquet to S3 on
//! moto), sends the real SDK payload and a 100k-event load, and compares every reader's rows
//! with the NDJSON rows, value by value; the NDJSON itself is checked against the load.

mod load;

use crate::support::cloud::{self, destination};
use crate::support::readers::duckdb_row;
use flagstream::dest::{Batch, SendOutcome};

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
