//! The one client of the admin API behind the CLI subcommands that talk to a running server
//! (`flagstream destinations …`, `flagstream dead-letters …`; never to its data directory):
//! resolving `--admin-url` (plain `http://`, or `https://` with the CA of `--admin-tls-ca`),
//! the bearer token, and JSON calls. Answers other than 2xx become typed errors carrying the
//! server's `error` code and `detail`, for the CLI to print as they are.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;

use crate::client::{self, ClientError, Endpoint, Tls};

/// Why an admin call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("--admin-url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{method} {path} answered {status}: pass the admin token with --admin-token (or FLAGSTREAM_ADMIN_TOKEN)")]
    Unauthorized {
        method: http::Method,
        path: String,
        status: u16,
    },
    #[error("{method} {path} answered {status} {code}: {detail}")]
    Refused {
        method: http::Method,
        path: String,
        status: u16,
        code: String,
        detail: String,
    },
    #[error("{method} {path} answered {status} with a body that is not JSON: {text}")]
    NotJson {
        method: http::Method,
        path: String,
        status: u16,
        text: String,
    },
}

/// Where the admin API is and how to get in.
#[derive(Debug, Clone)]
pub struct AdminApi {
    pub endpoint: Endpoint,
    /// The admin bearer token, when the server requires one.
    pub token: Option<String>,
}

impl AdminApi {
    /// A client for `url`: `http://HOST:PORT`, `https://HOST:PORT` (needs `tls`) or a bare
    /// `HOST:PORT` (plain HTTP). A trailing `/` is allowed; any other path is refused, since
    /// the API's routes are absolute.
    pub async fn resolve(
        url: &str,
        token: Option<String>,
        tls: Option<Tls>,
    ) -> Result<AdminApi, AdminError> {
        let bad = |reason: &str| AdminError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| bad("not a URL such as http://127.0.0.1:8031"))?;
        if !matches!(uri.path(), "" | "/") {
            return Err(bad("expected http://HOST:PORT without a path"));
        }
        let (secure, default_port) = match uri.scheme_str() {
            None | Some("http") => (false, 80),
            Some("https") => (true, 443),
            Some(_) => return Err(bad("only http:// and https:// admin URLs are supported")),
        };
        let tls = match (secure, tls) {
            (true, None) => {
                return Err(bad(
                    "an https:// admin URL needs the CA that signed the server's certificate: \
                     pass --admin-tls-ca",
                ))
            }
            (false, Some(_)) => {
                return Err(bad(
                    "--admin-tls-ca is given but the URL is plain http://: use https://",
                ))
            }
            (_, tls) => tls,
        };
        let authority = uri.authority().ok_or_else(|| bad("no host:port"))?;
        let port = authority.port_u16().unwrap_or(default_port);
        let addr = lookup(authority.host(), port).await.map_err(|r| bad(&r))?;
        Ok(AdminApi {
            endpoint: Endpoint { addr, tls },
            token,
        })
    }

    /// `GET path`; the parsed JSON answer of a 2xx.
    pub async fn get_json(&self, path: &str) -> Result<Value, AdminError> {
        self.call(http::Method::GET, path, None).await
    }

    /// `POST path` with a JSON body; the parsed JSON answer of a 2xx.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, AdminError> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let authorization = self.token.as_ref().map(|token| format!("Bearer {token}"));
        let mut headers = Vec::new();
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        let body = match body {
            Some(body) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response =
            client::request_to(&self.endpoint, method.clone(), path, &headers, body).await?;
        let status = response.status;
        if matches!(status, 401 | 403) {
            let path = path.to_string();
            return Err(AdminError::Unauthorized {
                method,
                path,
                status,
            });
        }
        let Ok(parsed) = serde_json::from_slice::<Value>(&response.body) else {
            let (path, text) = (path.to_string(), response.text());
            return Err(AdminError::NotJson {
                method,
                path,
                status,
                text,
            });
        };
        if (200..300).contains(&status) {
            return Ok(parsed);
        }
        let field = |name: &str| parsed[name].as_str().unwrap_or_default().to_string();
        Err(AdminError::Refused {
            path: path.to_string(),
            code: field("error"),
            detail: field("detail"),
            method,
            status,
        })
    }
}

async fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    // `[::1]` in a URL is the host `::1`.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|err| err.to_string())?
        .next()
        .ok_or_else(|| "the host has no address".to_string())
}

/// `POST /v1/destinations/{name}/rewind` with `{"to": to}` (`to`: a time string, a seq
/// number or `"earliest"`). Returns the server's answer.
pub async fn rewind(api: &AdminApi, name: &str, to: Value) -> Result<Value, AdminError> {
    let path = format!("/v1/destinations/{name}/rewind");
    api.post_json(&path, &serde_json::json!({ "to": to })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn resolve(url: &str) -> Result<AdminApi, AdminError> {
        AdminApi::resolve(url, None, None).await
    }

    #[tokio::test]
    async fn admin_urls_are_checked_and_name_the_flag() {
        let plain = resolve("http://127.0.0.1:8031/").await.unwrap();
        assert_eq!(plain.endpoint.addr, "127.0.0.1:8031".parse().unwrap());
        assert!(plain.endpoint.tls.is_none());
        let bare = resolve("127.0.0.1:9").await.unwrap();
        assert_eq!(bare.endpoint.addr, "127.0.0.1:9".parse().unwrap());
        for (url, why) in [
            ("https://127.0.0.1:9", "--admin-tls-ca"),
            ("http://127.0.0.1:9/v1", "without a path"),
            ("ftp://127.0.0.1:9", "only http://"),
            ("not a url", "not a URL"),
        ] {
            let err = resolve(url).await.unwrap_err().to_string();
            assert!(
                err.contains("--admin-url") && err.contains(why),
                "{url}: {err}"
            );
        }
    }
}
