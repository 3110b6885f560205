//! Per-destination delivery settings: the common keys of a `--dest` URL / `[[destination]]`
//! table, consumed before the event filter and the destination take theirs.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `name` | unique name; names the cursor and the dead-letter file | the scheme, then `<scheme>-2`, `<scheme>-3`, … |
//! | `schema` | output schema (`launchdarkly`, `segment`, …) | the destination's default |
//! | `batch_max_events` | most events per batch (never above the target's limit) | the target's limit |
//! | `batch_max_bytes` | most bytes per batch, e.g. `1MiB` (never above the target's limit) | the target's limit |
//! | `linger` | how long a partly filled batch waits, e.g. `200ms` | the target's default |
//! | `concurrency` | batches in flight at once | the destination type's (`log` 1, `file` 2, others 4) |
//! | `retry_max_attempts` | retries before dead-lettering, or `unlimited` | `--retry-max-attempts` |
//! | `retry_max_age` | time since the first failure before dead-lettering, or `unlimited` | `--retry-max-age` |
//! | `retry_initial_backoff` / `retry_max_backoff` | backoff bounds | the `--retry-*` flags |
//! | `start` | where a destination *without a persisted cursor* starts: `earliest`, `latest` or an RFC 3339 time ([`super::start`]) | `earliest` |
//! | `project`, `expand_summaries`, `mparticle_*` | schema options (see `event::ExportOptions`) | `--project` (`default`) |
//!
//! Names are part of the on-disk state (cursor and dead-letter file names), so the defaults
//! are stable when destinations are *appended*: the first `file` destination is always `file`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dest::options::{HumanDuration, OptionMap, Parsed, Size};
use crate::dest::registry;
use crate::dest::{BatchLimits, DestError, Destination, DestinationSpec};
use crate::event::{ExportOptions, FilterConfig, Schema};

use super::retry::{parse_max_age, parse_max_attempts, RetryPolicy};
use super::start::StartAt;

/// Engine-wide defaults for per-destination settings (filled from CLI flags).
#[derive(Debug, Clone)]
pub struct DeliveryDefaults {
    pub retry: RetryPolicy,
    /// Project name for exported envelopes.
    pub project: String,
    /// The `--environment` keys, for destinations that forward with the sender's credential.
    pub environment_keys: crate::dest::EnvironmentKeys,
}

impl Default for DeliveryDefaults {
    fn default() -> Self {
        DeliveryDefaults {
            retry: RetryPolicy::default(),
            project: "default".to_string(),
            environment_keys: crate::dest::EnvironmentKeys::default(),
        }
    }
}

/// The delivery keys as typed options (see the module doc's table); the rest of a spec's
/// options go on to the schema options, the filter and the destination.
#[derive(Debug, Deserialize)]
struct DeliveryOptions {
    schema: Option<Parsed<Schema>>,
    batch_max_events: Option<usize>,
    batch_max_bytes: Option<Size>,
    linger: Option<HumanDuration>,
    concurrency: Option<usize>,
    /// A count or `unlimited`.
    retry_max_attempts: Option<String>,
    /// A duration or `unlimited`.
    retry_max_age: Option<String>,
    retry_initial_backoff: Option<HumanDuration>,
    retry_max_backoff: Option<HumanDuration>,
    start: Option<Parsed<StartAt>>,
}

/// Delivery settings of one destination.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub name: String,
    /// `None`: the destination's own default schema.
    pub schema: Option<Schema>,
    pub batch_max_events: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    pub linger: Option<Duration>,
    /// `None`: the destination type's default ([`registry::default_concurrency`]).
    pub concurrency: Option<usize>,
    pub retry: RetryPolicy,
    pub export: ExportOptions,
    pub filter: FilterConfig,
    /// Where a new cursor starts (ignored when one is persisted).
    pub start: StartAt,
    /// Every option as configured, for display: secrets shown as their `env:` / `file:`
    /// reference or `***` (see `dest::secrets`).
    pub shown_options: BTreeMap<String, String>,
}

