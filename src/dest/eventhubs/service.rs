//! The connection to the hub, sending a batch partition by partition, and classifying what
//! the service (or Microsoft's client) answers.
//!
//! A batch is split by partition (the partition its events' keys map to), and each
//! partition's events go out in order in as many Event Hubs batches as the size limit needs,
//! one after the other; partitions are sent concurrently over the one connection.

use std::sync::Arc;
use std::time::Duration;

use azure_core_amqp::error::{AmqpErrorCondition, AmqpErrorKind};
use azure_core_amqp::{AmqpDescribedError, AmqpError};
use azure_messaging_eventhubs::error::ErrorKind;
use azure_messaging_eventhubs::{
    EventDataBatch, EventDataBatchOptions, EventHubsError, ProducerClient, RetryOptions,
};
use futures::future::join_all;

use super::config::EventHubsTarget;
use super::{message, partition, EventHubsDestination, ENVELOPE_OVERHEAD_BYTES};
use crate::dest::{Batch, BatchItem, DestError, Failure, ItemFailure, SendOutcome};

/// An open producer and the hub's partitions (ids in the order the service lists them).
pub(super) struct Connection {
    client: ProducerClient,
    partition_ids: Vec<String>,
}

/// The events of one partition, in batch order: (index in the batch, item, partition key).
type PartitionEvents<'a> = Vec<(usize, &'a BatchItem, String)>;

