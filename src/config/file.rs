//! The optional `--config flagstream.toml` file.
//!
//! ```toml
//! listen = "0.0.0.0:8030"          # any serve flag, by its long name (kebab or snake case)
//! data-dir = "/var/lib/flagstream"
//! wal-sync = "always"
//!
//! [environments]                   # same as --environment NAME=KEY[,KEY…]
//! production = ["sdk-123", "mob-456", "5f1e…client-side-id"]
//!
//! [[destination]]                  # same as --dest, with options as keys
//! url = "file:///var/lib/flagstream/export"
//! name = "archive"
//! rotate_bytes = "64MiB"
//! ```
//!
//! Precedence, highest first: command line, environment variable, this file, built-in default.
//! Settings are applied by turning them into `--flag=value` arguments that clap parses like any
//! other (so the file gets exactly the flags' validation and error messages), but only for
//! flags that neither the command line nor an environment variable set.
//! `[[destination]]` keys other than `url` are folded into the [`DestinationSpec`]'s options
//! exactly as if they were query parameters; a key given both ways is an error.

use std::path::{Path, PathBuf};

use crate::dest::DestinationSpec;

use super::ConfigError;

/// A parsed config file, before it is merged with the command line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// `(flag long name, value)` pairs, in file order.
    pub settings: Vec<(String, String)>,
    /// `(environment name, keys)`.
    pub environments: Vec<(String, Vec<String>)>,
    pub destinations: Vec<DestinationSpec>,
}

/// Flags that have their own table in the file.
const TABLE_ONLY: [(&str, &str); 3] = [
    ("dest", "use [[destination]] tables"),
    ("environment", "use the [environments] table"),
    ("config", "a config file cannot include another"),
];

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|err: toml::de::Error| error(err.to_string().trim_end().replace('\n', " ")))?;
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        for (key, value) in table {
            match key.as_str() {
                "environments" => {
                    let envs = value.as_table().ok_or_else(|| {
                        error("`environments` must be a table of NAME = [KEY, …]".to_string())
                    })?;
                    for (name, keys) in envs {
                        let keys = match keys {
                            toml::Value::String(list) => {
                                list.split(',').map(str::to_string).collect()
                            }
                            toml::Value::Array(items) => items
                                .iter()
                                .map(|item| {
                                    item.as_str().map(str::to_string).ok_or_else(|| {
                                        error(format!("environments.{name}: keys must be strings"))
                                    })
                                })
                                .collect::<Result<Vec<_>, _>>()?,
                            _ => {
                                return Err(error(format!(
                                    "environments.{name} must be a list of keys"
                                )))
                            }
                        };
                        file.environments.push((name.clone(), keys));
                    }
                }
                "destination" => {
                    let tables = value.as_array().ok_or_else(|| {
                        error("`destination` must be an array of tables ([[destination]])".into())
                    })?;
                    for (index, table) in tables.iter().enumerate() {
                        let table = table.as_table().ok_or_else(|| {
                            error(format!("destination #{} is not a table", index + 1))
                        })?;
                        file.destinations
                            .push(DestinationSpec::from_table(table).map_err(|message| {
                                error(format!("destination #{}: {message}", index + 1))
                            })?);
                    }
                }
                _ => {
                    let flag = key.replace('_', "-");
                    if let Some((_, hint)) = TABLE_ONLY.iter().find(|(name, _)| *name == flag) {
                        return Err(error(format!("`{key}` is not a setting here: {hint}")));
                    }
                    let value = crate::dest::spec::table_scalar(&value).ok_or_else(|| {
                        error(format!("`{key}` must be a string, number or bool"))
                    })?;
                    file.settings.push((flag, value));
                }
            }
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("flagstream.toml"), text)
    }

    #[test]
    fn reads_settings_environments_and_destinations() {
        let file = parse(
            r#"
            listen = "0.0.0.0:9000"
            max_connections = 10
            [environments]
            production = ["sdk-1", "mob-1"]
            staging = "sdk-2,mob-2"
            [[destination]]
            url = "file:///tmp/export?format=ndjson"
            name = "archive"
            rotate_bytes = "64MiB"
            kinds = ["feature", "custom"]
            [[destination]]
            url = "log:"
            "#,
        )
        .unwrap();
        assert_eq!(
            file.settings,
            vec![
                ("listen".to_string(), "0.0.0.0:9000".to_string()),
                ("max-connections".to_string(), "10".to_string())
            ]
        );
        assert_eq!(file.environments.len(), 2);
        assert_eq!(file.environments[1].1, vec!["sdk-2", "mob-2"]);
        let archive = &file.destinations[0];
        assert_eq!(archive.scheme, "file");
        assert_eq!(archive.target, "/tmp/export");
        assert_eq!(archive.options["format"], "ndjson");
        assert_eq!(archive.options["name"], "archive");
        assert_eq!(archive.options["kinds"], "feature,custom");
        assert_eq!(file.destinations[1].scheme, "log");
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        for (text, needle) in [
            ("dest = \"log:\"", "[[destination]]"),
            ("[[destination]]\nname = \"x\"", "url"),
            (
                "[[destination]]\nurl = \"log:?a=1\"\na = 2",
                "given in the url",
            ),
            ("listen = [1, 2]", "`listen`"),
            ("listen = ", "flagstream.toml"),
            ("[environments]\nprod = 3", "environments.prod"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("flagstream.toml"), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn typed_toml_values_reach_destination_options() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
            [[destination]]
            url = "file://{}/export"
            max_bytes = 65536
            rotate = "2s"
            batch_max_events = 10
            [[destination]]
            url = "kinesis://flag-events?region=us-east-1"
            endpoint = "http://127.0.0.1:1"
            aggregate = true
            "#,
            dir.path().display()
        );
        let file = parse(&text).unwrap();
        let configured = crate::delivery::configure(
            file.destinations,
            &crate::delivery::DeliveryDefaults::default(),
            dir.path(),
        )
        .await
        .unwrap();
        let limits = configured[0].destination.limits();
        assert_eq!((limits.max_bytes, limits.linger.as_secs()), (65536, 2));
        assert_eq!(configured[0].settings.batch_max_events, Some(10));
        let kinesis = format!("{:?}", configured[1].destination);
        assert!(kinesis.contains("aggregate: true"), "{kinesis}");

        let typo = parse("[[destination]]\nurl = \"log:\"\nrotat = 5").unwrap();
        let err = crate::delivery::configure(
            typo.destinations,
            &crate::delivery::DeliveryDefaults::default(),
            dir.path(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("`rotat`") && err.contains("`log`"), "{err}");
    }
}
