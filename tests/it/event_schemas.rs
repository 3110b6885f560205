//! Targeted schema behaviours that the golden files do not isolate: options, rows withheld
//! per schema, context-less events, the go-feature-flag webhook envelope.

use flagstream::event::schema::write_webhook_body;
use flagstream::event::{
    decode, event_id, map_event, ExportOptions, InboundFormat, RecordContext, Schema,
};
use serde_json::Value;

fn ctx() -> RecordContext<'static> {
    RecordContext {
        format: InboundFormat::LdBulk,
        environment: "staging",
        payload_id: None,
        schema_version: Some(4),
        seq: 5,
        received_at_ms: 1_700_000_000_000,
        instance_id: None,
    }
}

/// Rows per event for one schema.
fn rows(schema: Schema, options: &ExportOptions, body: &str) -> Vec<Vec<Value>> {
    let ctx = ctx();
    let mut scratch = flagstream::event::DecodeScratch::default();
    let record = decode(&ctx, body.as_bytes(), &mut scratch).unwrap();
    assert!(record.invalid.is_empty(), "{:?}", record.invalid);
    let mut buf = Vec::new();
    record
        .events
        .iter()
        .map(|event| {
            let mut out = Vec::new();
            map_event(schema, options, &ctx, event, &mut buf, &mut |row| {
                out.push(serde_json::from_slice(row).unwrap())
            })
            .unwrap();
            out
        })
        .collect()
}

#[test]
fn fixed_vocabulary_schemas_withhold_kinds_they_cannot_carry() {
    let body = r#"[{"kind":"index","context":{"key":"u"}},{"kind":"identify","context":{"key":"u"}},
                   {"kind":"summary","startDate":1,"endDate":2,"features":{}},{"kind":"odd","context":{"key":"u"}}]"#;
    for schema in [
        Schema::Segment,
        Schema::MParticle,
        Schema::GoFeatureFlag,
        Schema::Warehouse,
    ] {
        let out = rows(schema, &ExportOptions::default(), body);
        assert!(out.iter().all(Vec::is_empty), "{schema}: {out:?}");
    }
    let out = rows(Schema::LaunchDarkly, &ExportOptions::default(), body);
    assert!(out.iter().all(|r| r.len() == 1), "{out:?}");
    assert_eq!(out[0][0]["project"], "default");
}

#[test]
fn segment_uses_anonymous_id_when_there_is_no_context() {
    let out = rows(
        Schema::Segment,
        &ExportOptions::default(),
        r#"[{"kind":"custom","key":"m","creationDate":0}]"#,
    );
    let row = &out[0][0];
    assert!(row.get("userId").is_none());
    assert_eq!(row["anonymousId"], event_id(&ctx(), 0));
    assert_eq!(row["messageId"], event_id(&ctx(), 0));
    assert_eq!(row["timestamp"], "1970-01-01T00:00:00.000Z");
}

#[test]
fn mparticle_identity_type_and_environment_come_from_options() {
    let options = ExportOptions {
        mparticle_identity_type: "email".into(),
        mparticle_environment: "development".into(),
        ..ExportOptions::default()
    };
    let out = rows(
        Schema::MParticle,
        &options,
        r#"[{"kind":"custom","key":"m","contextKeys":{"org":"o1","user":"u1"},"metricValue":2}]"#,
    );
    let batch = &out[0][0];
    assert_eq!(batch["user_identities"], serde_json::json!({"email": "u1"}));
    assert_eq!(batch["environment"], "development");
    assert_eq!(
        batch["events"][0]["data"]["custom_attributes"]["metric_value"],
        "2"
    );
}

#[test]
fn warehouse_emits_one_null_context_row_for_context_less_events() {
    let out = rows(
        Schema::Warehouse,
        &ExportOptions::default(),
        r#"[{"kind":"feature","key":"f","value":1,"variation":0}]"#,
    );
    assert_eq!(out[0].len(), 1);
    let row = &out[0][0];
    assert!(row["context_kind"].is_null() && row["context_key"].is_null());
    assert_eq!(
        row["creation_date"], 1_700_000_000_000u64,
        "falls back to received_at"
    );
}

#[test]
fn webhook_body_wraps_rows_with_meta() {
    let mut out = Vec::new();
    write_webhook_body(
        &[("hostname", "host-1"), ("env", "q\"uote")],
        [
            br#"{"kind":"feature"}"#.as_slice(),
            br#"{"kind":"tracking"}"#.as_slice(),
        ],
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"meta":{"hostname":"host-1","env":"q\"uote"},"events":[{"kind":"feature"},{"kind":"tracking"}]}"#
    );
}

#[test]
fn summaries_expand_only_when_asked() {
    let body = r#"[{"kind":"summary","startDate":1,"endDate":2,"features":{
        "a":{"default":0,"counters":[{"variation":0,"version":1,"value":0,"count":2},{"unknown":true,"value":0,"count":1}]},
        "b":{"default":"x","counters":[{"variation":1,"version":4,"value":"y","count":5}]}}}]"#;
    let expanded = ExportOptions {
        expand_summaries: true,
        ..ExportOptions::default()
    };
    let plain = rows(Schema::Warehouse, &ExportOptions::default(), body);
    assert!(plain[0].is_empty());
    let counters = rows(Schema::Warehouse, &expanded, body);
    let got: Vec<(String, u64, u64)> = counters[0]
        .iter()
        .map(|r| {
            (
                r["flag_key"].as_str().unwrap().to_string(),
                r["counter_index"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("a".into(), 0, 2), ("a".into(), 1, 1), ("b".into(), 2, 5)]
    );
    let ld = rows(Schema::LaunchDarkly, &expanded, body);
    assert_eq!(ld[0].len(), 3);
    assert_eq!(ld[0][1]["event"]["unknown"], true);
    assert!(rows(Schema::Segment, &expanded, body)[0].is_empty());
}
