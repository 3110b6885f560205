//! Producing a batch and classifying librdkafka's answers.
//!
//! Every message of a batch is enqueued on the idempotent producer in batch order, then the
//! send waits once for every per-message delivery report ([`super::reports`]) and folds them
//! into one [`SendOutcome`]. Enqueueing never blocks (librdkafka answers `QUEUE_FULL`
//! instead), and delivery reports arrive on the producer's own polling thread, so no tokio
//! worker waits on librdkafka. Blocking calls
//! (metadata) run on tokio's blocking pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use super::message;
use super::reports::{Reported, ReportingContext, ReportingProducer, SendReports};
use super::{KafkaDestination, KafkaTarget};
use crate::dest::{Batch, DestError, Failure, FailureClass, ItemFailure, SendOutcome};

impl KafkaDestination {
    pub(super) async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        if let Err(failure) = self.ensure_topic().await {
            return SendOutcome::Failed(failure);
        }
        let producer = Arc::clone(&*self.producer.read());
        let reports = SendReports::new();
        let mut failures = self.enqueue(&producer, batch, &reports);
        let mut producer_broken = false;
        for (index, reported) in reports.finished().await {
            let size = batch.items[index].payload.len();
            let failure = match reported {
                Reported::Failed(error) => {
                    producer_broken |= breaks_the_producer(&error);
                    if is_missing_topic(&error) {
                        // Deleted since it was checked: check (or create) it again next time.
                        self.topic_ready.store(false, Ordering::Relaxed);
                    }
                    classify(&error, &self.target, size)
                }
                Reported::Abandoned => Failure::retriable(format!(
                    "{}: the producer shut down before the message was delivered",
                    self.target
                )),
            };
            failures.push(failure.for_item(index));
        }
        self.after_send(batch.items.len(), &failures);
        self.replace_if_broken(producer, producer_broken);
        SendOutcome::from_item_failures(batch.items.len(), failures, None)
    }

    /// Enqueue every message of `batch` in order, tracked by `reports`; the items that could
    /// not be enqueued, as failures.
    fn enqueue(
        &self,
        producer: &ReportingProducer,
        batch: &Batch,
        reports: &Arc<SendReports>,
    ) -> Vec<ItemFailure> {
        let mut failures = Vec::new();
        // Once enqueueing fails retriably (queue full), later messages are not enqueued: the
        // resent ones would land behind them and reorder a context's events.
        let mut stopped: Option<Failure> = None;
        for (index, item) in batch.items.iter().enumerate() {
            if let Some(failure) = &stopped {
                failures.push(failure.for_item(index));
                continue;
            }
            let key = message::key(item, &self.keys);
            let record = BaseRecord::with_opaque_to(&self.target.topic, reports.track(index))
                .key(key.as_ref())
                .payload(&item.payload[..])
                .headers(message::headers(item, batch));
            if let Err((error, mut record)) = producer.send(record) {
                record.delivery_opaque.dismiss();
                let failure = classify(&error, &self.target, item.payload.len());
                if failure.is_retriable() {
                    stopped = Some(failure.clone());
                }
                failures.push(failure.for_item(index));
            }
        }
        failures
    }

    fn after_send(&self, items: usize, failures: &[ItemFailure]) {
        self.requests.record_items(items, failures);
        if let Some(first) = failures.first() {
            tracing::debug!(destination = %self.name, failed = failures.len(), reason = %first.failure.reason, "Kafka delivery reports");
        }
    }

    /// Replace `used` if librdkafka declared it fatally failed, or the brokers refused its
    /// producer id or epoch (`broken`), unless another send replaced it already. The old
    /// producer is dropped on the blocking pool: its drop purges and joins threads.
    fn replace_if_broken(&self, used: Arc<ReportingProducer>, broken: bool) {
        let fatal = used.client().fatal_error();
        if fatal.is_none() && !broken {
            return;
        }
        let (code, reason) = fatal.unwrap_or((RDKafkaErrorCode::ProducerFenced, String::new()));
        let mut current = self.producer.write();
        if current.client().native_ptr() != used.client().native_ptr() {
            return;
        }
        tracing::warn!(destination = %self.name, ?code, %reason, "{}: the producer failed fatally; creating a new one", self.target);
        match self.config.create_with_context(ReportingContext) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *current, Arc::new(fresh));
                drop(current);
                tokio::task::spawn_blocking(move || drop((old, used)));
            }
            Err(error) => {
                tracing::error!(destination = %self.name, %error, "cannot create a new Kafka producer");
            }
        }
    }

    /// Make sure the topic exists (creating it when `create_topic=true`) before the first
    /// send, and again after the broker said it does not.
    async fn ensure_topic(&self) -> Result<(), Failure> {
        if self.topic_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(creation) = &self.create_topic {
            self.create_topic(creation).await?;
        }
        self.describe_topic().await?;
        self.topic_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn create_topic(&self, creation: &super::TopicCreation) -> Result<(), Failure> {
        let topic = NewTopic::new(
            &self.target.topic,
            creation.partitions,
            TopicReplication::Fixed(creation.replication),
        );
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = creation
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(|error| classify(&error, &self.target, 0))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(destination = %self.name, "{}: created", self.target),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Failure::permanent(format!(
                        "{}: cannot create it: {code}",
                        self.target
                    )))
                }
            }
        }
        Ok(())
    }

    /// Ask the brokers for the topic's metadata (never creating it).
    async fn describe_topic(&self) -> Result<(), Failure> {
        let producer = Arc::clone(&*self.producer.read());
        let topic = self.target.topic.clone();
        let timeout = self.timeout;
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), timeout)
        })
        .await
        .map_err(|err| Failure::retriable(format!("{}: metadata task: {err}", self.target)))?
        .map_err(|error| classify(&error, &self.target, 0))?;
        let Some(entry) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.target.topic)
        else {
            return Err(missing_topic(&self.target));
        };
        match entry.error() {
            None if !entry.partitions().is_empty() => Ok(()),
            None | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                Err(missing_topic(&self.target))
            }
            Some(code) => Err(classify_code(
                RDKafkaErrorCode::from(code),
                &self.target,
                &format!("{code:?}"),
                0,
            )),
        }
    }

    pub(super) async fn check_topic(&self) -> Result<(), DestError> {
        self.topic_ready.store(false, Ordering::Relaxed);
        self.ensure_topic()
            .await
            .map_err(|failure| DestError::Check(failure.reason))
    }
}

