//! The `file` destination: one file per batch (per partition) under a directory, in any of
//! the object formats, written atomically.
//!
//! `file:///var/lib/flagstream/export?format=ndjson.gz&partitions=dt,hour&rotate=5s&max_bytes=8MiB`
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `rotate` | longest time events wait before their file is written (the batch linger) | `5s` |
//! | `max_bytes` | largest batch of mapped events (the batch byte limit; a compressed file is smaller) | `8MiB` |
//! | `direct_io` | write files past the page cache (`O_DIRECT`) where the filesystem allows; `false` writes through it | `true` |
//! | `format`, `partitions`, `partition_time`, `file_name`, `csv_*`, `parquet_*`, `gzip_level`, `zstd_level` | format and layout, shared with the bucket destinations ([`super::object`]) | `ndjson`, no partitions, `{batch_id}.{ext}` |
//!
//! The defaults keep the layout of earlier versions: a flat directory of `<batch id>.ndjson`.
//! With `partitions=dt,hour` files go to Hive-style subdirectories
//! (`dt=2026-11-29/hour=07/<batch id>.ndjson`) that DuckDB, Spark and Athena read as columns.
//!
//! ## Exactly once for files
//!
//! Rotation *is* batching: the engine cuts batches by size and time and each batch becomes one
//! file (one per partition it spans) named after the batch id. Batch ids are stable (same first
//! and last event position), so a batch delivered again after a crash or retry overwrites the
//! same files with the same bytes instead of duplicating events. File names sort in log order.
//!
//! ## Atomicity
//!
//! A file is written as `.<name>.tmp` beside its final name, fdatasynced, renamed over
//! `<name>`, and then its directory is fsynced (new partition directories are fsynced into
//! their parents first). Readers therefore see either no file or the complete file, never a
//! torn one, and a file is durable before the engine is told `Delivered`. Temp files left by a
//! crash start with `.` and end in `.tmp`; [`Destination::check`] removes them (in partition
//! directories too).
//!
//! Files are written with direct I/O where the filesystem allows it, through the page cache
//! where it does not ([`write`] explains why and how).
//!
//! Every I/O error is retriable (a full or read-only disk can be fixed by the operator); the
//! engine's retry budget eventually dead-letters the batch.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Deserialize;

use crate::event::Schema;

use super::kind::{BuildContext, DestinationKind};
use super::object::{
    object_limits, EncodedObject, ObjectDestination, ObjectOptions, ObjectStore, ObjectWriter,
    MAX_EVENTS_PER_OBJECT,
};
use super::{DestError, Destination, DestinationSpec, Failure};

mod write;

use write::{create_dirs_durably, AtomicWriter};

/// Default longest wait before a file is written.
pub const DEFAULT_ROTATE: Duration = Duration::from_secs(5);
/// Default largest file. Two files in flight at this size keep memory well bounded.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;
/// Most events per file.
pub const MAX_EVENTS_PER_FILE: usize = MAX_EVENTS_PER_OBJECT;

/// The `file` destination type.
#[derive(Debug, Clone, Copy)]
pub struct FileKind;

impl DestinationKind for FileKind {
    const SCHEME: &'static str = "file";
    const SUMMARY: &'static str =
        "one file per batch in a directory (NDJSON, NDJSON.gz, CSV or Parquet), written atomically";
    const EXAMPLE: &'static str =
        "file:///var/lib/flagstream/export?format=ndjson.gz&partitions=dt,hour&rotate=5s";
    type Options = (FileOptions, ObjectOptions);

    /// Files are written in parallel with a bounded memory footprint.
    const DEFAULT_CONCURRENCY: usize = 2;

    async fn build(
        &self,
        target: &str,
        (file, objects): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let dir = PathBuf::from(target);
        if target.is_empty() || !dir.is_absolute() {
            return Err(context
                .error("expected an absolute directory, e.g. file:///var/lib/flagstream/export"));
        }
        let limits = objects
            .limits(DEFAULT_ROTATE, DEFAULT_MAX_BYTES)
            .map_err(|reason| context.error(reason))?;
        let writer = objects
            .writer("", &[], context.schema)
            .map_err(|reason| context.error(reason))?;
        let destination = FileDestination::new(
            &context.name,
            dir,
            context.schema,
            limits.linger,
            limits.max_bytes,
        );
        let destination = destination
            .with_writer(writer)
            .with_direct_io(file.direct_io.unwrap_or(true));
        Ok(Arc::new(destination))
    }
}

/// The `file` destination's own options (the object options are shared with the buckets).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileOptions {
    /// Write past the page cache where the filesystem allows (`write.rs`); default on.
    pub direct_io: Option<bool>,
}

/// Writes each batch as files in a directory; see the module doc.
pub type FileDestination = ObjectDestination<DirectoryStore>;

impl ObjectDestination<DirectoryStore> {
    /// A destination writing flat NDJSON files (the default layout); see [`Self::with_writer`].
    pub fn new(
        name: &str,
        dir: PathBuf,
        schema: Schema,
        rotate: Duration,
        max_bytes: usize,
    ) -> Self {
        let writer = ObjectOptions::default()
            .writer("", &[], schema)
            .expect("the default object options are valid");
        ObjectDestination {
            name: name.to_string(),
            store: DirectoryStore {
                dir,
                writer: Arc::new(AtomicWriter::new(true)),
            },
            writer,
            limits: object_limits(rotate, max_bytes),
            bodies: Default::default(),
        }
    }

    /// Use `writer`'s format and layout instead of flat NDJSON.
    pub fn with_writer(mut self, writer: ObjectWriter) -> Self {
        self.writer = writer;
        self
    }

