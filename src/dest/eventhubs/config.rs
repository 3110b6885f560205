//! Event Hubs options: the namespace and hub (from the URL or a connection string), the
//! shared access policy and key LaunchDarkly's Event Hubs integration asks for, and the
//! sending options (partition key, batch size, endpoint, timeout).

use std::time::Duration;

use serde::Deserialize;

use crate::dest::kinesis::PartitionKeySource;
use crate::dest::options::{HumanDuration, Size, DEFAULT_TIMEOUT};
use crate::dest::secrets::Secret;

/// Suffix of a namespace given by its short name.
pub const NAMESPACE_SUFFIX: &str = ".servicebus.windows.net";
/// Largest batch (one AMQP message) on the Standard tier: 1 MB ("Azure Event Hubs quotas
/// and limits": maximum size of an Event Hubs publication).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Smallest `max_batch_bytes` accepted: room for one small event and the batch envelope.
pub const MIN_MAX_BATCH_BYTES: usize = 4 * 1024;
/// Largest `max_batch_bytes` accepted (self-serve Dedicated clusters allow 20 MB events).
pub const MAX_MAX_BATCH_BYTES: usize = 20 * 1024 * 1024;

/// The options: `policy` + `key`, or `connection_string` (both secrets via `env:` / `file:`),
/// and how events are sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventHubsOptions {
    pub policy: Option<String>,
    pub key: Option<Secret>,
    pub connection_string: Option<Secret>,
    /// Which value becomes an event's partition key (default: the context key).
    pub partition_key: Option<PartitionKeySource>,
    /// Largest batch in bytes (1 MB on Standard; more on Premium/Dedicated).
    pub max_batch_bytes: Option<Size>,
    /// Where to connect instead of `amqps://NAMESPACE:5671` (an AMQP proxy or a stand-in).
    pub endpoint: Option<String>,
    /// How long opening the connection or sending one batch may take.
    pub timeout: Option<HumanDuration>,
}

/// Everything the sender needs, checked.
#[derive(Debug, Clone)]
pub struct EventHubsSettings {
    pub target: EventHubsTarget,
    pub credentials: EventHubsCredentials,
    pub partition_key: PartitionKeySource,
    pub max_batch_bytes: usize,
    pub endpoint: Option<String>,
    pub timeout: Duration,
}

impl EventHubsSettings {
    /// Check `options` for `target` (the URL between `eventhubs://` and `?`).
    pub fn new(target: &str, options: &EventHubsOptions) -> Result<Self, String> {
        let (target, credentials) = resolve(target, options)?;
        check_connection_string_parts(&credentials)?;
        let max_batch_bytes = options
            .max_batch_bytes
            .map_or(DEFAULT_MAX_BATCH_BYTES, |Size(bytes)| bytes);
        if !(MIN_MAX_BATCH_BYTES..=MAX_MAX_BATCH_BYTES).contains(&max_batch_bytes) {
            return Err(format!(
                "option `max_batch_bytes` must be from {MIN_MAX_BATCH_BYTES} to \
                 {MAX_MAX_BATCH_BYTES} bytes, got {max_batch_bytes}"
            ));
        }
        let timeout = options.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        if timeout.is_zero() {
            return Err("option `timeout` must be longer than 0s".into());
        }
        Ok(EventHubsSettings {
            target,
            credentials,
            partition_key: options
                .partition_key
                .clone()
                .unwrap_or(PartitionKeySource::ContextKey),
            max_batch_bytes,
            endpoint: options.endpoint.as_deref().map(amqp_endpoint).transpose()?,
            timeout,
        })
    }

    /// The connection string Microsoft's client opens with (it signs SAS tokens from it).
    pub fn connection_string(&self) -> Secret {
        Secret::new(format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}",
            self.target.host,
            self.credentials.policy,
            self.credentials.key.expose(),
            self.target.hub
        ))
    }
}

/// The policy and key go into a connection string (`;`-separated `NAME=VALUE` parts).
fn check_connection_string_parts(credentials: &EventHubsCredentials) -> Result<(), String> {
    // Policy names: letters, digits, periods, hyphens and underscores.
    let policy = &credentials.policy;
    if policy.is_empty()
        || !policy
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "`{policy}` is not a shared access policy name (letters, digits, . - _)"
        ));
    }
    if credentials.key.expose().is_empty() || credentials.key.expose().contains(';') {
        return Err("the shared access key is empty or contains `;`".into());
    }
    Ok(())
}

