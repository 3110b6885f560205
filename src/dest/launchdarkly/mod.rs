//! LaunchDarkly upstream (`launchdarkly:`, `launchdarkly:?endpoint=https://relay.example.com`):
//! forwards every stored SDK body, unchanged, to LaunchDarkly's events service (or a Relay
//! Proxy, or anything speaking its contract), as its sender posted it.
//!
//! A raw-records destination ([`Input::RawRecords`]): one item per stored record, one `POST`
//! per record to the path its sender used (`forward`), with the sender's
//! `X-LaunchDarkly-Payload-ID` (LaunchDarkly deduplicates our re-sends on it),
//! `X-LaunchDarkly-Event-Schema`, `User-Agent`, `X-LaunchDarkly-User-Agent`,
//! `X-LaunchDarkly-Tags` and `X-LaunchDarkly-Wrapper`, and the credential the sender used:
//! found in the `--environment` configuration at send time by the fingerprint ingest stored
//! ([`crate::dest::EnvironmentKeys`]); the WAL never holds a key.
//!
//! Which key: the configured key whose fingerprint the record carries; else (the key was
//! rotated out of the configuration, or the record was stored before fingerprints) the
//! environment's only key of the kind the path takes (`sdk-…` for `/bulk` and `/diagnostic`,
//! `mob-…` for `/mobile/…`, the client-side id for older browser records); else the
//! destination's own `sdk_key` / `mobile_key` / `client_side_id` (open ingest, or everything
//! into one LaunchDarkly environment); else the record is a permanent failure.
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `endpoint` | events service base URL (Relay Proxy, LaunchDarkly-compatible service) | `https://events.launchdarkly.com` |
//! | `sdk_key`, `mobile_key` | keys for records whose environment has none configured (secrets: `env:` / `file:`) | none |
//! | `client_side_id` | the same for older browser records | none |
//! | `gzip` | gzip request bodies (`Content-Encoding: gzip`) | `false` |
//! | `timeout` | per-request timeout | `30s` |
//!
//! ## Invariants
//!
//! 1. A record is delivered only on a 2xx answer. 429, 408, 5xx, timeouts and connection
//!    errors are retried (shared classifier, `Retry-After` honoured); 400, 401, 403, 404 and
//!    any other 4xx are permanent (the record goes to the dead letters with the answer), as
//!    LaunchDarkly's SDKs give up on them (400 aside, which they retry once: the same bytes
//!    would be refused again).
//! 2. Records of one batch are sent concurrently and fail independently: the engine resends
//!    only the failed ones, under the same payload id.
//! 3. go-feature-flag and generic records are acknowledged without being sent (counted in
//!    `flagstream_dest_skipped_records_total`); a record whose credential cannot be found is
//!    a permanent failure naming the environment.

mod forward;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::Method;
use serde::Deserialize;

use self::forward::{Credential, Plan};
use super::environment_keys::{EnvironmentKeys, KeyKind};
use super::http::{HttpClient, HttpOptions, VendorUrl};
use super::kind::{BuildContext, DestinationKind, Input};
use super::options::RequestOptions;
use super::secrets::Secret;
use super::{Batch, BatchItem, BatchLimits, DestError, Destination, Failure, RawRecord};
use super::{ItemFailure, SendOutcome};
use crate::event::Schema;
use crate::metrics as m;

/// LaunchDarkly's events service.
pub const DEFAULT_ENDPOINT: &str = "https://events.launchdarkly.com";
/// Records (one request each) per batch, all in flight at once.
const MAX_RECORDS_PER_BATCH: usize = 32;
/// Largest record forwarded: above ingest's largest accepted body.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Credentials for records whose environment has none configured.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LaunchDarklyOptions {
    pub sdk_key: Option<Secret>,
    pub mobile_key: Option<Secret>,
    pub client_side_id: Option<String>,
}

impl LaunchDarklyOptions {
    fn key(&self, kind: KeyKind) -> Option<&str> {
        match kind {
            KeyKind::Server => self.sdk_key.as_ref().map(Secret::expose),
            KeyKind::Mobile => self.mobile_key.as_ref().map(Secret::expose),
            KeyKind::ClientSide => self.client_side_id.as_deref(),
        }
    }

    fn is_empty(&self) -> bool {
        [KeyKind::Server, KeyKind::Mobile, KeyKind::ClientSide]
            .iter()
            .all(|kind| self.key(*kind).is_none())
    }
}

/// The `launchdarkly` destination type.
#[derive(Debug, Clone, Copy)]
pub struct LaunchDarklyKind;

