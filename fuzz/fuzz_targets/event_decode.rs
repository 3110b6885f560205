//! Fuzz the event model's untrusted-input surface: arbitrary bytes as an inbound body for
//! every format → `validate`, `decode`, every filter-free `map_event` (with and without
//! summary expansion). Nothing may panic, and every row a schema emits must itself be one
//! valid JSON object (checked with our own validator: one object = one NDJSON line).
//!
//! `cargo +nightly fuzz run event_decode` (from the repository root).
#![no_main]

use flagstream::event::{
    decode, map_event, validate, ExportOptions, InboundFormat, RecordContext, Schema,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks the format (so the fuzzer can steer), the rest is the body.
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Some(format) = InboundFormat::from_code(selector % 6 + 1) else {
        return;
    };
    let _ = validate(format, body);
    let ctx = RecordContext {
        format,
        environment: "fuzz",
        payload_id: (selector & 0x80 != 0).then_some("payload"),
        schema_version: Some(4),
        seq: 1,
        received_at_ms: 1_717_000_000_000,
    };
    let mut scratch = Vec::new();
    let Ok(record) = decode(&ctx, body, &mut scratch) else {
        return;
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
});
