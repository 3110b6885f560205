//! Exact numbers: every number JSON allows is accepted, and exported with the digits it was
//! sent with.
//!
//! RFC 8259 puts no limit on a number's size or precision, but simd-json's tape holds numbers
//! as `u64` / `i64` / `f64`. That loses information two ways: simd-json *refuses* integers
//! outside the 64-bit range and numbers whose `f64` value is infinite (`1e400`), and a
//! re-written `f64` is not the text that was sent (`1.50` → `1.5`,
//! `0.1000000000000000000001` → `0.1`). So, per parsed record:
//!
//! * **Fast path** (the common case: every number is an integer other than `-0`). The tape
//!   alone reproduces every number exactly (JSON forbids leading zeros and `+`, so an integer's
//!   text is canonical): nothing more is done beyond one scan of the tape for `f64` nodes.
//! * **Texts** (the body has a fraction, an exponent or `-0`). simd-json's stage 1 leaves the
//!   byte offset of every value in [`simd_json::Buffers::structural_indexes`]; the k-th number
//!   start among them is the k-th number node of the tape (both are in document order). The
//!   original text of every number that is not a plain integer is copied into a
//!   [`NumberTexts`] side table, keyed by tape index, and the writer prints that text.
//! * **Placeholders** (simd-json refused a number). The same structural indexes locate every
//!   number simd-json would refuse ([`refused_numbers`]); a copy of the body has each of them
//!   replaced by `0` padded with spaces (same length, so every offset is unchanged) and is
//!   parsed again. The tape then holds `0` for them, and the side table their text, marked as
//!   a placeholder so numeric accessors never mistake them for zero.
//!
//! Numeric *values* are only needed where a schema computes with a number (timestamps,
//! variation indices, warehouse numeric columns); what happens to numbers a 64-bit type cannot
//! hold there is documented in `docs/schemas.md` ("Numbers") — the event is never refused.

use std::ops::Range;

use simd_json::{Buffers, Node, StaticNode, Tape};

use super::json::{Doc, Nodes};

/// Parse `source` into a [`Doc`] whose numbers all keep their text (see the module docs).
///
/// `bytes` receives the padded copy simd-json parses in place; `fallback` is used instead only
/// when simd-json refused a number. They are separate buffers so the returned `Doc` can borrow
/// either one for the caller's lifetime.
///
/// `finish` runs on the parsed document before number texts are collected, with stage 1's
/// structural indexes (which index `source` on both paths: placeholders keep offsets); it may
/// fill in the document and returns whether the texts are needed. Texts of refused numbers
/// are always collected: the tape holds only stand-ins for them.
pub(crate) fn parse_exact<'s>(
    source: &[u8],
    bytes: &'s mut Vec<u8>,
    fallback: &'s mut Vec<u8>,
    buffers: &mut Buffers,
    finish: impl FnOnce(&mut Doc<'s>, &[u32]) -> bool,
) -> Result<Doc<'s>, simd_json::Error> {
    let len = source.len();
    bytes.clear();
    bytes.extend_from_slice(source);
    bytes.resize(len + simd_json::INPUT_PADDING, 0);
    let mut tape = Tape::null();
    match simd_json::fill_tape_padded(bytes, len, buffers, &mut tape) {
        Ok(()) => {
            let mut doc = Doc {
                nodes: tape.0,
                ..Doc::default()
            };
            let structurals = buffers.structural_indexes();
            if finish(&mut doc, structurals) && needs_texts(&doc.nodes) {
                doc.numbers = collect_texts(&doc.nodes, source, structurals, &[]);
            }
            Ok(doc)
        }
        Err(error) if is_refused_number(&error) => {
            let refused = refused_numbers(source, buffers.structural_indexes());
            if refused.is_empty() {
                return Err(error);
            }
            copy_with_placeholders(source, &refused, fallback);
            fallback.resize(len + simd_json::INPUT_PADDING, 0);
            let mut tape = Tape::null();
            simd_json::fill_tape_padded(fallback, len, buffers, &mut tape)?;
            let mut doc = Doc {
                nodes: tape.0,
                ..Doc::default()
            };
            let structurals = buffers.structural_indexes();
            finish(&mut doc, structurals);
            doc.numbers = collect_texts(&doc.nodes, source, structurals, &refused);
            Ok(doc)
        }
        Err(error) => Err(error),
    }
}

