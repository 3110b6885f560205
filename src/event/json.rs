//! Tape navigation and a small JSON writer: the two primitives every decoder and schema uses.
//!
//! simd-json parses a record into a *tape*: a flat `Vec<Node>` where an object or array node
//! is followed by its members and carries the total count of nodes below it. We address values
//! by their absolute index in that tape (`usize`), so an [`super::Event`] is just "the tape +
//! the index of its object", and looking up a field is a linear scan over the object's keys
//! (events have ~10 keys; a scan beats hashing at that size and allocates nothing).
//!
//! A [`Doc`] is a record's tape plus the original text of the numbers the tape alone would not
//! reproduce (see `super::number`); it dereferences to the tape, so navigation takes plain
//! `&Nodes` while the writer and the numeric accessors take the `Doc`.
//!
//! The writer appends to a `Vec<u8>` and never fails: strings are escaped per RFC 8259
//! (fast path: no byte needs escaping → one `memcpy`); numbers from the tape are written with
//! the digits they were sent with (integers through `itoa`, whose output is the sent text;
//! anything else from the document's number texts); numbers the schemas compute go through
//! `itoa` / `ryu`.
//!
//! Invariant: every function here is total — out-of-range indices and unexpected node types
//! return `None` (navigation) instead of panicking, so arbitrary tapes from fuzzed input are safe.

use std::ops::Range;

use simd_json::{Node, StaticNode};

use super::number::NumberTexts;

/// A parsed record: the tape nodes, borrowing strings from the record's scratch copy.
pub(crate) type Nodes<'a> = [Node<'a>];

/// A parsed document: the tape and the original texts of its inexact numbers.
#[derive(Debug, Default)]
pub(crate) struct Doc<'a> {
    pub(crate) nodes: Vec<Node<'a>>,
    pub(crate) numbers: NumberTexts,
    /// Byte range in the parsed text of each top-level array element that can be copied as
    /// sent (`super::verbatim`); empty for other documents.
    pub(crate) verbatim: Vec<Option<Range<u32>>>,
}

impl<'a> std::ops::Deref for Doc<'a> {
    type Target = [Node<'a>];
    #[inline]
    fn deref(&self) -> &[Node<'a>] {
        &self.nodes
    }
}

/// Number of tape nodes the value at `idx` occupies, including itself.
#[inline]
pub(crate) fn span(nodes: &Nodes<'_>, idx: usize) -> usize {
    match nodes.get(idx) {
        Some(Node::Object { count, .. }) | Some(Node::Array { count, .. }) => count + 1,
        _ => 1,
    }
}

/// Iterator over the `(key, value index)` pairs of the object at `idx` (empty if not an object).
pub(crate) struct ObjectIter<'t, 'a> {
    nodes: &'t Nodes<'a>,
    next: usize,
    remaining: usize,
}

impl<'a> Iterator for ObjectIter<'_, 'a> {
    type Item = (&'a str, usize);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let key = match self.nodes.get(self.next)? {
            Node::String(key) => *key,
            _ => return None,
        };
        let value = self.next + 1;
        self.next = value + span(self.nodes, value);
        Some((key, value))
    }
}

#[inline]
pub(crate) fn object_iter<'t, 'a>(nodes: &'t Nodes<'a>, idx: usize) -> ObjectIter<'t, 'a> {
    let remaining = match nodes.get(idx) {
        Some(Node::Object { len, .. }) => *len,
        _ => 0,
    };
    ObjectIter {
        nodes,
        next: idx + 1,
        remaining,
    }
}

/// Iterator over the element indices of the array at `idx` (empty if not an array).
pub(crate) struct ArrayIter<'t, 'a> {
    nodes: &'t Nodes<'a>,
    next: usize,
    remaining: usize,
}

impl Iterator for ArrayIter<'_, '_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 || self.next >= self.nodes.len() {
            return None;
        }
        self.remaining -= 1;
        let element = self.next;
        self.next += span(self.nodes, element);
        Some(element)
    }
}

