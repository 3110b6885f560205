//! Per-destination routing filters.
//!
//! A destination sees an event only if *every* configured condition holds. Each condition
//! has a default that lets everything through except what LaunchDarkly's Data Export also
//! withholds by default (`index` and `summary` events).
//!
//! | option | query form | meaning |
//! |---|---|---|
//! | `kinds` | `kinds=feature,custom` | event kinds to send; `default` = every kind except `index`, `summary` (and `diagnostic`); `all`/`*` = everything. Unknown kinds are part of `default`, so they pass through unless a list excludes them |
//! | `environments` | `environments=prod*,staging` | environment-name globs |
//! | `flags` | `flags=checkout-*` | flag-key globs for flag evaluations (`feature`, `debug`); the per-flag "send detailed events" switch |
//! | `exclude_flags` | `exclude_flags=internal-*` | flag-key globs to withhold (wins over `flags`) |
//! | `experiment_only` | `experiment_only=true` | flag evaluations only when `reason.inExperiment` is true (other kinds unaffected) |
//! | `context_kinds` | `context_kinds=user,org` | events with at least one context of these kinds (events without any context are withheld) |
//! | `metrics` | `metrics=purchase,checkout-*` | metric/event-key globs for `custom`, `click`, `pageview`, `tracking` |
//! | `sample_rate` | `sample_rate=0.25` | keep this fraction, chosen deterministically by context key |
//!
//! As in LaunchDarkly, an evaluation that is part of an experiment (`reason.inExperiment`) is
//! exported even when its flag is not selected by `flags`/`exclude_flags`: experiment
//! exposures must never be lost to a per-flag switch.
//!
//! Sampling hashes the context key (XXH3 with a fixed seed): the same context is always in or
//! out, across events, restarts and instances, so per-context funnels stay complete. Events
//! without a context key are sampled by their stable event identity instead.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::{Event, RecordContext};

/// Per-destination routing filter settings (TOML table or `--dest` query parameters).
///
/// List fields accept a TOML array or one comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Event kinds to send; `None` = the default set (everything but `index`/`summary`).
    #[serde(deserialize_with = "de::opt_list")]
    pub kinds: Option<Vec<String>>,
    /// Environment-name globs; empty = all.
    #[serde(deserialize_with = "de::list")]
    pub environments: Vec<String>,
    /// Flag-key globs for flag evaluations; empty = all flags.
    #[serde(deserialize_with = "de::list")]
    pub flags: Vec<String>,
    /// Flag-key globs to withhold.
    #[serde(deserialize_with = "de::list")]
    pub exclude_flags: Vec<String>,
    /// Only flag evaluations with `reason.inExperiment: true`.
    #[serde(deserialize_with = "de::boolean")]
    pub experiment_only: bool,
    /// Context kinds; empty = all.
    #[serde(deserialize_with = "de::list")]
    pub context_kinds: Vec<String>,
    /// Metric / event-key globs for `custom`, `click`, `pageview`, `tracking`; empty = all.
    #[serde(deserialize_with = "de::list")]
    pub metrics: Vec<String>,
    /// Fraction of contexts to keep (0.0–1.0); `None` = keep all.
    #[serde(deserialize_with = "de::opt_fraction")]
    pub sample_rate: Option<f64>,
}

/// Query-parameter names [`FilterConfig::from_query`] consumes.
pub const FILTER_PARAMS: &[&str] = &[
    "kinds",
    "environments",
    "flags",
    "exclude_flags",
    "experiment_only",
    "context_kinds",
    "metrics",
    "sample_rate",
];

/// Kinds withheld by the default kind set (LaunchDarkly exports them only on request;
/// diagnostics are never exported).
pub const KINDS_OFF_BY_DEFAULT: &[&str] = &["index", "summary", "diagnostic"];

/// Event kinds a `kinds` filter may name: LaunchDarkly's (server, client and mobile SDKs) and
/// go-feature-flag's `tracking`.
pub const KNOWN_KINDS: &[&str] = &[
    "feature",
    "debug",
    "custom",
    "identify",
    "index",
    "summary",
    "click",
    "pageview",
    "alias",
    "migration_op",
    "tracking",
    "diagnostic",
];

/// Kinds whose `key` is a flag key.
fn is_flag_evaluation(kind: &str) -> bool {
    matches!(kind, "feature" | "debug")
}

/// Kinds whose `key` is a metric / event key.
fn is_metric_event(kind: &str) -> bool {
    matches!(kind, "custom" | "click" | "pageview" | "tracking")
}

