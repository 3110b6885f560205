//! The body of the `event_decode` fuzz target, shared with the `event_fuzz_harness` test so
//! the same properties run on stable Rust in every CI run, not only under `cargo fuzz`.
//!
//! Input layout: byte 0 picks the inbound format (`% 6`) and, with bit 7, whether the record
//! has a payload id; the rest is the body.
//!
//! Properties: `validate`, `decode` and `map_event` (every schema, with and without summary
//! expansion) never panic on any bytes; a body that validates also decodes; every row a
//! schema emits is itself exactly one valid JSON object (checked with our own validator:
//! one object = one NDJSON line).

use flagstream::event::{
    decode, map_event, validate, ExportOptions, InboundFormat, RecordContext, Schema,
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
    let mut scratch = flagstream::event::DecodeScratch::default();
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
