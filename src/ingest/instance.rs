//! The instance id of a data dir: `<data-dir>/instance-id`.
//!
//! 128 random bits created the first time flagstream starts on a data dir and kept for the
//! data dir's life. Ingest stamps it into every stored record, and seq-derived event ids mix
//! it in (see `crate::event::event_id`), so two instances behind a load balancer — or one
//! instance whose data dir was reset — never give different events the same id.
//!
//! The file lives at the data-dir level, beside (not inside) the WAL directory: it names the
//! data dir, not a WAL layout. Its content is 32 lowercase hex digits and a newline.
//!
//! Invariants:
//! * Created durably and atomically: written to `instance-id.tmp`, fsynced, renamed over
//!   `instance-id`, and the directory fsynced, so a crash leaves either no file (a new id is
//!   made on the next start, before any record used the old one) or the complete file.
//! * Never silently replaced: an unreadable or malformed file stops the start with an error
//!   naming the file. (Losing it would not change the ids of records already stored — each
//!   record carries its own instance id — but an operator should know the file was damaged.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::event::InstanceId;

/// File name of the instance id inside the data dir.
pub const FILE_NAME: &str = "instance-id";

#[derive(Debug, thiserror::Error)]
pub enum InstanceIdError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} does not hold an instance id (32 hex digits); restore it from a backup, or \
         delete it to give this data dir a new id"
    )]
    Malformed { path: PathBuf },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The data dir's instance id, created (durably) on first use. `data_dir` must exist.
pub fn load_or_create(data_dir: &Path) -> Result<InstanceId, InstanceIdError> {
    let path = data_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => InstanceId::from_hex(&text).ok_or(InstanceIdError::Malformed { path }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let id = InstanceId(rand::random());
            create(data_dir, &path, id).map_err(|source| InstanceIdError::Create {
                path: path.clone(),
                source,
            })?;
            Ok(id)
        }
        Err(source) => Err(InstanceIdError::Read { path, source }),
    }
}

/// Write temp, fsync, rename, fsync the directory.
fn create(data_dir: &Path, path: &Path, id: InstanceId) -> io::Result<()> {
    let temp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    file.write_all(format!("{}\n", id.to_hex()).as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text, format!("{}\n", first.to_hex()));
        assert!(!dir.path().join("instance-id.tmp").exists());
    }

    #[test]
    fn every_data_dir_gets_its_own_id() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create(a.path()).unwrap(),
            load_or_create(b.path()).unwrap()
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_not_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "not an id\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, InstanceIdError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("instance-id"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "not an id\n"
        );
    }
}
