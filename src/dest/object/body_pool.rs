//! Object bodies handed back after their put, so the next batch encodes into warm memory.
//!
//! An `ndjson` object is as big as its batch (8 MiB by default for `file`). A fresh buffer per
//! object came from the allocator as untouched pages (jemalloc returns buffers of that size to
//! the kernel as soon as they are freed), so every object paid for zeroing and mapping its
//! pages again: 6.5 % of a draining file destination's CPU in `perf`
//! (`docs/performance.md`). Formats whose output is a fraction of the batch (gzip, Parquet)
//! do not use the pool.
//!
//! Invariants: a body is reused only when the put left no other reference to it
//! (`Bytes::try_into_mut`), it is emptied before reuse, and the pool keeps at most
//! [`MAX_BODIES`] buffers (one per send in flight; an idle destination keeps that much).

use std::sync::Mutex;

use bytes::Bytes;

/// Most buffers kept: a file destination sends one batch at a time.
pub const MAX_BODIES: usize = 1;

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
}