impl FilterConfig {
    /// Parse the filter-related query parameters of a `--dest` URL; returns the parameters it
    /// did not recognise so the destination can use or reject them.
    #[allow(clippy::type_complexity)] // the contract signature shared with other layers
    pub fn from_query<'q>(
        params: &[(&'q str, &'q str)],
    ) -> Result<(Self, Vec<(&'q str, &'q str)>), String> {
        let mut config = FilterConfig::default();
        let mut rest = Vec::new();
        for &(name, value) in params {
            match name {
                "kinds" => config.kinds = Some(split_list(value)),
                "environments" => config.environments = split_list(value),
                "flags" => config.flags = split_list(value),
                "exclude_flags" => config.exclude_flags = split_list(value),
                "experiment_only" => {
                    config.experiment_only = parse_bool(value).ok_or_else(|| {
                        format!("`experiment_only`: expected true or false, got `{value}`")
                    })?
                }
                "context_kinds" => config.context_kinds = split_list(value),
                "metrics" => config.metrics = split_list(value),
                "sample_rate" => {
                    config.sample_rate =
                        Some(parse_fraction(value).map_err(|e| format!("`sample_rate`: {e}"))?)
                }
                _ => rest.push((name, value)),
            }
        }
        // Validate globs and values now so the error names the parameter at startup.
        Filter::new(&config)?;
        Ok((config, rest))
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_fraction(value: &str) -> Result<f64, String> {
    let trimmed = value.trim();
    let fraction = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => trimmed.parse::<f64>(),
    }
    .map_err(|_| format!("expected a fraction like 0.25 or 25%, got `{value}`"))?;
    check_fraction(fraction)
}

fn check_fraction(fraction: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&fraction) {
        Ok(fraction)
    } else {
        Err(format!("must be between 0 and 1, got {fraction}"))
    }
}

/// Which kinds pass.
#[derive(Debug, Clone)]
enum KindSet {
    /// Everything except [`KINDS_OFF_BY_DEFAULT`], plus `extra` (e.g. `default,index`).
    Default {
        extra: Vec<String>,
    },
    All,
    Only(Vec<String>),
}

impl KindSet {
    fn new(kinds: Option<&[String]>) -> Result<Self, String> {
        let Some(kinds) = kinds else {
            return Ok(KindSet::Default { extra: Vec::new() });
        };
        if kinds.is_empty() {
            return Err("`kinds` is empty; leave it out for the default set".to_string());
        }
        if kinds.iter().any(|k| k == "all" || k == "*") {
            return Ok(KindSet::All);
        }
        for kind in kinds {
            // A typo would silently export nothing of that kind: only known names are listed
            // (unknown kinds an SDK sends still pass `default` and `all`).
            if kind != "default" && !KNOWN_KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "`kinds`: `{}` is not a known event kind; use a comma-separated list of {}, \
                     or `default` or `all`",
                    kind.escape_debug(),
                    KNOWN_KINDS.join(", ")
                ));
            }
        }
        if kinds.iter().any(|k| k == "default") {
            let extra = kinds.iter().filter(|k| *k != "default").cloned().collect();
            return Ok(KindSet::Default { extra });
        }
        Ok(KindSet::Only(kinds.to_vec()))
    }

    #[inline]
    fn contains(&self, kind: &str) -> bool {
        match self {
            KindSet::All => true,
            KindSet::Default { extra } => {
                !KINDS_OFF_BY_DEFAULT.contains(&kind) || extra.iter().any(|k| k == kind)
            }
            KindSet::Only(kinds) => kinds.iter().any(|k| k == kind),
        }
    }
}

fn glob_set(option: &str, patterns: &[String]) -> Result<Option<GlobSet>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob =
            Glob::new(pattern).map_err(|e| format!("`{option}`: bad pattern `{pattern}`: {e}"))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("`{option}`: {e}"))
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    kinds: KindSet,
    environments: Option<GlobSet>,
    flags: Option<GlobSet>,
    exclude_flags: Option<GlobSet>,
    experiment_only: bool,
    context_kinds: Vec<String>,
    metrics: Option<GlobSet>,
    /// Keep an event when its sampling hash is below this (`None` = keep all).
    sample_below: Option<u64>,
}

const SAMPLE_SEED: u64 = 0x666c_6167_7374_726d; // "flagstrm"

