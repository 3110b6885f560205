//! `gofeatureflag`: go-feature-flag exporter events (`exporter.FeatureEvent`,
//! `exporter.TrackingEvent`), and the webhook envelope `{meta, events}`.
//!
//! Feature event fields, in go-feature-flag's order: `kind`, `contextKind` (`user` /
//! `anonymousUser`), `userKey`, `creationDate` (Unix **seconds**), `key`, `variation` (a
//! variation *name*), `value`, `default` (**boolean**: the fallback was served), `version`
//! (string), `source`, `metadata` (when any).
//! Tracking event fields: `kind: "tracking"`, `contextKind`, `userKey`, `creationDate`
//! (seconds), `key`, `source`, `evaluationContext`, `trackingEventDetails`.
//!
//! * Events that arrived through the go-feature-flag collector pass through with every field
//!   in the order sent (unknown fields kept), normalised like the collector does: missing
//!   `kind` → `feature`, `creationDate` in seconds, empty `source` → `PROVIDER_CACHE`, request
//!   `meta` replaces `metadata`.
//! * LaunchDarkly `feature`/`debug` events become feature events: `variation` =
//!   `variationName`, else the variation index as a string, else `SdkDefault` when the
//!   fallback was served; `default` = fallback served; `version` = flag version as a string;
//!   `source` = `INPROCESS` (LaunchDarkly server SDKs evaluate in process).
//! * LaunchDarkly `custom`/`click`/`pageview` events become tracking events:
//!   `evaluationContext` = `{"targetingKey": <context key>}` plus the primary context's
//!   attributes (except `key`, `kind`, `_meta`); `trackingEventDetails` = `value`
//!   (`metricValue`) + `data`'s fields (or `data` when not an object) / `url`, `selector`.
//! * Other kinds produce no row: go-feature-flag has no model for them.

use super::super::decode::Origin;
use super::super::json::{self, ObjectWriter};
use super::fields;
use super::Row;

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    out.clear();
    let written = match row.event.origin {
        Origin::GoFeatureFlag => pass_through(row, out),
        Origin::LaunchDarkly => match row.event.kind() {
            "feature" | "debug" => from_ld_evaluation(row, out),
            "custom" | "click" | "pageview" => from_ld_metric(row, out),
            _ => false,
        },
    };
    if written {
        emit(out);
    }
}

fn seconds(row: &Row<'_, '_>) -> u64 {
    fields::timestamp_ms(row.event, row.ctx.received_at_ms) / 1000
}

fn pass_through(row: &Row<'_, '_>, out: &mut Vec<u8>) -> bool {
    write_goff_event(row, out, TimeUnit::Seconds, None);
    true
}

/// Unit of `creationDate` when re-writing a go-feature-flag event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeUnit {
    Seconds,
    Milliseconds,
}

/// A go-feature-flag event with every field in the order sent, normalised the way the
/// collector does (`kind` defaults to `feature` and comes first when missing, `creationDate`
/// in `unit`, empty or missing `source` → `PROVIDER_CACHE`, request `meta` replaces
/// `metadata`), plus `id` when given (the `launchdarkly` envelope; an inbound `id` is replaced).
pub(super) fn write_goff_event(
    row: &Row<'_, '_>,
    out: &mut Vec<u8>,
    unit: TimeUnit,
    id: Option<&str>,
) {
    let event = row.event;
    let nodes = event.nodes();
    let mut object = ObjectWriter::new(out);
    if event.field("kind").is_none() {
        object.str("kind", event.kind());
    }
    let (mut wrote_source, mut wrote_metadata) = (false, false);
    for (name, value) in json::object_iter(nodes, event.node) {
        match name {
            "id" if id.is_some() => {}
            "kind" => object.str(name, event.kind()),
            "creationDate" => match (unit, event.creation_date_ms) {
                (_, None) => object.value(name, nodes, Some(value)),
                (TimeUnit::Seconds, Some(ms)) => object.u64(name, ms / 1000),
                (TimeUnit::Milliseconds, Some(ms)) => object.u64(name, ms),
            },
            "source" => {
                let source = json::as_str(nodes, value).filter(|s| !s.is_empty());
                object.str(name, source.unwrap_or("PROVIDER_CACHE"));
                wrote_source = true;
            }
            "metadata" if event.goff_meta.is_some() => {
                object.value(name, nodes, event.goff_meta);
                wrote_metadata = true;
            }
            _ => object.value(name, nodes, Some(value)),
        }
    }
    if !wrote_source {
        object.str("source", "PROVIDER_CACHE");
    }
    if !wrote_metadata && event.goff_meta.is_some() {
        object.value("metadata", nodes, event.goff_meta);
    }
    if let Some(id) = id {
        object.str("id", id);
    }
    object.finish();
}

