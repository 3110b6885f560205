//! Google Cloud Pub/Sub destination (`pubsub://projects/P/topics/T?…`).
//!
//! Owns turning a [`Batch`] into Pub/Sub messages, publishing them with the official
//! `google-cloud-pubsub` client, and classifying each message's result.
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `projects/PROJECT/topics/TOPIC` | required |
//! | `endpoint` | endpoint override (regional endpoint, emulator) | `PUBSUB_EMULATOR_HOST` if set, else Google's |
//! | `credentials_file` | a service-account key file (JSON) | Application Default Credentials |
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

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use google_cloud_auth::credentials::{anonymous, service_account, Credentials};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{NeverRetry, RetryPolicyExt};
use google_cloud_pubsub::client::{Publisher, TopicAdmin};
use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::model::Message;

use super::{
    Batch, BatchItem, BatchLimits, DestError, Destination, DestinationSpec, ItemFailure,
    SendOutcome,
};
use crate::event::Schema;
use crate::metrics;

/// Most messages per publish request.
pub const MAX_MESSAGES_PER_REQUEST: usize = 1_000;
/// Most bytes per publish request (and so per message): 10 MB.
pub const MAX_REQUEST_BYTES: usize = 10_000_000;
/// Bytes of each batch left for attributes, ordering keys and framing.
pub const ATTRIBUTE_HEADROOM_BYTES: usize = 1_024;
/// Longest attribute value and ordering key Pub/Sub accepts.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1_024;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// A fully qualified topic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicName(String);

