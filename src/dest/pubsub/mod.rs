//! Google Cloud Pub/Sub destination (`pubsub://projects/P/topics/T?…`).
//!
//! Owns turning a [`Batch`] into Pub/Sub messages (`message`), publishing them with the
//! official `google-cloud-pubsub` client, and classifying each message's result (Google API
//! errors are classified by [`crate::dest::gcp`]).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `projects/PROJECT/topics/TOPIC` | required |
//! | `endpoint` | endpoint override (regional endpoint, emulator) | `PUBSUB_EMULATOR_HOST` if set, else Google's |
//! | `credentials_file`, `credentials_json` | a service-account key ([`crate::dest::gcp`]) | Application Default Credentials |
//! | `ordering` | set the context key as ordering key | `false` |
//! | `timeout` | how long one publish may take (humantime) | `30s` |
//!
//! Like Google's own client libraries, `PUBSUB_EMULATOR_HOST=host:port` (and any plain
//! `http://` endpoint) means "talk to the emulator": anonymous credentials, no TLS.
//!
//! ## Messages
//!
//! One message per event: data = the mapped event, attributes `event_id`, `kind`, `key`
//! (and `flag_key` for flag evaluations), `environment`, `schema`, `batch_id`, so consumers can
//! filter and deduplicate without parsing the body. Pub/Sub limits attribute values to 1,024
//! bytes; longer values are cut at a character boundary (keys are far shorter in practice).
//! With `ordering=true` the context key becomes the ordering key (hashed if over 1,024 bytes);
//! a publish request may carry only one ordering key, so the client splits a batch into one
//! request per key — ordering costs throughput, and Pub/Sub caps each key at 1 MB/s.
//!
//! ## Invariants
//!
//! 1. Every message is either acknowledged with a server-assigned id or reported in the
//!    outcome with its index. A publish request is all-or-nothing, but the client splits a
//!    batch into several requests (per ordering key, by size), so failures are per message.
//! 2. Limits: ≤ 1,000 messages and ≤ 10 MB per request; the engine cuts batches within
//!    [`BatchLimits`] (leaving headroom for attributes), and a message larger than the request
//!    limit is a permanent item failure.
//! 3. The client's own retries are off (a short time limit only): the delivery engine owns
//!    retries and their persisted backoff. An ordering key paused by a failure is resumed after
//!    the outcome is recorded, so the engine's resend is not refused.
//! 4. Request metrics count publish RPCs: the client sends one per ordering key (the batch
//!    limits keep it from splitting for size), so a send counts one request per distinct
//!    ordering key, each labelled by how its messages fared.
//!
//! ## Outcome classification (gRPC status)
//!
//! | status | outcome |
//! |---|---|
//! | `RESOURCE_EXHAUSTED`, HTTP 429 | retriable, throttled |
//! | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `ABORTED`, `INTERNAL`, `UNKNOWN`, `CANCELLED`, connection errors, timeouts | retriable |
//! | `NOT_FOUND` (topic), `PERMISSION_DENIED`, `UNAUTHENTICATED`, `INVALID_ARGUMENT`, other | permanent, naming the topic |
//!
//! `check()` gets the topic (it exists, credentials work). A publisher-only service account
//! (`roles/pubsub.publisher`) gets `PERMISSION_DENIED` there; that passes with a warning,
//! since publishing would work.

mod config;
mod message;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{NeverRetry, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, TopicAdmin};
use google_cloud_pubsub::error::PublishError;

pub use config::{PubSubOptions, TopicName};
use message::message_bytes;
pub use message::message_for;

use super::failure::{error_chain, RequestMetrics, RequestResult};
use super::gcp::{self, GoogleOptions};
use super::kind::{BuildContext, DestinationKind};
use super::options::{Endpoint, RequestOptions};
use super::{
    Batch, BatchLimits, DestError, Destination, Failure, FailureClass, ItemFailure, SendOutcome,
};
use crate::event::Schema;

