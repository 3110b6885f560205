//! Verbatim events: which elements of a parsed top-level array can be copied as sent.
//!
//! The `launchdarkly` schema passes each event through with every field in the order sent.
//! Writing it again from the tape (every key and string escaped, every number formatted) was
//! the largest single cost of delivering an event; but when the client sent the event compact
//! and without escapes, that rewrite reproduces the sent text byte for byte. For those events
//! the schema copies the sent text instead (one `memcpy`).
//!
//! ## When an element is verbatim
//!
//! An element's text is what [`super::json::write_value`] would write for it when:
//!
//! * it is **compact**: no whitespace between its tokens (checked on simd-json's structural
//!   indexes: after `{` `[` `:` `,` the next token starts on the next byte, and before every
//!   other token nothing but the end of the previous token precedes it);
//! * it has **no backslash and no control byte** anywhere: strings then need no escaping and
//!   unescape to themselves, and a raw control byte (never valid JSON) can never reach a row;
//! * its numbers keep their text on both paths (the tape's integers are written with `itoa`,
//!   which reproduces the sent digits of any integer simd-json accepts; everything else is
//!   written from its sent text, `super::number`). Bodies whose numbers simd-json refused are
//!   parsed through placeholders of the same length, so the structural indexes of that parse
//!   index the sent text as well;
//! * it has **no top-level `id`**: the schema replaces an inbound id, so such an event is
//!   rewritten.
//!
//! The decoder may then skip collecting number texts for a record whose events are all
//! verbatim (`super::VerbatimText::KeepWithoutNumberTexts`): nothing will be written from its
//! tape.
//!
//! Invariant (tested against the tape writer, property-based in `schema::launchdarkly`): an
//! element this module calls verbatim is byte-identical to its rewrite from the tape.

use std::ops::Range;

use simd_json::Node;

use super::json::{self, Nodes};

/// Byte range in `source` of each element of its top-level array, in order, or `None` for an
/// element that is not verbatim (see the module docs). Empty when `source` is not an array.
///
/// `nodes` is the tape parsed from `source` and `structurals` simd-json's stage-1 indexes
/// for it (one per token start — every tape node, keys included — and one per `:` `,` and
/// closing bracket). An element's structurals are counted from its tape nodes, so finding
/// the elements costs a pass over the nodes rather than over every structural; each count
/// is checked against the text (the element must span from its opening to its closing
/// bracket and be followed by `,` or `]`), and the first that does not fit ends the list:
/// later elements are rewritten, never mis-copied.
pub(crate) fn array_elements(
    source: &[u8],
    structurals: &[u32],
    nodes: &Nodes<'_>,
) -> Vec<Option<Range<u32>>> {
    let mut elements = Vec::new();
    if !matches!(nodes.first(), Some(Node::Array { .. }))
        || structurals.first().and_then(|&s| source.get(s as usize)) != Some(&b'[')
    {
        return elements;
    }
    let mut next = 1; // the structural where the next element starts
    for element in json::array_iter(nodes, 0) {
        let count = structural_count(nodes, element);
        let Some(own) = structurals.get(next..next + count) else {
            break;
        };
        let separator = structurals
            .get(next + count)
            .and_then(|&s| source.get(s as usize));
        if !matches!(separator, Some(b',' | b']')) {
            break;
        }
        let replaces_id = json::get(nodes, element, "id").is_some();
        elements.push(verbatim_element(source, own).filter(|_| !replaces_id));
        next += count + 1;
    }
    elements
}

/// The number of structurals the value at tape index `root` spans: one per node, and per
/// container one closing bracket, one `,` between members and (objects) one `:` per member.
fn structural_count(nodes: &Nodes<'_>, root: usize) -> usize {
    let span = json::span(nodes, root);
    nodes
        .get(root..root + span)
        .unwrap_or_default()
        .iter()
        .map(|node| match node {
            Node::Object { len, .. } => 2 + 2 * len - usize::from(*len > 0),
            Node::Array { len, .. } => 2 + len - usize::from(*len > 0),
            _ => 1,
        })
        .sum()
}

/// The byte range of the element whose structurals are `structurals` (from its first token
/// to its closing bracket), if it is verbatim: an object or array, nothing to escape, compact.
fn verbatim_element(source: &[u8], structurals: &[u32]) -> Option<Range<u32>> {
    let range = *structurals.first()?..structurals.last()?.checked_add(1)?;
    let text = source.get(range.start as usize..range.end as usize)?;
    if !matches!((text.first()?, text.last()?), (b'{', b'}') | (b'[', b']')) {
        return None;
    }
    match scan(text) {
        Scan::Escapes => None,
        Scan::Spaces if !gaps_are_tight(source, structurals) => None,
        Scan::Spaces | Scan::Clean => Some(range),
    }
}

