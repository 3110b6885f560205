//! Property tests for the event model: any valid inbound event maps to every schema without
//! panicking and into valid JSON; ids are stable; nothing panics on arbitrary bytes; unknown
//! fields survive the pass-through schema.

use flagstream::event::{
    decode, event_id, map_event, validate, DecodeScratch, ExportOptions, Filter, FilterConfig,
    InboundFormat, RecordContext, Schema,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const FORMATS: [InboundFormat; 6] = [
    InboundFormat::LdBulk,
    InboundFormat::LdMobile,
    InboundFormat::LdBrowser,
    InboundFormat::LdDiagnostic,
    InboundFormat::GoffCollector,
    InboundFormat::Generic,
];

fn ctx(format: InboundFormat, payload_id: Option<&str>) -> RecordContext<'_> {
    RecordContext {
        format,
        environment: "production",
        payload_id,
        schema_version: Some(4),
        seq: 77,
        received_at_ms: 1_717_000_000_000,
        instance_id: None,
    }
}

/// Arbitrary JSON values (modest depth), including escapes and non-ASCII text.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Exactly representable with a short decimal form, so text round trips are exact.
        (-1_000_000i64..1_000_000).prop_map(|n| Value::from(n as f64 / 8.0)),
        "[a-zé\"\\\\\n\t\u{1}\u{1F600} ]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn context_key() -> impl Strategy<Value = String> {
    "[a-z0-9\"é-]{1,10}"
}

/// The ways an LD event can name its context(s), including the legacy forms.
fn context_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop_oneof![
        (context_key(), any::<bool>()).prop_map(|(k, anon)| {
            let mut m = Map::new();
            m.insert(
                "context".into(),
                json!({"kind": "user", "key": k, "anonymous": anon}),
            );
            m
        }),
        (context_key(), context_key()).prop_map(|(u, o)| {
            let mut m = Map::new();
            m.insert(
                "context".into(),
                json!({"kind": "multi", "user": {"key": u}, "org": {"key": o, "name": "x"}}),
            );
            m
        }),
        context_key().prop_map(|k| {
            let mut m = Map::new();
            m.insert("contextKeys".into(), json!({"user": k}));
            m
        }),
        context_key().prop_map(|k| {
            let mut m = Map::new();
            m.insert("user".into(), json!({"key": k, "custom": {"a": 1}}));
            m
        }),
        context_key().prop_map(|k| {
            let mut m = Map::new();
            m.insert("userKey".into(), Value::String(k));
            m.insert("contextKind".into(), Value::String("anonymousUser".into()));
            m
        }),
        Just(Map::new()),
    ]
}

/// A structurally valid LaunchDarkly event of any kind (known or not) with extra fields.
fn ld_event() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("feature"),
        Just("debug"),
        Just("custom"),
        Just("click"),
        Just("pageview"),
        Just("identify"),
        Just("index"),
        Just("alias"),
        Just("migration_op"),
        Just("summary"),
        Just("never-seen-before"),
    ];
    (
        kind,
        "[a-z-]{1,12}",
        0u64..4_000_000_000_000,
        context_fields(),
        json_value(),
        json_value(),
        prop::option::of(0u64..5),
        prop::collection::btree_map("x-[a-z]{1,6}", json_value(), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(kind, key, ts, contexts, value, default, variation, extra, in_experiment)| {
                let mut m = Map::new();
                m.insert("kind".into(), kind.into());
                m.insert("creationDate".into(), ts.into());
                m.insert("key".into(), key.clone().into());
                m.extend(contexts);
                match kind {
                    "feature" | "debug" => {
                        m.insert("value".into(), value);
                        m.insert("default".into(), default);
                        if let Some(v) = variation {
                            m.insert("variation".into(), v.into());
                        }
                        m.insert(
                            "reason".into(),
                            json!({"kind": "FALLTHROUGH", "inExperiment": in_experiment}),
                        );
                    }
                    "custom" => {
                        m.insert("data".into(), value);
                        m.insert("metricValue".into(), json!(1.5));
                    }
                    "summary" => {
                        m.insert(
                            "features".into(),
                            json!({key: {"default": default, "counters": [
                                {"variation": 0, "version": 1, "value": value, "count": 3},
                                {"unknown": true, "value": null, "count": 1}]}}),
                        );
                    }
                    _ => {}
                }
                m.extend(extra);
                Value::Object(m)
            },
        )
}

