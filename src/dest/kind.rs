//! The factory seam: what a destination type declares, and how it is built.
//!
//! A destination type implements [`DestinationKind`]: its URL scheme, a one-line summary and
//! an example for `--help`, its default schema and concurrency, whether it wants mapped events
//! or raw records, its typed options ([`OptionBlocks`]: its own serde struct plus shared
//! blocks), and an async `build`. [`AnyKind`] is the object-safe form the registry's static
//! table holds; every destination is built through it the same way:
//!
//! 1. the registry picks the kind by scheme and decides the schema (explicit `schema=`, else
//!    the kind's default) — the one place that happens;
//! 2. the kind's option blocks are parsed from the remaining options, and any key no block
//!    claimed is an error naming it and the destination type;
//! 3. `build` creates the destination (clients, credentials) without contacting the target;
//!    [`super::Destination::check`] does that.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::event::Schema;

use super::options::{OptionBlocks, OptionMap};
use super::{DestError, Destination};

/// What the engine hands a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Input {
    /// Events decoded, filtered and mapped to the destination's schema (one item per row).
    #[default]
    MappedEvents,
    /// Each stored record as received, with its metadata (one item per record; see
    /// [`super::RawRecord`]).
    RawRecords,
}

/// What `build` may need besides the destination's own options.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The destination's unique name (cursor and dead-letter file name).
    pub name: String,
    /// The schema events are mapped to (already decided by the registry).
    pub schema: Schema,
    /// The data directory (for destinations with defaults under it).
    pub data_dir: PathBuf,
    /// The destination as the operator wrote it, secrets redacted (for error messages).
    pub source: String,
    /// The `--environment` keys (for destinations that forward with the sender's credential).
    pub environment_keys: super::EnvironmentKeys,
}

impl BuildContext {
    /// A configuration error naming this destination.
    pub fn error(&self, reason: impl Into<String>) -> DestError {
        DestError::Config {
            url: self.source.clone(),
            reason: reason.into(),
        }
    }
}

/// A destination type. Implement this (and [`Destination`]) in one file, add one line to
/// [`super::registry::KINDS`].
pub trait DestinationKind: Send + Sync + 'static {
    /// URL scheme (`kinesis` in `kinesis://stream`).
    const SCHEME: &'static str;
    /// One line for `--help` and `validate`.
    const SUMMARY: &'static str;
    /// An example `--dest` URL.
    const EXAMPLE: &'static str;
    /// Batches in flight at once when `concurrency=` is not given. Network targets hide
    /// latency with several.
    const DEFAULT_CONCURRENCY: usize = 4;
    /// Mapped events (the default) or raw records.
    const INPUT: Input = Input::MappedEvents;
    /// Options that are secret although their names do not say so (see
    /// [`super::secrets::is_secret_name`]).
    const SECRET_OPTIONS: &'static [&'static str] = &[];

    /// The destination's typed options: a tuple of option blocks.
    type Options: OptionBlocks + Send;

    /// The schema used when `schema=` is not given.
    fn default_schema(&self) -> Schema {
        Schema::default()
    }

    /// Create the destination for `target` (the URL between `scheme://` and `?`).
    fn build(
        &self,
        target: &str,
        options: Self::Options,
        context: &BuildContext,
    ) -> impl Future<Output = Result<Arc<dyn Destination>, DestError>> + Send;
}

/// The object-safe form of [`DestinationKind`], for the registry's table.
pub trait AnyKind: Send + Sync {
    fn scheme(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    fn example(&self) -> &'static str;
    fn default_schema(&self) -> Schema;
    fn default_concurrency(&self) -> usize;
    fn input(&self) -> Input;
    fn secret_options(&self) -> &'static [&'static str];
    /// Parse the kind's option blocks from `options` (leftovers are an error), then build.
    fn build_from<'a>(
        &'a self,
        target: &'a str,
        options: OptionMap,
        context: &'a BuildContext,
    ) -> BoxFuture<'a, Result<Arc<dyn Destination>, DestError>>;
}

impl<K: DestinationKind> AnyKind for K {
    fn scheme(&self) -> &'static str {
        K::SCHEME
    }
    fn summary(&self) -> &'static str {
        K::SUMMARY
    }
    fn example(&self) -> &'static str {
        K::EXAMPLE
    }
    fn default_schema(&self) -> Schema {
        DestinationKind::default_schema(self)
    }
    fn default_concurrency(&self) -> usize {
        K::DEFAULT_CONCURRENCY
    }
    fn input(&self) -> Input {
        K::INPUT
    }
    fn secret_options(&self) -> &'static [&'static str] {
        K::SECRET_OPTIONS
    }

    fn build_from<'a>(
        &'a self,
        target: &'a str,
        mut options: OptionMap,
        context: &'a BuildContext,
    ) -> BoxFuture<'a, Result<Arc<dyn Destination>, DestError>> {
        Box::pin(async move {
            let typed = K::Options::take(&mut options).map_err(|reason| context.error(reason))?;
            options.finish().map_err(|reason| context.error(reason))?;
            let destination = self.build(target, typed, context).await?;
            if destination.input() != K::INPUT {
                return Err(context.error(format!(
                    "destination type `{}` built a destination with a different input",
                    K::SCHEME
                )));
            }
            Ok(destination)
        })
    }
}
