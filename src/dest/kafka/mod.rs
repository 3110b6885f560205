//! Apache Kafka destination (`kafka://BROKER:PORT[,BROKER:PORT…]/TOPIC?…`), on librdkafka
//! (the `rdkafka` crate, librdkafka built from source).
//!
//! Owns turning a [`Batch`] into Kafka messages and folding the per-message delivery reports
//! into one [`SendOutcome`]: `config` (options, target, librdkafka properties), `message`
//! (key and headers), `service` (producing, topic checks, classification).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | comma-separated brokers (`HOST[:PORT]`, port 9092 by default), `/`, topic | required |
//! | `message_key` | message key: `context_key`, `event_id`, `kind`, `key`, `environment`, or a payload field (`event.contextKeys.user`, `/event/contextKeys/user`) | `context_key` |
//! | `compression` | `lz4`, `zstd`, `gzip`, `snappy`, `none` | `lz4` |
//! | `max_message_bytes` | largest message (librdkafka `message.max.bytes`); bigger events are dead-lettered | `1000000` |
//! | `timeout` | how long librdkafka may try to deliver a message (`message.timeout.ms`) | `30s` |
//! | `create_topic` | create the topic if missing (dev setups), with `partitions` / `replication` | `false` |
//! | `security.protocol` | `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL` | `PLAINTEXT` |
//! | `sasl.mechanism` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (required with SASL) | — |
//! | `sasl.username`, `sasl.password` | SASL credentials (the password is a secret: `env:` / `file:`) | — |
//! | `ssl.ca.location` | CA bundle to verify the brokers | system CAs |
//! | `ssl.certificate.location`, `ssl.key.location`, `ssl.key.password` | client certificate (mutual TLS) | — |
//! | `rdkafka.NAME` | any other librdkafka producer property, passed through (validated at start) | — |
//!
//! ## Invariants
//!
//! 1. The producer is idempotent (`enable.idempotence=true`, `acks=all`): librdkafka's own
//!    retries within one send never duplicate or reorder a partition's messages. Its message
//!    timeout is the send `timeout`, so every message of a batch has a delivery report within
//!    it; the delivery engine owns retrying what failed.
//! 2. One message per event, payload = the mapped event; key = the configured field (never
//!    one constant for all events); headers `event_id`, `kind`, `key`, `environment`,
//!    `schema`, `batch_id`.
//! 3. Every message is either acknowledged by the brokers (a delivery report with an offset)
//!    or listed in the outcome with its classified failure; only those are resent.
//! 4. Topics are never auto-created unless `create_topic=true`: a missing topic is a
//!    permanent failure naming it.
//! 5. A producer librdkafka declares fatally failed (e.g. fenced after an outage) is replaced
//!    by a new one; what it did not deliver is reported retriable and resent through it.
//! 6. No tokio worker blocks on librdkafka: enqueueing is non-blocking, delivery reports come
//!    from the producer's polling thread, metadata requests run on the blocking pool.
//!
//! ## Outcome classification
//!
//! | librdkafka says | outcome |
//! |---|---|
//! | delivery report with an offset | delivered |
//! | `MSG_SIZE_TOO_LARGE` (producer or broker), `MESSAGE_BATCH_TOO_LARGE` | permanent item failure (dead letter, with the size) |
//! | unknown topic / partition | permanent, "Kafka topic `T` does not exist" |
//! | topic / cluster authorisation failed, SASL authentication failed | permanent, named |
//! | invalid record, policy violation, unsupported compression | permanent |
//! | `QUEUE_FULL` | throttled (the rest of the batch is not enqueued, keeping order) |
//! | message timed out, transport failures, leader elections, not enough replicas | retriable |

mod config;
mod message;
mod reports;
mod service;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

pub use config::{
    option_for_property, producer_properties, Compression, KafkaBlocks, KafkaOptions, KafkaTarget,
    ProducerSettings, SaslMechanism, SecurityProtocol, DEFAULT_MAX_MESSAGE_BYTES,
};
pub use message::{headers, HEADER_NAMES};
pub use service::{classify, classify_code};

use reports::{ReportingContext, ReportingProducer};

use super::failure::RequestMetrics;
use super::kind::{BuildContext, DestinationKind};
use super::kinesis::PartitionKeySource;
use super::{Batch, BatchLimits, DestError, Destination, SendOutcome};
use crate::event::Schema;

/// Allowance for a message's key, headers and record framing, counted against
/// `max_message_bytes` besides the payload.
pub const MESSAGE_OVERHEAD_BYTES: usize = 1024;
/// Most events per batch: librdkafka batches per partition itself; this bounds how much one
/// send enqueues (its queue holds 100,000 messages by default, shared by concurrent sends).
pub const MAX_EVENTS_PER_BATCH: usize = 5_000;
/// Most payload bytes per batch.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The `kafka` destination type.
#[derive(Debug, Clone, Copy)]
pub struct KafkaKind;

