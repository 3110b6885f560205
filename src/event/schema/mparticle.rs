//! `mparticle`: one mParticle server-to-server *batch* per event (the `/v2/bulkevents` body is
//! a JSON array of these), as LaunchDarkly's mParticle integration sends.
//!
//! Batch: `{"user_identities":{<identity type>:<context key>},"environment":…,"events":[…]}`;
//! the identity type (`customer_id` by default) and environment (`production` by default)
//! come from [`ExportOptions`](super::ExportOptions). Each event:
//!
//! | inbound kind | `event_type` | `custom_event_type` | `event_name` / `screen_name` | `custom_attributes` (all strings) |
//! |---|---|---|---|---|
//! | `feature` | `custom_event` | `other` | `Feature` | `value`, `flag_version`, `default`, `reason_kind`, `prerequisite_of`, `variation`, `variation_name`, `used_default` |
//! | `click` | `custom_event` | `navigation` | `Click` | `url`, `selector` |
//! | `custom` | `custom_event` | `other` | `Custom` | `metric_value` (when sent) |
//! | `tracking` (go-feature-flag) | `custom_event` | `other` | `Tracking` | `value` (when sent) |
//! | `pageview` | `screen_view` | — | URL without query/fragment | `url` |
//!
//! plus, always, `project`, `environment`, `version` (`"1"`) and `key`. Non-string values are
//! rendered as their compact JSON text (`true`, `12`, `{"a":1}`); absent or `null` values are
//! left out. `source_message_id` = the stable event id; `timestamp_unixtime_ms` = creation time.
//! Other kinds produce no row (mParticle's alias API is separate and not emulated).

use super::super::json::{self, Doc, ObjectWriter};
use super::fields;
use super::Row;

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let event = row.event;
    let (event_type, custom_type, name) = match event.kind() {
        "feature" => ("custom_event", Some("other"), "Feature"),
        "click" => ("custom_event", Some("navigation"), "Click"),
        "custom" => ("custom_event", Some("other"), "Custom"),
        "tracking" => ("custom_event", Some("other"), "Tracking"),
        "pageview" => ("screen_view", None, ""),
        _ => return,
    };
    let nodes = event.nodes();
    out.clear();
    let mut batch = ObjectWriter::new(out);
    {
        let mut identities = ObjectWriter::new(batch.key("user_identities"));
        if let Some(key) = event.context_key() {
            let identity = match row.options.mparticle_identity_type.as_str() {
                "" => "customer_id",
                other => other,
            };
            identities.str(identity, key);
        }
        identities.finish();
    }
    batch.str(
        "environment",
        match row.options.mparticle_environment.as_str() {
            "" => "production",
            other => other,
        },
    );
    let events = batch.key("events");
    events.push(b'[');
    let mut item = ObjectWriter::new(events);
    item.str("event_type", event_type);
    let mut data = ObjectWriter::new(item.key("data"));
    data.str("source_message_id", row.id);
    let url = fields::str_field(event, "url");
    if event_type == "screen_view" {
        let url = url.unwrap_or("");
        let end = url.find(['?', '#']).unwrap_or(url.len());
        data.str("screen_name", &url[..end]);
    } else {
        data.str("event_name", name);
    }
    data.u64(
        "timestamp_unixtime_ms",
        fields::timestamp_ms(event, row.ctx.received_at_ms),
    );
    if let Some(custom_type) = custom_type {
        data.str("custom_event_type", custom_type);
    }
    let mut attrs = ObjectWriter::new(data.key("custom_attributes"));
    attrs.str("project", row.options.project());
    attrs.str("environment", row.ctx.environment);
    attrs.str("version", "1");
    attrs.opt_str("key", event.key());
    match event.kind() {
        "feature" => {
            let e = fields::evaluation(event);
            attr(&mut attrs, "value", nodes, e.value);
            attr(&mut attrs, "flag_version", nodes, e.version);
            attr(&mut attrs, "default", nodes, e.default_value);
            attrs.opt_str("reason_kind", e.reason_kind);
            attrs.opt_str("prerequisite_of", e.prereq_of);
            if let Some(index) = e.variation_index {
                attrs.str("variation", itoa::Buffer::new().format(index));
            }
            attrs.opt_str("variation_name", e.variation_name);
            attrs.str(
                "used_default",
                if e.used_default { "true" } else { "false" },
            );
        }
        "click" => {
            attr(&mut attrs, "url", nodes, event.field("url"));
            attr(&mut attrs, "selector", nodes, event.field("selector"));
        }
        "pageview" => attr(&mut attrs, "url", nodes, event.field("url")),
        "custom" => attr(
            &mut attrs,
            "metric_value",
            nodes,
            event.field("metricValue"),
        ),
        "tracking" => {
            let details = event.field("trackingEventDetails");
            let value = details.and_then(|d| json::get(nodes, d, "value"));
            attr(&mut attrs, "value", nodes, value);
        }
        _ => {}
    }
    attrs.finish();
    data.finish();
    item.finish();
    events.push(b']');
    batch.finish();
    emit(out);
}

/// A string attribute from any JSON value; absent and `null` are left out.
fn attr(attrs: &mut ObjectWriter<'_>, name: &str, nodes: &Doc<'_>, idx: Option<usize>) {
    let Some(idx) = idx.filter(|&i| !json::is_null(nodes, i)) else {
        return;
    };
    let out = attrs.key(name);
    out.push(b'"');
    json::write_value_as_string_content(out, nodes, idx);
    out.push(b'"');
}
