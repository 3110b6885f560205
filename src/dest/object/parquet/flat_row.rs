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
//! strings, a number such as `01`), so string ends are found eight bytes at a time (SWAR: a
//! word's quotes and backslashes in a few arithmetic steps). Keys and values are byte ranges
//! into the row, so the field list is reused from row to row; a string with escapes is
//! decoded while its end is searched for (one pass), into a buffer beside the fields, and its
//! value is a range of that buffer.

use std::ops::Range;

/// One value of a flat row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// A string without escapes: its contents, in place.
    Str(Range<usize>),
    /// A string with escapes: its decoded contents, in the `unescaped` buffer of [`scan`].
    Unescaped(Range<usize>),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Null,
}

/// What [`scan`] read of a row; the buffers are reused from row to row. A field's key is
/// kept only when it is not the expected one (the mapper's rows have none such): storing a
/// range per field cost more than the rare search of [`Fields::key`].
#[derive(Debug, Default)]
pub(super) struct Fields {
    /// The fields' values, in row order.
    pub values: Vec<Value>,
    /// `(i, key)` of each field `i` whose key is not the expected one at its place (a range
    /// of the row).
    pub other_keys: Vec<(usize, Range<usize>)>,
    /// The decoded text of the row's strings with escapes ([`Value::Unescaped`]).
    pub unescaped: Vec<u8>,
}

impl Fields {
    /// The key of field `i` of `row`, which was scanned with `expected`.
    pub(super) fn key<'a>(&self, i: usize, row: &'a str, expected: &'a ExpectedKeys) -> &'a str {
        match self.other_keys.iter().find(|(field, _)| *field == i) {
            Some((_, key)) => &row[key.clone()],
            None => &expected.names[i],
        }
    }
}

/// The keys a row's fields usually have, in order (the mapper's column order), each also as
/// the row spells it with its quotes and colon (`"name":`), so that one comparison checks it.
#[derive(Debug, Default)]
pub(super) struct ExpectedKeys {
    names: Vec<String>,
    spelled: Vec<Vec<u8>>,
}

impl ExpectedKeys {
    pub(super) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> ExpectedKeys {
        let names: Vec<String> = names.into_iter().map(str::to_string).collect();
        let spelled = names
            .iter()
            .map(|name| format!("\"{name}\":").into_bytes())
            .collect();
        ExpectedKeys { names, spelled }
    }
}

/// The fields of `row` (a complete compact JSON object, keys without escapes) into `fields`,
/// in row order, with the decoded text of its strings with escapes (UTF-8 when `row` is:
/// runs of the row cut at ASCII bytes, and decoded escapes); `None` when the row is anything
/// else. The `i`-th expected key is the key the `i`-th field usually has:
/// checking it in place is much cheaper than searching for the key's end, and keys are most
/// of a row's bytes. `Some(true)` says the row's keys are exactly the expected ones, in
/// order.
pub(super) fn scan(row: &str, expected_keys: &ExpectedKeys, fields: &mut Fields) -> Option<bool> {
    fields.values.clear();
    fields.other_keys.clear();
    fields.unescaped.clear();
    let bytes = row.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut at = 1;
    if bytes.get(at) == Some(&b'}') {
        return (at + 1 == bytes.len()).then_some(expected_keys.names.is_empty());
    }
    loop {
        let expected = expected_keys.spelled.get(fields.values.len());
        let (other_key, next) = key(bytes, at, expected.map(Vec::as_slice))?;
        if let Some(other_key) = other_key {
            fields.other_keys.push((fields.values.len(), other_key));
        }
        let (value, next) = value(row, next, &mut fields.unescaped)?;
        fields.values.push(value);
        at = next + 1;
        match bytes.get(next) {
            Some(b',') => {}
            Some(b'}') => {
                let complete = fields.values.len() == expected_keys.names.len();
                return (at == bytes.len()).then_some(fields.other_keys.is_empty() && complete);
            }
            _ => return None,
        }
    }
}