/// Parse a throwaway copy of `text` and run `f` on its tape, accepting every number JSON
/// allows (for shape probes whose tape is not kept; slow-path use only: it allocates).
pub(crate) fn probe<R>(
    text: &[u8],
    f: impl FnOnce(&Nodes<'_>) -> R,
) -> Result<R, simd_json::Error> {
    let mut buffers = Buffers::new(text.len());
    let mut copy = text.to_vec();
    let refused = match simd_json::to_tape_with_buffers(&mut copy, &mut buffers) {
        Ok(tape) => return Ok(f(&tape.0)),
        Err(error) if is_refused_number(&error) => {
            let refused = refused_numbers(text, buffers.structural_indexes());
            if refused.is_empty() {
                return Err(error);
            }
            refused
        }
        Err(error) => return Err(error),
    };
    copy_with_placeholders(text, &refused, &mut copy);
    simd_json::to_tape_with_buffers(&mut copy, &mut buffers).map(|tape| f(&tape.0))
}

/// Original texts of the numbers a tape alone would not reproduce, keyed by tape index.
#[derive(Debug, Default)]
pub(crate) struct NumberTexts {
    /// Sorted by `node` (built in tape order).
    entries: Vec<Entry>,
    /// The texts, back to back.
    text: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    node: usize,
    end: usize,
    /// The tape holds a stand-in `0`: the value exists only as this text.
    placeholder: bool,
}

impl NumberTexts {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, node: usize) -> Option<(usize, Entry)> {
        if self.entries.is_empty() {
            return None;
        }
        let at = self.entries.binary_search_by_key(&node, |e| e.node).ok()?;
        Some((at, self.entries[at]))
    }

    /// The original text of the number at tape index `node`, when it differs from what the
    /// tape's value would print.
    pub(crate) fn text(&self, node: usize) -> Option<&str> {
        let (at, entry) = self.find(node)?;
        let start = match at {
            0 => 0,
            _ => self.entries[at - 1].end,
        };
        self.text.get(start..entry.end)
    }

    /// The text of a number simd-json refused (the tape holds a stand-in `0` for it).
    pub(crate) fn placeholder(&self, node: usize) -> Option<&str> {
        match self.find(node) {
            Some((_, entry)) if entry.placeholder => self.text(node),
            _ => None,
        }
    }

    fn push(&mut self, node: usize, text: &[u8], placeholder: bool) {
        // Number tokens are ASCII by construction (see `token_end`).
        self.text.push_str(std::str::from_utf8(text).unwrap_or("0"));
        self.entries.push(Entry {
            node,
            end: self.text.len(),
            placeholder,
        });
    }
}

/// Whether a tape needs [`collect_texts`]: it has a number whose value would not print as
/// sent (any `f64`, and `-0`, which simd-json stores as the integer 0).
#[inline]
pub(crate) fn needs_texts(nodes: &[Node<'_>]) -> bool {
    nodes
        .iter()
        .any(|n| matches!(n, Node::Static(StaticNode::F64(_) | StaticNode::I64(0))))
}

/// Whether a simd-json error is a number it refused (the cue to retry with placeholders).
pub(crate) fn is_refused_number(error: &simd_json::Error) -> bool {
    matches!(error.error(), simd_json::ErrorType::InvalidNumber)
}

/// Byte offsets in `source` where a number starts, in document order.
fn number_starts<'s>(source: &'s [u8], structurals: &'s [u32]) -> impl Iterator<Item = usize> + 's {
    structurals
        .iter()
        .map(|&s| s as usize)
        .filter(|&s| matches!(source.get(s), Some(b'-' | b'0'..=b'9')))
}

/// End of the number token starting at `start`.
fn token_end(source: &[u8], start: usize) -> usize {
    let len = source
        .get(start..)
        .unwrap_or_default()
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(source.len().saturating_sub(start));
    start + len
}

/// The numbers of `source` that simd-json refuses: integers outside the 64-bit range and
/// numbers whose `f64` value is infinite. `structurals` are stage 1's indexes for `source`.
pub(crate) fn refused_numbers(source: &[u8], structurals: &[u32]) -> Vec<Range<usize>> {
    number_starts(source, structurals)
        .map(|start| start..token_end(source, start))
        .filter(|token| source.get(token.clone()).is_some_and(is_refused))
        .collect()
}

/// A number simd-json refuses although RFC 8259 allows it. Anything that is not a JSON number
/// (`-`, `01`, `1.`) is not: it stays a syntax error.
fn is_refused(token: &[u8]) -> bool {
    if !is_json_number(token) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(token) else {
        return false;
    };
    if token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return !text.parse::<f64>().is_ok_and(f64::is_finite);
    }
    match token.first() {
        Some(b'-') => text.parse::<i64>().is_err(),
        _ => text.parse::<u64>().is_err(),
    }
}