impl DestinationKind for KafkaKind {
    const SCHEME: &'static str = "kafka";
    const SUMMARY: &'static str = "Apache Kafka and compatible brokers (idempotent producer)";
    const EXAMPLE: &'static str = "kafka://broker1:9092,broker2:9092/flag-events";
    type Options = KafkaBlocks;

    async fn build(
        &self,
        target: &str,
        blocks: Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let target = KafkaTarget::parse(target).map_err(|reason| context.error(reason))?;
        let client_id = format!("flagstream-{}", context.name);
        let settings = producer_properties(&target, &blocks, &client_id)
            .map_err(|reason| context.error(reason))?;
        let config =
            settings
                .properties
                .iter()
                .fold(ClientConfig::new(), |mut config, (name, value)| {
                    config.set(name, value);
                    config
                });
        let creation_error = |error: KafkaError| context.error(config_error(&error, &blocks));
        let producer = config
            .create_with_context(ReportingContext)
            .map_err(creation_error)?;
        let producer = parking_lot::RwLock::new(Arc::new(producer));
        let options = &blocks.options;
        let admin: Option<AdminClient<DefaultClientContext>> = if options.create_topic {
            Some(admin_config(&settings).create().map_err(creation_error)?)
        } else {
            None
        };
        Ok(Arc::new(KafkaDestination {
            name: context.name.clone(),
            schema: context.schema,
            keys: options
                .message_key
                .clone()
                .unwrap_or(PartitionKeySource::ContextKey),
            create_topic: admin.map(|admin| TopicCreation {
                admin,
                partitions: options
                    .partitions
                    .unwrap_or(1)
                    .try_into()
                    .unwrap_or(i32::MAX),
                replication: options
                    .replication
                    .unwrap_or(1)
                    .try_into()
                    .unwrap_or(i32::MAX),
            }),
            timeout: settings.timeout,
            max_message_bytes: settings.max_message_bytes,
            topic_ready: AtomicBool::new(false),
            target,
            producer,
            config,
            requests: RequestMetrics::new(&context.name),
        }))
    }
}

/// The admin client's configuration: the producer's connection and security properties,
/// without the producer-only ones.
fn admin_config(settings: &ProducerSettings) -> ClientConfig {
    const PRODUCER_ONLY: &[&str] = &[
        "enable.idempotence",
        "acks",
        "compression.type",
        "message.timeout.ms",
        "allow.auto.create.topics",
    ];
    let mut config = ClientConfig::new();
    for (name, value) in &settings.properties {
        if !PRODUCER_ONLY.contains(&name.as_str()) {
            config.set(name, value);
        }
    }
    config
}

/// librdkafka refused the configuration: name the option the operator wrote, never its value
/// (it may be a secret).
fn config_error(error: &KafkaError, blocks: &KafkaBlocks) -> String {
    match error {
        KafkaError::ClientConfig(_, _, property, _)
            if blocks.passthrough_secret.contains(property) =>
        {
            format!(
                "option `{}`: librdkafka refused it",
                option_for_property(property, blocks)
            )
        }
        KafkaError::ClientConfig(_, description, property, _) => format!(
            "option `{}`: librdkafka refused it: {description}",
            option_for_property(property, blocks)
        ),
        other => format!("cannot create the Kafka producer: {other}"),
    }
}

/// `create_topic=true`: how to create it, and the admin client that does.
pub struct TopicCreation {
    admin: AdminClient<DefaultClientContext>,
    pub partitions: i32,
    pub replication: i32,
}

/// The Kafka destination.
pub struct KafkaDestination {
    name: String,
    schema: Schema,
    target: KafkaTarget,
    keys: PartitionKeySource,
    create_topic: Option<TopicCreation>,
    timeout: Duration,
    max_message_bytes: usize,
    /// The topic was seen to exist (or created); cleared when the brokers say it is gone.
    topic_ready: AtomicBool,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer that was fenced
    /// or lost its sequence cannot produce again; librdkafka says to create a new one).
    producer: parking_lot::RwLock<Arc<ReportingProducer>>,
    config: ClientConfig,
    requests: RequestMetrics,
}

impl fmt::Debug for KafkaDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDestination")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("keys", &self.keys)
            .field(
                "create_topic",
                &self
                    .create_topic
                    .as_ref()
                    .map(|c| (c.partitions, c.replication)),
            )
            .field("timeout", &self.timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl KafkaDestination {
    /// The brokers and topic this destination writes to.
    pub fn target(&self) -> &KafkaTarget {
        &self.target
    }
}

impl Destination for KafkaDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_EVENTS_PER_BATCH,
            max_bytes: MAX_BATCH_BYTES,
            max_item_bytes: self.max_message_bytes,
            per_item_overhead: MESSAGE_OVERHEAD_BYTES,
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