impl Filter {
    pub fn new(config: &FilterConfig) -> Result<Self, String> {
        let sample_below = match config.sample_rate {
            None => None,
            Some(rate) => {
                let rate = check_fraction(rate).map_err(|e| format!("`sample_rate`: {e}"))?;
                // rate 1.0 keeps everything: u64::MAX as threshold with `<=` below.
                Some((rate * u64::MAX as f64) as u64)
            }
        };
        Ok(Filter {
            kinds: KindSet::new(config.kinds.as_deref())?,
            environments: glob_set("environments", &config.environments)?,
            flags: glob_set("flags", &config.flags)?,
            exclude_flags: glob_set("exclude_flags", &config.exclude_flags)?,
            experiment_only: config.experiment_only,
            context_kinds: config.context_kinds.clone(),
            metrics: glob_set("metrics", &config.metrics)?,
            sample_below,
        })
    }

    /// Does this destination want the event?
    pub fn matches(&self, ctx: &RecordContext<'_>, event: &Event<'_>) -> bool {
        let kind = event.kind();
        if !self.kinds.contains(kind) {
            return false;
        }
        if let Some(envs) = &self.environments {
            if !envs.is_match(ctx.environment) {
                return false;
            }
        }
        if is_flag_evaluation(kind) && !self.flag_selected(event) {
            return false;
        }
        if is_metric_event(kind) {
            if let Some(metrics) = &self.metrics {
                if !event.key().is_some_and(|k| metrics.is_match(k)) {
                    return false;
                }
            }
        }
        if !self.context_kinds.is_empty() {
            let mut any = false;
            event.for_each_context(|c| any |= self.context_kinds.iter().any(|k| k == c.kind));
            if !any {
                return false;
            }
        }
        if let Some(below) = self.sample_below {
            if self.sample_hash(ctx, event) > below {
                return false;
            }
        }
        true
    }

    fn flag_selected(&self, event: &Event<'_>) -> bool {
        if event.in_experiment() {
            return true;
        }
        if self.experiment_only {
            return false;
        }
        let key = event.key().unwrap_or("");
        if let Some(include) = &self.flags {
            if !include.is_match(key) {
                return false;
            }
        }
        if let Some(exclude) = &self.exclude_flags {
            if exclude.is_match(key) {
                return false;
            }
        }
        true
    }

    fn sample_hash(&self, ctx: &RecordContext<'_>, event: &Event<'_>) -> u64 {
        match event.context_key() {
            Some(key) => xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), SAMPLE_SEED),
            None => super::id::id_hash(ctx, event.index()) as u64,
        }
    }
}

