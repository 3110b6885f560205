//! What delivery keeps in its WAL cursor besides the position: the retry state and span of
//! the oldest in-flight batch and the dead-letter count. The WAL stores it as an opaque,
//! checksummed blob ([`crate::wal::CursorBlob`]), so this format can change without touching
//! the WAL's.
//!
//! ```text
//! blob, version 2 (56 bytes, little-endian)
//!    0 version u8 = 2 | 1 flags u8 (bit 0: plan present) | 2 last_error_class u16
//!    4 attempts u32   | 8 plan_start_seq u64 | 16 plan_start_event u32 | 20 plan_end_event u32
//!   24 plan_end_seq u64 | 32 next_attempt_unix_ms u64 | 40 first_failure_unix_ms u64
//!   48 dead_lettered u64
//! blob from a flagstream 0.1 cursor (the WAL's migration, tag LEGACY_V1_BLOB_TAG = 1)
//!    0 tag u8 = 1 | 1 flags u32 | 5 plan_start_seq u64 | 13 plan_start_event u32
//!   17 plan_end_event u32 | 21 plan_end_seq u64 | 29 attempts u32 | 33 last_error_class u16
//!   35 reserved u16 | 37 next_attempt_unix_ms u64 | 45 first_failure_unix_ms u64
//!   53 dead_lettered u64
//! empty blob: a cursor just created (no retry state, nothing dead-lettered)
//! ```
//!
//! Decoding a 0.1 blob gives the same state 0.1 persisted; the next persist writes version 2.

use bytes::Buf;

use crate::wal::{CursorBlob, CursorState, Position, LEGACY_V1_BLOB_TAG, MAX_CURSOR_BLOB_BYTES};

const VERSION: u8 = 2;
const ENCODED_BYTES: usize = 56;
const LEGACY_BYTES: usize = 61;
const FLAG_PLAN: u8 = 1;
// The encoded state always fits the WAL's blob bound.
const _: () = assert!(ENCODED_BYTES <= MAX_CURSOR_BLOB_BYTES);

/// Retry state of a cursor's oldest in-flight batch; persisted so restarts keep backing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryState {
    pub attempts: u32,
    pub next_attempt_unix_ms: u64,
    pub first_failure_unix_ms: u64,
    /// [`super::retry::ErrorClass`] code of the last failure (0 = none).
    pub last_error_class: u16,
}

/// Everything delivery persists for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryCursor {
    /// Every position before this one is delivered (or dead-lettered).
    pub acked: Position,
    /// The oldest in-flight batch `[start, end)`, so a restart re-cuts it identically.
    pub plan: Option<(Position, Position)>,
    pub retry: RetryState,
    /// Events given up on (dead-lettered) over the cursor's lifetime.
    pub dead_lettered: u64,
}

/// A blob delivery cannot read (written by a newer flagstream, or not by delivery at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor state of {len} bytes with version {version} is not one this build reads")]
pub struct UnknownCursorState {
    pub version: u8,
    pub len: usize,
}

// Offsets below are checked against the blob's length before any read.
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    (&bytes[at..]).get_u16_le()
}
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    (&bytes[at..]).get_u32_le()
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    (&bytes[at..]).get_u64_le()
}

/// Field offsets of one blob layout (version 2 or the 0.1 one).
struct Layout {
    plan_start_seq: usize,
    plan_start_event: usize,
    plan_end_event: usize,
    plan_end_seq: usize,
    attempts: usize,
    last_error_class: usize,
    next_attempt: usize,
    first_failure: usize,
    dead_lettered: usize,
}

const CURRENT: Layout = Layout {
    plan_start_seq: 8,
    plan_start_event: 16,
    plan_end_event: 20,
    plan_end_seq: 24,
    attempts: 4,
    last_error_class: 2,
    next_attempt: 32,
    first_failure: 40,
    dead_lettered: 48,
};

const LEGACY: Layout = Layout {
    plan_start_seq: 5,
    plan_start_event: 13,
    plan_end_event: 17,
    plan_end_seq: 21,
    attempts: 29,
    last_error_class: 33,
    next_attempt: 37,
    first_failure: 45,
    dead_lettered: 53,
};

