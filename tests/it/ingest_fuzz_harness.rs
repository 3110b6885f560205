//! The `ingest_request` fuzz target's harness, run under proptest (modest case counts) on
//! arbitrary requests and on well-formed ones, so its properties hold in every CI run, not
//! only under `cargo fuzz`.

use crate::support::ingest_fuzz as fuzz_harness;

use proptest::prelude::*;

/// A request the harness decodes: flags, path, a header block and a body.
fn input(flags: u8, path: u8, headers: &[u8], body: &[u8]) -> Vec<u8> {
    let headers = &headers[..headers.len().min(255)];
    let mut data = vec![flags, path, headers.len() as u8];
    data.extend_from_slice(headers);
    data.extend_from_slice(body);
    data
}

const BODIES: [&str; 5] = [
    r#"[{"kind":"custom","creationDate":1,"key":"k","contextKeys":{"user":"u"}}]"#,
    r#"{"events":[{"kind":"feature","creationDate":1,"key":"f","userKey":"u","variation":0}],"meta":{}}"#,
    r#"[{"kind":"identify","creationDate":1,"context":{"kind":"user","key":"u"}}]"#,
    r#"[]"#,
    r#"{"kind":"diagnostic","id":{"diagnosticId":"x"},"creationDate":1}"#,
];

#[test]
fn every_route_method_and_encoding_with_valid_bodies() {
    let headers =
        b"x-launchdarkly-payload-id: abc\nx-launchdarkly-event-schema: 4\nx-api-key: sdk-key";
    let mut statuses = std::collections::BTreeMap::new();
    for body in BODIES {
        for path in 0..14u8 {
            for flags in 0..=255u8 {
                let status = fuzz_harness::run(&input(flags, path, headers, body.as_bytes()));
                *statuses
                    .entry(status.map(|status| status.as_u16()))
                    .or_insert(0) += 1;
            }
        }
    }
    // The inputs reach acceptance and every kind of refusal, not only the first check.
    for status in [200, 202, 204, 400, 401, 404, 405] {
        assert!(
            statuses.contains_key(&Some(status)),
            "no {status}: {statuses:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests(data in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzz_harness::run(&data);
    }

    #[test]
    fn damaged_valid_requests(
        flags in any::<u8>(),
        path in any::<u8>(),
        which in 0..BODIES.len(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut body = BODIES[which].as_bytes().to_vec();
        for (at, byte) in damage {
            let i = at.index(body.len());
            body[i] = byte;
        }
        fuzz_harness::run(&input(flags, path, b"authorization: sdk-key", &body));
    }
}
