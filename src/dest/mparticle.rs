//! mParticle destination (`mparticle:?pod=us1&key=env:MP_KEY&secret=env:MP_SECRET`):
//! mParticle's server-to-server Events API, `POST https://s2s.{pod}.mparticle.com/v2/bulkevents`.
//!
//! The `mparticle` schema (`src/event/schema/mparticle.rs`) maps each event to one mParticle
//! batch (`user_identities`, `environment`, one event with `source_message_id` = the event
//! id). This module merges the batches of one user into one batch per request — mParticle's
//! model is one batch per user — and sends the JSON array with HTTP Basic `key:secret`.
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `key`, `secret` | the server-to-server input's key and secret (`env:` / `file:`) | required |
//! | `pod` | `us1`, `us2`, `eu1`, `au1` | `us1` |
//! | `endpoint` | override (proxy, stand-in); `/v2/bulkevents` is appended | the pod's |
//! | `environment` | `production` / `development` (overrides `mparticle_environment`) | `production` |
//! | `identity` | the `user_identities` type for the context key, e.g. `customer_id`, `other` (overrides `mparticle_identity_type`) | `customer_id` |
//! | `gzip`, `timeout` | shared HTTP options | `false`, `30s` |
//!
//! ## Limits (mParticle "Default Service Limits")
//!
//! ≤ 100 batches per request, ≤ 256 KB per request, ≤ 128 KB per batch. [`BatchLimits`]
//! declares ≤ 100 events (so ≤ 100 batches), the request size, and the batch size per event
//! (a larger event is dead-lettered with the reason); a user's merged batch that would pass
//! 128 KB is split into several.
//!
//! ## Invariants
//!
//! 1. Delivered only on 2xx (mParticle answers 202 Accepted). 429 (with `Retry-After`) and
//!    5xx are retried through the shared classifier; other 4xx are permanent.
//! 2. Events keep their order within a user's batch; `source_message_id` is the stable
//!    event id on every re-delivery.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::http::{json_basic_auth_headers, HttpClient, HttpOptions, VendorUrl};
use super::kind::{BuildContext, DestinationKind};
use super::options::RequestOptions;
use super::secrets::Secret;
use super::{Batch, BatchItem, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;

/// Most batches per `/v2/bulkevents` request.
pub const MAX_BATCHES_PER_REQUEST: usize = 100;
/// Most bytes per request: 256 KB.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Most bytes per batch: 128 KB.
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

/// mParticle's data-center pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pod {
    #[default]
    Us1,
    Us2,
    Eu1,
    Au1,
}

impl Pod {
    pub fn endpoint(self) -> &'static str {
        match self {
            Pod::Us1 => "https://s2s.us1.mparticle.com",
            Pod::Us2 => "https://s2s.us2.mparticle.com",
            Pod::Eu1 => "https://s2s.eu1.mparticle.com",
            Pod::Au1 => "https://s2s.au1.mparticle.com",
        }
    }
}

/// An mParticle environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Development,
}

/// The mParticle destination's own options.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MParticleOptions {
    pub key: Option<Secret>,
    pub secret: Option<Secret>,
    #[serde(default)]
    pub pod: Pod,
    pub environment: Option<Environment>,
    pub identity: Option<String>,
}

/// The `mparticle` destination type.
#[derive(Debug, Clone, Copy)]
pub struct MParticleKind;

impl DestinationKind for MParticleKind {
    const SCHEME: &'static str = "mparticle";
    const SUMMARY: &'static str = "mParticle Events API (/v2/bulkevents), `mparticle` schema";
    const EXAMPLE: &'static str =
        "mparticle:?pod=us1&key=env:MP_KEY&secret=env:MP_SECRET&environment=production";
    const SECRET_OPTIONS: &'static [&'static str] = &["key"];
    type Options = (MParticleOptions, RequestOptions, HttpOptions);

    fn default_schema(&self) -> Schema {
        Schema::MParticle
    }

    async fn build(
        &self,
        _target: &str,
        (options, request, http): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        MParticleDestination::new(options, &request, &http, context)
            .map(|destination| Arc::new(destination) as Arc<dyn Destination>)
            .map_err(|reason| context.error(reason))
    }
}

