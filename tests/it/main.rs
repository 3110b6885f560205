//! The integration-test crate: one binary, one module per topic.

#[path = "../support/mod.rs"]
mod support;

mod hostile_clients;
