//! The recent payload-id cache: LaunchDarkly SDKs send a random `X-LaunchDarkly-Payload-ID`
//! with every payload and reuse it on their one retry, so a retry of a body we already stored
//! (its 202 lost on the way back) is answered 202 without a second append.
//!
//! Invariants: an id is remembered only *after* its body is durably appended (a failed append
//! must not turn the retry into a silent drop), ids are scoped by environment, and the cache is
//! bounded (`--dedupe-cache-size` entries, S3-FIFO eviction via `quick_cache`). Two copies racing
//! in at the same instant may both be stored — at-least-once, never at-most-once; the delivery
//! side's stable event ids make such duplicates recognisable downstream.

use quick_cache::sync::Cache;

/// Ids longer than this are not remembered (real SDKs send 36-character UUIDs).
pub const MAX_PAYLOAD_ID_BYTES: usize = 128;

pub struct PayloadIds {
    cache: Option<Cache<String, ()>>,
}

impl PayloadIds {
    /// `capacity == 0` disables deduplication.
    pub fn new(capacity: usize) -> Self {
        PayloadIds {
            cache: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    fn key(environment: &str, payload_id: &str) -> Option<String> {
        if payload_id.is_empty() || payload_id.len() > MAX_PAYLOAD_ID_BYTES {
            return None;
        }
        let mut key = String::with_capacity(environment.len() + 1 + payload_id.len());
        key.push_str(environment);
        key.push('\0');
        key.push_str(payload_id);
        Some(key)
    }

    /// True when this payload was already stored.
    pub fn seen(&self, environment: &str, payload_id: &str) -> bool {
        match (&self.cache, Self::key(environment, payload_id)) {
            (Some(cache), Some(key)) => cache.get(&key).is_some(),
            _ => false,
        }
    }

    /// Remember a payload that is now durably stored.
    pub fn remember(&self, environment: &str, payload_id: &str) {
        if let (Some(cache), Some(key)) = (&self.cache, Self::key(environment, payload_id)) {
            cache.insert(key, ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_ids_per_environment() {
        let ids = PayloadIds::new(100);
        assert!(!ids.seen("prod", "a"));
        ids.remember("prod", "a");
        assert!(ids.seen("prod", "a"));
        assert!(!ids.seen("staging", "a"));
        assert!(!ids.seen("prod", "b"));
    }

    #[test]
    fn disabled_and_oversized_ids_are_never_seen() {
        let off = PayloadIds::new(0);
        off.remember("prod", "a");
        assert!(!off.seen("prod", "a"));
        let ids = PayloadIds::new(10);
        let long = "x".repeat(MAX_PAYLOAD_ID_BYTES + 1);
        ids.remember("prod", &long);
        assert!(!ids.seen("prod", &long));
        ids.remember("prod", "");
        assert!(!ids.seen("prod", ""));
    }

    #[test]
    fn stays_bounded() {
        let ids = PayloadIds::new(100);
        for n in 0..10_000 {
            ids.remember("prod", &n.to_string());
        }
        let remembered = (0..10_000)
            .filter(|n| ids.seen("prod", &n.to_string()))
            .count();
        assert!(remembered <= 200, "{remembered} ids remembered");
        assert!(ids.seen("prod", "9999"), "the newest id is kept");
    }
}