impl TopicName {
    fn parse(target: &str) -> Result<Self, String> {
        let parts: Vec<&str> = target.split('/').collect();
        match parts.as_slice() {
            ["projects", project, "topics", topic] if !project.is_empty() && !topic.is_empty() => {
                Ok(TopicName(target.to_string()))
            }
            _ => Err(format!(
                "`{target}` is not a topic: use pubsub://projects/PROJECT/topics/TOPIC"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pub/Sub topic `{}`", self.0)
    }
}

/// A classified failure of one publish (all messages of one request share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailure {
    pub retriable: bool,
    pub throttled: bool,
    pub reason: String,
}

/// Classify a gRPC status code returned for a publish or admin call.
pub fn classify_status(code: Code, message: &str, topic: &TopicName) -> PublishFailure {
    let failure = |retriable, throttled, what: &str| PublishFailure {
        retriable,
        throttled,
        reason: format!("{topic}: {what} ({}): {message}", code.name()),
    };
    match code {
        Code::ResourceExhausted => failure(true, true, "throttled"),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => failure(true, false, "temporarily unavailable"),
        Code::NotFound => failure(false, false, "topic not found"),
        Code::PermissionDenied => failure(false, false, "permission denied"),
        Code::Unauthenticated => failure(false, false, "bad credentials"),
        _ => failure(false, false, "rejected"),
    }
}

/// Classify any error of the Pub/Sub client.
pub fn classify_error(error: &google_cloud_pubsub::Error, topic: &TopicName) -> PublishFailure {
    if let Some(status) = error.status() {
        return classify_status(status.code, &status.message, topic);
    }
    let text = error_chain(error);
    if error.is_authentication() {
        let transient = find_source::<google_cloud_gax::error::CredentialsError>(error)
            .is_some_and(|credentials| credentials.is_transient());
        return PublishFailure {
            retriable: transient,
            throttled: false,
            reason: format!("{topic}: Google credentials: {text}"),
        };
    }
    if let Some(status) = error.http_status_code() {
        let (retriable, throttled) = match status {
            429 => (true, true),
            500..=599 | 408 => (true, false),
            _ => (false, false),
        };
        return PublishFailure {
            retriable,
            throttled,
            reason: format!("{topic}: HTTP {status}: {text}"),
        };
    }
    // Timeouts, connection and transport errors, and anything unrecognised: trying again is
    // bounded by the engine's retry schedule, so err on the side of not dead-lettering.
    PublishFailure {
        retriable: true,
        throttled: false,
        reason: format!("{topic}: could not reach Pub/Sub: {text}"),
    }
}

fn classify_publish_error(error: &PublishError, topic: &TopicName) -> PublishFailure {
    match error {
        PublishError::Rpc(inner) => classify_error(inner, topic),
        PublishError::OrderingKeyPaused => PublishFailure {
            retriable: true,
            throttled: false,
            reason: format!(
                "{topic}: an earlier message with this ordering key failed; resend in order"
            ),
        },
        other => PublishFailure {
            retriable: true,
            throttled: false,
            reason: format!("{topic}: {other}"),
        },
    }
}

fn find_source<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

/// Cut `value` to Pub/Sub's attribute limit at a character boundary.
fn bounded_attribute(value: &str) -> String {
    if value.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return value.to_string();
    }
    let mut end = MAX_ATTRIBUTE_VALUE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// Kinds whose `key` is a flag key.
fn is_flag_evaluation(kind: &str) -> bool {
    matches!(kind, "feature" | "debug")
}

/// Build the message for one item: data, identity attributes and (optionally) ordering key.
pub fn message_for(batch: &Batch, item: &BatchItem, ordering: bool) -> Message {
    let mut attributes: Vec<(&'static str, String)> = vec![
        ("event_id", bounded_attribute(&item.event_id)),
        ("kind", bounded_attribute(&item.kind)),
        ("environment", bounded_attribute(&item.environment)),
        ("schema", batch.schema.name().to_string()),
        ("batch_id", bounded_attribute(&batch.id)),
    ];
    if let Some(key) = &item.key {
        attributes.push(("key", bounded_attribute(key)));
        if is_flag_evaluation(&item.kind) {
            attributes.push(("flag_key", bounded_attribute(key)));
        }
    }
    let mut message = Message::new()
        .set_data(item.payload.clone())
        .set_attributes(attributes);
    if ordering {
        if let Some(context) = item.context_key.as_deref().filter(|key| !key.is_empty()) {
            message = message.set_ordering_key(ordering_key(context));
        }
    }
    message
}

fn ordering_key(context: &str) -> String {
    if context.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
        return context.to_string();
    }
    format!(
        "xxh3-{:032x}",
        xxhash_rust::xxh3::xxh3_128(context.as_bytes())
    )
}

/// Bytes a message counts against the request limit (data, attributes, ordering key).
fn message_bytes(message: &Message) -> usize {
    message.data.len()
        + message.ordering_key.len()
        + message
            .attributes
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
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

impl PubSubDestination {
    /// Build from a `pubsub://` spec, consuming this destination's options. Creates the
    /// clients (resolving credentials) but does not contact the topic; [`Destination::check`]
    /// does.
    pub async fn from_spec(spec: &mut DestinationSpec, name: &str) -> Result<Self, DestError> {
        let topic = TopicName::parse(&spec.target).map_err(|reason| spec.error(reason))?;
        let endpoint_option = spec.take("endpoint");
        let credentials_file = spec.take("credentials_file");
        let ordering = spec.take_parsed::<bool>("ordering")?.unwrap_or(false);
        let timeout = match spec.take("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(text) => humantime::parse_duration(&text).map_err(|err| {
                spec.error(format!("option `timeout`: invalid value `{text}`: {err}"))
            })?,
        };

        let emulator = std::env::var(EMULATOR_ENV)
            .ok()
            .filter(|host| !host.is_empty());
        let endpoint = match (endpoint_option, emulator) {
            (Some(endpoint), _) => Some(endpoint),
            (None, Some(host)) if host.contains("://") => Some(host),
            (None, Some(host)) => Some(format!("http://{host}")),
            (None, None) => None,
        };
        if let Some(endpoint) = &endpoint {
            url::Url::parse(endpoint).map_err(|err| {
                spec.error(format!(
                    "option `endpoint`: invalid URL `{endpoint}`: {err}"
                ))
            })?;
        }
        let plaintext = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let credentials: Option<Credentials> = match (&credentials_file, plaintext) {
            (Some(path), _) => {
                Some(load_service_account(path).map_err(|reason| spec.error(reason))?)
            }
            // An emulator or plain-HTTP endpoint: never send real tokens in the clear.
            (None, true) => Some(anonymous::Builder::new().build()),
            (None, false) => None,
        };

        let mut publisher = Publisher::builder(topic.as_str())
            .set_message_count_threshold(MAX_MESSAGES_PER_REQUEST as u32)
            .set_byte_threshold(MAX_REQUEST_BYTES as u32)
            .set_delay_threshold(Duration::from_millis(5))
            .with_retry_policy(NeverRetry.with_time_limit(timeout));
        let mut admin =
            TopicAdmin::builder().with_retry_policy(NeverRetry.with_time_limit(timeout));
        if let Some(endpoint) = &endpoint {
            publisher = publisher.with_endpoint(endpoint);
            admin = admin.with_endpoint(endpoint);
        }
        if let Some(credentials) = credentials {
            publisher = publisher.with_credentials(credentials.clone());
            admin = admin.with_credentials(credentials);
        }
        let publisher = publisher.build().await.map_err(|err| {
            spec.error(format!(
                "could not create the Pub/Sub publisher: {}",
                error_chain(&err)
            ))
        })?;
        let admin = admin.build().await.map_err(|err| {
            spec.error(format!(
                "could not create the Pub/Sub admin client: {}",
                error_chain(&err)
            ))
        })?;
        Ok(PubSubDestination {
            name: name.to_string(),
            schema: Schema::default(),
            topic,
            ordering,
            timeout,
            publisher,
            admin,
        })
    }