#[inline]
pub(crate) fn array_iter<'t, 'a>(nodes: &'t Nodes<'a>, idx: usize) -> ArrayIter<'t, 'a> {
    let remaining = match nodes.get(idx) {
        Some(Node::Array { len, .. }) => *len,
        _ => 0,
    };
    ArrayIter {
        nodes,
        next: idx + 1,
        remaining,
    }
}

/// Value index of `key` in the object at `idx`.
#[inline]
pub(crate) fn get(nodes: &Nodes<'_>, idx: usize, key: &str) -> Option<usize> {
    object_iter(nodes, idx).find_map(|(k, v)| (k == key).then_some(v))
}

#[inline]
pub(crate) fn is_object(nodes: &Nodes<'_>, idx: usize) -> bool {
    matches!(nodes.get(idx), Some(Node::Object { .. }))
}

#[inline]
pub(crate) fn is_array(nodes: &Nodes<'_>, idx: usize) -> bool {
    matches!(nodes.get(idx), Some(Node::Array { .. }))
}

#[inline]
pub(crate) fn is_null(nodes: &Nodes<'_>, idx: usize) -> bool {
    matches!(nodes.get(idx), Some(Node::Static(StaticNode::Null)))
}

#[inline]
pub(crate) fn is_number(nodes: &Nodes<'_>, idx: usize) -> bool {
    matches!(
        nodes.get(idx),
        Some(Node::Static(
            StaticNode::U64(_) | StaticNode::I64(_) | StaticNode::F64(_)
        ))
    )
}

#[inline]
pub(crate) fn as_str<'a>(nodes: &Nodes<'a>, idx: usize) -> Option<&'a str> {
    match nodes.get(idx)? {
        Node::String(s) => Some(*s),
        _ => None,
    }
}

