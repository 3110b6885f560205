//! The `file` destination: one NDJSON file per batch under a directory.
//!
//! `file:///var/lib/flagstream/export?format=ndjson&rotate=5s&max_bytes=8MiB`
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `format` | file format; only `ndjson` (one JSON document per line) | `ndjson` |
//! | `rotate` | longest time events wait before their file is written (the batch linger) | `5s` |
//! | `max_bytes` | largest file (the batch byte limit) | `8MiB` |
//!
//! ## Exactly once for files
//!
//! Rotation *is* batching: the engine cuts batches by size and time and each batch becomes one
//! file named after the batch id, `<batch id>.ndjson`. Batch ids are stable (same first and
//! last event position), so a batch delivered again after a crash or retry overwrites the same
//! file with the same bytes instead of duplicating events. File names sort in log order.
//!
//! ## Atomicity
//!
//! A file is written as `.<name>.tmp`, fdatasynced, renamed over `<name>`, and then the
//! directory is fsynced. Readers therefore see either no file or the complete file, never a
//! torn one, and a file is durable before the engine is told `Delivered`. Temp files left by a
//! crash start with `.` and end in `.tmp`; [`Destination::check`] removes them.
//!
//! Every I/O error is retriable (a full or read-only disk can be fixed by the operator); the
//! engine's retry budget eventually dead-letters the batch.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Deserialize;

use crate::event::Schema;

use super::kind::{BuildContext, DestinationKind};
use super::options::{HumanDuration, Size};
use super::{
    Batch, BatchLimits, DestError, Destination, DestinationSpec, FailureClass, SendOutcome,
};

/// Default longest wait before a file is written.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(5);
/// Default largest file. Two files in flight at this size keep memory well bounded.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;
/// Most events per file.
pub const MAX_EVENTS_PER_FILE: usize = 1_000_000;

/// The `file` destination type.
#[derive(Debug, Clone, Copy)]
pub struct FileKind;

/// The only file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Ndjson,
}

/// The file options (see the module doc).
#[derive(Debug, Clone, Deserialize)]
pub struct FileOptions {
    pub format: Option<FileFormat>,
    pub rotate: Option<HumanDuration>,
    pub max_bytes: Option<Size>,
}

impl DestinationKind for FileKind {
    const SCHEME: &'static str = "file";
    const SUMMARY: &'static str = "one NDJSON file per batch in a directory, written atomically";
    const EXAMPLE: &'static str = "file:///var/lib/flagstream/export?rotate=5s&max_bytes=8MiB";
    type Options = (FileOptions,);

    /// Files are written in parallel with a bounded memory footprint.
    const DEFAULT_CONCURRENCY: usize = 2;

    async fn build(
        &self,
        target: &str,
        (options,): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let dir = PathBuf::from(target);
        if target.is_empty() || !dir.is_absolute() {
            return Err(context
                .error("expected an absolute directory, e.g. file:///var/lib/flagstream/export"));
        }
        let rotate = options.rotate.map_or(DEFAULT_ROTATE, |HumanDuration(d)| d);
        if rotate.is_zero() {
            return Err(context.error("option `rotate` must be longer than 0s"));
        }
        let max_bytes = options.max_bytes.map_or(DEFAULT_MAX_BYTES, |Size(s)| s);
        if max_bytes < 1024 {
            return Err(context.error("option `max_bytes` must be at least 1KiB"));
        }
        Ok(Arc::new(FileDestination::new(
            &context.name,
            dir,
            context.schema,
            rotate,
            max_bytes,
        )))
    }
}

/// Writes each batch as one NDJSON file; see the module doc.
#[derive(Debug)]
pub struct FileDestination {
    name: String,
    dir: PathBuf,
    schema: Schema,
    limits: BatchLimits,
}

impl FileDestination {
    pub fn new(
        name: &str,
        dir: PathBuf,
        schema: Schema,
        rotate: Duration,
        max_bytes: usize,
    ) -> Self {
        FileDestination {
            name: name.to_string(),
            dir,
            schema,
            limits: BatchLimits {
                max_items: MAX_EVENTS_PER_FILE,
                max_bytes,
                max_item_bytes: max_bytes,
                per_item_overhead: 1, // the newline
                linger: rotate,
            },
        }
    }

