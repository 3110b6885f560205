//! The destinations created through the admin API, persisted in the data dir so a restart
//! keeps them.
//!
//! ```text
//! <data-dir>/destinations.json
//!   {"version": 1,
//!    "destinations": [{"name": "archive", "url": "file:///srv/export?rotate=1m", …}, …]}
//! ```
//!
//! Each entry is the `[[destination]]` table of the config file as JSON, exactly as the API
//! accepted it (`name` always present): it is parsed again at start by the same code
//! ([`DestinationSpec::from_table`]), so stored and configured destinations cannot drift.
//!
//! ## Invariants
//!
//! * Secrets are never stored: the API refuses inline secret values, so an entry holds at
//!   most `env:NAME` / `file:PATH` references.
//! * A save is atomic: write `destinations.json.tmp`, fsync it, rename over the file, fsync
//!   the directory. A crash leaves the old or the new list, never a mix; a stale `.tmp` is
//!   overwritten by the next save.
//! * A missing file is an empty list; an unreadable or malformed one is an error naming the
//!   file (start-up refuses it rather than silently dropping destinations).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dest::DestinationSpec;

/// The store's file name inside the data dir.
pub const STORE_FILE: &str = "destinations.json";
const STORE_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
}

/// One API-managed destination: its config table as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiDestination {
    pub name: String,
    pub table: Map<String, Value>,
}

impl ApiDestination {
    /// Take a request body: a JSON object in the `[[destination]]` table shape. `path_name`
    /// is the name from the route (PUT); the body may repeat it but not contradict it.
    pub fn from_body(body: Value, path_name: Option<&str>) -> Result<Self, String> {
        let Value::Object(mut table) = body else {
            return Err("the body must be a JSON object: {\"name\": …, \"url\": \"scheme://target?options\", …}".into());
        };
        let named = match table.get("name") {
            None => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err("option `name` must be a string".into()),
        };
        let name = match (named, path_name) {
            (Some(named), Some(path)) if named != path => {
                return Err(format!(
                    "option `name`: `{named}` differs from `{path}` in the path; a destination cannot be renamed (create the new one, then delete the old)"
                ))
            }
            (Some(named), _) => named,
            (None, Some(path)) => path.to_string(),
            (None, None) => return Err("option `name` is required".into()),
        };
        super::settings::validate_name(&name)
            .map_err(|reason| format!("option `name`: {reason}"))?;
        table.insert("name".into(), Value::String(name.clone()));
        let entry = ApiDestination { name, table };
        entry.spec()?;
        Ok(entry)
    }

    /// The destination spec, parsed like a config file table.
    pub fn spec(&self) -> Result<DestinationSpec, String> {
        let mut table = toml::Table::new();
        for (key, value) in &self.table {
            table.insert(key.clone(), toml_value(key, value)?);
        }
        DestinationSpec::from_table(&table)
    }
}

/// JSON scalars and lists of scalars, as TOML values (what a config table may hold).
fn toml_value(key: &str, value: &Value) -> Result<toml::Value, String> {
    let refused = || format!("option `{key}` must be a string, number, bool or list of them");
    Ok(match value {
        Value::String(text) => toml::Value::String(text.clone()),
        Value::Bool(flag) => toml::Value::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => toml::Value::Integer(integer),
            None => toml::Value::Float(number.as_f64().ok_or_else(refused)?),
        },
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Value::Array(_) => Err(refused()),
                    other => toml_value(key, other),
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Null | Value::Object(_) => return Err(refused()),
    })
}

/// `<data-dir>/destinations.json`.
#[derive(Debug, Clone)]
pub struct DestinationStore {
    path: PathBuf,
}

impl DestinationStore {
    pub fn new(data_dir: &Path) -> Self {
        DestinationStore {
            path: data_dir.join(STORE_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored destination, in creation order; empty when the file does not exist.
    pub fn load(&self) -> Result<Vec<ApiDestination>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io(source)),
        };
        let malformed = |message: String| StoreError::Malformed {
            path: self.path.clone(),
            message,
        };
        let document: Value =
            serde_json::from_str(&text).map_err(|err| malformed(err.to_string()))?;
        if document["version"].as_u64() != Some(STORE_VERSION) {
            return Err(malformed(format!(
                "unsupported version {} (this flagstream reads version {STORE_VERSION})",
                document["version"]
            )));
        }
        let entries = document["destinations"]
            .as_array()
            .ok_or_else(|| malformed("`destinations` must be a list".into()))?;
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                ApiDestination::from_body(entry.clone(), None)
                    .map_err(|message| malformed(format!("destination #{}: {message}", index + 1)))
            })
            .collect()
    }

    /// Replace the stored list atomically (see the module doc). Blocking.
    pub fn save(&self, destinations: &[ApiDestination]) -> Result<(), StoreError> {
        let document = serde_json::json!({
            "version": STORE_VERSION,
            "destinations": destinations.iter().map(|entry| Value::Object(entry.table.clone())).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_vec_pretty(&document)
            .map_err(|err| self.io(std::io::Error::other(err)))?;
        text.push(b'\n');
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let temp = self.path.with_extension("json.tmp");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&temp)?;
                file.write_all(&text)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .and_then(|()| File::open(dir)?.sync_all());
        written.map_err(|source| self.io(source))
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_specs_like_config_tables() {
        let body = serde_json::json!({
            "name": "archive",
            "url": "file:///srv/export?format=ndjson",
            "rotate": "1s",
            "batch_max_events": 10,
            "kinds": ["feature", "custom"],
        });
        let entry = ApiDestination::from_body(body, None).unwrap();
        let spec = entry.spec().unwrap();
        assert_eq!(
            (spec.scheme.as_str(), spec.target.as_str()),
            ("file", "/srv/export")
        );
        assert_eq!(spec.options["name"], "archive");
        assert_eq!(spec.options["batch_max_events"], "10");
        assert_eq!(spec.options["kinds"], "feature,custom");
    }

    #[test]
    fn bad_bodies_name_the_option() {
        for (body, path, needle) in [
            (serde_json::json!([]), None, "JSON object"),
            (
                serde_json::json!({"url": "log:"}),
                None,
                "`name` is required",
            ),
            (
                serde_json::json!({"name": "a b", "url": "log:"}),
                None,
                "option `name`",
            ),
            (
                serde_json::json!({"name": "a", "url": "log:"}),
                Some("b"),
                "renamed",
            ),
            (serde_json::json!({"name": "a"}), None, "url"),
            (
                serde_json::json!({"name": "a", "url": "log:", "rotate": null}),
                None,
                "`rotate`",
            ),
            (
                serde_json::json!({"name": "a", "url": "log:", "x": {"y": 1}}),
                None,
                "`x`",
            ),
            (
                serde_json::json!({"name": "a", "url": "log:?x=1", "x": 1}),
                None,
                "`x`",
            ),
        ] {
            let err = ApiDestination::from_body(body.clone(), path).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn saves_atomically_and_loads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = DestinationStore::new(dir.path());
        assert!(store.load().unwrap().is_empty(), "no file: no destinations");
        let entries: Vec<ApiDestination> = ["b", "a"]
            .iter()
            .map(|name| {
                ApiDestination::from_body(serde_json::json!({"name": name, "url": "log:"}), None)
                    .unwrap()
            })
            .collect();
        store.save(&entries).unwrap();
        assert_eq!(store.load().unwrap(), entries);
        assert!(!dir.path().join("destinations.json.tmp").exists());
        std::fs::write(store.path(), "{\"version\": 9}").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(
            err.contains("destinations.json") && err.contains("version"),
            "{err}"
        );
    }
}
