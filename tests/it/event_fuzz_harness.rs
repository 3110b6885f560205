//! The `event_decode` fuzz target's harness, run under proptest (modest case counts) on
//! arbitrary bytes and on damaged versions of the golden inputs, so its properties hold in
//! every CI run, not only under `cargo fuzz`.

use crate::support::event_fuzz as fuzz_harness;

use proptest::prelude::*;

/// The golden bodies (`body` / `body_text` of each capture), as seeds worth damaging.
fn golden_bodies() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/inputs");
    let mut bodies = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let capture: serde_json::Value = serde_json::from_str(&text).unwrap();
        bodies.push(match capture["body_text"].as_str() {
            Some(text) => text.as_bytes().to_vec(),
            None => serde_json::to_vec(&capture["body"]).unwrap(),
        });
    }
    assert!(bodies.len() >= 7);
    bodies
}

#[test]
fn golden_bodies_pass_under_every_format_selector() {
    for body in golden_bodies() {
        for selector in 0..=255u8 {
            let mut input = vec![selector];
            input.extend_from_slice(&body);
            fuzz_harness::run(&input);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_harness::run(&data);
    }

    #[test]
    fn damaged_golden_bodies(
        which in any::<prop::sample::Index>(),
        selector in any::<u8>(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let bodies = golden_bodies();
        let mut body = bodies[which.index(bodies.len())].clone();
        for (at, byte) in damage {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let mut input = vec![selector];
        input.extend_from_slice(&body);
        fuzz_harness::run(&input);
    }
}