#[inline]
pub(crate) fn as_bool(nodes: &Nodes<'_>, idx: usize) -> Option<bool> {
    match nodes.get(idx)? {
        Node::Static(StaticNode::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// Largest float whose integer value is exact (2⁵³): a bigger "integral" float such as
/// `12345678901234567890.5` is an approximation, not an integer the sender meant.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Whether the number at `idx` is one simd-json refused (outside every 64-bit type); numeric
/// accessors treat it as not representable.
#[inline]
fn refused(doc: &Doc<'_>, idx: usize) -> bool {
    !doc.numbers.is_empty() && doc.numbers.placeholder(idx).is_some()
}

/// A non-negative integer; floats with an exact integral value (`12.0`) are accepted too,
/// because some SDKs serialise timestamps from doubles. `None` for numbers beyond `u64`.
#[inline]
pub(crate) fn as_u64(doc: &Doc<'_>, idx: usize) -> Option<u64> {
    if refused(doc, idx) {
        return None;
    }
    match doc.get(idx)? {
        Node::Static(StaticNode::U64(n)) => Some(*n),
        Node::Static(StaticNode::I64(n)) => u64::try_from(*n).ok(),
        Node::Static(StaticNode::F64(f)) if f.fract() == 0.0 && (0.0..=MAX_EXACT).contains(f) => {
            Some(*f as u64)
        }
        _ => None,
    }
}

/// An integer that fits `i64` (integral floats too); `None` beyond.
#[inline]
pub(crate) fn as_i64(doc: &Doc<'_>, idx: usize) -> Option<i64> {
    if refused(doc, idx) {
        return None;
    }
    match doc.get(idx)? {
        Node::Static(StaticNode::U64(n)) => i64::try_from(*n).ok(),
        Node::Static(StaticNode::I64(n)) => Some(*n),
        Node::Static(StaticNode::F64(f)) if f.fract() == 0.0 && f.abs() <= MAX_EXACT => {
            Some(*f as i64)
        }
        _ => None,
    }
}

/// A number as the nearest `f64`; `None` when it is beyond the `f64` range (`1e400`).
#[inline]
pub(crate) fn as_f64(doc: &Doc<'_>, idx: usize) -> Option<f64> {
    if let Some(text) = doc.numbers.placeholder(idx) {
        return text.parse::<f64>().ok().filter(|f| f.is_finite());
    }
    match doc.get(idx)? {
        Node::Static(StaticNode::U64(n)) => Some(*n as f64),
        Node::Static(StaticNode::I64(n)) => Some(*n as f64),
        Node::Static(StaticNode::F64(f)) => Some(*f),
        _ => None,
    }
}

/// Human name of a value's JSON type, for error messages.
pub(crate) fn type_name(nodes: &Nodes<'_>, idx: usize) -> &'static str {
    match nodes.get(idx) {
        Some(Node::Object { .. }) => "an object",
        Some(Node::Array { .. }) => "an array",
        Some(Node::String(_)) => "a string",
        Some(Node::Static(StaticNode::Bool(_))) => "a boolean",
        Some(Node::Static(StaticNode::Null)) => "null",
        Some(Node::Static(_)) => "a number",
        None => "nothing",
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// For each byte: 0 = copy as is, otherwise the character after the backslash
/// (`u` = `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Append `s` as a JSON string literal (with quotes).
///
/// Fast path for the common case of a string with nothing to escape: one check, one reserve,
/// one copy.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    write_str_content(out, s);
    out.push(b'"');
}

/// Whether any byte of `bytes` must be escaped in a JSON string.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    words
        .iter()
        .any(|word| word_needs_escape(u64::from_le_bytes(*word)))
        || tail.iter().any(|&b| ESCAPE[b as usize] != 0)
}

/// Append the escaped content of `s` (no quotes).
///
/// Most strings in events (keys, flag keys, context keys, kinds) need no escaping, so the scan
/// looks at 8 bytes per step (SWAR) and copies clean runs with one `memcpy`; only a word that
/// contains a byte to escape is handled byte by byte.
#[inline]
pub(crate) fn write_str_content(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut start = 0; // first byte not yet copied
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(word);
            if !word_needs_escape(u64::from_le_bytes(chunk)) {
                i += 8;
                continue;
            }
        }
        // Byte by byte through this word (or the tail).
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let esc = ESCAPE[b as usize];
            if esc != 0 {
                out.extend_from_slice(&bytes[start..i]);
                write_escape(out, b, esc);
                start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any of the 8 bytes is a control character, `"` or `\\` (exact, no false negatives;
/// a false positive only costs the byte-by-byte path).
#[inline(always)]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = w ^ (ONES * b'"' as u64);
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = w ^ (ONES * b'\\' as u64);
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | quote | backslash) & HIGH != 0
}

#[inline]
fn write_escape(out: &mut Vec<u8>, b: u8, esc: u8) {
    if esc == b'u' {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0xf) as usize],
        ]);
    } else {
        out.extend_from_slice(&[b'\\', esc]);
    }
}

#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[inline]
pub(crate) fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Append the number at `idx` with the digits it was sent with.
#[inline]
fn write_number(out: &mut Vec<u8>, doc: &Doc<'_>, idx: usize, number: &StaticNode) {
    // Non-zero integers print exactly as sent (JSON forbids leading zeros and `+`); zeros may
    // be `-0` or stand-ins for refused numbers, floats may be written in many ways.
    let inexact = !matches!(number, StaticNode::U64(1..) | StaticNode::I64(..=-1 | 1..));
    if inexact {
        if let Some(text) = doc.numbers.text(idx) {
            out.extend_from_slice(text.as_bytes());
            return;
        }
    }
    match number {
        StaticNode::U64(n) => write_u64(out, *n),
        StaticNode::I64(n) => write_i64(out, *n),
        StaticNode::F64(f) => write_f64(out, *f),
        StaticNode::Bool(true) => out.extend_from_slice(b"true"),
        StaticNode::Bool(false) => out.extend_from_slice(b"false"),
        StaticNode::Null => out.extend_from_slice(b"null"),
    }
}

