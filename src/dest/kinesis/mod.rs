//! Amazon Kinesis Data Streams destination (`kinesis://STREAM-or-ARN?…`).
//!
//! Owns turning a [`Batch`] into `PutRecords` requests and classifying what Kinesis answered:
//! `config` (options, stream target), `request` (partition keys, records, request-sized
//! runs), `service` (the API calls and the classification of their answers).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | stream name, or a stream ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`, sent as `StreamARN`) | required |
//! | `region`, `access_key_id`, `secret_access_key`, `session_token`, `role_arn`, `external_id` | AWS region and credentials, shared by AWS destinations ([`crate::dest::aws`]) | the ARN's region; the standard AWS chain |
//! | `endpoint` | endpoint override (VPC endpoint, LocalStack, moto) | AWS default |
//! | `partition_key` | `context_key`, `event_id`, `kind`, `key`, `environment`, or a field of the mapped payload (`event.contextKeys.user` or JSON pointer `/event/contextKeys/user`) | `context_key` |
//! | `aggregate` | newline-join small events with the same partition key into one record | `false` |
//! | `timeout` | per-request timeout (humantime) | `30s` |
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, ECS/EC2
//! instance role) via `aws-config`, unless given as options (use `env:` / `file:` values).
//!
//! ## Invariants
//!
//! 1. Every record the engine hands us is either acknowledged by Kinesis (a sequence number in
//!    the response), or reported back in the outcome — never both, never neither. A response
//!    whose entry count does not match the request is treated as "nothing verified delivered".
//! 2. Requests stay within the API limits: ≤ 500 records and ≤ 5 MiB (data + partition keys)
//!    per `PutRecords`, ≤ 1 MiB per record including its key. [`BatchLimits`] declares them so
//!    the engine cuts batches (and dead-letters oversized events); batches that exceed them
//!    anyway are split here, and a single oversized item is a permanent item failure.
//! 3. Partition keys are never one constant: the default is the context key (events spread
//!    over shards and stay ordered per context), falling back to the event id. Keys longer
//!    than Kinesis' 256-character limit are replaced by a stable hash of themselves, so the
//!    same context always lands on the same shard.
//! 4. The SDK's own retries are disabled ([`crate::dest::aws`]): the delivery engine owns
//!    retries, so every throttle is visible to it and to metrics.
//!
//! ## Outcome classification
//!
//! | Kinesis says | outcome |
//! |---|---|
//! | `FailedRecordCount = 0` | delivered |
//! | per-record `ProvisionedThroughputExceededException` | retriable item failure, throttled |
//! | per-record `InternalFailure` (or any other code) | retriable item failure |
//! | request `ProvisionedThroughputExceeded`, `KMSThrottling`, `Throttling`, HTTP 429 | retriable, throttled |
//! | request `InternalFailure`, HTTP 5xx, timeouts, connection errors | retriable |
//! | `ResourceNotFound`, `AccessDenied`, bad credentials or signature, KMS key problems, other 4xx | permanent, naming the stream |
//!
//! With aggregation on, one record carries several events; a failed record fails all of them.
//!
//! `check()` calls `DescribeStreamSummary` (the stream exists and is writable, credentials
//! work). A role allowed only `kinesis:PutRecord(s)` gets `AccessDenied` there; that passes
//! with a warning, since sending would work.

mod config;
mod request;
mod service;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use config::{KinesisOptions, StreamTarget};
pub use request::{plan_records, split_requests, PartitionKeySource, PlannedRecord};
pub use service::{classify_record_results, classify_service_error, RecordResult};

use super::aws::AwsOptions;
use super::failure::RequestMetrics;
use super::kind::{BuildContext, DestinationKind};
use super::options::RequestOptions;
use super::{Batch, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;

/// Most records per `PutRecords` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Most bytes (data + partition keys) per `PutRecords` request: 5 MiB.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Most bytes per record, data + partition key: 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Longest partition key Kinesis accepts (256 Unicode characters; we bound UTF-8 bytes, which
/// is stricter, so the byte accounting in [`BatchLimits::per_item_overhead`] is exact).
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

/// The `kinesis` destination type.
#[derive(Debug, Clone, Copy)]
pub struct KinesisKind;

impl DestinationKind for KinesisKind {
    const SCHEME: &'static str = "kinesis";
    const SUMMARY: &'static str = "Amazon Kinesis Data Streams (PutRecords)";
    const EXAMPLE: &'static str = "kinesis://flag-events?region=us-east-1";
    type Options = (KinesisOptions, RequestOptions, AwsOptions);

    async fn build(
        &self,
        target: &str,
        (options, request, aws): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let stream = StreamTarget::parse(target).map_err(|reason| context.error(reason))?;
        let session = format!("flagstream-{}", context.name);
        let sdk_config = aws
            .sdk_config(&request, stream.arn_region(), &session)
            .await
            .map_err(|reason| context.error(reason))?;
        Ok(Arc::new(KinesisDestination {
            name: context.name.clone(),
            schema: context.schema,
            stream,
            partition_keys: options
                .partition_key
                .unwrap_or(PartitionKeySource::ContextKey),
            aggregate: options.aggregate,
            client: aws_sdk_kinesis::Client::new(&sdk_config),
            requests: RequestMetrics::new(&context.name),
        }))
    }
}

/// The Kinesis destination.
pub struct KinesisDestination {
    name: String,
    schema: Schema,
    stream: StreamTarget,
    partition_keys: PartitionKeySource,
    aggregate: bool,
    client: aws_sdk_kinesis::Client,
    requests: RequestMetrics,
}

impl fmt::Debug for KinesisDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisDestination")
            .field("name", &self.name)
            .field("stream", &self.stream)
            .field("partition_keys", &self.partition_keys)
            .field("aggregate", &self.aggregate)
            .finish_non_exhaustive()
    }
}

impl KinesisDestination {
    /// The stream this destination writes to.
    pub fn stream(&self) -> &StreamTarget {
        &self.stream
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let (records, mut failures) = plan_records(batch, &self.partition_keys, self.aggregate);
        let mut first_failure: Option<Failure> = None;
        // One request after the other, never concurrently: records of one context must reach
        // their shard in batch order, and concurrent requests could overtake each other. After
        // a whole request fails, the rest are not attempted (same cause, and sending them would
        // put later events of a context ahead of earlier ones); they are reported with it.
        for range in split_requests(&records) {
            let request_records = &records[range];
            if let Some(failure) = &first_failure {
                failures.extend(request_records.iter().flat_map(|r| r.fail_items(failure)));
                continue;
            }
            match self.put_records(request_records).await {
                Ok(request_failures) => failures.extend(request_failures),
                Err(failure) => {
                    failures.extend(request_records.iter().flat_map(|r| r.fail_items(&failure)));
                    first_failure = Some(failure);
                }
            }
        }
        SendOutcome::from_item_failures(batch.items.len(), failures, first_failure)
    }
}

impl Destination for KinesisDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kinesis"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_RECORDS_PER_REQUEST,
            max_bytes: MAX_REQUEST_BYTES,
            max_item_bytes: MAX_RECORD_BYTES,
            per_item_overhead: MAX_PARTITION_KEY_BYTES,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(self.check_stream())
    }
}