impl DeliverySettings {
    /// Settings with every default, for `name` (tests, embedded defaults).
    pub fn named(name: &str, defaults: &DeliveryDefaults) -> Self {
        DeliverySettings {
            name: name.to_string(),
            schema: None,
            batch_max_events: None,
            batch_max_bytes: None,
            linger: None,
            concurrency: None,
            retry: defaults.retry,
            export: ExportOptions {
                project: defaults.project.clone(),
                ..ExportOptions::default()
            },
            filter: FilterConfig::default(),
            start: StartAt::default(),
            shown_options: BTreeMap::new(),
        }
    }

    /// Consume the delivery keys (not `name`, see [`assign_names`]) and then the filter keys
    /// from `spec`, leaving the destination's own keys in it.
    pub fn take_from(
        spec: &mut DestinationSpec,
        name: String,
        defaults: &DeliveryDefaults,
    ) -> Result<Self, DestError> {
        let mut settings = DeliverySettings::named(&name, defaults);
        let mut map = OptionMap::new(
            "delivery",
            std::mem::take(&mut spec.options),
            BTreeSet::new(),
        );
        let options = map.parse::<DeliveryOptions>();
        spec.options = map.into_unused();
        let options = options.map_err(|reason| spec.error(reason))?;
        let at_least_one = |key: &str, value: Option<usize>| match value {
            Some(0) => Err(spec.error(format!("option `{key}` must be at least 1"))),
            other => Ok(other),
        };
        settings.schema = options.schema.map(|Parsed(schema)| schema);
        settings.batch_max_events = at_least_one("batch_max_events", options.batch_max_events)?;
        settings.batch_max_bytes = at_least_one(
            "batch_max_bytes",
            options.batch_max_bytes.map(|Size(bytes)| bytes),
        )?;
        settings.linger = options.linger.map(|HumanDuration(linger)| linger);
        settings.concurrency = at_least_one("concurrency", options.concurrency)?;
        settings.start = options
            .start
            .map_or_else(StartAt::default, |Parsed(start)| start);
        let retry = &mut settings.retry;
        if let Some(raw) = options.retry_max_attempts {
            retry.max_attempts = parse_max_attempts(&raw)
                .map_err(|err| spec.error(format!("option `retry_max_attempts`: {err}")))?;
        }
        if let Some(raw) = options.retry_max_age {
            retry.max_age = parse_max_age(&raw)
                .map_err(|err| spec.error(format!("option `retry_max_age`: {err}")))?;
        }
        if let Some(HumanDuration(backoff)) = options.retry_initial_backoff {
            retry.initial_backoff = backoff;
        }
        if let Some(HumanDuration(backoff)) = options.retry_max_backoff {
            retry.max_backoff = backoff;
        }
        settings.export = take_export(spec, defaults)?;
        settings.filter = take_filter(spec)?;
        Ok(settings)
    }

    /// The limits batches are cut by: the target's, narrowed by these settings.
    pub fn effective_limits(&self, target: BatchLimits) -> BatchLimits {
        let max_items = self
            .batch_max_events
            .map_or(target.max_items, |max| max.min(target.max_items))
            .max(1);
        let max_bytes = self
            .batch_max_bytes
            .map_or(target.max_bytes, |max| max.min(target.max_bytes))
            .max(1);
        BatchLimits {
            max_items,
            max_bytes,
            max_item_bytes: target.max_item_bytes.min(max_bytes),
            per_item_overhead: target.per_item_overhead,
            linger: self.linger.unwrap_or(target.linger),
        }
    }

    /// Batches in flight at once: `concurrency`, else the destination type's default.
    pub fn effective_concurrency(&self, kind: &str) -> usize {
        self.concurrency
            .unwrap_or_else(|| registry::default_concurrency(kind))
    }
}

