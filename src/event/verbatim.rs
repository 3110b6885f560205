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
//!   parsed through placeholders, and then no element is verbatim.
//!
//! Whether the event carries a top-level `id` (which the schema replaces) is decided by the
//! decoder, which reads every top-level key anyway.
//!
//! Invariant (tested against the tape writer, property-based in `schema::launchdarkly`): an
//! element this module calls verbatim is byte-identical to its rewrite from the tape.

use std::ops::Range;

/// Byte range in `source` of each element of its top-level array, in order, or `None` for an
/// element that is not verbatim (see the module docs). Empty when `source` is not an array.
///
/// `structurals` are simd-json's stage-1 indexes for `source` (one per token start and per
/// `{}[]:,`); any index past the end of `source` ends the walk.
pub(crate) fn array_elements(source: &[u8], structurals: &[u32]) -> Vec<Option<Range<u32>>> {
    let mut elements = Vec::new();
    if structurals.first().and_then(|&s| source.get(s as usize)) != Some(&b'[') {
        return elements;
    }
    let mut depth = 0usize;
    let mut element = Element::default();
    for &index in structurals {
        let at = index as usize;
        let Some(&byte) = source.get(at) else { break };
        if depth >= 2 {
            element.note_token(source, at);
        }
        match byte {
            b'{' | b'[' => {
                if depth == 1 {
                    element = Element::starting_at(at);
                }
                depth += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                match depth {
                    0 => break,
                    1 => elements.push(element.end_at(source, at + 1)),
                    _ => {}
                }
            }
            b',' | b':' => {}
            // A string, number or literal as an element: never an event object.
            _ if depth == 1 => elements.push(None),
            _ => {}
        }
        element.previous = (at, byte);
    }
    elements
}

/// The element being walked: where it started, whether it is compact so far, and the last
/// structural seen.
#[derive(Default)]
struct Element {
    start: usize,
    compact: bool,
    previous: (usize, u8),
}

impl Element {
    fn starting_at(start: usize) -> Self {
        Element {
            start,
            compact: true,
            previous: (start, b'{'),
        }
    }

    /// Check the gap between the previous structural and the one at `at`.
    #[inline]
    fn note_token(&mut self, source: &[u8], at: usize) {
        let (previous, previous_byte) = self.previous;
        self.compact &= if matches!(previous_byte, b'{' | b'[' | b':' | b',') {
            at == previous + 1
        } else {
            // The previous token (string, number, literal, `}` or `]`) ends right before.
            !matches!(
                source.get(at.wrapping_sub(1)),
                Some(b' ' | b'\t' | b'\n' | b'\r') | None
            )
        };
    }

    fn end_at(&self, source: &[u8], end: usize) -> Option<Range<u32>> {
        let text = source.get(self.start..end)?;
        if !self.compact || has_backslash_or_control(text) {
            return None;
        }
        Some(u32::try_from(self.start).ok()?..u32::try_from(end).ok()?)
    }
}

/// Whether any byte is `\` or below 0x20, eight bytes at a time.
fn has_backslash_or_control(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word_has = |w: u64| {
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let backslash = w ^ (ONES * b'\\' as u64);
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        (below_space | backslash) & HIGH != 0
    };
    let (words, tail) = bytes.as_chunks::<8>();
    words.iter().any(|w| word_has(u64::from_le_bytes(*w)))
        || tail.iter().any(|&b| b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::Buffers;

    fn elements(text: &str) -> Vec<Option<&str>> {
        let mut buffers = Buffers::default();
        let mut copy = text.as_bytes().to_vec();
        simd_json::to_tape_with_buffers(&mut copy, &mut buffers).unwrap();
        array_elements(text.as_bytes(), buffers.structural_indexes())
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
    fn every_control_byte_and_backslash_is_found_at_every_position() {
        for len in 1..20 {
            for position in 0..len {
                for byte in (0u8..0x20).chain([b'\\']) {
                    let mut text = vec![b'a'; len];
                    text[position] = byte;
                    assert!(has_backslash_or_control(&text), "{len} {position} {byte}");
                }
                assert!(!has_backslash_or_control(&vec![b' '; len]));
                assert!(!has_backslash_or_control(
                    "é\"~\u{7f}".repeat(len).as_bytes()
                ));
            }
        }
    }
}
