//! Azure Event Hubs (`eventhubs://NAMESPACE/HUB?policy=NAME&key=env:EH_KEY`, or
//! `connection_string=env:…`), over AMQP 1.0 with Microsoft's `azure_messaging_eventhubs`.
//!
//! Owns turning a [`Batch`] into Event Hubs batches and folding their outcomes into one
//! [`SendOutcome`]: `config` (namespace, hub, credentials, options), `sas` (SAS tokens, for
//! documentation and other transports; the client signs its own), `message` (one AMQP message
//! per event), `partition` (the service's key-to-partition mapping), `service` (connection,
//! sending, classification).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `NAMESPACE/HUB` (`NAMESPACE` short, or a full host name); empty with a connection string holding `EntityPath` | required |
//! | `policy`, `key` | shared access policy (with the Send right) and its key; `key` only as `env:` / `file:` | — |
//! | `connection_string` | `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=HUB]`, only as `env:` / `file:` | — |
//! | `partition_key` | `context_key`, `event_id`, `kind`, `key`, `environment`, or a payload field | `context_key` |
//! | `max_batch_bytes` | largest batch (one AMQP message): 1 MB on Standard, more on Premium/Dedicated; never above what the hub's link advertises | `1MiB` |
//! | `endpoint` | `amqps://HOST[:PORT]` or `amqp://HOST:PORT` to connect to instead (a proxy, a stand-in) | `amqps://NAMESPACE:5671` |
//! | `timeout` | how long connecting or sending one batch may take | `30s` |
//!
//! ## Invariants
//!
//! 1. One event per AMQP message: body = the mapped event, message id = the event id,
//!    application properties `event_id`, `kind`, `key`, `environment`, `schema`, partition key
//!    (the configured field, never one constant) in `x-opt-partition-key`.
//! 2. Events go to the partition their key maps to (the service's own hash, see `partition`),
//!    in batch order; a partition's batches are sent one after the other, and after a failed
//!    one the rest of that partition is not sent (reported with the same failure), so a
//!    context's events never overtake each other. Partitions are sent concurrently.
//! 3. Every event is either in a batch the service accepted, or listed in the outcome with its
//!    classified failure; an event larger than a batch may be is a permanent item failure (dead
//!    letter, with its size) and its neighbours are still delivered.
//! 4. The connection is opened on first use (never in `build`), and replaced after a transport
//!    or link failure, so a dropped connection is reconnected by the next send. The client's
//!    own retries are bounded by `timeout`; the delivery engine owns the retry schedule.
//! 5. A batch whose answer does not come within `timeout` is retriable and re-sent: at least
//!    once (`fe2o3-amqp` 0.16 under Microsoft's client loses an answer that arrives
//!    instantly now and then; the service answers after storing, but a loaded client can
//!    still see it).
//!
//! ## Outcome classification
//!
//! | the service says | outcome |
//! |---|---|
//! | batch accepted | delivered |
//! | `$cbs` put-token 401/403, `amqp:unauthorized-access` (wrong key, policy without Send) | permanent, "authorisation failed" |
//! | `$management` 404, `amqp:not-found`, `com.microsoft:entity-disabled` | permanent, "hub not found or disabled" |
//! | `amqp:link:message-size-exceeded`, argument errors | permanent |
//! | `com.microsoft:server-busy`, `amqp:resource-limit-exceeded`, 429/503 | throttled |
//! | connection dropped, link detached, timeouts, anything else | retriable (reconnect) |
//!
//! Microsoft Entra credentials and AMQP over WebSockets are not offered (the former needs
//! `azure_identity`, the latter port 443 tunnelling); SAS covers what LaunchDarkly asks for.

pub mod config;
mod message;
pub mod partition;
pub mod sas;
mod service;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use config::{EventHubsCredentials, EventHubsOptions, EventHubsSettings, EventHubsTarget};
pub use message::{partition_key, MAX_PARTITION_KEY_LEN, PARTITION_KEY_ANNOTATION, PROPERTY_NAMES};
pub use sas::sas_token;
pub use service::classify;

