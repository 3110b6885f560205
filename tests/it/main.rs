//! The integration tests, as one test crate: one binary to build and link (every test binary
//! links every cloud SDK, so many small ones cost minutes of link time), one module per topic.
//!
//! Run one topic with `cargo nextest run --test it <module>::`, e.g. `wal_recovery::`.

mod support;

mod admin_api;
mod bigquery;
mod conformance;
mod cursor_fuzz_harness;
mod dashboards;
mod dead_letter_redrive;
mod dedupe_restart;
mod delivery_engine;
mod delivery_restart;
mod disk_full;
mod event_fuzz_harness;
mod event_golden;
mod event_ids;
mod event_props;
mod event_schemas;
mod eventhubs;
mod fuzz_regressions;
mod gcs;
mod harness;
mod hostile_clients;
mod ingest_fuzz_harness;
mod kafka;
mod kinesis_e2e;
mod kinesis_kinesalite;
mod kinesis_moto;
mod kinesis_replay;
mod launchdarkly;
mod mparticle;
mod numbers;
mod object_readers;
mod object_rotation;
mod postgres;
mod pubsub_emulator;
mod replay;
mod runtime_destinations;
mod s3_moto;
mod secrets;
mod segment;
mod serve_crash;
mod serve_e2e;
mod serve_faults;
mod serve_kill9_loop;
mod shared_decoding;
mod snowflake;
mod tls;
mod top;
mod wal_crash;
mod wal_faults;
mod wal_fuzz_harness;
mod wal_inspect;
mod wal_recovery;
mod wal_tools;
mod webhook;
