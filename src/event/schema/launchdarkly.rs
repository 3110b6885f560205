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

use super::super::decode::{Event, Origin};
use super::super::json::{self, ObjectWriter};
use super::gofeatureflag::{write_goff_event, TimeUnit};
use super::Row;

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    // The envelope's keys are written as literals: this runs once per delivered event, and
    // escaping checks on constant keys were a measurable part of it.
    out.clear();
    out.extend_from_slice(b"{\"project\":");
    json::write_str(out, row.options.project());
    out.extend_from_slice(b",\"environment\":");
    json::write_str(out, row.ctx.environment);
    out.extend_from_slice(b",\"event\":");
    write_event(row, out);
    out.extend_from_slice(b",\"version\":1}");
    emit(out);
}

/// The pass-through event object with `id` (and derived `contextKeys`) added.
pub(super) fn write_event(row: &Row<'_, '_>, out: &mut Vec<u8>) {
    let event = row.event;
    if event.origin == Origin::GoFeatureFlag {
        write_goff_event(row, out, TimeUnit::Milliseconds, Some(row.id));
        return;
    }
    let mut object = match event.verbatim {
        // Sent compact, without escapes or an `id`: the sent text is the rewrite.
        Some(text) => ObjectWriter::continuing(out, text),
        None => rewrite_fields(event, out),
    };
    object.plain_str("id", row.id);
    if event.context_keys.is_none() {
        write_context_keys(row, &mut object);
    }
    object.finish();
}

