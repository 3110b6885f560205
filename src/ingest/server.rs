//! The listener: accepts TCP connections up to `--max-connections`, serves HTTP/1.1 and
//! HTTP/2 (prior knowledge) on each with hyper, and shuts down gracefully.
//!
//! Invariants:
//! * At most `max_connections` connections are served at once; the next `accept` waits for a
//!   slot, so excess clients queue in the kernel's backlog instead of consuming memory here.
//! * On shutdown the listener closes first (no new connections), then every connection
//!   finishes its in-flight requests — including their WAL appends — within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::handler::Ingest;
use crate::metrics as m;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `listener` until `shutdown` is cancelled, then drain for at most `grace`.
/// Returns false if the grace period ran out with requests still in flight.
pub async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool {
    let connections = Arc::new(Semaphore::new(ingest.settings().max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(256 * 1024)
        .timer(TokioTimer::new())
        // Slow-header clients (slowloris) lose their connection slot after this long.
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "TCP_NODELAY not set");
        }
        let handler = ingest.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(request).await) }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _slot = permit;
            metrics::gauge!(m::INGEST_OPEN_CONNECTIONS).increment(1.0);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            metrics::gauge!(m::INGEST_OPEN_CONNECTIONS).decrement(1.0);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "ingest connections still open after the shutdown grace period");
            false
        }
    }
}
