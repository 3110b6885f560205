//! Named, persisted cursors: one file per cursor with two checksummed slots (A/B). A cursor
//! is a position plus an opaque blob ([`CursorBlob`]) that its consumer (delivery: retry
//! state, batch plan, counters) encodes; the WAL stores and checksums the blob without
//! reading it, so delivery's state can change without changing this format.
//!
//! ```text
//! cursors/<name>.cur   4096 bytes, preallocated
//!   slot A at offset 0, slot B at offset 512; a write goes to slot (generation % 2)
//!   slot, version 2 (rest of the 512 bytes zero):
//!     0 magic "CUR1" | 4 version u16 = 2 | 6 slot_len u16 = 44 + blob_len
//!     8 generation u64 | 16 name_hash u64 | 24 acked_seq u64 | 32 acked_event u32
//!    36 blob_len u16 (<= 256) | 38 reserved u16 = 0 | 40 blob | crc32 u32 over 0..40+blob_len
//!   slot, version 1 (flagstream 0.1; read, never written):
//!     0 magic "CUR1" | 4 version u16 = 1 | 6 slot_len u16 = 100 | 8 generation u64
//!    16 name_hash u64 | 24 acked_seq u64 | 32 acked_event u32 | 36..96 delivery fields
//!    (flags, plan, retry state, dead-letter count) | 96 crc32 u32 over 0..96
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
//! * Migration: a file whose newest slot is version 1 is rewritten as version 2 on open (into
//!   the other slot, like any persist, so a crash mid-migration leaves the version 1 slot to
//!   migrate again). Its position is kept; its bytes 36..96 become the blob verbatim, after
//!   the tag [`LEGACY_V1_BLOB_TAG`], for the consumer to decode.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::core::Core;
use super::format::{u16_at, u32_at, u64_at};
use super::io::WalIo;
use super::{CursorState, Position, WalError, WalInner};
use crate::metrics as names;

/// Bytes of a cursor file.
pub(crate) const CURSOR_FILE_BYTES: u64 = 4096;
/// Bytes reserved per slot.
pub(crate) const SLOT_BYTES: usize = 512;
const SLOT_MAGIC: [u8; 4] = *b"CUR1";
/// The slot format written now.
const SLOT_VERSION: u16 = 2;
/// flagstream 0.1's slot format (migrated on open).
const SLOT_VERSION_1: u16 = 1;
const SLOT_V1_BODY: usize = 96;
const SLOT_V1_LEN: u16 = 100;
/// Bytes of a version 2 slot before the blob.
const SLOT_HEAD: usize = 40;
/// Largest blob a cursor carries.
pub const MAX_CURSOR_BLOB_BYTES: usize = 256;
/// First byte of the blob made from a 0.1 slot: the 60 bytes that follow are that slot's
/// bytes 36..96 (see the module doc).
pub const LEGACY_V1_BLOB_TAG: u8 = 1;

/// The opaque, bounded part of a cursor (at most [`MAX_CURSOR_BLOB_BYTES`]), stored and
/// checksummed by the WAL, encoded by whoever owns the cursor. `Copy`, so cursor states can
/// be passed around freely.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CursorBlob {
    len: u16,
    bytes: [u8; MAX_CURSOR_BLOB_BYTES],
}

impl CursorBlob {
    /// A blob holding `bytes`; fails when they exceed [`MAX_CURSOR_BLOB_BYTES`].
    pub fn new(bytes: &[u8]) -> Result<CursorBlob, WalError> {
        if bytes.len() > MAX_CURSOR_BLOB_BYTES {
            return Err(WalError::InvalidArgument(format!(
                "cursor blob of {} bytes exceeds the maximum of {MAX_CURSOR_BLOB_BYTES}",
                bytes.len()
            )));
        }
        let mut blob = CursorBlob::default();
        blob.bytes[..bytes.len()].copy_from_slice(bytes);
        blob.len = bytes.len() as u16;
        Ok(blob)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Default for CursorBlob {
    fn default() -> Self {
        CursorBlob {
            len: 0,
            bytes: [0; MAX_CURSOR_BLOB_BYTES],
        }
    }
}

impl std::fmt::Debug for CursorBlob {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "CursorBlob(")?;
        for byte in self.as_bytes() {
            write!(formatter, "{byte:02x}")?;
        }
        write!(formatter, ")")
    }
}

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

