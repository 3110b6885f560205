//! Amazon Kinesis Data Streams destination (`kinesis://STREAM-or-ARN?…`).
//!
//! Owns turning a [`Batch`] into `PutRecords` requests and classifying what Kinesis answered.
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | stream name, or a stream ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`, sent as `StreamARN`) | required |
//! | `region` | AWS region | the ARN's region, else the AWS chain (`AWS_REGION`, profile) |
//! | `endpoint` | endpoint override (VPC endpoint, LocalStack, moto) | AWS default |
//! | `role_arn`, `external_id` | role assumed through STS on top of the standard credential chain (LaunchDarkly-style cross-account delivery) | none |
//! | `partition_key` | `context_key`, `event_id`, `kind`, `key`, `environment`, or a field of the mapped payload (`event.contextKeys.user` or JSON pointer `/event/contextKeys/user`) | `context_key` |
//! | `aggregate` | newline-join small events with the same partition key into one record | `false` |
//! | `timeout` | per-request timeout (humantime) | `30s` |
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, ECS/EC2
//! instance role) via `aws-config`.
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
//! 4. The SDK's own retries are disabled: the delivery engine owns retries (its backoff and
//!    attempt counts survive restarts), so every throttle is visible to it and to metrics.
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

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use futures::future::BoxFuture;

use super::DestinationSpec;
use super::{Batch, BatchItem, BatchLimits, DestError, Destination, ItemFailure, SendOutcome};
use crate::event::Schema;
use crate::metrics;

/// Most records per `PutRecords` request.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// Most bytes (data + partition keys) per `PutRecords` request: 5 MiB.
pub const MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Most bytes per record, data + partition key: 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Longest partition key Kinesis accepts (256 Unicode characters; we bound UTF-8 bytes, which
/// is stricter, so the byte accounting in [`BatchLimits::per_item_overhead`] is exact).
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where records go: Kinesis accepts either a name (resolved in the client's region and
/// account) or a full ARN, which AWS recommends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTarget {
    Name(String),
    Arn(String),
}

impl StreamTarget {
    fn parse(target: &str) -> Result<Self, String> {
        if target.is_empty() {
            return Err(
                "missing stream name: use kinesis://STREAM or kinesis://arn:aws:kinesis:…".into(),
            );
        }
        if target.starts_with("arn:") {
            // arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME
            let parts: Vec<&str> = target.splitn(6, ':').collect();
            let valid = parts.len() == 6
                && parts[2] == "kinesis"
                && !parts[3].is_empty()
                && parts[5]
                    .strip_prefix("stream/")
                    .is_some_and(|n| !n.is_empty());
            if !valid {
                return Err(format!(
                    "`{target}` is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
                ));
            }
            return Ok(StreamTarget::Arn(target.to_string()));
        }
        let valid_name = target.len() <= 128
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_name {
            return Err(format!(
                "`{target}` is not a valid stream name (1-128 characters of a-z A-Z 0-9 _ . -)"
            ));
        }
        Ok(StreamTarget::Name(target.to_string()))
    }

    /// The region embedded in an ARN.
    fn arn_region(&self) -> Option<&str> {
        match self {
            StreamTarget::Arn(arn) => arn.split(':').nth(3),
            StreamTarget::Name(_) => None,
        }
    }
}

impl fmt::Display for StreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamTarget::Name(name) => write!(f, "Kinesis stream `{name}`"),
            StreamTarget::Arn(arn) => write!(f, "Kinesis stream `{arn}`"),
        }
    }
}

/// Which value becomes a record's partition key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKeySource {
    /// The event's context key (user key first); the default.
    ContextKey,
    /// The stable event id (maximal spread, no per-context ordering).
    EventId,
    /// The event kind.
    Kind,
    /// The flag or metric key.
    Key,
    /// The environment name.
    Environment,
    /// A field of the mapped payload, as a JSON pointer (`/event/contextKeys/user`).
    PayloadField(String),
}

impl std::str::FromStr for PartitionKeySource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "context_key" => PartitionKeySource::ContextKey,
            "event_id" => PartitionKeySource::EventId,
            "kind" => PartitionKeySource::Kind,
            "key" | "flag_key" => PartitionKeySource::Key,
            "environment" => PartitionKeySource::Environment,
            "" => return Err("empty partition key field".into()),
            pointer if pointer.starts_with('/') => PartitionKeySource::PayloadField(pointer.into()),
            dotted => {
                if dotted.split('.').any(str::is_empty) {
                    return Err(format!("`{dotted}` is not a dotted field path"));
                }
                let escaped: Vec<String> = dotted
                    .split('.')
                    .map(|segment| segment.replace('~', "~0").replace('/', "~1"))
                    .collect();
                PartitionKeySource::PayloadField(format!("/{}", escaped.join("/")))
            }
        })
    }
}

impl PartitionKeySource {
    /// The partition key of one item. Missing values fall back to the context key, then the
    /// event id, so one absent field never funnels every event onto one shard.
    pub fn key_for(&self, item: &BatchItem) -> String {
        let chosen: Option<String> = match self {
            PartitionKeySource::ContextKey => item.context_key.clone(),
            PartitionKeySource::EventId => Some(item.event_id.clone()),
            PartitionKeySource::Kind => Some(item.kind.clone()),
            PartitionKeySource::Key => item.key.clone(),
            PartitionKeySource::Environment => Some(item.environment.clone()),
            PartitionKeySource::PayloadField(pointer) => payload_field(&item.payload, pointer),
        };
        let key = chosen
            .filter(|key| !key.is_empty())
            .or_else(|| item.context_key.clone().filter(|key| !key.is_empty()))
            .unwrap_or_else(|| item.event_id.clone());
        bound_partition_key(key)
    }
}

fn payload_field(payload: &[u8], pointer: &str) -> Option<String> {
    let document: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match document.pointer(pointer)? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Keep keys within Kinesis' limit deterministically (the same long key always maps to the
/// same short one, so per-context ordering survives); an empty key cannot happen because the
/// event id is the last fallback, but is guarded anyway.
fn bound_partition_key(key: String) -> String {
    if key.is_empty() {
        return "-".to_string();
    }
    if key.len() <= MAX_PARTITION_KEY_BYTES {
        return key;
    }
    format!("xxh3-{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
}

/// One Kinesis record to send and the batch items it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
    /// Indexes into [`Batch::items`] (one, or several when aggregating).
    pub items: Vec<usize>,
}

impl PlannedRecord {
    /// Bytes this record counts against the request and record limits.
    pub fn billed_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Turn a batch into records: oversized items become permanent failures, the rest one record
/// each, or (aggregating) newline-joined per partition key up to the record limit, keeping the
/// batch order within each key.
pub fn plan_records(
    batch: &Batch,
    keys: &PartitionKeySource,
    aggregate: bool,
) -> (Vec<PlannedRecord>, Vec<ItemFailure>) {
    let mut records: Vec<PlannedRecord> = Vec::with_capacity(batch.items.len());
    let mut rejected = Vec::new();
    // partition key -> index of the record currently being filled for it
    let mut open: HashMap<String, usize> = HashMap::new();
    for (index, item) in batch.items.iter().enumerate() {
        let partition_key = keys.key_for(item);
        let size = item.payload.len() + partition_key.len();
        if size > MAX_RECORD_BYTES {
            rejected.push(ItemFailure {
                index,
                retriable: false,
                reason: format!(
                    "event is {size} bytes with its partition key; Kinesis accepts at most \
                     {MAX_RECORD_BYTES} bytes per record"
                ),
            });
            continue;
        }
        if aggregate {
            if let Some(&open_index) = open.get(&partition_key) {
                let record = &mut records[open_index];
                if record.billed_bytes() + 1 + item.payload.len() <= MAX_RECORD_BYTES {
                    record.data.push(b'\n');
                    record.data.extend_from_slice(&item.payload);
                    record.items.push(index);
                    continue;
                }
            }
            open.insert(partition_key.clone(), records.len());
        }
        records.push(PlannedRecord {
            partition_key,
            data: item.payload.to_vec(),
            items: vec![index],
        });
    }
    (records, rejected)
}

/// Split records into request-sized runs (≤ 500 records, ≤ 5 MiB with keys), in order.
pub fn split_requests(records: &[PlannedRecord]) -> Vec<Range<usize>> {
    let mut requests = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        let size = record.billed_bytes();
        if index > start
            && (index - start == MAX_RECORDS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES)
        {
            requests.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        requests.push(start..records.len());
    }
    requests
}

/// One per-record result of a `PutRecords` response: an error code, or success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordResult<'a> {
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// What one request's response means for its records' items.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestVerdict {
    pub failures: Vec<ItemFailure>,
    pub throttled: bool,
}

/// Classify the per-record results of a `PutRecords` response for `records` (the request's
/// records, in request order). Every failed record fails all the items it carries.
pub fn classify_record_results(
    records: &[PlannedRecord],
    results: &[RecordResult<'_>],
    stream: &StreamTarget,
) -> RequestVerdict {
    let mut verdict = RequestVerdict::default();
    if results.len() != records.len() {
        let reason = format!(
            "{stream}: PutRecords answered {} entries for {} records; treating the request as not delivered",
            results.len(),
            records.len()
        );
        for record in records {
            fail_record(&mut verdict, record, true, &reason);
        }
        return verdict;
    }
    for (record, result) in records.iter().zip(results) {
        let Some(code) = result.error_code else {
            continue;
        };
        let throttled = code == "ProvisionedThroughputExceededException";
        verdict.throttled |= throttled;
        let reason = format!(
            "{stream}: record rejected: {code}: {}",
            result.error_message.unwrap_or("no message")
        );
        // Kinesis documents two per-record codes, both transient; unknown codes are treated
        // the same way, so the engine's retry schedule (then dead letters) bounds them.
        fail_record(&mut verdict, record, true, &reason);
    }
    verdict
}

fn fail_record(
    verdict: &mut RequestVerdict,
    record: &PlannedRecord,
    retriable: bool,
    reason: &str,
) {
    verdict
        .failures
        .extend(record.items.iter().map(|&index| ItemFailure {
            index,
            retriable,
            reason: reason.to_string(),
        }));
}

/// A whole request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailure {
    pub retriable: bool,
    pub throttled: bool,
    pub reason: String,
}

/// Classify a service error response by its AWS error code and HTTP status.
pub fn classify_service_error(
    code: Option<&str>,
    message: Option<&str>,
    http_status: u16,
    stream: &StreamTarget,
) -> RequestFailure {
    let code_text = code.unwrap_or("unknown error");
    let detail = message.unwrap_or("no message");
    let failure = |retriable, throttled, what: &str| RequestFailure {
        retriable,
        throttled,
        reason: format!("{stream}: {what} ({code_text}, HTTP {http_status}): {detail}"),
    };
    match code.unwrap_or("") {
        "ProvisionedThroughputExceededException"
        | "KMSThrottlingException"
        | "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "RequestLimitExceeded" => failure(true, true, "throttled"),
        "InternalFailure"
        | "InternalFailureException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => failure(true, false, "service error"),
        // Temporary credentials (assumed role, web identity) expire; the provider refreshes.
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
            failure(true, false, "credentials expired")
        }
        "ResourceNotFoundException" => failure(false, false, "stream not found"),
        "AccessDeniedException" | "AccessDenied" => failure(false, false, "access denied"),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => failure(false, false, "bad credentials"),
        kms if kms.starts_with("KMS") => failure(false, false, "KMS key problem"),
        _ => match http_status {
            429 => failure(true, true, "throttled"),
            500..=599 => failure(true, false, "service error"),
            400..=499 => failure(false, false, "request rejected"),
            _ => failure(true, false, "unexpected response"),
        },
    }
}

/// Classify any SDK error of a `PutRecords` (or `DescribeStreamSummary`) call.
fn classify_sdk_error<E>(
    error: &SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    stream: &StreamTarget,
) -> RequestFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(credentials) = find_credentials_error(error) {
        return classify_credentials_error(credentials, stream);
    }
    match error {
        SdkError::ServiceError(service) => classify_service_error(
            service.err().code(),
            service.err().message(),
            service.raw().status().as_u16(),
            stream,
        ),
        SdkError::TimeoutError(_) => RequestFailure {
            retriable: true,
            throttled: false,
            reason: format!("{stream}: request timed out"),
        },
        SdkError::DispatchFailure(_) => RequestFailure {
            retriable: true,
            throttled: false,
            reason: format!("{stream}: could not reach Kinesis: {}", error_chain(error)),
        },
        SdkError::ResponseError(_) => RequestFailure {
            retriable: true,
            throttled: false,
            reason: format!("{stream}: unreadable response: {}", error_chain(error)),
        },
        _ => RequestFailure {
            retriable: false,
            throttled: false,
            reason: format!(
                "{stream}: request could not be built: {}",
                error_chain(error)
            ),
        },
    }
}

fn find_credentials_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e CredentialsError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(credentials) = err.downcast_ref::<CredentialsError>() {
            return Some(credentials);
        }
        current = err.source();
    }
    None
}

fn classify_credentials_error(error: &CredentialsError, stream: &StreamTarget) -> RequestFailure {
    let chain = error_chain(error);
    let retriable = match error {
        CredentialsError::ProviderTimedOut(_) => true,
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            false
        }
        // STS and instance-metadata failures: denied is permanent, unreachable is not.
        _ => ![
            "AccessDenied",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "not authorized",
        ]
        .iter()
        .any(|marker| chain.contains(marker)),
    };
    RequestFailure {
        retriable,
        throttled: false,
        reason: format!("{stream}: AWS credentials: {chain}"),
    }
}

/// `error: cause: cause` — SDK errors hide the useful part in their sources.
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

/// The Kinesis destination.
pub struct KinesisDestination {
    name: String,
    schema: Schema,
    stream: StreamTarget,
    partition_keys: PartitionKeySource,
    aggregate: bool,
    client: aws_sdk_kinesis::Client,
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
    /// Build from a `kinesis://` spec, consuming this destination's options (the caller
    /// checks for leftovers with [`DestinationSpec::finish`]). Loads the AWS configuration but
    /// does not contact Kinesis; [`Destination::check`] does.
    pub async fn from_spec(spec: &mut DestinationSpec, name: &str) -> Result<Self, DestError> {
        let stream = StreamTarget::parse(&spec.target).map_err(|reason| spec.error(reason))?;
        let region = spec.take("region");
        let endpoint = spec.take("endpoint");
        let role_arn = spec.take("role_arn");
        let external_id = spec.take("external_id");
        let partition_keys = spec
            .take_parsed::<PartitionKeySource>("partition_key")?
            .unwrap_or(PartitionKeySource::ContextKey);
        let aggregate = spec.take_parsed::<bool>("aggregate")?.unwrap_or(false);
        let timeout = match spec.take("timeout") {
            None => DEFAULT_TIMEOUT,
            Some(text) => humantime::parse_duration(&text).map_err(|err| {
                spec.error(format!("option `timeout`: invalid value `{text}`: {err}"))
            })?,
        };
        if external_id.is_some() && role_arn.is_none() {
            return Err(spec.error("option `external_id` needs `role_arn`"));
        }
        if let Some(endpoint) = &endpoint {
            url::Url::parse(endpoint).map_err(|err| {
                spec.error(format!(
                    "option `endpoint`: invalid URL `{endpoint}`: {err}"
                ))
            })?;
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(region) = region
            .clone()
            .or_else(|| stream.arn_region().map(str::to_string))
        {
            loader = loader.region(Region::new(region));
        }
        if let Some(endpoint) = &endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(
                spec.error("no AWS region: add `?region=…`, use a stream ARN, or set AWS_REGION")
            );
        }
        let mut config = aws_sdk_kinesis::config::Builder::from(&sdk_config);
        if let Some(role_arn) = role_arn {
            let mut provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
                .session_name(format!("flagstream-{name}"))
                .configure(&sdk_config);
            if let Some(external_id) = external_id {
                provider = provider.external_id(external_id);
            }
            config = config.credentials_provider(provider.build().await);
        }
        Ok(KinesisDestination {
            name: name.to_string(),
            schema: Schema::default(),
            stream,
            partition_keys,
            aggregate,
            client: aws_sdk_kinesis::Client::from_conf(config.build()),
        })
    }

    /// Set the schema the engine maps events to (the engine consumes the `schema` option).
    pub fn with_schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    /// The stream this destination writes to.
    pub fn stream(&self) -> &StreamTarget {
        &self.stream
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let (records, mut failures) = plan_records(batch, &self.partition_keys, self.aggregate);
        let mut throttled = false;
        let mut first_failure: Option<RequestFailure> = None;
        // One request after the other, never concurrently: records of one context must reach
        // their shard in batch order, and concurrent requests could overtake each other. After
        // a whole request fails, the rest are not attempted (same cause, and sending them would
        // put later events of a context ahead of earlier ones); they are reported with it.
        for range in split_requests(&records) {
            let request_records = &records[range];
            if let Some(failure) = &first_failure {
                for record in request_records {
                    fail_record_with(&mut failures, record, failure);
                }
                continue;
            }
            match self.put_records(request_records).await {
                Ok(verdict) => {
                    throttled |= verdict.throttled;
                    failures.extend(verdict.failures);
                }
                Err(failure) => {
                    throttled |= failure.throttled;
                    for record in request_records {
                        fail_record_with(&mut failures, record, &failure);
                    }
                    first_failure = Some(failure);
                }
            }
        }
        SendOutcome::from_item_failures(
            batch.items.len(),
            failures,
            throttled,
            first_failure.map(|failure| failure.reason),
        )
    }

    /// One `PutRecords` call; `Ok` carries the per-record verdict.
    async fn put_records(
        &self,
        records: &[PlannedRecord],
    ) -> Result<RequestVerdict, RequestFailure> {
        let entries = records
            .iter()
            .map(|record| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data.clone()))
                    .partition_key(record.partition_key.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| RequestFailure {
                retriable: false,
                throttled: false,
                reason: format!("{}: could not build records: {err}", self.stream),
            })?;
        let mut request = self.client.put_records().set_records(Some(entries));
        request = match &self.stream {
            StreamTarget::Name(name) => request.stream_name(name),
            StreamTarget::Arn(arn) => request.stream_arn(arn),
        };
        let result = request.send().await;
        let destination = self.name.clone();
        match result {
            Ok(output) => {
                let verdict = verdict_from_output(&output, records, &self.stream);
                let outcome = if verdict.failures.is_empty() {
                    "ok"
                } else {
                    "partial"
                };
                ::metrics::counter!(metrics::DEST_REQUESTS_TOTAL, "destination" => destination.clone(), "outcome" => outcome).increment(1);
                if verdict.throttled {
                    ::metrics::counter!(metrics::DEST_THROTTLED_REQUESTS_TOTAL, "destination" => destination).increment(1);
                }
                Ok(verdict)
            }
            Err(error) => {
                let failure = classify_sdk_error(&error, &self.stream);
                let outcome = if failure.throttled {
                    "throttled"
                } else {
                    "error"
                };
                ::metrics::counter!(metrics::DEST_REQUESTS_TOTAL, "destination" => destination.clone(), "outcome" => outcome).increment(1);
                if failure.throttled {
                    ::metrics::counter!(metrics::DEST_THROTTLED_REQUESTS_TOTAL, "destination" => destination).increment(1);
                }
                tracing::debug!(destination = %self.name, reason = %failure.reason, "PutRecords failed");
                Err(failure)
            }
        }
    }

    async fn check_stream(&self) -> Result<(), DestError> {
        let mut request = self.client.describe_stream_summary();
        request = match &self.stream {
            StreamTarget::Name(name) => request.stream_name(name),
            StreamTarget::Arn(arn) => request.stream_arn(arn),
        };
        let output = match request.send().await {
            Ok(output) => output,
            // A least-privilege role (LaunchDarkly's cross-account role grants only
            // kinesis:PutRecord(s)) may not describe the stream; that is not a reason to
            // refuse to start. Credentials did work: AWS authenticated the caller.
            Err(error)
                if error.as_service_error().and_then(|e| e.code())
                    == Some("AccessDeniedException") =>
            {
                tracing::warn!(
                    destination = %self.name,
                    "{}: not allowed to DescribeStreamSummary; the stream's existence and write \
                     access are not verified until the first PutRecords",
                    self.stream
                );
                return Ok(());
            }
            Err(error) => {
                return Err(DestError::Check(
                    classify_sdk_error(&error, &self.stream).reason,
                ))
            }
        };
        let status = output
            .stream_description_summary()
            .map(|summary| summary.stream_status().clone());
        match status {
            Some(StreamStatus::Active) | Some(StreamStatus::Updating) => Ok(()),
            Some(other) => Err(DestError::Check(format!(
                "{} is {} (not writable yet)",
                self.stream,
                other.as_str()
            ))),
            None => Err(DestError::Check(format!(
                "{}: DescribeStreamSummary returned no summary",
                self.stream
            ))),
        }
    }
}

