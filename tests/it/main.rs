//! The integration-test crate: one binary, one module per topic.

mod wal_tools;
