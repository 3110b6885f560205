//! Talking to S3: `PutObject`, multipart uploads above the threshold, `HeadBucket` for
//! `check`, and the classification of everything S3 (or the SDK) answers (table in the module
//! doc).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::config::{part_size_for, BucketTarget, Sse};
use crate::dest::aws;
use crate::dest::failure::{RequestMetrics, RequestResult};
use crate::dest::object::{EncodedObject, ObjectStore};
use crate::dest::{DestError, Failure, FailureClass};

/// Bucket, key and the object's metadata (type, encoding, encryption, storage class) on a
/// `PutObject` or `CreateMultipartUpload` builder: different types with the same setters.
macro_rules! with_object_metadata {
    ($builder:expr, $store:expr, $object:expr) => {
        $builder
            .bucket(&$store.target.bucket)
            .key(&$object.key)
            .content_type($object.content_type)
            .set_content_encoding($object.content_encoding.map(str::to_string))
            .set_server_side_encryption($store.sse())
            .set_ssekms_key_id($store.kms_key_id.clone())
            .set_storage_class($store.storage_class.clone())
    };
}

/// A bucket as an object store.
#[derive(Debug)]
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    pub target: BucketTarget,
    pub sse: Option<Sse>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<StorageClass>,
    pub multipart_threshold: usize,
    pub part_size: usize,
    pub requests: RequestMetrics,
}

/// Classify a service error response by its S3 error code and HTTP status.
pub fn classify_service_error(
    code: Option<&str>,
    message: Option<&str>,
    http_status: u16,
    target: &BucketTarget,
) -> Failure {
    let answer = (code, message, http_status);
    let failure = |class, what: &str| aws::service_failure(target, answer, class, what);
    use FailureClass::{Permanent, Retriable, Throttled};
    match code.unwrap_or("") {
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequests" => failure(Throttled, "throttled"),
        "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "RequestTimeTooSkewed" => {
            failure(Retriable, "service error")
        }
        "ExpiredToken" | "TokenRefreshRequired" => failure(Retriable, "credentials expired"),
        "NoSuchBucket" | "NotFound" => failure(Permanent, "bucket does not exist"),
        "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => {
            failure(Permanent, "access denied")
        }
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" => {
            failure(Permanent, "bad credentials")
        }
        kms if kms.starts_with("KMS") => failure(Permanent, "KMS key problem"),
        _ => match http_status {
            503 | 429 => failure(Throttled, "throttled"),
            500..=599 => failure(Retriable, "service error"),
            404 => failure(Permanent, "bucket does not exist"),
            403 => failure(Permanent, "access denied"),
            400..=499 => failure(Permanent, "request rejected"),
            _ => failure(Retriable, "unexpected response"),
        },
    }
}

fn classify_sdk_error<E>(error: &SdkError<E, HttpResponse>, target: &BucketTarget) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    aws::classify_sdk_error(
        error,
        target,
        |code, message, status| classify_service_error(code, message, status, target),
        |raw: &HttpResponse| raw.status().as_u16(),
    )
}

impl S3Store {
    fn sse(&self) -> Option<ServerSideEncryption> {
        self.sse.map(|sse| match sse {
            Sse::Aes256 => ServerSideEncryption::Aes256,
            Sse::Kms => ServerSideEncryption::AwsKms,
        })
    }

    /// Count the request and name the object on failure.
    fn outcome<T, E>(
        &self,
        result: Result<T, SdkError<E, HttpResponse>>,
        key: &str,
    ) -> Result<T, Failure>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(value) => {
                self.requests.record(RequestResult::Ok);
                Ok(value)
            }
            Err(error) => {
                let mut failure = classify_sdk_error(&error, &self.target);
                self.requests.record(RequestResult::Failed(failure.class));
                failure.reason = format!("{} (writing key `{key}`)", failure.reason);
                tracing::debug!(reason = %failure.reason, "S3 request failed");
                Err(failure)
            }
        }
    }

    async fn put_object(&self, object: &EncodedObject) -> Result<(), Failure> {
        let request = self
            .client
            .put_object()
            .body(ByteStream::from(object.body.clone()));
        let result = with_object_metadata!(request, self, object).send().await;
        self.outcome(result, &object.key).map(drop)
    }

    /// A multipart upload: create, parts one after the other, complete; aborted on failure
    /// so no billed orphan parts stay behind (best effort: a lifecycle rule for incomplete
    /// uploads is still recommended, see docs/destinations.md).
    async fn put_multipart(&self, object: &EncodedObject) -> Result<(), Failure> {
        let request = self.client.create_multipart_upload();
        let created = with_object_metadata!(request, self, object).send().await;
        let created = self.outcome(created, &object.key)?;
        let Some(upload_id) = created.upload_id() else {
            return Err(Failure::retriable(format!(
                "{}: CreateMultipartUpload returned no upload id (writing key `{}`)",
                self.target, object.key
            )));
        };
        let result = self.upload_parts(object, upload_id).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.target.bucket)
                .key(&object.key)
                .upload_id(upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(&self, object: &EncodedObject, upload_id: &str) -> Result<(), Failure> {
        let part_size = part_size_for(object.body.len(), self.part_size);
        let mut parts = Vec::new();
        for (index, start) in (0..object.body.len()).step_by(part_size).enumerate() {
            let end = (start + part_size).min(object.body.len());
            let number = index as i32 + 1;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.target.bucket)
                .key(&object.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(object.body.slice(start..end)))
                .send()
                .await;
            let uploaded = self.outcome(uploaded, &object.key)?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .build(),
            );
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&object.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        self.outcome(completed, &object.key).map(drop)
    }

    /// `HeadBucket`: the bucket exists and the credentials work. A role allowed only
    /// `s3:PutObject` is refused (403); that passes with a warning, since writing would work.
    pub async fn check_bucket(&self, name: &str) -> Result<(), DestError> {
        let result = self
            .client
            .head_bucket()
            .bucket(&self.target.bucket)
            .send()
            .await;
        let Err(error) = result else {
            return Ok(());
        };
        let status = error.raw_response().map(|raw| raw.status().as_u16());
        if status == Some(403) {
            tracing::warn!(
                destination = %name,
                "{}: not allowed to HeadBucket; existence and write access are not verified \
                 until the first PutObject",
                self.target
            );
            return Ok(());
        }
        Err(DestError::Check(
            classify_sdk_error(&error, &self.target).reason,
        ))
    }
}

impl ObjectStore for S3Store {
    const KIND: &'static str = "s3";

    fn check<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), DestError>> {
        self.check_bucket(name).boxed()
    }

    fn put<'a>(&'a self, object: &'a EncodedObject) -> BoxFuture<'a, Result<(), Failure>> {
        if object.body.len() > self.multipart_threshold {
            self.put_multipart(object).boxed()
        } else {
            self.put_object(object).boxed()
        }
    }
}
