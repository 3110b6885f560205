//! Load jobs: one per batch and table, **its job id derived from the batch id**, so a batch
//! re-sent after a crash or a retry cannot be loaded twice.
//!
//! BigQuery refuses a second job with an id it has seen (HTTP 409, reason `duplicate`; job
//! ids are remembered for the project for at least the job history's retention). A 409 is
//! answered by reading that job: done without error → the rows are in (delivered); still
//! running → wait for it; done with an error → a load job is atomic, nothing was loaded, and
//! its id is spent, so the next attempt uses the next id of the sequence (`…_r1`, `…_r2`).
//! The sequence is deterministic, so any later re-send walks the same ids and finds the one
//! that succeeded.
//!
//! The payload is newline-delimited JSON in a `multipart/related` upload (metadata part,
//! then media part). The job is polled with `jobs.get` until `DONE`, within the send
//! timeout; job errors are classified: `invalid` rows (located by the byte offset BigQuery
//! quotes) are permanent failures naming the event, and the job is run again without them;
//! backend and rate errors are retriable.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use xxhash_rust::xxh3::xxh3_64;

use super::api::{self, Answer, Api};
use super::config::Urls;
use super::rows::Ndjson;
use crate::dest::postgres::{Row, Table};
use crate::dest::{Failure, FailureClass, ItemFailure};

/// Most ids of one batch's job sequence tried; each failed job spends one.
pub const MAX_JOB_ATTEMPTS: u32 = 16;
/// Job ids: letters, digits, `_` and `-`, at most 1,024 characters.
const MAX_JOB_ID_CHARS: usize = 1024;
/// Boundary of the multipart upload (cannot occur in NDJSON lines: they are JSON objects).
const BOUNDARY: &str = "flagstream-load-job-boundary";

/// The job id of attempt `attempt` of loading `batch_id`'s rows of `table`.
pub fn job_id(batch_id: &str, table: &str, attempt: u32) -> String {
    // Sanitising can map two batch ids onto one text; the hash of the originals keeps
    // their job ids apart.
    let hash = xxh3_64(format!("{batch_id}\n{table}").as_bytes());
    let clean: String = batch_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_JOB_ID_CHARS - 128)
        .collect();
    let suffix = if attempt == 0 {
        String::new()
    } else {
        format!("_r{attempt}")
    };
    format!("flagstream_{table}_{clean}_{hash:016x}{suffix}")
}

