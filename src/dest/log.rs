//! The `log` destination: one line per event to stdout, stderr or an append-only file.
//!
//! | URL | writes to |
//! |---|---|
//! | `log:` or `log:stdout` | standard output |
//! | `log:stderr` | standard error |
//! | `log:///var/log/flagstream/events.ndjson` | the file (created if missing, appended to) |
//!
//! A batch is written with one `write` call under a lock, so lines of concurrent batches never
//! interleave; for a file target it is fdatasynced before the batch counts as delivered. There
//! is no deduplication: a batch replayed after a crash is appended again (at least once).
//! Useful for debugging, piping into other tools, and `flagstream test-destination`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::event::Schema;

use super::kind::{BuildContext, DestinationKind};
use super::{Batch, BatchLimits, DestError, Destination, FailureClass, SendOutcome};

/// The `log` destination type.
#[derive(Debug, Clone, Copy)]
pub struct LogKind;

impl DestinationKind for LogKind {
    const SCHEME: &'static str = "log";
    const SUMMARY: &'static str = "one line per event to stdout, stderr or an append-only file";
    const EXAMPLE: &'static str = "log:stderr";
    type Options = ();

    /// One batch at a time keeps lines in log order.
    const DEFAULT_CONCURRENCY: usize = 1;

    async fn build(
        &self,
        target: &str,
        (): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let target = LogTarget::parse(target).map_err(|reason| context.error(reason))?;
        Ok(Arc::new(LogDestination::new(
            &context.name,
            target,
            context.schema,
        )))
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl LogTarget {
    /// `` (stdout), `stdout`, `-`, `stderr` or an absolute path.
    pub fn parse(target: &str) -> Result<Self, String> {
        match target {
            "" | "stdout" | "-" => Ok(LogTarget::Stdout),
            "stderr" => Ok(LogTarget::Stderr),
            path if path.starts_with('/') => Ok(LogTarget::File(PathBuf::from(path))),
            other => Err(format!(
                "`{other}`: expected `log:` (stdout), `log:stderr` or `log:///absolute/file`"
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            LogTarget::Stdout => "stdout".to_string(),
            LogTarget::Stderr => "stderr".to_string(),
            LogTarget::File(path) => path.display().to_string(),
        }
    }
}

/// Writes each event as one line; see the module doc.
#[derive(Debug)]
pub struct LogDestination {
    name: String,
    target: LogTarget,
    schema: Schema,
    limits: BatchLimits,
    /// The open file of a file target (opened on first use, so `validate` creates nothing).
    file: Arc<Mutex<Option<File>>>,
}

impl LogDestination {
    pub fn new(name: &str, target: LogTarget, schema: Schema) -> Self {
        LogDestination {
            name: name.to_string(),
            target,
            schema,
            limits: BatchLimits {
                max_items: 1000,
                max_bytes: 1 << 20,
                max_item_bytes: 1 << 20,
                per_item_overhead: 1,
                linger: Duration::from_millis(100),
            },
            file: Arc::new(Mutex::new(None)),
        }
    }

    pub fn target(&self) -> &LogTarget {
        &self.target
    }
}

impl Destination for LogDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "log"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        // The batcher's arena already is this text when the items are its rows.
        let lines = batch.lines(0..batch.items.len()).unwrap_or_else(|| {
            let mut lines = Vec::with_capacity(batch.payload_bytes() + batch.items.len());
            for item in &batch.items {
                lines.extend_from_slice(&item.payload);
                lines.push(b'\n');
            }
            lines.into()
        });
        let target = self.target.clone();
        let file = self.file.clone();
        async move {
            let described = target.describe();
            let written =
                tokio::task::spawn_blocking(move || write_lines(&target, &file, &lines)).await;
            match written {
                Ok(Ok(())) => SendOutcome::Delivered,
                Ok(Err(err)) => SendOutcome::failed(
                    FailureClass::Retriable,
                    format!("writing to {described}: {err}"),
                ),
                Err(err) => SendOutcome::failed(
                    FailureClass::Retriable,
                    format!("writing to {described}: task failed: {err}"),
                ),
            }
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        let target = self.target.clone();
        let file = self.file.clone();
        async move {
            tokio::task::spawn_blocking(move || match &target {
                LogTarget::File(path) => open_cached(path, &file).map_err(|source| DestError::Io {
                    context: format!("opening {}", path.display()),
                    source,
                }),
                LogTarget::Stdout | LogTarget::Stderr => Ok(()),
            })
            .await
            .map_err(|err| DestError::Check(format!("checking the log target: {err}")))?
        }
        .boxed()
    }
}

fn write_lines(target: &LogTarget, file: &Mutex<Option<File>>, lines: &[u8]) -> io::Result<()> {
    match target {
        LogTarget::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(lines)?;
            out.flush()
        }
        LogTarget::Stderr => {
            let mut out = io::stderr().lock();
            out.write_all(lines)?;
            out.flush()
        }
        LogTarget::File(path) => {
            open_cached(path, file)?;
            let mut guard = file
                .lock()
                .map_err(|_| io::Error::other("log file lock poisoned"))?;
            let Some(handle) = guard.as_mut() else {
                return Err(io::Error::other("log file not open"));
            };
            let written = handle.write_all(lines).and_then(|()| handle.sync_data());
            if written.is_err() {
                // Reopen next time: the file may have been rotated away or the disk replaced.
                *guard = None;
            }
            written
        }
    }
}

fn open_cached(path: &PathBuf, file: &Mutex<Option<File>>) -> io::Result<()> {
    let mut guard = file
        .lock()
        .map_err(|_| io::Error::other("log file lock poisoned"))?;
    if guard.is_none() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        *guard = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::BatchItem;
    use bytes::Bytes;

    fn batch(rows: &[&str]) -> Batch {
        Batch {
            id: "log-1".into(),
            schema: Schema::LaunchDarkly,
            items: rows
                .iter()
                .map(|row| BatchItem {
                    event_id: "e".into(),
                    payload: Bytes::copy_from_slice(row.as_bytes()),
                    kind: "custom".into(),
                    key: None,
                    context_key: None,
                    environment: "prod".into(),
                    received_at_ms: 0,
                })
                .collect(),
            lines: None,
        }
    }

    #[test]
    fn parses_targets() {
        for (target, expected) in [
            ("", LogTarget::Stdout),
            ("stdout", LogTarget::Stdout),
            ("stderr", LogTarget::Stderr),
            (
                "/var/log/x.ndjson",
                LogTarget::File("/var/log/x.ndjson".into()),
            ),
        ] {
            assert_eq!(LogTarget::parse(target).unwrap(), expected);
        }
        let err = LogTarget::parse("relative.txt").unwrap_err();
        assert!(err.contains("relative.txt"), "{err}");
    }

    #[tokio::test]
    async fn appends_one_line_per_event_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.ndjson");
        let dest = LogDestination::new("log", LogTarget::File(path.clone()), Schema::LaunchDarkly);
        dest.check().await.unwrap();
        assert_eq!(
            dest.send(&batch(&["{\"a\":1}", "{\"b\":2}"])).await,
            SendOutcome::Delivered
        );
        assert_eq!(
            dest.send(&batch(&["{\"c\":3}"])).await,
            SendOutcome::Delivered
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }

    #[tokio::test]
    async fn an_unwritable_file_is_retriable() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let dest = LogDestination::new(
            "log",
            LogTarget::File(blocker.join("cannot/exist")),
            Schema::LaunchDarkly,
        );
        assert_eq!(dest.send(&batch(&["{}"])).await.label(), "retriable");
        assert!(dest.check().await.is_err());
    }
}
