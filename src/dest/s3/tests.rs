use std::time::Duration;

use super::*;
use crate::dest::DestinationSpec;

fn target() -> BucketTarget {
    BucketTarget::parse("flag-bucket/exports").unwrap()
}

#[test]
fn targets_split_bucket_and_prefix_and_refuse_bad_bucket_names() {
    assert_eq!(
        BucketTarget::parse("my.bucket-1/a/b/").unwrap(),
        BucketTarget {
            bucket: "my.bucket-1".into(),
            prefix: "a/b".into()
        }
    );
    assert_eq!(BucketTarget::parse("abc").unwrap().prefix, "");
    for bad in ["", "ab", "Upper", "-dash", "under_score/x", &"x".repeat(64)] {
        let err = BucketTarget::parse(bad).unwrap_err();
        assert!(err.contains("bucket name"), "{bad}: {err}");
    }
}

#[test]
fn s3_errors_are_classified_by_code_then_status() {
    let t = target();
    let class = |code: Option<&str>, status| classify_service_error(code, None, status, &t);
    let no_bucket = class(Some("NoSuchBucket"), 404);
    assert!(!no_bucket.is_retriable());
    assert!(
        no_bucket.reason.contains("flag-bucket") && no_bucket.reason.contains("does not exist"),
        "{}",
        no_bucket.reason
    );
    let denied = class(Some("AccessDenied"), 403);
    assert!(!denied.is_retriable() && denied.reason.contains("access denied"));
    assert!(class(Some("SlowDown"), 503).is_throttled());
    assert!(class(None, 503).is_throttled());
    assert!(class(Some("InternalError"), 500).is_retriable());
    assert!(class(None, 502).is_retriable() && !class(None, 502).is_throttled());
    assert!(class(Some("RequestTimeout"), 400).is_retriable());
    assert!(!class(Some("KMS.NotFoundException"), 400).is_retriable());
    assert!(!class(Some("InvalidArgument"), 400).is_retriable());
}

#[test]
fn multipart_parts_respect_s3_limits() {
    assert_eq!(
        part_size_for(20 << 20, DEFAULT_PART_BYTES),
        DEFAULT_PART_BYTES
    );
    // 100 GB would need 11,921 parts of 8 MiB: the part grows to fit 10,000 parts.
    let len = 100_000_000_000;
    let part = part_size_for(len, DEFAULT_PART_BYTES);
    assert!(len.div_ceil(part) <= MAX_PARTS && part > DEFAULT_PART_BYTES);
}

async fn build(url: &str) -> Result<Arc<dyn Destination>, DestError> {
    let spec = DestinationSpec::parse(url).unwrap();
    crate::dest::registry::build_named(spec, "s").await
}

#[tokio::test]
async fn parses_options_and_rejects_bad_ones() {
    let dest = build(
        "s3://flag-bucket/exports/?region=us-east-1&format=csv&rotate=10s&max_bytes=1MiB\
         &sse=aws:kms&kms_key_id=alias/flags&storage_class=STANDARD_IA&partitions=dt\
         &access_key_id=AKID&secret_access_key=SECRET",
    )
    .await
    .unwrap();
    assert_eq!(dest.kind(), "s3");
    assert_eq!(dest.limits().linger, Duration::from_secs(10));
    assert_eq!(dest.limits().max_bytes, 1 << 20);
    let shown = format!("{dest:?}");
    assert!(
        shown.contains("exports") && !shown.contains("SECRET"),
        "{shown}"
    );

    for (url, needle) in [
        ("s3://Bad_Bucket?region=us-east-1", "bucket name"),
        ("s3://b-1?region=us-east-1&sse=des", "sse"),
        ("s3://b-1?region=us-east-1&kms_key_id=k", "sse=aws:kms"),
        (
            "s3://b-1?region=us-east-1&storage_class=COLD",
            "storage_class",
        ),
        ("s3://b-1?region=us-east-1&part_size=1MiB", "part_size"),
        (
            "s3://b-1?region=us-east-1&part_size=8MiB&multipart_threshold=6MiB",
            "multipart_threshold",
        ),
        ("s3://b-1?region=us-east-1&format=xml", "format"),
        ("s3://b-1?region=us-east-1&rotate=0s", "rotate"),
        ("s3://b-1?region=us-east-1&partitions=week", "week"),
        ("s3://b-1?region=us-east-1&bucket_typo=1", "bucket_typo"),
    ] {
        let err = build(url).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{url}: {err}");
    }
}