/// The key starting at `bytes[at]` (a `"`), `expected` (spelled `"name":`) or any other
/// without escapes, followed by its colon: `None` if it is `expected`, else its range; and
/// the index after the colon.
fn key(bytes: &[u8], at: usize, expected: Option<&[u8]>) -> Option<(Option<Range<usize>>, usize)> {
    if let Some(spelled) = expected {
        let next = at + spelled.len();
        if bytes
            .get(at..next)
            .is_some_and(|key| same_bytes(key, spelled))
        {
            return Some((None, next));
        }
    }
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let end = start + quote_or_backslash(bytes.get(start..)?)?;
    let colon = end + 1;
    (bytes[end] == b'"' && bytes.get(colon) == Some(&b':')).then_some((Some(start..end), colon + 1))
}

/// `a == b` without a call to `memcmp`: keys are 7–23 bytes with their quotes and colon, where the call and its set-up
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

/// The string value starting at `bytes[at]` (a `"`) and the index after its closing quote:
/// its contents in place when it has no escapes, else decoded onto `unescaped`.
fn string(bytes: &[u8], at: usize, unescaped: &mut Vec<u8>) -> Option<(Value, usize)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let i = start + quote_or_backslash(bytes.get(start..)?)?;
    if bytes[i] == b'"' {
        return Some((Value::Str(start..i), i + 1));
    }
    let from = unescaped.len();
    unescaped.extend_from_slice(&bytes[start..i]);
    let end = unescape_to_quote(bytes, i, unescaped)?;
    Some((Value::Unescaped(from..unescaped.len()), end + 1))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Where the first `"` or `\` of `bytes` is, eight bytes at a time: most of a row's string
/// bytes are in values of 5–50 bytes, where a byte-by-byte loop spent ≈ 5 instructions a byte
/// (a fifth of the reader) and `memchr`'s set-up does not pay off.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let found = quote_or_backslash_bits(u64::from_le_bytes(*word));
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// The high bit of every byte of `word` that is a `"` or a `\` (the classic "has a zero
/// byte" test on `word` xor each pattern). Bytes above the first match may be flagged falsely
/// (a borrow), so only the lowest flag counts: the first match in little-endian order.
#[inline]
fn quote_or_backslash_bits(word: u64) -> u64 {
    let quotes = word ^ (ONES * u64::from(b'"'));
    let backslashes = word ^ (ONES * u64::from(b'\\'));
    ((quotes.wrapping_sub(ONES) & !quotes) | (backslashes.wrapping_sub(ONES) & !backslashes))
        & HIGHS
}

/// The value starting at `row[at]`, and the index after it; decoded strings go onto
/// `unescaped`.
fn value(row: &str, at: usize, unescaped: &mut Vec<u8>) -> Option<(Value, usize)> {
    let bytes = row.as_bytes();
    let literal = |text: &str, value: Value| {
        let end = at + text.len();
        (bytes.get(at..end)? == text.as_bytes()).then_some((value, end))
    };
    match *bytes.get(at)? {
        b'"' => string(bytes, at, unescaped),
        b't' => literal("true", Value::Bool(true)),
        b'f' => literal("false", Value::Bool(false)),
        b'n' => literal("null", Value::Null),
        b'-' | b'0'..=b'9' => integer(bytes, at).or_else(|| {
            let len = bytes[at..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))?;
            Some((number(&row[at..at + len])?, at + len))
        }),
        _ => None,
    }
}

/// The integer starting at `bytes[at]` (digits after an optional `-`, then a byte that is not
/// part of a number), read in one pass, and the index after it; `None` leaves anything else
/// (fractions, exponents, overflow) to [`number`]. Integers are most of a row's numbers (ids,
/// Unix ms times, counts), and parsing them through `str::parse` after finding their end cost
/// three passes over the digits. Eight digits at a time while there are eight (a Unix ms time
/// has 13), then one at a time.
fn integer(bytes: &[u8], at: usize) -> Option<(Value, usize)> {
    let negative = bytes.get(at) == Some(&b'-');
    let start = at + usize::from(negative);
    let mut end = start;
    let mut magnitude: u64 = 0;
    while let Some(eight) = bytes
        .get(end..)
        .and_then(<[u8]>::first_chunk::<8>)
        .and_then(|chunk| eight_digits(*chunk))
    {
        magnitude = magnitude.checked_mul(100_000_000)?.checked_add(eight)?;
        end += 8;
    }
    while let Some(digit) = bytes
        .get(end)
        .and_then(|b| b.checked_sub(b'0'))
        .filter(|d| *d < 10)
    {
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit))?;
        end += 1;
    }
    let ends_number = matches!(bytes.get(end), Some(b'.' | b'e' | b'E' | b'+' | b'-'));
    if end == start || ends_number {
        return None;
    }
    let value = match (negative, i64::try_from(magnitude)) {
        (false, Ok(int)) => Value::Int(int),
        (false, Err(_)) => Value::Uint(magnitude),
        (true, _) => Value::Int(i64::try_from(-i128::from(magnitude)).ok()?),
    };
    Some((value, end))
}