use super::failure::RequestMetrics;
use super::kind::{BuildContext, DestinationKind};
use super::secrets::REDACTED;
use super::{Batch, BatchLimits, DestError, Destination, SendOutcome};
use crate::event::Schema;

/// Allowance per event for its message framing, id, properties and partition key, counted
/// against the batch size besides the payload.
pub const EVENT_OVERHEAD_BYTES: usize = 512;
/// Allowance for the batch envelope.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 512;
/// Most events per engine batch (split into Event Hubs batches per partition and size).
pub const MAX_EVENTS_PER_BATCH: usize = 5_000;
/// Most payload bytes per engine batch.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// The `eventhubs` destination type.
#[derive(Debug, Clone, Copy)]
pub struct EventHubsKind;

impl DestinationKind for EventHubsKind {
    const SCHEME: &'static str = "eventhubs";
    const SUMMARY: &'static str =
        "Azure Event Hubs over AMQP (SAS policy and key, or a connection string)";
    const EXAMPLE: &'static str = "eventhubs://my-namespace/flag-events?policy=send&key=env:EH_KEY";
    const SECRET_OPTIONS: &'static [&'static str] = &["key"];
    type Options = (EventHubsOptions,);

    async fn build(
        &self,
        target: &str,
        (options,): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        for option in ["key", "connection_string"] {
            if given_inline(&context.source, option) {
                return Err(context.error(format!(
                    "option `{option}` is a secret: give it as env:NAME or file:PATH, never inline"
                )));
            }
        }
        let settings =
            EventHubsSettings::new(target, &options).map_err(|reason| context.error(reason))?;
        Ok(Arc::new(EventHubsDestination {
            name: context.name.clone(),
            schema: context.schema,
            settings,
            connection: tokio::sync::Mutex::new(None),
            requests: RequestMetrics::new(&context.name),
        }))
    }
}

/// Was `option` written inline? The source shows secrets given by reference as the reference
/// and inline ones as [`REDACTED`].
fn given_inline(source: &str, option: &str) -> bool {
    let Some((_, query)) = source.split_once('?') else {
        return false;
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(name, shown)| name == option && shown == REDACTED)
}

/// The Event Hubs destination.
pub struct EventHubsDestination {
    name: String,
    schema: Schema,
    settings: EventHubsSettings,
    /// Opened on first use; `None` again after a transport failure (reconnect next time).
    connection: tokio::sync::Mutex<Option<Arc<service::Connection>>>,
    requests: RequestMetrics,
}

impl fmt::Debug for EventHubsDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHubsDestination")
            .field("name", &self.name)
            .field("target", &self.settings.target)
            .field("policy", &self.settings.credentials.policy)
            .field("partition_key", &self.settings.partition_key)
            .field("max_batch_bytes", &self.settings.max_batch_bytes)
            .field("endpoint", &self.settings.endpoint)
            .field("timeout", &self.settings.timeout)
            .finish_non_exhaustive()
    }
}

impl EventHubsDestination {
    /// The namespace and hub this destination writes to.
    pub fn target(&self) -> &EventHubsTarget {
        &self.settings.target
    }
}

impl Destination for EventHubsDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "eventhubs"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_EVENTS_PER_BATCH,
            max_bytes: MAX_BATCH_BYTES,
            max_item_bytes: self.settings.max_batch_bytes - ENVELOPE_OVERHEAD_BYTES,
            per_item_overhead: EVENT_OVERHEAD_BYTES,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(self.check_hub())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_secrets_are_told_from_references() {
        let source = "eventhubs://ns-one/hub?key=***&policy=send";
        assert!(given_inline(source, "key"));
        assert!(!given_inline(source, "connection_string"));
        let by_reference = "eventhubs://ns-one/hub?key=env:EH_KEY&policy=send";
        assert!(!given_inline(by_reference, "key"));
    }
}
