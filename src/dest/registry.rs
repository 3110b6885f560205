//! From a [`DestinationSpec`] to a running [`Destination`], by URL scheme.
//!
//! The delivery layer has already consumed its common keys (`name`, `schema`, batching,
//! retry, concurrency) and the filter keys; each constructor takes its own keys from the spec,
//! and whatever is left afterwards is an error naming the keys (so a typo is never silently a
//! default).
//!
//! Adding a destination = one file in `src/dest/` with a `from_spec` constructor, plus one arm
//! in [`build`] and its scheme in [`SCHEMES`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::event::Schema;

use super::file::FileDestination;
use super::kinesis::KinesisDestination;
use super::log::LogDestination;
use super::pubsub::PubSubDestination;
use super::{DestError, Destination, DestinationSpec};

/// Every scheme [`build`] accepts, for `--help` and error messages.
pub const SCHEMES: &[&str] = &["file", "log", "kinesis", "pubsub"];

/// What constructors may need besides their own options.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The destination's unique name (cursor and dead-letter file name).
    pub name: String,
    /// The schema chosen with the `schema` key, if any (otherwise the destination's default).
    pub schema: Option<Schema>,
    /// The data directory (for destinations with defaults under it).
    pub data_dir: PathBuf,
}

/// Build the destination for `spec` (its scheme, target and remaining options).
pub async fn build(
    spec: &mut DestinationSpec,
    context: &BuildContext,
) -> Result<Arc<dyn Destination>, DestError> {
    let destination: Arc<dyn Destination> = match spec.scheme.as_str() {
        "file" => Arc::new(FileDestination::from_spec(spec, context)?),
        "log" => Arc::new(LogDestination::from_spec(spec, context)?),
        "kinesis" => {
            let kinesis = KinesisDestination::from_spec(spec, &context.name).await?;
            match context.schema {
                Some(schema) => Arc::new(kinesis.with_schema(schema)),
                None => Arc::new(kinesis),
            }
        }
        "pubsub" => {
            let pubsub = PubSubDestination::from_spec(spec, &context.name).await?;
            match context.schema {
                Some(schema) => Arc::new(pubsub.with_schema(schema)),
                None => Arc::new(pubsub),
            }
        }
        other => {
            return Err(spec.error(format!(
                "unknown destination type `{other}` (supported: {})",
                SCHEMES.join(", ")
            )))
        }
    };
    spec.finish()?;
    Ok(destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(dir: &std::path::Path) -> BuildContext {
        BuildContext {
            name: "d".into(),
            schema: None,
            data_dir: dir.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn builds_file_and_log_and_refuses_unknown_schemes_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/out?rotate=1s", dir.path().display());
        let mut spec = DestinationSpec::parse(&url).unwrap();
        let file = build(&mut spec, &context(dir.path())).await.unwrap();
        assert_eq!(file.kind(), "file");
        assert_eq!(file.name(), "d");

        let mut spec = DestinationSpec::parse("log:stderr").unwrap();
        assert_eq!(
            build(&mut spec, &context(dir.path())).await.unwrap().kind(),
            "log"
        );

        let mut spec = DestinationSpec::parse("carrier-pigeon://coop").unwrap();
        let err = build(&mut spec, &context(dir.path()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("carrier-pigeon") && err.contains("file, log"),
            "{err}"
        );

        let mut spec = DestinationSpec::parse("log:?colour=blue").unwrap();
        let err = build(&mut spec, &context(dir.path()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
