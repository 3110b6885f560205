//! A configured destination before it is built.
//!
//! Both configuration surfaces produce the same [`DestinationSpec`]: a repeatable URL-shaped
//! `--dest` flag (`kinesis://flag-events?region=us-east-1&schema=launchdarkly`) and a
//! `[[destination]]` table in the TOML file (`url = "…"` plus extra keys, which are folded into
//! the options exactly as if they were query parameters).
//!
//! Options are consumed in layers: `env:` / `file:` values are resolved (`dest::secrets`),
//! the delivery engine takes its common keys (`name`, `schema`, batching, retry,
//! concurrency), the event filter takes the routing keys, and the destination takes its own
//! typed options (`dest::options`). Whatever is left afterwards is an error that names the
//! key, so a typo never silently becomes a default.

use std::collections::BTreeMap;

use super::DestError;

/// A destination's URL and options, not yet validated by any layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    /// The text the operator wrote, for error messages.
    pub source: String,
    /// URL scheme: `file`, `log`, `kinesis`, `pubsub`, …
    pub scheme: String,
    /// Everything between `scheme://` (or `scheme:`) and `?`: a path, stream name, topic path.
    pub target: String,
    /// Query parameters (and extra TOML keys) not consumed yet.
    pub options: BTreeMap<String, String>,
}

impl DestinationSpec {
    /// Parse `scheme://target?k=v&…` or `scheme:target?…` (e.g. `log:` or `log:stderr`).
    /// Values are percent-decoded; a repeated key is an error.
    pub fn parse(text: &str) -> Result<Self, DestError> {
        let invalid = |reason: String| DestError::Config {
            url: text.to_string(),
            reason,
        };
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected `scheme://target?options`".to_string()))?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
        {
            return Err(invalid(format!("`{scheme}` is not a destination type")));
        }
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (target, query) = match rest.split_once('?') {
            Some((target, query)) => (target, Some(query)),
            None => (rest, None),
        };
        let mut options = BTreeMap::new();
        if let Some(query) = query {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                if key.is_empty() {
                    return Err(invalid("empty option name in query".to_string()));
                }
                if options.insert(key.to_string(), value.to_string()).is_some() {
                    return Err(invalid(format!("option `{key}` is given twice")));
                }
            }
        }
        let target = url::form_urlencoded::parse(format!("t={target}").as_bytes())
            .next()
            .map(|(_, value)| value.to_string())
            .unwrap_or_default();
        Ok(DestinationSpec {
            source: text.to_string(),
            scheme: scheme.to_ascii_lowercase(),
            target,
            options,
        })
    }

    /// A `[[destination]]` table of the config file (or the same table as JSON through the
    /// admin API): `url = "scheme://target?options"` plus extra keys, folded into the
    /// options as if they were query parameters (lists joined with `,`). A key given both
    /// ways is an error; the message names the key.
    pub fn from_table(table: &toml::Table) -> Result<Self, String> {
        let url = table
            .get("url")
            .and_then(toml::Value::as_str)
            .ok_or("needs `url = \"scheme://target?options\"`")?;
        let mut spec = DestinationSpec::parse(url).map_err(|err| err.to_string())?;
        for (key, value) in table {
            if key == "url" {
                continue;
            }
            let value = match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|item| table_scalar(item).ok_or(()))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|items| items.join(","))
                    .map_err(|()| {
                        format!("`{key}`: list items must be strings, numbers or bools")
                    })?,
                other => table_scalar(other)
                    .ok_or_else(|| format!("`{key}` must be a string, number, bool or list"))?,
            };
            if spec.options.insert(key.clone(), value).is_some() {
                return Err(format!("option `{key}` is given in the url and as a key"));
            }
        }
        Ok(spec)
    }

    /// Remove and return an option.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.options.remove(key)
    }

    /// A config error for this spec.
    pub fn error(&self, reason: impl Into<String>) -> DestError {
        DestError::Config {
            url: self.source.clone(),
            reason: reason.into(),
        }
    }
}

/// A table value as option text.
pub fn table_scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_target_and_options() {
        let spec = DestinationSpec::parse("kinesis://flag-events?region=us-east-1&schema=segment")
            .unwrap();
        assert_eq!(spec.scheme, "kinesis");
        assert_eq!(spec.target, "flag-events");
        assert_eq!(spec.options["region"], "us-east-1");
        assert_eq!(spec.options["schema"], "segment");
    }

    #[test]
    fn parses_file_paths_and_opaque_forms() {
        let spec =
            DestinationSpec::parse("file:///var/lib/flagstream/export?format=ndjson").unwrap();
        assert_eq!(spec.target, "/var/lib/flagstream/export");
        let spec = DestinationSpec::parse("log:").unwrap();
        assert_eq!((spec.scheme.as_str(), spec.target.as_str()), ("log", ""));
        let spec = DestinationSpec::parse("pubsub://projects/acme/topics/flag-events").unwrap();
        assert_eq!(spec.target, "projects/acme/topics/flag-events");
    }

    #[test]
    fn percent_decodes_values() {
        let spec = DestinationSpec::parse("kinesis://s?role_arn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx")
            .unwrap();
        assert_eq!(spec.options["role_arn"], "arn:aws:iam::1:role/x");
    }

    #[test]
    fn rejects_repeated_options_and_missing_schemes() {
        assert!(DestinationSpec::parse("log:?a=1&a=2").is_err());
        assert!(DestinationSpec::parse("no-scheme-here").is_err());
        let mut spec = DestinationSpec::parse("log:?level=info&typo=1").unwrap();
        assert_eq!(spec.take("level").as_deref(), Some("info"));
        assert_eq!(spec.options.keys().collect::<Vec<_>>(), vec!["typo"]);
    }
}
