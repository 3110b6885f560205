//! Stable, unique event identity.
//!
//! An event id must be identical every time the same accepted event is delivered again
//! (after a crash, a retry, a replay), because destinations deduplicate on it: Segment
//! `messageId`, Kafka keys, object names, SQL primary keys, BigQuery `insertId`. For the same
//! reason it must *differ* for different events, or a deduplicating destination silently drops
//! real data.
//!
//! ## The scheme
//!
//! The id is a pure function of the record an event came from and its index in it, hashed
//! with XXH3-128 (a specified, platform-independent function, so ids never change across
//! builds or machines) and rendered as an RFC 9562 version-8 UUID, the form Segment and most
//! consumers expect for a message id. Fields are length-prefixed so distinct inputs can never
//! concatenate to the same bytes. Three forms, told apart by what the record carries:
//!
//! | record has | hashed | domain tag |
//! |---|---|---|
//! | an `X-LaunchDarkly-Payload-ID` | environment, `p`, payload id, index | `flagstream/event-id/v1` |
//! | an instance id (written by flagstream ≥ the v2 scheme) | environment, `s`, **instance id**, WAL seq, index | `flagstream/event-id/v2` |
//! | neither (records written before instance ids existed) | environment, `s`, WAL seq, index | `flagstream/event-id/v1` |
//!
//! * **Payload ids are instance-independent on purpose.** SDKs reuse the payload id when they
//!   retry a payload, and behind a load balancer the retry may reach *another* instance: both
//!   copies must get the same ids so the destination removes the duplicate. This form is
//!   unchanged since v1, so instances on both sides of a rolling upgrade agree too.
//! * **Seq-derived ids include the instance id** ([`InstanceId`]): 128 random bits created
//!   once per data dir (`<data-dir>/instance-id`, see `crate::ingest::instance`) and stamped
//!   into every record by ingest. WAL seqs start at 1 in every data dir, so without it two
//!   instances behind a load balancer — or one instance whose data dir was reset — gave
//!   *different* events the *same* ids. The instance id travels inside the record, so a
//!   record's ids never depend on anything but the record: re-deliveries after a restart, a
//!   replay, or even a lost `instance-id` file give the same ids.
//! * **Records already in a WAL** when upgrading carry no instance id and keep their v1 ids
//!   (so re-deliveries of them still deduplicate against earlier deliveries); every record
//!   accepted after the upgrade uses v2.
//!
//! ## Uniqueness guarantee
//!
//! Within one data dir, (seq, index) never repeats (the WAL never reuses a seq). Across data
//! dirs, seq-derived ids differ unless two random 128-bit instance ids collide (probability
//! ≈ n²/2¹²⁹ for n data dirs) or XXH3-128 collides on distinct inputs (≈ 2⁻¹²⁸ per pair; the
//! UUID keeps 122 of the 128 bits). Payload-id-derived ids are unique as long as SDKs send
//! unique payload ids per environment, which LaunchDarkly SDKs do (a UUID per payload); a
//! client that reuses a payload id for *different* bodies gets colliding ids by design — that
//! is the same contract as LaunchDarkly's own deduplication.
//!
//! Changing anything here re-keys every destination: add a new domain tag instead, and keep
//! the pinned values of the old ones in the tests.

use xxhash_rust::xxh3::Xxh3;

use super::RecordContext;

/// Domain of payload-id-derived ids, and of seq-derived ids of records without an instance id.
const DOMAIN_V1: &[u8] = b"flagstream/event-id/v1";
/// Domain of seq-derived ids of records that carry an instance id.
const DOMAIN_V2: &[u8] = b"flagstream/event-id/v2";

/// Length of an event id in bytes (a hyphenated UUID).
pub const EVENT_ID_LEN: usize = 36;

/// 128 random bits naming the data dir (and so the flagstream instance) that accepted a
/// record. Mixed into seq-derived event ids so that ids are unique across instances.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub [u8; 16]);

impl InstanceId {
    /// The id as 32 lowercase hex digits (its on-disk and log form).
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse 32 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(InstanceId(bytes))
    }
}

impl std::fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InstanceId({})", self.to_hex())
    }
}

/// What identifies the record in the hash (see the table in the module docs).
enum Identity<'a> {
    Payload(&'a str),
    Seq(Option<&'a InstanceId>, u64),
}

fn identity<'c>(ctx: &'c RecordContext<'_>) -> Identity<'c> {
    match ctx.payload_id {
        Some(payload_id) if !payload_id.is_empty() => Identity::Payload(payload_id),
        _ => Identity::Seq(ctx.instance_id.as_ref(), ctx.seq),
    }
}

/// Feed the id's input to `push` (which returns false when it cannot take more).
fn feed(ctx: &RecordContext<'_>, index: u32, mut push: impl FnMut(&[u8]) -> bool) -> bool {
    let identity = identity(ctx);
    let domain = match identity {
        Identity::Seq(Some(_), _) => DOMAIN_V2,
        _ => DOMAIN_V1,
    };
    push(domain)
        && push(&(ctx.environment.len() as u64).to_le_bytes())
        && push(ctx.environment.as_bytes())
        && match identity {
            Identity::Payload(payload_id) => {
                push(b"p")
                    && push(&(payload_id.len() as u64).to_le_bytes())
                    && push(payload_id.as_bytes())
            }
            Identity::Seq(instance, seq) => {
                push(b"s")
                    && instance.is_none_or(|instance| push(&instance.0))
                    && push(&seq.to_le_bytes())
            }
        }
        && push(&index.to_le_bytes())
}

/// The 128-bit hash behind an event id.
///
/// The hashed byte string is assembled on the stack and hashed in one shot (XXH3's one-shot
/// and streaming forms give identical results; one-shot is several times faster for the
/// ~100-byte inputs we have). Unusually long environments or payload ids take the streaming
/// path.
pub(crate) fn id_hash(ctx: &RecordContext<'_>, index: u32) -> u128 {
    let mut buf = [0u8; 256];
    let mut len = 0;
    let fits = feed(ctx, index, |bytes| {
        match buf.get_mut(len..len + bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(bytes);
                len += bytes.len();
                true
            }
            None => false,
        }
    });
    if fits {
        return xxhash_rust::xxh3::xxh3_128(&buf[..len]);
    }
    id_hash_streaming(ctx, index)
}

