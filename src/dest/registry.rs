//! The one table of destination types, and everything generated from it: building a
//! destination from a [`DestinationSpec`], the `--dest` help text, the list `validate`
//! prints, default concurrency, and the error for an unknown scheme.
//!
//! The delivery layer has already consumed its common keys (`name`, `schema`, batching,
//! retry, concurrency) and the filter keys and resolved `env:` / `file:` values
//! ([`super::secrets`]); the kind takes its own keys, and whatever is left is an error naming
//! the keys, so a typo is never silently a default.
//!
//! Adding a destination = one file in `src/dest/` implementing
//! [`super::kind::DestinationKind`], plus one line in [`KINDS`].

use std::path::Path;
use std::sync::Arc;

use crate::event::Schema;

use super::kind::{AnyKind, BuildContext};
use super::options::OptionMap;
use super::secrets::{self, Redaction};
use super::{
    bigquery, eventhubs, file, kafka, kinesis, launchdarkly, log, mparticle, postgres, pubsub, s3,
    segment, snowflake, webhook,
};
use super::{DestError, Destination, DestinationSpec, EnvironmentKeys};

/// Every destination type, in `--help` order.
pub static KINDS: &[&dyn AnyKind] = &[
    &file::FileKind,
    &log::LogKind,
    &kinesis::KinesisKind,
    &pubsub::PubSubKind,
    &kafka::KafkaKind,
    &eventhubs::EventHubsKind,
    &s3::S3Kind,
    &super::gcs::GcsKind,
    &postgres::PostgresKind,
    &bigquery::BigQueryKind,
    &snowflake::SnowflakeKind,
    &webhook::WebhookKind::<true>,
    &webhook::WebhookKind::<false>,
    &segment::SegmentKind,
    &mparticle::MParticleKind,
    &launchdarkly::LaunchDarklyKind,
];

/// The kind for `scheme`.
pub fn find(scheme: &str) -> Option<&'static dyn AnyKind> {
    KINDS.iter().copied().find(|kind| kind.scheme() == scheme)
}

/// Every scheme, for messages.
pub fn schemes() -> Vec<&'static str> {
    KINDS.iter().map(|kind| kind.scheme()).collect()
}

/// Batches in flight at once for a destination of type `scheme` when not configured.
pub fn default_concurrency(scheme: &str) -> usize {
    find(scheme).map_or(4, |kind| kind.default_concurrency())
}

/// The error for a scheme no kind has.
pub fn unknown_scheme(scheme: &str) -> String {
    format!(
        "unknown destination type `{scheme}` (supported: {})",
        schemes().join(", ")
    )
}

/// The `--dest` long help: one line per destination type with an example.
pub fn dest_help() -> String {
    let mut help = String::from(
        "A destination as a URL, repeatable; `;` separates entries in the env var. With none \
         (here and in the config file), the default is a file destination under \
         `<data-dir>/export`. Any option value may be `env:NAME` or `file:PATH` to keep \
         secrets off the command line.\n\nDestination types:",
    );
    for kind in KINDS {
        help.push_str(&format!(
            "\n  {:<8} {}\n  {:<8} e.g. {}",
            kind.scheme(),
            kind.summary(),
            "",
            kind.example()
        ));
    }
    help
}

/// Resolve `env:` / `file:` option values of `spec` in place and redact its source; returns
/// how its options may be shown. Call once per spec, before any layer takes options.
pub fn prepare(spec: &mut DestinationSpec) -> Result<Redaction, DestError> {
    let declared = find(&spec.scheme).map_or(&[][..], |kind| kind.secret_options());
    let redaction =
        secrets::resolve(&mut spec.options, declared).map_err(|err| spec.error(err.to_string()))?;
    if !redaction.secret.is_empty() {
        spec.source = redaction.render_url(&spec.scheme, &spec.target);
    }
    Ok(redaction)
}

