use std::collections::BTreeMap;

use super::*;
use crate::dest::options::TokenCredentials;
use crate::dest::{registry, BatchItem, DestinationSpec};

#[test]
fn signature_matches_githubs_published_vector() {
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert_eq!(
        signature(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

fn item(payload: &str) -> BatchItem {
    BatchItem::with_payload(Bytes::copy_from_slice(payload.as_bytes()))
}

#[test]
fn bodies_in_each_format() {
    let items = [item(r#"{"a":1}"#), item(r#"{"b":2}"#)];
    let mut out = Vec::new();
    write_body(BodyFormat::Json, &[], &items, &mut out);
    assert_eq!(out, br#"[{"a":1},{"b":2}]"#);
    write_body(BodyFormat::Ndjson, &[], &items, &mut out);
    assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    write_body(
        BodyFormat::Gofeatureflag,
        &[("hostname", "h1"), ("team", "x")],
        &items,
        &mut out,
    );
    assert_eq!(
        out,
        br#"{"meta":{"hostname":"h1","team":"x"},"events":[{"a":1},{"b":2}]}"#
    );
    assert_eq!(
        BodyFormat::default_for(Schema::GoFeatureFlag),
        BodyFormat::Gofeatureflag
    );
    assert_eq!(
        BodyFormat::default_for(Schema::LaunchDarkly),
        BodyFormat::Json
    );
}

#[test]
fn headers_carry_auth_and_custom_values_and_refuse_reserved_ones() {
    let bearer = TokenCredentials {
        token: Some(Secret::new("t0k")),
        ..TokenCredentials::default()
    };
    let custom = BTreeMap::from([("X-Team".to_string(), "flags".to_string())]);
    let headers = config::static_headers(BodyFormat::Ndjson, &bearer, &custom).unwrap();
    assert_eq!(headers["authorization"], "Bearer t0k");
    assert_eq!(headers["x-team"], "flags");
    assert_eq!(headers["content-type"], "application/x-ndjson");

    let basic = TokenCredentials {
        username: Some("user".into()),
        password: Some(Secret::new("pass")),
        ..TokenCredentials::default()
    };
    let headers = config::static_headers(BodyFormat::Json, &basic, &BTreeMap::new()).unwrap();
    assert_eq!(headers["authorization"], "Basic dXNlcjpwYXNz");

    for name in ["Idempotency-Key", "X-Hub-Signature-256", "Content-Length"] {
        let custom = BTreeMap::from([(name.to_string(), "x".to_string())]);
        let err = config::static_headers(BodyFormat::Json, &TokenCredentials::default(), &custom)
            .unwrap_err();
        assert!(err.contains(name), "{err}");
    }
}

#[tokio::test]
async fn builds_from_urls_and_names_bad_options() {
    let built = registry::build_named(
        DestinationSpec::parse(
            "webhook+https://hooks.example.com/flags?secret=s&header.X-Team=a&format=ndjson&max_bytes=64KiB",
        )
        .unwrap(),
        "hook",
    )
    .await
    .unwrap();
    assert_eq!(built.kind(), "webhook");
    assert_eq!(built.limits().max_bytes, 64 * 1024 - 2);
    assert!(!format!("{built:?}").contains("secret=s"));

    for (url, needle) in [
        ("webhook+http://h/p?format=xml", "format"),
        ("webhook+http://h/p?header.Bad%20Name=1", "header.Bad Name"),
        ("webhook+http:///nohost", "host"),
        ("webhook+https://u:p@h/p", "username"),
        ("webhook+http://h/p?max_bytes=2", "max_bytes"),
        ("webhook+http://h/p?colour=red", "colour"),
    ] {
        let err = registry::build_named(DestinationSpec::parse(url).unwrap(), "hook")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{url}: {err}");
    }
}
