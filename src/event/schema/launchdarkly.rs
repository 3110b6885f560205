//! `launchdarkly`: the raw streaming envelope of LaunchDarkly's Data Export.
//!
//! `{"project":…,"environment":…,"event":{…},"version":1}` where `event` is the inbound event
//! with every field passed through in the order sent (unknown kinds and fields included), plus:
//!
//! * `id` — the stable event id (an inbound `id` field is replaced, never duplicated);
//! * `contextKeys` — derived from `context` / legacy `user` / `userKey` when the event did not
//!   carry it, as LaunchDarkly's export schema v2 shows both (legacy events keep `user`);
//! * go-feature-flag events: normalised like the collector does (`kind` defaults to `feature`,
//!   empty `source` → `PROVIDER_CACHE`, request `meta` replaces `metadata`) and `creationDate`
//!   converted to milliseconds, LaunchDarkly's unit.

use super::super::decode::Origin;
use super::super::json::{self, ObjectWriter};
use super::gofeatureflag::{write_goff_event, TimeUnit};
use super::Row;

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    out.clear();
    let mut envelope = ObjectWriter::new(out);
    envelope.str("project", row.options.project());
    envelope.str("environment", row.ctx.environment);
    write_event(row, envelope.key("event"));
    envelope.u64("version", 1);
    envelope.finish();
    emit(out);
}

/// The pass-through event object with `id` (and derived `contextKeys`) added.
pub(super) fn write_event(row: &Row<'_, '_>, out: &mut Vec<u8>) {
    let event = row.event;
    if event.origin == Origin::GoFeatureFlag {
        write_goff_event(row, out, TimeUnit::Milliseconds, Some(row.id));
        return;
    }
    let nodes = event.nodes();
    let mut object = ObjectWriter::new(out);
    for (name, value) in json::object_iter(nodes, event.node) {
        if name != "id" {
            object.value(name, nodes, Some(value));
        }
    }
    object.str("id", row.id);
    if event.context_keys.is_none() {
        write_context_keys(row, &mut object);
    }
    object.finish();
}

/// `"contextKeys":{kind:key,…}` if the event refers to any context (one pass: the field is
/// opened at the first context).
fn write_context_keys(row: &Row<'_, '_>, object: &mut ObjectWriter<'_>) {
    let mut started = false;
    row.event.for_each_context(|c| {
        let out = if started {
            let out = object.buffer();
            out.push(b',');
            out
        } else {
            started = true;
            let out = object.key("contextKeys");
            out.push(b'{');
            out
        };
        json::write_str(out, c.kind);
        out.push(b':');
        json::write_str(out, c.key);
    });
    if started {
        object.buffer().push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use crate::event::{
        decode, event_id, map_event, ExportOptions, InboundFormat, RecordContext, Schema,
    };

    fn rows(format: InboundFormat, body: &[u8]) -> Vec<String> {
        let ctx = RecordContext {
            format,
            environment: "production",
            payload_id: Some("payload-1"),
            schema_version: Some(4),
            seq: 9,
            received_at_ms: 0,
            instance_id: None,
        };
        let options = ExportOptions {
            project: "p-123".into(),
            ..ExportOptions::default()
        };
        let mut scratch = crate::event::DecodeScratch::default();
        let mut buf = Vec::new();
        let record = decode(&ctx, body, &mut scratch).unwrap();
        let mut out = Vec::new();
        for event in &record.events {
            map_event(
                Schema::LaunchDarkly,
                &options,
                &ctx,
                event,
                &mut buf,
                &mut |row| out.push(String::from_utf8(row.to_vec()).unwrap()),
            )
            .unwrap();
            let id = event_id(&ctx, event.index());
            assert!(out.last().unwrap().contains(&format!("\"id\":\"{id}\"")));
        }
        out
    }

    fn without_id(row: &str) -> String {
        let start = row.find(",\"id\":\"").unwrap();
        format!("{}{}", &row[..start], &row[start + 44..])
    }

    #[test]
    fn wraps_events_and_passes_unknown_fields_through() {
        let out = rows(
            InboundFormat::LdBulk,
            br#"[{"kind":"feature","creationDate":1,"key":"f","value":"a\"b","default":null,"context":{"kind":"multi","user":{"key":"u1"},"org":{"key":"o1"}},"x-extra":[1.5,{"y":true}]},
                {"kind":"custom","id":"sdk-sent","key":"m","contextKeys":{"user":"u1"}},
                {"kind":"alias","key":"u2","contextKind":"user","previousKey":"anon","previousContextKind":"anonymousUser"}]"#,
        );
        assert_eq!(
            without_id(&out[0]),
            r#"{"project":"p-123","environment":"production","event":{"kind":"feature","creationDate":1,"key":"f","value":"a\"b","default":null,"context":{"kind":"multi","user":{"key":"u1"},"org":{"key":"o1"}},"x-extra":[1.5,{"y":true}],"contextKeys":{"user":"u1","org":"o1"}},"version":1}"#
        );
        // An inbound id is replaced, and existing contextKeys are not duplicated.
        assert_eq!(out[1].matches("\"id\"").count(), 1);
        assert_eq!(out[1].matches("contextKeys").count(), 1);
        assert!(!out[1].contains("sdk-sent"));
        // Legacy alias: no context, no derived contextKeys.
        assert!(!out[2].contains("contextKeys"), "{}", out[2]);
    }

    #[test]
    fn legacy_user_events_gain_context_keys() {
        let out = rows(
            InboundFormat::LdBulk,
            br#"[{"kind":"feature","key":"f","user":{"key":"u1","name":"Sandy"},"value":1}]"#,
        );
        assert!(
            out[0].ends_with(
                r#""user":{"key":"u1","name":"Sandy"},"value":1,"id":""#.trim_end_matches('"')
            ) || out[0].contains(r#""contextKeys":{"user":"u1"}"#),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains(r#""contextKeys":{"user":"u1"}"#),
            "{}",
            out[0]
        );
    }

    #[test]
    fn goff_events_get_ms_timestamps_and_request_meta() {
        let out = rows(
            InboundFormat::GoffCollector,
            br#"{"meta":{"env":"prod"},"events":[{"kind":"feature","userKey":"u1","creationDate":1717000000,"key":"f","metadata":{"old":1}}]}"#,
        );
        let row = without_id(&out[0]);
        assert_eq!(
            row,
            r#"{"project":"p-123","environment":"production","event":{"kind":"feature","userKey":"u1","creationDate":1717000000000,"key":"f","metadata":{"env":"prod"},"source":"PROVIDER_CACHE"},"version":1}"#
        );
    }
}