/// Hand the remaining options to the schema options (`project`, `expand_summaries`,
/// `mparticle_*`); keep what they do not recognise.
fn take_export(
    spec: &mut DestinationSpec,
    defaults: &DeliveryDefaults,
) -> Result<ExportOptions, DestError> {
    let options = std::mem::take(&mut spec.options);
    let params: Vec<(&str, &str)> = options
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let (mut export, leftovers) =
        ExportOptions::from_query(&params).map_err(|err| spec.error(err))?;
    if export.project.is_empty() {
        export.project = defaults.project.clone();
    }
    spec.options = leftovers
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Ok(export)
}

/// Hand the remaining options to the event filter; keep what it does not recognise.
fn take_filter(spec: &mut DestinationSpec) -> Result<FilterConfig, DestError> {
    let options = std::mem::take(&mut spec.options);
    let params: Vec<(&str, &str)> = options
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let (config, leftovers) = FilterConfig::from_query(&params).map_err(|err| spec.error(err))?;
    spec.options = leftovers
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Ok(config)
}

/// A configured destination ready for the engine.
#[derive(Debug, Clone)]
pub struct ConfiguredDestination {
    pub settings: DeliverySettings,
    pub destination: Arc<dyn Destination>,
}

/// Take each spec's `name` option (or derive one) and check that names are unique and
/// usable as file names. Returns one name per spec, in order.
pub fn assign_names(specs: &mut [DestinationSpec]) -> Result<Vec<String>, DestError> {
    let explicit: Vec<Option<String>> = specs.iter_mut().map(|spec| spec.take("name")).collect();
    let mut taken = HashSet::new();
    for (spec, name) in specs.iter().zip(&explicit) {
        if let Some(name) = name {
            validate_name(name).map_err(|reason| spec.error(format!("option `name`: {reason}")))?;
            if !taken.insert(name.clone()) {
                return Err(spec.error(format!(
                    "option `name`: `{name}` is used by another destination; names must be unique"
                )));
            }
        }
    }
    let mut names = Vec::with_capacity(specs.len());
    for (spec, name) in specs.iter().zip(explicit) {
        let name = match name {
            Some(name) => name,
            None => {
                let base = if validate_name(&spec.scheme).is_ok() {
                    spec.scheme.clone()
                } else {
                    "dest".to_string()
                };
                let mut candidate = base.clone();
                let mut index = 2;
                while taken.contains(&candidate) {
                    candidate = format!("{base}-{index}");
                    index += 1;
                }
                taken.insert(candidate.clone());
                candidate
            }
        };
        names.push(name);
    }
    Ok(names)
}

