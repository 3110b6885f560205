//! `mode=stream`: rows sent with `tabledata.insertAll`, one request per table and batch,
//! each row with an `insertId` (its table key), which BigQuery uses for **best-effort**
//! dedupe of rows re-sent within about a minute — not exactly once (see docs/warehouse.md).
//!
//! With `skipInvalidRows: false` a request with any bad row inserts nothing: rows BigQuery
//! marks `invalid` are permanent failures naming their event; the others (`stopped`) are
//! retriable and sent again by the engine.

use http::Method;
use serde_json::Value;

use super::api::{self, Api};
use super::config::Urls;
use super::rows::insert_all_body;
use crate::dest::postgres::{Row, Table};
use crate::dest::{Failure, FailureClass, ItemFailure};

/// Insert `rows` into `table`; per-row failures, or the failure of the whole request.
pub async fn insert_all(
    api: &Api,
    urls: &Urls,
    table: &Table,
    rows: &[Row],
    what: &str,
) -> Result<Vec<ItemFailure>, Failure> {
    let body = insert_all_body(table, rows);
    let answer = api
        .call_json(Method::POST, &urls.insert_all(&table.name), &body, &what)
        .await?;
    if !answer.status.is_success() {
        return Err(api::failure(&answer, &what));
    }
    Ok(row_failures(&answer.body, rows, what))
}

/// Item failures from `insertErrors` (indices into `rows`).
pub fn row_failures(body: &Value, rows: &[Row], what: &str) -> Vec<ItemFailure> {
    let errors = body["insertErrors"].as_array().cloned().unwrap_or_default();
    let mut failures = Vec::new();
    for entry in &errors {
        let Some(row) = entry["index"].as_u64().and_then(|i| rows.get(i as usize)) else {
            continue;
        };
        let first = &entry["errors"][0];
        let reason = first["reason"].as_str().unwrap_or_default();
        let message = first["message"].as_str().unwrap_or_default();
        let class = match reason {
            "invalid" => FailureClass::Permanent,
            "rateLimitExceeded" | "quotaExceeded" => FailureClass::Throttled,
            // `stopped`: a valid row not inserted because another one was invalid.
            _ => FailureClass::Retriable,
        };
        failures.push(ItemFailure::new(
            row.index,
            class,
            format!("event {}: {what}: {reason}: {message}", row.event_id),
        ));
    }
    failures
}