/// Append the value at `idx` as compact JSON. A missing index writes `null`.
pub(crate) fn write_value(out: &mut Vec<u8>, doc: &Doc<'_>, idx: usize) {
    match doc.get(idx) {
        None => out.extend_from_slice(b"null"),
        Some(Node::Static(scalar)) => write_number(out, doc, idx, scalar),
        Some(Node::String(s)) => write_str(out, s),
        Some(Node::Object { .. }) => {
            out.push(b'{');
            for (n, (key, value)) in object_iter(doc, idx).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, doc, value);
            }
            out.push(b'}');
        }
        Some(Node::Array { .. }) => {
            out.push(b'[');
            for (n, element) in array_iter(doc, idx).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_value(out, doc, element);
            }
            out.push(b']');
        }
    }
}

/// Append the value at `idx` as a plain string: strings unquoted, everything else as its
/// compact JSON text (for schemas whose attributes must be strings, e.g. mParticle).
/// The output is escaped for use *inside* a JSON string literal.
pub(crate) fn write_value_as_string_content(out: &mut Vec<u8>, doc: &Doc<'_>, idx: usize) {
    match doc.get(idx) {
        Some(Node::String(s)) => write_str_content(out, s),
        _ => write_json_text_content(out, doc, idx),
    }
}

/// Append the compact JSON text of the value at `idx`, escaped so that it can sit inside a
/// JSON string literal (`{"a":"x"}` → `{\"a\":\"x\"}`), without an intermediate buffer.
pub(crate) fn write_json_text_content(out: &mut Vec<u8>, doc: &Doc<'_>, idx: usize) {
    let nodes: &Nodes<'_> = doc;
    match nodes.get(idx) {
        Some(Node::String(s)) => {
            out.extend_from_slice(b"\\\"");
            write_str_double_escaped(out, s);
            out.extend_from_slice(b"\\\"");
        }
        Some(Node::Object { .. }) => {
            out.push(b'{');
            for (n, (key, value)) in object_iter(nodes, idx).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"\\\"");
                write_str_double_escaped(out, key);
                out.extend_from_slice(b"\\\":");
                write_json_text_content(out, doc, value);
            }
            out.push(b'}');
        }
        Some(Node::Array { .. }) => {
            out.push(b'[');
            for (n, element) in array_iter(nodes, idx).enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_json_text_content(out, doc, element);
            }
            out.push(b']');
        }
        // Scalars contain nothing that needs escaping.
        _ => write_value(out, doc, idx),
    }
}

