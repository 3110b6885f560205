//! HTTP ingest: the LaunchDarkly events-service routes, the go-feature-flag data collector and
//! a generic endpoint, in front of the WAL.
//!
//! | file | owns |
//! |---|---|
//! | [`routes`] | the route table: path + method → format, credential source, action |
//! | [`auth`] / [`environments`] | credential → environment (401 when unknown) |
//! | [`body`] | body caps, gunzip with a decompressed-size cap, the pixel's `d` parameter |
//! | [`dedupe`] | recent `X-LaunchDarkly-Payload-ID`s, so SDK retries are not stored twice (rebuilt from the WAL at start-up) |
//! | [`handler`] | one request from route to durable append; metrics per request |
//! | [`instance`] | the data dir's instance id (`<data-dir>/instance-id`), stamped into every record |
//! | [`server`] | accept loop, HTTP/1 + HTTP/2, graceful shutdown (shared with the admin listener) |
//! | [`tls`] | TLS (rustls) for both listeners: PEM pair, ALPN h2/http1.1, reload on change |
//! | [`connection`] | connection slots, header/idle deadlines from accept, shedding idle connections |
//! | [`head`] | request-head limits checked by our code, so hyper's bare errors never reach clients |
//! | [`inflight`] | the in-flight byte budget, reserved as bytes arrive |
//! | [`error`] | every refusal: one status and `{"error", "detail"}` JSON body each |
//!
//! ## Contract with clients
//!
//! * `202 Accepted` (the go-feature-flag collector: `200 {"ingestedContentCount": n}`) means
//!   the body is in the WAL and durable per `--wal-sync`. Nothing else does.
//! * Each accepted body is one WAL record: [`crate::event::stored`] header (format, instance id,
//!   environment, payload id, schema version, tags, user agent) followed by the body bytes as received
//!   (after gunzip) — never re-encoded.
//! * Refusals: 400 malformed/mis-shaped/empty/bad gzip/bad pixel/bad framing, 401 credential,
//!   404 route, 405 method, 408 body too slow or stalled, 413 size (raw or decompressed), 414
//!   URI, 415 encoding, 431 headers, 503 WAL full / overloaded / shutting down (with
//!   `Retry-After`) or WAL unavailable. Nothing partial is ever stored.
//! * Slow and silent clients: a connection must send a complete request head within
//!   `--header-timeout` of accept, may stay idle between requests for `--idle-timeout`, and
//!   a body must arrive within `--body-timeout` with no gap longer than `--body-stall-timeout`.
//!
//! ## Bounded memory
//!
//! A byte-weighted budget (`--max-inflight-bytes`, [`inflight`]) covers request bodies: a request
//! reserves bytes as they arrive (and as gzip output is produced), and holds them until its
//! append resolved. A growth step waits for room up to [`handler::DEFAULT_INFLIGHT_WAIT`], then
//! the request gets 503. `--max-connections` bounds the connections served at once.

pub mod auth;
pub mod body;
pub mod connection;
pub mod dedupe;
pub mod environments;
pub mod error;
pub mod handler;
pub mod head;
pub mod inflight;
pub mod instance;
pub mod routes;
pub mod server;
pub mod tls;

use std::time::Duration;

pub use environments::{Environments, DEFAULT_ENVIRONMENT};
pub use error::IngestError;
pub use handler::{Ingest, RecordSink};
pub use server::{serve, Listener};

/// Limits and credentials of the ingest server (from the `serve` flags).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Largest body, after gunzip.
    pub max_body_bytes: usize,
    /// Memory budget for request bodies being read, decompressed or appended.
    pub max_inflight_bytes: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections one client (peer IP address) may hold.
    pub max_connections_per_client: usize,
    /// Payload ids remembered for deduplication (0 = off).
    pub dedupe_cache_size: usize,
    /// At start-up, the payload ids of records received this recently are remembered again.
    pub dedupe_recovery_window: Duration,
    /// How long a request may wait for in-flight room before 503.
    pub inflight_wait: Duration,
    /// From accept to the first complete request head.
    pub header_timeout: Duration,
    /// How long a connection may stay without a request in progress.
    pub idle_timeout: Duration,
    /// How long a whole request body may take once its head is in.
    pub body_timeout: Duration,
    /// Longest gap between two pieces of a request body.
    pub body_stall_timeout: Duration,
    pub environments: Environments,
}

/// Default `--header-timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--body-timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `--dedupe-recovery-window`: SDKs retry a payload within seconds, so minutes cover
/// a crash and restart with room to spare.
pub const DEFAULT_DEDUPE_RECOVERY_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Default `--body-stall-timeout`.
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_body_bytes: 10 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            max_connections_per_client: connection::ConnectionLimits::default_per_client(4096),
            dedupe_cache_size: 100_000,
            dedupe_recovery_window: DEFAULT_DEDUPE_RECOVERY_WINDOW,
            inflight_wait: handler::DEFAULT_INFLIGHT_WAIT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_stall_timeout: DEFAULT_BODY_STALL_TIMEOUT,
            environments: Environments::open(),
        }
    }
}
