//! Golden tests for the event model: real and constructed inbound payloads
//! (`tests/golden/inputs/*.json`) → validation, decoding and every output schema, compared
//! byte for byte with the checked-in expectations in `tests/golden/expected/`.
//!
//! Inputs use the capture format of `shared/spec/samples`: `{"path", "headers", "body"}`
//! (or `body_text` for non-JSON bodies such as NDJSON). The route decides the inbound format;
//! `X-LaunchDarkly-Payload-ID` and `X-LaunchDarkly-Event-Schema` fill the record context.
//!
//! To regenerate after an intended change: `UPDATE_GOLDEN=1 cargo test --test it event_golden`,
//! then review the diff like code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flagstream::event::schema::warehouse;
use flagstream::event::{
    decode, event_id, map_event, validate, ExportOptions, InboundFormat, RecordContext, Schema,
};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Capture {
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    body: Option<Box<RawValue>>,
    body_text: Option<String>,
}

fn format_for(path: &str) -> InboundFormat {
    match path {
        "/bulk" => InboundFormat::LdBulk,
        "/diagnostic" => InboundFormat::LdDiagnostic,
        p if p.starts_with("/mobile") => InboundFormat::LdMobile,
        p if p.starts_with("/events/bulk/") => InboundFormat::LdBrowser,
        "/v1/data/collector" => InboundFormat::GoffCollector,
        "/v1/events" => InboundFormat::Generic,
        other => panic!("no inbound format for path {other}"),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compare with (or, with UPDATE_GOLDEN set, write) an expected file; returns a mismatch
/// description instead of panicking so one run reports every difference.
fn check(name: &str, actual: &str, failures: &mut Vec<String>) {
    let path = golden_dir().join("expected").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => {
            let line = expected
                .lines()
                .zip(actual.lines())
                .position(|(e, a)| e != a)
                .unwrap_or(expected.lines().count().min(actual.lines().count()));
            failures.push(format!(
                "{name}: differs at line {}\n  expected: {}\n  actual:   {}",
                line + 1,
                expected.lines().nth(line).unwrap_or("<end>"),
                actual.lines().nth(line).unwrap_or("<end>")
            ));
        }
        Err(_) => failures.push(format!("{name}: missing expected file {}", path.display())),
    }
}

/// Each warehouse row must list its table's columns, all of them, in order.
fn assert_warehouse_row_shape(row: &str) {
    let value: serde_json::Value = serde_json::from_str(row).unwrap();
    let object = value.as_object().unwrap();
    let table = object["table"].as_str().unwrap();
    let columns = warehouse::TABLES
        .iter()
        .find(|(name, _)| *name == table)
        .map(|(_, columns)| *columns)
        .unwrap_or_else(|| panic!("unknown table {table}"));
    // serde_json without preserve_order sorts keys, so compare as sets plus the raw order.
    let mut expected: Vec<&str> = std::iter::once("table")
        .chain(columns.iter().map(|c| c.name))
        .collect();
    let mut actual: Vec<&str> = object.keys().map(String::as_str).collect();
    let raw_order: Vec<usize> = expected
        .iter()
        .map(|name| row.find(&format!("\"{name}\":")).unwrap())
        .collect();
    assert!(
        raw_order.windows(2).all(|w| w[0] < w[1]),
        "column order: {row}"
    );
    expected.sort_unstable();
    actual.sort_unstable();
    assert_eq!(expected, actual, "columns of {table}");
    for column in columns {
        let v = &object[column.name];
        if v.is_null() {
            assert!(column.nullable, "{} is null in {row}", column.name);
            continue;
        }
        let ok = match column.ty {
            warehouse::ColumnType::String
            | warehouse::ColumnType::Json
            | warehouse::ColumnType::Timestamp => v.is_string(),
            warehouse::ColumnType::Int64 => v.is_i64() || v.is_u64(),
            warehouse::ColumnType::Float64 => v.is_number(),
            warehouse::ColumnType::Bool => v.is_boolean(),
        };
        assert!(ok, "{} has the wrong type in {row}", column.name);
        if column.ty == warehouse::ColumnType::Json {
            serde_json::from_str::<serde_json::Value>(v.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{} is not JSON text ({e}) in {row}", column.name));
        }
    }
}

#[test]
fn golden_inputs_map_byte_exactly_to_every_schema() {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir().join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 7, "golden inputs missing: {inputs:?}");
    let mut failures = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        let name = input.file_stem().unwrap().to_str().unwrap();
        let capture: Capture =
            serde_json::from_str(&std::fs::read_to_string(input).unwrap()).unwrap();
        let body = match (&capture.body, &capture.body_text) {
            (Some(raw), None) => raw.get().as_bytes().to_vec(),
            (None, Some(text)) => text.as_bytes().to_vec(),
            _ => panic!("{name}: exactly one of body / body_text"),
        };
        let ctx = RecordContext {
            format: format_for(&capture.path),
            environment: "production",
            payload_id: capture
                .headers
                .get("X-LaunchDarkly-Payload-ID")
                .map(String::as_str),
            schema_version: capture
                .headers
                .get("X-LaunchDarkly-Event-Schema")
                .and_then(|v| v.parse().ok()),
            // Distinct WAL positions, so inputs without a payload id get distinct ids.
            seq: 1000 + n as u64,
            received_at_ms: 1_800_000_000_000,
            instance_id: None,
        };

        let mut report = String::new();
        match validate(ctx.format, &body) {
            Ok(count) => writeln!(report, "validate: ok, {count} events").unwrap(),
            Err(e) => writeln!(report, "validate: {e}").unwrap(),
        }
        // As the delivery pipeline of the pass-through schema decodes (with number texts, as
        // summaries are expanded below): compact events are copied as sent, and must still
        // match the goldens byte for byte.
        let mut scratch =
            flagstream::event::DecodeScratch::with_verbatim(flagstream::event::VerbatimText::Keep);
        let record = decode(&ctx, &body, &mut scratch).unwrap();
        for e in &record.events {
            writeln!(
                report,
                "event {} kind={} key={:?} context_key={:?} creation_ms={:?} id={}",
                e.index(),
                e.kind(),
                e.key(),
                e.context_key(),
                e.creation_date_ms(),
                event_id(&ctx, e.index())
            )
            .unwrap();
        }
        for invalid in &record.invalid {
            writeln!(
                report,
                "invalid {} reason={:?} raw={}",
                invalid.index, invalid.reason, invalid.raw
            )
            .unwrap();
        }
        check(&format!("{name}.decode.txt"), &report, &mut failures);

        let has_summary = record.events.iter().any(|e| e.kind() == "summary");
        for schema in Schema::ALL {
            for expand in [false, true] {
                if expand
                    && !(has_summary && matches!(schema, Schema::LaunchDarkly | Schema::Warehouse))
                {
                    continue;
                }
                let options = ExportOptions {
                    project: "p-123".to_string(),
                    expand_summaries: expand,
                    ..ExportOptions::default()
                };
                let mut out = String::new();
                let mut buf = Vec::new();
                for event in &record.events {
                    map_event(schema, &options, &ctx, event, &mut buf, &mut |row| {
                        let row = std::str::from_utf8(row).unwrap();
                        serde_json::from_str::<serde_json::Value>(row)
                            .unwrap_or_else(|e| panic!("{name}/{schema}: invalid JSON {e}: {row}"));
                        if schema == Schema::Warehouse {
                            assert_warehouse_row_shape(row);
                        }
                        out.push_str(row);
                        out.push('\n');
                    })
                    .unwrap();
                }
                let suffix = if expand { ".expanded" } else { "" };
                check(
                    &format!("{name}.{}{suffix}.ndjson", schema.name()),
                    &out,
                    &mut failures,
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
