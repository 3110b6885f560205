//! Every way a request can be refused, each with its own HTTP status and a stable machine
//! code, answered as `{"error": "<code>", "detail": "<human explanation>"}`.
//!
//! Invariant: a refused request stored nothing. Errors are produced before the WAL append, or
//! by the append itself, which stores all of the record or none of it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::event::ValidationError;
use crate::wal::WalError;

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("no such route: {method} {path}")]
    NotFound { method: String, path: String },
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("gzip body decompresses to more than the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("Content-Encoding `{0}` is not supported; send identity or gzip")]
    UnsupportedEncoding(String),
    #[error("gzip body is corrupt: {0}")]
    InvalidGzip(String),
    #[error("{0}")]
    InvalidPixel(String),
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the request body was not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("the request body stalled: no bytes for {0:?}")]
    BodyStalled(std::time::Duration),
    #[error("the request target is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("the request has more than the limit of {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request head is larger than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("malformed request head: {0}")]
    MalformedRequest(String),
    #[error("invalid Content-Length: {0}")]
    InvalidContentLength(String),
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("write-ahead log is full; retry later")]
    WalFull,
    #[error("write-ahead log is unavailable: {0}")]
    WalUnavailable(String),
    #[error("too many request bytes in flight; retry later")]
    Overloaded,
    #[error("too many request bytes in flight on this connection; retry later")]
    ConnectionOverloaded,
    #[error("this client already holds {limit} connections with requests in progress; retry later or reuse one")]
    TooManyConnections { limit: usize },
    #[error("server is shutting down")]
    ShuttingDown,
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NotFound { .. } => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::BodyTooLarge { .. } | IngestError::DecompressedTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BodyTimeout(_) | IngestError::BodyStalled(_) => {
                StatusCode::REQUEST_TIMEOUT
            }
            IngestError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            IngestError::TooManyHeaders { .. } | IngestError::HeadTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            IngestError::MalformedRequest(_) | IngestError::InvalidContentLength(_) => {
                StatusCode::BAD_REQUEST
            }
            IngestError::InvalidGzip(_)
            | IngestError::InvalidPixel(_)
            | IngestError::BodyRead(_)
            | IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            IngestError::WalFull
            | IngestError::WalUnavailable(_)
            | IngestError::Overloaded
            | IngestError::ConnectionOverloaded
            | IngestError::TooManyConnections { .. }
            | IngestError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable machine-readable name (the `error` field and the `reason` metric label).
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::NotFound { .. } => "not_found",
            IngestError::MethodNotAllowed { .. } => "method_not_allowed",
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::DecompressedTooLarge { .. } => "decompressed_too_large",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::InvalidGzip(_) => "invalid_gzip",
            IngestError::InvalidPixel(_) => "invalid_pixel_payload",
            IngestError::BodyRead(_) => "body_read_failed",
            IngestError::BodyTimeout(_) => "body_timeout",
            IngestError::BodyStalled(_) => "body_stalled",
            IngestError::UriTooLong { .. } => "uri_too_long",
            IngestError::TooManyHeaders { .. } => "too_many_headers",
            IngestError::HeadTooLarge { .. } => "head_too_large",
            IngestError::MalformedRequest(_) => "malformed_request",
            IngestError::InvalidContentLength(_) => "invalid_content_length",
            IngestError::Invalid(err) => err.code,
            IngestError::WalFull => "wal_full",
            IngestError::WalUnavailable(_) => "wal_unavailable",
            IngestError::Overloaded => "overloaded",
            IngestError::ConnectionOverloaded => "connection_overloaded",
            IngestError::TooManyConnections { .. } => "too_many_connections",
            IngestError::ShuttingDown => "shutting_down",
        }
    }

    fn detail(&self) -> String {
        match self {
            IngestError::Invalid(err) => err.detail.clone(),
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> bool {
        matches!(
            self,
            IngestError::WalFull
                | IngestError::Overloaded
                | IngestError::ConnectionOverloaded
                | IngestError::TooManyConnections { .. }
                | IngestError::ShuttingDown
        )
    }

    /// The `{"error", "detail"}` body.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "error": self.code(), "detail": self.detail() }).to_string()
    }

    /// The JSON error response.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.json_body())));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let IngestError::MethodNotAllowed { allowed, .. } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }
}

impl From<WalError> for IngestError {
    fn from(err: WalError) -> Self {
        match err {
            WalError::Full { .. } => IngestError::WalFull,
            WalError::TooLarge { max, .. } => IngestError::BodyTooLarge {
                limit: usize::try_from(max).unwrap_or(usize::MAX),
            },
            WalError::Closed => IngestError::ShuttingDown,
            other => IngestError::WalUnavailable(other.to_string()),
        }
    }
}

/// A JSON response with the right content type.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_bodies_name_the_problem() {
        let err = IngestError::Invalid(ValidationError {
            code: "malformed_json",
            detail: "expected value at byte 3".to_string(),
        });
        let response = err.to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "malformed_json");
        assert_eq!(json["detail"], "expected value at byte 3");
    }

    #[test]
    fn wal_errors_map_to_distinct_statuses() {
        let full = IngestError::from(WalError::Full {
            needed: 10,
            available: 0,
        });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.code(), "wal_full");
        assert_eq!(full.to_response().headers()[header::RETRY_AFTER], "1");
        let fatal = IngestError::from(WalError::Fatal("fdatasync failed".into()));
        assert_eq!(fatal.code(), "wal_unavailable");
        assert!(fatal
            .to_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
        let large = IngestError::from(WalError::TooLarge { size: 9, max: 8 });
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(IngestError::from(WalError::Closed).code(), "shutting_down");
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let err = IngestError::MethodNotAllowed {
            method: "GET".into(),
            allowed: "POST",
        };
        assert_eq!(err.to_response().headers()[header::ALLOW], "POST");
    }
}