/// Write the event's fields from the tape, except an inbound `id`; the object stays open.
fn rewrite_fields<'o>(event: &Event<'_>, out: &'o mut Vec<u8>) -> ObjectWriter<'o> {
    let nodes = event.nodes();
    let mut object = ObjectWriter::new(out);
    for (name, value) in json::object_iter(nodes, event.node) {
        if name != "id" {
            object.value(name, nodes, Some(value));
        }
    }
    object
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

    mod verbatim {
        use proptest::prelude::*;

        use crate::event::{decode, map_event, ExportOptions, InboundFormat, RecordContext};
        use crate::event::{DecodeScratch, Schema, VerbatimText};

        /// One generated event: its text, and whether it must be copied verbatim.
        #[derive(Debug, Clone)]
        struct Element {
            text: String,
            verbatim: bool,
        }

        const NUMBERS: [&str; 12] = [
            "0",
            "-0",
            "7",
            "-12",
            "1.50",
            "1e3",
            "-0.0",
            "1E-2",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
            "1e400",
        ];
        const STRINGS: [(&str, bool); 8] = [
            ("\"plain\"", false),
            ("\"two words\"", false),
            ("\"\u{e9}t\u{e9} \u{1f600}\"", false),
            ("\"\"", false),
            ("\"q\\\"uote\"", true),
            ("\"a\\/b\"", true),
            ("\"\\u00e9\"", true),
            ("\"line\\nbreak\"", true),
        ];

        /// A JSON value as text, and whether it keeps its event from being copied as sent (an
        /// escape, or whitespace between tokens).
        fn value(depth: u32) -> BoxedStrategy<(String, bool)> {
            let leaf = prop_oneof![
                prop::sample::select(&NUMBERS[..]).prop_map(|n| (n.to_string(), false)),
                prop::sample::select(&STRINGS[..]).prop_map(|(s, e)| (s.to_string(), e)),
                prop::sample::select(&["true", "false", "null", "{}", "[]"][..])
                    .prop_map(|l| (l.to_string(), false)),
            ];
            if depth == 0 {
                return leaf.boxed();
            }
            let items = prop::collection::vec(value(depth - 1), 1..4);
            let members = prop::collection::vec(("[a-z]{1,3}", value(depth - 1)), 1..4);
            prop_oneof![
                2 => leaf,
                1 => (items, any::<bool>()).prop_map(|(items, spaced)| {
                    let spaced = spaced && items.len() > 1;
                    let rewritten = items.iter().any(|(_, r)| *r) || spaced;
                    let texts: Vec<_> = items.into_iter().map(|(t, _)| t).collect();
                    let separator = if spaced { " , " } else { "," };
                    (format!("[{}]", texts.join(separator)), rewritten)
                }),
                1 => (members, any::<bool>()).prop_map(|(members, spaced)| {
                    let rewritten = members.iter().any(|(_, (_, r))| *r) || spaced;
                    let colon = if spaced { ": " } else { ":" };
                    let texts: Vec<_> =
                        members.into_iter().map(|(k, (t, _))| format!("\"{k}\"{colon}{t}")).collect();
                    (format!("{{{}}}", texts.join(",")), rewritten)
                }),
            ]
            .boxed()
        }

        fn element() -> impl Strategy<Value = Element> {
            // Fields whose type the decoder checks get valid values; the others anything.
            let member = (
                prop::sample::select(&["id", "value", "data", "x"][..]),
                value(2),
            );
            let context = prop::sample::select(
                &[
                    "",
                    r#","context":{"kind":"user","key":"u1","name":"S"}"#,
                    r#","contextKeys":{"user":"u1"}"#,
                    r#","creationDate":1717000000000"#,
                ][..],
            );
            let shape = (prop::collection::vec(member, 0..5), context, any::<bool>());
            shape.prop_map(|(members, context, spaced)| {
                let rewritten = members.iter().any(|(_, (_, r))| *r);
                let has_id = members.iter().any(|(k, _)| *k == "id");
                let spaced = spaced && !members.is_empty();
                let separator = if spaced { ", " } else { "," };
                let mut fields = vec![format!("\"kind\":\"custom\",\"key\":\"m\"{context}")];
                fields.extend(
                    members
                        .into_iter()
                        .map(|(k, (t, _))| format!("\"{k}\":{t}")),
                );
                Element {
                    text: format!("{{{}}}", fields.join(separator)),
                    verbatim: !rewritten && !has_id && !spaced,
                }
            })
        }

        fn rows(events: &[crate::event::Event<'_>], ctx: &RecordContext<'_>) -> Vec<Vec<u8>> {
            let options = ExportOptions::default();
            let mut scratch = Vec::new();
            let mut out = Vec::new();
            for event in events {
                map_event(
                    Schema::LaunchDarkly,
                    &options,
                    ctx,
                    event,
                    &mut scratch,
                    &mut |r| out.push(r.to_vec()),
                )
                .unwrap();
            }
            out
        }

        proptest! {
            /// Copying an event as sent writes exactly what rewriting it from the tape writes,
            /// and every compact event without escapes or an `id` is copied.
            #[test]
            fn verbatim_events_are_their_rewrite(
                elements in prop::collection::vec(element(), 1..6),
                spaced_body in any::<bool>(),
            ) {
                // Whitespace between events does not matter, only inside them.
                let texts: Vec<_> = elements.iter().map(|e| e.text.as_str()).collect();
                let body = if spaced_body {
                    format!("[ {} ]", texts.join(" ,\n"))
                } else {
                    format!("[{}]", texts.join(","))
                };
                let ctx = RecordContext {
                    format: InboundFormat::LdBulk,
                    environment: "production",
                    payload_id: Some("payload-1"),
                    schema_version: Some(4),
                    seq: 1,
                    received_at_ms: 0,
                    instance_id: None,
                };
                // As the pipeline decodes (verbatim text, number texts skipped when every
                // event is verbatim), against a decode that only ever rewrites.
                let mut scratch = DecodeScratch::with_verbatim(VerbatimText::KeepWithoutNumberTexts);
                let record = decode(&ctx, body.as_bytes(), &mut scratch).unwrap();
                let mut plain_scratch = DecodeScratch::default();
                let plain = decode(&ctx, body.as_bytes(), &mut plain_scratch).unwrap();
                prop_assert_eq!(record.events.len(), elements.len());
                for (event, element) in record.events.iter().zip(&elements) {
                    let copied = event.verbatim.is_some();
                    prop_assert_eq!(copied, element.verbatim, "{}", element.text);
                }
                prop_assert!(plain.events.iter().all(|event| event.verbatim.is_none()));
                prop_assert_eq!(rows(&record.events, &ctx), rows(&plain.events, &ctx));
            }
        }
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
