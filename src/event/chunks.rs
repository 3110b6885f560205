//! Splitting a large JSON array body into parts of a bounded number of events, so delivery can
//! decode (and batch) a huge record a part at a time instead of building one tape, one event
//! list and every batch of the whole record at once.
//!
//! A structural scan (strings and their escapes, nesting depth; no value parsing) finds where
//! each top-level element starts and ends; every `per_part` elements make one [`ArrayPart`]:
//! the byte range from its first element's start to its last element's end (the separators
//! in between included), which [`super::decode_part`] wraps in `[`…`]` and decodes with the
//! right event indexes.
//!
//! Invariant: the parts cover every element once, in order, with contiguous indexes; a body
//! the scan does not understand as one top-level array gives `None` (callers then decode the
//! body whole, which reports the problem as before). Bodies are validated at ingest, so that
//! only happens to records written by something else.

use std::ops::Range;

/// A run of consecutive top-level elements of an array body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayPart {
    /// Bytes from the first element's first byte to the last element's last byte.
    pub bytes: Range<usize>,
    /// Index of the first element in the whole array.
    pub first_index: u32,
    /// Elements in the part.
    pub count: u32,
}

/// The parts of the top-level array in `body`, `per_part` elements each (the last may hold
/// fewer); `None` when `body` is not structurally one JSON array. See the module doc.
pub fn array_parts(body: &[u8], per_part: u32) -> Option<Vec<ArrayPart>> {
    let per_part = per_part.max(1);
    let mut scan = Scan::default();
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'[' {
        return None;
    }
    let mut i = open + 1;
    while i < body.len() {
        let byte = body[i];
        if scan.in_string {
            match byte {
                b'\\' => i += 1,
                b'"' => scan.in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'"' => {
                scan.touch(i);
                scan.in_string = true;
            }
            b'[' | b'{' => {
                scan.touch(i);
                scan.depth += 1;
            }
            b']' | b'}' if scan.depth > 0 => scan.depth -= 1,
            b']' => {
                let rest_is_blank = body[i + 1..].iter().all(u8::is_ascii_whitespace);
                return (scan.close(body, i, per_part, true)? && rest_is_blank)
                    .then_some(scan.parts);
            }
            b'}' => return None,
            b',' if scan.depth == 0 => {
                scan.close(body, i, per_part, false)?;
            }
            b if b.is_ascii_whitespace() => {}
            _ => scan.touch(i),
        }
        i += 1;
    }
    None
}

#[derive(Default)]
struct Scan {
    parts: Vec<ArrayPart>,
    in_string: bool,
    /// Nesting depth inside the current element.
    depth: usize,
    /// Start of the current element (once its first byte was seen).
    element: Option<usize>,
    /// Start of the part being gathered, and its first index and count so far.
    part: Option<(usize, u32, u32)>,
    /// Elements closed so far.
    total: u32,
}

impl Scan {
    fn touch(&mut self, at: usize) {
        self.element.get_or_insert(at);
    }

    /// The current element ends before `at` (a `,` or the closing `]`). `Some(true)` when the
    /// array is complete, `None` when the element is missing (`[,` / `[1,]`), except for the
    /// `]` of an empty array.
    fn close(&mut self, body: &[u8], at: usize, per_part: u32, last: bool) -> Option<bool> {
        let Some(start) = self.element.take() else {
            return (last && self.total == 0).then_some(true);
        };
        let end = at
            - body[..at]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        let (part_start, first, count) = self.part.take().unwrap_or((start, self.total, 0));
        self.total = self.total.checked_add(1)?;
        let count = count + 1;
        if count == per_part || last {
            self.parts.push(ArrayPart {
                bytes: part_start..end,
                first_index: first,
                count,
            });
        } else {
            self.part = Some((part_start, first, count));
        }
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(body: &'a str, parts: &[ArrayPart]) -> Vec<(&'a str, u32, u32)> {
        parts
            .iter()
            .map(|p| (&body[p.bytes.clone()], p.first_index, p.count))
            .collect()
    }

    #[test]
    fn splits_top_level_elements_into_parts() {
        let body = r#" [ {"a":"x,]}\"y"} , [1,[2]] ,"s", 3 ,{}]  "#;
        let parts = array_parts(body.as_bytes(), 2).unwrap();
        assert_eq!(
            texts(body, &parts),
            vec![
                (r#"{"a":"x,]}\"y"} , [1,[2]]"#, 0, 2),
                (r#""s", 3"#, 2, 2),
                ("{}", 4, 1),
            ]
        );
        let one = array_parts(body.as_bytes(), 100).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].count, 5);
    }

    #[test]
    fn empty_arrays_have_no_parts_and_malformed_bodies_none() {
        assert_eq!(array_parts(b" [ ] ", 3), Some(Vec::new()));
        for bad in [
            "",
            "{}",
            "[1,]",
            "[,1]",
            "[1",
            "[1]x",
            "[\"unterminated]",
            "[1}",
            "[{]",
        ] {
            assert_eq!(array_parts(bad.as_bytes(), 3), None, "{bad}");
        }
    }

    #[test]
    fn every_part_reassembles_to_the_elements_parsed_whole() {
        let events: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"kind":"custom","key":"k{i}","data":{{"s":"a\"]{i}"}}}}"#))
            .collect();
        let body = format!("[{}]", events.join(" ,\n"));
        let parts = array_parts(body.as_bytes(), 3).unwrap();
        let mut seen = Vec::new();
        for part in &parts {
            let text = format!("[{}]", &body[part.bytes.clone()]);
            let values: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(values.len() as u32, part.count);
            seen.extend(values);
        }
        let whole: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(seen, whole);
        assert_eq!(
            parts.iter().map(|p| p.first_index).collect::<Vec<_>>(),
            [0, 3, 6, 9]
        );
    }
}