/// Whether no whitespace separates the tokens at `structurals`: after `{` `[` `:` `,` the
/// next token starts on the next byte, and every other token (string, number, literal, `}`,
/// `]`) ends right before the next structural. Only elements with a space are walked.
fn gaps_are_tight(source: &[u8], structurals: &[u32]) -> bool {
    structurals.windows(2).all(|pair| {
        let (previous, at) = (pair[0] as usize, pair[1] as usize);
        if matches!(source.get(previous), Some(b'{' | b'[' | b':' | b',')) {
            at == previous + 1
        } else {
            !matches!(
                source.get(at.wrapping_sub(1)),
                Some(b' ' | b'\t' | b'\n' | b'\r') | None
            )
        }
    })
}

/// What an element's text holds besides compact JSON without escapes.
#[derive(Debug, PartialEq)]
enum Scan {
    /// No byte below 0x21 and no `\`: compact (whitespace would be such a byte), no escapes.
    Clean,
    /// A space somewhere (inside a string, or between tokens): the gaps decide.
    Spaces,
    /// A `\` or a byte below 0x20 (an escape, or whitespace that is not a space).
    Escapes,
}

/// Classify `bytes` (see [`Scan`]), eight bytes at a time.
fn scan(bytes: &[u8]) -> Scan {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit of each byte that is below `limit` (exact for bytes below 0x80, and bytes
    // from 0x80 on never have the high bit of `!w` set).
    let below = |w: u64, limit: u8| w.wrapping_sub(ONES * u64::from(limit)) & !w & HIGH;
    let equal = |w: u64, byte: u8| below(w ^ (ONES * u64::from(byte)), 1);
    let (words, tail) = bytes.as_chunks::<8>();
    let mut spaces = 0;
    for word in words {
        let w = u64::from_le_bytes(*word);
        if below(w, 0x20) | equal(w, b'\\') != 0 {
            return Scan::Escapes;
        }
        spaces |= equal(w, b' ');
    }
    for &b in tail {
        match b {
            b'\\' | 0..0x20 => return Scan::Escapes,
            b' ' => spaces = 1,
            _ => {}
        }
    }
    if spaces == 0 {
        Scan::Clean
    } else {
        Scan::Spaces
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::Buffers;

    fn elements(text: &str) -> Vec<Option<&str>> {
        let mut buffers = Buffers::default();
        let mut copy = text.as_bytes().to_vec();
        let tape = simd_json::to_tape_with_buffers(&mut copy, &mut buffers).unwrap();
        array_elements(text.as_bytes(), buffers.structural_indexes(), &tape.0)
            .into_iter()
            .map(|r| r.map(|r| &text[r.start as usize..r.end as usize]))
            .collect()
    }

    #[test]
    fn compact_objects_without_escapes_are_verbatim() {
        let body = r#"[{"a":1,"b":[true,null,{}],"c":{"d":"x y"}},{},{"e":-0.5e3}]"#;
        assert_eq!(
            elements(body),
            [
                Some(r#"{"a":1,"b":[true,null,{}],"c":{"d":"x y"}}"#),
                Some("{}"),
                Some(r#"{"e":-0.5e3}"#)
            ]
        );
    }

    #[test]
    fn whitespace_between_tokens_escapes_and_scalars_are_not() {
        let body = "[ {\"a\": 1} , {\"a\":1 }, {\"a\":\"q\\\"\"}, 5, \"s\", {\"b\":[1, 2]},\n{\"ok\":\"\u{e9}\"} ]";
        assert_eq!(
            elements(body),
            [
                None,
                None,
                None,
                None,
                None,
                None,
                Some("{\"ok\":\"\u{e9}\"}")
            ]
        );
    }

    #[test]
    fn only_top_level_arrays_have_elements() {
        assert!(elements(r#"{"events":[{"a":1}]}"#).is_empty());
        assert!(elements("3").is_empty());
        assert_eq!(elements("[]"), Vec::<Option<&str>>::new());
    }

    #[test]
    fn every_escape_and_space_is_found_at_every_position() {
        for len in 1..20 {
            for position in 0..len {
                for byte in (0u8..0x20).chain([b'\\']) {
                    let mut text = vec![b'a'; len];
                    text[position] = byte;
                    assert_eq!(scan(&text), Scan::Escapes, "{len} {position} {byte}");
                }
                let mut text = "\u{e9}\"~\u{7f}".repeat(len).into_bytes();
                assert_eq!(scan(&text), Scan::Clean);
                text[position] = b' ';
                assert_eq!(scan(&text), Scan::Spaces, "{len} {position}");
            }
        }
    }
}
