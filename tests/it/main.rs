//! The integration-test crate: one binary, one module per topic (each links every cloud SDK
//! only once).

#[path = "../support/mod.rs"]
mod support;

mod event_ids;
mod numbers;