    /// The embedded default when no `--dest` is given: NDJSON files in `<data-dir>/export`.
    pub fn default_spec(data_dir: &Path) -> DestinationSpec {
        let dir = data_dir.join("export");
        DestinationSpec {
            source: format!("file://{} (default destination)", dir.display()),
            scheme: "file".to_string(),
            target: dir.display().to_string(),
            options: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a batch is written to.
    pub fn file_path(&self, batch_id: &str) -> PathBuf {
        self.dir.join(file_name(batch_id))
    }
}

fn file_name(batch_id: &str) -> String {
    format!("{batch_id}.ndjson")
}

impl Destination for FileDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        let dir = self.dir.clone();
        let name = file_name(&batch.id);
        let payloads: Vec<Bytes> = batch
            .items
            .iter()
            .map(|item| item.payload.clone())
            .collect();
        async move {
            let path = dir.join(&name);
            let written =
                tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &payloads)).await;
            match written {
                Ok(Ok(())) => SendOutcome::Delivered,
                Ok(Err(err)) => SendOutcome::failed(
                    FailureClass::Retriable,
                    format!("writing {}: {err}", path.display()),
                ),
                Err(err) => SendOutcome::failed(
                    FailureClass::Retriable,
                    format!("writing {}: task failed: {err}", path.display()),
                ),
            }
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        let dir = self.dir.clone();
        async move {
            tokio::task::spawn_blocking(move || prepare_dir(&dir))
                .await
                .map_err(|err| DestError::Check(format!("checking the export directory: {err}")))?
        }
        .boxed()
    }
}