/// The number eight ASCII digits spell (the first the most significant), or `None` if any
/// byte is not a digit: a few word operations instead of a multiply and two overflow checks
/// per digit (simdjson's `is_made_of_eight_digits_fast` and `parse_eight_digits_unrolled`).
#[inline]
fn eight_digits(chunk: [u8; 8]) -> Option<u64> {
    const NIBBLE_HIGHS: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let word = u64::from_le_bytes(chunk);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 leaves it 3.
    let highs = (word & NIBBLE_HIGHS) | (((word.wrapping_add(ONES * 6)) & NIBBLE_HIGHS) >> 4);
    if highs != ONES * 0x33 {
        return None;
    }
    let pairs = ((word & (ONES * 0x0F)).wrapping_mul(10 * 256 + 1)) >> 8;
    let quads = ((pairs & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1)) >> 16;
    Some(((quads & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1)) >> 32)
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

/// Decode the rest of a JSON string from `bytes[at]` up to its closing quote onto `out`,
/// and return the quote's index; `None` for a bad escape, an unpaired surrogate or no closing
/// quote. Runs are copied eight bytes at a time up to the next quote or backslash (a word is
/// stored whole and the bytes past the match dropped): JSON columns hold an escape every few
/// bytes (`{\"key\":\"user-0\"}`), where copying each run between escapes with its own
/// `memcpy` cost more than the runs. Searching for the end and decoding in one pass reads the
/// string once instead of twice.
fn unescape_to_quote(bytes: &[u8], mut at: usize, out: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at),
            b'\\' => at += 1 + escape(bytes.get(at + 1..)?, out)?,
            _ => at += copy_run(&bytes[at..], out)?,
        }
    }
}

/// Copy `bytes` up to its first quote or backslash onto `out`, eight bytes at a time; how
/// many bytes that was (`None`: there is neither).
fn copy_run(bytes: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        out.extend_from_slice(word);
        let found = quote_or_backslash_bits(u64::from_le_bytes(*word));
        if found != 0 {
            let before = found.trailing_zeros() as usize / 8;
            out.truncate(out.len() - 8 + before);
            return Some(at + before);
        }
        at += 8;
    }
    let run = bytes[at..].iter().position(|&b| b == b'"' || b == b'\\')?;
    out.extend_from_slice(&bytes[at..at + run]);
    Some(at + run)
}

/// Decode the escape whose letter starts `rest` (after its backslash) onto `out`; the bytes
/// of `rest` it used.
fn escape(rest: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let decoded = match *rest.first()? {
        b @ (b'"' | b'\\' | b'/') => b,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let (decoded, used) = unicode_escape(&rest[1..])?;
            out.extend_from_slice(decoded.encode_utf8(&mut [0; 4]).as_bytes());
            return Some(1 + used);
        }
        _ => return None,
    };
    out.push(decoded);
    Some(1)
}

