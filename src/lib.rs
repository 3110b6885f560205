//! # flagstream
//!
//! Self-hosted *Data Export* for feature-flag analytics events. SDKs (LaunchDarkly's,
//! go-feature-flag's OpenFeature providers, any app that speaks JSON) post their event batches
//! to flagstream; each accepted HTTP body is stored as one record in a memory-mapped
//! write-ahead log, and every configured destination reads the log through its own cursor,
//! acknowledging what it delivered.
//!
//! ## Module map
//!
//! Arrows only point down this list: a module may use the ones below it, never above.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | CLI flags (clap) and the optional TOML file; validation naming the flag |
//! | [`ingest`] | the hyper server: routes, auth, limits, gunzip, validation, append, responses |
//! | [`admin`] | health, readiness, `/metrics`, destination status, pause/resume |
//! | [`delivery`] | one task per destination: cursor → decode → filter → map → batch → send → ack |
//! | [`dest`] | one file per destination behind the [`dest::Destination`] trait |
//! | [`event`] | the event model: inbound formats, the stored-record codec, filters, output schemas |
//! | [`wal`] | segments, record framing, group commit, readers, cursors, GC, recovery |
//! | [`metrics`] | every metric name in one place |
//!
//! Two boundaries are deliberate: the WAL stores opaque bytes and knows nothing about events,
//! and destinations receive already-mapped batches and know nothing about the WAL.
//!
//! Tools that drive a flagstream from the outside (`flagstream bench`'s load generator, the
//! harness that starts `flagstream serve` for tests) live beside the engine in
//! `crates/harness`, so nothing client-side is compiled into this library.

pub mod admin;
pub mod config;
pub mod delivery;
pub mod dest;
pub mod event;
pub mod ingest;
pub mod metrics;
pub mod wal;