/// Most messages per publish request.
pub const MAX_MESSAGES_PER_REQUEST: usize = 1_000;
/// Most bytes per publish request (and so per message): 10 MB.
pub const MAX_REQUEST_BYTES: usize = 10_000_000;
/// Bytes of each batch left for attributes, ordering keys and framing.
pub const ATTRIBUTE_HEADROOM_BYTES: usize = 1_024;
/// Longest attribute value and ordering key Pub/Sub accepts.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1_024;

const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// The `pubsub` destination type.
#[derive(Debug, Clone, Copy)]
pub struct PubSubKind;

impl DestinationKind for PubSubKind {
    const SCHEME: &'static str = "pubsub";
    const SUMMARY: &'static str = "Google Cloud Pub/Sub (one message per event)";
    const EXAMPLE: &'static str = "pubsub://projects/acme/topics/flag-events";
    type Options = (PubSubOptions, RequestOptions, GoogleOptions);

    async fn build(
        &self,
        target: &str,
        (options, request, google): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let topic = TopicName::parse(target).map_err(|reason| context.error(reason))?;
        let timeout = request.timeout().map_err(|reason| context.error(reason))?;
        let endpoint = match request.endpoint {
            Some(endpoint) => Some(endpoint),
            None => gcp::emulator_endpoint(EMULATOR_ENV).map_err(|reason| context.error(reason))?,
        };
        let plaintext = endpoint.as_ref().is_some_and(Endpoint::is_plaintext);
        let credentials = google
            .credentials(plaintext)
            .map_err(|reason| context.error(reason))?;
        let mut publisher = Publisher::builder(topic.as_str())
            .set_message_count_threshold(MAX_MESSAGES_PER_REQUEST as u32)
            .set_byte_threshold(MAX_REQUEST_BYTES as u32)
            .set_delay_threshold(Duration::from_millis(5))
            .with_retry_policy(NeverRetry.with_time_limit(timeout));
        let mut admin =
            TopicAdmin::builder().with_retry_policy(NeverRetry.with_time_limit(timeout));
        if let Some(endpoint) = &endpoint {
            publisher = publisher.with_endpoint(endpoint.as_str());
            admin = admin.with_endpoint(endpoint.as_str());
        }
        if let Some(credentials) = credentials {
            publisher = publisher.with_credentials(credentials.clone());
            admin = admin.with_credentials(credentials);
        }
        let client_error = |what: &str, err: &(dyn std::error::Error + 'static)| {
            context.error(format!(
                "could not create the Pub/Sub {what}: {}",
                error_chain(err)
            ))
        };
        let publisher = publisher
            .build()
            .await
            .map_err(|err| client_error("publisher", &err))?;
        let admin = admin
            .build()
            .await
            .map_err(|err| client_error("admin client", &err))?;
        Ok(Arc::new(PubSubDestination {
            name: context.name.clone(),
            schema: context.schema,
            topic,
            ordering: options.ordering,
            timeout,
            publisher,
            admin,
            requests: RequestMetrics::new(&context.name),
        }))
    }
}

/// The Pub/Sub destination.
pub struct PubSubDestination {
    name: String,
    schema: Schema,
    topic: TopicName,
    ordering: bool,
    timeout: Duration,
    publisher: Publisher,
    admin: TopicAdmin,
    requests: RequestMetrics,
}

impl fmt::Debug for PubSubDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubDestination")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("ordering", &self.ordering)
            .finish_non_exhaustive()
    }
}

fn classify_publish_error(error: &PublishError, topic: &TopicName) -> Failure {
    match error {
        PublishError::Rpc(inner) => gcp::classify_error(inner, topic),
        PublishError::OrderingKeyPaused => Failure::retriable(format!(
            "{topic}: an earlier message with this ordering key failed; resend in order"
        )),
        other => Failure::retriable(format!("{topic}: {other}")),
    }
}