fn verdict_from_output(
    output: &PutRecordsOutput,
    records: &[PlannedRecord],
    stream: &StreamTarget,
) -> RequestVerdict {
    let results: Vec<RecordResult<'_>> = output
        .records()
        .iter()
        .map(|entry| RecordResult {
            error_code: entry.error_code(),
            error_message: entry.error_message(),
        })
        .collect();
    let verdict = classify_record_results(records, &results, stream);
    // FailedRecordCount is redundant with the entries; if they disagree, trust neither and
    // report everything not yet failed as retriable rather than claim delivery.
    let counted = output.failed_record_count().unwrap_or(0).max(0) as usize;
    let failed_records = results.iter().filter(|r| r.error_code.is_some()).count();
    if results.len() == records.len() && counted != failed_records {
        let reason = format!(
            "{stream}: FailedRecordCount {counted} disagrees with {failed_records} failed entries; \
             treating the request as not delivered"
        );
        let mut all = RequestVerdict {
            failures: Vec::new(),
            throttled: verdict.throttled,
        };
        for record in records {
            fail_record(&mut all, record, true, &reason);
        }
        return all;
    }
    verdict
}

fn fail_record_with(
    failures: &mut Vec<ItemFailure>,
    record: &PlannedRecord,
    failure: &RequestFailure,
) {
    failures.extend(record.items.iter().map(|&index| ItemFailure {
        index,
        retriable: failure.retriable,
        reason: failure.reason.clone(),
    }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn item(index: usize, context: Option<&str>, payload: &str) -> BatchItem {
        BatchItem {
            event_id: format!("evt-{index}"),
            payload: Bytes::from(payload.to_string()),
            kind: "feature".into(),
            key: Some("flag-a".into()),
            context_key: context.map(str::to_string),
            environment: "production".into(),
            received_at_ms: 1_700_000_000_000,
        }
    }

    fn batch(items: Vec<BatchItem>) -> Batch {
        Batch {
            id: "b-1".into(),
            schema: Schema::default(),
            items,
        }
    }

    fn stream() -> StreamTarget {
        StreamTarget::Name("flag-events".into())
    }

    /// A real `PutRecords` response body (shape from the AWS API reference example, values
    /// ours): 5 records, 3 failed with both documented error codes.
    const RECORDED_PARTIAL_RESPONSE: &str = r#"{
        "FailedRecordCount": 3,
        "Records": [
            {"SequenceNumber": "49543463076548007577105092703039560359975228518395012686", "ShardId": "shardId-000000000000"},
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."},
            {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
            {"SequenceNumber": "49543463076570308322303623326179887152428262250726293522", "ShardId": "shardId-000000000002"},
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."}
        ]
    }"#;

    fn recorded_results(body: &str) -> Vec<(Option<String>, Option<String>)> {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        value["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                (
                    entry["ErrorCode"].as_str().map(str::to_string),
                    entry["ErrorMessage"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    #[test]
    fn recorded_partial_failure_lists_exactly_the_failed_records() {
        let items: Vec<BatchItem> = (0..5)
            .map(|i| item(i, Some(&format!("u{i}")), "{}"))
            .collect();
        let batch = batch(items);
        let (records, rejected) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
        assert!(rejected.is_empty());
        let owned = recorded_results(RECORDED_PARTIAL_RESPONSE);
        let results: Vec<RecordResult<'_>> = owned
            .iter()
            .map(|(code, message)| RecordResult {
                error_code: code.as_deref(),
                error_message: message.as_deref(),
            })
            .collect();
        let verdict = classify_record_results(&records, &results, &stream());
        assert!(verdict.throttled);
        let indexes: Vec<usize> = verdict.failures.iter().map(|f| f.index).collect();
        assert_eq!(indexes, vec![1, 2, 4]);
        assert!(verdict.failures.iter().all(|f| f.retriable));
        assert!(verdict.failures[0]
            .reason
            .contains("ProvisionedThroughputExceededException"));
        assert!(verdict.failures[1].reason.contains("InternalFailure"));
        assert!(verdict.failures[0].reason.contains("flag-events"));
        let outcome = SendOutcome::from_item_failures(5, verdict.failures, verdict.throttled, None);
        match outcome {
            SendOutcome::Partial {
                failures,
                throttled,
            } => {
                assert!(throttled);
                assert_eq!(
                    failures.iter().map(|f| f.index).collect::<Vec<_>>(),
                    vec![1, 2, 4]
                );
            }
            other => panic!("expected partial, got {other:?}"),
        }
    }

    #[test]
    fn all_records_throttled_is_a_retriable_throttled_batch() {
        let batch = batch((0..3).map(|i| item(i, Some("u"), "{}")).collect());
        let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
        let results = vec![
            RecordResult {
                error_code: Some("ProvisionedThroughputExceededException"),
                error_message: Some("Rate exceeded")
            };
            3
        ];
        let verdict = classify_record_results(&records, &results, &stream());
        let outcome = SendOutcome::from_item_failures(3, verdict.failures, verdict.throttled, None);
        assert!(
            matches!(
                outcome,
                SendOutcome::Retriable {
                    throttled: true,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn mismatched_entry_count_never_claims_delivery() {
        let batch = batch((0..3).map(|i| item(i, Some("u"), "{}")).collect());
        let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
        let results = vec![
            RecordResult {
                error_code: None,
                error_message: None
            };
            2
        ];
        let verdict = classify_record_results(&records, &results, &stream());
        assert_eq!(verdict.failures.len(), 3);
        assert!(verdict.failures.iter().all(|f| f.retriable));
    }

    #[test]
    fn aggregated_record_failure_fails_every_event_it_carries() {
        let items = vec![
            item(0, Some("a"), r#"{"n":0}"#),
            item(1, Some("b"), r#"{"n":1}"#),
            item(2, Some("a"), r#"{"n":2}"#),
        ];
        let batch = batch(items);
        let (records, _) = plan_records(&batch, &PartitionKeySource::ContextKey, true);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].items, vec![0, 2]);
        assert_eq!(records[0].data, b"{\"n\":0}\n{\"n\":2}".to_vec());
        let results = vec![
            RecordResult {
                error_code: Some("InternalFailure"),
                error_message: None,
            },
            RecordResult {
                error_code: None,
                error_message: None,
            },
        ];
        let verdict = classify_record_results(&records, &results, &stream());
        assert_eq!(
            verdict.failures.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(!verdict.throttled);
    }

    #[test]
    fn oversized_event_is_a_permanent_item_failure() {
        let big = "x".repeat(MAX_RECORD_BYTES);
        let batch = batch(vec![item(0, Some("u"), "{}"), item(1, Some("u"), &big)]);
        let (records, rejected) = plan_records(&batch, &PartitionKeySource::ContextKey, false);
        assert_eq!(records.len(), 1);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].index, 1);
        assert!(!rejected[0].retriable);
        assert!(
            rejected[0].reason.contains("1048576"),
            "{}",
            rejected[0].reason
        );
    }

    #[test]
    fn requests_respect_count_and_byte_limits() {
        let small: Vec<PlannedRecord> = (0..1201)
            .map(|i| PlannedRecord {
                partition_key: format!("k{i}"),
                data: vec![b'x'; 10],
                items: vec![i],
            })
            .collect();
        let ranges = split_requests(&small);
        assert_eq!(ranges, vec![0..500, 500..1000, 1000..1201]);
        let big: Vec<PlannedRecord> = (0..12)
            .map(|i| PlannedRecord {
                partition_key: "k".into(),
                data: vec![b'x'; 1000 * 1000],
                items: vec![i],
            })
            .collect();
        let ranges = split_requests(&big);
        for range in &ranges {
            let bytes: usize = big[range.clone()]
                .iter()
                .map(PlannedRecord::billed_bytes)
                .sum();
            assert!(bytes <= MAX_REQUEST_BYTES, "{range:?} has {bytes} bytes");
        }
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 12);
        assert_eq!(ranges.len(), 3);
    }

    #[test]
    fn partition_key_defaults_to_context_then_event_id_and_is_bounded() {
        let keys = PartitionKeySource::ContextKey;
        assert_eq!(keys.key_for(&item(1, Some("user-1"), "{}")), "user-1");
        assert_eq!(keys.key_for(&item(2, None, "{}")), "evt-2");
        assert_eq!(keys.key_for(&item(3, Some(""), "{}")), "evt-3");
        let long = "k".repeat(300);
        let bounded = keys.key_for(&item(4, Some(&long), "{}"));
        assert!(bounded.len() <= MAX_PARTITION_KEY_BYTES);
        assert_eq!(
            bounded,
            keys.key_for(&item(5, Some(&long), "{}")),
            "stable for one context"
        );
    }

    #[test]
    fn partition_key_from_payload_field() {
        let keys: PartitionKeySource = "event.contextKeys.user".parse().unwrap();
        assert_eq!(
            keys,
            PartitionKeySource::PayloadField("/event/contextKeys/user".into())
        );
        let with_field = item(
            1,
            Some("ctx"),
            r#"{"event":{"contextKeys":{"user":"u-9"}}}"#,
        );
        assert_eq!(keys.key_for(&with_field), "u-9");
        let without = item(2, Some("ctx"), r#"{"event":{}}"#);
        assert_eq!(keys.key_for(&without), "ctx");
        assert!("a..b".parse::<PartitionKeySource>().is_err());
    }

    #[test]
    fn service_errors_are_classified() {
        let s = stream();
        let missing = classify_service_error(
            Some("ResourceNotFoundException"),
            Some("Stream flag-events under account 1 not found."),
            400,
            &s,
        );
        assert!(!missing.retriable);
        assert!(
            missing.reason.contains("flag-events") && missing.reason.contains("not found"),
            "{}",
            missing.reason
        );
        let throttled = classify_service_error(
            Some("ProvisionedThroughputExceededException"),
            None,
            400,
            &s,
        );
        assert!(throttled.retriable && throttled.throttled);
        let denied = classify_service_error(Some("AccessDeniedException"), None, 400, &s);
        assert!(!denied.retriable);
        let bad_key = classify_service_error(Some("UnrecognizedClientException"), None, 400, &s);
        assert!(!bad_key.retriable && bad_key.reason.contains("bad credentials"));
        let internal = classify_service_error(Some("InternalFailure"), None, 500, &s);
        assert!(internal.retriable && !internal.throttled);
        let unknown_5xx = classify_service_error(None, None, 503, &s);
        assert!(unknown_5xx.retriable);
        let unknown_429 = classify_service_error(None, None, 429, &s);
        assert!(unknown_429.retriable && unknown_429.throttled);
        let kms = classify_service_error(Some("KMSDisabledException"), None, 400, &s);
        assert!(!kms.retriable);
    }

    #[test]
    fn credential_failures_are_permanent_unless_transient() {
        let s = stream();
        let missing = classify_credentials_error(
            &CredentialsError::not_loaded("no providers in chain provided credentials"),
            &s,
        );
        assert!(
            !missing.retriable && missing.reason.contains("AWS credentials"),
            "{}",
            missing.reason
        );
        let timed_out = classify_credentials_error(
            &CredentialsError::provider_timed_out(Duration::from_secs(5)),
            &s,
        );
        assert!(timed_out.retriable);
        let denied = classify_credentials_error(
            &CredentialsError::provider_error(
                "AccessDenied: not authorized to perform sts:AssumeRole",
            ),
            &s,
        );
        assert!(!denied.retriable);
        let sts_down = classify_credentials_error(
            &CredentialsError::provider_error("dispatch failure: connection refused"),
            &s,
        );
        assert!(sts_down.retriable);
    }

    #[test]
    fn stream_targets_parse() {
        assert_eq!(
            StreamTarget::parse("flag-events").unwrap(),
            StreamTarget::Name("flag-events".into())
        );
        let arn =
            StreamTarget::parse("arn:aws:kinesis:eu-west-1:123456789012:stream/flags").unwrap();
        assert_eq!(arn.arn_region(), Some("eu-west-1"));
        assert!(StreamTarget::parse("").is_err());
        assert!(StreamTarget::parse("arn:aws:s3:::bucket").is_err());
        assert!(StreamTarget::parse("bad name!").is_err());
    }

    #[tokio::test]
    async fn from_spec_consumes_its_options_and_names_bad_ones() {
        let mut spec = DestinationSpec::parse(
            "kinesis://flag-events?region=us-east-1&endpoint=http://127.0.0.1:1&partition_key=event_id&aggregate=true&other=1",
        )
        .unwrap();
        let destination = KinesisDestination::from_spec(&mut spec, "k").await.unwrap();
        assert_eq!(destination.partition_keys, PartitionKeySource::EventId);
        assert!(destination.aggregate);
        assert_eq!(spec.options.keys().collect::<Vec<_>>(), vec!["other"]);

        let mut spec =
            DestinationSpec::parse("kinesis://s?region=us-east-1&aggregate=maybe").unwrap();
        let err = KinesisDestination::from_spec(&mut spec, "k")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("aggregate") && err.contains("maybe"), "{err}");

        let mut spec =
            DestinationSpec::parse("kinesis://s?region=us-east-1&external_id=x").unwrap();
        let err = KinesisDestination::from_spec(&mut spec, "k")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("role_arn"), "{err}");
    }
}
