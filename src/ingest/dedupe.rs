//! The recent payload-id cache: LaunchDarkly SDKs send a random `X-LaunchDarkly-Payload-ID`
//! with every payload and reuse it on their one retry, so a retry of a body we already stored
//! (its 202 lost on the way back) is answered 202 without a second append.
//!
//! Invariants: an id is remembered only *after* its body is durably appended (a failed append
//! must not turn the retry into a silent drop), ids are scoped by environment, and the cache is
//! bounded (`--dedupe-cache-size` entries, S3-FIFO eviction via `quick_cache`). Two copies racing
//! in at the same instant may both be stored — at-least-once, never at-most-once; the delivery
//! side's stable event ids make such duplicates recognisable downstream.
//!
//! ## Surviving a restart
//!
//! The cache lives in memory, but every stored record already carries its payload id in the
//! stored header ([`crate::event::stored`]) and its receive time in the WAL record header. At
//! start-up, before ingest serves, [`PayloadIds::recover`] reads the records received in the
//! last `--dedupe-recovery-window` (at most the newest `--dedupe-cache-size` records, the most
//! the cache could hold) through the ordinary WAL reader and remembers their ids again: a
//! retry whose first copy was stored just before a crash is still answered without a second
//! append. Nothing extra is written on the hot path. The first record of the window is found
//! by binary search over receive times (wall clock: a clock stepped backwards widens or
//! narrows the window by the step, never more); the cost is reading the window's records once.

use quick_cache::sync::Cache;

use crate::event::stored;
use crate::wal::Wal;

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

/// What [`PayloadIds::recover`] read and remembered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Records read from the WAL.
    pub records: u64,
    /// Payload ids remembered again.
    pub ids: u64,
}

impl PayloadIds {
    /// Remember again the payload ids of the WAL's records received at or after `since_ms`
    /// (Unix milliseconds), oldest first so the newest survive eviction. Call before ingest
    /// serves. Unreadable records are skipped: losing a dedupe entry only risks a duplicate.
    pub fn recover(&self, wal: &Wal, since_ms: u64) -> Recovered {
        let Some(cache) = &self.cache else {
            return Recovered::default();
        };
        let end = wal.next_seq();
        let newest_that_fit = end.saturating_sub(cache.capacity());
        let start = first_received_since(wal, wal.first_seq().max(newest_that_fit), end, since_ms);
        let mut recovered = Recovered::default();
        let mut reader = wal.reader(start);
        while let Ok(Some(record)) = reader.try_next() {
            if record.seq >= end {
                break;
            }
            recovered.records += 1;
            let Ok(batch) = stored::decode(&record.payload) else {
                continue;
            };
            if let Some(id) = batch.payload_id {
                self.remember(batch.environment, id);
                recovered.ids += 1;
            }
        }
        recovered
    }
}

/// The first seq in `[low, high)` whose record was received at or after `since_ms` (`high`
/// when none), by binary search: receive times grow with seqs.
fn first_received_since(wal: &Wal, mut low: u64, mut high: u64, since_ms: u64) -> u64 {
    while low < high {
        let middle = low + (high - low) / 2;
        match wal.reader(middle).try_next() {
            // The reader may skip a gap (collected or corrupt records): it returns a later seq.
            Ok(Some(record)) if record.received_at_ms < since_ms => low = record.seq + 1,
            // Recent, or unreadable: keep it in the window (reading too much is only slower).
            _ => high = middle,
        }
    }
    low
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

#[cfg(test)]
mod recovery_tests {
    use super::*;
    use crate::event::stored::{encode_header, StoredMeta};
    use crate::event::{InboundFormat, InstanceId};
    use crate::wal::{AppendRequest, WalOptions};

    /// Append one record per `(received_at_ms, environment, payload_id)`.
    async fn wal_with(records: &[(u64, &str, &str)]) -> (tempfile::TempDir, Wal) {
        let dir = tempfile::tempdir().unwrap();
        let mut options = WalOptions::new(dir.path().join("wal"));
        options.segment_bytes = 64 * 1024;
        options.max_bytes = 64 * 1024 * 8;
        options.min_free_bytes = 0;
        let wal = Wal::open(options).unwrap();
        for &(received_at_ms, environment, payload_id) in records {
            let meta = StoredMeta {
                format: Some(InboundFormat::LdBulk),
                instance_id: Some(InstanceId([1; 16])),
                environment,
                payload_id,
                ..StoredMeta::default()
            };
            let mut header = Vec::new();
            encode_header(&meta, &mut header);
            let parts: [&[u8]; 2] = [&header, b"[]"];
            let request = AppendRequest {
                tag: 0,
                event_count: 0,
                received_at_ms,
                parts: &parts,
            };
            wal.append(request).await.unwrap();
        }
        (dir, wal)
    }

    #[tokio::test]
    async fn ids_received_inside_the_window_are_remembered_again() {
        let records: Vec<(u64, &str, String)> = (0..100u64)
            .map(|n| {
                (
                    1_000 + n * 10,
                    if n % 2 == 0 { "prod" } else { "dev" },
                    format!("p{n}"),
                )
            })
            .collect();
        let borrowed: Vec<_> = records
            .iter()
            .map(|(t, e, id)| (*t, *e, id.as_str()))
            .collect();
        let (_dir, wal) = wal_with(&borrowed).await;
        let ids = PayloadIds::new(1_000);
        // Records 50.. were received at or after 1_500.
        let recovered = ids.recover(&wal, 1_500);
        assert_eq!(
            recovered,
            Recovered {
                records: 50,
                ids: 50
            }
        );
        assert!(ids.seen("prod", "p50") && ids.seen("dev", "p99"));
        assert!(!ids.seen("dev", "p49"), "received before the window");
        assert!(!ids.seen("prod", "p51"), "scoped by environment");
    }

    #[tokio::test]
    async fn recovery_reads_no_more_than_the_cache_holds_and_skips_records_without_ids() {
        let (_dir, wal) = wal_with(&[(1, "prod", "a"), (2, "prod", ""), (3, "prod", "c")]).await;
        let ids = PayloadIds::new(2);
        assert_eq!(ids.recover(&wal, 0), Recovered { records: 2, ids: 1 });
        assert!(ids.seen("prod", "c") && !ids.seen("prod", "a"));
        let off = PayloadIds::new(0);
        assert_eq!(off.recover(&wal, 0), Recovered::default());
        let (_empty_dir, empty) = wal_with(&[]).await;
        assert_eq!(PayloadIds::new(10).recover(&empty, 0), Recovered::default());
    }
}
