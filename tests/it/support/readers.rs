//! Readers no one here wrote — DuckDB (with httpfs for S3) and pyarrow, from PyPI in
//! `.test-deps/duckdb-python`, installed by `scripts/install-test-deps.sh` — run over what the
//! object destinations wrote (`object_reader.py` says what they return).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::cloud::test_deps;
use super::serve::fixture;

/// The readers' Python interpreter; panics (the test fails, never skips) with the install
/// command when DuckDB, its httpfs extension or pyarrow is missing.
pub fn reader_python() -> PathBuf {
    let python = test_deps().join("duckdb-python/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import duckdb, duckdb_extension_httpfs, pyarrow"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        ok,
        "DuckDB (with duckdb-extension-httpfs) and pyarrow are not installed at {}; run \
         `scripts/install-test-deps.sh`",
        python.display()
    );
    python
}

/// What a reader returned: per table read, and the rows of the request's `sql`.
#[derive(Debug, Deserialize)]
pub struct ReaderOutput {
    pub tables: BTreeMap<String, TableRead>,
    pub sql_rows: Option<Vec<Vec<Value>>>,
}

/// One table as a reader saw it: column types (`[type, nullable]`), the requested columns'
/// values (one per row, columnar: readers are fastest that way), and the counts of the
/// requested equality filters.
#[derive(Debug, Deserialize)]
pub struct TableRead {
    pub types: BTreeMap<String, (String, bool)>,
    pub columns: BTreeMap<String, Vec<Value>>,
    pub filter_counts: Vec<u64>,
}

impl TableRead {
    /// Number of rows read.
    pub fn len(&self) -> usize {
        self.columns.values().next().map_or(0, Vec::len)
    }

    /// Row `row`'s value of `column`, if the reader returned that column.
    pub fn get(&self, column: &str, row: usize) -> Option<&Value> {
        self.columns.get(column).map(|values| &values[row])
    }
}

/// Run `object_reader.py` with `request` (see the script's doc).
pub fn read_objects(request: &Value) -> ReaderOutput {
    let script = fixture("object_reader.py");
    run_python(&[script.as_os_str(), request.to_string().as_ref()])
}

/// Run one DuckDB query; its single row as JSON values.
pub fn duckdb_row(sql: &str) -> Vec<Value> {
    let script = "import duckdb, json, sys\n\
                  print(json.dumps(duckdb.sql(sys.argv[1]).fetchall()[0], default=str))";
    run_python(&["-c".as_ref(), script.as_ref(), sql.as_ref()])
}

/// Run the readers' Python with `args`; its standard output as JSON.
fn run_python<T: serde::de::DeserializeOwned>(args: &[&std::ffi::OsStr]) -> T {
    let out = Command::new(reader_python()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "reader failed on {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