impl EventHubsDestination {
    pub(super) async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        let groups = self.by_partition(batch, &connection.partition_ids);
        // Partitions concurrently, each in order (one link per partition).
        let sends = groups
            .into_iter()
            .filter(|(_, events)| !events.is_empty())
            .map(|(id, events)| self.send_partition(&connection, id, events, batch));
        let failures: Vec<ItemFailure> = join_all(sends).await.into_iter().flatten().collect();
        if failures.iter().any(ItemFailure::is_retriable) {
            // A dropped connection or detached link: open a fresh one for the next send.
            self.forget(&connection).await;
        }
        self.requests.record_items(batch.items.len(), &failures);
        if let Some(first) = failures.first() {
            tracing::debug!(destination = %self.name, failed = failures.len(), reason = %first.failure.reason, "Event Hubs send");
        }
        SendOutcome::from_item_failures(batch.items.len(), failures, None)
    }

    fn by_partition<'b>(
        &self,
        batch: &'b Batch,
        partition_ids: &'b [String],
    ) -> Vec<(&'b str, PartitionEvents<'b>)> {
        let mut groups: Vec<(&str, PartitionEvents)> = partition_ids
            .iter()
            .map(|id| (id.as_str(), Vec::new()))
            .collect();
        for (index, item) in batch.items.iter().enumerate() {
            let key = message::partition_key(item, &self.settings.partition_key);
            let partition = partition::partition_index(&key, partition_ids.len());
            groups[partition].1.push((index, item, key));
        }
        groups
    }

    /// Send one partition's events in order; returns the events not accepted. After a
    /// retriable failure the rest are not sent (they would overtake the failed ones).
    async fn send_partition(
        &self,
        connection: &Connection,
        partition_id: &str,
        events: PartitionEvents<'_>,
        batch: &Batch,
    ) -> Vec<ItemFailure> {
        let mut failures = Vec::new();
        let mut next = 0;
        while next < events.len() {
            let amqp_batch = match self.create_batch(connection, partition_id).await {
                Ok(amqp_batch) => amqp_batch,
                Err(failure) => {
                    failures.extend(events[next..].iter().map(|(i, ..)| failure.for_item(*i)));
                    break;
                }
            };
            let (filled, too_large) = self.fill(&amqp_batch, &events[next..], batch);
            failures.extend(too_large);
            let sent: Vec<usize> = events[next..next + filled].iter().map(|e| e.0).collect();
            next += filled;
            if amqp_batch.is_empty() {
                continue;
            }
            if let Err(failure) = self.send_one(connection, amqp_batch, partition_id).await {
                failures.extend(sent.iter().map(|index| failure.for_item(*index)));
                if failure.is_retriable() {
                    failures.extend(events[next..].iter().map(|(i, ..)| failure.for_item(*i)));
                    break;
                }
            }
        }
        failures
    }

    /// Add events to `amqp_batch` until one does not fit; returns how many events were
    /// consumed and the failures of those too large for any batch.
    fn fill(
        &self,
        amqp_batch: &EventDataBatch<'_>,
        events: &[(usize, &BatchItem, String)],
        batch: &Batch,
    ) -> (usize, Vec<ItemFailure>) {
        let mut too_large = Vec::new();
        for (consumed, (index, item, key)) in events.iter().enumerate() {
            let event = message::message(item, batch.schema, key);
            match amqp_batch.try_add_amqp_message(event, None) {
                Ok(true) => {}
                Ok(false) if amqp_batch.is_empty() => {
                    too_large.push(self.too_large(item.payload.len()).for_item(*index))
                }
                Ok(false) => return (consumed, too_large),
                Err(error) => too_large.push(
                    Failure::permanent(format!(
                        "{}: cannot encode the event: {error}",
                        self.settings.target
                    ))
                    .for_item(*index),
                ),
            }
        }
        (events.len(), too_large)
    }

    fn too_large(&self, size: usize) -> Failure {
        Failure::permanent(format!(
            "{}: an event of {size} bytes does not fit in one Event Hubs batch (at most {} \
             bytes with its properties: `max_batch_bytes`, or less if the hub says so)",
            self.settings.target,
            self.settings.max_batch_bytes - ENVELOPE_OVERHEAD_BYTES
        ))
    }

    async fn create_batch<'c>(
        &self,
        connection: &'c Connection,
        partition_id: &str,
    ) -> Result<EventDataBatch<'c>, Failure> {
        let options = |max: u64| EventDataBatchOptions {
            max_size_in_bytes: Some(max),
            partition_id: Some(partition_id.to_string()),
            partition_key: None,
        };
        let wanted = u64::try_from(self.settings.max_batch_bytes).unwrap_or(u64::MAX);
        let first = self
            .timed(connection.client.create_batch(Some(options(wanted))))
            .await?;
        match first {
            Ok(amqp_batch) => Ok(amqp_batch),
            // The hub allows less than `max_batch_bytes` (a Standard hub with a Premium
            // setting): use what it allows rather than stalling.
            Err(EventHubsError {
                kind: ErrorKind::InvalidBatchSize { max_allowed, .. },
            }) => self
                .timed(connection.client.create_batch(Some(options(max_allowed))))
                .await?
                .map_err(|error| classify(&error, &self.settings.target)),
            Err(error) => Err(classify(&error, &self.settings.target)),
        }
    }

    async fn send_one(
        &self,
        connection: &Connection,
        amqp_batch: EventDataBatch<'_>,
        partition_id: &str,
    ) -> Result<(), Failure> {
        self.timed(connection.client.send_batch(amqp_batch, None))
            .await?
            .map_err(|error| {
                let failure = classify(&error, &self.settings.target);
                Failure::new(
                    failure.class,
                    format!("{} (partition {partition_id})", failure.reason),
                )
            })
    }

    /// Run `work` within the send timeout (a timeout is retriable).
    async fn timed<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, Failure> {
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .map_err(|_| {
                Failure::retriable(format!(
                    "{}: no answer within {:?}",
                    self.settings.target, self.settings.timeout
                ))
            })
    }

    /// The open connection, opening one if there is none.
    async fn connection(&self) -> Result<Arc<Connection>, Failure> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = Arc::new(self.open().await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn open(&self) -> Result<Connection, Failure> {
        let target = &self.settings.target;
        let mut builder = ProducerClient::builder()
            .with_application_id("flagstream".to_string())
            .with_retry_options(retry_options(self.settings.timeout));
        if let Some(endpoint) = &self.settings.endpoint {
            builder = builder.with_custom_endpoint(endpoint.clone());
        }
        let connection_string = self.settings.connection_string();
        let client = self
            .timed(
                builder.open_with_connection_string(connection_string.expose(), Some(&target.hub)),
            )
            .await?
            .map_err(|error| classify(&error, target))?;
        // Reading the hub's properties authorises on `$cbs` too: a wrong key fails here.
        let properties = self
            .timed(client.get_eventhub_properties())
            .await?
            .map_err(|error| classify(&error, target))?;
        if properties.partition_ids.is_empty() {
            return Err(Failure::retriable(format!(
                "{target}: the hub lists no partitions"
            )));
        }
        let connection = Connection {
            client,
            partition_ids: properties.partition_ids,
        };
        self.open_partition_links(&connection).await?;
        tracing::info!(destination = %self.name, partitions = connection.partition_ids.len(), "{target}: connected");
        Ok(connection)
    }

    /// Authorise and attach every partition's sender link now, one after the other, so the
    /// first send does not pay for it and a bad key or hub fails when connecting.
    async fn open_partition_links(&self, connection: &Connection) -> Result<(), Failure> {
        for partition_id in &connection.partition_ids {
            self.create_batch(connection, partition_id).await?;
        }
        Ok(())
    }

    /// Drop `used` if it is still the current connection (the next send reconnects).
    async fn forget(&self, used: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, used))
        {
            *slot = None;
        }
    }

    pub(super) async fn check_hub(&self) -> Result<(), DestError> {
        self.connection()
            .await
            .map(drop)
            .map_err(|failure| DestError::Check(failure.reason))
    }
}

