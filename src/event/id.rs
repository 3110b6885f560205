//! Stable event identity.
//!
//! An event id must be identical every time the same accepted event is delivered again
//! (after a crash, a retry, a replay), because destinations deduplicate on it: Segment
//! `messageId`, Kafka keys, object names, SQL primary keys.
//!
//! The id is a pure function of:
//!
//! * the environment the record was ingested under,
//! * the SDK's `X-LaunchDarkly-Payload-ID` when it sent one — SDKs reuse it when they retry a
//!   payload, so a body that reaches us twice yields the *same* ids and the duplicate is
//!   removed downstream — otherwise the record's WAL sequence number (fixed forever once the
//!   record is appended),
//! * the event's index inside the record.
//!
//! These are hashed with XXH3-128 (a specified, platform-independent function, so ids never
//! change across builds or machines) and rendered as an RFC 9562 version-8 UUID, the form
//! Segment and most consumers expect for a message id. Fields are length-prefixed so distinct
//! inputs can never concatenate to the same bytes. The format is versioned by the domain tag
//! `flagstream/event-id/v1`; changing anything here would re-key every destination, so don't.

use xxhash_rust::xxh3::Xxh3;

use super::RecordContext;

const DOMAIN: &[u8] = b"flagstream/event-id/v1";

/// Length of an event id in bytes (a hyphenated UUID).
pub const EVENT_ID_LEN: usize = 36;

/// The 128-bit hash behind an event id.
///
/// The hashed byte string is assembled on the stack and hashed in one shot (XXH3's one-shot
/// and streaming forms give identical results; one-shot is several times faster for the
/// ~100-byte inputs we have). Unusually long environments or payload ids take the streaming
/// path.
pub(crate) fn id_hash(ctx: &RecordContext<'_>, index: u32) -> u128 {
    let mut buf = [0u8; 256];
    let mut len = 0;
    let mut push = |bytes: &[u8]| -> bool {
        match buf.get_mut(len..len + bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                len += bytes.len();
                true
            }
            None => false,
        }
    };
    let fits = push(DOMAIN)
        && push(&(ctx.environment.len() as u64).to_le_bytes())
        && push(ctx.environment.as_bytes())
        && match ctx.payload_id {
            Some(payload_id) if !payload_id.is_empty() => {
                push(b"p")
                    && push(&(payload_id.len() as u64).to_le_bytes())
                    && push(payload_id.as_bytes())
            }
            _ => push(b"s") && push(&ctx.seq.to_le_bytes()),
        }
        && push(&index.to_le_bytes());
    if fits {
        return xxhash_rust::xxh3::xxh3_128(&buf[..len]);
    }
    id_hash_streaming(ctx, index)
}

fn id_hash_streaming(ctx: &RecordContext<'_>, index: u32) -> u128 {
    let mut h = Xxh3::new();
    h.update(DOMAIN);
    h.update(&(ctx.environment.len() as u64).to_le_bytes());
    h.update(ctx.environment.as_bytes());
    match ctx.payload_id {
        Some(payload_id) if !payload_id.is_empty() => {
            h.update(b"p");
            h.update(&(payload_id.len() as u64).to_le_bytes());
            h.update(payload_id.as_bytes());
        }
        _ => {
            h.update(b"s");
            h.update(&ctx.seq.to_le_bytes());
        }
    }
    h.update(&index.to_le_bytes());
    h.digest128()
}

/// Write the id of event `index` of the record as 36 ASCII bytes.
pub fn write_event_id(ctx: &RecordContext<'_>, index: u32, out: &mut [u8; EVENT_ID_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = id_hash(ctx, index).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8 (custom)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
    let mut pos = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[pos] = b'-';
            pos += 1;
        }
        out[pos] = HEX[(byte >> 4) as usize];
        out[pos + 1] = HEX[(byte & 0xf) as usize];
        pos += 2;
    }
}

/// See [`super::event_id`].
pub(crate) fn event_id(ctx: &RecordContext<'_>, index: u32) -> String {
    let mut buf = [0u8; EVENT_ID_LEN];
    write_event_id(ctx, index, &mut buf);
    buf.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InboundFormat;

    fn ctx<'a>(environment: &'a str, payload_id: Option<&'a str>, seq: u64) -> RecordContext<'a> {
        RecordContext {
            format: InboundFormat::LdBulk,
            environment,
            payload_id,
            schema_version: Some(4),
            seq,
            received_at_ms: 0,
        }
    }

    #[test]
    fn ids_are_pinned_forever() {
        // These literals must never change: destinations deduplicate on them.
        assert_eq!(
            event_id(
                &ctx(
                    "production",
                    Some("e4e80df9-6738-4586-acea-69200e415792"),
                    1
                ),
                0
            ),
            event_id(
                &ctx(
                    "production",
                    Some("e4e80df9-6738-4586-acea-69200e415792"),
                    99
                ),
                0
            ),
        );
        let id = event_id(&ctx("production", None, 42), 3);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "8");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(id, "68b43009-50cc-81f8-8995-b49f071cb713");
    }

    #[test]
    fn one_shot_and_streaming_hashes_agree() {
        let long = "e".repeat(300);
        for (env, payload) in [
            ("production", Some("p-1")),
            ("production", None),
            ("x", Some(long.as_str())),
        ] {
            let c = ctx(env, payload, 9);
            assert_eq!(id_hash(&c, 3), id_hash_streaming(&c, 3));
        }
    }

    #[test]
    fn every_input_changes_the_id() {
        let base = event_id(&ctx("production", Some("p"), 1), 0);
        assert_ne!(base, event_id(&ctx("staging", Some("p"), 1), 0));
        assert_ne!(base, event_id(&ctx("production", Some("q"), 1), 0));
        assert_ne!(base, event_id(&ctx("production", Some("p"), 1), 1));
        assert_ne!(base, event_id(&ctx("production", None, 1), 0));
        assert_ne!(
            event_id(&ctx("production", None, 1), 0),
            event_id(&ctx("production", None, 2), 0)
        );
        // An empty payload id is the same as none.
        assert_eq!(
            event_id(&ctx("production", Some(""), 5), 0),
            event_id(&ctx("production", None, 5), 0)
        );
    }
}