impl DestinationKind for LaunchDarklyKind {
    const SCHEME: &'static str = "launchdarkly";
    const SUMMARY: &'static str =
        "LaunchDarkly upstream: forward each SDK body as received, with its sender's credential";
    const EXAMPLE: &'static str = "launchdarkly:?endpoint=https://events.launchdarkly.com";
    const INPUT: Input = Input::RawRecords;
    const SECRET_OPTIONS: &'static [&'static str] = &["sdk_key", "mobile_key"];
    type Options = (LaunchDarklyOptions, RequestOptions, HttpOptions);

    async fn build(
        &self,
        target: &str,
        (own, request, http): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        if !target.is_empty() {
            return Err(context.error(format!(
                "unexpected target `{target}`: use `launchdarkly:` (and `endpoint=` for a relay)"
            )));
        }
        if context.schema != Schema::default() {
            return Err(context.error(
                "records are forwarded as received: `schema=` does not apply to `launchdarkly`",
            ));
        }
        if context.environment_keys.is_empty() && own.is_empty() {
            return Err(context.error(
                "forwarding needs the senders' credentials: configure --environment \
                 NAME=SDK_KEY[,MOBILE_KEY,CLIENT_SIDE_ID] (or give `sdk_key=env:…`)",
            ));
        }
        let endpoint = request
            .endpoint
            .as_ref()
            .map_or(DEFAULT_ENDPOINT, |endpoint| endpoint.as_str())
            .to_string();
        let client = HttpClient::new(&context.name, &request, &http)
            .map_err(|reason| context.error(reason))?;
        Ok(Arc::new(LaunchDarklyDestination {
            name: context.name.clone(),
            endpoint,
            keys: context.environment_keys.clone(),
            fallback: own,
            client,
        }))
    }
}

/// The LaunchDarkly upstream destination.
pub struct LaunchDarklyDestination {
    name: String,
    /// Base URL without a trailing slash.
    endpoint: String,
    keys: EnvironmentKeys,
    fallback: LaunchDarklyOptions,
    client: HttpClient,
}

impl fmt::Debug for LaunchDarklyDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchDarklyDestination")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("environments", &self.keys)
            .finish_non_exhaustive()
    }
}

impl LaunchDarklyDestination {
    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let sends = batch
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| async move {
                self.forward(item)
                    .await
                    .err()
                    .map(|failure| failure.for_item(index))
            });
        let failures: Vec<ItemFailure> = futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect();
        SendOutcome::from_item_failures(batch.items.len(), failures, None)
    }

    /// Send one record as its sender did (or skip it).
    async fn forward(&self, item: &BatchItem) -> Result<(), Failure> {
        let permanent = |reason: String| Failure::permanent(format!("LaunchDarkly: {reason}"));
        let record = RawRecord::of(item)
            .map_err(|err| permanent(format!("undecodable stored record: {err}")))?;
        let stored = &record.stored;
        let forward = match forward::plan(stored).map_err(permanent)? {
            Plan::Forward(forward) => forward,
            Plan::Skip => {
                metrics::counter!(m::DEST_SKIPPED_RECORDS_TOTAL,
                    "destination" => self.name.clone(), "format" => stored.format.name())
                .increment(1);
                return Ok(());
            }
        };
        let resolve = |kind: KeyKind| {
            let configured = self
                .keys
                .resolve(stored.environment, stored.request.credential, kind);
            match (configured, self.fallback.key(kind)) {
                (Ok(key), _) | (Err(_), Some(key)) => Ok(key),
                (Err(err), None) => Err(permanent(err.to_string())),
            }
        };
        let mut url = format!("{}{}", self.endpoint, forward.path);
        let authorization = match forward.credential {
            Credential::Header(kind) => Some(resolve(kind)?),
            Credential::InPath => None,
            Credential::PathId => {
                url.push_str(resolve(KeyKind::ClientSide)?);
                None
            }
        };
        let headers = forward::headers(stored, authorization).map_err(permanent)?;
        let target = VendorUrl {
            vendor: "LaunchDarkly",
            url,
        };
        // The body is a slice of the stored record: no copy.
        let body: Bytes = item.payload.slice_ref(stored.body);
        self.client
            .send(Method::POST, &target.url, headers, body, &target)
            .await
            .map(drop)
    }
}

impl Destination for LaunchDarklyDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "launchdarkly"
    }

    fn schema(&self) -> Schema {
        Schema::default()
    }

    fn input(&self) -> Input {
        Input::RawRecords
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_RECORDS_PER_BATCH,
            max_bytes: MAX_RECORD_BYTES,
            max_item_bytes: MAX_RECORD_BYTES,
            per_item_overhead: 0,
            // Each record is its own request: waiting for company gains nothing.
            linger: Duration::from_millis(20),
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    /// LaunchDarkly's events service has no side-effect-free probe: the options and
    /// environments were checked when it was built.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use crate::dest::{registry, DestinationSpec, EnvironmentKeys};
    use crate::event::Schema;

    async fn build(url: &str, schema: Option<Schema>, keys: &EnvironmentKeys) -> String {
        let mut spec = DestinationSpec::parse(url).unwrap();
        let secret = BTreeSet::new();
        match registry::build_with_keys(&mut spec, "ld", schema, Path::new("."), &secret, keys)
            .await
        {
            Ok(destination) => format!("built {}", destination.kind()),
            Err(err) => err.to_string(),
        }
    }

    #[tokio::test]
    async fn needs_credentials_and_refuses_what_does_not_apply() {
        let keys = EnvironmentKeys::from_pairs([("sdk-1", "production")]);
        let none = EnvironmentKeys::default();
        assert_eq!(
            build("launchdarkly:", None, &keys).await,
            "built launchdarkly"
        );
        assert_eq!(
            build("launchdarkly:?sdk_key=sdk-x", None, &none).await,
            "built launchdarkly"
        );
        for (url, schema, keys, needle) in [
            ("launchdarkly:", None, &none, "--environment"),
            ("launchdarkly:", Some(Schema::Segment), &keys, "`schema=`"),
            ("launchdarkly://relay", None, &keys, "`relay`"),
            ("launchdarkly:?endpoint=ftp://x", None, &keys, "endpoint"),
        ] {
            let err = build(url, schema, keys).await;
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
