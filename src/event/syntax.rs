//! A one-pass check of a LaunchDarkly event array, without a tape and without a copy.
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
//! events and no event without a string `kind`. Everything else (malformed text, another
//! shape, kindless events, and anything this pass does not bother to decide: surrogate
//! `\u` escapes, an escaped key at an event's top level, nesting deeper than
//! [`MAX_DEPTH`], more than `u32::MAX` elements) answers `None`, and the caller runs the full
//! validator, which also writes the error message. So this pass can only ever make a verdict
//! faster, never different, provided it never accepts what the full validator refuses: the
//! property tests in `validate.rs` compare the two on generated and mutated bodies.
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
pub fn ld_event_count(body: &[u8]) -> Option<u32> {
    simdutf8::basic::from_utf8(body).ok()?;
    let mut scan = Scanner { bytes: body, at: 0 };
    scan.skip_whitespace();
    scan.expect(b'[')?;
    let mut count: u32 = 0;
    scan.skip_whitespace();
    if scan.peek() == Some(b']') {
        scan.at += 1;
    } else {
        loop {
            scan.skip_whitespace();
            scan.event()?;
            count = count.checked_add(1)?;
            scan.skip_whitespace();
            match scan.next()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
    }
    scan.skip_whitespace();
    (scan.at == body.len()).then_some(count)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
const DIGIT_NIBBLES: u64 = 0x3030_3030_3030_3030;

/// A position in the body. Every method answers `None` at the first byte it does not accept.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    #[inline]
    fn expect(&mut self, wanted: u8) -> Option<()> {
        (self.next()? == wanted).then_some(())
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// One element of the top-level array: an object whose first `kind` member is a string.
    fn event(&mut self) -> Option<()> {
        self.expect(b'{')?;
        let mut kind_is_string = None;
        self.members(|scan, key_plain, key| {
            if !key_plain {
                return None;
            }
            if key == b"kind" && kind_is_string.is_none() {
                let is_string = scan.peek() == Some(b'"');
                kind_is_string = Some(is_string);
            }
            scan.value(1)
        })?;
        kind_is_string.filter(|&is_string| is_string).map(drop)
    }

    /// The members of an object whose `{` was just read, through its `}`; `value` reads each
    /// member's value, given whether its key had no escapes and the key's raw bytes.
    fn members(
        &mut self,
        mut value: impl FnMut(&mut Self, bool, &[u8]) -> Option<()>,
    ) -> Option<()> {
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_whitespace();
            let bytes = self.bytes;
            let start = self.at + 1;
            let plain = self.string()?;
            let key = &bytes[start..self.at - 1];
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            value(self, plain, key)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// Any JSON value at nesting `depth` (the containers around it).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                self.at += 1;
                self.nested(depth)?;
                self.members(|scan, _, _| scan.value(depth + 1))
            }
            b'[' => {
                self.at += 1;
                self.nested(depth)?;
                self.elements(depth + 1)
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    #[inline]
    fn nested(&self, depth: usize) -> Option<()> {
        (depth < MAX_DEPTH).then_some(())
    }

    /// The elements of an array whose `[` was just read, through its `]`.
    fn elements(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_whitespace();
            self.value(depth)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then_some(())?;
        self.at = end;
        Some(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    /// Past a run of ASCII digits, eight bytes at a time (timestamps have thirteen).
    #[inline]
    fn digits(&mut self) {
        while let Some(chunk) = self.bytes.get(self.at..self.at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            // A byte is a digit when its high nibble is 3 both as is and plus 6; the carry out
            // of a byte >= 0xFA only disturbs the bytes after it, so the lowest mark is exact.
            let not_digit = ((word & HIGH_NIBBLES) ^ DIGIT_NIBBLES)
                | ((word.wrapping_add(ONES * 6) & HIGH_NIBBLES) ^ DIGIT_NIBBLES);
            if not_digit != 0 {
                self.at += not_digit.trailing_zeros() as usize / 8;
                return;
            }
            self.at += 8;
        }
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    /// A string at its opening quote, through its closing quote; whether it had no escapes.
    #[inline]
    fn string(&mut self) -> Option<bool> {
        self.expect(b'"')?;
        self.at += special_offset(&self.bytes[self.at..])?;
        if self.next()? == b'"' {
            return Some(true);
        }
        self.at -= 1;
        self.string_with_escapes()
    }

    /// The rest of a string from its first backslash (or control character) on.
    #[cold]
    fn string_with_escapes(&mut self) -> Option<bool> {
        loop {
            match self.next()? {
                b'"' => return Some(false),
                b'\\' => self.escape()?,
                _control => return None,
            }
            self.at += special_offset(&self.bytes[self.at..])?;
        }
    }

    /// The rest of an escape whose backslash was just read. `\u` escapes of surrogates are
    /// left to the full validator (pairing rules differ between parsers).
    fn escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.bytes.get(self.at..self.at + 4)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                self.at += 4;
                (!(0xD800..=0xDFFF).contains(&unit)).then_some(())
            }
            _ => None,
        }
    }
}

/// Offset of the first byte in `rest` that ends a run of plain string bytes: `"`, `\` or a
/// control character (which JSON forbids unescaped); `None` when there is none.
#[inline]
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
                let mut scan = Scanner {
                    bytes: &text,
                    at: 0,
                };
                scan.digits();
                assert_eq!(scan.at, len, "{len} {stop}");
            }
            let text = b"9".repeat(len);
            let mut scan = Scanner {
                bytes: &text,
                at: 0,
            };
            scan.digits();
            assert_eq!(scan.at, len);
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

    use super::ld_event_count;
    use crate::event::validate::ld_events_in_full;

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
        let event = (
            string(true),
            prop::collection::vec((plain_key(), value(plain)), 0..3),
        );
        prop::collection::vec(event, 0..6).prop_map(|events| {
            let texts: Vec<String> = events
                .iter()
                .map(|(kind, members)| {
                    let mut parts = vec![format!("\"kind\":{}", kind.0)];
                    parts.extend(members.iter().map(|((k, _), (v, _))| format!("{k}:{v}")));
                    format!("{{{}}}", parts.join(","))
                })
                .collect();
            let body = format!("[{}]", texts.join(","));
            (body.into_bytes(), events.len() as u32)
        })
    }

    /// A fast-path body with a few bytes deleted, inserted or replaced.
    fn damaged_body() -> impl Strategy<Value = Vec<u8>> {
        let edit = (
            any::<prop::sample::Index>(),
            0u8..3,
            prop::sample::select(&b"{}[]\":,\\ 0e-.tx\xc3\x01"[..]),
        );
        (kinded_body(true), prop::collection::vec(edit, 1..4)).prop_map(|((mut body, _), edits)| {
            for (at, how, byte) in edits {
                let at = at.index(body.len() + 1);
                match how {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = byte,
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
            body in prop_oneof![body(), kinded_body(false).prop_map(|(body, _)| body), damaged_body()]
        ) {
            if let Some(count) = ld_event_count(&body) {
                prop_assert_eq!(ld_events_in_full(&body), Ok(count), "{}", String::from_utf8_lossy(&body));
            }
        }

        #[test]
        fn plain_valid_bodies_take_the_fast_path((body, count) in kinded_body(true)) {
            let text = String::from_utf8_lossy(&body);
            prop_assert_eq!(ld_event_count(&body), Some(count), "{}", text);
            prop_assert_eq!(ld_events_in_full(&body), Ok(count));
        }
    }
}