/// The mParticle destination.
pub struct MParticleDestination {
    name: String,
    target: VendorUrl,
    headers: HeaderMap,
    environment: Option<Environment>,
    identity: Option<String>,
    client: HttpClient,
}

impl fmt::Debug for MParticleDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MParticleDestination")
            .field("name", &self.name)
            .field("url", &self.target.url)
            .field("environment", &self.environment)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl MParticleDestination {
    fn new(
        options: MParticleOptions,
        request: &RequestOptions,
        http: &HttpOptions,
        context: &BuildContext,
    ) -> Result<Self, String> {
        if context.schema != Schema::MParticle {
            return Err(format!(
                "mParticle takes mParticle batches: use `schema=mparticle` (the default), not `{}`",
                context.schema.name()
            ));
        }
        let (Some(key), Some(secret)) = (options.key, options.secret) else {
            return Err("options `key` and `secret` are required (e.g. key=env:MP_KEY&secret=env:MP_SECRET)".into());
        };
        if let Some(identity) = &options.identity {
            if identity.is_empty()
                || !identity
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(format!("option `identity`: `{identity}` is not an identity type (e.g. customer_id, email, other)"));
            }
        }
        let endpoint = request
            .endpoint
            .as_ref()
            .map_or(options.pod.endpoint(), |endpoint| endpoint.as_str());
        let headers = json_basic_auth_headers(key.expose(), secret.expose())
            .ok_or("options `key` / `secret` are not valid in an HTTP header")?;
        Ok(MParticleDestination {
            name: context.name.clone(),
            target: VendorUrl {
                vendor: "mParticle",
                url: format!("{endpoint}/v2/bulkevents"),
            },
            headers,
            environment: options.environment,
            identity: options.identity,
            client: HttpClient::new(&context.name, request, http)?,
        })
    }

    /// Apply the `environment` / `identity` options to a mapped batch.
    fn configure(&self, batch: &mut Map<String, Value>) {
        if let Some(environment) = self.environment {
            let name = match environment {
                Environment::Production => "production",
                Environment::Development => "development",
            };
            batch.insert("environment".into(), Value::from(name));
        }
        if let (Some(identity), Some(Value::Object(identities))) =
            (&self.identity, batch.get_mut("user_identities"))
        {
            let keys: Vec<Value> = std::mem::take(identities).into_values().collect();
            if let Some(key) = keys.into_iter().next() {
                identities.insert(identity.clone(), key);
            }
        }
    }
}

/// Merge per-event batches into one batch per user (same `user_identities` and
/// `environment`), in first-seen order, starting another batch for a user whose merged batch
/// would pass [`MAX_BATCH_BYTES`]. Items that are not a JSON object are permanent failures.
pub fn merge_batches(
    items: &[BatchItem],
    mut configure: impl FnMut(&mut Map<String, Value>),
) -> Result<Vec<Value>, Failure> {
    struct Merged {
        user: String,
        batch: Map<String, Value>,
        bytes: usize,
    }
    let mut merged: Vec<Merged> = Vec::new();
    for item in items {
        let mut batch: Map<String, Value> =
            serde_json::from_slice(&item.payload).map_err(|err| {
                Failure::permanent(format!(
                    "event {} is not an mParticle batch: {err}",
                    item.event_id
                ))
            })?;
        configure(&mut batch);
        let user = format!(
            "{}|{}",
            batch.get("user_identities").unwrap_or(&Value::Null),
            batch.get("environment").unwrap_or(&Value::Null)
        );
        let events = match batch.remove("events") {
            Some(Value::Array(events)) => events,
            _ => Vec::new(),
        };
        let bytes = item.payload.len();
        let open = merged
            .iter_mut()
            .rev()
            .find(|m| m.user == user)
            .filter(|m| m.bytes + bytes <= MAX_BATCH_BYTES);
        match open {
            Some(open) => {
                if let Some(Value::Array(list)) = open.batch.get_mut("events") {
                    list.extend(events);
                }
                open.bytes += bytes;
            }
            None => {
                batch.insert("events".into(), Value::Array(events));
                merged.push(Merged { user, batch, bytes });
            }
        }
    }
    Ok(merged.into_iter().map(|m| Value::Object(m.batch)).collect())
}

