//! [`EventId`]: a batch item's event id, kept inline in the item.
//!
//! Every item of every batch carries its event id (`BatchItem::event_id`). Ids are 36-byte
//! UUIDs (`crate::event::EVENT_ID_LEN`), or `"{id}-{n}"` for the extra rows of a multi-row
//! event; as a `String` each one cost an allocation when the batcher built the item and a
//! free when the batch was dropped, per destination. An `EventId` keeps up to
//! [`INLINE_CAPACITY`] bytes inside itself (40 bytes in all) and allocates only for longer
//! ids (an id of a re-driven dead letter can be anything).
//!
//! It reads as the text it holds: `Deref<Target = str>`, `Display`, `Debug` as a string, and
//! equality with `str` / `String`, so code that read the `String` barely changes.
//!
//! ## Invariants
//!
//! * The representation is canonical: text of at most [`INLINE_CAPACITY`] bytes is inline,
//!   longer text on the heap; equality and hashing go through the text anyway.
//! * The inline bytes are always the bytes of a `str` (copied from one, or a `str` plus `-`
//!   and ASCII digits), so reading them back as UTF-8 never fails; it is checked anyway
//!   rather than assumed (no `unsafe` outside the WAL's mapping).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use crate::event::EVENT_ID_LEN;

/// Longest id kept inline: a UUID plus a one-digit row suffix (`-1` … `-9`).
pub const INLINE_CAPACITY: usize = EVENT_ID_LEN + 2;

/// An event id: text, inline up to [`INLINE_CAPACITY`] bytes. See the module doc.
#[derive(Clone)]
pub struct EventId(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_CAPACITY],
    },
    Heap(Box<str>),
}

impl EventId {
    /// The id `text`.
    pub fn new(text: &str) -> EventId {
        let len = text.len();
        if len > INLINE_CAPACITY {
            return EventId(Repr::Heap(text.into()));
        }
        let mut bytes = [0u8; INLINE_CAPACITY];
        bytes[..len].copy_from_slice(text.as_bytes());
        EventId(Repr::Inline {
            len: len as u8,
            bytes,
        })
    }

    /// The id of extra row `row` of the event whose id is `base`: `"{base}-{row}"`.
    pub fn row(base: &str, row: usize) -> EventId {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(row);
        let mut suffix = [0u8; 21];
        suffix[0] = b'-';
        suffix[1..=digits.len()].copy_from_slice(digits.as_bytes());
        EventId::joined(base, &suffix[..=digits.len()])
    }

    /// `text` followed by `suffix` (ASCII).
    fn joined(text: &str, suffix: &[u8]) -> EventId {
        let len = text.len() + suffix.len();
        if len > INLINE_CAPACITY {
            let mut heap = String::with_capacity(len);
            heap.push_str(text);
            heap.extend(suffix.iter().map(|&byte| char::from(byte)));
            return EventId(Repr::Heap(heap.into_boxed_str()));
        }
        let mut bytes = [0u8; INLINE_CAPACITY];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        bytes[text.len()..len].copy_from_slice(suffix);
        EventId(Repr::Inline {
            len: len as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Always valid (see the module's invariants): the fallback is never taken.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(text) => text,
        }
    }

    /// Whether the id is kept inline (tests and benches).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new("")
    }
}

impl Deref for EventId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for EventId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for EventId {
    fn from(text: &str) -> Self {
        EventId::new(text)
    }
}

impl From<String> for EventId {
    fn from(text: String) -> Self {
        EventId::new(&text)
    }
}

impl From<&String> for EventId {
    fn from(text: &String) -> Self {
        EventId::new(text)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        id.as_str().to_owned()
    }
}

impl PartialEq for EventId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventId {}

impl Hash for EventId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for EventId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for EventId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<EventId> for str {
    fn eq(&self, other: &EventId) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<EventId> for &str {
    fn eq(&self, other: &EventId) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<EventId> for String {
    fn eq(&self, other: &EventId) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0190a8e2-4b1c-8a18-86ed-3f2c1d0e9b7a";

    #[test]
    fn an_id_is_forty_bytes_and_a_uuid_with_a_row_suffix_stays_inline() {
        assert_eq!(std::mem::size_of::<EventId>(), 40);
        assert_eq!(UUID.len(), EVENT_ID_LEN);
        assert!(EventId::new(UUID).is_inline());
        assert!(EventId::row(UUID, 9).is_inline());
        assert!(
            !EventId::row(UUID, 10).is_inline(),
            "39 bytes go to the heap"
        );
    }

    #[test]
    fn ids_read_back_as_their_text_inline_or_not() {
        let long = "x".repeat(INLINE_CAPACITY + 1);
        for text in [
            "",
            "e1",
            UUID,
            &long[..INLINE_CAPACITY],
            &long,
            "ünïcødé-🦀",
        ] {
            let id = EventId::new(text);
            assert_eq!(id.as_str(), text);
            assert_eq!(&*id, text);
            assert_eq!(id, text);
            assert_eq!(id, text.to_string());
            assert_eq!(text, id);
            assert_eq!(id.to_string(), text);
            assert_eq!(format!("{id:?}"), format!("{text:?}"));
            assert_eq!(String::from(id.clone()), text);
            assert_eq!(id.is_inline(), text.len() <= INLINE_CAPACITY, "{text}");
        }
        assert_eq!(EventId::default(), "");
    }

    /// The batcher named extra rows `format!("{id}-{row}")`; destinations dedupe on these ids,
    /// so they must not change.
    #[test]
    fn row_ids_are_the_formatted_ids_of_before() {
        let long = "y".repeat(60);
        for base in ["ev", UUID, &long] {
            for row in [1, 2, 9, 10, 99, 12_345, usize::MAX] {
                assert_eq!(EventId::row(base, row), format!("{base}-{row}"));
            }
        }
    }

    #[test]
    fn equal_texts_are_equal_ids_with_equal_hashes() {
        use std::collections::HashSet;
        let ids: HashSet<EventId> = [UUID, "a", UUID].into_iter().map(EventId::from).collect();
        assert_eq!(ids.len(), 2);
        assert!(
            ids.contains(UUID),
            "looked up by `&str` through `Borrow<str>`"
        );
        assert_ne!(EventId::new("a"), EventId::new("b"));
    }
}