impl PubSubDestination {
    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    async fn publish_batch(&self, batch: &Batch) -> SendOutcome {
        let mut failures: Vec<ItemFailure> = Vec::new();
        let mut pending = Vec::with_capacity(batch.items.len());
        for (index, item) in batch.items.iter().enumerate() {
            let message = message_for(batch, item, self.ordering);
            let size = message_bytes(&message);
            if size > MAX_REQUEST_BYTES {
                failures.push(ItemFailure::new(
                    index,
                    FailureClass::Permanent,
                    format!(
                        "{}: message is {size} bytes with its attributes; Pub/Sub accepts at most {MAX_REQUEST_BYTES}",
                        self.topic
                    ),
                ));
                continue;
            }
            let ordering_key = message.ordering_key.clone();
            pending.push((index, ordering_key, self.publisher.publish(message)));
        }
        // Send now rather than after the client's batching delay.
        let published = async {
            self.publisher.flush().await;
            let (meta, futures): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .map(|(index, key, future)| ((index, key), future))
                .unzip();
            let results = futures::future::join_all(futures).await;
            meta.into_iter().zip(results).collect::<Vec<_>>()
        };
        // A safety net above the client's own time limit: a wedged connection must not hold
        // the delivery engine forever.
        let deadline = self.timeout + Duration::from_secs(5);
        let Ok(results) = tokio::time::timeout(deadline, published).await else {
            let reason = format!("{}: publish timed out after {:?}", self.topic, self.timeout);
            self.requests
                .record(RequestResult::Failed(FailureClass::Retriable));
            return SendOutcome::failed(FailureClass::Retriable, reason);
        };

        let mut first_failure: Option<Failure> = None;
        // Per publish RPC (one per ordering key): messages sent, failures.
        let mut requests: BTreeMap<String, (usize, Vec<ItemFailure>)> = BTreeMap::new();
        for ((index, ordering_key), result) in results {
            let request = requests.entry(ordering_key).or_default();
            request.0 += 1;
            if let Err(error) = result {
                let failure = classify_publish_error(&error, &self.topic);
                request.1.push(failure.for_item(index));
                first_failure.get_or_insert(failure);
            }
        }
        let mut paused_keys = BTreeSet::new();
        for (ordering_key, (sent, request_failures)) in requests {
            self.requests.record_items(sent, &request_failures);
            if !request_failures.is_empty() && !ordering_key.is_empty() {
                paused_keys.insert(ordering_key);
            }
            failures.extend(request_failures);
        }
        for key in paused_keys {
            self.publisher.resume_publish(key);
        }
        let outcome = SendOutcome::from_item_failures(batch.items.len(), failures, first_failure);
        if let SendOutcome::Failed(failure) = &outcome {
            tracing::debug!(destination = %self.name, reason = %failure.reason, "publish failed");
        }
        outcome
    }

    async fn check_topic(&self) -> Result<(), DestError> {
        let probe = self.admin.get_topic().set_topic(self.topic.as_str()).send();
        match tokio::time::timeout(self.timeout + Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => Ok(()),
            // roles/pubsub.publisher grants publish but not topics.get; a publisher-only
            // service account must still pass (the first publish verifies access).
            Ok(Err(error))
                if error
                    .status()
                    .is_some_and(|s| s.code == Code::PermissionDenied) =>
            {
                tracing::warn!(
                    destination = %self.name,
                    "{}: not allowed to get the topic; its existence and publish access are not \
                     verified until the first publish",
                    self.topic
                );
                Ok(())
            }
            Ok(Err(error)) => Err(DestError::Check(
                gcp::classify_error(&error, &self.topic).reason,
            )),
            Err(_) => Err(DestError::Check(format!(
                "{}: no answer within {:?}",
                self.topic, self.timeout
            ))),
        }
    }
}

impl Destination for PubSubDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pubsub"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        // Per-item overhead covers the attributes; max_bytes leaves room for framing so the
        // client never has to split a batch for size.
        let max_bytes = MAX_REQUEST_BYTES - MAX_MESSAGES_PER_REQUEST * 64;
        BatchLimits {
            max_items: MAX_MESSAGES_PER_REQUEST,
            max_bytes,
            max_item_bytes: max_bytes,
            per_item_overhead: ATTRIBUTE_HEADROOM_BYTES,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.publish_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(self.check_topic())
    }
}
