//! A one-pass check of an event array (LaunchDarkly, go-feature-flag collector, generic),
//! without a tape and without a copy.
//!
//! Ingest must know that a body is JSON of the promised shape before it stores it, but it keeps
//! nothing of the parse: the body is stored as received. The full validator
//! (`validate.rs`) copies the body, lets simd-json build a tape (every value a node, every
//! string unescaped into a buffer, every number converted) and walks the tape for the shape.
//! In a `perf` profile of durable ingest at 64 connections that was a quarter of the server's
//! CPU. This module walks the RFC 8259 grammar over the bytes where they lie and remembers only
//! what the verdict needs: the element count, and whether each element is an object with a
//! string `kind`. It is hand-written because no JSON crate offers a validating pass that
//! builds nothing; it stays small because it never has to explain an error.
//!
//! # Contract: a fast accept, never a verdict of its own
//!
//! [`ld_event_count`] answers `Some(n)` only for a body the full validator accepts with `n`
//! events and no event without a string `kind`; [`goff_event_count`] (a go-feature-flag
//! collector envelope) and [`object_array_count`] (a generic array of objects) likewise. Everything else (malformed text, another
//! shape, kindless events, and anything this pass does not bother to decide: surrogate
//! `\u` escapes, an escaped key at an event's top level, nesting deeper than
//! [`MAX_DEPTH`], more than `u32::MAX` elements) answers `None`, and the caller runs the full
//! validator, which also writes the error message. So this pass can only ever make a verdict
//! faster, never different, provided it never accepts what the full validator refuses: the
//! property tests below (`agrees_with_the_full_validator`) compare the two on generated valid,
//! near-valid and damaged bodies.
//!
//! Details that keep the two in step:
//! * UTF-8: the whole body is checked once ([`simdutf8`]); outside strings the grammar admits
//!   ASCII only, so inside strings every byte sequence is then valid.
//! * Numbers: any number the grammar allows is accepted, whatever its size, as the full
//!   validator does (`number.rs` retries numbers simd-json refuses).
//! * `kind`: the first member named `kind` decides, as `json::get` does.

/// Nesting deeper than this is left to the full validator (whose limit is simd-json's 128).
pub const MAX_DEPTH: usize = 100;

/// The number of events of a LaunchDarkly array body when the full validator would accept it
/// as is (see the module docs); `None` when unsure.
///
/// Every function below takes the body and a position and answers the position after what it
/// read, or `None` at the first byte it does not accept. Positions are passed by value (not
/// kept in a struct) so they stay in registers: this loop runs over every byte ingest stores.
pub fn ld_event_count(body: &[u8]) -> Option<u32> {
    simdutf8::basic::from_utf8(body).ok()?;
    let mut at = expect(body, whitespace(body, 0), b'[')?;
    let mut count: u32 = 0;
    at = whitespace(body, at);
    if body.get(at) == Some(&b']') {
        at += 1;
    } else {
        loop {
            at = whitespace(body, event(body, at)?);
            count = count.checked_add(1)?;
            match *body.get(at)? {
                b',' => at = whitespace(body, at + 1),
                b']' => break at += 1,
                _ => return None,
            }
        }
    }
    (whitespace(body, at) == body.len()).then_some(count)
}

/// The number of events of a go-feature-flag collector body (`{"meta": {…}, "events": […]}`)
/// when the full validator would accept it as is; `None` when unsure. As there, the first
/// `events` member must be an array of objects and the first `meta` and `metadata` members
/// objects or `null`; the root's keys must have no escapes (one could spell those names).
pub fn goff_event_count(body: &[u8]) -> Option<u32> {
    simdutf8::basic::from_utf8(body).ok()?;
    let mut at = whitespace(body, expect(body, whitespace(body, 0), b'{')?);
    let mut events = None;
    let (mut meta_seen, mut metadata_seen) = (false, false);
    if body.get(at) != Some(&b'}') {
        loop {
            let (value_at, key, plain) = key(body, at)?;
            if !plain {
                return None;
            }
            let first = match key {
                b"meta" => !std::mem::replace(&mut meta_seen, true),
                b"metadata" => !std::mem::replace(&mut metadata_seen, true),
                _ => false,
            };
            let end = if key == b"events" && events.is_none() {
                let (end, count) = object_array(body, value_at, 1)?;
                events = Some(count);
                end
            } else {
                if first && !matches!(body.get(value_at), Some(b'{' | b'n')) {
                    return None;
                }
                value(body, value_at, 1)?
            };
            at = whitespace(body, end);
            match *body.get(at)? {
                b',' => at = whitespace(body, at + 1),
                b'}' => break,
                _ => return None,
            }
        }
    }
    (whitespace(body, at + 1) == body.len()).then_some(events?)
}

