//! Talking to Kinesis: one `PutRecords` call, `DescribeStreamSummary` for `check`, and the
//! classification of everything Kinesis (or the SDK) answers (table in the module doc).

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};

use super::config::StreamTarget;
use super::request::PlannedRecord;
use super::KinesisDestination;
use crate::dest::aws;
use crate::dest::failure::RequestResult;
use crate::dest::{DestError, Failure, FailureClass, ItemFailure};

/// One per-record result of a `PutRecords` response: an error code, or success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordResult<'a> {
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
}

/// Classify the per-record results of a `PutRecords` response for `records` (the request's
/// records, in request order). Every failed record fails all the items it carries.
pub fn classify_record_results(
    records: &[PlannedRecord],
    results: &[RecordResult<'_>],
    stream: &StreamTarget,
) -> Vec<ItemFailure> {
    if results.len() != records.len() {
        let failure = Failure::retriable(format!(
            "{stream}: PutRecords answered {} entries for {} records; treating the request as not delivered",
            results.len(),
            records.len()
        ));
        return records
            .iter()
            .flat_map(|r| r.fail_items(&failure))
            .collect();
    }
    let mut failures = Vec::new();
    for (record, result) in records.iter().zip(results) {
        let Some(code) = result.error_code else {
            continue;
        };
        // Kinesis documents two per-record codes, both transient; unknown codes are treated
        // the same way, so the engine's retry schedule (then dead letters) bounds them.
        let class = if code == "ProvisionedThroughputExceededException" {
            FailureClass::Throttled
        } else {
            FailureClass::Retriable
        };
        let failure = Failure::new(
            class,
            format!(
                "{stream}: record rejected: {code}: {}",
                result.error_message.unwrap_or("no message")
            ),
        );
        failures.extend(record.fail_items(&failure));
    }
    failures
}

/// Classify a service error response by its AWS error code and HTTP status.
pub fn classify_service_error(
    code: Option<&str>,
    message: Option<&str>,
    http_status: u16,
    stream: &StreamTarget,
) -> Failure {
    let answer = (code, message, http_status);
    let failure = |class, what: &str| aws::service_failure(stream, answer, class, what);
    use FailureClass::{Permanent, Retriable, Throttled};
    match code.unwrap_or("") {
        "ProvisionedThroughputExceededException"
        | "KMSThrottlingException"
        | "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "RequestLimitExceeded" => failure(Throttled, "throttled"),
        "InternalFailure"
        | "InternalFailureException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException" => failure(Retriable, "service error"),
        // Temporary credentials (assumed role, web identity) expire; the provider refreshes.
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
            failure(Retriable, "credentials expired")
        }
        "ResourceNotFoundException" => failure(Permanent, "stream not found"),
        "AccessDeniedException" | "AccessDenied" => failure(Permanent, "access denied"),
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => failure(Permanent, "bad credentials"),
        kms if kms.starts_with("KMS") => failure(Permanent, "KMS key problem"),
        _ => match http_status {
            429 => failure(Throttled, "throttled"),
            500..=599 => failure(Retriable, "service error"),
            400..=499 => failure(Permanent, "request rejected"),
            _ => failure(Retriable, "unexpected response"),
        },
    }
}

/// Classify any SDK error of a `PutRecords` (or `DescribeStreamSummary`) call.
fn classify_sdk_error<E>(error: &SdkError<E, HttpResponse>, stream: &StreamTarget) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    aws::classify_sdk_error(
        error,
        stream,
        |code, message, status| classify_service_error(code, message, status, stream),
        |raw: &HttpResponse| raw.status().as_u16(),
    )
}

/// The verdict of a successful `PutRecords` call for `records`.
pub(super) fn failures_from_output(
    output: &PutRecordsOutput,
    records: &[PlannedRecord],
    stream: &StreamTarget,
) -> Vec<ItemFailure> {
    let results: Vec<RecordResult<'_>> = output
        .records()
        .iter()
        .map(|entry| RecordResult {
            error_code: entry.error_code(),
            error_message: entry.error_message(),
        })
        .collect();
    let failures = classify_record_results(records, &results, stream);
    // FailedRecordCount is redundant with the entries; if they disagree, trust neither and
    // report every record as retriable rather than claim delivery.
    let counted = output.failed_record_count().unwrap_or(0).max(0) as usize;
    let failed_records = results.iter().filter(|r| r.error_code.is_some()).count();
    if results.len() == records.len() && counted != failed_records {
        let failure = Failure::retriable(format!(
            "{stream}: FailedRecordCount {counted} disagrees with {failed_records} failed entries; \
             treating the request as not delivered"
        ));
        return records
            .iter()
            .flat_map(|r| r.fail_items(&failure))
            .collect();
    }
    failures
}

impl KinesisDestination {
    /// One `PutRecords` call; `Ok` carries the per-item failures (empty: all accepted).
    pub(super) async fn put_records(
        &self,
        records: &[PlannedRecord],
    ) -> Result<Vec<ItemFailure>, Failure> {
        let entries = records
            .iter()
            .map(|record| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(record.data.clone()))
                    .partition_key(record.partition_key.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| {
                Failure::permanent(format!("{}: could not build records: {err}", self.stream))
            })?;
        let mut request = self.client.put_records().set_records(Some(entries));
        request = match &self.stream {
            StreamTarget::Name(name) => request.stream_name(name),
            StreamTarget::Arn(arn) => request.stream_arn(arn),
        };
        match request.send().await {
            Ok(output) => {
                let failures = failures_from_output(&output, records, &self.stream);
                let items: usize = records.iter().map(|r| r.items.len()).sum();
                self.requests.record_items(items, &failures);
                Ok(failures)
            }
            Err(error) => {
                let failure = classify_sdk_error(&error, &self.stream);
                self.requests.record(RequestResult::Failed(failure.class));
                tracing::debug!(destination = %self.name, reason = %failure.reason, "PutRecords failed");
                Err(failure)
            }
        }
    }

    pub(super) async fn check_stream(&self) -> Result<(), DestError> {
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
