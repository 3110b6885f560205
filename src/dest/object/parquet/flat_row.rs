//! A one-pass reader for flat JSON rows: what the warehouse mapper writes (one compact object
//! per row, values strings, numbers, booleans or null; JSON columns are strings holding JSON).
//!
//! Hand-written because it is the hot path of Parquet encoding: a simd-json tape per row
//! (stage-1 set-up and a tape built for large documents, on 560-byte rows) was 41% of the
//! encoder's instructions. This reader checks the keys it expects (the mapper's column order)
//! in place instead of searching for their ends — keys are most of a row's bytes — and with it
//! a `file` destination's Parquet send takes 25–30% less CPU per event
//! (`docs/performance.md`, object formats).
//!
//! The reader is small: anything it does not expect — whitespace, nested objects or arrays, a
//! malformed token — makes [`scan`] return `None`, and the caller parses the row the general
//! way (simd-json, then serde_json), which also names real JSON errors. It does not check
//! what the mapper never writes and a reader would not mind (raw control characters inside
//! strings, a number such as `01`), so string ends are found with a short loop or `memchr`. Keys
//! and values are byte ranges into the row, so the field list is reused from row to row.

use std::ops::Range;

/// One value of a flat row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// A string without escapes: its contents, in place.
    Str(Range<usize>),
    /// A string with escapes: its raw contents (between the quotes), see [`unescape`].
    Escaped(Range<usize>),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Null,
}

/// One `"key":value` of a flat row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Field {
    pub key: Range<usize>,
    pub value: Value,
}

/// The fields of `row` (a complete compact JSON object, keys without escapes) into `fields`,
/// in row order; `None` when the row is anything else. `expected_keys[i]` is the key the
/// `i`-th field usually has (the mapper's column order): checking it in place is much cheaper
/// than searching for the key's end, and keys are most of a row's bytes. `Some(true)` says the
/// row's keys are exactly `expected_keys`, in order.
pub(super) fn scan(row: &str, expected_keys: &[&str], fields: &mut Vec<Field>) -> Option<bool> {
    fields.clear();
    let bytes = row.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut at = 1;
    if bytes.get(at) == Some(&b'}') {
        return (at + 1 == bytes.len()).then_some(expected_keys.is_empty());
    }
    let mut as_expected = true;
    loop {
        let expected = expected_keys.get(fields.len()).copied();
        let (key, next, was_expected) = key(bytes, at, expected)?;
        as_expected &= was_expected;
        if bytes.get(next) != Some(&b':') {
            return None;
        }
        let (value, next) = value(row, next + 1)?;
        fields.push(Field { key, value });
        at = next + 1;
        match bytes.get(next) {
            Some(b',') => {}
            Some(b'}') => {
                let complete = fields.len() == expected_keys.len();
                return (at == bytes.len()).then_some(as_expected && complete);
            }
            _ => return None,
        }
    }
}

/// The key starting at `bytes[at]` (a `"`), `expected` or any other without escapes, the
/// index after its closing quote, and whether it is `expected`.
fn key(bytes: &[u8], at: usize, expected: Option<&str>) -> Option<(Range<usize>, usize, bool)> {
    let start = at + 1;
    if let Some(name) = expected {
        let end = start + name.len();
        if bytes.get(at) == Some(&b'"')
            && bytes
                .get(start..end)
                .is_some_and(|key| same_bytes(key, name.as_bytes()))
            && bytes.get(end) == Some(&b'"')
        {
            return Some((start..end, end + 1, true));
        }
    }
    let (key, escaped, next) = string(bytes, at)?;
    (!escaped).then_some((key, next, false))
}

/// `a == b` without a call to `memcmp`: keys are 4–20 bytes, where the call and its set-up
/// cost more than comparing them a word at a time in place (the last word may overlap the one
/// before it).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
        bytes.get(at..at + N)?.try_into().ok()
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n < 8 {
        return word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if word::<8>(a, at) != word::<8>(b, at) {
            return false;
        }
        at += 8;
    }
    word::<8>(a, n - 8) == word::<8>(b, n - 8)
}