/// Names become file names (cursor, dead letters, batch ids): 1–64 of `[A-Za-z0-9_-]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("`{name}` must be 1 to 64 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "`{name}` may only contain ASCII letters, digits, `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(urls: &[&str]) -> Vec<DestinationSpec> {
        urls.iter()
            .map(|u| DestinationSpec::parse(u).unwrap())
            .collect()
    }

    #[test]
    fn default_names_are_stable_when_appending() {
        let mut s = specs(&["file:///a", "log:", "file:///b", "file:///c?name=file-2"]);
        let names = assign_names(&mut s).unwrap();
        assert_eq!(names, vec!["file", "log", "file-3", "file-2"]);
        assert!(s.iter().all(|spec| !spec.options.contains_key("name")));
    }

    #[test]
    fn duplicate_and_bad_names_are_refused() {
        let mut s = specs(&["file:///a?name=x", "log:?name=x"]);
        let err = assign_names(&mut s).unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("unique"), "{err}");
        let mut s = specs(&["file:///a?name=../etc"]);
        let err = assign_names(&mut s).unwrap_err().to_string();
        assert!(err.contains("name"), "{err}");
    }

    #[test]
    fn limits_are_narrowed_never_widened() {
        let target = BatchLimits {
            max_items: 500,
            max_bytes: 5_000_000,
            max_item_bytes: 1_000_000,
            per_item_overhead: 10,
            linger: Duration::from_millis(200),
        };
        let mut settings = DeliverySettings::named("k", &DeliveryDefaults::default());
        settings.batch_max_events = Some(10_000);
        settings.batch_max_bytes = Some(100_000);
        settings.linger = Some(Duration::from_secs(2));
        let limits = settings.effective_limits(target);
        assert_eq!(limits.max_items, 500);
        assert_eq!(limits.max_bytes, 100_000);
        assert_eq!(limits.max_item_bytes, 100_000);
        assert_eq!(limits.per_item_overhead, 10);
        assert_eq!(limits.linger, Duration::from_secs(2));
    }

    #[test]
    fn take_from_consumes_delivery_schema_and_filter_keys_and_leaves_the_rest() {
        let mut spec = DestinationSpec::parse(
            "kinesis://s?schema=segment&batch_max_events=100&batch_max_bytes=1MiB&linger=2s\
             &concurrency=3&retry_max_attempts=unlimited&retry_max_age=1h\
             &retry_initial_backoff=1s&retry_max_backoff=1m&project=acme&kinds=feature,custom\
             &region=us-east-1",
        )
        .unwrap();
        let defaults = DeliveryDefaults::default();
        let settings = DeliverySettings::take_from(&mut spec, "k".into(), &defaults).unwrap();
        assert_eq!(settings.name, "k");
        assert_eq!(settings.schema, Some(Schema::Segment));
        assert_eq!(settings.batch_max_events, Some(100));
        assert_eq!(settings.batch_max_bytes, Some(1 << 20));
        assert_eq!(settings.linger, Some(Duration::from_secs(2)));
        assert_eq!(settings.concurrency, Some(3));
        assert_eq!(settings.retry.max_attempts, None);
        assert_eq!(settings.retry.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(settings.retry.initial_backoff, Duration::from_secs(1));
        assert_eq!(settings.retry.max_backoff, Duration::from_secs(60));
        assert_eq!(settings.export.project, "acme");
        assert_ne!(settings.filter, FilterConfig::default());
        let left: Vec<&str> = spec.options.keys().map(String::as_str).collect();
        assert_eq!(left, vec!["region"]);
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let mut spec = DestinationSpec::parse("log:").unwrap();
        let defaults = DeliveryDefaults {
            retry: RetryPolicy {
                max_attempts: Some(9),
                ..RetryPolicy::default()
            },
            project: "proj".into(),
            ..DeliveryDefaults::default()
        };
        let settings = DeliverySettings::take_from(&mut spec, "log".into(), &defaults).unwrap();
        assert_eq!(settings.retry.max_attempts, Some(9));
        assert_eq!(settings.export.project, "proj");
        assert_eq!(settings.schema, None);
        assert_eq!(settings.effective_concurrency("log"), 1);
    }

    #[test]
    fn bad_values_name_the_option() {
        for (url, needle) in [
            ("log:?schema=xml", "schema"),
            ("log:?batch_max_events=0", "batch_max_events"),
            ("log:?batch_max_bytes=lots", "batch_max_bytes"),
            ("log:?linger=soon", "linger"),
            ("log:?concurrency=-1", "concurrency"),
            ("log:?retry_max_attempts=many", "retry_max_attempts"),
            ("log:?retry_max_age=forever", "retry_max_age"),
            ("log:?sample_rate=2", "sample_rate"),
        ] {
            let mut spec = DestinationSpec::parse(url).unwrap();
            let err =
                DeliverySettings::take_from(&mut spec, "x".into(), &DeliveryDefaults::default())
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn concurrency_defaults_come_from_the_destination_type() {
        let settings = DeliverySettings::named("x", &DeliveryDefaults::default());
        assert_eq!(settings.effective_concurrency("log"), 1);
        assert_eq!(settings.effective_concurrency("file"), 2);
        assert_eq!(settings.effective_concurrency("kinesis"), 4);
    }
}
