//! The `snowflake` destination's stand-in for the conformance suite: fakesnow
//! ([`crate::support::snowflake`]), one database per target, read back with Snowflake's
//! Python connector. Like the PostgreSQL target it runs with `schema=launchdarkly` (each
//! event whole in the `payload VARIANT` column of the document table). fakesnow keeps its
//! databases in memory, so it cannot be restarted with what it held: no outage check; and it
//! creates the database and schema a login names, so no target is ever missing there.

use std::path::Path;

use super::{Capabilities, Target, DEST};
use crate::support::cloud::test_seq_of;
use crate::support::snowflake::Fakesnow;

pub struct Snowflake {
    server: Fakesnow,
}

impl Snowflake {
    pub async fn start(_scratch: &Path) -> Snowflake {
        Snowflake {
            server: Fakesnow::start(),
        }
    }
}

fn database(name: &str) -> String {
    name.replace('-', "_")
}

fn options() -> String {
    format!("name={DEST}&schema=launchdarkly&linger=200ms")
}

impl Target for Snowflake {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            missing_target: false,
            outage: false,
            max_event_bytes: None,
            dedupes_resent_batches: true,
        }
    }

    async fn create(&mut self, name: &str) -> String {
        self.server.create_schema(&database(name), "flags");
        self.server.url(&database(name), "flags", &options())
    }

    async fn read_back(&mut self, name: &str, _expected: usize) -> Vec<String> {
        let sql = format!(
            "SELECT payload FROM {}.flags.flagstream_events",
            database(name)
        );
        self.server
            .sql(&[&sql])
            .iter()
            .map(|row| test_seq_of(row[0].as_str().unwrap_or_default().as_bytes()))
            .collect()
    }
}