/// Errors after which an idempotent producer's id or epoch is unusable: a new producer (new
/// id) is the way out (some brokers fence the epoch bump librdkafka tries after timeouts).
fn breaks_the_producer(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::Fatal
                | Code::ProducerFenced
                | Code::InvalidProducerEpoch
                | Code::InvalidProducerIdMapping
                | Code::UnknownProducerId
                | Code::OutOfOrderSequenceNumber
        )
    )
}

fn is_missing_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

fn missing_topic(target: &KafkaTarget) -> Failure {
    Failure::permanent(format!(
        "{target} does not exist (flagstream does not auto-create topics: create it, or set \
         create_topic=true)"
    ))
}

/// Classify a librdkafka error for one message of `size` bytes (or a whole request, 0).
pub fn classify(error: &KafkaError, target: &KafkaTarget, size: usize) -> Failure {
    match error.rdkafka_error_code() {
        Some(code) => classify_code(code, target, &error.to_string(), size),
        None => Failure::retriable(format!("{target}: {error}")),
    }
}

/// Classify librdkafka error `code`; `detail` is librdkafka's text for it.
pub fn classify_code(
    code: RDKafkaErrorCode,
    target: &KafkaTarget,
    detail: &str,
    size: usize,
) -> Failure {
    use RDKafkaErrorCode as Code;
    let permanent = |what: &str| Failure::permanent(format!("{target}: {what} ({detail})"));
    match code {
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            permanent(&format!(
                "MSG_SIZE_TOO_LARGE: a message of {size} bytes is larger than the producer's \
                 `max_message_bytes` or the topic's max.message.bytes allows"
            ))
        }
        Code::UnknownTopicOrPartition | Code::UnknownTopic => missing_topic(target),
        Code::TopicAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed => {
            permanent("not authorised to write (check the principal's ACLs)")
        }
        Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState => permanent("authentication failed"),
        Code::InvalidTopic => permanent("the broker refuses the topic name"),
        Code::InvalidRecord
        | Code::InvalidMessage
        | Code::UnsupportedCompressionType
        | Code::PolicyViolation
        | Code::InvalidRequiredAcks
        | Code::InvalidTimestamp => permanent("the broker rejected the message"),
        Code::QueueFull => {
            Failure::throttled(format!("{target}: the producer queue is full ({detail})"))
        }
        _ => Failure::new(FailureClass::Retriable, format!("{target}: {detail}")),
    }
}