fn goff_event() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![Just("feature"), Just("tracking")]),
        "[a-z-]{1,12}",
        context_key(),
        prop_oneof![0u64..9_999_999_999, 10_000_000_000u64..4_000_000_000_000],
        json_value(),
        any::<bool>(),
    )
        .prop_map(|(kind, key, user, ts, value, failed)| {
            let mut m = Map::new();
            if let Some(kind) = kind {
                m.insert("kind".into(), kind.into());
            }
            m.insert("contextKind".into(), "user".into());
            m.insert("userKey".into(), user.clone().into());
            m.insert("creationDate".into(), ts.into());
            m.insert("key".into(), key.into());
            if kind == Some("tracking") {
                m.insert("evaluationContext".into(), json!({"targetingKey": user}));
                m.insert(
                    "trackingEventDetails".into(),
                    json!({"value": 2, "v": value}),
                );
            } else {
                m.insert("variation".into(), "on".into());
                m.insert("value".into(), value);
                m.insert("default".into(), failed.into());
                m.insert("version".into(), "1".into());
            }
            Value::Object(m)
        })
}

/// Map every event of `body` to every schema (with and without summary expansion); every row
/// must be valid JSON. Returns the LaunchDarkly rows.
fn map_all(format: InboundFormat, body: &[u8], expected_events: usize) -> Vec<Value> {
    let count = validate(format, body).expect("valid body");
    assert_eq!(count as usize, expected_events);
    let ctx = ctx(format, Some("payload"));
    let mut scratch = DecodeScratch::default();
    let record = decode(&ctx, body, &mut scratch).expect("decodes");
    assert_eq!(record.events.len() + record.invalid.len(), expected_events);
    assert!(record.invalid.is_empty(), "{:?}", record.invalid);
    let mut ld_rows = Vec::new();
    let mut buf = Vec::new();
    for expand in [false, true] {
        let options = ExportOptions {
            project: "p".into(),
            expand_summaries: expand,
            ..ExportOptions::default()
        };
        for schema in Schema::ALL {
            for event in &record.events {
                map_event(schema, &options, &ctx, event, &mut buf, &mut |row| {
                    let value: Value = serde_json::from_slice(row).unwrap_or_else(|e| {
                        panic!("{schema}: {e}: {}", String::from_utf8_lossy(row))
                    });
                    if schema == Schema::LaunchDarkly && !expand {
                        ld_rows.push(value);
                    }
                })
                .expect("maps");
            }
        }
    }
    ld_rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_valid_ld_batch_maps_to_every_schema(events in prop::collection::vec(ld_event(), 1..8)) {
        let body = serde_json::to_vec(&events).unwrap();
        let rows = map_all(InboundFormat::LdBulk, &body, events.len());
        // Pass-through: every inbound field survives in the launchdarkly envelope.
        prop_assert_eq!(rows.len(), events.len());
        for (row, event) in rows.iter().zip(&events) {
            let mapped = row["event"].as_object().unwrap();
            for (name, value) in event.as_object().unwrap() {
                prop_assert_eq!(mapped.get(name), Some(value), "field {}", name);
            }
            prop_assert_eq!(mapped["id"].as_str().unwrap().len(), 36);
        }
    }

    #[test]
    fn any_valid_goff_batch_maps_to_every_schema(events in prop::collection::vec(goff_event(), 1..8)) {
        let body = serde_json::to_vec(&json!({"meta": {"a": "b"}, "events": events})).unwrap();
        map_all(InboundFormat::GoffCollector, &body, events.len());
    }

    #[test]
    fn ndjson_and_array_forms_decode_the_same(events in prop::collection::vec(ld_event(), 1..6)) {
        let array = serde_json::to_vec(&events).unwrap();
        let ndjson: Vec<u8> = events
            .iter()
            .flat_map(|e| { let mut l = serde_json::to_vec(e).unwrap(); l.push(b'\n'); l })
            .collect();
        let ctx = ctx(InboundFormat::Generic, None);
        let (mut s1, mut s2) = (DecodeScratch::default(), DecodeScratch::default());
        let a = decode(&ctx, &array, &mut s1).unwrap();
        let b = decode(&ctx, &ndjson, &mut s2).unwrap();
        let summary = |r: &flagstream::event::DecodedRecord<'_>| -> Vec<_> {
            r.events.iter().map(|e| (e.index(), e.kind().to_string(), e.to_json())).collect()
        };
        prop_assert_eq!(summary(&a), summary(&b));
    }

    #[test]
    fn ids_are_stable_and_distinct(
        env in "[a-z]{1,8}",
        payload in prop::option::of("[a-f0-9-]{1,36}"),
        seq in any::<u64>(),
        index in 0u32..10_000,
    ) {
        let c = RecordContext { environment: &env, payload_id: payload.as_deref(), seq, ..ctx(InboundFormat::LdBulk, None) };
        let again = RecordContext { received_at_ms: 5, format: InboundFormat::LdMobile, ..c };
        prop_assert_eq!(event_id(&c, index), event_id(&again, index));
        prop_assert_ne!(event_id(&c, index), event_id(&c, index + 1));
    }

    #[test]
    fn filters_are_deterministic(events in prop::collection::vec(ld_event(), 1..8), rate in 0.0f64..=1.0) {
        let body = serde_json::to_vec(&events).unwrap();
        let config = FilterConfig { sample_rate: Some(rate), kinds: Some(vec!["all".into()]), ..FilterConfig::default() };
        let filter = Filter::new(&config).unwrap();
        let ctx = ctx(InboundFormat::LdBulk, Some("p"));
        let (mut s1, mut s2) = (DecodeScratch::default(), DecodeScratch::default());
        let first: Vec<bool> = decode(&ctx, &body, &mut s1).unwrap().events.iter().map(|e| filter.matches(&ctx, e)).collect();
        let second: Vec<bool> = decode(&ctx, &body, &mut s2).unwrap().events.iter().map(|e| filter.matches(&ctx, e)).collect();
        prop_assert_eq!(first, second);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_valid_bodies_never_panic(
        events in prop::collection::vec(ld_event(), 1..4),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut body = serde_json::to_vec(&events).unwrap();
        for (at, byte) in cuts {
            let i = at.index(body.len());
            body[i] = byte;
        }
        exercise(&body);
    }
}

/// Validate, decode and map `bytes` under every format; only errors are allowed, no panics.
fn exercise(bytes: &[u8]) {
    let mut scratch = DecodeScratch::default();
    let mut buf = Vec::new();
    let options = ExportOptions {
        expand_summaries: true,
        ..ExportOptions::default()
    };
    for format in FORMATS {
        let _ = validate(format, bytes);
        let ctx = ctx(format, None);
        if let Ok(record) = decode(&ctx, bytes, &mut scratch) {
            for event in &record.events {
                for schema in Schema::ALL {
                    map_event(schema, &options, &ctx, event, &mut buf, &mut |row| {
                        // A syntax check: numbers keep their digits however large (`1e999`
                        // is JSON), which `Value` would refuse as out of range.
                        serde_json::from_slice::<serde::de::IgnoredAny>(row)
                            .expect("rows are JSON");
                    })
                    .expect("maps");
                }
            }
        }
    }
}
