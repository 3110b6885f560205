//! HTTP ingest: the LaunchDarkly events-service routes, the go-feature-flag data collector and
//! a generic endpoint, in front of the WAL.
//!
//! | file | owns |
//! |---|---|
//! | [`routes`] | the route table: path + method → format, credential source, action |
//! | [`auth`] / [`environments`] | credential → environment (401 when unknown) |
//! | [`body`] | body caps, gunzip with a decompressed-size cap, the pixel's `d` parameter |
//! | [`dedupe`] | recent `X-LaunchDarkly-Payload-ID`s, so SDK retries are not stored twice |
//! | [`handler`] | one request from route to durable append; metrics per request |
//! | [`instance`] | the data dir's instance id (`<data-dir>/instance-id`), stamped into every record |
//! | [`server`] | accept loop, connection limit, HTTP/1 + HTTP/2, graceful shutdown |
//! | [`error`] | every refusal: one status and `{"error", "detail"}` JSON body each |
//!
//! ## Contract with clients
//!
//! * `202 Accepted` (the go-feature-flag collector: `200 {"ingestedContentCount": n}`) means
//!   the body is in the WAL and durable per `--wal-sync`. Nothing else does.
//! * Each accepted body is one WAL record: [`crate::event::stored`] header (format, instance id,
//!   environment, payload id, schema version, tags, user agent) followed by the body bytes as received
//!   (after gunzip) — never re-encoded.
//! * Refusals: 400 malformed/mis-shaped/empty/bad gzip/bad pixel, 401 credential, 404 route,
//!   405 method, 408 body too slow, 413 size (raw or decompressed), 415 encoding, 503 WAL
//!   full / overloaded / shutting down (with `Retry-After`) or WAL unavailable. Nothing partial
//!   is ever stored.
//! * Slow clients: headers must arrive within 30 s, the body within 60 s after them.
//!
//! ## Bounded memory
//!
//! A byte-weighted semaphore (`--max-inflight-bytes`) admits request bodies: a request reserves
//! its `Content-Length` (or `--max-body-bytes` when unknown; plus `--max-body-bytes` for gzip's
//! decompressed copy) before reading, and holds it until its append resolved. Requests wait for
//! room up to [`handler::DEFAULT_INFLIGHT_WAIT`], then get 503. `--max-connections` bounds the
//! connections served at once.

pub mod auth;
pub mod body;
pub mod dedupe;
pub mod environments;
pub mod error;
pub mod handler;
pub mod instance;
pub mod routes;
pub mod server;

use std::time::Duration;

pub use environments::{Environments, DEFAULT_ENVIRONMENT};
pub use error::IngestError;
pub use handler::{Ingest, RecordSink};
pub use server::serve;

/// Limits and credentials of the ingest server (from the `serve` flags).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Largest body, after gunzip.
    pub max_body_bytes: usize,
    /// Memory budget for request bodies being read, decompressed or appended.
    pub max_inflight_bytes: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Payload ids remembered for deduplication (0 = off).
    pub dedupe_cache_size: usize,
    /// How long a request may wait for in-flight room before 503.
    pub inflight_wait: Duration,
    pub environments: Environments,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_body_bytes: 10 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            dedupe_cache_size: 100_000,
            inflight_wait: handler::DEFAULT_INFLIGHT_WAIT,
            environments: Environments::open(),
        }
    }
}