fn context_kind(row: &Row<'_, '_>) -> &'static str {
    if fields::primary_anonymous(row.event) {
        "anonymousUser"
    } else {
        "user"
    }
}

fn from_ld_evaluation(row: &Row<'_, '_>, out: &mut Vec<u8>) -> bool {
    let event = row.event;
    let nodes = event.nodes();
    let e = fields::evaluation(event);
    let mut object = ObjectWriter::new(out);
    object.str("kind", "feature");
    object.str("contextKind", context_kind(row));
    object.str("userKey", event.context_key().unwrap_or(""));
    object.u64("creationDate", seconds(row));
    object.str("key", event.key().unwrap_or(""));
    match (e.variation_name, e.variation_index) {
        (Some(name), _) => object.str("variation", name),
        (None, Some(index)) => object.str("variation", itoa::Buffer::new().format(index)),
        (None, None) => object.str("variation", "SdkDefault"),
    }
    object.value("value", nodes, e.value);
    object.bool("default", e.used_default);
    let version = object.key("version");
    version.push(b'"');
    if let Some(v) = e.version {
        json::write_value_as_string_content(version, nodes, v);
    }
    version.push(b'"');
    object.str("source", "INPROCESS");
    object.finish();
    true
}

fn from_ld_metric(row: &Row<'_, '_>, out: &mut Vec<u8>) -> bool {
    let event = row.event;
    let nodes = event.nodes();
    let user_key = event.context_key().unwrap_or("");
    let mut object = ObjectWriter::new(out);
    object.str("kind", "tracking");
    object.str("contextKind", context_kind(row));
    object.str("userKey", user_key);
    object.u64("creationDate", seconds(row));
    object.str("key", event.key().unwrap_or(""));
    object.str("source", "INPROCESS");
    {
        let mut ctx = ObjectWriter::new(object.key("evaluationContext"));
        ctx.str("targetingKey", user_key);
        let mut attributes = None;
        event.for_each_context(|c| {
            if attributes.is_none() && Some(c.key) == event.context_key() {
                attributes = c.attributes;
            }
        });
        if let Some(attrs) = attributes {
            for (name, value) in json::object_iter(nodes, attrs) {
                if !matches!(name, "key" | "kind" | "_meta" | "targetingKey") {
                    ctx.value(name, nodes, Some(value));
                }
            }
        }
        ctx.finish();
    }
    let mut details = ObjectWriter::new(object.key("trackingEventDetails"));
    match event.kind() {
        "custom" => {
            details.opt_value("value", nodes, event.field("metricValue"));
            if let Some(data) = event.field("data") {
                if json::is_object(nodes, data) {
                    for (name, value) in json::object_iter(nodes, data) {
                        if name != "value" {
                            details.value(name, nodes, Some(value));
                        }
                    }
                } else if !json::is_null(nodes, data) {
                    details.value("data", nodes, Some(data));
                }
            }
        }
        _ => {
            details.opt_value("url", nodes, event.field("url"));
            details.opt_value("selector", nodes, event.field("selector"));
        }
    }
    details.finish();
    object.finish();
    true
}

/// Write the go-feature-flag webhook body `{"meta":{…},"events":[…]}` from already mapped
/// `gofeatureflag` rows. `meta` is written in the order given (go-feature-flag adds
/// `hostname`; pass it first if you want it).
pub fn write_webhook_body<'r>(
    meta: &[(&str, &str)],
    rows: impl IntoIterator<Item = &'r [u8]>,
    out: &mut Vec<u8>,
) {
    let mut body = ObjectWriter::new(out);
    let mut meta_obj = ObjectWriter::new(body.key("meta"));
    for (key, value) in meta {
        meta_obj.str(key, value);
    }
    meta_obj.finish();
    let events = body.key("events");
    events.push(b'[');
    for (n, row) in rows.into_iter().enumerate() {
        if n > 0 {
            events.push(b',');
        }
        events.extend_from_slice(row);
    }
    events.push(b']');
    body.finish();
}
