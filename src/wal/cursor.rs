//! Named, persisted cursors: one file per cursor with two checksummed slots (A/B).
//!
//! ```text
//! cursors/<name>.cur   4096 bytes, preallocated
//!   slot A at offset 0, slot B at offset 512; a write goes to slot (generation % 2)
//!   slot (100 bytes used, rest zero):
//!     0 magic "CUR1" | 4 version u16 | 6 slot_len u16 | 8 generation u64 | 16 name_hash u64
//!    24 acked_seq u64 | 32 acked_event u32 | 36 flags u32 (bit 0: plan present)
//!    40 plan_start_seq u64 | 48 plan_start_event u32 | 52 plan_end_event u32
//!    56 plan_end_seq u64 | 64 attempts u32 | 68 last_error_class u16 | 70 reserved u16
//!    72 next_attempt_unix_ms u64 | 80 first_failure_unix_ms u64 | 88 dead_lettered u64
//!    96 crc32 u32 over bytes 0..96
//! ```
//!
//! Invariants:
//! * A persist is `pwrite` of one whole slot, then fdatasync. It never touches the slot
//!   holding the newest valid state, so a torn write leaves that state readable; loading takes
//!   the valid slot with the highest generation. No rename, no directory fsync per update.
//! * `name_hash` binds a slot to its file name, so a file copied under another name is not
//!   silently taken for that cursor.
//! * The registry's in-memory `persisted` state changes only after the fdatasync succeeded;
//!   garbage collection reads only that, never positions that might not be on disk.
//! * A cursor file with no valid slot (both torn or corrupt) is logged at ERROR and restarts
//!   from the oldest stored record: re-delivering beats losing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::core::Core;
use super::{CursorState, Position, RetryState, WalError, WalInner};
use crate::metrics as names;

/// Bytes of a cursor file.
pub(crate) const CURSOR_FILE_BYTES: u64 = 4096;
/// Bytes reserved per slot.
pub(crate) const SLOT_BYTES: usize = 512;
const SLOT_MAGIC: [u8; 4] = *b"CUR1";
const SLOT_VERSION: u16 = 1;
const SLOT_BODY: usize = 96;
const SLOT_LEN: u16 = 100;
const FLAG_PLAN: u32 = 1;
/// Longest cursor name accepted.
pub(crate) const MAX_CURSOR_NAME: usize = 128;

/// Check that `name` is usable as a file name on every platform we care about.
pub(crate) fn validate_name(name: &str) -> Result<(), WalError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_CURSOR_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(WalError::InvalidArgument(format!(
            "cursor name {name:?} must be 1-{MAX_CURSOR_NAME} characters of A-Z a-z 0-9 - _ . and not start with '.'"
        )))
    }
}

pub(crate) fn name_hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Encode one slot (`SLOT_BYTES` long, zero padded).
pub(crate) fn encode_slot(
    generation: u64,
    name_hash: u64,
    state: &CursorState,
) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..4].copy_from_slice(&SLOT_MAGIC);
    slot[4..6].copy_from_slice(&SLOT_VERSION.to_le_bytes());
    slot[6..8].copy_from_slice(&SLOT_LEN.to_le_bytes());
    slot[8..16].copy_from_slice(&generation.to_le_bytes());
    slot[16..24].copy_from_slice(&name_hash.to_le_bytes());
    slot[24..32].copy_from_slice(&state.acked.seq.to_le_bytes());
    slot[32..36].copy_from_slice(&state.acked.event.to_le_bytes());
    let (flags, plan_start, plan_end) = match state.plan {
        Some((start, end)) => (FLAG_PLAN, start, end),
        None => (0, Position::default(), Position::default()),
    };
    slot[36..40].copy_from_slice(&flags.to_le_bytes());
    slot[40..48].copy_from_slice(&plan_start.seq.to_le_bytes());
    slot[48..52].copy_from_slice(&plan_start.event.to_le_bytes());
    slot[52..56].copy_from_slice(&plan_end.event.to_le_bytes());
    slot[56..64].copy_from_slice(&plan_end.seq.to_le_bytes());
    slot[64..68].copy_from_slice(&state.retry.attempts.to_le_bytes());
    slot[68..70].copy_from_slice(&state.retry.last_error_class.to_le_bytes());
    slot[72..80].copy_from_slice(&state.retry.next_attempt_unix_ms.to_le_bytes());
    slot[80..88].copy_from_slice(&state.retry.first_failure_unix_ms.to_le_bytes());
    slot[88..96].copy_from_slice(&state.dead_lettered.to_le_bytes());
    let crc = crc32fast::hash(&slot[0..SLOT_BODY]);
    slot[96..100].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Decode one slot: `(generation, state)` if it is valid and belongs to `name_hash`.
