//! `flagstream dead-letters list|show|redrive`: the client side of the admin API's
//! `/v1/dead-letters` routes, with plain-text renderings for operators (`--json` prints the
//! API's answer as it came).
//!
//! It changes server state only for `redrive`, which only queues a job: the server sends the
//! dead letters through the destination's own batching and retries, and `list` shows the
//! progress (`redriven`, the running job).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

pub use crate::admin_api::AdminApi;
use crate::admin_api::AdminError;

/// Why a dead-letters command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLettersError {
    #[error("--filter `{0}`: use reason=TEXT")]
    Filter(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// `reason=TEXT` → `TEXT`.
pub fn parse_filter(filter: &str) -> Result<String, DeadLettersError> {
    match filter.split_once('=') {
        Some(("reason", text)) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(DeadLettersError::Filter(filter.to_string())),
    }
}

/// `GET /v1/dead-letters[/{name}]` as JSON.
pub async fn list_json(api: &AdminApi, name: Option<&str>) -> Result<Value, DeadLettersError> {
    let path = match name {
        Some(name) => format!("/v1/dead-letters/{}", encode(name)),
        None => "/v1/dead-letters".to_string(),
    };
    Ok(api.get_json(&path).await?)
}

/// `list`, as text: one block per destination.
pub async fn list(api: &AdminApi, name: Option<&str>) -> Result<String, DeadLettersError> {
    let answer = list_json(api, name).await?;
    let summaries = match name {
        Some(_) => vec![answer],
        None => answer["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    let mut out = String::new();
    for summary in &summaries {
        render_summary(&mut out, summary);
    }
    if summaries.is_empty() {
        out.push_str("no destinations\n");
    }
    Ok(out)
}

fn render_summary(out: &mut String, summary: &Value) {
    let n = |key: &str| summary[key].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "{}: {} dead letters, {} bytes in {} files; {} redrivable, {} redriven, {} failed again",
        summary["destination"].as_str().unwrap_or("?"),
        n("events"),
        n("bytes"),
        summary["files"].as_array().map_or(0, Vec::len),
        n("redrivable"),
        n("redriven"),
        n("redriven_dead_lettered"),
    );
    if let Some(job) = summary["redrive"].as_object() {
        let _ = writeln!(
            out,
            "  redrive running: job {} to `{}`{}",
            job["id"],
            job["target"].as_str().unwrap_or("?"),
            reason_suffix(job["filter"]["reason"].as_str()),
        );
    }
    if let Some(reasons) = summary["by_reason"].as_object() {
        for (reason, count) in reasons {
            let _ = writeln!(out, "  {count:>8}  {reason}");
        }
    }
    for file in summary["files"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  file {} ({} events, {} bytes)",
            file["path"].as_str().unwrap_or("?"),
            file["events"],
            file["bytes"]
        );
    }
}

fn reason_suffix(reason: Option<&str>) -> String {
    reason.map_or(String::new(), |reason| {
        format!(" (reason contains `{reason}`)")
    })
}

/// What `show` asks for.
#[derive(Debug, Clone, Default)]
pub struct ShowQuery {
    pub reason: Option<String>,
    pub offset: u64,
    pub limit: u64,
}

/// `GET /v1/dead-letters/{name}/events` as JSON.
pub async fn show_json(
    api: &AdminApi,
    name: &str,
    query: &ShowQuery,
) -> Result<Value, DeadLettersError> {
    let mut path = format!(
        "/v1/dead-letters/{}/events?offset={}&limit={}",
        encode(name),
        query.offset,
        query.limit
    );
    if let Some(reason) = &query.reason {
        path.push_str(&format!("&reason={}", encode(reason)));
    }
    Ok(api.get_json(&path).await?)
}

/// `show`, pretty-printed: each dead letter with its reason, state and payload.
pub async fn show(
    api: &AdminApi,
    name: &str,
    query: &ShowQuery,
) -> Result<String, DeadLettersError> {
    let page = show_json(api, name, query).await?;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    let total = page["total"].as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: {total} dead letters{}; showing {} from #{}",
        reason_suffix(query.reason.as_deref()),
        entries.len(),
        query.offset + 1
    );
    for (index, entry) in entries.iter().enumerate() {
        render_entry(&mut out, query.offset + index as u64 + 1, entry);
    }
    Ok(out)
}

fn render_entry(out: &mut String, number: u64, entry: &Value) {
    let time = entry["time_ms"].as_u64().map_or("?".to_string(), |ms| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    });
    let state = match entry["redriven"].as_str() {
        Some("delivered") => "redriven (delivered)",
        Some(_) => "redriven (failed again)",
        None if entry["redrivable"] == true => "redrivable",
        None => "not redrivable (never batched)",
    };
    let _ = writeln!(
        out,
        "\n#{number}  {time}  seq {} event {}  [{state}]",
        entry["seq"], entry["event"]
    );
    let _ = writeln!(
        out,
        "  reason:   {}",
        entry["reason"].as_str().unwrap_or("?")
    );
    for key in ["event_id", "batch_id", "kind", "key", "environment"] {
        if let Some(value) = entry[key].as_str() {
            let _ = writeln!(out, "  {key:<9} {value}");
        }
    }
    let payload = serde_json::to_string_pretty(&entry["payload"]).unwrap_or_default();
    let _ = writeln!(out, "  payload:");
    for line in payload.lines() {
        let _ = writeln!(out, "    {line}");
    }
}

/// `POST /v1/dead-letters/{name}/redrive` as JSON.
pub async fn redrive_json(
    api: &AdminApi,
    name: &str,
    to: Option<&str>,
    reason: Option<&str>,
) -> Result<Value, DeadLettersError> {
    let mut body = serde_json::Map::new();
    if let Some(to) = to {
        body.insert("to".into(), Value::from(to));
    }
    if let Some(reason) = reason {
        body.insert("filter".into(), serde_json::json!({ "reason": reason }));
    }
    let path = format!("/v1/dead-letters/{}/redrive", encode(name));
    Ok(api.post_json(&path, &Value::Object(body)).await?)
}

/// `redrive`: queue the job and say what it will send.
pub async fn redrive(
    api: &AdminApi,
    name: &str,
    to: Option<&str>,
    reason: Option<&str>,
) -> Result<String, DeadLettersError> {
    let answer = redrive_json(api, name, to, reason).await?;
    let events = answer["events"].as_u64().unwrap_or(0);
    let Some(job) = answer["job"].as_object() else {
        return Ok(format!(
            "nothing to redrive: `{name}` has no dead letters left to send{}\n",
            reason_suffix(reason)
        ));
    };
    Ok(format!(
        "redriving {events} dead letters of `{name}` through `{}` (job {}){}; \
         `flagstream dead-letters list {name}` shows the progress\n",
        job["target"].as_str().unwrap_or(name),
        job["id"],
        reason_suffix(reason)
    ))
}

/// Percent-encode a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert_eq!(parse_filter("reason=404 Not").unwrap(), "404 Not");
        assert!(parse_filter("kind=feature").is_err());
        assert!(parse_filter("reason=").is_err());
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