/// `amqp://HOST:PORT` or `amqps://HOST[:PORT]`.
fn amqp_endpoint(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|err| format!("option `endpoint`: not a URL: {err}"))?;
    if !matches!(url.scheme(), "amqp" | "amqps") || url.host_str().is_none() {
        return Err(format!(
            "option `endpoint` must be amqps://HOST[:PORT] or amqp://HOST:PORT, got `{text}`"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Where events go: `NAMESPACE/HUB`, the namespace as its short name or full host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubsTarget {
    /// `NAMESPACE.servicebus.windows.net` (or the host given).
    pub host: String,
    pub hub: String,
}

impl EventHubsTarget {
    /// Parse `NAMESPACE/HUB`.
    pub fn parse(target: &str) -> Result<Self, String> {
        let (namespace, hub) = target
            .split_once('/')
            .ok_or_else(|| "missing event hub: use eventhubs://NAMESPACE/HUB".to_string())?;
        Ok(EventHubsTarget {
            host: namespace_host(namespace)?,
            hub: hub_name(hub)?,
        })
    }

    /// The resource a SAS token for sending to this hub is scoped to.
    pub fn resource_uri(&self) -> String {
        format!("https://{}/{}", self.host, self.hub)
    }
}

impl std::fmt::Display for EventHubsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event hub `{}` in `{}`", self.hub, self.host)
    }
}

fn namespace_host(namespace: &str) -> Result<String, String> {
    if namespace.contains('.') {
        let valid = namespace.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
        return if valid {
            Ok(namespace.to_ascii_lowercase())
        } else {
            Err(format!("`{namespace}` is not a host name"))
        };
    }
    // Namespace names: 6-50 letters, digits and hyphens, starting with a letter and ending
    // with a letter or digit.
    let valid = (6..=50).contains(&namespace.len())
        && namespace.starts_with(|c: char| c.is_ascii_alphabetic())
        && namespace.ends_with(|c: char| c.is_ascii_alphanumeric())
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !valid {
        return Err(format!(
            "`{namespace}` is not an Event Hubs namespace (6-50 letters, digits and hyphens, \
             starting with a letter), nor a host name"
        ));
    }
    Ok(format!(
        "{}{NAMESPACE_SUFFIX}",
        namespace.to_ascii_lowercase()
    ))
}

fn hub_name(hub: &str) -> Result<String, String> {
    // Event hub names: 1-256 letters, digits, periods, hyphens and underscores, starting and
    // ending with a letter or digit.
    let valid = (1..=256).contains(&hub.len())
        && hub.starts_with(|c: char| c.is_ascii_alphanumeric())
        && hub.ends_with(|c: char| c.is_ascii_alphanumeric())
        && hub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid {
        return Err(format!(
            "`{hub}` is not an event hub name (1-256 letters, digits, . - _)"
        ));
    }
    Ok(hub.to_string())
}

/// A shared access policy and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubsCredentials {
    pub policy: String,
    pub key: Secret,
}

/// The hub and credentials from a `--dest` target and options: `NAMESPACE/HUB` with
/// `policy` + `key`, or a connection string (whose `EntityPath`, if any, must name the same
/// hub; with an empty target the connection string supplies namespace and hub).
pub fn resolve(
    target: &str,
    options: &EventHubsOptions,
) -> Result<(EventHubsTarget, EventHubsCredentials), String> {
    match (&options.connection_string, &options.policy, &options.key) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            Err("give either `connection_string` or `policy` and `key`, not both".into())
        }
        (Some(connection), None, None) => from_connection_string(target, connection.expose()),
        (None, Some(policy), Some(key)) => Ok((
            EventHubsTarget::parse(target)?,
            EventHubsCredentials {
                policy: policy.clone(),
                key: key.clone(),
            },
        )),
        (None, None, None) => Err(
            "missing credentials: give `policy` and `key` (a shared access policy with the Send \
             right) or `connection_string`"
                .into(),
        ),
        (None, _, _) => Err("`policy` and `key` go together: give both".into()),
    }
}

