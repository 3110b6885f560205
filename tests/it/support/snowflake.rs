//! The Snowflake stand-in: `fakesnow` 0.12.1 (PyPI, `fakesnow[server]`; Snowflake's driver
//! protocol over DuckDB), installed by `scripts/install-test-deps.sh` into
//! `$FLAGSTREAM_TEST_DEPS/fakesnow`, one server per test on a free loopback port, killed on
//! drop. Tests set up and read back with Snowflake's official Python connector (installed
//! beside it) through `snowflake_sql.py`, never with flagstream's own client.
//!
//! What fakesnow does not check: passwords and key-pair JWTs (any login succeeds), so the
//! JWT is checked against known values in `src/dest/snowflake/tests.rs`. Its databases live
//! in memory, so a restart loses them (no outage check here).
#![allow(dead_code)] // benches/warehouse.rs includes this module and uses part of it

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::cloud::{connectable, free_port, kill_process_group, test_deps};

/// A running fakesnow server (killed on drop).
pub struct Fakesnow {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Fakesnow {
    /// Start on a free port; waits until it accepts connections.
    pub fn start() -> Fakesnow {
        let program = locate();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("fakesnow.log")).unwrap();
        let child = Command::new(program)
            .args(["-s", "--host", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start fakesnow: {err}"));
        let mut server = Fakesnow { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !connectable(port) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("fakesnow exited with {status}; log:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "fakesnow did not listen; log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id (for CPU accounting in benches/warehouse.rs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fakesnow.log")).unwrap_or_default()
    }

    /// A `--dest` URL for `DATABASE/SCHEMA` with password login, `options` appended.
    pub fn url(&self, database: &str, schema: &str, options: &str) -> String {
        let mut url = format!(
            "snowflake://fakesnow/{database}/{schema}?user=flagstream&password=unused&endpoint={}",
            self.endpoint()
        );
        if !options.is_empty() {
            url.push('&');
            url.push_str(options);
        }
        url
    }

    /// Create `database` and its `schema`.
    pub fn create_schema(&self, database: &str, schema: &str) {
        self.sql(&[
            &format!("CREATE DATABASE IF NOT EXISTS {database}"),
            &format!("CREATE SCHEMA IF NOT EXISTS {database}.{schema}"),
        ]);
    }

    /// Run `statements` with the Python connector; the last one's rows.
    pub fn sql(&self, statements: &[&str]) -> Vec<Vec<Value>> {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/snowflake_sql.py");
        let mut child = Command::new(test_deps().join("fakesnow/bin/python"))
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let request = json!({"port": self.port, "statements": statements});
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{statements:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// `SELECT count(*) …` as a number.
    pub fn count(&self, sql: &str) -> i64 {
        self.sql(&[sql])[0][0].as_i64().unwrap()
    }
}

impl Drop for Fakesnow {
    fn drop(&mut self) {
        kill_process_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fakesnow's program, or fail with the command that installs it.
fn locate() -> PathBuf {
    let path = test_deps().join("fakesnow/bin/fakesnow");
    if path.exists() {
        return path;
    }
    panic!(
        "fakesnow (the Snowflake stand-in) is not installed at {}. Install it with \
         `scripts/install-test-deps.sh` (its Snowflake section: python3 -m venv \
         $FLAGSTREAM_TEST_DEPS/fakesnow && $FLAGSTREAM_TEST_DEPS/fakesnow/bin/pip install \
         'fakesnow[server]==0.12.1' 'snowflake-connector-python<5')",
        path.display()
    );
}
