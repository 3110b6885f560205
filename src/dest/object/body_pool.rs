//! Object bodies handed back after their put, so the next batch encodes into warm memory.
//!
//! An `ndjson` object is as big as its batch (8 MiB by default for `file`). A fresh buffer per
//! object came from the allocator as untouched pages (jemalloc returns buffers of that size to
//! the kernel as soon as they are freed), so every object paid for zeroing and mapping its
//! pages again: 6.5 % of a draining file destination's CPU in `perf`
//! (`docs/performance.md`). Formats whose output is a fraction of the batch (gzip, zstd,
//! Parquet) do not use the pool.
//!
//! Invariants: a body is reused only when the put left no other reference to it
//! (`Bytes::try_into_mut`), it is emptied before reuse, and the pool keeps at most
//! [`MAX_BODIES`] buffers (one per send in flight; an idle destination keeps that much).

use std::sync::Mutex;

use bytes::Bytes;

/// Most buffers kept: a file destination sends one batch at a time.
pub const MAX_BODIES: usize = 1;

/// Pooled bodies start at a multiple of this address: the block alignment direct I/O needs, so
/// the `file` destination writes them straight from memory (`src/dest/file/write.rs`).
pub const BODY_ALIGN: usize = 4096;

/// Empty body buffers of objects already put.
#[derive(Debug, Default)]
pub struct BodyPool {
    bodies: Mutex<Vec<Vec<u8>>>,
}

impl BodyPool {
    /// An empty buffer, warm if one was handed back.
    pub fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// An empty buffer with room for `len` bytes after `pad` filler bytes that put the body's
    /// first byte on a [`BODY_ALIGN`] boundary: the body is `Bytes::from(buffer).slice(pad..)`
    /// (and goes back with [`Self::give_back`] like any other).
    pub fn take_aligned(&self, len: usize) -> (Vec<u8>, usize) {
        let mut buffer = self.take();
        buffer.reserve(len + BODY_ALIGN);
        let pad = (BODY_ALIGN - buffer.as_ptr() as usize % BODY_ALIGN) % BODY_ALIGN;
        buffer.resize(pad, 0);
        (buffer, pad)
    }

    /// Keep the memory of `body` (an object already put) if nothing else refers to it.
    pub fn give_back(&self, body: Bytes) {
        let Ok(mut body) = body.try_into_mut() else {
            return;
        };
        // Emptied before it becomes a `Vec` again, which moves the contents to the front of
        // the buffer: a copy of every byte otherwise. (Emptying the `Bytes` instead would drop
        // a not yet shared buffer: `Bytes::truncate` splits those off.)
        body.clear();
        let body = Vec::from(body);
        let mut bodies = self.lock();
        if body.capacity() > 0 && bodies.len() < MAX_BODIES {
            bodies.push(body);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock leaves a plain list of buffers: still usable.
        self.bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_put_and_dropped_elsewhere_comes_back_empty_in_the_same_memory() {
        let pool = BodyPool::default();
        let mut body = pool.take();
        body.extend_from_slice(&[7u8; 4096]);
        let start = body.as_ptr();
        let body = Bytes::from(body);
        pool.give_back(body.clone());
        assert!(pool.take().capacity() == 0, "still referenced: not kept");
        pool.give_back(body);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), start);
        pool.give_back(Bytes::from(again));
        pool.give_back(Bytes::from(vec![1u8; 8]));
        assert!(pool.take().capacity() >= 4096);
        assert_eq!(pool.take().capacity(), 0, "at most {MAX_BODIES} kept");
    }

    #[test]
    fn aligned_bodies_start_on_a_block_boundary_and_come_back_in_the_same_memory() {
        let pool = BodyPool::default();
        let (mut buffer, pad) = pool.take_aligned(10_000);
        assert!(pad < BODY_ALIGN && buffer.len() == pad);
        buffer.extend_from_slice(&[9u8; 10_000]);
        let body = Bytes::from(buffer).slice(pad..);
        assert_eq!(body.as_ptr() as usize % BODY_ALIGN, 0);
        assert_eq!(body.len(), 10_000);
        let start = body.as_ptr();
        pool.give_back(body);
        let (again, pad) = pool.take_aligned(10_000);
        assert_eq!(
            again.as_ptr().wrapping_add(pad),
            start,
            "the same memory, reused"
        );
        assert_eq!(again.len(), pad);
    }
}
