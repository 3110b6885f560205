//! One authenticated call to the BigQuery REST API, and the classification of its errors.
//!
//! Every request carries the headers of the destination's Google credentials (a
//! service-account key, Application Default Credentials, or anonymous for a plain-HTTP
//! emulator endpoint: [`crate::dest::gcp`]). Answers come back whatever their status, so
//! callers can branch on 404 ("table missing") and 409 ("job already exists"); everything
//! else goes through [`Api::failure`]:
//!
//! | answer | outcome |
//! |---|---|
//! | `error.errors[].reason` `rateLimitExceeded`, `quotaExceeded` (BigQuery sends them with 403) | throttled |
//! | `backendError`, `internalError`, `jobBackendError`, `jobInternalError`, `tableUnavailable`, `timeout` | retriable |
//! | otherwise | by HTTP status ([`crate::dest::http::classify_status_code`]) |

use std::fmt::Display;

use bytes::Bytes;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::dest::failure::error_chain;
use crate::dest::http::{classify_status_code, quote_body, HttpClient};
use crate::dest::{Failure, FailureClass};

/// A BigQuery answer: status and parsed JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    raw: Bytes,
}

impl Answer {
    /// `error.errors[0].reason` (`notFound`, `duplicate`, `invalid`, …).
    pub fn reason(&self) -> Option<&str> {
        self.body["error"]["errors"][0]["reason"].as_str()
    }
}

/// The REST client of one destination.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: HttpClient,
    pub credentials: Credentials,
}

impl Api {
    /// Send `body` (JSON, or `content_type` when given) and return the answer.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<(Bytes, &str)>,
        target: &(dyn Display + Sync),
    ) -> Result<Answer, Failure> {
        let mut headers = self.auth_headers(target).await?;
        let body = match body {
            Some((bytes, content_type)) => {
                let value = HeaderValue::from_str(content_type)
                    .map_err(|_| Failure::permanent(format!("{target}: bad content type")))?;
                headers.insert(CONTENT_TYPE, value);
                bytes
            }
            None => Bytes::new(),
        };
        let response = self
            .http
            .exchange(method, url, headers, body, target)
            .await?;
        Ok(Answer {
            status: response.status,
            body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            raw: response.body,
        })
    }

    /// `call` with a JSON body.
    pub async fn call_json(
        &self,
        method: Method,
        url: &str,
        body: &Value,
        target: &(dyn Display + Sync),
    ) -> Result<Answer, Failure> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.call(method, url, Some((bytes, "application/json")), target)
            .await
    }

    async fn auth_headers(&self, target: &(dyn Display + Sync)) -> Result<HeaderMap, Failure> {
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            // Only returned when the request named a cached entity tag; we never do.
            Ok(CacheableResource::NotModified) => Ok(HeaderMap::new()),
            Err(err) => {
                let reason = format!("{target}: Google credentials: {}", error_chain(&err));
                Err(if err.is_transient() {
                    Failure::retriable(reason)
                } else {
                    Failure::permanent(reason)
                })
            }
        }
    }
}

/// The failure for a non-2xx answer (see the module doc), its reason naming `what`.
pub fn failure(answer: &Answer, what: &dyn Display) -> Failure {
    let class = match answer.reason() {
        Some("rateLimitExceeded" | "quotaExceeded") => FailureClass::Throttled,
        Some(reason) if is_transient_reason(reason) => FailureClass::Retriable,
        _ => classify_status_code(answer.status.as_u16()),
    };
    let message = answer.body["error"]["message"]
        .as_str()
        .map_or_else(|| quote_body(&answer.raw), str::to_string);
    Failure::new(
        class,
        format!("{what}: HTTP {}: {message}", answer.status.as_u16()),
    )
}

/// Error reasons BigQuery documents as worth retrying.
pub fn is_transient_reason(reason: &str) -> bool {
    matches!(
        reason,
        "backendError"
            | "internalError"
            | "jobBackendError"
            | "jobInternalError"
            | "tableUnavailable"
            | "timeout"
    )
}