/// String content escaped twice (JSON text of a string, itself inside a string literal).
fn write_str_double_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            b'"' => out.extend_from_slice(b"\\\\\\\""),
            b'\\' => out.extend_from_slice(b"\\\\\\\\"),
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\\\u00");
                out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
            }
            other => out.extend_from_slice(&[b'\\', b'\\', other]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Small builder for `{"k":v,...}` with comma handling, so schema code reads like the table
/// it implements.
pub(crate) struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    #[inline]
    pub(crate) fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// Start a field and return the buffer to write its value into.
    #[inline]
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    /// The underlying buffer, for writing inside the current value.
    #[inline]
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    #[inline]
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_str(out, value);
    }

    /// A string field whose key and value need no escaping (a literal key; a value such as
    /// an event id, hex digits and dashes): copied without scanning them.
    #[inline]
    pub(crate) fn plain_str(&mut self, key: &str, value: &str) {
        debug_assert!(!needs_escape(key.as_bytes()) && !needs_escape(value.as_bytes()));
        let first = std::mem::replace(&mut self.first, false);
        let out = &mut *self.out;
        out.reserve(key.len() + value.len() + 6);
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }

    #[inline]
    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    #[inline]
    pub(crate) fn raw(&mut self, key: &str, json: &[u8]) {
        let out = self.key(key);
        out.extend_from_slice(json);
    }

    #[inline]
    pub(crate) fn u64(&mut self, key: &str, value: u64) {
        let out = self.key(key);
        write_u64(out, value);
    }

    #[inline]
    pub(crate) fn bool(&mut self, key: &str, value: bool) {
        self.raw(key, if value { b"true" } else { b"false" });
    }

    #[inline]
    pub(crate) fn null(&mut self, key: &str) {
        self.raw(key, b"null");
    }

    /// A value copied from the tape (`null` if `idx` is `None`).
    #[inline]
    pub(crate) fn value(&mut self, key: &str, doc: &Doc<'_>, idx: Option<usize>) {
        let out = self.key(key);
        match idx {
            Some(idx) => write_value(out, doc, idx),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// A value copied from the tape, omitted when absent.
    #[inline]
    pub(crate) fn opt_value(&mut self, key: &str, doc: &Doc<'_>, idx: Option<usize>) {
        if let Some(idx) = idx {
            let out = self.key(key);
            write_value(out, doc, idx);
        }
    }

    /// Continue `object`, a complete JSON object written elsewhere (e.g. an event copied as
    /// sent): its members are copied and further fields follow them. Anything that is not
    /// `{…}` counts as an empty object.
    #[inline]
    pub(crate) fn continuing(out: &'o mut Vec<u8>, object: &[u8]) -> Self {
        let members = object
            .strip_prefix(b"{")
            .and_then(|rest| rest.strip_suffix(b"}"))
            .unwrap_or_default();
        out.push(b'{');
        out.extend_from_slice(members);
        ObjectWriter {
            out,
            first: members.is_empty(),
        }
    }

    #[inline]
    pub(crate) fn finish(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tape(text: &str) -> Doc<'static> {
        let bytes: &'static mut [u8] = Box::leak(text.as_bytes().to_vec().into_boxed_slice());
        Doc {
            nodes: simd_json::to_tape(bytes).unwrap().0,
            ..Doc::default()
        }
    }

    #[test]
    fn round_trips_compact_json() {
        let text = r#"{"a":[1,-2,3.5,true,null,{"b":"x\"y\n\u0001"}],"c":{},"d":[]}"#;
        let nodes = tape(text);
        let mut out = Vec::new();
        write_value(&mut out, &nodes, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[1,-2,3.5,true,null,{"b":"x\"y\n\u0001"}],"c":{},"d":[]}"#
        );
    }

    #[test]
    fn escapes_every_special_byte_at_every_position() {
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 0..20 {
                for pos in 0..len {
                    let mut text = vec![b'a'; len];
                    text[pos] = special;
                    let text = String::from_utf8(text).unwrap();
                    let mut out = Vec::new();
                    write_str(&mut out, &text);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "byte {special:#x} at {pos} of {len}"
                    );
                }
            }
        }
        let mut out = Vec::new();
        write_str(&mut out, "é\u{7f}\u{1F600}~ plain");
        assert_eq!(out, "\"é\u{7f}\u{1F600}~ plain\"".as_bytes());
    }

    #[test]
    fn navigates_nested_objects() {
        let nodes = tape(r#"{"x":{"y":[1,2]},"k":"v","n":12.0}"#);
        assert_eq!(
            get(&nodes, 0, "k").and_then(|i| as_str(&nodes, i)),
            Some("v")
        );
        assert_eq!(
            get(&nodes, 0, "n").and_then(|i| as_u64(&nodes, i)),
            Some(12)
        );
        let y = get(&nodes, 0, "x")
            .and_then(|x| get(&nodes, x, "y"))
            .unwrap();
        assert_eq!(array_iter(&nodes, y).count(), 2);
        assert_eq!(get(&nodes, 0, "missing"), None);
        assert_eq!(get(&nodes, 99, "k"), None);
    }

    #[test]
    fn non_string_values_become_escaped_strings() {
        let nodes = tape(r#"{"a":{"q":"\""},"b":"plain"}"#);
        let mut out = Vec::new();
        write_value_as_string_content(&mut out, &nodes, get(&nodes, 0, "a").unwrap());
        assert_eq!(out, br#"{\"q\":\"\\\"\"}"#);
        out.clear();
        write_value_as_string_content(&mut out, &nodes, get(&nodes, 0, "b").unwrap());
        assert_eq!(out, b"plain");
    }
}
