//! `segment`: Segment HTTP Tracking API calls, as LaunchDarkly's Segment integration sends.
//!
//! | inbound kind | Segment `type` | `event` | extra `properties` |
//! |---|---|---|---|
//! | `feature` | `track` | `feature` | `value`, `flagVersion`, `reasonKind`, `prereqOf`, `default`, `variation`, `variationName`, `usedDefault` |
//! | `click` | `track` | `click` | `url`, `selector` |
//! | `custom` | `track` | `custom` | `metricValue`, `data`, `url` (when sent) |
//! | `tracking` (go-feature-flag) | `track` | `tracking` | `value`, `details` (`trackingEventDetails`) |
//! | `pageview` | `page` | — | `url` |
//! | `alias` (legacy) | `alias` | — | top-level `previousId` (= `previousKey`), `userId` (= `key`) |
//!
//! Every row: `userId` (context key; `anonymousId` = the key when that context is anonymous,
//! or the event id when the event has no context),
//! `messageId` = the stable event id (Segment deduplicates on it), `timestamp` and
//! `originalTimestamp` in ISO-8601 UTC with milliseconds, `integrations: {}`, and properties
//! `project`, `environment`, `eventId`, `key`, `version: 1`. `sentAt` is left to the sender.
//! Other kinds (`index`, `identify`, `summary`, `debug`, unknown) produce no row, as in
//! LaunchDarkly's integration.

use super::super::json::{self, ObjectWriter};
use super::fields::{self, Evaluation};
use super::time::write_iso8601_ms;
use super::Row;

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let event = row.event;
    let (call, name) = match event.kind() {
        "feature" => ("track", Some("feature")),
        "click" => ("track", Some("click")),
        "custom" => ("track", Some("custom")),
        "tracking" => ("track", Some("tracking")),
        "pageview" => ("page", None),
        "alias" => ("alias", None),
        _ => return,
    };
    out.clear();
    let mut call_obj = ObjectWriter::new(out);
    call_obj.str("type", call);
    if let Some(name) = name {
        call_obj.str("event", name);
    }
    if call == "alias" {
        call_obj.opt_str("previousId", fields::str_field(event, "previousKey"));
        call_obj.str("userId", event.key().unwrap_or(""));
    } else {
        match event.context_key() {
            Some(key) if is_anonymous(event, key) => call_obj.str("anonymousId", key),
            Some(key) => call_obj.str("userId", key),
            None => call_obj.str("anonymousId", row.id),
        }
    }
    call_obj.str("messageId", row.id);
    let ts = fields::timestamp_ms(event, row.ctx.received_at_ms);
    for key in ["timestamp", "originalTimestamp"] {
        let out = call_obj.key(key);
        out.push(b'"');
        write_iso8601_ms(out, ts);
        out.push(b'"');
    }
    if call != "alias" {
        let mut props = ObjectWriter::new(call_obj.key("properties"));
        props.str("project", row.options.project());
        props.str("environment", row.ctx.environment);
        props.str("eventId", row.id);
        props.opt_str("key", event.key());
        props.u64("version", 1);
        let nodes = event.nodes();
        match event.kind() {
            "feature" => feature_properties(&mut props, nodes, &fields::evaluation(event)),
            "click" => {
                props.opt_value("url", nodes, event.field("url"));
                props.opt_value("selector", nodes, event.field("selector"));
            }
            "pageview" => props.opt_value("url", nodes, event.field("url")),
            "custom" => {
                props.opt_value("metricValue", nodes, event.field("metricValue"));
                props.opt_value("data", nodes, event.field("data"));
                props.opt_value("url", nodes, event.field("url"));
            }
            "tracking" => {
                let details = event.field("trackingEventDetails");
                let value = details.and_then(|d| json::get(nodes, d, "value"));
                props.opt_value("value", nodes, value);
                props.opt_value("details", nodes, details);
            }
            _ => {}
        }
        props.finish();
    }
    call_obj.raw("integrations", b"{}");
    call_obj.finish();
    emit(out);
}

/// Is the context with `key` marked anonymous? (Segment wants those in `anonymousId`.)
fn is_anonymous(event: &super::super::Event<'_>, key: &str) -> bool {
    let mut anonymous = false;
    event.for_each_context(|context| anonymous |= context.key == key && context.anonymous);
    anonymous
}

fn feature_properties(props: &mut ObjectWriter<'_>, nodes: &json::Doc<'_>, e: &Evaluation<'_>) {
    props.value("value", nodes, e.value);
    props.opt_value("flagVersion", nodes, e.version);
    props.opt_str("reasonKind", e.reason_kind);
    props.opt_str("prereqOf", e.prereq_of);
    props.opt_value("default", nodes, e.default_value);
    if let Some(index) = e.variation_index {
        props.u64("variation", index);
    }
    props.opt_str("variationName", e.variation_name);
    props.bool("usedDefault", e.used_default);
}
