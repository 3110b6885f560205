//! Amazon S3 (and S3-compatible stores) destination (`s3://BUCKET/PREFIX?region=…`).
//!
//! Each batch becomes one object per partition through the shared object writer
//! ([`crate::dest::object`]: formats, Hive layout, keys derived from the batch id, so a
//! re-sent batch overwrites its own objects and a bucket never holds an event twice). This
//! module only stores objects: `config` (options, bucket target, S3 size limits), `service`
//! (PutObject / multipart upload / HeadBucket and the classification of their answers).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `BUCKET` or `BUCKET/PREFIX` | required |
//! | `format`, `partitions`, `partition_time`, `file_name`, `csv_*`, `parquet_*`, `rotate`, `max_bytes` | the object options ([`crate::dest::object`]) | `ndjson`, `dt,hour`, `received`, `{batch_id}.{ext}`, `60s`, `64MiB` |
//! | `region`, `access_key_id`, `secret_access_key`, `session_token`, `role_arn`, `external_id` | AWS region and credentials ([`crate::dest::aws`]) | the standard AWS chain |
//! | `endpoint` | S3-compatible store or VPC endpoint (MinIO, Ceph, R2, moto) | AWS |
//! | `path_style` | path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need | `true` with `endpoint`, else `false` |
//! | `sse` | server-side encryption: `AES256` or `aws:kms` | the bucket's default |
//! | `kms_key_id` | KMS key for `sse=aws:kms` | the account's `aws/s3` key |
//! | `storage_class` | `STANDARD`, `STANDARD_IA`, `INTELLIGENT_TIERING`, `GLACIER_IR`, … | `STANDARD` |
//! | `multipart_threshold` | objects larger than this are uploaded in parts | `16MiB` |
//! | `part_size` | part size of multipart uploads (5 MiB – 5 GiB; grown to stay within 10,000 parts) | `8MiB` |
//! | `timeout` | per-request timeout | `30s` |
//!
//! `Content-Type` is the format's (`application/x-ndjson`, `text/csv; charset=utf-8`,
//! `application/vnd.apache.parquet`), and
//! `ndjson.gz` objects carry `Content-Encoding: gzip`. With an `endpoint`, request checksums
//! are only sent where S3 requires them (many S3-compatible stores reject the newer
//! `x-amz-checksum-*` trailers).
//!
//! ## Outcome classification
//!
//! | S3 says | outcome |
//! |---|---|
//! | `SlowDown`, HTTP 503 / 429, `Throttling` | retriable, throttled |
//! | `InternalError`, `RequestTimeout`, other 5xx, timeouts, connection errors | retriable |
//! | `ExpiredToken` | retriable (the provider refreshes) |
//! | `NoSuchBucket` | permanent: "bucket does not exist", naming the bucket |
//! | `AccessDenied`, bad credentials, KMS key problems, other 4xx | permanent, naming the bucket |
//!
//! If any object of a batch fails, the batch fails as a whole (see the object writer): the
//! engine re-sends it and the objects that did land are overwritten with the same bytes.

mod config;
mod service;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::{
    part_size_for, BucketTarget, S3Options, Sse, DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_BYTES,
    MAX_PARTS, MAX_PART_BYTES, MIN_PART_BYTES,
};
pub use service::{classify_service_error, S3Store};

use super::aws::AwsOptions;
use super::failure::RequestMetrics;
use super::kind::{BuildContext, DestinationKind};
use super::object::{ObjectDestination, ObjectOptions};
use super::options::{Parsed, RequestOptions};
use super::{DestError, Destination};

/// The `s3` destination type.
#[derive(Debug, Clone, Copy)]
pub struct S3Kind;

impl DestinationKind for S3Kind {
    const SCHEME: &'static str = "s3";
    const SUMMARY: &'static str =
        "Amazon S3 or S3-compatible objects (NDJSON, NDJSON.gz, CSV, Parquet), Hive-partitioned";
    const EXAMPLE: &'static str =
        "s3://analytics-bucket/flag-events?region=us-east-1&format=ndjson.gz";
    type Options = (S3Options, ObjectOptions, RequestOptions, AwsOptions);

    async fn build(
        &self,
        target: &str,
        (options, objects, request, aws): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let error = |reason: String| context.error(reason);
        let target = BucketTarget::parse(target).map_err(error)?;
        let (multipart_threshold, part_size) = options.upload_sizes().map_err(error)?;
        let (limits, writer) = objects
            .for_bucket(&target.prefix, context.schema)
            .map_err(error)?;
        let session = format!("flagstream-{}", context.name);
        let sdk_config = aws
            .sdk_config(&request, None, &session)
            .await
            .map_err(error)?;
        let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(options.path_style.unwrap_or(request.endpoint.is_some()));
        if request.endpoint.is_some() {
            s3_config = s3_config.request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        }
        let store = S3Store {
            client: aws_sdk_s3::Client::from_conf(s3_config.build()),
            target,
            sse: options.sse.map(|Parsed(sse)| sse),
            kms_key_id: options.kms_key_id,
            storage_class: options
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
            multipart_threshold,
            part_size,
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

/// The S3 destination.
pub type S3Destination = ObjectDestination<S3Store>;