pub(crate) fn decode_slot(slot: &[u8], expected_name_hash: u64) -> Option<(u64, CursorState)> {
    if slot.len() < SLOT_LEN as usize
        || slot[0..4] != SLOT_MAGIC
        || u16_at(slot, 4) != SLOT_VERSION
        || u16_at(slot, 6) != SLOT_LEN
        || u32_at(slot, 96) != crc32fast::hash(&slot[0..SLOT_BODY])
        || u64_at(slot, 16) != expected_name_hash
    {
        return None;
    }
    let plan = (u32_at(slot, 36) & FLAG_PLAN != 0).then(|| {
        (
            Position {
                seq: u64_at(slot, 40),
                event: u32_at(slot, 48),
            },
            Position {
                seq: u64_at(slot, 56),
                event: u32_at(slot, 52),
            },
        )
    });
    let state = CursorState {
        acked: Position {
            seq: u64_at(slot, 24),
            event: u32_at(slot, 32),
        },
        plan,
        retry: RetryState {
            attempts: u32_at(slot, 64),
            next_attempt_unix_ms: u64_at(slot, 72),
            first_failure_unix_ms: u64_at(slot, 80),
            last_error_class: u16_at(slot, 68),
        },
        dead_lettered: u64_at(slot, 88),
    };
    Some((u64_at(slot, 8), state))
}

/// The newest valid slot of a cursor file's bytes.
pub(crate) fn decode_file(bytes: &[u8], expected_name_hash: u64) -> Option<(u64, CursorState)> {
    let slot_a = bytes
        .get(0..SLOT_BYTES)
        .and_then(|slot| decode_slot(slot, expected_name_hash));
    let slot_b = bytes
        .get(SLOT_BYTES..2 * SLOT_BYTES)
        .and_then(|slot| decode_slot(slot, expected_name_hash));
    match (slot_a, slot_b) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (Some(a), None) => Some(a),
        (None, b) => b,
    }
}

/// What the registry knows about one cursor.
#[derive(Debug)]
pub(crate) struct CursorShared {
    pub name: String,
    pub path: PathBuf,
    pub file: File,
    pub name_hash: u64,
    pub persisted: Mutex<Persisted>,
    /// Some `open_cursor` call in this process claimed it (its destination is configured).
    pub claimed: AtomicBool,
    /// We already logged that this unclaimed cursor pins the log.
    pub warned_pinning: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Persisted {
    pub state: CursorState,
    pub generation: u64,
    pub released: bool,
}

impl CursorShared {
    pub(crate) fn persisted_state(&self) -> CursorState {
        self.persisted.lock().state
    }

    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }
}

/// Every cursor on disk, by name.
#[derive(Debug, Default)]
pub(crate) struct CursorRegistry {
    pub cursors: BTreeMap<String, Arc<CursorShared>>,
}

impl CursorRegistry {
    /// The lowest persisted acked seq over every cursor (configured or not), or `None` when
    /// there are no cursors.
    pub(crate) fn min_persisted_seq(&self) -> Option<u64> {
        self.cursors
            .values()
            .map(|cursor| cursor.persisted_state().acked.seq)
            .min()
    }
}

/// A named, persisted cursor (one per destination). See the module doc for the file format.
pub struct Cursor {
    pub(crate) wal: Arc<WalInner>,
    pub(crate) shared: Arc<CursorShared>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Cursor")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl Cursor {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The last persisted state.
    pub fn state(&self) -> CursorState {
        self.shared.persisted_state()
    }

