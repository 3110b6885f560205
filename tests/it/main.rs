//! The integration-test crate: one binary, one module per topic.

mod secrets;