/// The number of events of a generic body that is a JSON array of objects, when the full
/// validator would accept it as is; `None` when unsure (NDJSON bodies included).
pub fn object_array_count(body: &[u8]) -> Option<u32> {
    simdutf8::basic::from_utf8(body).ok()?;
    let (end, count) = object_array(body, whitespace(body, 0), 0)?;
    (whitespace(body, end) == body.len()).then_some(count)
}

/// An array of objects at `at`, nested in `depth` containers: the position after it and the
/// number of objects.
fn object_array(body: &[u8], at: usize, depth: usize) -> Option<(usize, u32)> {
    let mut at = whitespace(body, expect(body, at, b'[')?);
    let mut count: u32 = 0;
    if body.get(at) == Some(&b']') {
        return Some((at + 1, 0));
    }
    loop {
        if body.get(at) != Some(&b'{') {
            return None;
        }
        at = whitespace(body, value(body, at, depth + 1)?);
        count = count.checked_add(1)?;
        match *body.get(at)? {
            b',' => at = whitespace(body, at + 1),
            b']' => return Some((at + 1, count)),
            _ => return None,
        }
    }
}

/// One element of the top-level array at `at`: an object whose first `kind` member is a
/// string. Its other members' keys must have no escapes (one could spell `kind`).
fn event(body: &[u8], at: usize) -> Option<usize> {
    let mut at = whitespace(body, expect(body, at, b'{')?);
    let mut kind_is_string = None;
    if body.get(at) != Some(&b'}') {
        loop {
            let (value_at, key, plain) = key(body, at)?;
            if !plain {
                return None;
            }
            if key == b"kind" && kind_is_string.is_none() {
                kind_is_string = Some(body.get(value_at) == Some(&b'"'));
            }
            at = whitespace(body, value(body, value_at, 2)?);
            match *body.get(at)? {
                b',' => at = whitespace(body, at + 1),
                b'}' => break,
                _ => return None,
            }
        }
    }
    kind_is_string.filter(|&is_string| is_string)?;
    Some(at + 1)
}

/// A member's key at `at` and its colon: the position of its value, the key's raw bytes and
/// whether it had no escapes.
#[inline(always)]
fn key(body: &[u8], at: usize) -> Option<(usize, &[u8], bool)> {
    let (end, plain) = string(body, at)?;
    let colon = expect(body, whitespace(body, end), b':')?;
    Some((whitespace(body, colon), &body[at + 1..end - 1], plain))
}

