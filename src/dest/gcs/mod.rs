//! Google Cloud Storage destination (`gs://BUCKET/PREFIX?…`), on the official
//! `google-cloud-storage` client.
//!
//! Each batch becomes one object per partition through the shared object writer
//! ([`crate::dest::object`]: formats, Hive layout, object names derived from the batch id, so a
//! re-sent batch overwrites its own objects and a bucket never holds an event twice). This
//! module only stores objects: `config` (options, bucket target, Cloud Storage limits),
//! `service` (uploads, the bucket probe, and the classification of their answers).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `BUCKET` or `BUCKET/PREFIX` | required |
//! | `format`, `partitions`, `partition_time`, `file_name`, `csv_*`, `rotate`, `max_bytes` | the object options ([`crate::dest::object`]) | `ndjson`, `dt,hour`, `received`, `{batch_id}.{ext}`, `60s`, `64MiB` |
//! | `credentials_file`, `credentials_json` | a service-account key ([`crate::dest::gcp`]) | Application Default Credentials |
//! | `endpoint` | JSON API root (private endpoint, emulator) | `STORAGE_EMULATOR_HOST` if set, else `https://storage.googleapis.com` |
//! | `storage_class` | `STANDARD`, `NEARLINE`, `COLDLINE`, `ARCHIVE` | the bucket's default |
//! | `kms_key` | Cloud KMS key (`projects/P/locations/L/keyRings/R/cryptoKeys/K`) | the bucket's default encryption |
//! | `timeout` | how long one upload may take | `30s` |
//!
//! Like Google's client libraries, `STORAGE_EMULATOR_HOST=host:port` (and any plain `http://`
//! endpoint) means an emulator: anonymous credentials, no TLS.
//!
//! `Content-Type` is the format's (`application/x-ndjson`, `text/csv; charset=utf-8`), and
//! `ndjson.gz` objects carry `Content-Encoding: gzip` (Cloud Storage then serves them
//! decompressed to clients that do not accept gzip: "decompressive transcoding");
//! `ndjson.zst` objects carry `Content-Encoding: zstd` and are always served as stored.
//!
//! ## Uploads and their size
//!
//! Every object goes up in **one request** (a JSON API multipart upload: metadata and data
//! together), with a CRC32C the service verifies. Cloud Storage documents 5 TiB as the limit
//! of both an object and a single upload request; objects here are one batch, held in memory
//! and bounded by `max_bytes` (64 MiB by default), so they stay far below it. An object over
//! 5 TiB would be a permanent failure naming its size, never a partial upload. Resumable
//! uploads are not used: they cost an extra request per object and buy nothing when the whole
//! object is re-sent anyway after a failure (the object writer re-sends the batch, which
//! overwrites the same name). Google's guidance for single-request uploads is "small enough to
//! upload again in its entirety" — keep `max_bytes` modest on slow links.
//!
//! ## Outcome classification
//!
//! | Cloud Storage says | outcome |
//! |---|---|
//! | HTTP 429 | retriable, throttled |
//! | HTTP 408, 5xx, timeouts, connection errors, a checksum mismatch | retriable |
//! | HTTP 404 (on an upload only the bucket can be missing) | permanent: "bucket does not exist", naming the bucket |
//! | HTTP 403, 401, other 4xx, bad credentials | permanent, naming the bucket |
//!
//! The client's own retries are off: the delivery engine owns retries and their persisted
//! backoff. If any object of a batch fails, the batch fails as a whole (see the object writer).
//! `check()` gets the bucket (`buckets.get`); a 403 there passes with a warning (an identity
//! with only `roles/storage.objectCreator` may write but not read bucket metadata).

mod config;
mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use google_cloud_gax::retry_policy::{NeverRetry, RetryPolicyExt};
use google_cloud_storage::client::Storage;

pub use config::{GcsOptions, GcsTarget, MAX_OBJECT_BYTES, STORAGE_CLASSES};
pub use service::{classify_error, classify_http_status, GcsStore};