impl Destination for MParticleDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mparticle"
    }

    fn schema(&self) -> Schema {
        Schema::MParticle
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_BATCHES_PER_REQUEST,
            max_bytes: MAX_REQUEST_BYTES - 2,
            max_item_bytes: MAX_BATCH_BYTES,
            per_item_overhead: 1,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let body = match merge_batches(&batch.items, |b| self.configure(b)) {
                Ok(batches) => serde_json::to_vec(&batches).unwrap_or_default(),
                Err(failure) => return SendOutcome::Failed(failure),
            };
            let body = Bytes::from(body);
            self.client
                .post_batch(&self.target.url, self.headers.clone(), body, &self.target)
                .await
        })
    }

    /// mParticle has no endpoint that checks credentials without recording data: the
    /// options were validated when built; `flagstream test-destination` sends its test event.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{registry, DestinationSpec};

    fn item(user: &str, id: &str) -> BatchItem {
        let payload = format!(
            r#"{{"user_identities":{{"customer_id":"{user}"}},"environment":"production","events":[{{"event_type":"custom_event","data":{{"source_message_id":"{id}"}}}}]}}"#
        );
        BatchItem {
            event_id: id.into(),
            context_key: Some(user.into()),
            ..BatchItem::with_payload(payload)
        }
    }

    #[test]
    fn merges_one_batch_per_user_in_order_and_applies_options() {
        let items = [item("u1", "a"), item("u2", "b"), item("u1", "c")];
        let merged = merge_batches(&items, |_| {}).unwrap();
        assert_eq!(merged.len(), 2);
        let ids = |batch: &Value| -> Vec<String> {
            batch["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["data"]["source_message_id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&merged[0]), ["a", "c"]);
        assert_eq!(ids(&merged[1]), ["b"]);

        let destination_options = |b: &mut Map<String, Value>| {
            b.insert("environment".into(), Value::from("development"));
        };
        let merged = merge_batches(&items[..1], destination_options).unwrap();
        assert_eq!(merged[0]["environment"], "development");
        assert!(merge_batches(
            &[BatchItem {
                payload: Bytes::from_static(b"[]"),
                ..item("u", "x")
            }],
            |_| {}
        )
        .is_err());
    }

    #[test]
    fn a_users_batch_is_split_before_it_passes_the_batch_limit() {
        let per_item = item("u1", "a").payload.len();
        let count = MAX_BATCH_BYTES / per_item + 5;
        let items: Vec<BatchItem> = (0..count).map(|i| item("u1", &i.to_string())).collect();
        let merged = merge_batches(&items, |_| {}).unwrap();
        assert_eq!(merged.len(), 2);
        assert!(merged
            .iter()
            .all(|b| serde_json::to_vec(b).unwrap().len() <= MAX_BATCH_BYTES));
    }

    #[tokio::test]
    async fn builds_with_key_and_secret_and_names_bad_options() {
        let built = registry::build_named(
            DestinationSpec::parse(
                "mparticle:?pod=eu1&key=k1&secret=s1&environment=development&identity=other",
            )
            .unwrap(),
            "m",
        )
        .await
        .unwrap();
        let shown = format!("{built:?}");
        assert!(
            shown.contains("s2s.eu1.mparticle.com/v2/bulkevents") && !shown.contains("k1"),
            "{shown}"
        );
        assert_eq!(built.limits().max_items, 100);
        for (url, needle) in [
            ("mparticle:?key=k", "secret"),
            ("mparticle:?key=k&secret=s&pod=mars", "pod"),
            (
                "mparticle:?key=k&secret=s&environment=staging",
                "environment",
            ),
            ("mparticle:?key=k&secret=s&identity=a%20b", "identity"),
        ] {
            let err = registry::build_named(DestinationSpec::parse(url).unwrap(), "m")
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
