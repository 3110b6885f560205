//! Where the targets that open a WAL per input keep it: tmpfs when there is one, since on a
//! disk every input's fdatasyncs make the disk, not the code, the bottleneck (about 10 inputs
//! a second).

use std::path::{Path, PathBuf};

/// A directory for this process's scratch WAL, named `<prefix>-<pid>`.
pub fn dir(prefix: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("{prefix}-{}", std::process::id()))
}
