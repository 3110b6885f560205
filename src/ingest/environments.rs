//! Environments: which credential belongs to which environment.
//!
//! LaunchDarkly SDKs authenticate with an SDK key (server), a mobile key, or a client-side ID
//! in the URL path (browser); go-feature-flag and generic clients use an API key. flagstream
//! does not need to tell those apart: every credential configured for an environment is
//! accepted on every route and tags the stored record with that environment's name.
//!
//! Invariants: a credential maps to exactly one environment (a key listed twice is a config
//! error, never a silent choice), and with no environment configured the server is *open*:
//! every request is accepted into [`DEFAULT_ENVIRONMENT`] whatever it presents.

use std::collections::HashMap;
use std::sync::Arc;

/// The environment name used when none is configured.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// Credential → environment lookup. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Environments {
    by_credential: Arc<HashMap<String, Arc<str>>>,
    names: Arc<Vec<Arc<str>>>,
}

impl Default for Environments {
    fn default() -> Self {
        Self::open()
    }
}

impl Environments {
    /// No credentials configured: everything goes to [`DEFAULT_ENVIRONMENT`].
    pub fn open() -> Self {
        Environments {
            by_credential: Arc::new(HashMap::new()),
            names: Arc::new(vec![Arc::from(DEFAULT_ENVIRONMENT)]),
        }
    }

    /// Build from `(name, keys)` pairs. Errors name the offending entry.
    pub fn from_entries<I, K>(entries: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = (String, K)>,
        K: IntoIterator<Item = String>,
    {
        let mut by_credential: HashMap<String, Arc<str>> = HashMap::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        for (name, keys) in entries {
            check_name(&name)?;
            if names.iter().any(|known| **known == *name) {
                return Err(format!(
                    "environment `{name}` is given twice; list all its keys in one entry"
                ));
            }
            let name: Arc<str> = Arc::from(name.as_str());
            let mut count = 0;
            for key in keys {
                let key = key.trim().to_string();
                if key.is_empty() {
                    return Err(format!("environment `{name}` has an empty key"));
                }
                if key.chars().any(char::is_whitespace) {
                    return Err(format!(
                        "environment `{name}`: key `{key}` contains whitespace"
                    ));
                }
                // Credentials travel in HTTP headers and URL paths: anything else never matches.
                if !key.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(format!(
                        "environment `{name}`: key `{}` contains a control or non-ASCII \
                         character; use printable ASCII",
                        redact(&key).escape_debug()
                    ));
                }
                if let Some(other) = by_credential.insert(key.clone(), name.clone()) {
                    return Err(format!(
                        "key `{}` is listed for environment `{other}` and `{name}`",
                        redact(&key)
                    ));
                }
                count += 1;
            }
            if count == 0 {
                return Err(format!("environment `{name}` has no keys"));
            }
            names.push(name);
        }
        if names.is_empty() {
            return Ok(Self::open());
        }
        Ok(Environments {
            by_credential: Arc::new(by_credential),
            names: Arc::new(names),
        })
    }

    /// Parse `--environment` values (`NAME=KEY[,KEY…]`).
    pub fn parse_flags(values: &[String]) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(values.len());
        for value in values {
            let (name, keys) = value
                .split_once('=')
                .ok_or_else(|| format!("`{value}` is not of the form NAME=KEY[,KEY…]"))?;
            let keys: Vec<String> = keys.split(',').map(str::to_string).collect();
            entries.push((name.trim().to_string(), keys));
        }
        Self::from_entries(entries)
    }

    /// True when no credential is configured (every request is accepted).
    pub fn is_open(&self) -> bool {
        self.by_credential.is_empty()
    }

    /// The environment a credential belongs to. In open mode, always the default one.
    pub fn lookup(&self, credential: Option<&str>) -> Option<Arc<str>> {
        if self.is_open() {
            return self.names.first().cloned();
        }
        self.by_credential.get(credential?).cloned()
    }

    /// Every configured `(credential, environment)` pair (for forwarding destinations, which
    /// need the environment's keys at send time).
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_credential
            .iter()
            .map(|(key, name)| (key.as_str(), &**name))
    }

    /// Every environment name, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|name| &**name)
    }
}

/// Longest environment name (it is stored in every record's metadata and names files).
pub const MAX_ENVIRONMENT_NAME_BYTES: usize = 64;

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("environment name is empty".to_string());
    }
    if name.len() > MAX_ENVIRONMENT_NAME_BYTES {
        return Err(format!(
            "environment name `{}…` is longer than {MAX_ENVIRONMENT_NAME_BYTES} characters; \
             use a shorter name",
            name.chars().take(16).collect::<String>()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "environment name `{name}` may only contain ASCII letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Keys are secrets: error messages show only their start.
fn redact(key: &str) -> String {
    let shown: String = key.chars().take(6).collect();
    format!("{shown}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_key_to_its_environment() {
        let envs = Environments::parse_flags(&[
            "production=sdk-prod,mob-prod,client-prod".to_string(),
            "staging=sdk-stg".to_string(),
        ])
        .unwrap();
        assert!(!envs.is_open());
        assert_eq!(envs.lookup(Some("mob-prod")).as_deref(), Some("production"));
        assert_eq!(envs.lookup(Some("sdk-stg")).as_deref(), Some("staging"));
        assert_eq!(envs.lookup(Some("nope")), None);
        assert_eq!(envs.lookup(None), None);
        assert_eq!(
            envs.names().collect::<Vec<_>>(),
            vec!["production", "staging"]
        );
    }

    #[test]
    fn open_mode_accepts_anything_into_default() {
        let envs = Environments::parse_flags(&[]).unwrap();
        assert!(envs.is_open());
        assert_eq!(envs.lookup(None).as_deref(), Some(DEFAULT_ENVIRONMENT));
        assert_eq!(
            envs.lookup(Some("whatever")).as_deref(),
            Some(DEFAULT_ENVIRONMENT)
        );
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        for (bad, needle) in [
            ("production", "NAME=KEY"),
            ("=k", "empty"),
            ("prod=", "empty key"),
            ("pr od=k", "may only contain"),
            ("prod=a b", "whitespace"),
            ("prod=key\u{1}x", "control or non-ASCII"),
            ("prod=clé", "control or non-ASCII"),
        ] {
            let err = Environments::parse_flags(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let err =
            Environments::parse_flags(&["a=shared-key".to_string(), "b=shared-key".to_string()])
                .unwrap_err();
        assert!(err.contains("`a`") && err.contains("`b`"), "{err}");
        assert!(!err.contains("shared-key"), "keys are redacted: {err}");
        let err = Environments::parse_flags(&["a=k1".to_string(), "a=k2".to_string()]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