/// The `multipart/related` body: job metadata, then the NDJSON rows.
pub fn upload_body(metadata: &Value, ndjson: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(ndjson.len() + 1024);
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(metadata.to_string().as_bytes());
    body.extend_from_slice(
        format!("\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(ndjson);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Bytes::from(body)
}

/// The `Content-Type` of [`upload_body`].
pub fn upload_content_type() -> String {
    format!("multipart/related; boundary={BOUNDARY}")
}

/// The load job resource for `table`.
pub fn load_metadata(urls: &Urls, table: &Table, job_id: &str, location: Option<&str>) -> Value {
    let mut reference = json!({"projectId": urls.project(), "jobId": job_id});
    if let Some(location) = location {
        reference["location"] = json!(location);
    }
    json!({
        "jobReference": reference,
        "configuration": {"load": {
            "destinationTable": {
                "projectId": urls.project(),
                "datasetId": urls.dataset_id(),
                "tableId": table.name,
            },
            "sourceFormat": "NEWLINE_DELIMITED_JSON",
            "writeDisposition": "WRITE_APPEND",
            "createDisposition": "CREATE_NEVER",
            "maxBadRecords": 0,
            "ignoreUnknownValues": false,
        }},
    })
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    Succeeded,
    /// Rows BigQuery refused (indices into the loaded rows), with its message.
    InvalidRows(Vec<(usize, String)>),
    Failed(Failure),
}

/// Classify a `DONE` job resource; `ndjson` locates refused rows by byte offset.
pub fn job_end(job: &Value, ndjson: &Ndjson, what: &str) -> JobEnd {
    let Some(error) = job["status"].get("errorResult").filter(|e| !e.is_null()) else {
        return JobEnd::Succeeded;
    };
    let reason = error["reason"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    let class = match reason {
        "rateLimitExceeded" | "quotaExceeded" => FailureClass::Throttled,
        r if api::is_transient_reason(r) => FailureClass::Retriable,
        _ => FailureClass::Permanent,
    };
    if reason == "invalid" {
        let rows = refused_rows(job, ndjson);
        if !rows.is_empty() {
            return JobEnd::InvalidRows(rows);
        }
    }
    JobEnd::Failed(Failure::new(
        class,
        format!("{what}: load job failed ({reason}): {message}"),
    ))
}

/// Rows named by `status.errors[].message`.
fn refused_rows(job: &Value, ndjson: &Ndjson) -> Vec<(usize, String)> {
    let mut rows = Vec::new();
    let errors = job["status"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for error in &errors {
        let message = error["message"].as_str().unwrap_or_default();
        // BigQuery: "row starting at position N" (a byte offset); DuckDB-backed emulators:
        // "in line N" (1-based).
        let row = number_after(message, "position ")
            .and_then(|offset| ndjson.row_at(offset))
            .or_else(|| number_after(message, "line ").and_then(|line| line.checked_sub(1)))
            .filter(|row| *row < ndjson.offsets.len());
        if let Some(row) = row {
            rows.push((row, message.to_string()));
        }
    }
    rows
}

/// The number right after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<usize> {
    let rest = text.split(prefix).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// One table's rows of one batch, loaded by [`load`].
pub struct LoadRequest<'a> {
    pub api: &'a Api,
    pub urls: &'a Urls,
    pub table: &'a Table,
    pub batch_id: &'a str,
    pub location: Option<&'a str>,
    pub what: &'a str,
}

/// Load `rows`; returns the rows refused as invalid (permanent item failures naming their
/// event) once the others are in, or the failure of the whole load.
pub async fn load(request: &LoadRequest<'_>, rows: &[Row]) -> Result<Vec<ItemFailure>, Failure> {
    let mut rows: Vec<Row> = rows.to_vec();
    let mut refused = Vec::new();
    for attempt in 0..MAX_JOB_ATTEMPTS {
        if rows.is_empty() {
            return Ok(refused);
        }
        let ndjson = Ndjson::of(request.table, &rows);
        let id = job_id(request.batch_id, &request.table.name, attempt);
        let job = match run_job(request, &id, &ndjson).await? {
            Some(job) => job,
            None => continue, // an earlier attempt's failed job: its id is spent
        };
        match job_end(&job, &ndjson, request.what) {
            JobEnd::Succeeded => return Ok(refused),
            JobEnd::Failed(failure) => return Err(failure),
            JobEnd::InvalidRows(bad) => {
                let mut indices: Vec<usize> = bad.iter().map(|(row, _)| *row).collect();
                for (row, message) in bad {
                    let row = &rows[row];
                    refused.push(ItemFailure::new(
                        row.index,
                        FailureClass::Permanent,
                        format!("event {}: {}: {message}", row.event_id, request.what),
                    ));
                }
                indices.sort_unstable();
                indices.dedup();
                for index in indices.into_iter().rev() {
                    rows.remove(index);
                }
            }
        }
    }
    Err(Failure::permanent(format!(
        "{}: {MAX_JOB_ATTEMPTS} load jobs of batch {} failed",
        request.what, request.batch_id
    )))
}

/// Insert job `id` (or find it, if it exists) and wait until it is done. `None` when the id
/// belongs to a job that already failed.
async fn run_job(
    request: &LoadRequest<'_>,
    id: &str,
    ndjson: &Ndjson,
) -> Result<Option<Value>, Failure> {
    let metadata = load_metadata(request.urls, request.table, id, request.location);
    let body = upload_body(&metadata, &ndjson.bytes);
    let content_type = upload_content_type();
    let answer = request
        .api
        .call(
            Method::POST,
            &request.urls.upload_job(),
            Some((body, &content_type)),
            &request.what,
        )
        .await?;
    let job = if answer.status == http::StatusCode::CONFLICT {
        // The id was used before: by a successful, running or failed job of this batch.
        let existing = get_job(request, id).await?;
        let done = existing["status"]["state"] == "DONE";
        if done && matches!(job_end(&existing, ndjson, request.what), JobEnd::Succeeded) {
            return Ok(Some(existing));
        }
        if done {
            return Ok(None);
        }
        existing
    } else if answer.status.is_success() {
        answer.body
    } else {
        return Err(api::failure(&answer, &request.what));
    };
    poll(request, job).await.map(Some)
}

async fn get_job(request: &LoadRequest<'_>, id: &str) -> Result<Value, Failure> {
    let url = request.urls.job(id, request.location);
    let answer: Answer = request
        .api
        .call(Method::GET, &url, None, &request.what)
        .await?;
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(api::failure(&answer, &request.what))
    }
}

/// Poll until the job is `DONE`. The caller bounds the whole send by its timeout.
async fn poll(request: &LoadRequest<'_>, mut job: Value) -> Result<Value, Failure> {
    let mut pause = Duration::from_millis(100);
    while job["status"]["state"] != "DONE" {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
        let id = job["jobReference"]["jobId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        job = get_job(request, &id).await?;
    }
    Ok(job)
}