/// Any JSON value at `at`, nested in `depth` containers. Containers inside it are tracked on
/// a bit stack (1 = object), not by recursion.
fn value(body: &[u8], mut at: usize, depth: usize) -> Option<usize> {
    let mut objects: u128 = 0;
    let mut open = 0;
    loop {
        // A value starts at `at`.
        match *body.get(at)? {
            b'"' => at = string(body, at)?.0,
            container @ (b'{' | b'[') => {
                at = whitespace(body, at + 1);
                let close = if container == b'{' { b'}' } else { b']' };
                if body.get(at) == Some(&close) {
                    at += 1;
                } else {
                    open += 1;
                    if depth + open >= MAX_DEPTH {
                        return None;
                    }
                    objects = objects << 1 | u128::from(container == b'{');
                    if container == b'{' {
                        at = key(body, at)?.0;
                    }
                    continue;
                }
            }
            b't' => at = literal(body, at, b"true")?,
            b'f' => at = literal(body, at, b"false")?,
            b'n' => at = literal(body, at, b"null")?,
            _ => at = number(body, at)?,
        }
        // After a value: close containers until a comma leads to the next value.
        loop {
            if open == 0 {
                return Some(at);
            }
            at = whitespace(body, at);
            let in_object = objects & 1 == 1;
            match (*body.get(at)?, in_object) {
                (b',', true) => {
                    at = key(body, whitespace(body, at + 1))?.0;
                    break;
                }
                (b',', false) => {
                    at = whitespace(body, at + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    at += 1;
                    open -= 1;
                    objects >>= 1;
                }
                _ => return None,
            }
        }
    }
}

#[inline(always)]
fn expect(body: &[u8], at: usize, wanted: u8) -> Option<usize> {
    (body.get(at) == Some(&wanted)).then_some(at + 1)
}

#[inline(always)]
fn whitespace(body: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = body.get(at) {
        at += 1;
    }
    at
}

fn literal(body: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (body.get(at..end)? == word).then_some(end)
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
#[inline]
fn number(body: &[u8], mut at: usize) -> Option<usize> {
    if body.get(at) == Some(&b'-') {
        at += 1;
    }
    match *body.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(body, at + 1),
        _ => return None,
    }
    if body.get(at) == Some(&b'.') {
        at = some_digits(body, at + 1)?;
    }
    if let Some(b'e' | b'E') = body.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = body.get(at) {
            at += 1;
        }
        at = some_digits(body, at)?;
    }
    Some(at)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const DIGIT_NIBBLES: u64 = 0x3030_3030_3030_3030;

/// Past a run of ASCII digits, eight bytes at a time (timestamps have thirteen).
#[inline(always)]
fn digits(body: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = body.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte is a digit when its high nibble is 3 both as is and plus 6; the carry out of
        // a byte >= 0xFA only disturbs the bytes after it, so the lowest mark is exact.
        let not_digit = ((word & HIGH_NIBBLES) ^ DIGIT_NIBBLES)
            | ((word.wrapping_add(ONES * 6) & HIGH_NIBBLES) ^ DIGIT_NIBBLES);
        if not_digit != 0 {
            return at + not_digit.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    while let Some(b'0'..=b'9') = body.get(at) {
        at += 1;
    }
    at
}

#[inline(always)]
fn some_digits(body: &[u8], at: usize) -> Option<usize> {
    let end = digits(body, at);
    (end > at).then_some(end)
}

/// A string at its opening quote `at`: the position after its closing quote, and whether it
/// had no escapes.
#[inline(always)]
fn string(body: &[u8], at: usize) -> Option<(usize, bool)> {
    let at = expect(body, at, b'"')?;
    let stop = at + special_offset(body.get(at..)?)?;
    if body[stop] == b'"' {
        return Some((stop + 1, true));
    }
    string_with_escapes(body, stop)
}

/// The rest of a string from its first backslash (or control character) at `at` on.
#[cold]
fn string_with_escapes(body: &[u8], mut at: usize) -> Option<(usize, bool)> {
    loop {
        match *body.get(at)? {
            b'"' => return Some((at + 1, false)),
            b'\\' => at = escape(body, at + 1)?,
            _control => return None,
        }
        at += special_offset(body.get(at..)?)?;
    }
}

/// The rest of an escape whose backslash is just before `at`. `\u` escapes of surrogates are
/// left to the full validator (pairing rules differ between parsers).
fn escape(body: &[u8], at: usize) -> Option<usize> {
    match *body.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            let hex = body.get(at + 1..at + 5)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            (!(0xD800..=0xDFFF).contains(&unit)).then_some(at + 5)
        }
        _ => None,
    }
}