    /// Persist atomically (pwrite of the older slot + fdatasync); garbage collection sees the
    /// new position afterwards. Blocking. On error the previous state stays in force.
    pub fn persist(&mut self, state: CursorState) -> Result<(), WalError> {
        let core = &self.wal.core;
        let next_seq = core.committed_next();
        if state.acked.seq > next_seq {
            return Err(WalError::InvalidArgument(format!(
                "cursor {} cannot be acked up to seq {}: the log ends before seq {next_seq}",
                self.shared.name, state.acked.seq
            )));
        }
        let mut persisted = self.shared.persisted.lock();
        if persisted.released {
            return Err(WalError::InvalidArgument(format!(
                "cursor {} was released",
                self.shared.name
            )));
        }
        let generation = persisted.generation + 1;
        let slot = encode_slot(generation, self.shared.name_hash, &state);
        let offset = (generation % 2) * SLOT_BYTES as u64;
        let io = core.io.as_ref();
        io.write_at(&self.shared.file, &self.shared.path, &slot, offset)
            .and_then(|()| io.sync_data(&self.shared.file, &self.shared.path))
            .map_err(|source| WalError::Io {
                context: format!("persisting cursor {}", self.shared.name),
                source,
            })?;
        *persisted = Persisted {
            state,
            generation,
            released: false,
        };
        Ok(())
    }
}

/// Load every `*.cur` file of `dir`. Files whose slots are all invalid start at `fallback`.
pub(crate) fn load_all(dir: &Path, fallback: u64) -> Result<(CursorRegistry, u64), WalError> {
    let mut registry = CursorRegistry::default();
    let mut corrupt = 0;
    let entries = std::fs::read_dir(dir).map_err(|source| WalError::Io {
        context: format!("listing cursors in {}", dir.display()),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| WalError::Io {
            context: format!("listing cursors in {}", dir.display()),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|name| name.strip_suffix(".cur"))
        else {
            continue;
        };
        if validate_name(name).is_err() {
            tracing::warn!(file = %entry.path().display(), "Ignoring a cursor file with an invalid name.");
            continue;
        }
        let path = entry.path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| WalError::Io {
                context: format!("opening cursor file {}", path.display()),
                source,
            })?;
        let mut bytes = vec![0u8; 2 * SLOT_BYTES];
        let read = file.read_at(&mut bytes, 0).map_err(|source| WalError::Io {
            context: format!("reading cursor file {}", path.display()),
            source,
        })?;
        bytes.truncate(read);
        let hash = name_hash(name);
        let (generation, state) = match decode_file(&bytes, hash) {
            Some(found) => found,
            None => {
                corrupt += 1;
                tracing::error!(cursor = name, file = %path.display(), restart_seq = fallback,
                    "Cursor file has no valid slot; restarting this cursor from the oldest stored record (events may be delivered again).");
                (
                    0,
                    CursorState {
                        acked: Position {
                            seq: fallback,
                            event: 0,
                        },
                        ..Default::default()
                    },
                )
            }
        };
        let shared = CursorShared {
            name: name.to_owned(),
            path,
            file,
            name_hash: hash,
            persisted: Mutex::new(Persisted {
                state,
                generation,
                released: false,
            }),
            claimed: AtomicBool::new(false),
            warned_pinning: AtomicBool::new(false),
        };
        registry.cursors.insert(name.to_owned(), Arc::new(shared));
    }
    Ok((registry, corrupt))
}