/// The string starting at `bytes[at]` (a `"`): its contents, whether it has escapes, and the
/// index after its closing quote.
fn string(bytes: &[u8], at: usize) -> Option<(Range<usize>, bool, usize)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let mut escaped = false;
    let mut i = start;
    loop {
        i += quote_or_backslash(bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some((start..i, escaped, i + 1));
        }
        // The escaped character is skipped: it may be a quote. `\u` digits need no care
        // here (no quote or backslash among them); `unescape` checks them.
        escaped = true;
        i += 2;
    }
}

/// Where the first `"` or `\` of `bytes` is. Most strings of a row are short: a plain loop
/// finds their end before `memchr`'s set-up would pay off; longer ones go to `memchr`.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 24;
    let head = &bytes[..bytes.len().min(SHORT)];
    if let Some(i) = head.iter().position(|&b| b == b'"' || b == b'\\') {
        return Some(i);
    }
    let rest = bytes.get(SHORT..)?;
    memchr::memchr2(b'"', b'\\', rest).map(|i| SHORT + i)
}

/// The value starting at `row[at]`, and the index after it.
fn value(row: &str, at: usize) -> Option<(Value, usize)> {
    let bytes = row.as_bytes();
    let literal = |text: &str, value: Value| {
        let end = at + text.len();
        (bytes.get(at..end)? == text.as_bytes()).then_some((value, end))
    };
    match *bytes.get(at)? {
        b'"' => {
            let (range, escaped, next) = string(bytes, at)?;
            let value = if escaped {
                Value::Escaped(range)
            } else {
                Value::Str(range)
            };
            Some((value, next))
        }
        b't' => literal("true", Value::Bool(true)),
        b'f' => literal("false", Value::Bool(false)),
        b'n' => literal("null", Value::Null),
        b'-' | b'0'..=b'9' => {
            let len = bytes[at..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))?;
            Some((number(&row[at..at + len])?, at + len))
        }
        _ => None,
    }
}

/// A JSON number as simd-json reads it: integers as `Int` (or `Uint` beyond `i64`), anything
/// with a fraction or exponent as `Float`.
fn number(text: &str) -> Option<Value> {
    if text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return text.parse().ok().map(Value::Float);
    }
    match text.parse() {
        Ok(int) => Some(Value::Int(int)),
        Err(_) => text.parse().ok().map(Value::Uint),
    }
}

/// The text of a JSON string's raw contents (`raw`, between the quotes) into `out`; `None`
/// for a bad escape or an unpaired surrogate.
pub(super) fn unescape(raw: &str, out: &mut String) -> Option<()> {
    out.clear();
    let bytes = raw.as_bytes();
    let (mut run, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&raw[run..i]);
        let escape = *bytes.get(i + 1).filter(|b| b.is_ascii())?;
        i += 2;
        let decoded = match escape {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let (decoded, used) = unicode_escape(&raw[i..])?;
                i += used;
                decoded
            }
            _ => return None,
        };
        out.push(decoded);
        run = i;
    }
    out.push_str(&raw[run..]);
    Some(())
}

/// The character of a `\u` escape whose hex digits start `rest` (a UTF-16 surrogate pair takes
/// a second `\uXXXX`), and how many bytes of `rest` it used.
fn unicode_escape(rest: &str) -> Option<(char, usize)> {
    let high = hex4(rest)?;
    if !(0xD800..0xDC00).contains(&high) {
        return Some((char::from_u32(high)?, 4));
    }
    let low = hex4(rest.get(4..)?.strip_prefix("\\u")?)?;
    if !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    Some((char::from_u32(code)?, 10))
}

