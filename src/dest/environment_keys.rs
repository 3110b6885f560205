//! The `--environment` credentials, as a forwarding destination needs them: which keys each
//! environment was configured with, findable by the fingerprint ingest stored in place of the
//! key ([`crate::event::stored::credential_fingerprint`]).
//!
//! Ingest owns the credential → environment lookup; this is the reverse view (environment →
//! keys), handed to destinations through [`super::BuildContext`] so that a credential is read
//! from the configuration at send time and never from the WAL.
//!
//! Invariant: keys are secrets; nothing here prints them (`Debug` shows environment names and
//! key counts only, errors name environments and key prefixes).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::event::stored::credential_fingerprint;

use super::secrets::Secret;

/// The kinds of LaunchDarkly credential, told apart by LaunchDarkly's key prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A server-side SDK key (`sdk-…`): `/bulk`, `/diagnostic`.
    Server,
    /// A mobile key (`mob-…`): `/mobile/…`.
    Mobile,
    /// A client-side id (neither prefix): the path of `/events/bulk/{id}`.
    ClientSide,
}

impl KeyKind {
    fn matches(self, key: &str) -> bool {
        match self {
            KeyKind::Server => key.starts_with("sdk-"),
            KeyKind::Mobile => key.starts_with("mob-"),
            KeyKind::ClientSide => !key.starts_with("sdk-") && !key.starts_with("mob-"),
        }
    }

    /// How the kind is described in reasons.
    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Server => "SDK key (`sdk-…`)",
            KeyKind::Mobile => "mobile key (`mob-…`)",
            KeyKind::ClientSide => "client-side id",
        }
    }
}

/// One configured key and its fingerprint.
#[derive(Clone)]
struct Key {
    fingerprint: String,
    key: Secret,
}

/// Environment name → its keys. Cheap to clone; empty when ingest is open (no environments).
#[derive(Clone, Default)]
pub struct EnvironmentKeys {
    by_environment: Arc<BTreeMap<String, Vec<Key>>>,
}

impl fmt::Debug for EnvironmentKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.by_environment
                    .iter()
                    .map(|(name, keys)| (name, keys.len())),
            )
            .finish()
    }
}

/// Why no credential could be found for a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("environment `{0}` is not configured (--environment); its credential is unknown")]
    UnknownEnvironment(String),
    #[error(
        "environment `{environment}`: the key the sender used is not configured any more (or \
         the record predates stored credentials), and the environment has {found} {kind}s \
         where exactly one would be used instead"
    )]
    NoSingleKey {
        environment: String,
        kind: &'static str,
        found: usize,
    },
}

impl EnvironmentKeys {
    /// From `(credential, environment)` pairs, as ingest's configuration lists them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut by_environment: BTreeMap<String, Vec<Key>> = BTreeMap::new();
        for (key, environment) in pairs {
            by_environment
                .entry(environment.to_string())
                .or_default()
                .push(Key {
                    fingerprint: credential_fingerprint(key),
                    key: Secret::new(key),
                });
        }
        for keys in by_environment.values_mut() {
            // Configuration order is not kept by the source map: sort for a stable choice.
            keys.sort_by(|a, b| a.key.expose().cmp(b.key.expose()));
        }
        EnvironmentKeys {
            by_environment: Arc::new(by_environment),
        }
    }

    /// True when no environment is configured.
    pub fn is_empty(&self) -> bool {
        self.by_environment.is_empty()
    }

    /// The key of `environment` whose fingerprint is `fingerprint`; else (key rotated out of
    /// the configuration, or a record stored before fingerprints) the environment's only key
    /// of `kind`.
    pub fn resolve(
        &self,
        environment: &str,
        fingerprint: &str,
        kind: KeyKind,
    ) -> Result<&str, KeyError> {
        let keys = self
            .by_environment
            .get(environment)
            .ok_or_else(|| KeyError::UnknownEnvironment(environment.to_string()))?;
        if !fingerprint.is_empty() {
            if let Some(key) = keys.iter().find(|key| key.fingerprint == fingerprint) {
                return Ok(key.key.expose());
            }
        }
        let mut of_kind = keys.iter().filter(|key| kind.matches(key.key.expose()));
        match (of_kind.next(), of_kind.count()) {
            (Some(key), 0) => Ok(key.key.expose()),
            (first, rest) => Err(KeyError::NoSingleKey {
                environment: environment.to_string(),
                kind: kind.describe(),
                found: usize::from(first.is_some()) + rest,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> EnvironmentKeys {
        EnvironmentKeys::from_pairs([
            ("sdk-prod", "production"),
            ("mob-prod", "production"),
            ("5f0c0ffee0ddba11cafe0001", "production"),
            ("sdk-old", "staging"),
            ("sdk-new", "staging"),
        ])
    }

    #[test]
    fn the_fingerprinted_key_wins() {
        let keys = keys();
        for key in ["sdk-prod", "mob-prod"] {
            let print = credential_fingerprint(key);
            assert_eq!(keys.resolve("production", &print, KeyKind::Server), Ok(key));
        }
        let old = credential_fingerprint("sdk-old");
        assert_eq!(
            keys.resolve("staging", &old, KeyKind::Server),
            Ok("sdk-old")
        );
    }

    #[test]
    fn without_a_match_the_only_key_of_the_kind_is_used() {
        let keys = keys();
        let gone = credential_fingerprint("sdk-rotated-out");
        assert_eq!(
            keys.resolve("production", &gone, KeyKind::Server),
            Ok("sdk-prod")
        );
        assert_eq!(
            keys.resolve("production", "", KeyKind::Mobile),
            Ok("mob-prod")
        );
        assert_eq!(
            keys.resolve("production", "", KeyKind::ClientSide),
            Ok("5f0c0ffee0ddba11cafe0001")
        );
        let err = keys.resolve("staging", "", KeyKind::Server).unwrap_err();
        assert!(
            matches!(err, KeyError::NoSingleKey { found: 2, .. }),
            "{err}"
        );
        let err = keys.resolve("staging", "", KeyKind::Mobile).unwrap_err();
        assert!(
            matches!(err, KeyError::NoSingleKey { found: 0, .. }),
            "{err}"
        );
        let err = keys.resolve("qa", "", KeyKind::Server).unwrap_err();
        assert_eq!(err, KeyError::UnknownEnvironment("qa".into()));
    }

    #[test]
    fn debug_and_errors_never_show_keys() {
        let keys = keys();
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("production") && !shown.contains("sdk-"),
            "{shown}"
        );
        let err = keys.resolve("staging", "", KeyKind::Server).unwrap_err();
        assert!(!err.to_string().contains("sdk-old"), "{err}");
    }
}
