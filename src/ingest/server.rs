//! The listener: accepts TCP connections into [`Connections`] slots, runs the TLS handshake
//! when the listener has TLS ([`super::tls`]), checks each connection's first request head
//! ([`head`]), serves HTTP/1.1 and HTTP/2 (prior knowledge on plain TCP, ALPN `h2` over TLS)
//! with hyper, and shuts down gracefully. The admin listener runs the same loop with its own
//! handler.
//!
//! Invariants:
//! * At most `max_connections` connections are served at once; when all slots are taken, the
//!   longest-idle connection is shed for the new one (see [`super::connection`]).
//! * Every request passes [`head::check`] before its handler: head limits answer JSON.
//! * The TLS handshake happens inside the connection's slot, under its header deadline.
//! * On shutdown the listener closes first (no new connections), then every connection
//!   finishes its in-flight requests — including their WAL appends — within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::connection::Connections;
use super::handler::Ingest;
use super::head;
use super::tls::ListenerTls;
use crate::metrics as m;

/// A bound listener, with the TLS it serves (plain TCP without).
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<ListenerTls>>,
}

impl Listener {
    pub fn new(tcp: TcpListener, tls: Option<Arc<ListenerTls>>) -> Self {
        Listener { tcp, tls }
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Listener { tcp, tls: None }
    }
}

/// Most concurrent HTTP/2 streams per connection: each may hold a request body in memory.
const MAX_H2_STREAMS: u32 = 32;

/// Serve `listener` until `shutdown` is cancelled, then drain for at most `grace`.
/// Returns false if the grace period ran out with requests still in flight.
pub async fn serve(
    listener: impl Into<Listener>,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool {
    let connections = ingest.connections().clone();
    // Each connection's requests share one slice of the in-flight budget.
    let per_connection = move || {
        let ingest = ingest.clone();
        let share = ingest.connection_share();
        move |mut request: Request<Incoming>| {
            let ingest = ingest.clone();
            request.extensions_mut().insert(share.clone());
            async move { ingest.handle(request).await }
        }
    };
    serve_listener(listener, connections, per_connection, shutdown, grace).await
}

/// The accept loop shared by the ingest and admin listeners. `handler_for_connection` makes
/// the request handler of each new connection.
pub async fn serve_listener<M, H, F>(
    listener: impl Into<Listener>,
    connections: Arc<Connections>,
    handler_for_connection: M,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool
where
    M: Fn() -> H,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let Listener { tcp: listener, tls } = listener.into();
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder(&connections));
    let ingest = connections.listener() == "ingest";
    while let Some(accepted) = connections.accept(&listener, tls.as_ref(), &shutdown).await {
        let stream = accepted.stream;
        let peer = accepted.peer;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "TCP_NODELAY not set");
        }
        let activity = accepted.guard.activity();
        let handle = handler_for_connection();
        let service = service_fn(move |request: Request<Incoming>| {
            let in_progress = activity.begin_request();
            let handle = handle.clone();
            async move {
                let response = match head::check(&request) {
                    Ok(()) => handle(request).await,
                    Err(err) => err.to_response(),
                };
                drop(in_progress);
                Ok::<_, Infallible>(response)
            }
        });
        let (watcher, builder, connections, tls) = (
            graceful.watcher(),
            builder.clone(),
            connections.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            if ingest {
                metrics::gauge!(m::INGEST_OPEN_CONNECTIONS).increment(1.0);
            }
            let connection = async {
                // Boxed: a TLS stream is large, and most connections of a listener are alike.
                let mut stream = match tls {
                    None => Either::Left(stream),
                    Some(tls) => Either::Right(Box::new(tls.accept(stream).await?)),
                };
                let prefix = match head::read_first_head(&mut stream).await {
                    Ok(prefix) => prefix,
                    Err(None) => return Ok(()),
                    Err(Some(refusal)) => {
                        tracing::debug!(%peer, error = %refusal, "request head refused");
                        head::refuse(stream, &refusal).await;
                        return Ok(());
                    }
                };
                let io = TokioIo::new(head::Rewind::new(prefix, stream));
                watcher
                    .watch(builder.serve_connection(io, service).into_owned())
                    .await
            };
            connections.serve(accepted.guard, peer, connection).await;
            if ingest {
                metrics::gauge!(m::INGEST_OPEN_CONNECTIONS).decrement(1.0);
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "connections still open after the shutdown grace period");
            false
        }
    }
}

/// hyper's settings: its own head limits above ours ([`head`]), its header timeout equal to
/// ours (the watchdog in [`super::connection`] is the one that counts from accept).
fn http_builder(connections: &Connections) -> auto::Builder<TokioExecutor> {
    let limits = connections.limits();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(head::HYPER_MAX_BUF_BYTES)
        .max_headers(head::HYPER_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(head::HYPER_MAX_BUF_BYTES as u32)
        .timer(TokioTimer::new());
    builder
}