fn hex4(text: &str) -> Option<u32> {
    let digits = text.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fields(row: &str) -> Option<Vec<(String, Value)>> {
        let mut fields = Vec::new();
        let keys = ["table", "s", "i", "u", "f", "t", "n", "b"];
        let in_order = scan(row, &keys, &mut fields)?;
        let names: Vec<&str> = fields.iter().map(|f| &row[f.key.clone()]).collect();
        assert_eq!(in_order, names == keys, "{row}");
        Some(
            fields
                .into_iter()
                .map(|f| (row[f.key].to_string(), f.value))
                .collect(),
        )
    }

    #[test]
    fn reads_every_kind_of_flat_value() {
        let row = r#"{"table":"t","s":"a\"b","i":-12,"u":18446744073709551615,"f":1.5e3,"t":true,"n":null,"b":false}"#;
        let read = fields(row).unwrap();
        let names: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["table", "s", "i", "u", "f", "t", "n", "b"]);
        assert_eq!(read[0].1, Value::Str(10..11));
        let Value::Escaped(range) = read[1].1.clone() else {
            panic!("{:?}", read[1])
        };
        let mut text = String::new();
        unescape(&row[range], &mut text).unwrap();
        assert_eq!(text, "a\"b");
        assert_eq!(read[2].1, Value::Int(-12));
        assert_eq!(read[3].1, Value::Uint(u64::MAX));
        assert_eq!(read[4].1, Value::Float(1500.0));
        assert_eq!(read[5].1, Value::Bool(true));
        assert_eq!(read[6].1, Value::Null);
        assert_eq!(read[7].1, Value::Bool(false));
        assert_eq!(fields("{}"), Some(vec![]));
    }

    #[test]
    fn anything_but_a_compact_flat_object_is_left_to_the_general_parser() {
        for row in [
            r#"{"a": 1}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":1} "#,
            r#"{"a":1"#,
            r#"{"a":tru}"#,
            r#"{"a":"x"#,
            r#"{"a\"":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":-}"#,
            r#"[1]"#,
            "",
        ] {
            assert_eq!(fields(row), None, "{row}");
        }
        let mut out = String::new();
        for raw in [r"\x", r"\u12", r"\ud800", r"\ud800\u0041", r"\udc00", "\\"] {
            assert_eq!(unescape(raw, &mut out), None, "{raw}");
        }
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let text = b"abcdefghijklmnopqrstuvwxyz";
        for len in 0..=text.len() {
            let a = &text[..len];
            assert!(same_bytes(a, a));
            for flipped in 0..len {
                let mut b = a.to_vec();
                b[flipped] ^= 1;
                assert!(!same_bytes(a, &b), "length {len}, byte {flipped}");
            }
            if len > 0 {
                assert!(!same_bytes(a, &a[..len - 1]));
            }
        }
    }

    proptest! {
        /// Any string serde_json writes (escapes, control characters, astral characters)
        /// reads back as the same text.
        #[test]
        fn strings_read_back_as_serde_json_wrote_them(text in any::<String>(), n in any::<i64>(), x in any::<f64>()) {
            let mut row = serde_json::Map::new();
            row.insert("s".into(), text.clone().into());
            row.insert("n".into(), n.into());
            row.insert("x".into(), x.into());
            let json = serde_json::to_string(&row).unwrap();
            let read = fields(&json).unwrap();
            let mut out = String::new();
            let string = read.iter().find(|(k, _)| k == "s").unwrap();
            match &string.1 {
                Value::Str(range) => prop_assert_eq!(&json[range.clone()], text.as_str()),
                Value::Escaped(range) => {
                    unescape(&json[range.clone()], &mut out).unwrap();
                    prop_assert_eq!(out.as_str(), text.as_str());
                }
                other => prop_assert!(false, "{other:?}"),
            }
            prop_assert!(read.contains(&("n".to_string(), Value::Int(n))));
            let float = read.iter().find(|(k, _)| k == "x").unwrap();
            match float.1 {
                Value::Float(read) => prop_assert_eq!(read, x),
                Value::Int(read) => prop_assert_eq!(read as f64, x),
                Value::Null => prop_assert!(!x.is_finite()),
                ref other => prop_assert!(false, "{other:?}"),
            }
        }

        /// The reader never panics, whatever the bytes.
        #[test]
        fn arbitrary_text_never_panics(text in "\\{[\"a-z0-9:,.\\\\{}\\[\\]é+-]{0,40}") {
            let mut fields = Vec::new();
            let _ = scan(&text, &["a"], &mut fields);
            let mut out = String::new();
            let _ = unescape(&text, &mut out);
        }
    }
}