/// Lenient serde helpers: TOML arrays or comma strings, booleans or "true", numbers or "25%".
mod de {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
    }

    pub(super) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match ListOrString::deserialize(d)? {
            ListOrString::List(items) => items,
            ListOrString::Text(text) => super::split_list(&text),
        })
    }

    pub(super) fn opt_list<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<String>>, D::Error> {
        list(d).map(Some)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum BoolOrString {
        Bool(bool),
        Text(String),
    }

    pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match BoolOrString::deserialize(d)? {
            BoolOrString::Bool(b) => Ok(b),
            BoolOrString::Text(t) => super::parse_bool(&t).ok_or_else(|| {
                serde::de::Error::custom(format!("expected true or false, got `{t}`"))
            }),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(f64),
        Text(String),
    }

    pub(super) fn opt_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let fraction = match NumberOrString::deserialize(d)? {
            NumberOrString::Number(n) => super::check_fraction(n),
            NumberOrString::Text(t) => super::parse_fraction(&t),
        };
        fraction.map(Some).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, InboundFormat};

    fn ctx(environment: &str) -> RecordContext<'_> {
        RecordContext {
            format: InboundFormat::LdBulk,
            environment,
            payload_id: Some("payload"),
            schema_version: Some(4),
            seq: 1,
            received_at_ms: 0,
            instance_id: None,
        }
    }

    const BODY: &[u8] = br#"[
      {"kind":"index","context":{"kind":"user","key":"u1"}},
      {"kind":"feature","key":"checkout-v2","context":{"kind":"user","key":"u1"}},
      {"kind":"feature","key":"internal-x","context":{"kind":"org","key":"o1"}},
      {"kind":"feature","key":"banner","context":{"kind":"user","key":"u2"},"reason":{"kind":"FALLTHROUGH","inExperiment":true}},
      {"kind":"custom","key":"purchase","contextKeys":{"user":"u1"}},
      {"kind":"custom","key":"pageload","contextKeys":{"user":"u3"}},
      {"kind":"summary","startDate":1,"endDate":2,"features":{}},
      {"kind":"brand-new","context":{"key":"u4"}}
    ]"#;

    /// Indices of BODY events the filter selects.
    fn selected(config: FilterConfig, environment: &str) -> Vec<u32> {
        let filter = Filter::new(&config).unwrap();
        let mut scratch = crate::event::DecodeScratch::default();
        let ctx = ctx(environment);
        let record = decode(&ctx, BODY, &mut scratch).unwrap();
        record
            .events
            .iter()
            .filter(|e| filter.matches(&ctx, e))
            .map(|e| e.index())
            .collect()
    }

    fn query(q: &[(&str, &str)]) -> FilterConfig {
        let (config, rest) = FilterConfig::from_query(q).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        config
    }

    #[test]
    fn default_withholds_index_and_summary_but_passes_unknown_kinds() {
        assert_eq!(
            selected(FilterConfig::default(), "prod"),
            [1, 2, 3, 4, 5, 7]
        );
    }

    #[test]
    fn kinds_lists() {
        assert_eq!(selected(query(&[("kinds", "custom")]), "prod"), [4, 5]);
        assert_eq!(
            selected(query(&[("kinds", "default,summary")]), "prod"),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            selected(query(&[("kinds", "all")]), "prod"),
            [0, 1, 2, 3, 4, 5, 6, 7]
        );
        assert!(FilterConfig::from_query(&[("kinds", "")]).is_err());
        let bogus = FilterConfig::from_query(&[("kinds", "feature,bogus")]).unwrap_err();
        assert!(
            bogus.contains("`kinds`") && bogus.contains("`bogus`") && bogus.contains("pageview"),
            "{bogus}"
        );
    }

    #[test]
    fn environments_flags_and_experiments() {
        assert_eq!(
            selected(query(&[("environments", "prod*")]), "production").len(),
            6
        );
        assert!(selected(query(&[("environments", "prod*")]), "staging").is_empty());
        // Flag include: non-matching flags go, experiments stay, other kinds unaffected.
        assert_eq!(
            selected(query(&[("flags", "checkout-*")]), "p"),
            [1, 3, 4, 5, 7]
        );
        assert_eq!(
            selected(query(&[("exclude_flags", "internal-*")]), "p"),
            [1, 3, 4, 5, 7]
        );
        assert_eq!(
            selected(query(&[("experiment_only", "true")]), "p"),
            [3, 4, 5, 7]
        );
    }

    #[test]
    fn metrics_and_context_kinds() {
        assert_eq!(
            selected(query(&[("metrics", "purch*")]), "p"),
            [1, 2, 3, 4, 7]
        );
        assert_eq!(selected(query(&[("context_kinds", "org")]), "p"), [2]);
    }

    #[test]
    fn sampling_is_deterministic_by_context_key() {
        assert!(selected(query(&[("sample_rate", "0")]), "p").is_empty());
        assert_eq!(selected(query(&[("sample_rate", "100%")]), "p").len(), 6);
        let half = query(&[("sample_rate", "0.5")]);
        let first = selected(half.clone(), "p");
        assert_eq!(first, selected(half, "p"));
        // Events 1 and 4 share context u1: always both in or both out.
        assert_eq!(first.contains(&1), first.contains(&4));
        assert!(FilterConfig::from_query(&[("sample_rate", "1.5")]).is_err());
    }

    #[test]
    fn from_query_returns_unknown_params_and_names_bad_ones() {
        let (config, rest) =
            FilterConfig::from_query(&[("kinds", "feature"), ("region", "us-east-1")]).unwrap();
        assert_eq!(config.kinds, Some(vec!["feature".to_string()]));
        assert_eq!(rest, [("region", "us-east-1")]);
        let err = FilterConfig::from_query(&[("flags", "a[")]).unwrap_err();
        assert!(err.contains("flags"), "{err}");
        let err = FilterConfig::from_query(&[("experiment_only", "maybe")]).unwrap_err();
        assert!(err.contains("experiment_only"), "{err}");
    }

    #[test]
    fn deserializes_from_toml_lists_or_strings() {
        let config: FilterConfig = toml::from_str(
            "kinds = [\"feature\", \"custom\"]\nflags = \"a-*,b\"\nexperiment_only = true\nsample_rate = 0.5\n",
        )
        .unwrap();
        assert_eq!(config.kinds.as_deref().map(<[String]>::len), Some(2));
        assert_eq!(config.flags, ["a-*", "b"]);
        assert!(config.experiment_only);
        assert_eq!(config.sample_rate, Some(0.5));
        assert!(toml::from_str::<FilterConfig>("kindz = []").is_err());
        assert!(toml::from_str::<FilterConfig>("sample_rate = 2.0").is_err());
    }
}
