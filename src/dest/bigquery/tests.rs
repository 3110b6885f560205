//! Unit tests: job ids, table resources and the mismatch check, job outcomes from recorded
//! BigQuery and bqemulator job resources, insertAll row failures.

use serde_json::json;

use super::jobs::{job_end, job_id, upload_body, JobEnd};
use super::rows::{insert_id, Ndjson};
use super::stream::row_failures;
use super::tables::{mismatch, table_resource};
use crate::dest::postgres::{warehouse_tables, Cell, Row};
use crate::dest::FailureClass;

fn row(index: usize, id: &str, kind: Option<&str>) -> Row {
    let table = &warehouse_tables("d")[0];
    Row {
        index,
        event_id: id.into(),
        cells: table
            .columns
            .iter()
            .map(|c| match c.name {
                "event_id" => Cell::Text(id.into()),
                "context_kind" => kind.map_or(Cell::Null, |k| Cell::Text(k.into())),
                "variation_value" => Cell::Json(r#"{"a":[1,2]}"#.into()),
                _ => Cell::Null,
            })
            .collect(),
    }
}

#[test]
fn job_ids_follow_bigquerys_rules_and_are_stable() {
    let id = job_id(
        "my dest-00000000000000000001.0-00000000000000000002.3",
        "metric_events",
        0,
    );
    assert!(id.len() <= 1024);
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{id}"
    );
    assert_eq!(
        id,
        job_id(
            "my dest-00000000000000000001.0-00000000000000000002.3",
            "metric_events",
            0
        )
    );
    // Batch ids that sanitise alike still get different job ids.
    assert_ne!(job_id("a.b", "t", 0), job_id("a_b", "t", 0));
    assert_eq!(
        job_id("a.b", "t", 2),
        format!("{}_r2", job_id("a.b", "t", 0))
    );
    assert!(job_id(&"x".repeat(5000), "evaluation_events", 15).len() <= 1024);
}

#[test]
fn tables_are_partitioned_clustered_and_checked() {
    let tables = warehouse_tables("flags");
    let resource = table_resource(&tables[0], "p");
    assert_eq!(
        resource["timePartitioning"],
        json!({"type": "DAY", "field": "timestamp"})
    );
    assert_eq!(resource["clustering"], json!({"fields": ["flag_key"]}));
    assert_eq!(
        table_resource(&tables[1], "p")["clustering"],
        json!({"fields": ["metric_key"]})
    );
    assert!(table_resource(&tables[2], "p")
        .get("timePartitioning")
        .is_none());
    assert_eq!(mismatch(&tables[0], &resource), None);

    let mut legacy = resource.clone();
    for field in legacy["schema"]["fields"].as_array_mut().unwrap() {
        if field["type"] == "INT64" {
            field["type"] = json!("INTEGER");
        }
    }
    assert_eq!(
        mismatch(&tables[0], &legacy),
        None,
        "legacy type names match"
    );
    let mut wrong = resource.clone();
    wrong["schema"]["fields"][10]["type"] = json!("STRING");
    let reason = mismatch(&tables[0], &wrong).unwrap();
    assert!(
        reason.contains("variation_index") && reason.contains("STRING"),
        "{reason}"
    );
    let mut required = resource;
    required["schema"]["fields"][6]["mode"] = json!("REQUIRED");
    assert!(mismatch(&tables[0], &required)
        .unwrap()
        .contains("context_kind"));
}

#[test]
fn ndjson_embeds_json_values_and_insert_ids_are_the_table_key() {
    let table = &warehouse_tables("d")[0];
    let rows = [row(0, "e1", Some("user")), row(1, "e1", None)];
    let ndjson = Ndjson::of(table, &rows);
    let text = String::from_utf8(ndjson.bytes.clone()).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["variation_value"], json!({"a": [1, 2]}));
    assert!(first.get("variation_name").is_none(), "nulls are left out");
    assert_eq!(ndjson.row_at(ndjson.offsets[1]), Some(1));
    assert_eq!(insert_id(table, &rows[0]), "e1/user");
    assert_eq!(insert_id(table, &rows[1]), "e1/");
    let body = upload_body(&json!({"jobReference": {}}), &ndjson.bytes);
    assert!(String::from_utf8_lossy(&body).ends_with("--flagstream-load-job-boundary--\r\n"));
}

#[test]
fn job_outcomes_are_classified_and_bad_rows_located() {
    let table = &warehouse_tables("d")[0];
    let rows = [row(0, "a", None), row(1, "b", None), row(2, "c", None)];
    let ndjson = Ndjson::of(table, &rows);
    assert_eq!(
        job_end(&json!({"status": {"state": "DONE"}}), &ndjson, "t"),
        JobEnd::Succeeded
    );
    // BigQuery's message quotes the byte offset of the row.
    let offset = ndjson.offsets[2];
    let real = json!({"status": {"state": "DONE",
        "errorResult": {"reason": "invalid", "message": "Error while reading data, error message: JSON table encountered too many errors, giving up. Rows: 1; errors: 1."},
        "errors": [{"reason": "invalid", "message": format!("Error while reading data, error message: JSON parsing error in row starting at position {offset}: No such field: x.")}]}});
    assert!(matches!(job_end(&real, &ndjson, "t"), JobEnd::InvalidRows(ref r) if r[0].0 == 2));
    // bqemulator 1.4.0's message names the line (recorded from tests against it).
    let emulator = json!({"status": {"state": "DONE",
        "errorResult": {"reason": "invalid", "message": "x"},
        "errors": [{"reason": "invalid", "message": "Error while reading data, error message: Invalid Input Error: JSON transform error in file \"/tmp/bqemu_uploads/80e6.bin\", in line 2: Failed to cast value to numerical: \"x\""}]}});
    assert!(matches!(job_end(&emulator, &ndjson, "t"), JobEnd::InvalidRows(ref r) if r[0].0 == 1));
    for (reason, class) in [
        ("backendError", FailureClass::Retriable),
        ("rateLimitExceeded", FailureClass::Throttled),
        ("invalid", FailureClass::Permanent),
        ("accessDenied", FailureClass::Permanent),
    ] {
        let job =
            json!({"status": {"state": "DONE", "errorResult": {"reason": reason, "message": "m"}}});
        match job_end(&job, &ndjson, "t") {
            JobEnd::Failed(failure) => assert_eq!(failure.class, class, "{reason}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn insert_all_errors_name_the_event_and_stopped_rows_retry() {
    let rows = [row(4, "a", None), row(7, "b", None)];
    let body = json!({"insertErrors": [
        {"index": 0, "errors": [{"reason": "invalid", "message": "no such field"}]},
        {"index": 1, "errors": [{"reason": "stopped", "message": ""}]},
    ]});
    let failures = row_failures(&body, &rows, "t");
    assert_eq!(failures.len(), 2);
    assert_eq!(
        (failures[0].index, failures[0].failure.class),
        (4, FailureClass::Permanent)
    );
    assert!(failures[0].failure.reason.contains("event a"));
    assert_eq!(
        (failures[1].index, failures[1].failure.class),
        (7, FailureClass::Retriable)
    );
}