/// The character of a `\u` escape whose hex digits start `rest` (a UTF-16 surrogate pair takes
/// a second `\uXXXX`), and how many bytes of `rest` it used.
fn unicode_escape(rest: &[u8]) -> Option<(char, usize)> {
    let high = hex4(rest)?;
    if !(0xD800..0xDC00).contains(&high) {
        return Some((char::from_u32(high)?, 4));
    }
    let low = hex4(rest.get(4..)?.strip_prefix(b"\\u")?)?;
    if !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
    Some((char::from_u32(code)?, 10))
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)?
        .iter()
        .try_fold(0, |code, &b| Some(code * 16 + char::from(b).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each field of a row: its key's name and its value.
    type Named = Vec<(String, Value)>;

    /// The fields of `row` by key name, and the buffer of its decoded strings.
    fn scanned(row: &str) -> Option<(Named, Vec<u8>)> {
        let mut fields = Fields::default();
        let keys = ["table", "s", "i", "u", "f", "t", "n", "b"];
        let expected = ExpectedKeys::new(keys);
        let in_order = scan(row, &expected, &mut fields)?;
        let names: Vec<&str> = (0..fields.values.len())
            .map(|i| fields.key(i, row, &expected))
            .collect();
        assert_eq!(in_order, names == keys, "{row}");
        let named = names.iter().map(|name| name.to_string());
        Some((named.zip(fields.values).collect(), fields.unescaped))
    }

    fn fields(row: &str) -> Option<Named> {
        scanned(row).map(|(fields, _)| fields)
    }

    /// The text of a string value of `row`.
    fn text<'a>(row: &'a str, value: &Value, unescaped: &'a [u8]) -> &'a [u8] {
        match value {
            Value::Str(range) => &row.as_bytes()[range.clone()],
            Value::Unescaped(range) => &unescaped[range.clone()],
            other => panic!("{other:?} is not a string"),
        }
    }

    #[test]
    fn reads_every_kind_of_flat_value() {
        let row = r#"{"table":"t","s":"a\"b","i":-12,"u":18446744073709551615,"f":1.5e3,"t":true,"n":null,"b":false}"#;
        let (read, unescaped) = scanned(row).unwrap();
        let names: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["table", "s", "i", "u", "f", "t", "n", "b"]);
        assert_eq!(read[0].1, Value::Str(10..11));
        assert!(matches!(read[1].1, Value::Unescaped(_)), "{:?}", read[1]);
        assert_eq!(text(row, &read[1].1, &unescaped), b"a\"b");
        assert_eq!(read[2].1, Value::Int(-12));
        assert_eq!(read[3].1, Value::Uint(u64::MAX));
        assert_eq!(read[4].1, Value::Float(1500.0));
        assert_eq!(read[5].1, Value::Bool(true));
        assert_eq!(read[6].1, Value::Null);
        assert_eq!(read[7].1, Value::Bool(false));
        assert_eq!(fields("{}"), Some(vec![]));
    }

    #[test]
    fn eight_digits_are_read_as_their_number_and_anything_else_refused() {
        for text in ["00000000", "12345678", "99999999", "17950000", "00000001"] {
            let chunk: [u8; 8] = text.as_bytes().try_into().unwrap();
            assert_eq!(eight_digits(chunk), text.parse().ok(), "{text}");
        }
        for text in [
            "1234567a", "/2345678", ":2345678", "1234 678", "-1234567", "123.4567",
        ] {
            let chunk: [u8; 8] = text.as_bytes().try_into().unwrap();
            assert_eq!(eight_digits(chunk), None, "{text}");
        }
        for byte in 0..=255u8 {
            let mut chunk = *b"12345678";
            chunk[3] = byte;
            let expected = byte
                .is_ascii_digit()
                .then(|| 12_305_678 + 10_000 * u64::from(byte - b'0'));
            assert_eq!(eight_digits(chunk), expected, "byte {byte}");
        }
    }

    #[test]
    fn integers_at_the_edges_read_as_str_parse_reads_them() {
        let read = |number: &str| {
            let row = format!(r#"{{"table":{number}}}"#);
            fields(&row).map(|fields| fields[0].1.clone())
        };
        assert_eq!(read("-9223372036854775808"), Some(Value::Int(i64::MIN)));
        assert_eq!(read("9223372036854775807"), Some(Value::Int(i64::MAX)));
        assert_eq!(read("9223372036854775808"), Some(Value::Uint(1 << 63)));
        assert_eq!(read("-0"), Some(Value::Int(0)));
        assert_eq!(read("12e2"), Some(Value::Float(1200.0)));
        assert_eq!(read("-1.5"), Some(Value::Float(-1.5)));
        for refused in [
            "-9223372036854775809",
            "18446744073709551616",
            "-",
            "1-2",
            "1+2",
        ] {
            assert_eq!(read(refused), None, "{refused}");
        }
    }

    #[test]
    fn anything_but_a_compact_flat_object_is_left_to_the_general_parser() {
        for row in [
            r#"{"a": 1}"#,
            r#"{"a" :1}"#,
            r#"{"table" :1}"#,
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
        for raw in [
            r"\x",
            r"\u12",
            r"\ud800",
            r"\ud800\u0041",
            r"\udc00",
            "\\",
            r"a\",
        ] {
            let row = format!(r#"{{"a":"{raw}"}}"#);
            assert_eq!(fields(&row), None, "{row}");
        }
    }

    #[test]
    fn keys_that_only_start_like_the_expected_one_are_read_by_name() {
        for row in [r#"{"tables":1}"#, r#"{"tabl":1}"#, r#"{"table":1,"ss":2}"#] {
            let read = fields(row).unwrap();
            let names: Vec<&str> = row[1..].split(':').take(1).collect();
            assert_eq!(format!("\"{}\"", read[0].0), names[0], "{row}");
        }
    }

    #[test]
    fn escapes_decode_to_their_characters() {
        for (raw, decoded) in [
            (r"\u00e9\ud83d\ude00", "é😀"),
            (r#"\"\\\/\b\f\n\r\t"#, "\"\\/\u{8}\u{c}\n\r\t"),
            (
                r#"{\"key\":\"user-0\",\"kind\":\"user\",\"name\":\"U0\"}"#,
                r#"{"key":"user-0","kind":"user","name":"U0"}"#,
            ),
            (
                r"long run before the escape\n",
                "long run before the escape\n",
            ),
        ] {
            let row = format!(r#"{{"table":"x","s":"{raw}","i":1}}"#);
            let (read, unescaped) = scanned(&row).unwrap();
            assert_eq!(
                text(&row, &read[1].1, &unescaped),
                decoded.as_bytes(),
                "{row}"
            );
            assert_eq!(read[2].1, Value::Int(1), "{row}");
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
            let (read, unescaped) = scanned(&json).unwrap();
            let string = read.iter().find(|(k, _)| k == "s").unwrap();
            prop_assert_eq!(super::tests::text(&json, &string.1, &unescaped), text.as_bytes());
            prop_assert!(read.contains(&("n".to_string(), Value::Int(n))));
            let float = read.iter().find(|(k, _)| k == "x").unwrap();
            match float.1 {
                Value::Float(read) => prop_assert_eq!(read, x),
                Value::Int(read) => prop_assert_eq!(read as f64, x),
                Value::Null => prop_assert!(!x.is_finite()),
                ref other => prop_assert!(false, "{other:?}"),
            }
        }

        /// Integers of every length read as `str::parse` reads them.
        #[test]
        fn integers_read_as_str_parse_reads_them(n in any::<i64>(), u in any::<u64>(), digits in "[0-9]{1,24}") {
            for text in [n.to_string(), u.to_string(), digits] {
                let row = format!(r#"{{"table":{text}}}"#);
                let read = fields(&row).map(|fields| fields[0].1.clone());
                let expected = match (text.parse::<i64>(), text.parse::<u64>()) {
                    (Ok(int), _) => Some(Value::Int(int)),
                    (_, Ok(uint)) => Some(Value::Uint(uint)),
                    _ => None,
                };
                prop_assert_eq!(read, expected, "{}", text);
            }
        }

        /// The reader never panics, whatever the bytes.
        #[test]
        fn arbitrary_text_never_panics(text in "\\{[\"a-z0-9:,.\\\\{}\\[\\]é+-]{0,40}") {
            let (mut fields, mut out) = (Fields::default(), Vec::new());
            let _ = scan(&text, &ExpectedKeys::new(["a"]), &mut fields);
            let _ = unescape_to_quote(text.as_bytes(), 0, &mut out);
        }

        /// The word-at-a-time search finds what a byte-by-byte search finds.
        #[test]
        fn quote_or_backslash_is_the_first_quote_or_backslash(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0u8), Just(0x80u8), any::<u8>()],
                0..40,
            )
        ) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\');
            prop_assert_eq!(quote_or_backslash(&bytes), expected);
        }
    }
}