/// Open the named cursor, creating and persisting it at `first_seq` if it does not exist.
/// The caller holds the registry lock, so garbage collection cannot free `first_seq` before
/// the new cursor is on disk.
pub(crate) fn open_or_create(
    core: &Core,
    registry: &mut CursorRegistry,
    name: &str,
    first_seq: u64,
) -> Result<Arc<CursorShared>, WalError> {
    validate_name(name)?;
    if let Some(existing) = registry.cursors.get(name) {
        existing.claimed.store(true, Ordering::Release);
        metrics::gauge!(names::WAL_ORPHAN_CURSORS, "cursor" => name.to_owned()).set(0.0);
        return Ok(Arc::clone(existing));
    }
    let path = core.cursor_dir.join(format!("{name}.cur"));
    let io = core.io.as_ref();
    let context = |what: &str| format!("{what} cursor file {}", path.display());
    let file = io
        .allocate(&path, CURSOR_FILE_BYTES)
        .map_err(|source| WalError::Io {
            context: context("creating"),
            source,
        })?;
    let hash = name_hash(name);
    let state = CursorState {
        acked: Position {
            seq: first_seq,
            event: 0,
        },
        ..Default::default()
    };
    let written = io
        .write_at(
            &file,
            &path,
            &encode_slot(1, hash, &state),
            SLOT_BYTES as u64,
        )
        .and_then(|()| io.sync_data(&file, &path))
        .and_then(|()| io.sync_dir(&core.cursor_dir));
    if let Err(source) = written {
        let _ = io.remove_file(&path);
        return Err(WalError::Io {
            context: context("initialising"),
            source,
        });
    }
    tracing::info!(
        cursor = name,
        seq = first_seq,
        "Created a cursor at the oldest stored record."
    );
    let shared = Arc::new(CursorShared {
        name: name.to_owned(),
        path,
        file,
        name_hash: hash,
        persisted: Mutex::new(Persisted {
            state,
            generation: 1,
            released: false,
        }),
        claimed: AtomicBool::new(true),
        warned_pinning: AtomicBool::new(false),
    });
    registry
        .cursors
        .insert(name.to_owned(), Arc::clone(&shared));
    Ok(shared)
}

/// Delete the named cursor's file so it no longer pins segments.
pub(crate) fn release(
    core: &Core,
    registry: &mut CursorRegistry,
    name: &str,
) -> Result<(), WalError> {
    let Some(shared) = registry.cursors.get(name).cloned() else {
        return Ok(());
    };
    let io = core.io.as_ref();
    {
        let mut persisted = shared.persisted.lock();
        io.remove_file(&shared.path)
            .and_then(|()| io.sync_dir(&core.cursor_dir))
            .map_err(|source| WalError::Io {
                context: format!("removing cursor file {}", shared.path.display()),
                source,
            })?;
        persisted.released = true;
    }
    registry.cursors.remove(name);
    metrics::gauge!(names::WAL_ORPHAN_CURSORS, "cursor" => name.to_owned()).set(0.0);
    tracing::warn!(
        cursor = name,
        "Released a cursor; it no longer pins the write-ahead log."
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_state() -> CursorState {
        CursorState {
            acked: Position { seq: 77, event: 3 },
            plan: Some((
                Position { seq: 77, event: 3 },
                Position { seq: 90, event: 0 },
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
    fn slot_round_trips() {
        let slot = encode_slot(9, name_hash("kinesis"), &sample_state());
        assert_eq!(
            decode_slot(&slot, name_hash("kinesis")),
            Some((9, sample_state()))
        );
        assert_eq!(decode_slot(&slot, name_hash("pubsub")), None);
        let no_plan = CursorState {
            plan: None,
            ..sample_state()
        };
        let slot = encode_slot(1, 5, &no_plan);
        assert_eq!(decode_slot(&slot, 5), Some((1, no_plan)));
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let hash = name_hash("s3");
        let older = CursorState {
            acked: Position { seq: 10, event: 0 },
            ..Default::default()
        };
        let newer = CursorState {
            acked: Position { seq: 20, event: 0 },
            ..Default::default()
        };
        let mut file = vec![0u8; CURSOR_FILE_BYTES as usize];
        file[0..SLOT_BYTES].copy_from_slice(&encode_slot(2, hash, &older));
        file[SLOT_BYTES..2 * SLOT_BYTES].copy_from_slice(&encode_slot(3, hash, &newer));
        assert_eq!(decode_file(&file, hash), Some((3, newer)));
        // Tear the newer slot at every byte: the older one must be what we load.
        for torn_at in 0..SLOT_LEN as usize {
            let mut torn = file.clone();
            for byte in &mut torn[SLOT_BYTES + torn_at..2 * SLOT_BYTES] {
                *byte = 0;
            }
            let loaded = decode_file(&torn, hash).unwrap();
            assert!(
                loaded == (2, older) || loaded == (3, newer),
                "torn at {torn_at}: {loaded:?}"
            );
            if torn_at < 96 {
                assert_eq!(loaded, (2, older), "torn at {torn_at}");
            }
        }
        assert_eq!(decode_file(&[0u8; 4096], hash), None);
    }

    #[test]
    fn names_are_restricted_to_safe_file_names() {
        for good in ["kinesis", "s3-archive", "dest_1.v2"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "../x",
            "white space",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
