//! Talking to Cloud Storage: single-request uploads through `google-cloud-storage`, the
//! `buckets.get` probe for `check`, and the classification of every answer (table in the
//! module doc). Classification goes by HTTP status and error kind, never by message text.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::error::rpc::Code;
use google_cloud_storage::client::Storage;

use super::config::{GcsTarget, MAX_OBJECT_BYTES};
use crate::dest::failure::{error_chain, RequestMetrics, RequestResult};
use crate::dest::gcp;
use crate::dest::http::classify_status_code;
use crate::dest::object::{EncodedObject, ObjectStore};
use crate::dest::{DestError, Failure, FailureClass};

/// Extra time past the request timeout before a wedged upload is abandoned.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// A bucket as an object store.
#[derive(Debug)]
pub struct GcsStore {
    pub client: Storage,
    /// For the `buckets.get` probe, which the storage client does not offer over JSON.
    pub http: reqwest::Client,
    pub credentials: Credentials,
    /// The JSON API root (`https://storage.googleapis.com`, or the endpoint / emulator).
    pub endpoint: String,
    pub target: GcsTarget,
    pub storage_class: Option<String>,
    pub kms_key: Option<String>,
    pub timeout: Duration,
    pub requests: RequestMetrics,
}

/// Classify an HTTP status Cloud Storage answered for `target`. On an upload or a bucket probe
/// the only thing that can be missing is the bucket, so 404 names it.
pub fn classify_http_status(status: u16, target: &GcsTarget) -> Failure {
    let what = match status {
        404 => "bucket does not exist",
        403 => "permission denied",
        401 => "bad credentials",
        429 => "throttled",
        408 | 500..=599 => "service error",
        _ => "request rejected",
    };
    let class = match status {
        100..=399 => FailureClass::Retriable,
        status => classify_status_code(status),
    };
    Failure::new(class, format!("{target}: {what} (HTTP {status})"))
}

/// Classify any error of the storage client for `target`.
pub fn classify_error(error: &google_cloud_gax::error::Error, target: &GcsTarget) -> Failure {
    let service_message = error.status().map(|s| s.message.clone());
    if let Some(status) = error.http_status_code() {
        let mut failure = classify_http_status(status, target);
        if let Some(message) = service_message.filter(|m| !m.is_empty()) {
            failure.reason = format!("{}: {message}", failure.reason);
        }
        return failure;
    }
    match error.status() {
        Some(status) if status.code == Code::NotFound => Failure::permanent(format!(
            "{target}: bucket does not exist ({}): {}",
            status.code.name(),
            status.message
        )),
        Some(status) => gcp::classify_status(status.code, &status.message, target),
        // Credentials, timeouts, connection errors, a checksum mismatch: see gcp.
        None => gcp::classify_error(error, target),
    }
}

impl GcsStore {
    /// Count the request; name the object on failure.
    fn outcome(&self, result: Result<(), Failure>, key: &str) -> Result<(), Failure> {
        match result {
            Ok(()) => {
                self.requests.record(RequestResult::Ok);
                Ok(())
            }
            Err(mut failure) => {
                self.requests.record(RequestResult::Failed(failure.class));
                failure.reason = format!("{} (writing object `{key}`)", failure.reason);
                tracing::debug!(reason = %failure.reason, "GCS upload failed");
                Err(failure)
            }
        }
    }

    /// One single-request (JSON API multipart) upload: object data and metadata together.
    async fn upload(&self, object: &EncodedObject) -> Result<(), Failure> {
        if object.body.len() as u64 > MAX_OBJECT_BYTES {
            return Err(Failure::permanent(format!(
                "{}: object is {} bytes, more than the {MAX_OBJECT_BYTES} Cloud Storage accepts",
                self.target,
                object.body.len()
            )));
        }
        let mut write = self
            .client
            .write_object(self.target.bucket_path(), &object.key, object.body.clone())
            .set_content_type(object.content_type);
        if let Some(encoding) = object.content_encoding {
            write = write.set_content_encoding(encoding);
        }
        if let Some(class) = &self.storage_class {
            write = write.set_storage_class(class);
        }
        if let Some(key) = &self.kms_key {
            write = write.set_kms_key(key);
        }
        match tokio::time::timeout(self.timeout + TIMEOUT_GRACE, write.send_buffered()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(classify_error(&error, &self.target)),
            Err(_) => Err(Failure::retriable(format!(
                "{}: upload timed out after {:?}",
                self.target, self.timeout
            ))),
        }
    }

    /// `buckets.get`: the bucket exists and the credentials work. An identity allowed only
    /// to create objects (`roles/storage.objectCreator`) is refused (403); that passes with a
    /// warning, since writing would work.
    pub async fn check_bucket(&self, name: &str) -> Result<(), DestError> {
        let headers = match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => http::HeaderMap::new(),
            Err(err) => {
                return Err(DestError::Check(format!(
                    "{}: Google credentials: {}",
                    self.target,
                    error_chain(&err)
                )))
            }
        };
        let url = format!(
            "{}/storage/v1/b/{}?fields=name",
            self.endpoint, self.target.bucket
        );
        let response = self
            .http
            .get(url)
            .headers(headers)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|err| {
                DestError::Check(format!(
                    "{}: could not reach Cloud Storage: {}",
                    self.target,
                    error_chain(&err)
                ))
            })?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            403 => {
                tracing::warn!(
                    destination = %name,
                    "{}: not allowed to get the bucket; its existence and write access are not \
                     verified until the first upload",
                    self.target
                );
                Ok(())
            }
            status => Err(DestError::Check(
                classify_http_status(status, &self.target).reason,
            )),
        }
    }
}

impl ObjectStore for GcsStore {
    const KIND: &'static str = "gs";

    fn check<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), DestError>> {
        self.check_bucket(name).boxed()
    }

    fn put<'a>(&'a self, object: &'a EncodedObject) -> BoxFuture<'a, Result<(), Failure>> {
        async move {
            let result = self.upload(object).await;
            self.outcome(result, &object.key)
        }
        .boxed()
    }
}
