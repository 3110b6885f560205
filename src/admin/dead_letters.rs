//! Admin routes for dead letters (what `flagstream dead-letters` calls).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/dead-letters` | a summary per destination (as below) |
//! | `GET /v1/dead-letters/{name}` | files (path, bytes, events), events, bytes, counts by reason, `redrivable`, `redriven`, `redriven_dead_lettered`, the running `redrive` job |
//! | `GET /v1/dead-letters/{name}/events?reason=…&offset=0&limit=100` | the lines, oldest first, with `redrivable` and `redriven` (`delivered` / `dead_lettered` / null); `total` counts every match |
//! | `POST /v1/dead-letters/{name}/redrive` | body `{"to": "OTHER"?, "filter": {"reason": "…"}?}` (both optional, no body = everything to `name`): 202 with `events` and the `job`, or 200 with `events: 0` when nothing is left to send |
//!
//! A reason filter matches lines whose reason contains the text. Errors: 400 naming the bad
//! parameter or body field, 404 for an unknown destination (`name` or `to`), 409 while a
//! redrive of `name` runs, 400 when `to` cannot take the dead letters (another schema, raw
//! records). The file reads run on the blocking pool.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use serde::Deserialize;

use crate::delivery::redrive::{RedriveError, RedriveFilter};
use crate::delivery::{Delivery, DeliveryError};

use super::{error, json, unknown_destination};

/// Largest redrive request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Lines per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 10_000;

type Answer = http::Response<Full<Bytes>>;

/// `GET /v1/dead-letters`.
pub async fn list_all(delivery: &Delivery) -> Answer {
    let delivery = delivery.clone();
    blocking(move || {
        let summaries = delivery
            .names()
            .iter()
            .map(|name| delivery.dead_letter_summary(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "dead_letters": summaries }),
        ))
    })
    .await
}

/// `GET /v1/dead-letters/{name}`.
pub async fn summary(delivery: &Delivery, name: &str) -> Answer {
    let (delivery, name) = (delivery.clone(), name.to_string());
    blocking(move || {
        let summary = delivery.dead_letter_summary(&name)?;
        Ok(json(StatusCode::OK, serde_json::json!(summary)))
    })
    .await
}

/// `GET /v1/dead-letters/{name}/events`.
pub async fn events(delivery: &Delivery, name: &str, query: Option<&str>) -> Answer {
    let (filter, offset, limit) = match parse_query(query) {
        Ok(parsed) => parsed,
        Err(detail) => return error(StatusCode::BAD_REQUEST, "invalid_query", detail),
    };
    let (delivery, name) = (delivery.clone(), name.to_string());
    blocking(move || {
        let page = delivery.dead_letter_page(&name, &filter, offset, limit)?;
        Ok(json(StatusCode::OK, serde_json::json!(page)))
    })
    .await
}

/// The body of `POST /v1/dead-letters/{name}/redrive`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    filter: Option<FilterBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    reason: Option<String>,
}

/// `POST /v1/dead-letters/{name}/redrive`.
pub async fn redrive<B>(delivery: &Delivery, name: &str, body: B) -> Answer
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let detail = format!("reading the body (at most {MAX_BODY_BYTES} bytes): {err}");
            return error(StatusCode::BAD_REQUEST, "invalid_body", detail);
        }
    };
    let request = if bytes.trim_ascii().is_empty() {
        RedriveBody::default()
    } else {
        match serde_json::from_slice::<RedriveBody>(&bytes) {
            Ok(request) => request,
            Err(err) => {
                let detail = format!("redrive body: {err} (expected {{\"to\": \"NAME\", \"filter\": {{\"reason\": \"TEXT\"}}}}, both optional)");
                return error(StatusCode::BAD_REQUEST, "invalid_body", detail);
            }
        }
    };
    let filter = RedriveFilter {
        reason: request.filter.and_then(|filter| filter.reason),
    };
    if filter.reason.as_deref() == Some("") {
        let detail = "filter.reason is empty: leave it out to select every reason".to_string();
        return error(StatusCode::BAD_REQUEST, "invalid_body", detail);
    }
    let (delivery, name) = (delivery.clone(), name.to_string());
    blocking(move || {
        let started = delivery.redrive(&name, request.to.as_deref(), filter)?;
        let status = if started.job.is_some() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        Ok(json(status, serde_json::json!(started)))
    })
    .await
}

/// `reason`, `offset` and `limit` of an events query; anything else is refused by name.
fn parse_query(query: Option<&str>) -> Result<(RedriveFilter, u64, u64), String> {
    let mut filter = RedriveFilter::default();
    let (mut offset, mut limit) = (0, DEFAULT_LIMIT);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("`{key}` must be a whole number, got `{value}`"))
        };
        match key.as_ref() {
            "reason" if !value.is_empty() => filter.reason = Some(value.to_string()),
            "reason" => return Err("`reason` is empty: leave it out to list every reason".into()),
            "offset" => offset = number()?,
            "limit" => limit = number()?,
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (use reason, offset, limit)"
                ))
            }
        }
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("`limit` must be 1 to {MAX_LIMIT}, got {limit}"));
    }
    Ok((filter, offset, limit))
}

/// Run a handler's file I/O on the blocking pool and turn its error into an answer.
async fn blocking(work: impl FnOnce() -> Result<Answer, DeliveryError> + Send + 'static) -> Answer {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => refusal(err),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("dead-letter task failed: {err}"),
        ),
    }
}

fn refusal(err: DeliveryError) -> Answer {
    let detail = err.to_string();
    match err {
        DeliveryError::UnknownDestination(name) => unknown_destination(&name),
        DeliveryError::Redrive(RedriveError::Busy { .. }) => {
            error(StatusCode::CONFLICT, "redrive_running", detail)
        }
        DeliveryError::SchemaMismatch { .. } | DeliveryError::RawTarget(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_target", detail)
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "dead_letters", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_what_is_wrong() {
        let (filter, offset, limit) =
            parse_query(Some("reason=404%20Not&offset=5&limit=2")).unwrap();
        assert_eq!(filter.reason.as_deref(), Some("404 Not"));
        assert_eq!((offset, limit), (5, 2));
        assert_eq!(parse_query(None).unwrap().2, DEFAULT_LIMIT);
        for (query, named) in [
            ("limit=0", "limit"),
            ("offset=x", "offset"),
            ("reson=1", "reson"),
            ("reason=", "reason"),
        ] {
            let err = parse_query(Some(query)).unwrap_err();
            assert!(err.contains(named), "{query}: {err}");
        }
    }
}
