//! A minimal HTTP/1.1 client for loopback servers: one connection per request, no pooling,
//! optional TLS. Enough to poll `/readyz`, `/metrics` and the admin API without pulling a full
//! client (reqwest) into the `flagstream` binary for its `bench` subcommand.
//!
//! TLS ([`Tls`]) trusts only the CA certificates of a given PEM file (the operator's own CA for
//! `--tls-cert` / `--admin-tls-cert`; no platform roots: these tools talk to one known server)
//! and checks the certificate against a given server name (`localhost` by default, since the
//! tools connect to an address, not a name).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
    #[error("TLS handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

/// How to reach a TLS server: the CAs to trust and the name its certificate must carry.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Trust the certificates of the PEM file `ca`; check certificates for `server_name`.
    pub fn from_ca_file(ca: &Path, server_name: &str) -> Result<Tls, ClientError> {
        let invalid = |reason: String| ClientError::Ca {
            path: ca.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(ca).map_err(|err| invalid(err.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| invalid(format!("is not PEM: {err}")))?;
            roots
                .add(cert)
                .map_err(|err| invalid(format!("bad certificate: {err}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("holds no certificate".to_string()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid(err.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| ClientError::ServerName(server_name.to_string()))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A server's address, and TLS when it speaks it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }
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

/// One request on a fresh plain connection.
pub async fn request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, ClientError> {
    request_to(&Endpoint::plain(addr), method, path, headers, body).await
}

/// One request on a fresh connection to `endpoint` (TLS when it has it).
pub async fn request_to(
    endpoint: &Endpoint,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, ClientError> {
    let addr = endpoint.addr;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body))?;
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(endpoint, request))
        .await
        .map_err(|_| ClientError::Timeout(addr))?
}

/// An HTTP/1.1 connection to `endpoint`, driven by a spawned task; requests go one at a time.
pub async fn open(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let addr = endpoint.addr;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    match &endpoint.tls {
        None => handshake(addr, stream).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), stream)
                .await
                .map_err(|source| ClientError::Handshake { addr, source })?;
            handshake(addr, stream).await
        }
    }
}

async fn handshake<S>(addr: SocketAddr, stream: S) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ClientError::Http { addr, source })?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn exchange(
    endpoint: &Endpoint,
    request: http::Request<Full<Bytes>>,
) -> Result<Response, ClientError> {
    let addr = endpoint.addr;
    let http = |source| ClientError::Http { addr, source };
    let mut sender = open(endpoint).await?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(http)?;
    Ok(Response {
        status,
        body: body.to_bytes(),
    })
}