use super::failure::{error_chain, RequestMetrics};
use super::gcp::{self, GoogleOptions};
use super::kind::{BuildContext, DestinationKind};
use super::object::{ObjectDestination, ObjectOptions};
use super::options::{Endpoint, RequestOptions, CONNECT_TIMEOUT};
use super::{DestError, Destination};

/// Cloud Storage's JSON API root.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";

/// The `gs` destination type.
#[derive(Debug, Clone, Copy)]
pub struct GcsKind;

impl DestinationKind for GcsKind {
    const SCHEME: &'static str = "gs";
    const SUMMARY: &'static str =
        "Google Cloud Storage objects (NDJSON, NDJSON.gz, CSV, Parquet), Hive-partitioned";
    const EXAMPLE: &'static str = "gs://analytics-bucket/flag-events?format=ndjson.gz";
    type Options = (GcsOptions, ObjectOptions, RequestOptions, GoogleOptions);

    async fn build(
        &self,
        target: &str,
        (options, objects, request, google): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let error = |reason: String| context.error(reason);
        let target = GcsTarget::parse(target).map_err(error)?;
        options.validate().map_err(error)?;
        let (limits, writer) = objects
            .for_bucket(&target.prefix, context.schema)
            .map_err(error)?;
        let timeout = request.timeout().map_err(error)?;
        let endpoint = match request.endpoint {
            Some(endpoint) => Some(endpoint),
            None => gcp::emulator_endpoint(EMULATOR_ENV).map_err(error)?,
        };
        let credentials = credentials(&google, endpoint.as_ref()).map_err(error)?;
        let client = storage_client(credentials.clone(), endpoint.as_ref(), timeout)
            .await
            .map_err(error)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|err| error(format!("HTTP client: {}", error_chain(&err))))?;
        let store = GcsStore {
            client,
            http,
            credentials,
            endpoint: endpoint.map_or(DEFAULT_ENDPOINT.to_string(), |e| e.as_str().to_string()),
            target,
            storage_class: options.storage_class,
            kms_key: options.kms_key,
            timeout,
            requests: RequestMetrics::new(&context.name),
        };
        Ok(Arc::new(ObjectDestination {
            name: context.name.clone(),
            store,
            writer,
            limits,
            bodies: Default::default(),
        }))
    }
}

/// A key from the options, anonymous for a plain-HTTP endpoint, else Application Default
/// Credentials (resolved here, so the bucket probe and the uploads share one token cache).
fn credentials(
    google: &GoogleOptions,
    endpoint: Option<&Endpoint>,
) -> Result<google_cloud_auth::credentials::Credentials, String> {
    let plaintext = endpoint.is_some_and(Endpoint::is_plaintext);
    match google.credentials(plaintext)? {
        Some(credentials) => Ok(credentials),
        None => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|err| {
                format!(
                    "no Google credentials (Application Default Credentials: {}); give \
                     `credentials_file` or set GOOGLE_APPLICATION_CREDENTIALS",
                    error_chain(&err)
                )
            }),
    }
}

/// The storage client: our credentials and endpoint, no client retries (the engine retries),
/// and single-request uploads for every object size (see the module doc).
async fn storage_client(
    credentials: google_cloud_auth::credentials::Credentials,
    endpoint: Option<&Endpoint>,
    timeout: Duration,
) -> Result<Storage, String> {
    let mut builder = Storage::builder()
        .with_credentials(credentials)
        .with_retry_policy(NeverRetry.with_time_limit(timeout))
        .with_resumable_upload_threshold(MAX_OBJECT_BYTES as usize + 1);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint.as_str());
    }
    builder.build().await.map_err(|err| {
        format!(
            "could not create the Cloud Storage client: {}",
            error_chain(&err)
        )
    })
}

/// The GCS destination.
pub type GcsDestination = ObjectDestination<GcsStore>;