impl Layout {
    fn decode(&self, bytes: &[u8], has_plan: bool, acked: Position) -> DeliveryCursor {
        let plan = has_plan.then(|| {
            (
                Position {
                    seq: u64_at(bytes, self.plan_start_seq),
                    event: u32_at(bytes, self.plan_start_event),
                },
                Position {
                    seq: u64_at(bytes, self.plan_end_seq),
                    event: u32_at(bytes, self.plan_end_event),
                },
            )
        });
        DeliveryCursor {
            acked,
            plan,
            retry: RetryState {
                attempts: u32_at(bytes, self.attempts),
                next_attempt_unix_ms: u64_at(bytes, self.next_attempt),
                first_failure_unix_ms: u64_at(bytes, self.first_failure),
                last_error_class: u16_at(bytes, self.last_error_class),
            },
            dead_lettered: u64_at(bytes, self.dead_lettered),
        }
    }
}

impl DeliveryCursor {
    /// The WAL cursor state: the position plus this state as a version 2 blob.
    pub fn encode(&self) -> CursorState {
        let mut bytes = [0u8; ENCODED_BYTES];
        let (plan_start, plan_end) = self.plan.unwrap_or_default();
        bytes[0] = VERSION;
        bytes[1] = if self.plan.is_some() { FLAG_PLAN } else { 0 };
        bytes[2..4].copy_from_slice(&self.retry.last_error_class.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.retry.attempts.to_le_bytes());
        bytes[8..16].copy_from_slice(&plan_start.seq.to_le_bytes());
        bytes[16..20].copy_from_slice(&plan_start.event.to_le_bytes());
        bytes[20..24].copy_from_slice(&plan_end.event.to_le_bytes());
        bytes[24..32].copy_from_slice(&plan_end.seq.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.retry.next_attempt_unix_ms.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.retry.first_failure_unix_ms.to_le_bytes());
        bytes[48..56].copy_from_slice(&self.dead_lettered.to_le_bytes());
        CursorState {
            acked: self.acked,
            // Always fits (checked at compile time above).
            blob: CursorBlob::new(&bytes).unwrap_or_default(),
        }
    }

    /// Read a WAL cursor state written by [`DeliveryCursor::encode`], by flagstream 0.1
    /// (migrated by the WAL), or just created (empty blob).
    pub fn decode(state: &CursorState) -> Result<DeliveryCursor, UnknownCursorState> {
        let bytes = state.blob.as_bytes();
        let unknown = || UnknownCursorState {
            version: bytes.first().copied().unwrap_or(0),
            len: bytes.len(),
        };
        match bytes.first() {
            None => Ok(DeliveryCursor {
                acked: state.acked,
                ..DeliveryCursor::default()
            }),
            Some(&VERSION) if bytes.len() == ENCODED_BYTES => {
                Ok(CURRENT.decode(bytes, bytes[1] & FLAG_PLAN != 0, state.acked))
            }
            Some(&LEGACY_V1_BLOB_TAG) if bytes.len() == LEGACY_BYTES => {
                let has_plan = u32_at(bytes, 1) & u32::from(FLAG_PLAN) != 0;
                Ok(LEGACY.decode(bytes, has_plan, state.acked))
            }
            Some(_) => Err(unknown()),
        }
    }

    /// [`DeliveryCursor::decode`], falling back to the bare position (logged) when the blob
    /// is not readable: the position is the WAL's and always safe to resume from; what is
    /// lost is the retry schedule and the dead-letter count.
    pub fn load(destination: &str, state: &CursorState) -> DeliveryCursor {
        DeliveryCursor::decode(state).unwrap_or_else(|error| {
            tracing::warn!(destination, %error,
                "Ignoring the cursor's delivery state (retry schedule, dead-letter count); resuming from its position.");
            DeliveryCursor {
                acked: state.acked,
                ..DeliveryCursor::default()
            }
        })
    }
}