/// The client's own retries (and reconnects) fit within one `timeout`: the delivery engine
/// owns the retry schedule beyond it.
fn retry_options(timeout: Duration) -> RetryOptions {
    let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    RetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(100),
        max_delay: azure_core::time::Duration::seconds(2),
        max_total_elapsed: azure_core::time::Duration::milliseconds(millis / 2),
        max_retries: 3,
    }
}

/// Classify an error of Microsoft's client for `target`.
pub fn classify(error: &EventHubsError, target: &EventHubsTarget) -> Failure {
    let class = match &error.kind {
        ErrorKind::InvalidBatchSize { .. } => Some(permanent("the batch size is not allowed")),
        ErrorKind::SendRejected(Some(described)) => Some(by_condition(described)),
        ErrorKind::AmqpError(amqp) => classify_amqp(amqp),
        ErrorKind::AzureCore(core) => amqp_errors(core).find_map(classify_amqp),
        _ => None,
    };
    let (class, what) = class.unwrap_or((crate::dest::FailureClass::Retriable, ""));
    let reason = if what.is_empty() {
        format!("{target}: {error}")
    } else {
        format!("{target}: {what} ({error})")
    };
    Failure::new(class, reason)
}

type Classified = (crate::dest::FailureClass, &'static str);

fn permanent(what: &'static str) -> Classified {
    (crate::dest::FailureClass::Permanent, what)
}

/// The first definite classification among `amqp` and the AMQP errors it wraps.
fn classify_amqp(amqp: &AmqpError) -> Option<Classified> {
    use azure_core::http::StatusCode;
    let own = match amqp.kind() {
        AmqpErrorKind::ManagementStatusCode(code, _) => match *code {
            StatusCode::Unauthorized | StatusCode::Forbidden => Some(unauthorised()),
            StatusCode::NotFound => Some(not_found()),
            StatusCode::TooManyRequests | StatusCode::ServiceUnavailable => Some(busy()),
            _ => None,
        },
        AmqpErrorKind::AmqpDescribedError(described) => Some(by_condition(described)),
        _ => None,
    };
    own.or_else(|| {
        let source = std::error::Error::source(amqp)?;
        amqp_errors(source).find_map(classify_amqp)
    })
}

fn by_condition(described: &AmqpDescribedError) -> Classified {
    use AmqpErrorCondition as Condition;
    match described.condition {
        Condition::UnauthorizedAccess => unauthorised(),
        Condition::NotFound | Condition::EntityDisabledError | Condition::ResourceDeleted => {
            not_found()
        }
        Condition::LinkPayloadSizeExceeded => {
            permanent("the batch is larger than the hub accepts (lower `max_batch_bytes`)")
        }
        Condition::ArgumentError | Condition::ArgumentOutOfRangeError | Condition::DecodeError => {
            permanent("the hub rejected the batch")
        }
        Condition::ServerBusyError | Condition::ResourceLimitExceeded => busy(),
        _ => (crate::dest::FailureClass::Retriable, ""),
    }
}

fn unauthorised() -> Classified {
    permanent(
        "authorisation failed: wrong shared access key or policy, or the policy lacks the Send right",
    )
}

fn not_found() -> Classified {
    permanent("the event hub does not exist or is disabled")
}

fn busy() -> Classified {
    (
        crate::dest::FailureClass::Throttled,
        "the namespace is busy (throughput units exhausted)",
    )
}

/// `error` and its sources that are AMQP errors.
fn amqp_errors<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e AmqpError> {
    std::iter::successors(Some(error), |error| error.source())
        .take(16)
        .filter_map(|error| error.downcast_ref::<AmqpError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::FailureClass;
    use azure_core::http::StatusCode;
    use azure_core_amqp::AmqpOrderedMap;

    fn target() -> EventHubsTarget {
        EventHubsTarget::parse("flagstream-ns/flag-events").unwrap()
    }

    fn described(condition: AmqpErrorCondition) -> EventHubsError {
        EventHubsError::from(AmqpError::from(AmqpErrorKind::AmqpDescribedError(
            AmqpDescribedError::new(condition, Some("said".into()), AmqpOrderedMap::new()),
        )))
    }

    #[test]
    fn a_refused_token_is_a_named_permanent_failure() {
        let refused = EventHubsError::from(AmqpError::from(AmqpErrorKind::ManagementStatusCode(
            StatusCode::Unauthorized,
            Some("bad".into()),
        )));
        let failure = classify(&refused, &target());
        assert_eq!(failure.class, FailureClass::Permanent);
        assert!(
            failure.reason.contains("authorisation failed"),
            "{}",
            failure.reason
        );
        assert!(failure.reason.contains("flag-events"), "{}", failure.reason);
        let failure = classify(
            &described(AmqpErrorCondition::UnauthorizedAccess),
            &target(),
        );
        assert_eq!(failure.class, FailureClass::Permanent);
    }

    #[test]
    fn conditions_map_to_classes() {
        for (condition, class) in [
            (AmqpErrorCondition::NotFound, FailureClass::Permanent),
            (
                AmqpErrorCondition::EntityDisabledError,
                FailureClass::Permanent,
            ),
            (
                AmqpErrorCondition::LinkPayloadSizeExceeded,
                FailureClass::Permanent,
            ),
            (AmqpErrorCondition::ServerBusyError, FailureClass::Throttled),
            (
                AmqpErrorCondition::ResourceLimitExceeded,
                FailureClass::Throttled,
            ),
            (
                AmqpErrorCondition::LinkDetachForced,
                FailureClass::Retriable,
            ),
            (
                AmqpErrorCondition::ConnectionForced,
                FailureClass::Retriable,
            ),
            (AmqpErrorCondition::InternalError, FailureClass::Retriable),
        ] {
            assert_eq!(
                classify(&described(condition.clone()), &target()).class,
                class,
                "{condition:?}"
            );
        }
    }

    #[test]
    fn transport_failures_are_retriable() {
        let dropped = EventHubsError::from(AmqpError::from(AmqpErrorKind::ConnectionDropped(
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        )));
        assert_eq!(classify(&dropped, &target()).class, FailureClass::Retriable);
        let not_found = EventHubsError::from(AmqpError::from(AmqpErrorKind::ManagementStatusCode(
            StatusCode::NotFound,
            None,
        )));
        let failure = classify(&not_found, &target());
        assert_eq!(failure.class, FailureClass::Permanent);
        assert!(
            failure.reason.contains("does not exist"),
            "{}",
            failure.reason
        );
    }
}