/// Parse `Endpoint=sb://HOST/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=HUB]`.
fn from_connection_string(
    target: &str,
    connection: &str,
) -> Result<(EventHubsTarget, EventHubsCredentials), String> {
    let mut endpoint = None;
    let mut policy = None;
    let mut key = None;
    let mut entity = None;
    for part in connection.split(';').filter(|part| !part.trim().is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| "connection_string: every part must be NAME=VALUE".to_string())?;
        match name.trim().to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(value.trim()),
            "sharedaccesskeyname" => policy = Some(value.trim()),
            "sharedaccesskey" => key = Some(value.trim()),
            "entitypath" => entity = Some(value.trim()),
            "sharedaccesssignature" => {
                return Err(
                    "connection_string: a pre-made SharedAccessSignature is not supported; use \
                     a connection string with SharedAccessKeyName and SharedAccessKey"
                        .into(),
                )
            }
            // Names only, never values: the string is a secret.
            other => return Err(format!("connection_string: unknown part `{other}`")),
        }
    }
    let missing = |what: &str| format!("connection_string: missing `{what}`");
    let endpoint = endpoint.ok_or_else(|| missing("Endpoint"))?;
    let host = endpoint
        .strip_prefix("sb://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|host| !host.is_empty() && !host.contains('/'))
        .ok_or_else(|| {
            "connection_string: `Endpoint` must be sb://NAMESPACE.servicebus.windows.net/"
                .to_string()
        })?;
    let credentials = EventHubsCredentials {
        policy: policy
            .ok_or_else(|| missing("SharedAccessKeyName"))?
            .to_string(),
        key: Secret::new(key.ok_or_else(|| missing("SharedAccessKey"))?),
    };
    let hub = match (target.split_once('/'), entity) {
        (None, Some(entity)) if target.is_empty() => entity.to_string(),
        (None, None) if target.is_empty() => {
            return Err("missing event hub: use eventhubs://NAMESPACE/HUB or a connection string with EntityPath".into())
        }
        _ => {
            let from_url = EventHubsTarget::parse(target)?;
            if from_url.host != namespace_host(host)? {
                return Err(format!(
                    "the URL's namespace `{}` differs from the connection string's `{host}`",
                    from_url.host
                ));
            }
            if entity.is_some_and(|entity| entity != from_url.hub) {
                return Err(format!(
                    "the connection string's EntityPath differs from the URL's hub `{}`",
                    from_url.hub
                ));
            }
            from_url.hub
        }
    };
    Ok((
        EventHubsTarget {
            host: namespace_host(host)?,
            hub: hub_name(&hub)?,
        },
        credentials,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(
        policy: Option<&str>,
        key: Option<&str>,
        connection: Option<&str>,
    ) -> EventHubsOptions {
        EventHubsOptions {
            policy: policy.map(str::to_string),
            key: key.map(Secret::new),
            connection_string: connection.map(Secret::new),
            ..EventHubsOptions::default()
        }
    }

    #[test]
    fn namespace_hub_policy_and_key() {
        let (target, credentials) = resolve(
            "flagstream-ns/flag-events",
            &options(Some("send"), Some("k="), None),
        )
        .unwrap();
        assert_eq!(target.host, "flagstream-ns.servicebus.windows.net");
        assert_eq!(target.hub, "flag-events");
        assert_eq!(
            target.resource_uri(),
            "https://flagstream-ns.servicebus.windows.net/flag-events"
        );
        assert_eq!(credentials.policy, "send");
        assert_eq!(credentials.key.expose(), "k=");
        let (full, _) = resolve(
            "ns.servicebus.chinacloudapi.cn/hub",
            &options(Some("p"), Some("k"), None),
        )
        .unwrap();
        assert_eq!(full.host, "ns.servicebus.chinacloudapi.cn");
    }

    #[test]
    fn connection_strings_supply_or_confirm_namespace_and_hub() {
        let connection = "Endpoint=sb://flagstream-ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=abc+/=;EntityPath=flag-events";
        let (target, credentials) = resolve("", &options(None, None, Some(connection))).unwrap();
        assert_eq!(target.host, "flagstream-ns.servicebus.windows.net");
        assert_eq!(target.hub, "flag-events");
        assert_eq!(credentials.policy, "send");
        assert_eq!(credentials.key.expose(), "abc+/=", "values keep their `=`");
        let (same, _) = resolve(
            "flagstream-ns/flag-events",
            &options(None, None, Some(connection)),
        )
        .unwrap();
        assert_eq!(same, target);

        let namespace_level = "Endpoint=sb://flagstream-ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=xyz";
        let (target, _) = resolve(
            "flagstream-ns/other-hub",
            &options(None, None, Some(namespace_level)),
        )
        .unwrap();
        assert_eq!(target.hub, "other-hub");
    }

    #[test]
    fn bad_configurations_are_named_without_secrets() {
        let connection = "Endpoint=sb://flagstream-ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=TOPSECRET;EntityPath=flag-events";
        for (target, opts, needle) in [
            (
                "ns-one/hub",
                options(None, None, None),
                "missing credentials",
            ),
            ("ns-one/hub", options(Some("p"), None, None), "go together"),
            (
                "ns-one/hub",
                options(Some("p"), Some("k"), Some(connection)),
                "not both",
            ),
            (
                "ns-one",
                options(Some("p"), Some("k"), None),
                "missing event hub",
            ),
            ("ns/hub", options(Some("p"), Some("k"), None), "namespace"),
            (
                "ns-one/bad hub",
                options(Some("p"), Some("k"), None),
                "event hub name",
            ),
            (
                "flagstream-ns/another",
                options(None, None, Some(connection)),
                "EntityPath",
            ),
            (
                "other-ns/flag-events",
                options(None, None, Some(connection)),
                "differs",
            ),
            (
                "",
                options(
                    None,
                    None,
                    Some("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=p"),
                ),
                "SharedAccessKey",
            ),
            (
                "",
                options(
                    None,
                    None,
                    Some("SharedAccessSignature=SharedAccessSignature sr=x"),
                ),
                "not supported",
            ),
            (
                "",
                options(
                    None,
                    None,
                    Some("Endpoint=https://x/;SharedAccessKeyName=p;SharedAccessKey=TOPSECRET"),
                ),
                "sb://",
            ),
        ] {
            let err = resolve(target, &opts).unwrap_err();
            assert!(err.contains(needle), "{target} {opts:?}: {err}");
            assert!(!err.contains("TOPSECRET"), "{err}");
        }
    }

    #[test]
    fn settings_check_sizes_endpoints_and_compose_the_connection_string() {
        let mut opts = options(Some("send"), Some("k3y="), None);
        let settings = EventHubsSettings::new("flagstream-ns/flag-events", &opts).unwrap();
        assert_eq!(settings.max_batch_bytes, DEFAULT_MAX_BATCH_BYTES);
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
        assert_eq!(settings.partition_key, PartitionKeySource::ContextKey);
        assert_eq!(
            settings.connection_string().expose(),
            "Endpoint=sb://flagstream-ns.servicebus.windows.net/;SharedAccessKeyName=send;\
             SharedAccessKey=k3y=;EntityPath=flag-events"
        );
        opts.endpoint = Some("amqp://127.0.0.1:5672/".into());
        opts.max_batch_bytes = Some(Size(256 * 1024));
        let settings = EventHubsSettings::new("flagstream-ns/flag-events", &opts).unwrap();
        assert_eq!(settings.endpoint.as_deref(), Some("amqp://127.0.0.1:5672"));
        assert_eq!(settings.max_batch_bytes, 256 * 1024);

        for (change, needle) in [
            (Some("https://x"), "amqps://"),
            (Some("not a url"), "endpoint"),
        ] {
            let mut bad = options(Some("send"), Some("k"), None);
            bad.endpoint = change.map(str::to_string);
            let err = EventHubsSettings::new("flagstream-ns/hub", &bad).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        for bytes in [1024, 64 * 1024 * 1024] {
            let mut bad = options(Some("send"), Some("k"), None);
            bad.max_batch_bytes = Some(Size(bytes));
            let err = EventHubsSettings::new("flagstream-ns/hub", &bad).unwrap_err();
            assert!(err.contains("max_batch_bytes"), "{err}");
        }
        let err =
            EventHubsSettings::new("flagstream-ns/hub", &options(Some("a;b"), Some("k"), None))
                .unwrap_err();
        assert!(err.contains("policy"), "{err}");
        let err = EventHubsSettings::new(
            "flagstream-ns/hub",
            &options(Some("p"), Some("TOP;SECRET"), None),
        )
        .unwrap_err();
        assert!(!err.contains("TOP"), "{err}");
    }
}
