//! Secrets never on the command line: `env:NAME` and `file:PATH` option values, and redaction.
//!
//! Any option value of a destination (its own, the delivery keys, the filter keys) may be a
//! reference instead of the value: `env:NAME` reads environment variable `NAME`, `file:PATH`
//! reads the file (one trailing newline, `\n` or `\r\n`, is trimmed, so `echo key > file`
//! works). References are resolved once, when the destination is configured; an error names
//! the option and the variable or path, never a value.
//!
//! ## Redaction
//!
//! An option is *secret* when its value came from a reference, or its name says it is one
//! ([`is_secret_name`]: keys, passwords, tokens, …), or the destination type declares it so.
//! Wherever options are shown — `/v1/destinations`, `flagstream validate`, error messages and
//! logs (which quote the destination's URL) — a secret given by reference shows the reference
//! (`env:SEGMENT_WRITE_KEY`), and one given inline shows `***`. Secret option fields are typed
//! [`Secret`], whose `Debug` never prints the value, so `{:?}` of a destination is safe too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer};

/// What is shown instead of an inline secret value.
pub const REDACTED: &str = "***";

/// Name parts that make an option secret whatever its destination type.
const SECRET_NAME_PARTS: &[&str] = &[
    "secret",
    "password",
    "token",
    "api_key",
    "write_key",
    "access_key",
    "private_key",
    "credentials_json",
    "connection_string",
    "external_id",
];

/// Does the option name say its value is a secret?
pub fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| key.contains(part))
}

/// A secret option value. `Debug` shows `Secret(***)`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for handing to the client that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Why a reference could not be resolved (names the option and the variable or path only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("option `{option}`: environment variable `{variable}` is not set")]
    MissingVariable { option: String, variable: String },
    #[error("option `{option}`: environment variable `{variable}` is not valid UTF-8")]
    InvalidVariable { option: String, variable: String },
    #[error("option `{option}`: cannot read secret file `{path}`: {reason}")]
    File {
        option: String,
        path: String,
        reason: String,
    },
    #[error("option `{option}`: `{reference}` names no variable or file")]
    Empty { option: String, reference: String },
}

/// The options as they may be shown, and which keys are secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    /// Every option, secrets replaced by their reference or [`REDACTED`].
    pub shown: BTreeMap<String, String>,
    /// Keys whose values must never be shown.
    pub secret: BTreeSet<String>,
}

