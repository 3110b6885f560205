//! Numbers: every number JSON allows is accepted and exported digit for digit (issue 14).
//!
//! * Through the real binary: the issue's numbers posted to `/bulk` and `/v1/data/collector`
//!   come out of the file destination with the same text.
//! * A property test: arbitrary RFC 8259 numbers (any digits, sign, fraction, exponent) inside
//!   events pass validate → decode → every schema with their text intact.

use std::path::Path;
use std::time::Duration;

use flagstream::event::{
    decode, map_event, validate, DecodeScratch, ExportOptions, InboundFormat, RecordContext, Schema,
};
use proptest::prelude::*;

use crate::support::eventually;
use crate::support::serve::*;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The numbers of issue 14: refused by simd-json, or rewritten on the way out.
const ISSUE_NUMBERS: &str = r#"{"a":18446744073709551616,"b":-9223372036854775809,"c":123456789012345678901234567890,"d":1e400,"e":1.50,"f":12345678901234567890.5,"g":0.1000000000000000000001,"h":-0}"#;

/// Wait until the export holds at least `count` raw lines.
async fn wait_for_lines(dir: &Path, count: usize) -> Vec<String> {
    eventually(&format!("{count} rows exported"), TIMEOUT, || async move {
        let lines = read_export_lines(dir);
        if lines.len() >= count {
            Ok(lines)
        } else {
            Err(format!("{} exported", lines.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_and_precise_numbers_reach_the_file_destination_digit_for_digit() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("export");
    let server = Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!("file://{}?rotate=100ms&name=archive", export.display()),
        ])
        .start()
        .await;
    let client = reqwest::Client::new();

    let bulk = format!(
        r#"[{{"kind":"custom","creationDate":1717000000000,"key":"bulk-numbers","context":{{"kind":"user","key":"u1"}},"metricValue":12345678901234567890.5,"data":{ISSUE_NUMBERS}}}]"#
    );
    let response = client
        .post(server.url("/bulk"))
        .header("authorization", SDK_KEY)
        .body(bulk)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 202, "/bulk: {}", response.text().await.unwrap());

    let collector = format!(
        r#"{{"meta":{{"numbers":{ISSUE_NUMBERS}}},"events":[{{"kind":"feature","userKey":"u2","creationDate":1e400,"key":"collector-numbers","variation":"v","value":123456789012345678901234567890,"default":false}}]}}"#
    );
    let response = client
        .post(server.url("/v1/data/collector"))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(collector)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "collector: {}", response.text().await.unwrap());

    let lines = wait_for_lines(&export, 2).await;
    let row = |key: &str| {
        lines
            .iter()
            .find(|line| line.contains(&format!(r#""key":"{key}""#)))
            .unwrap_or_else(|| panic!("no row for {key}: {lines:?}"))
            .clone()
    };
    let bulk_row = row("bulk-numbers");
    assert!(
        bulk_row.contains(&format!(r#""data":{ISSUE_NUMBERS}"#)),
        "{bulk_row}"
    );
    assert!(
        bulk_row.contains(r#""metricValue":12345678901234567890.5,"#),
        "{bulk_row}"
    );
    let collector_row = row("collector-numbers");
    assert!(
        collector_row.contains(r#""creationDate":1e400,"#),
        "{collector_row}"
    );
    assert!(
        collector_row.contains(r#""value":123456789012345678901234567890,"#),
        "{collector_row}"
    );
    assert!(
        collector_row.contains(&format!(r#""metadata":{{"numbers":{ISSUE_NUMBERS}}}"#)),
        "{collector_row}"
    );
    drop(server);
}

/// An RFC 8259 number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, with digit
/// runs long enough to leave every 64-bit type behind.
fn json_number() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,45}"],
        proptest::option::of("[0-9]{1,45}"),
        proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,4}")),
    )
        .prop_map(|(negative, int, frac, exp)| {
            let mut n = String::new();
            if negative {
                n.push('-');
            }
            n.push_str(&int);
            if let Some(frac) = frac {
                n.push('.');
                n.push_str(&frac);
            }
            if let Some((e, sign, digits)) = exp {
                n.push_str(&e);
                n.push_str(&sign);
                n.push_str(&digits);
            }
            n
        })
}

/// Whether `row` contains `number` as a whole token (not part of a longer number).
fn has_number(row: &str, number: &str) -> bool {
    let part = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
    row.match_indices(number).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| row.as_bytes()[i]);
        let after = row.as_bytes().get(at + number.len()).copied();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

fn ctx(format: InboundFormat) -> RecordContext<'static> {
    RecordContext {
        format,
        environment: "production",
        payload_id: None,
        schema_version: Some(4),
        seq: 1,
        received_at_ms: 1_717_000_000_000,
        instance_id: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_numbers_are_accepted_and_exported_digit_for_digit(
        a in json_number(),
        b in json_number(),
        ndjson in any::<bool>(),
    ) {
        let custom = format!(
            r#"{{"kind":"custom","creationDate":{b},"key":"m","contextKeys":{{"user":"u"}},"metricValue":{a},"data":{{"a":{a},"b":[{b},{a}]}}}}"#
        );
        let feature = format!(
            r#"{{"kind":"feature","creationDate":1,"key":"f","context":{{"key":"u"}},"variation":0,"value":{a},"default":{b}}}"#
        );
        let (format, body) = if ndjson {
            (InboundFormat::Generic, format!("{custom}\n{feature}\n"))
        } else {
            (InboundFormat::LdBulk, format!("[{custom},{feature}]"))
        };
        prop_assert_eq!(validate(format, body.as_bytes()), Ok(2));
        let ctx = ctx(format);
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx, body.as_bytes(), &mut scratch).expect("decodes");
        prop_assert!(record.invalid.is_empty(), "{:?}", record.invalid);
        prop_assert_eq!(record.events.len(), 2);
        prop_assert_eq!(record.events[0].to_json(), custom.clone());
        prop_assert_eq!(record.events[1].to_json(), feature.clone());
        for (event, original) in record.events.iter().zip([&custom, &feature]) {
            for schema in Schema::ALL {
                let mut rows = Vec::new();
                let mut buf = Vec::new();
                map_event(schema, &ExportOptions::default(), &ctx, event, &mut buf, &mut |row| {
                    rows.push(String::from_utf8(row.to_vec()).unwrap())
                })
                .unwrap();
                prop_assert!(!rows.is_empty());
                for row in &rows {
                    prop_assert!(has_number(row, &a), "{} lost {}: {}", schema, a, row);
                    // Our own (RFC 8259) parser: serde_json refuses 1e400.
                    prop_assert_eq!(
                        validate(InboundFormat::LdDiagnostic, row.as_bytes()),
                        Ok(0),
                        "{} wrote invalid JSON: {}", schema, row
                    );
                }
                if schema == Schema::LaunchDarkly {
                    prop_assert!(rows[0].contains(original.trim_end_matches('}')), "{}", rows[0]);
                }
            }
        }
    }
}
