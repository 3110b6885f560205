//! `--wal-retention`: which segments every cursor has passed are kept for replays.
//!
//! A segment is *passed* when it is sealed, not the newest, and every persisted cursor is at
//! or beyond its end (the only segments garbage collection may free, `gc.rs`). Without
//! retention every passed segment is freed at once; with it, the newest passed segments are
//! kept while they are younger than `max_age` (by their seal time, which the WAL writes into
//! the seal block) and, counted newest first, fit in `max_bytes`.
//!
//! Invariants:
//! * Only passed segments are ever retained or evicted: retention never frees a record some
//!   cursor still needs (a rewound cursor makes its segments un-passed again, so they stay).
//! * Retention yields to the budget: retained bytes never take the room the log needs to keep
//!   accepting appends. A GC pass keeps one segment of headroom below `max_bytes` besides the
//!   segments cursors still need; an append that finds the budget (or the free-disk floor)
//!   exhausted anyway evicts the oldest retained segment at once and retries
//!   ([`super::core::Core::append_now`]). Segments freed for room rather than for age or size
//!   are *evicted*: `flagstream_wal_retention_evicted_bytes_total`.
//! * Oldest first: what is kept is always a suffix (the newest) of the passed segments, so
//!   the log stays contiguous from `first_seq` on.

use super::Retention;

/// A passed segment as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Passed {
    /// File bytes it occupies.
    pub bytes: u64,
    /// Seal time, Unix ms.
    pub sealed_ms: u64,
}

/// What one GC pass does with the passed segments (oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plan {
    /// How many of the oldest passed segments to free.
    pub free: usize,
    /// How many of those retention wanted to keep but the budget had no room for.
    pub evicted: usize,
    pub evicted_bytes: u64,
    /// Bytes of the passed segments kept.
    pub retained_bytes: u64,
}

/// Decide which passed segments (oldest first) to keep. `room` is how many bytes retained
/// segments may occupy without crowding out new appends.
pub(crate) fn plan(passed: &[Passed], retention: Retention, now_ms: u64, room: u64) -> Plan {
    if retention.is_off() {
        return Plan {
            free: passed.len(),
            ..Plan::default()
        };
    }
    // Newest first: how many segments retention wants, and how many of those fit the room.
    let (mut wanted, mut wanted_bytes) = (0, 0u64);
    let (mut kept, mut kept_bytes) = (0, 0u64);
    for segment in passed.iter().rev() {
        let young = retention.max_age.is_none_or(|max_age| {
            now_ms.saturating_sub(segment.sealed_ms) < max_age.as_millis() as u64
        });
        let within_size = retention
            .max_bytes
            .is_none_or(|max_bytes| wanted_bytes + segment.bytes <= max_bytes);
        if !(young && within_size) {
            break;
        }
        wanted += 1;
        wanted_bytes += segment.bytes;
        if kept == wanted - 1 && kept_bytes + segment.bytes <= room {
            kept += 1;
            kept_bytes += segment.bytes;
        }
    }
    let evicted_bytes = wanted_bytes - kept_bytes;
    Plan {
        free: passed.len() - kept,
        evicted: wanted - kept,
        evicted_bytes,
        retained_bytes: kept_bytes,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn segments(ages_ms: &[u64], now: u64) -> Vec<Passed> {
        ages_ms
            .iter()
            .map(|age| Passed {
                bytes: MIB,
                sealed_ms: now - age,
            })
            .collect()
    }

    #[test]
    fn off_frees_every_passed_segment() {
        let passed = segments(&[30, 20, 10], 100);
        let plan = plan(&passed, Retention::default(), 100, u64::MAX);
        assert_eq!(
            plan,
            Plan {
                free: 3,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn age_keeps_the_young_suffix_and_size_counts_newest_first() {
        let now = 1_000_000;
        let passed = segments(&[50_000, 40_000, 20_000, 10_000], now);
        let by_age = Retention {
            max_age: Some(Duration::from_secs(30)),
            max_bytes: None,
        };
        let kept = plan(&passed, by_age, now, u64::MAX);
        assert_eq!(
            (kept.free, kept.evicted, kept.retained_bytes),
            (2, 0, 2 * MIB)
        );
        let by_size = Retention {
            max_age: None,
            max_bytes: Some(3 * MIB + 1),
        };
        let kept = plan(&passed, by_size, now, u64::MAX);
        assert_eq!(
            (kept.free, kept.evicted, kept.retained_bytes),
            (1, 0, 3 * MIB)
        );
        // Both: each limit must hold.
        let both = Retention {
            max_age: Some(Duration::from_secs(45)),
            max_bytes: Some(2 * MIB),
        };
        assert_eq!(plan(&passed, both, now, u64::MAX).free, 2);
    }

    #[test]
    fn the_budget_evicts_the_oldest_wanted_segments_first() {
        let now = 5_000;
        let passed = segments(&[4_000, 3_000, 2_000, 1_000], now);
        let keep_all = Retention {
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: None,
        };
        let squeezed = plan(&passed, keep_all, now, 2 * MIB + MIB / 2);
        assert_eq!(
            squeezed,
            Plan {
                free: 2,
                evicted: 2,
                evicted_bytes: 2 * MIB,
                retained_bytes: 2 * MIB,
            }
        );
        assert_eq!(plan(&passed, keep_all, now, 0).evicted, 4);
    }
}