/// RFC 8259 §6: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    fn digits(rest: &[u8]) -> usize {
        rest.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let mut rest = token.strip_prefix(b"-").unwrap_or(token);
    let int = digits(rest);
    if int == 0 || (int > 1 && rest[0] == b'0') {
        return false;
    }
    rest = &rest[int..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = digits(fraction);
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    if let Some(exponent) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let exponent = exponent
            .strip_prefix(b"+")
            .or_else(|| exponent.strip_prefix(b"-"))
            .unwrap_or(exponent);
        let n = digits(exponent);
        if n == 0 {
            return false;
        }
        rest = &exponent[n..];
    }
    rest.is_empty()
}

/// Copy `source` into `out` (cleared first) with every refused number replaced by a `0`
/// padded with spaces, so offsets stay the same.
pub(crate) fn copy_with_placeholders(source: &[u8], refused: &[Range<usize>], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(source);
    for token in refused {
        if let Some(bytes) = out.get_mut(token.clone()) {
            bytes.fill(b' ');
            bytes[0] = b'0';
        }
    }
}

/// Pair the tape's number nodes with their texts in `source` and keep the texts of those that
/// are not plain integers. `refused` (sorted) are the tokens replaced by placeholders.
pub(crate) fn collect_texts(
    nodes: &[Node<'_>],
    source: &[u8],
    structurals: &[u32],
    refused: &[Range<usize>],
) -> NumberTexts {
    let mut texts = NumberTexts::default();
    let mut starts = number_starts(source, structurals);
    for (idx, node) in nodes.iter().enumerate() {
        let exact = match node {
            Node::Static(StaticNode::U64(n)) => *n != 0,
            Node::Static(StaticNode::I64(n)) => *n != 0,
            Node::Static(StaticNode::F64(_)) => false,
            _ => continue,
        };
        let Some(start) = starts.next() else { break };
        if exact {
            continue;
        }
        let end = token_end(source, start);
        let placeholder = refused.binary_search_by_key(&start, |r| r.start).is_ok();
        texts.push(idx, &source[start..end], placeholder);
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        decode, map_event, validate, DecodeScratch, ExportOptions, InboundFormat, RecordContext,
        Schema,
    };

    /// The numbers of issue 14: refused by simd-json, or rewritten on the way out.
    const EXAMPLES: [&str; 7] = [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1e400",
        "1.50",
        "12345678901234567890.5",
        "0.1000000000000000000001",
    ];

    fn ctx(format: InboundFormat) -> RecordContext<'static> {
        RecordContext {
            format,
            environment: "production",
            payload_id: None,
            schema_version: Some(4),
            seq: 3,
            received_at_ms: 1_717_000_000_000,
            instance_id: None,
        }
    }

    /// A custom and a feature event carrying `n` in every numeric field a schema may export.
    fn events(n: &str) -> [String; 2] {
        [
            format!(
                r#"{{"kind":"custom","creationDate":1717000000000,"key":"m","contextKeys":{{"user":"u"}},"metricValue":{n},"data":{{"n":{n},"list":[{n},-0,{n}]}}}}"#
            ),
            format!(
                r#"{{"kind":"feature","creationDate":1717000000000,"key":"f","context":{{"key":"u","n":{n}}},"variation":0,"value":{n},"default":{n}}}"#
            ),
        ]
    }

    /// Whether `row` contains `number` as a whole token (not part of a longer number).
    fn has_number(row: &str, number: &str) -> bool {
        let part = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-');
        row.match_indices(number).any(|(at, _)| {
            let before = row.as_bytes().get(at.wrapping_sub(1)).copied();
            let after = row.as_bytes().get(at + number.len()).copied();
            !before.is_some_and(part) && !after.is_some_and(part)
        })
    }

    /// validate → decode → every schema: every event is valid and every row carries `n`.
    fn assert_exported_exactly(format: InboundFormat, body: &str, n: &str, originals: &[String]) {
        assert_eq!(validate(format, body.as_bytes()), Ok(2), "{body}");
        let ctx = ctx(format);
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx, body.as_bytes(), &mut scratch).expect("decodes");
        assert!(record.invalid.is_empty(), "{:?}", record.invalid);
        assert_eq!(record.events.len(), 2);
        for (event, original) in record.events.iter().zip(originals) {
            assert_eq!(&event.to_json(), original, "to_json keeps every digit");
            for schema in Schema::ALL {
                let mut rows = Vec::new();
                let mut buf = Vec::new();
                let options = ExportOptions::default();
                map_event(schema, &options, &ctx, event, &mut buf, &mut |row| {
                    rows.push(String::from_utf8(row.to_vec()).unwrap())
                })
                .unwrap();
                assert!(!rows.is_empty(), "{schema}: {original}");
                for row in &rows {
                    assert!(has_number(row, n), "{schema} lost {n}: {row}");
                    // Our own (RFC 8259) parser: serde_json refuses 1e400.
                    assert_eq!(
                        validate(InboundFormat::LdDiagnostic, row.as_bytes()),
                        Ok(0),
                        "{schema} wrote invalid JSON: {row}"
                    );
                }
                if schema == Schema::LaunchDarkly {
                    let whole = original.trim_end_matches('}');
                    assert!(rows[0].contains(whole), "{}", rows[0]);
                }
            }
        }
    }

    #[test]
    fn issue_14_numbers_pass_every_route_and_schema_digit_for_digit() {
        for n in EXAMPLES {
            let [custom, feature] = events(n);
            let originals = [custom.clone(), feature.clone()];
            let array = format!("[{custom},{feature}]");
            assert_exported_exactly(InboundFormat::LdBulk, &array, n, &originals);
            let ndjson = format!("{custom}\n{feature}\n");
            assert_exported_exactly(InboundFormat::Generic, &ndjson, n, &originals);
        }
    }

    #[test]
    fn collector_events_keep_numbers_and_out_of_range_times_fall_back() {
        for n in EXAMPLES {
            let body = format!(
                r#"{{"meta":{{"v":{n}}},"events":[{{"kind":"feature","userKey":"u","creationDate":{n},"key":"f","variation":"a","value":{n},"default":false}},{{"kind":"tracking","userKey":"u","creationDate":1717000000,"key":"t","trackingEventDetails":{{"value":{n}}}}}]}}"#
            );
            assert_eq!(
                validate(InboundFormat::GoffCollector, body.as_bytes()),
                Ok(2)
            );
            let ctx = ctx(InboundFormat::GoffCollector);
            let mut scratch = DecodeScratch::default();
            let record = decode(&ctx, body.as_bytes(), &mut scratch).unwrap();
            assert!(record.invalid.is_empty(), "{n}: {:?}", record.invalid);
            // None of these is a whole number within u64 (1.50 is fractional,
            // 12345678901234567890.5 only looks integral as an f64).
            assert_eq!(record.events[0].creation_date_ms(), None, "{n}");
            for event in &record.events {
                for schema in Schema::ALL {
                    let mut buf = Vec::new();
                    map_event(
                        schema,
                        &ExportOptions::default(),
                        &ctx,
                        event,
                        &mut buf,
                        &mut |row| {
                            let row = std::str::from_utf8(row).unwrap();
                            assert!(has_number(row, n), "{schema} lost {n}: {row}");
                            if schema == Schema::Warehouse && event.kind() == "feature" {
                                // No usable creation time: the receive time stands in.
                                assert!(row.contains(r#""creation_date":1717000000000,"#), "{row}");
                            }
                        },
                    )
                    .unwrap();
                }
            }
        }
    }

    #[test]
    fn warehouse_numeric_columns_keep_text_or_say_null() {
        let row = |n: &str| {
            let body = format!(
                r#"[{{"kind":"custom","key":"m","contextKeys":{{"user":"u"}},"metricValue":{n}}}]"#
            );
            let ctx = ctx(InboundFormat::LdBulk);
            let mut scratch = DecodeScratch::default();
            let record = decode(&ctx, body.as_bytes(), &mut scratch).unwrap();
            let mut out = String::new();
            let mut buf = Vec::new();
            map_event(
                Schema::Warehouse,
                &ExportOptions::default(),
                &ctx,
                &record.events[0],
                &mut buf,
                &mut |r| out = String::from_utf8(r.to_vec()).unwrap(),
            )
            .unwrap();
            out
        };
        assert!(row("1.50").contains(r#""metric_value":1.50,"#));
        assert!(row("18446744073709551616").contains(r#""metric_value":18446744073709551616,"#));
        assert!(row("1e400").contains(r#""metric_value":null,"#));
        assert!(row("-0").contains(r#""metric_value":-0,"#));
    }

    #[test]
    fn placeholders_are_never_read_as_zero() {
        let body = br#"[{"kind":"feature","key":"f","variation":18446744073709551616,"samplingRatio":1e400,"value":1}]"#;
        let ctx = ctx(InboundFormat::LdBulk);
        let mut scratch = DecodeScratch::default();
        let record = decode(&ctx, body, &mut scratch).unwrap();
        let event = &record.events[0];
        let nodes = event.nodes();
        let variation = event.field("variation").unwrap();
        let ratio = event.field("samplingRatio").unwrap();
        assert_eq!(crate::event::json::as_u64(nodes, variation), None);
        assert_eq!(crate::event::json::as_i64(nodes, variation), None);
        assert_eq!(
            crate::event::json::as_f64(nodes, variation),
            Some(18446744073709551616.0)
        );
        assert_eq!(crate::event::json::as_f64(nodes, ratio), None);
        let value = event.field("value").unwrap();
        assert_eq!(crate::event::json::as_u64(nodes, value), Some(1));
    }

    #[test]
    fn syntax_errors_are_still_refused() {
        for bad in [
            "[01]", "[1.]", "[-]", "[1e]", "[.5]", "[+1]", "[1e400x]", "[NaN]",
        ] {
            let body = format!(r#"[{{"kind":"custom","v":{}}}]"#, &bad[1..bad.len() - 1]);
            let err = validate(InboundFormat::LdBulk, body.as_bytes()).expect_err(&body);
            assert_eq!(err.code, "malformed_json", "{bad}");
        }
    }

    #[test]
    fn refuses_exactly_what_does_not_fit_64_bits_or_a_finite_double() {
        for refused in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1e400",
            "-1.5E+309",
        ] {
            assert!(is_refused(refused.as_bytes()), "{refused}");
        }
        for not_a_number in [
            "-",
            "01",
            "1.",
            "1e",
            "-e5",
            "1e400.5",
            "18446744073709551616-",
        ] {
            assert!(!is_refused(not_a_number.as_bytes()), "{not_a_number}");
        }
        for accepted in [
            "18446744073709551615",
            "-9223372036854775808",
            "0",
            "-0",
            "1e308",
            "1e-400",
            "12345678901234567890.5",
            "0.1000000000000000000001",
        ] {
            assert!(!is_refused(accepted.as_bytes()), "{accepted}");
        }
    }

    #[test]
    fn placeholders_keep_offsets() {
        let source = br#"[1e400,{"a":18446744073709551616}]"#;
        let mut out = Vec::new();
        copy_with_placeholders(source, &[1..6, 12..32], &mut out);
        assert_eq!(out, br#"[0    ,{"a":0                   }]"#);
    }
}