/// Offset of the first byte in `rest` that ends a run of plain string bytes: `"`, `\` or a
/// control character (which JSON forbids unescaped); `None` when there is none.
#[inline(always)]
fn special_offset(rest: &[u8]) -> Option<usize> {
    let mut offset = 0;
    // Eight bytes at a time: a zero byte of `word ^ pattern` (or a byte below 0x20) sets its
    // high bit in `found`; borrows can only mark bytes after a real match, so the lowest mark
    // is exact.
    while let Some(chunk) = rest.get(offset..offset + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGHS;
        if found != 0 {
            return Some(offset + found.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    rest[offset..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_events_of_a_plain_body() {
        let body = br#" [ {"kind":"custom","key":"a","data":{"x":[1,-2.5e3,true,null,"\u00e9\n"]}},
            {"context":{"kind":1},"kind":"identify"} ] "#;
        assert_eq!(ld_event_count(body), Some(2));
        assert_eq!(ld_event_count(b"[]"), Some(0));
        assert_eq!(
            ld_event_count(b"[{\"kind\":\"x\",\"big\":123456789012345678901234567890}]"),
            Some(1)
        );
    }

    #[test]
    fn leaves_every_doubt_to_the_full_validator() {
        for body in [
            &b""[..],
            b"[",
            b"{}",
            b"[{}]",
            b"[{\"kind\":1}]",
            b"[{\"kind\":\"a\"},]",
            b"[{\"kind\":\"a\",\"x\":[1}}]",
            b"[{\"kind\":\"a\",\"x\":{\"y\":1]}]",
            b"[{\"kind\":\"a\"}}",
            b"[{\"kind\":\"a\"}] x",
            b"[{\"k\\u0069nd\":\"a\"}]",
            b"[{\"kind\":\"\\ud83d\\ude00\"}]",
            b"[{\"kind\":\"a\",\"n\":01}]",
            b"[{\"kind\":\"a\",\"n\":1.}]",
            b"[{\"kind\":\"a\",\"n\":-}]",
            b"[{\"kind\":\"a\",\"t\":tru}]",
            b"[{\"kind\":\"a\tb\"}]",
            b"[{\"kind\":\"a\\x\"}]",
            b"[{\"kind\":\"\xff\"}]",
            b"[3]",
        ] {
            assert_eq!(
                ld_event_count(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn collector_envelopes_and_generic_arrays() {
        let goff = |body: &str| goff_event_count(body.as_bytes());
        assert_eq!(
            goff(r#" {"meta":null,"events":[{"a":1},{}],"x":[1]} "#),
            Some(2)
        );
        assert_eq!(goff(r#"{"events":[],"metadata":{"sdk":"go"}}"#), Some(0));
        assert_eq!(
            goff(r#"{"events":[{}],"events":1,"meta":{},"meta":2}"#),
            Some(1)
        );
        for refused in [
            r#"{"meta":1,"events":[]}"#,
            r#"{"metadata":[],"events":[]}"#,
            r#"{"events":{}}"#,
            r#"{"meta":{}}"#,
            r#"{"events":[{},"x"]}"#,
            r#"{"ev\u0065nts":[{}]}"#,
            r#"{"events":[{}]} {}"#,
            r#"[{"kind":"a"}]"#,
        ] {
            assert_eq!(goff(refused), None, "{refused}");
        }
        let generic = |body: &str| object_array_count(body.as_bytes());
        assert_eq!(generic(r#"[{"a":1},{}]"#), Some(2));
        assert_eq!(generic("[]"), Some(0));
        assert_eq!(generic("[1]"), None);
        assert_eq!(generic("{\"a\":1}\n{\"b\":2}\n"), None);
    }

    #[test]
    fn the_first_kind_member_decides() {
        assert_eq!(ld_event_count(br#"[{"kind":"a","kind":1}]"#), Some(1));
        assert_eq!(ld_event_count(br#"[{"kind":1,"kind":"a"}]"#), None);
    }

    #[test]
    fn nesting_beyond_the_limit_is_left_alone() {
        let deep = |levels: usize| {
            let mut body = String::from("[{\"kind\":\"a\",\"x\":");
            body.push_str(&"[".repeat(levels));
            body.push_str(&"]".repeat(levels));
            body.push_str("}]");
            body
        };
        assert_eq!(ld_event_count(deep(MAX_DEPTH - 3).as_bytes()), Some(1));
        assert_eq!(ld_event_count(deep(MAX_DEPTH + 1).as_bytes()), None);
    }

    #[test]
    fn digits_stop_at_the_first_non_digit_at_any_position() {
        for len in 0..20 {
            for stop in [b',', b'}', b' ', b'e', b'.', b'/', b':', 0xFA, 0xFF, 0x00] {
                let mut text = b"0123456789".repeat(2)[..len].to_vec();
                text.push(stop);
                text.extend_from_slice(b"123456789");
                assert_eq!(digits(&text, 0), len, "{len} {stop}");
            }
            let text = b"9".repeat(len);
            assert_eq!(digits(&text, 0), len);
        }
    }

    #[test]
    fn special_offset_finds_the_first_stop_byte_at_any_position() {
        for len in 0..20 {
            for at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f] {
                    let mut text = vec![b'a'; len];
                    text[at] = stop;
                    if at + 1 < len {
                        text[at + 1] = b'"';
                    }
                    assert_eq!(special_offset(&text), Some(at), "{len} {at} {stop}");
                }
            }
            assert_eq!(special_offset(&vec![0xC3; len]), None);
            assert_eq!(special_offset(&vec![b' '; len]), None);
        }
    }
}

/// The fast accept against the full validator on generated bodies, valid and damaged.
#[cfg(test)]
mod agrees_with_the_full_validator {
    use proptest::prelude::*;

    use super::{goff_event_count, ld_event_count, object_array_count};
    use crate::event::validate::validate_in_full;
    use crate::event::InboundFormat;

    fn ld_events_in_full(body: &[u8]) -> Result<u32, crate::event::ValidationError> {
        validate_in_full(InboundFormat::LdBulk, body)
    }

    /// Pieces of JSON text: (text, whether it is valid where a value or string content goes).
    const NUMBERS: &[(&str, bool)] = &[
        ("0", true),
        ("-0", true),
        ("42", true),
        ("-7", true),
        ("1.50", true),
        ("-0.0e-0", true),
        ("1E+2", true),
        ("1e400", true),
        ("-1e-400", true),
        ("123456789012345678901234567890", true),
        ("18446744073709551616", true),
        ("0.1000000000000000000001", true),
        ("01", false),
        ("1.", false),
        (".5", false),
        ("-", false),
        ("1e", false),
        ("+1", false),
        ("0x1", false),
        ("NaN", false),
    ];
    const STRING_PARTS: &[(&str, bool)] = &[
        ("a", true),
        ("kind", true),
        ("é", true),
        ("😀", true),
        ("\\n", true),
        ("\\\"", true),
        ("\\\\", true),
        ("\\/", true),
        ("\\u00e9", true),
        ("\\u0000", true),
        ("\u{7f}", true),
        ("\\ud83d\\ude00", true),
        ("\\ud800", true),
        ("\\udc00x", true),
        ("\u{1}", false),
        ("\t", false),
        ("\\x", false),
        ("\\u12", false),
        ("\\uZZZZ", false),
    ];

    /// Pieces allowed in `mode`: everything, or only what the fast path accepts.
    fn pieces(table: &'static [(&'static str, bool)], plain: bool) -> Vec<(&'static str, bool)> {
        let fast = |t: &str| !t.contains("\\ud8") && !t.contains("\\udc");
        table
            .iter()
            .copied()
            .filter(|(t, ok)| !plain || (*ok && fast(t)))
            .collect()
    }

    fn string(plain: bool) -> impl Strategy<Value = (String, bool)> {
        prop::collection::vec(prop::sample::select(pieces(STRING_PARTS, plain)), 0..4).prop_map(
            |parts| {
                let text: String = parts.iter().map(|(t, _)| *t).collect();
                (format!("\"{text}\""), parts.iter().all(|(_, ok)| *ok))
            },
        )
    }

    /// A key without escapes (the fast path leaves escaped top-level keys to the full one).
    fn plain_key() -> impl Strategy<Value = (String, bool)> {
        prop::sample::select(&["a", "kind", "é", "😀", "\u{7f}", ""][..])
            .prop_map(|k| (format!("\"{k}\""), true))
    }

    fn value(plain: bool) -> impl Strategy<Value = (String, bool)> {
        let literals: &[&str] = if plain {
            &["true", "false", "null"]
        } else {
            &["true", "false", "null", "tru", "nul"]
        };
        let leaf = prop_oneof![
            prop::sample::select(pieces(NUMBERS, plain)).prop_map(|(t, ok)| (t.to_string(), ok)),
            prop::sample::select(literals).prop_map(|t| (t.to_string(), t.len() >= 4)),
            string(plain),
        ];
        leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| {
                    let ok = items.iter().all(|(_, ok)| *ok);
                    let texts: Vec<_> = items.into_iter().map(|(t, _)| t).collect();
                    (format!("[{}]", texts.join(",")), ok)
                }),
                prop::collection::vec((string(plain), inner), 0..4).prop_map(|members| {
                    let ok = members.iter().all(|((_, k), (_, v))| *k && *v);
                    let texts: Vec<_> = members
                        .into_iter()
                        .map(|((key, _), (value, _))| format!("{key}:{value}"))
                        .collect();
                    (format!("{{{}}}", texts.join(",")), ok)
                }),
            ]
        })
    }

    /// An event object: maybe a `kind` (a string or another value), other members around it.
    fn event() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((string(false), value(false)), 0..3),
            prop::option::of(prop_oneof![string(false), value(false)]),
            prop::collection::vec((string(false), value(false)), 0..3),
        )
            .prop_map(|(before, kind, after)| {
                let member = |((key, _), (value, _)): (_, _)| format!("{key}:{value}");
                let mut members: Vec<String> = before.into_iter().map(member).collect();
                if let Some((kind, _)) = kind {
                    members.push(format!("\"kind\":{kind}"));
                }
                members.extend(after.into_iter().map(member));
                format!("{{{}}}", members.join(", "))
            })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::vec(event(), 0..5),
            prop::sample::select(&["", " ", "\n\t", "\r\n "][..]),
        )
            .prop_map(|(events, space)| {
                format!("{space}[{}]{space}", events.join(",")).into_bytes()
            })
    }

    /// A body whose events all start with a plain string `kind` and have plain keys, so the
    /// fast path decides it: with `plain` values it must accept, otherwise some values are
    /// invalid pieces it must not let through.
    fn kinded_body(plain: bool) -> impl Strategy<Value = (Vec<u8>, u32)> {
        prop::collection::vec(event_text(plain), 0..6).prop_map(|events| {
            let body = format!("[{}]", events.join(","));
            (body.into_bytes(), events.len() as u32)
        })
    }

    /// An event object starting with a plain string `kind`, with plain keys.
    fn event_text(plain: bool) -> impl Strategy<Value = String> {
        (
            string(true),
            prop::collection::vec((plain_key(), value(plain)), 0..3),
        )
            .prop_map(|(kind, members)| {
                let mut parts = vec![format!("\"kind\":{}", kind.0)];
                parts.extend(members.iter().map(|((k, _), (v, _))| format!("{k}:{v}")));
                format!("{{{}}}", parts.join(","))
            })
    }

    /// A plain key of a collector envelope; unless `plain`, maybe one of the names the
    /// envelope rules are about (a duplicate: the first one counts).
    fn envelope_key(plain: bool) -> impl Strategy<Value = (String, bool)> {
        let names: &[&str] = if plain {
            &["a", "kind", "é"]
        } else {
            &["a", "events", "meta", "metadata"]
        };
        prop::sample::select(names).prop_map(|k| (format!("\"{k}\""), true))
    }

    /// A go-feature-flag collector body and its event count: `events` somewhere among plain
    /// members, maybe `meta` and `metadata`; with `plain` every part is valid.
    fn goff_body(plain: bool) -> impl Strategy<Value = (Vec<u8>, u32)> {
        let events = prop::collection::vec(event_text(plain), 0..4)
            .prop_map(|objects| (format!("[{}]", objects.join(",")), objects.len() as u32));
        let good_meta = prop::sample::select(&["null", "{}", "{\"sdk\":\"go\",\"n\":[1]}"][..])
            .prop_map(str::to_string);
        let meta = if plain {
            good_meta.boxed()
        } else {
            prop_oneof![good_meta, value(false).prop_map(|(v, _)| v)].boxed()
        };
        (
            events,
            prop::option::of(meta.clone()),
            prop::option::of(meta),
            prop::collection::vec((envelope_key(plain), value(plain)), 0..3),
            any::<prop::sample::Index>(),
        )
            .prop_map(|((events, count), meta, metadata, others, at)| {
                let mut members: Vec<String> = others
                    .iter()
                    .map(|((k, _), (v, _))| format!("{k}:{v}"))
                    .collect();
                members.extend(meta.map(|m| format!("\"meta\":{m}")));
                members.extend(metadata.map(|m| format!("\"metadata\":{m}")));
                members.insert(at.index(members.len() + 1), format!("\"events\":{events}"));
                (format!("{{{}}}", members.join(",")).into_bytes(), count)
            })
    }

    /// A body with a few bytes deleted, inserted or replaced, or brackets swapped
    /// for the other kind (`]` for `}`, …).
    fn damaged(source: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let edit = (
            any::<prop::sample::Index>(),
            0u8..4,
            prop::sample::select(&b"{}[]\":,\\ 0e-.tx\xc3\x01"[..]),
        );
        (source, prop::collection::vec(edit, 1..4)).prop_map(|(mut body, edits)| {
            for (at, how, byte) in edits {
                let brackets: Vec<usize> = (0..body.len())
                    .filter(|&i| b"{}[]".contains(&body[i]))
                    .collect();
                let at = at.index(body.len() + 1);
                match how {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = byte,
                    3 if !brackets.is_empty() => {
                        let i = brackets[at % brackets.len()];
                        body[i] = match body[i] {
                            b'{' => b'[',
                            b'[' => b'{',
                            b'}' => b']',
                            _ => b'}',
                        };
                    }
                    _ => body.insert(at, byte),
                }
            }
            body
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_fast_accept_is_a_full_accept(
            body in prop_oneof![
                body(),
                kinded_body(false).prop_map(|(body, _)| body),
                damaged(kinded_body(true).prop_map(|(body, _)| body)),
            ]
        ) {
            let text = String::from_utf8_lossy(&body);
            if let Some(count) = ld_event_count(&body) {
                prop_assert_eq!(ld_events_in_full(&body), Ok(count), "{}", text);
            }
            if let Some(count) = object_array_count(&body) {
                prop_assert_eq!(validate_in_full(InboundFormat::Generic, &body), Ok(count), "{}", text);
            }
        }

        #[test]
        fn every_fast_collector_accept_is_a_full_accept(
            body in prop_oneof![
                goff_body(false).prop_map(|(body, _)| body),
                damaged(goff_body(true).prop_map(|(body, _)| body)),
            ]
        ) {
            if let Some(count) = goff_event_count(&body) {
                let full = validate_in_full(InboundFormat::GoffCollector, &body);
                prop_assert_eq!(full, Ok(count), "{}", String::from_utf8_lossy(&body));
            }
        }

        #[test]
        fn plain_valid_bodies_take_the_fast_path((body, count) in kinded_body(true)) {
            let text = String::from_utf8_lossy(&body);
            prop_assert_eq!(ld_event_count(&body), Some(count), "{}", text);
            prop_assert_eq!(ld_events_in_full(&body), Ok(count));
            prop_assert_eq!(object_array_count(&body), Some(count), "{}", text);
        }

        #[test]
        fn plain_collector_bodies_take_the_fast_path((body, count) in goff_body(true)) {
            let text = String::from_utf8_lossy(&body);
            prop_assert_eq!(goff_event_count(&body), Some(count), "{}", text);
            prop_assert_eq!(validate_in_full(InboundFormat::GoffCollector, &body), Ok(count));
        }
    }
}