    /// Set the schema the engine maps events to (the engine consumes the `schema` option).
    pub fn with_schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let outcome = self.publish_batch(batch).await;
        self.record_metrics(&outcome);
        outcome
    }

    async fn publish_batch(&self, batch: &Batch) -> SendOutcome {
        let mut failures: Vec<ItemFailure> = Vec::new();
        let mut pending = Vec::with_capacity(batch.items.len());
        for (index, item) in batch.items.iter().enumerate() {
            let message = message_for(batch, item, self.ordering);
            let size = message_bytes(&message);
            if size > MAX_REQUEST_BYTES {
                failures.push(ItemFailure {
                    index,
                    retriable: false,
                    reason: format!(
                        "{}: message is {size} bytes with its attributes; Pub/Sub accepts at most {MAX_REQUEST_BYTES}",
                        self.topic
                    ),
                });
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
        let results = match tokio::time::timeout(self.timeout + Duration::from_secs(5), published)
            .await
        {
            Ok(results) => results,
            Err(_) => {
                return SendOutcome::Retriable {
                    reason: format!("{}: publish timed out after {:?}", self.topic, self.timeout),
                    retry_after: None,
                    throttled: false,
                };
            }
        };

        let mut throttled = false;
        let mut first_failure: Option<PublishFailure> = None;
        let mut paused_keys = BTreeSet::new();
        for ((index, ordering_key), result) in results {
            if let Err(error) = result {
                let failure = classify_publish_error(&error, &self.topic);
                throttled |= failure.throttled;
                failures.push(ItemFailure {
                    index,
                    retriable: failure.retriable,
                    reason: failure.reason.clone(),
                });
                if !ordering_key.is_empty() {
                    paused_keys.insert(ordering_key);
                }
                first_failure.get_or_insert(failure);
            }
        }
        for key in paused_keys {
            self.publisher.resume_publish(key);
        }
        let outcome = SendOutcome::from_item_failures(
            batch.items.len(),
            failures,
            throttled,
            first_failure.map(|failure| failure.reason),
        );
        if let SendOutcome::Permanent { reason } | SendOutcome::Retriable { reason, .. } = &outcome
        {
            tracing::debug!(destination = %self.name, %reason, "publish failed");
        }
        outcome
    }

    /// Count this publish. The client hides its individual RPCs (it may split a batch per
    /// ordering key), so one send counts as one request here.
    fn record_metrics(&self, outcome: &SendOutcome) {
        let (label, throttled) = match outcome {
            SendOutcome::Delivered => ("ok", false),
            SendOutcome::Partial { throttled, .. } => ("partial", *throttled),
            SendOutcome::Retriable {
                throttled: true, ..
            } => ("throttled", true),
            SendOutcome::Retriable { .. } | SendOutcome::Permanent { .. } => ("error", false),
        };
        ::metrics::counter!(metrics::DEST_REQUESTS_TOTAL, "destination" => self.name.clone(), "outcome" => label)
            .increment(1);
        if throttled {
            ::metrics::counter!(metrics::DEST_THROTTLED_REQUESTS_TOTAL, "destination" => self.name.clone())
                .increment(1);
        }
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
            Ok(Err(error)) => Err(DestError::Check(classify_error(&error, &self.topic).reason)),
            Err(_) => Err(DestError::Check(format!(
                "{}: no answer within {:?}",
                self.topic, self.timeout
            ))),
        }
    }
}