fn id_hash_streaming(ctx: &RecordContext<'_>, index: u32) -> u128 {
    let mut h = Xxh3::new();
    feed(ctx, index, |bytes| {
        h.update(bytes);
        true
    });
    h.digest128()
}

/// Write the id of event `index` of the record as 36 ASCII bytes.
pub fn write_event_id(ctx: &RecordContext<'_>, index: u32, out: &mut [u8; EVENT_ID_LEN]) {
    let mut bytes = id_hash(ctx, index).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8 (custom)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
                                         // Fixed positions and a table of digit pairs: this runs once per delivered event, and a
                                         // loop deciding where the dashes go cost more than the hash.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (&at, &byte) in AT.iter().zip(&bytes) {
        let [high, low] = HEX_PAIRS[byte as usize];
        out[at] = high;
        out[at + 1] = low;
    }
    for dash in [8, 13, 18, 23] {
        out[dash] = b'-';
    }
}

/// The two lowercase hex digits of every byte.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
        byte += 1;
    }
    pairs
};

/// An event id as text on the stack: what the hot path computes once per event and then
/// both writes into the mapped row and copies into the batch item.
#[derive(Clone, Copy)]
pub struct EventIdText([u8; EVENT_ID_LEN]);

impl EventIdText {
    /// The id of event `index` of the record.
    pub fn of(ctx: &RecordContext<'_>, index: u32) -> EventIdText {
        let mut buf = [0u8; EVENT_ID_LEN];
        write_event_id(ctx, index, &mut buf);
        EventIdText(buf)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits and hyphens only, so this never falls back; no `unsafe` for the cast.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// See [`super::event_id`].
pub(crate) fn event_id(ctx: &RecordContext<'_>, index: u32) -> String {
    EventIdText::of(ctx, index).as_str().to_owned()
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
            instance_id: None,
        }
    }

    const INSTANCE_A: InstanceId = InstanceId([0xa1; 16]);
    const INSTANCE_B: InstanceId = InstanceId([0xb2; 16]);

    fn on(instance: InstanceId, ctx: RecordContext<'_>) -> RecordContext<'_> {
        RecordContext {
            instance_id: Some(instance),
            ..ctx
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
        // v1: records stored before instance ids existed keep the ids they always had.
        assert_eq!(id, "68b43009-50cc-81f8-8995-b49f071cb713");
        // v2 (deliberately new in the instance-id scheme): seq-derived ids of records that
        // carry an instance id.
        assert_eq!(
            event_id(&on(INSTANCE_A, ctx("production", None, 42)), 3),
            "1540f8fa-4082-84ce-b532-22cbebaf8355"
        );
        // Payload-id-derived ids ignore the instance: the v1 value, on every instance.
        let payload = ctx(
            "production",
            Some("e4e80df9-6738-4586-acea-69200e415792"),
            1,
        );
        assert_eq!(event_id(&on(INSTANCE_A, payload), 0), event_id(&payload, 0));
        assert_eq!(event_id(&on(INSTANCE_B, payload), 0), event_id(&payload, 0));
    }

    #[test]
    fn seq_ids_differ_across_instances_and_from_legacy_ids() {
        let plain = ctx("production", None, 1);
        let a = event_id(&on(INSTANCE_A, plain), 0);
        let b = event_id(&on(INSTANCE_B, plain), 0);
        assert_ne!(a, b, "two data dirs, same seq: different ids");
        assert_ne!(a, event_id(&plain, 0), "v2 never equals the legacy v1 id");
        assert_eq!(a, event_id(&on(INSTANCE_A, plain), 0), "stable");
    }

    #[test]
    fn instance_ids_round_trip_through_hex() {
        let id = InstanceId(*b"0123456789abcdef");
        assert_eq!(InstanceId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(
            InstanceId::from_hex(&format!(" {}\n", id.to_hex())),
            Some(id)
        );
        assert_eq!(InstanceId::from_hex("abc"), None);
        assert_eq!(InstanceId::from_hex(&"g".repeat(32)), None);
        assert_eq!(InstanceId::from_hex(&"é".repeat(16)), None);
    }

    #[test]
    fn one_shot_and_streaming_hashes_agree() {
        let long = "e".repeat(300);
        for (env, payload) in [
            ("production", Some("p-1")),
            ("production", None),
            ("x", Some(long.as_str())),
            (long.as_str(), None),
        ] {
            let c = ctx(env, payload, 9);
            assert_eq!(id_hash(&c, 3), id_hash_streaming(&c, 3));
            let c = on(INSTANCE_A, c);
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