    /// Write with direct I/O where the filesystem allows (`true`, the default) or always
    /// through the page cache.
    pub fn with_direct_io(mut self, direct_io: bool) -> Self {
        self.store.writer = Arc::new(AtomicWriter::new(direct_io));
        self
    }

    /// Whether the next file is written with direct I/O (see `write.rs`).
    pub fn writes_direct(&self) -> bool {
        self.store.writer.is_direct()
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
        &self.store.dir
    }

    /// The file a batch is written to (with the default layout; partitioned layouts put it
    /// under partition directories).
    pub fn file_path(&self, batch_id: &str) -> PathBuf {
        let ext = self.writer.format.extension();
        self.store
            .dir
            .join(self.writer.layout.key("", batch_id, ext))
    }
}

/// A directory as an object store: keys are relative paths.
#[derive(Debug)]
pub struct DirectoryStore {
    dir: PathBuf,
    writer: Arc<AtomicWriter>,
}

impl ObjectStore for DirectoryStore {
    const KIND: &'static str = "file";

    fn check<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<(), DestError>> {
        let dir = self.dir.clone();
        async move {
            tokio::task::spawn_blocking(move || prepare_dir(&dir))
                .await
                .map_err(|err| DestError::Check(format!("checking the export directory: {err}")))?
        }
        .boxed()
    }

    fn put<'a>(&'a self, object: &'a EncodedObject) -> BoxFuture<'a, Result<(), Failure>> {
        let path = self.dir.join(&object.key);
        let root = self.dir.clone();
        let body = object.body.clone();
        let writer = self.writer.clone();
        async move {
            let target = path.clone();
            match tokio::task::spawn_blocking(move || writer.write(&root, &target, &body)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(Failure::retriable(format!(
                    "writing {}: {err}",
                    path.display()
                ))),
                Err(err) => Err(Failure::retriable(format!(
                    "writing {}: task failed: {err}",
                    path.display()
                ))),
            }
        }
        .boxed()
    }
}

/// Create the directory (durably), remove temp files a crash left (in partition directories
/// too), and prove it is writable.
fn prepare_dir(dir: &Path) -> Result<(), DestError> {
    let io_error = |context: String| move |source| DestError::Io { context, source };
    create_dirs_durably(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    remove_stale_temp_files(dir)?;
    let probe = dir.join(".flagstream-write-probe.tmp");
    fs::write(&probe, b"probe")
        .and_then(|()| fs::remove_file(&probe))
        .map_err(io_error(format!("{} is not writable", dir.display())))?;
    Ok(())
}

fn remove_stale_temp_files(dir: &Path) -> Result<(), DestError> {
    let io_error = |context: String| move |source| DestError::Io { context, source };
    let entries = fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            remove_stale_temp_files(&entry.path())?;
        } else if file_name.starts_with('.') && file_name.ends_with(".tmp") {
            fs::remove_file(entry.path())
                .map_err(io_error(format!("removing {}", entry.path().display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{Batch, BatchItem, SendOutcome};
    use bytes::Bytes;

    fn batch(id: &str, rows: &[&str]) -> Batch {
        Batch {
            id: id.to_string(),
            schema: Schema::LaunchDarkly,
            items: rows
                .iter()
                .enumerate()
                .map(|(i, row)| BatchItem {
                    event_id: format!("e{i}").into(),
                    payload: Bytes::copy_from_slice(row.as_bytes()),
                    kind: "feature".into(),
                    key: None,
                    context_key: None,
                    environment: "prod".into(),
                    received_at_ms: 0,
                })
                .collect(),
            lines: None,
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
        assert!(format!("{dest:?}").contains("direct: true"), "{dest:?}");
        let cached = build("file:///srv/export?direct_io=false").await.unwrap();
        assert!(
            format!("{cached:?}").contains("direct: false"),
            "{cached:?}"
        );

        for (url, needle) in [
            ("file://relative/dir", "absolute"),
            ("file:///srv?format=orc", "format"),
            ("file:///srv?format=parquet", "schema=warehouse"),
            ("file:///srv?file_name=x", "batch_id"),
            ("file:///srv?rotate=never", "rotate"),
            ("file:///srv?rotate=0s", "rotate"),
            ("file:///srv?max_bytes=12", "max_bytes"),
            ("file:///srv?max_bytes=8MB&rotat=1s", "rotat"),
            ("file:///srv?direct_io=sometimes", "direct_io"),
        ] {
            let err = build(url).await.unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn partitioned_gzip_files_land_in_hive_directories_and_stale_temps_there_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "file://{}?format=ndjson.gz&partitions=environment,dt,hour",
            dir.path().display()
        );
        let dest = build(&url).await.unwrap();
        let mut b = batch("file-4-5", &["{\"n\":1}", "{\"n\":2}"]);
        b.items[1].received_at_ms = 3_600_000; // the next hour
        assert_eq!(dest.send(&b).await, SendOutcome::Delivered);
        let first = dir
            .path()
            .join("environment=prod/dt=1970-01-01/hour=00/file-4-5.ndjson.gz");
        let second = dir
            .path()
            .join("environment=prod/dt=1970-01-01/hour=01/file-4-5.ndjson.gz");
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(fs::File::open(&first).unwrap()),
            &mut text,
        )
        .unwrap();
        assert_eq!(text, "{\"n\":1}\n");
        assert!(second.is_file());

        let stale = first.with_file_name(".file-9-9.ndjson.gz.tmp");
        fs::write(&stale, b"half").unwrap();
        dest.check().await.unwrap();
        assert!(!stale.exists() && first.is_file());
    }

    #[test]
    fn default_spec_points_under_the_data_dir() {
        let spec = FileDestination::default_spec(Path::new("/var/lib/flagstream"));
        assert_eq!(spec.scheme, "file");
        assert_eq!(spec.target, "/var/lib/flagstream/export");
        assert!(spec.options.is_empty());
    }
}
