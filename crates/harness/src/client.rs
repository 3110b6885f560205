//! A minimal HTTP/1.1 client for loopback servers: one connection per request, no TLS, no
//! pooling. Enough to poll `/readyz`, `/metrics` and the admin API without pulling a full
//! client (reqwest) into the `flagstream` binary for its `bench` subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request may take, connect to last body byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("no response from {0} within {REQUEST_TIMEOUT:?}")]
    Timeout(SocketAddr),
}

/// A response: status and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    request(addr, http::Method::GET, path, &[], Bytes::new()).await
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, ClientError> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body))?;
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, request))
        .await
        .map_err(|_| ClientError::Timeout(addr))?
}

async fn exchange(
    addr: SocketAddr,
    request: http::Request<Full<Bytes>>,
) -> Result<Response, ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let http = |source| ClientError::Http { addr, source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(http)?;
    Ok(Response {
        status,
        body: body.to_bytes(),
    })
}