fn load_service_account(path: &str) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("option `credentials_file`: cannot read `{path}`: {err}"))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| format!("option `credentials_file`: `{path}` is not JSON: {err}"))?;
    match json.get("type").and_then(|t| t.as_str()) {
        Some("service_account") => {}
        other => {
            return Err(format!(
                "option `credentials_file`: `{path}` has type {other:?}; expected a service-account key \
                 (\"type\": \"service_account\"); for other credential kinds use GOOGLE_APPLICATION_CREDENTIALS"
            ))
        }
    }
    service_account::Builder::new(json)
        .build()
        .map_err(|err| format!("option `credentials_file`: `{path}`: {err}"))
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
        Box::pin(self.send_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(self.check_topic())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn topic() -> TopicName {
        TopicName::parse("projects/acme-project/topics/flag-events").unwrap()
    }

    fn item(kind: &str, key: Option<&str>, context: Option<&str>) -> BatchItem {
        BatchItem {
            event_id: "evt-1".into(),
            payload: Bytes::from_static(b"{\"kind\":\"feature\"}"),
            kind: kind.into(),
            key: key.map(str::to_string),
            context_key: context.map(str::to_string),
            environment: "production".into(),
            received_at_ms: 1,
        }
    }

    #[test]
    fn topic_names_parse() {
        assert!(TopicName::parse("projects/p/topics/t").is_ok());
        assert!(TopicName::parse("projects/p/subscriptions/t").is_err());
        assert!(TopicName::parse("t").is_err());
        assert!(TopicName::parse("projects//topics/t").is_err());
    }

    #[test]
    fn messages_carry_identity_attributes_and_ordering_key() {
        let batch = Batch {
            id: "batch-7".into(),
            schema: Schema::LaunchDarkly,
            items: vec![],
        };
        let message = message_for(
            &batch,
            &item("feature", Some("new-checkout"), Some("u1")),
            true,
        );
        let attribute = |name: &str| message.attributes.get(name).cloned();
        assert_eq!(attribute("event_id").as_deref(), Some("evt-1"));
        assert_eq!(attribute("kind").as_deref(), Some("feature"));
        assert_eq!(attribute("flag_key").as_deref(), Some("new-checkout"));
        assert_eq!(attribute("key").as_deref(), Some("new-checkout"));
        assert_eq!(attribute("environment").as_deref(), Some("production"));
        assert_eq!(attribute("schema").as_deref(), Some("launchdarkly"));
        assert_eq!(attribute("batch_id").as_deref(), Some("batch-7"));
        assert_eq!(message.ordering_key, "u1");

        let custom = message_for(
            &batch,
            &item("custom", Some("checkout-completed"), Some("u1")),
            false,
        );
        assert_eq!(
            custom.attributes.get("key").map(String::as_str),
            Some("checkout-completed")
        );
        assert!(!custom.attributes.contains_key("flag_key"));
        assert!(custom.ordering_key.is_empty(), "ordering off");
    }

    #[test]
    fn long_values_are_bounded() {
        let long = "é".repeat(700); // 1,400 bytes
        let bounded = bounded_attribute(&long);
        assert!(bounded.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        assert!(long.starts_with(&bounded));
        let key = ordering_key(&"k".repeat(2_000));
        assert!(key.len() <= MAX_ATTRIBUTE_VALUE_BYTES);
    }

    #[test]
    fn statuses_are_classified() {
        let t = topic();
        let missing = classify_status(Code::NotFound, "Topic not found", &t);
        assert!(!missing.retriable);
        assert!(
            missing
                .reason
                .contains("projects/acme-project/topics/flag-events"),
            "{}",
            missing.reason
        );
        assert!(missing.reason.contains("not found"));
        let throttled = classify_status(Code::ResourceExhausted, "quota", &t);
        assert!(throttled.retriable && throttled.throttled);
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Aborted,
        ] {
            let failure = classify_status(code, "", &t);
            assert!(failure.retriable && !failure.throttled, "{code:?}");
        }
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::InvalidArgument,
        ] {
            assert!(!classify_status(code, "", &t).retriable, "{code:?}");
        }
    }

    #[test]
    fn transport_and_credential_errors_are_classified() {
        use google_cloud_gax::error::CredentialsError;
        let t = topic();
        let bad = google_cloud_pubsub::Error::authentication(CredentialsError::from_msg(
            false,
            "invalid_grant",
        ));
        let failure = classify_error(&bad, &t);
        assert!(
            !failure.retriable && failure.reason.contains("credentials"),
            "{}",
            failure.reason
        );
        let flaky = google_cloud_pubsub::Error::authentication(CredentialsError::from_msg(
            true,
            "metadata server timeout",
        ));
        assert!(classify_error(&flaky, &t).retriable);
        let refused = google_cloud_pubsub::Error::io("connection refused");
        assert!(classify_error(&refused, &t).retriable);
        let throttled = google_cloud_pubsub::Error::http(429, Default::default(), Bytes::new());
        let failure = classify_error(&throttled, &t);
        assert!(failure.retriable && failure.throttled);
        let forbidden = google_cloud_pubsub::Error::http(403, Default::default(), Bytes::new());
        assert!(!classify_error(&forbidden, &t).retriable);
    }

    #[test]
    fn credentials_file_must_be_a_service_account_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.json");
        std::fs::write(&path, r#"{"type":"authorized_user"}"#).unwrap();
        let err = load_service_account(path.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("service_account") && err.contains("credentials_file"),
            "{err}"
        );
        let err = load_service_account("/nonexistent/key.json").unwrap_err();
        assert!(err.contains("/nonexistent/key.json"), "{err}");
    }
}
