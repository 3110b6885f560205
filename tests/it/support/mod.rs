//! Shared helpers for the integration tests, one module per concern.
//!
//! * [`serve`]: start the real `flagstream serve` binary and talk to it over HTTP.
//! * [`cloud`]: real stand-in servers (moto, kinesalite, the Pub/Sub emulator) and batches.
//! * [`delivery`]: a real WAL plus simulated remote targets for the delivery engine tests.
//! * [`wal`]: a fault-injecting `WalIo`, deterministic payloads, small options.
//! * [`wal_fuzz`], [`event_fuzz`]: the fuzz targets' bodies, shared with `fuzz/` so the same
//!   properties also run under proptest on stable Rust.

pub mod cloud;
pub mod delivery;
pub mod event_fuzz;
pub mod serve;
pub mod wal;
pub mod wal_fuzz;