impl Redaction {
    /// Render `scheme://target?k=v&…` with the shown values (for messages that quote a URL).
    pub fn render_url(&self, scheme: &str, target: &str) -> String {
        let mut url = format!("{scheme}://{target}");
        if !self.shown.is_empty() {
            let query: Vec<String> = self
                .shown
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }
}

/// Resolve every `env:` / `file:` value of `options` in place, and say how to show them.
/// `declared` are options the destination type declares secret besides [`is_secret_name`].
pub fn resolve(
    options: &mut BTreeMap<String, String>,
    declared: &[&str],
) -> Result<Redaction, SecretError> {
    let mut redaction = Redaction::default();
    for (key, value) in options.iter_mut() {
        let reference = reference_kind(value);
        let named_secret = is_secret_name(key) || declared.contains(&key.as_str());
        let shown = match reference {
            Some(_) => value.clone(),
            None if named_secret => REDACTED.to_string(),
            None => value.clone(),
        };
        if reference.is_some() || named_secret {
            redaction.secret.insert(key.clone());
        }
        if let Some(kind) = reference {
            *value = read_reference(key, kind, value)?;
        }
        redaction.shown.insert(key.clone(), shown);
    }
    Ok(redaction)
}

/// Resolve one value that may be an `env:`/`file:` reference (a flag such as
/// `--admin-token`); `option` names it in errors.
pub fn resolve_value(option: &str, value: &str) -> Result<Secret, SecretError> {
    match reference_kind(value) {
        Some(kind) => read_reference(option, kind, value).map(Secret),
        None => Ok(Secret::new(value)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    Env,
    File,
}

fn reference_kind(value: &str) -> Option<Reference> {
    if value.starts_with("env:") {
        Some(Reference::Env)
    } else if value.starts_with("file:") {
        Some(Reference::File)
    } else {
        None
    }
}

fn read_reference(option: &str, kind: Reference, reference: &str) -> Result<String, SecretError> {
    let name = match kind {
        Reference::Env => &reference["env:".len()..],
        Reference::File => &reference["file:".len()..],
    };
    if name.is_empty() {
        return Err(SecretError::Empty {
            option: option.to_string(),
            reference: reference.to_string(),
        });
    }
    match kind {
        Reference::Env => std::env::var(name).map_err(|err| match err {
            std::env::VarError::NotPresent => SecretError::MissingVariable {
                option: option.to_string(),
                variable: name.to_string(),
            },
            std::env::VarError::NotUnicode(_) => SecretError::InvalidVariable {
                option: option.to_string(),
                variable: name.to_string(),
            },
        }),
        Reference::File => {
            // `file:///run/secrets/x` and `file:/run/secrets/x` both mean the absolute path.
            let path = name.strip_prefix("//").unwrap_or(name);
            let text = std::fs::read_to_string(path).map_err(|err| SecretError::File {
                option: option.to_string(),
                path: path.to_string(),
                reason: err.kind().to_string(),
            })?;
            let trimmed = text
                .strip_suffix('\n')
                .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
                .unwrap_or(&text);
            Ok(trimmed.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_and_file_references_resolve_and_show_as_references() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-a-file\r\n").unwrap();
        std::env::set_var("FLAGSTREAM_TEST_SECRET_A", "from-the-env");
        let mut values = options(&[
            ("region", "env:FLAGSTREAM_TEST_SECRET_A"),
            ("credentials_json", &format!("file:{}", file.display())),
            ("password", "inline-value"),
            ("partition_key", "event_id"),
            ("custom", "visible"),
        ]);
        let redaction = resolve(&mut values, &["custom"]).unwrap();
        assert_eq!(values["region"], "from-the-env");
        assert_eq!(values["credentials_json"], "from-a-file");
        assert_eq!(values["password"], "inline-value");
        assert_eq!(redaction.shown["region"], "env:FLAGSTREAM_TEST_SECRET_A");
        assert_eq!(redaction.shown["password"], REDACTED);
        assert_eq!(redaction.shown["custom"], REDACTED);
        assert_eq!(redaction.shown["partition_key"], "event_id");
        let secret: Vec<&str> = redaction.secret.iter().map(String::as_str).collect();
        assert_eq!(
            secret,
            vec!["credentials_json", "custom", "password", "region"]
        );
        let url = redaction.render_url("kinesis", "s");
        assert!(
            !url.contains("from-") && !url.contains("inline-value"),
            "{url}"
        );
    }

    #[test]
    fn errors_name_the_option_and_the_reference_never_a_value() {
        let mut values = options(&[("token", "env:FLAGSTREAM_TEST_SURELY_UNSET")]);
        let err = resolve(&mut values, &[]).unwrap_err().to_string();
        assert!(
            err.contains("token") && err.contains("FLAGSTREAM_TEST_SURELY_UNSET"),
            "{err}"
        );
        let mut values = options(&[("token", "file:/nonexistent/flagstream/secret")]);
        let err = resolve(&mut values, &[]).unwrap_err().to_string();
        assert!(
            err.contains("token") && err.contains("/nonexistent/flagstream/secret"),
            "{err}"
        );
        let mut values = options(&[("token", "env:")]);
        assert!(resolve(&mut values, &[]).is_err());
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "hunter2");
        assert!(is_secret_name("secret_access_key") && is_secret_name("API_KEY"));
        assert!(!is_secret_name("region"));
    }
}
