//! Unit tests of the GCS destination (tests/it/gcs.rs runs it against fake-gcs-server).

use super::*;
use crate::dest::{DestinationSpec, FailureClass};
use bytes::Bytes;

fn target() -> GcsTarget {
    GcsTarget::parse("flag-bucket/exports").unwrap()
}

#[test]
fn targets_split_bucket_and_prefix_and_refuse_bad_bucket_names() {
    assert_eq!(
        GcsTarget::parse("my_bucket.v-1/a/b/").unwrap(),
        GcsTarget {
            bucket: "my_bucket.v-1".into(),
            prefix: "a/b".into()
        }
    );
    assert_eq!(GcsTarget::parse("abc").unwrap().prefix, "");
    assert_eq!(target().bucket_path(), "projects/_/buckets/flag-bucket");
    let dotted = format!("{}.{}", "a".repeat(63), "b".repeat(63));
    assert!(GcsTarget::parse(&dotted).is_ok());
    for bad in [
        "",
        "ab",
        "Upper",
        "-dash",
        "under_",
        &"x".repeat(64),
        &format!("{}.b", "a".repeat(64)),
    ] {
        let err = GcsTarget::parse(bad).unwrap_err();
        assert!(err.contains("bucket name"), "{bad}: {err}");
    }
}

#[test]
fn http_statuses_are_classified_and_name_the_bucket() {
    let t = target();
    let missing = classify_http_status(404, &t);
    assert!(!missing.is_retriable());
    assert!(
        missing.reason.contains("flag-bucket") && missing.reason.contains("does not exist"),
        "{}",
        missing.reason
    );
    let denied = classify_http_status(403, &t);
    assert!(!denied.is_retriable() && denied.reason.contains("permission denied"));
    assert!(!classify_http_status(401, &t).is_retriable());
    assert!(!classify_http_status(400, &t).is_retriable());
    assert!(classify_http_status(429, &t).is_throttled());
    for status in [408, 500, 502, 503, 504] {
        let failure = classify_http_status(status, &t);
        assert_eq!(failure.class, FailureClass::Retriable, "{status}");
    }
}

#[test]
fn client_errors_are_classified_by_kind_not_text() {
    use google_cloud_gax::error::{CredentialsError, Error};
    let t = target();
    // The message says "throttled"; the status (404) decides.
    let missing = Error::http(404, Default::default(), Bytes::from_static(b"throttled"));
    let failure = classify_error(&missing, &t);
    assert!(!failure.is_retriable() && failure.reason.contains("does not exist"));
    let throttled = Error::http(429, Default::default(), Bytes::new());
    assert!(classify_error(&throttled, &t).is_throttled());
    let unavailable = Error::http(503, Default::default(), Bytes::new());
    assert!(classify_error(&unavailable, &t).is_retriable());
    assert!(classify_error(&Error::io("connection refused"), &t).is_retriable());
    let bad_key = Error::authentication(CredentialsError::from_msg(false, "invalid_grant"));
    assert!(!classify_error(&bad_key, &t).is_retriable());
}

#[test]
fn emulator_hosts_are_plain_http_unless_a_url_is_given() {
    let host = gcp::emulator_url("127.0.0.1:4443").unwrap();
    assert_eq!(host.as_str(), "http://127.0.0.1:4443");
    assert!(host.is_plaintext());
    let url = gcp::emulator_url("https://gcs.internal:8443").unwrap();
    assert!(!url.is_plaintext());
    assert!(gcp::emulator_url("ftp://x").is_err());
}

async fn build(url: &str) -> Result<Arc<dyn Destination>, DestError> {
    let spec = DestinationSpec::parse(url).unwrap();
    crate::dest::registry::build_named(spec, "g").await
}

#[tokio::test]
async fn parses_options_and_rejects_bad_ones() {
    let endpoint = "endpoint=http://127.0.0.1:9";
    let dest = build(&format!(
        "gs://flag-bucket/exports/?{endpoint}&format=csv&rotate=10s&max_bytes=1MiB\
         &storage_class=NEARLINE&partitions=dt\
         &kms_key=projects/p/locations/eu/keyRings/r/cryptoKeys/k"
    ))
    .await
    .unwrap();
    assert_eq!(dest.kind(), "gs");
    assert_eq!(dest.limits().linger, Duration::from_secs(10));
    assert_eq!(dest.limits().max_bytes, 1 << 20);
    assert!(format!("{dest:?}").contains("exports"));

    for (options, needle) in [
        ("storage_class=COLD", "storage_class"),
        ("kms_key=alias/flags", "kms_key"),
        ("format=xml", "format"),
        ("rotate=0s", "rotate"),
        ("partitions=week", "week"),
        ("bucket_typo=1", "bucket_typo"),
        (
            "credentials_file=/nonexistent/key.json",
            "/nonexistent/key.json",
        ),
    ] {
        let url = format!("gs://flag-bucket?{endpoint}&{options}");
        let err = build(&url).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{url}: {err}");
    }
    let err = build("gs://Bad_Bucket?endpoint=http://127.0.0.1:9")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bucket name"), "{err}");
}