/// Write `payloads` as `<dir>/<name>` atomically: temp file, fdatasync, rename, fsync dir.
fn write_atomically(dir: &Path, name: &str, payloads: &[Bytes]) -> io::Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
    }
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&temp)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        for payload in payloads {
            writer.write_all(payload)?;
            writer.write_all(b"\n")?;
        }
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_data()?;
        fs::rename(&temp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Create the directory (durably), remove temp files a crash left, and prove it is writable.
fn prepare_dir(dir: &Path) -> Result<(), DestError> {
    let io_error = |context: String| move |source| DestError::Io { context, source };
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
        if let Some(parent) = dir.parent() {
            File::open(parent)
                .and_then(|parent| parent.sync_all())
                .map_err(io_error(format!("syncing {}", parent.display())))?;
        }
    }
    let entries = fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if file_name.starts_with('.') && file_name.ends_with(".tmp") {
            fs::remove_file(entry.path())
                .map_err(io_error(format!("removing {}", entry.path().display())))?;
        }
    }
    let probe = dir.join(".flagstream-write-probe.tmp");
    fs::write(&probe, b"probe")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(io_error(format!("{} is not writable", dir.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::BatchItem;

    fn batch(id: &str, rows: &[&str]) -> Batch {
        Batch {
            id: id.to_string(),
            schema: Schema::LaunchDarkly,
            items: rows
                .iter()
                .enumerate()
                .map(|(i, row)| BatchItem {
                    event_id: format!("e{i}"),
                    payload: Bytes::copy_from_slice(row.as_bytes()),
                    kind: "feature".into(),
                    key: None,
                    context_key: None,
                    environment: "prod".into(),
                    received_at_ms: 0,
                })
                .collect(),
        }
    }

    fn destination(dir: &Path) -> FileDestination {
        FileDestination::new(
            "file",
            dir.to_path_buf(),
            Schema::LaunchDarkly,
            DEFAULT_ROTATE,
            DEFAULT_MAX_BYTES,
        )
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn writes_one_ndjson_file_per_batch_named_by_batch_id() {
        let dir = tempfile::tempdir().unwrap();
        let dest = destination(&dir.path().join("export"));
        dest.check().await.unwrap();
        let outcome = dest
            .send(&batch("file-1-2", &[r#"{"a":1}"#, r#"{"b":2}"#]))
            .await;
        assert_eq!(outcome, SendOutcome::Delivered);
        let text = fs::read_to_string(dest.file_path("file-1-2")).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(listing(dest.dir()), vec!["file-1-2.ndjson"]);
    }

    #[tokio::test]
    async fn redelivery_overwrites_instead_of_duplicating() {
        let dir = tempfile::tempdir().unwrap();
        let dest = destination(dir.path());
        let b = batch("file-7-9", &["{\"x\":1}", "{\"x\":2}"]);
        assert_eq!(dest.send(&b).await, SendOutcome::Delivered);
        assert_eq!(dest.send(&b).await, SendOutcome::Delivered);
        assert_eq!(listing(dir.path()), vec!["file-7-9.ndjson"]);
        let lines = fs::read_to_string(dest.file_path("file-7-9")).unwrap();
        assert_eq!(lines.lines().count(), 2);
    }

    #[tokio::test]
    async fn a_crashed_write_leaves_no_visible_partial_file_and_check_cleans_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = destination(dir.path());
        // What a crash mid-write leaves: only the temp file.
        fs::write(dir.path().join(".file-1-1.ndjson.tmp"), b"{\"half").unwrap();
        let visible: Vec<String> = listing(dir.path())
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert!(visible.is_empty());
        dest.check().await.unwrap();
        assert!(listing(dir.path()).is_empty(), "stale temp file removed");
        // The replayed batch then lands complete.
        assert_eq!(
            dest.send(&batch("file-1-1", &["{}"])).await,
            SendOutcome::Delivered
        );
        assert_eq!(listing(dir.path()), vec!["file-1-1.ndjson"]);
    }

    #[tokio::test]
    async fn an_existing_file_is_replaced_whole_never_torn() {
        let dir = tempfile::tempdir().unwrap();
        let dest = destination(dir.path());
        fs::write(
            dest.file_path("file-3-3"),
            b"old contents that are longer than the new ones\n",
        )
        .unwrap();
        assert_eq!(
            dest.send(&batch("file-3-3", &["{}"])).await,
            SendOutcome::Delivered
        );
        assert_eq!(
            fs::read_to_string(dest.file_path("file-3-3")).unwrap(),
            "{}\n"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn io_errors_are_retriable_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: cannot be created or written.
        let blocked = dir.path().join("not-a-dir");
        fs::write(&blocked, b"").unwrap();
        let dest = destination(&blocked);
        match dest.send(&batch("file-1-1", &["{}"])).await {
            SendOutcome::Failed(failure) if failure.is_retriable() => {
                assert!(failure.reason.contains("not-a-dir"), "{}", failure.reason)
            }
            other => panic!("expected retriable, got {other:?}"),
        }
        assert!(dest.check().await.is_err());
    }

    async fn build(url: &str) -> Result<Arc<dyn Destination>, DestError> {
        let spec = DestinationSpec::parse(url).unwrap();
        crate::dest::registry::build_named(spec, "f").await
    }

    #[tokio::test]
    async fn parses_options_and_rejects_bad_ones() {
        let dest = build("file:///srv/export?format=ndjson&rotate=1m&max_bytes=2MiB")
            .await
            .unwrap();
        assert_eq!(dest.limits().linger, Duration::from_secs(60));
        assert_eq!(dest.limits().max_bytes, 2 << 20);
        assert_eq!(dest.schema(), Schema::LaunchDarkly);
        assert!(format!("{dest:?}").contains("/srv/export"));

        for (url, needle) in [
            ("file://relative/dir", "absolute"),
            ("file:///srv?format=csv", "format"),
            ("file:///srv?rotate=never", "rotate"),
            ("file:///srv?rotate=0s", "rotate"),
            ("file:///srv?max_bytes=12", "max_bytes"),
            ("file:///srv?max_bytes=8MB&rotat=1s", "rotat"),
        ] {
            let err = build(url).await.unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn default_spec_points_under_the_data_dir() {
        let spec = FileDestination::default_spec(Path::new("/var/lib/flagstream"));
        assert_eq!(spec.scheme, "file");
        assert_eq!(spec.target, "/var/lib/flagstream/export");
        assert!(spec.options.is_empty());
    }
}
