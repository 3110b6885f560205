//! Batch buffers handed back after a send, so the next batch is built in warm memory.
//!
//! A full batch of a file destination is an 8 MiB payload arena plus item and position lists
//! of several MiB. Allocated fresh for every batch, each of these came from the allocator as
//! untouched pages: jemalloc hands allocations of 8 MiB and more to its "oversize" arena,
//! which returns them to the kernel at once when freed (`madvise`), so every batch paid
//! the kernel to zero and map its pages again and, for arenas that outgrew their reservation,
//! a `realloc` copy. `perf` of a draining file destination put page faults, those copies
//! and the purging `madvise` at about a fifth of its CPU (`docs/performance.md`).
//!
//! So a send that finished hands its batch's buffers back to its worker ([`Returned`]), and
//! the batcher builds the next batch in them ([`SparePool`]).
//!
//! ## Invariants
//!
//! * **Only memory comes back, never data.** Items are dropped and every list is empty before
//!   a buffer is reused. The arena is reused only when the send left no other reference to it
//!   (`Bytes::try_into_mut`): a destination that kept a payload slice keeps its bytes intact.
//! * **Bounded.** A pool keeps at most [`MAX_SPARES`] sets (extra ones are freed at once), and
//!   [`SparePool::trim`] frees the sets that have not been used for [`IDLE_FREE_AFTER`], so an
//!   idle destination gives its batch memory back instead of keeping its last burst's peak.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dest::BatchItem;
use crate::wal::Position;

/// Most buffer sets a pool keeps: the next batch takes the set of the last one sent, so one
/// is enough to build every batch in warm memory; more would only hold memory.
pub const MAX_SPARES: usize = 1;
/// A spare set unused this long is freed.
pub const IDLE_FREE_AFTER: Duration = Duration::from_secs(1);

/// What a finished send hands back: its batch's emptied lists and the arena its payloads
/// were slices of.
#[derive(Debug, Default)]
pub struct Returned {
    pub items: Vec<BatchItem>,
    pub positions: Vec<Position>,
    /// The batch's whole payload arena (`None` for batches not cut from an arena, such as
    /// redriven dead letters).
    pub arena: Option<Bytes>,
}

/// One set of empty buffers ready for the next batch.
#[derive(Debug)]
pub struct Spare {
    pub items: Vec<BatchItem>,
    pub positions: Vec<Position>,
    pub arena: Vec<u8>,
    returned_at: Instant,
}

impl Returned {
    /// Empty every buffer (dropping the items and with them their payload slices) and take
    /// the arena back if nothing else refers to it; `None` when there is nothing worth
    /// keeping.
    pub fn into_spare(mut self) -> Option<Spare> {
        self.items.clear();
        self.positions.clear();
        let arena = self.arena.take().and_then(reclaim).unwrap_or_default();
        if arena.capacity() == 0 && self.items.capacity() == 0 {
            return None;
        }
        Some(Spare {
            items: self.items,
            positions: self.positions,
            arena,
            returned_at: Instant::now(),
        })
    }
}

/// The arena's memory as an empty `Vec`, if `arena` is its last reference.
fn reclaim(arena: Bytes) -> Option<Vec<u8>> {
    let mut arena = arena.try_into_mut().ok()?;
    // Emptied before it becomes a `Vec` again, which moves the contents to the front of the
    // buffer: a copy of every byte otherwise. (Emptying the `Bytes` instead would drop a not
    // yet shared buffer: `Bytes::truncate` splits those off.)
    arena.clear();
    Some(Vec::from(arena))
}

/// A worker's spare buffer sets (see the module doc).
#[derive(Debug, Default)]
pub struct SparePool {
    spares: Vec<Spare>,
}

impl SparePool {
    /// Keep `spare` for a later batch (freed instead when the pool is full).
    pub fn put(&mut self, spare: Spare) {
        if self.spares.len() < MAX_SPARES {
            self.spares.push(spare);
        }
    }

    /// The most recently returned set, if any.
    pub fn take(&mut self) -> Option<Spare> {
        self.spares.pop()
    }

    /// Free the sets unused since `now - IDLE_FREE_AFTER`.
    pub fn trim(&mut self, now: Instant) {
        self.spares
            .retain(|spare| now.saturating_duration_since(spare.returned_at) < IDLE_FREE_AFTER);
    }

    pub fn len(&self) -> usize {
        self.spares.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spares.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(arena: &Bytes, items: usize) -> Returned {
        let mut list = Vec::with_capacity(items);
        for i in 0..items {
            let mut item = BatchItem::with_payload(arena.slice(i..i + 1));
            item.event_id = format!("e{i}").into();
            list.push(item);
        }
        Returned {
            items: list,
            positions: vec![Position { seq: 1, event: 0 }; items],
            arena: Some(arena.clone()),
        }
    }

    #[test]
    fn a_returned_batch_gives_back_its_arena_memory_empty_and_without_copying() {
        let mut arena = Vec::with_capacity(1 << 20);
        arena.resize(arena.capacity(), b'a');
        let start = arena.as_ptr();
        let arena = Bytes::from(arena);
        let back = returned(&arena, 4);
        drop(arena);
        let spare = back.into_spare().expect("a spare");
        assert!(spare.arena.is_empty() && spare.items.is_empty() && spare.positions.is_empty());
        assert_eq!(spare.arena.as_ptr(), start, "the same memory, not a copy");
        assert!(spare.arena.capacity() >= 1 << 20);
        assert!(spare.items.capacity() >= 4 && spare.positions.capacity() >= 4);
    }

    #[test]
    fn an_arena_still_referenced_elsewhere_is_left_alone() {
        let arena = Bytes::from(b"abcdef".to_vec());
        let kept = arena.slice(1..3);
        let spare = returned(&arena, 2).into_spare().expect("the lists");
        assert_eq!(spare.arena.capacity(), 0);
        assert_eq!(&kept[..], b"bc", "the slice a destination kept is intact");
        assert_eq!(&arena[..], b"abcdef");
    }

    #[test]
    fn the_pool_is_bounded_and_frees_what_idles() {
        let mut pool = SparePool::default();
        for _ in 0..MAX_SPARES + 2 {
            let arena = Bytes::from(vec![0u8; 16]);
            let back = returned(&arena, 1);
            drop(arena);
            pool.put(back.into_spare().expect("a spare"));
        }
        assert_eq!(pool.len(), MAX_SPARES);
        let now = Instant::now();
        pool.trim(now);
        assert_eq!(pool.len(), MAX_SPARES, "fresh sets stay");
        pool.trim(now + IDLE_FREE_AFTER);
        assert!(pool.is_empty(), "idle sets are freed");
        assert!(Returned::default().into_spare().is_none());
    }
}
