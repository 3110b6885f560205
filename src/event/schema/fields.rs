//! Field extraction shared by the schemas that *re-shape* events (Segment, mParticle,
//! go-feature-flag, warehouse), with the normalisation rules in one place:
//!
//! * `default` — LaunchDarkly sends the application's fallback *value*; go-feature-flag sends a
//!   *boolean* "evaluation failed, fallback served". We keep both notions apart:
//!   [`Evaluation::default_value`] is the fallback value (LaunchDarkly only) and
//!   [`Evaluation::used_default`] is the boolean (go-feature-flag's field as sent; for
//!   LaunchDarkly true when the event has no `variation` or `reason.kind` is `ERROR`, which is
//!   exactly when the SDK served the fallback).
//! * variation — LaunchDarkly sends an index (`variation`) and sometimes an enriched
//!   `variationName`; go-feature-flag sends the variation *name* in `variation`.

use super::super::decode::Origin;
use super::super::json;
use super::super::Event;

/// One pass over a flag evaluation's fields.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Evaluation<'a> {
    pub(crate) value: Option<usize>,
    pub(crate) default_value: Option<usize>,
    pub(crate) used_default: bool,
    /// Flag version (LD: integer, GOFF: string) as sent.
    pub(crate) version: Option<usize>,
    pub(crate) variation_index: Option<u64>,
    pub(crate) variation_name: Option<&'a str>,
    pub(crate) reason: Option<usize>,
    pub(crate) reason_kind: Option<&'a str>,
    pub(crate) prereq_of: Option<&'a str>,
    pub(crate) sampling_ratio: Option<usize>,
    pub(crate) source: Option<&'a str>,
}

pub(crate) fn evaluation<'a>(event: &Event<'a>) -> Evaluation<'a> {
    let nodes = event.nodes();
    let mut e = Evaluation::default();
    let mut variation = None;
    let mut default = None;
    for (name, value) in json::object_iter(nodes, event.node) {
        match name {
            "value" => e.value = Some(value),
            "default" => default = Some(value),
            "version" => e.version = Some(value).filter(|&v| !json::is_null(nodes, v)),
            "variation" => variation = Some(value),
            "variationName" => e.variation_name = json::as_str(nodes, value),
            "reason" if json::is_object(nodes, value) => {
                e.reason = Some(value);
                e.reason_kind =
                    json::get(nodes, value, "kind").and_then(|k| json::as_str(nodes, k));
            }
            "prereqOf" => e.prereq_of = json::as_str(nodes, value),
            "samplingRatio" => e.sampling_ratio = Some(value),
            "source" => e.source = json::as_str(nodes, value).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    match event.origin {
        Origin::LaunchDarkly => {
            e.default_value = default;
            e.variation_index = variation.and_then(|v| json::as_u64(nodes, v));
            e.used_default = e.variation_index.is_none() || e.reason_kind == Some("ERROR");
        }
        Origin::GoFeatureFlag => {
            e.used_default = default
                .and_then(|d| json::as_bool(nodes, d))
                .unwrap_or(false);
            if e.variation_name.is_none() {
                e.variation_name = variation.and_then(|v| json::as_str(nodes, v));
            }
            if e.source.is_none() {
                e.source = Some("PROVIDER_CACHE");
            }
        }
    }
    e
}

/// Whether the first context the event refers to is anonymous (for the "primary" context).
pub(crate) fn primary_anonymous(event: &Event<'_>) -> bool {
    let mut anonymous = None;
    let key = event.context_key();
    event.for_each_context(|c| {
        if anonymous.is_none() && Some(c.key) == key {
            anonymous = Some(c.anonymous);
        }
    });
    anonymous.unwrap_or(false)
}

/// Best timestamp for an event: its creation date, else a summary's `endDate`, else the
/// time flagstream received it.
pub(crate) fn timestamp_ms(event: &Event<'_>, received_at_ms: u64) -> u64 {
    event
        .creation_date_ms()
        .or_else(|| {
            event
                .field("endDate")
                .and_then(|i| json::as_u64(event.nodes(), i))
        })
        .unwrap_or(received_at_ms)
}

/// A string field of the event.
pub(crate) fn str_field<'a>(event: &Event<'a>, name: &str) -> Option<&'a str> {
    let nodes: &json::Doc<'a> = event.nodes();
    json::get(nodes, event.node, name).and_then(|i| json::as_str(nodes, i))
}