/// One line describing a cursor blob given in hex (as `wal inspect` reports it), for
/// operators; `None` when it is not hex.
pub fn describe_hex(hex: &str) -> Option<String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let state = CursorState {
        acked: Position::default(),
        blob: CursorBlob::new(&bytes).ok()?,
    };
    Some(match DeliveryCursor::decode(&state) {
        Err(error) => error.to_string(),
        Ok(cursor) => {
            let mut line = format!("{} dead-lettered", cursor.dead_lettered);
            if let Some((start, end)) = cursor.plan {
                line += &format!(
                    ", oldest batch {}.{}..{}.{}",
                    start.seq, start.event, end.seq, end.event
                );
            }
            if cursor.retry.attempts > 0 {
                line += &format!(
                    ", retry attempt {} (error class {}), next at unix ms {}",
                    cursor.retry.attempts,
                    cursor.retry.last_error_class,
                    cursor.retry.next_attempt_unix_ms
                );
            }
            line
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeliveryCursor {
        DeliveryCursor {
            acked: Position { seq: 77, event: 3 },
            plan: Some((
                Position { seq: 77, event: 3 },
                Position { seq: 90, event: 1 },
            )),
            retry: RetryState {
                attempts: 4,
                next_attempt_unix_ms: 1_000,
                first_failure_unix_ms: 900,
                last_error_class: 7,
            },
            dead_lettered: 12,
        }
    }

    #[test]
    fn round_trips_with_and_without_a_plan() {
        for state in [
            sample(),
            DeliveryCursor {
                plan: None,
                ..sample()
            },
            DeliveryCursor::default(),
        ] {
            let encoded = state.encode();
            assert_eq!(encoded.acked, state.acked);
            assert_eq!(encoded.blob.as_bytes().len(), ENCODED_BYTES);
            assert_eq!(DeliveryCursor::decode(&encoded), Ok(state));
        }
    }

    #[test]
    fn an_empty_blob_is_a_fresh_cursor_and_an_unknown_one_is_refused() {
        let fresh = CursorState {
            acked: Position { seq: 5, event: 0 },
            ..CursorState::default()
        };
        let decoded = DeliveryCursor::decode(&fresh).unwrap();
        assert_eq!(decoded.acked, fresh.acked);
        assert_eq!((decoded.plan, decoded.dead_lettered), (None, 0));
        let future = CursorState {
            blob: CursorBlob::new(&[9, 1, 2]).unwrap(),
            ..fresh
        };
        assert_eq!(
            DeliveryCursor::decode(&future),
            Err(UnknownCursorState { version: 9, len: 3 })
        );
        assert_eq!(
            describe_hex("0901"),
            Some("cursor state of 2 bytes with version 9 is not one this build reads".into())
        );
        let hex: String = sample()
            .encode()
            .blob
            .as_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let line = describe_hex(&hex).unwrap();
        assert!(
            line.contains("12 dead-lettered") && line.contains("retry attempt 4"),
            "{line}"
        );
        assert_eq!(describe_hex("zz"), None);
        let loaded = DeliveryCursor::load("test", &future);
        assert_eq!(
            (loaded.acked, loaded.retry),
            (fresh.acked, RetryState::default())
        );
    }

    /// A cursor file written by flagstream 0.1's code (kept as a fixture, generated by that
    /// version's `encode_slot`): generation 4 in slot A, generation 5 (the state `sample()`)
    /// in slot B.
    const CURSOR_0_1: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cursor-0.1.cur"
    ));

    #[test]
    fn a_0_1_cursor_file_is_migrated_on_open_and_keeps_its_delivery_state() {
        use crate::wal::{AppendRequest, Wal, WalOptions};
        let dir = tempfile::tempdir().unwrap();
        let mut options = WalOptions::new(dir.path());
        options.segment_bytes = 64 * 1024;
        options.max_bytes = 64 * 1024 * 8;
        options.min_free_bytes = 0;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let wal = Wal::open(options.clone()).unwrap();
            for _ in 0..100 {
                let request = AppendRequest {
                    tag: 0,
                    event_count: 1,
                    received_at_ms: 0,
                    parts: &[b"{}"],
                };
                wal.append(request).await.unwrap();
            }
            wal.close().await.unwrap();
        });
        let path = dir.path().join("cursors/kinesis.cur");
        std::fs::write(&path, CURSOR_0_1).unwrap();

        let wal = Wal::open(options.clone()).unwrap();
        let mut cursor = wal.open_cursor("kinesis").unwrap();
        assert_eq!(DeliveryCursor::decode(&cursor.state()), Ok(sample()));
        // Rewritten as version 2 into slot A (generation 6), slot B left as 0.1 wrote it.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u16_at(&bytes, 4), 2, "slot A is version 2");
        assert_eq!(bytes[512..1024], CURSOR_0_1[512..1024]);
        let next = DeliveryCursor {
            acked: Position { seq: 90, event: 1 },
            plan: None,
            retry: RetryState::default(),
            dead_lettered: 13,
        };
        cursor.persist(next.encode()).unwrap();
        drop(cursor);
        drop(wal);

        let wal = Wal::open(options).unwrap();
        let cursor = wal.open_cursor("kinesis").unwrap();
        assert_eq!(DeliveryCursor::decode(&cursor.state()), Ok(next));
    }
}
