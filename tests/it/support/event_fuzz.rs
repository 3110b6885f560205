//! The body of the `event_decode` fuzz target, shared with the `event_fuzz_harness` test so
//! the same properties run on stable Rust in every CI run, not only under `cargo fuzz`.
//!
//! Input layout: byte 0 picks the inbound format (`% 6`) and, with bit 7, whether the record
//! has a payload id; the rest is the body.
//!
//! Properties: `validate`, `decode` and `map_event` (every schema, with and without summary
//! expansion) never panic on any bytes; a body that validates also decodes; every row a
//! schema emits is itself exactly one valid JSON object (checked with our own validator:
//! one object = one NDJSON line); decoding as the `launchdarkly` pipeline does (events copied
//! as sent where exact, number texts skipped when all are) writes the same rows as decoding
//! that only rewrites.

use flagstream::event::{
    decode, map_event, validate, DecodeScratch, Event, ExportOptions, InboundFormat, RecordContext,
    Schema, VerbatimText,
};

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Some(format) = InboundFormat::from_code(selector % 6 + 1) else {
        return;
    };
    let validated = validate(format, body);
    let ctx = RecordContext {
        format,
        environment: "fuzz",
        payload_id: (selector & 0x80 != 0).then_some("payload"),
        schema_version: Some(4),
        seq: 1,
        received_at_ms: 1_717_000_000_000,
        instance_id: None,
    };
    let mut scratch = DecodeScratch::default();
    let record = match decode(&ctx, body, &mut scratch) {
        Ok(record) => record,
        Err(error) => {
            assert!(
                validated.is_err(),
                "validated ({validated:?}) but failed to decode: {error}"
            );
            return;
        }
    };
    let mut copying = DecodeScratch::with_verbatim(VerbatimText::KeepWithoutNumberTexts);
    let copied = decode(&ctx, body, &mut copying).expect("decodes as the plain decode did");
    assert_eq!(
        launchdarkly_rows(&ctx, &copied.events),
        launchdarkly_rows(&ctx, &record.events),
        "events copied as sent differ from their rewrite"
    );
    let mut buf = Vec::new();
    for expand_summaries in [false, true] {
        let options = ExportOptions {
            expand_summaries,
            ..ExportOptions::default()
        };
        for event in &record.events {
            for schema in Schema::ALL {
                map_event(schema, &options, &ctx, event, &mut buf, &mut |row| {
                    assert_eq!(
                        validate(InboundFormat::Generic, row),
                        Ok(1),
                        "{schema} emitted invalid JSON: {}",
                        String::from_utf8_lossy(row)
                    );
                })
                .expect("mapping a decoded event never fails");
            }
        }
    }
}

/// The `launchdarkly` rows of `events` (default options), one string each.
fn launchdarkly_rows(ctx: &RecordContext<'_>, events: &[Event<'_>]) -> Vec<String> {
    let options = ExportOptions::default();
    let mut buf = Vec::new();
    let mut rows = Vec::new();
    for event in events {
        map_event(
            Schema::LaunchDarkly,
            &options,
            ctx,
            event,
            &mut buf,
            &mut |row| rows.push(String::from_utf8_lossy(row).into_owned()),
        )
        .expect("mapping a decoded event never fails");
    }
    rows
}