/// Build the destination for `spec` (its scheme, target and remaining options), named `name`,
/// with `schema` if one was chosen (else the kind's default), taking every remaining option.
pub async fn build(
    spec: &mut DestinationSpec,
    name: &str,
    schema: Option<Schema>,
    data_dir: &Path,
    secret: &std::collections::BTreeSet<String>,
) -> Result<Arc<dyn Destination>, DestError> {
    build_with_keys(
        spec,
        name,
        schema,
        data_dir,
        secret,
        &EnvironmentKeys::default(),
    )
    .await
}

/// [`build`], with the `--environment` keys for destinations that forward with them.
pub async fn build_with_keys(
    spec: &mut DestinationSpec,
    name: &str,
    schema: Option<Schema>,
    data_dir: &Path,
    secret: &std::collections::BTreeSet<String>,
    environment_keys: &EnvironmentKeys,
) -> Result<Arc<dyn Destination>, DestError> {
    let kind = find(&spec.scheme).ok_or_else(|| spec.error(unknown_scheme(&spec.scheme)))?;
    let context = BuildContext {
        name: name.to_string(),
        schema: schema.unwrap_or_else(|| kind.default_schema()),
        data_dir: data_dir.to_path_buf(),
        source: spec.source.clone(),
        environment_keys: environment_keys.clone(),
    };
    let options = OptionMap::new(
        kind.scheme(),
        std::mem::take(&mut spec.options),
        secret.clone(),
    );
    kind.build_from(&spec.target, options, &context).await
}

/// Prepare and build `spec` on its own (tools and tests): the kind's default schema, no
/// delivery keys.
pub async fn build_named(
    mut spec: DestinationSpec,
    name: &str,
) -> Result<Arc<dyn Destination>, DestError> {
    let redaction = prepare(&mut spec)?;
    build(&mut spec, name, None, Path::new("."), &redaction.secret).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_file_and_log_and_refuses_unknown_schemes_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/out?rotate=1s", dir.path().display());
        let file = build_named(DestinationSpec::parse(&url).unwrap(), "d")
            .await
            .unwrap();
        assert_eq!(file.kind(), "file");
        assert_eq!(file.name(), "d");

        let log = build_named(DestinationSpec::parse("log:stderr").unwrap(), "l")
            .await
            .unwrap();
        assert_eq!(log.kind(), "log");

        let err = build_named(
            DestinationSpec::parse("carrier-pigeon://coop").unwrap(),
            "d",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("carrier-pigeon"), "{err}");
        assert!(err.contains(&schemes().join(", ")), "{err}");
        assert!(
            schemes().len() >= 15 && schemes().contains(&"file"),
            "{err}"
        );

        let err = build_named(DestinationSpec::parse("log:?colour=blue").unwrap(), "d")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`colour`") && err.contains("`log`"), "{err}");
    }

    #[test]
    fn the_table_drives_help_and_defaults() {
        let help = dest_help();
        for kind in KINDS {
            assert!(help.contains(kind.scheme()) && help.contains(kind.example()));
        }
        assert_eq!(default_concurrency("log"), 1);
        assert_eq!(default_concurrency("file"), 2);
        assert_eq!(default_concurrency("kinesis"), 4);
        let mut seen = std::collections::HashSet::new();
        assert!(KINDS.iter().all(|kind| seen.insert(kind.scheme())));
    }

    #[tokio::test]
    async fn secrets_in_a_url_are_resolved_and_never_shown() {
        std::env::set_var("FLAGSTREAM_TEST_REGISTRY_SECRET", "s3cr3t-value");
        let mut spec = DestinationSpec::parse(
            "log:stderr?password=inline-pass&token=env:FLAGSTREAM_TEST_REGISTRY_SECRET",
        )
        .unwrap();
        let redaction = prepare(&mut spec).unwrap();
        assert_eq!(spec.options["token"], "s3cr3t-value");
        assert!(!spec.source.contains("s3cr3t-value") && !spec.source.contains("inline-pass"));
        let shown = format!("{:?}", redaction.shown);
        assert!(!shown.contains("s3cr3t-value") && !shown.contains("inline-pass"));
        // The log destination takes no `token`: the error names it, not its value.
        let err = build(&mut spec, "l", None, Path::new("."), &redaction.secret)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token") && !err.contains("s3cr3t-value"),
            "{err}"
        );
    }
}