/// Encode one slot (`SLOT_BYTES` long, zero padded) in the current version.
pub(crate) fn encode_slot(
    generation: u64,
    name_hash: u64,
    state: &CursorState,
) -> [u8; SLOT_BYTES] {
    let blob = state.blob.as_bytes();
    let crc_at = SLOT_HEAD + blob.len();
    let mut slot = [0u8; SLOT_BYTES];
    slot[0..4].copy_from_slice(&SLOT_MAGIC);
    slot[4..6].copy_from_slice(&SLOT_VERSION.to_le_bytes());
    slot[6..8].copy_from_slice(&((crc_at + 4) as u16).to_le_bytes());
    slot[8..16].copy_from_slice(&generation.to_le_bytes());
    slot[16..24].copy_from_slice(&name_hash.to_le_bytes());
    slot[24..32].copy_from_slice(&state.acked.seq.to_le_bytes());
    slot[32..36].copy_from_slice(&state.acked.event.to_le_bytes());
    slot[36..38].copy_from_slice(&(blob.len() as u16).to_le_bytes());
    slot[SLOT_HEAD..crc_at].copy_from_slice(blob);
    let crc = crc32fast::hash(&slot[0..crc_at]);
    slot[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// A decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub generation: u64,
    pub state: CursorState,
    /// Written by flagstream 0.1 (version 1): to be rewritten in the current version.
    pub legacy: bool,
}

/// Decode one slot if it is valid and belongs to `name_hash` (either version).
pub(crate) fn decode_slot(slot: &[u8], expected_name_hash: u64) -> Option<Slot> {
    if slot.len() < SLOT_HEAD || slot[0..4] != SLOT_MAGIC || u64_at(slot, 16) != expected_name_hash
    {
        return None;
    }
    let acked = Position {
        seq: u64_at(slot, 24),
        event: u32_at(slot, 32),
    };
    let generation = u64_at(slot, 8);
    let (blob, legacy) = match u16_at(slot, 4) {
        SLOT_VERSION => {
            let blob_len = usize::from(u16_at(slot, 36));
            let crc_at = SLOT_HEAD + blob_len;
            let valid = blob_len <= MAX_CURSOR_BLOB_BYTES
                && usize::from(u16_at(slot, 6)) == crc_at + 4
                && slot.len() >= crc_at + 4
                && u32_at(slot, crc_at) == crc32fast::hash(&slot[0..crc_at]);
            if !valid {
                return None;
            }
            (CursorBlob::new(&slot[SLOT_HEAD..crc_at]).ok()?, false)
        }
        SLOT_VERSION_1 => {
            let valid = slot.len() >= usize::from(SLOT_V1_LEN)
                && u16_at(slot, 6) == SLOT_V1_LEN
                && u32_at(slot, SLOT_V1_BODY) == crc32fast::hash(&slot[0..SLOT_V1_BODY]);
            if !valid {
                return None;
            }
            let mut legacy = vec![LEGACY_V1_BLOB_TAG];
            legacy.extend_from_slice(&slot[36..SLOT_V1_BODY]);
            (CursorBlob::new(&legacy).ok()?, true)
        }
        _ => return None,
    };
    Some(Slot {
        generation,
        state: CursorState { acked, blob },
        legacy,
    })
}

/// The newest valid slot of a cursor file's bytes.
pub(crate) fn decode_file(bytes: &[u8], expected_name_hash: u64) -> Option<Slot> {
    let slot_a = bytes
        .get(0..SLOT_BYTES)
        .and_then(|slot| decode_slot(slot, expected_name_hash));
    let slot_b = bytes
        .get(SLOT_BYTES..2 * SLOT_BYTES)
        .and_then(|slot| decode_slot(slot, expected_name_hash));
    match (slot_a, slot_b) {
        (Some(a), Some(b)) => Some(if b.generation > a.generation { b } else { a }),
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

impl Cursor {
    /// Persist a state whose position may be *behind* the current one (a rewind). Checked
    /// and persisted under the registry lock that garbage collection holds while it chooses
    /// segments, so the records from `state.acked.seq` on cannot be freed in between; fails
    /// with [`WalError::Trimmed`] when they are already gone.
    pub fn rewind(&mut self, state: CursorState) -> Result<(), WalError> {
        let wal = Arc::clone(&self.wal);
        let _registry = wal.core.cursors.lock();
        let first_seq = wal.core.first_seq();
        if state.acked.seq < first_seq {
            return Err(WalError::Trimmed {
                seq: state.acked.seq,
                first_seq,
            });
        }
        self.persist(state)
    }
}

/// Load every `*.cur` file of `dir`, migrating 0.1 files (module doc). Files whose slots are
/// all invalid start at `fallback`. Returns the registry and the number of such files.
pub(crate) fn load_all(
    io: &dyn WalIo,
    dir: &Path,
    fallback: u64,
) -> Result<(CursorRegistry, u64), WalError> {
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
            Some(slot) if slot.legacy => migrate(io, &file, &path, hash, slot)?,
            Some(slot) => (slot.generation, slot.state),
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

/// Rewrite a 0.1 slot in the current version, into the other slot (a crash in between leaves
/// the 0.1 slot, migrated again next time). Returns the new `(generation, state)`.
fn migrate(
    io: &dyn WalIo,
    file: &File,
    path: &Path,
    hash: u64,
    slot: Slot,
) -> Result<(u64, CursorState), WalError> {
    let generation = slot.generation + 1;
    let bytes = encode_slot(generation, hash, &slot.state);
    let offset = (generation % 2) * SLOT_BYTES as u64;
    io.write_at(file, path, &bytes, offset)
        .and_then(|()| io.sync_data(file, path))
        .map_err(|source| WalError::Io {
            context: format!(
                "migrating cursor file {} to version {SLOT_VERSION}",
                path.display()
            ),
            source,
        })?;
    tracing::info!(file = %path.display(), "Migrated a flagstream 0.1 cursor file.");
    Ok((generation, slot.state))
}

/// Open the named cursor, creating and persisting it at `first_seq` if it does not exist
/// (the caller chooses it among the stored seqs). The caller holds the registry lock, so
/// garbage collection cannot free `first_seq` before the new cursor is on disk.
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
    tracing::info!(cursor = name, seq = first_seq, "Created a cursor.");
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
            blob: CursorBlob::new(b"retry state, plan and counters").unwrap(),
        }
    }

    fn slot(generation: u64, state: CursorState) -> Option<Slot> {
        Some(Slot {
            generation,
            state,
            legacy: false,
        })
    }

    #[test]
    fn slot_round_trips_with_any_blob_up_to_the_limit() {
        let encoded = encode_slot(9, name_hash("kinesis"), &sample_state());
        assert_eq!(
            decode_slot(&encoded, name_hash("kinesis")),
            slot(9, sample_state())
        );
        assert_eq!(decode_slot(&encoded, name_hash("pubsub")), None);
        for len in [0, 1, MAX_CURSOR_BLOB_BYTES] {
            let state = CursorState {
                blob: CursorBlob::new(&vec![0xAB; len]).unwrap(),
                ..sample_state()
            };
            let encoded = encode_slot(1, 5, &state);
            assert_eq!(decode_slot(&encoded, 5), slot(1, state), "blob of {len}");
            // The checksum covers the blob.
            let mut damaged = encoded;
            damaged[SLOT_HEAD + len / 2] ^= 1;
            assert_eq!(decode_slot(&damaged, 5), None, "blob of {len}");
        }
        assert!(CursorBlob::new(&[0; MAX_CURSOR_BLOB_BYTES + 1]).is_err());
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let hash = name_hash("s3");
        let older = CursorState {
            acked: Position { seq: 10, event: 0 },
            ..sample_state()
        };
        let newer = CursorState {
            acked: Position { seq: 20, event: 0 },
            ..Default::default()
        };
        let mut file = vec![0u8; CURSOR_FILE_BYTES as usize];
        file[0..SLOT_BYTES].copy_from_slice(&encode_slot(2, hash, &older));
        file[SLOT_BYTES..2 * SLOT_BYTES].copy_from_slice(&encode_slot(3, hash, &newer));
        assert_eq!(decode_file(&file, hash), slot(3, newer));
        // Tear the newer slot at every byte: the older one must be what we load.
        let newer_len = SLOT_HEAD + 4;
        for torn_at in 0..newer_len {
            let mut torn = file.clone();
            for byte in &mut torn[SLOT_BYTES + torn_at..2 * SLOT_BYTES] {
                *byte = 0;
            }
            let loaded = decode_file(&torn, hash).unwrap();
            assert!(
                loaded == slot(2, older).unwrap() || loaded == slot(3, newer).unwrap(),
                "torn at {torn_at}: {loaded:?}"
            );
            if torn_at < SLOT_HEAD {
                assert_eq!(Some(loaded), slot(2, older), "torn at {torn_at}");
            }
        }
        assert_eq!(decode_file(&[0u8; 4096], hash), None);
    }

    #[test]
    fn a_0_1_slot_is_read_with_its_delivery_fields_as_a_tagged_blob() {
        // Written by flagstream 0.1's encode_slot (see src/delivery/cursor_state.rs).
        let file = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cursor-0.1.cur"
        ));
        let slot = decode_file(file, name_hash("kinesis")).unwrap();
        assert_eq!((slot.generation, slot.legacy), (5, true));
        assert_eq!(slot.state.acked, Position { seq: 77, event: 3 });
        let blob = slot.state.blob.as_bytes();
        assert_eq!(blob.len(), 61);
        assert_eq!(blob[0], LEGACY_V1_BLOB_TAG);
        assert_eq!(blob[1..], file[SLOT_BYTES + 36..SLOT_BYTES + 96]);
        // A migrated slot is a plain version 2 slot with the same state.
        let rewritten = encode_slot(6, name_hash("kinesis"), &slot.state);
        assert_eq!(
            decode_slot(&rewritten, name_hash("kinesis")),
            Some(Slot {
                generation: 6,
                state: slot.state,
                legacy: false
            })
        );
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
