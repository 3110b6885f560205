//! Admin API calls for `flagstream destinations …` (the CLI talks to a running server, never
//! to its data directory): resolving `--admin-url`, the bearer token, and one call per
//! subcommand. Answers other than 2xx become [`AdminError::Refused`] with the server's
//! `error` code and `detail`, for the CLI to print as they are.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;

use crate::client::{self, ClientError};

/// Why an admin call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("--admin-url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server answered {status} {code}: {detail}")]
    Refused {
        status: u16,
        code: String,
        detail: String,
        body: Value,
    },
    #[error("the server answered {status} with a body that is not JSON: {text}")]
    NotJson { status: u16, text: String },
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl AdminTarget {
    /// Resolve `http://HOST:PORT` (a path is ignored; only plain HTTP is spoken).
    pub async fn resolve(url: &str, token: Option<String>) -> Result<AdminTarget, AdminError> {
        let bad = |reason: &str| AdminError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| bad("not a URL such as http://127.0.0.1:8031"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// admin URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host:port"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .map_err(|err| bad(&err.to_string()))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(AdminTarget { addr, token })
    }

    /// `POST path` with a JSON body; the parsed JSON answer of a 2xx.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        let authorization = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        let body = Bytes::from(body.to_string());
        let response = client::request(self.addr, http::Method::POST, path, &headers, body).await?;
        let parsed: Value =
            serde_json::from_slice(&response.body).map_err(|_| AdminError::NotJson {
                status: response.status,
                text: response.text(),
            })?;
        if (200..300).contains(&response.status) {
            return Ok(parsed);
        }
        let field = |name: &str| {
            parsed
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Err(AdminError::Refused {
            status: response.status,
            code: field("error"),
            detail: field("detail"),
            body: parsed,
        })
    }
}

/// `POST /v1/destinations/{name}/rewind` with `{"to": to}` (`to`: a time string, a seq
/// number or `"earliest"`). Returns the server's answer.
pub async fn rewind(target: &AdminTarget, name: &str, to: Value) -> Result<Value, AdminError> {
    let path = format!("/v1/destinations/{name}/rewind");
    target
        .post_json(&path, &serde_json::json!({ "to": to }))
        .await
}
