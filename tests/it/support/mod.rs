//! Shared helpers for the integration tests, one module per concern.
//!
//! * [`serve`]: start the real `flagstream serve` binary and talk to it over HTTP.
//! * [`cloud`]: real stand-in servers (moto, kinesalite, the Pub/Sub emulator) and batches.
//! * [`bigquery`], [`snowflake`]: bqemulator and fakesnow (warehouse stand-ins).
//! * [`kafka`]: a tansu broker (Kafka protocol) behind a gate, and rdkafka read-back.
//! * [`eventhubs`]: an AMQP 1.0 Event Hubs stand-in (Qpid Proton) behind a gate.
//! * [`gcs`]: fake-gcs-server (Cloud Storage JSON API): buckets, listing and read-back.
//! * [`http_receivers`]: in-process stand-ins of vendors' HTTP servers (webhook, Segment,
//!   mParticle).
//! * [`readers`]: DuckDB and pyarrow reading what the object destinations wrote.
//! * [`ld_events`]: LaunchDarkly's events service (in-process) and a recording proxy.
//! * [`delivery`]: a real WAL plus simulated remote targets for the delivery engine tests.
//! * [`slow_link`]: a TCP proxy that delays what the server sends (a distant database).
//! * [`wal`]: a fault-injecting `WalIo`, deterministic payloads, small options.
//! * [`wal_fuzz`], [`event_fuzz`], [`ingest_fuzz`], [`cursor_fuzz`]: the fuzz targets' bodies, shared with `fuzz/` so the same
//!   properties also run under proptest on stable Rust.

use std::future::Future;
use std::time::{Duration, Instant};

pub mod bigquery;
pub mod cloud;
pub mod cursor_fuzz;
pub mod delivery;
pub mod event_fuzz;
pub mod eventhubs;
pub mod gcs;
pub mod http_receivers;
pub mod ingest_fuzz;
pub mod kafka;
pub mod ld_events;
pub mod postgres;
pub mod readers;
pub mod serve;
pub mod slow_link;
pub mod snowflake;
pub mod wal;
pub mod wal_fuzz;

/// Poll `probe` every 20 ms until it returns `Ok`; after `timeout`, fail with its last `Err`
/// (what it saw). The end-to-end tests wait through this: on a condition, never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "never {what} within {timeout:?}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
