//! The stored-record codec: what ingest writes as one WAL record payload, and what delivery
//! reads back.
//!
//! The WAL stores opaque bytes. One accepted HTTP body becomes one record whose payload is a
//! small binary metadata header followed by the body bytes exactly as received (after
//! gunzip): no re-encoding on the hot path, and the raw body is always recoverable.
//!
//! ## Layout (little endian)
//!
//! ```text
//! u8   version            = 3 (2: without the request fields; 1: also without the instance id)
//! u8   format             InboundFormat code
//! u8   schema_version     X-LaunchDarkly-Event-Schema, 0 = not sent
//! u8   reserved           = 0
//! [16] instance id        versions 2 and 3: the data dir that accepted the record
//! u16  len + bytes        environment name (UTF-8)
//! u16  len + bytes        payload id (X-LaunchDarkly-Payload-ID), may be empty
//! u16  len + bytes        X-LaunchDarkly-Tags, may be empty
//! u16  len + bytes        user agent: X-LaunchDarkly-User-Agent, else User-Agent; may be empty
//!      version 3 only, the request as the sender made it (for forwarding it upstream):
//! u16  len + bytes        request path (`/bulk`, `/mobile/events/bulk`, `/events/bulk/{id}`, …)
//! u16  len + bytes        credential fingerprint ([`credential_fingerprint`]), may be empty
//! u16  len + bytes        User-Agent header, may be empty
//! u16  len + bytes        X-LaunchDarkly-User-Agent header, may be empty
//! u16  len + bytes        X-LaunchDarkly-Wrapper header, may be empty
//! ...  body               the rest of the payload
//! ```
//!
//! Ingest writes version 3 (every record names the instance that accepted it, so its event
//! ids are unique across instances: see `super::id`, and the request it came in, so a
//! forwarding destination can replay it); versions 2 and 1 are still read (their request
//! fields are empty; version 1's `instance_id` is `None`). A meta without request fields is
//! encoded as version 2, and one without an instance id as version 1 (request fields dropped),
//! byte for byte what older releases wrote. Older releases cannot read version 3 records.
//!
//! The credential is never stored: only a fingerprint (the first 8 bytes of a SHA-256 of the
//! key, hex) that lets a destination find the same key in the `--environment` configuration
//! at send time, and which reveals nothing usable about a random SDK or mobile key.
//!
//! Invariants: a header field longer than `u16::MAX` bytes is truncated at a UTF-8 boundary
//! when encoding (headers are metadata, never data), and decoding never panics on any input.

use super::{InboundFormat, InstanceId};

const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;

/// Metadata stored in front of a body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMeta<'a> {
    pub format: Option<InboundFormat>,
    /// The instance that accepts the record (always set by ingest).
    pub instance_id: Option<InstanceId>,
    pub schema_version: Option<u8>,
    pub environment: &'a str,
    pub payload_id: &'a str,
    pub tags: &'a str,
    pub user_agent: &'a str,
    /// The request as sent (version 3): see [`RequestMeta`].
    pub request: RequestMeta<'a>,
}

/// What a sender's request looked like, beyond what the events need: kept so that a
/// forwarding destination (LaunchDarkly upstream) can replay the request. Empty = not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestMeta<'a> {
    /// The request path (`/bulk`, `/mobile/events/bulk`, `/events/bulk/{clientSideId}`, …).
    pub path: &'a str,
    /// [`credential_fingerprint`] of the key the sender authenticated with (never the key).
    pub credential: &'a str,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// `X-LaunchDarkly-User-Agent`.
    pub ld_user_agent: &'a str,
    /// `X-LaunchDarkly-Wrapper`.
    pub wrapper: &'a str,
}

impl RequestMeta<'_> {
    fn is_empty(&self) -> bool {
        self.fields().iter().all(|field| field.is_empty())
    }

    fn fields(&self) -> [&str; 5] {
        [
            self.path,
            self.credential,
            self.user_agent,
            self.ld_user_agent,
            self.wrapper,
        ]
    }
}

/// A decoded stored record: metadata borrowed from the payload, and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch<'a> {
    pub format: InboundFormat,
    /// `None` for version-1 records (stored before instance ids existed).
    pub instance_id: Option<InstanceId>,
    pub schema_version: Option<u8>,
    pub environment: &'a str,
    pub payload_id: Option<&'a str>,
    pub tags: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The request as sent; all empty for records stored before version 3.
    pub request: RequestMeta<'a>,
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoredError {
    #[error("stored record is truncated")]
    Truncated,
    #[error("unknown stored record version {0}")]
    Version(u8),
    #[error("unknown inbound format code {0}")]
    Format(u8),
    #[error("stored record header is not valid UTF-8")]
    Utf8,
}

/// Encode the metadata header; the body is appended after it by the caller (the WAL takes
/// both as separate parts, so the body is copied exactly once, into the mapping).
pub fn encode_header(meta: &StoredMeta<'_>, out: &mut Vec<u8>) {
    out.clear();
    let with_request = meta.instance_id.is_some() && !meta.request.is_empty();
    out.push(match meta.instance_id {
        Some(_) if with_request => VERSION_3,
        Some(_) => VERSION_2,
        None => VERSION_1,
    });
    out.push(meta.format.map(InboundFormat::code).unwrap_or(0));
    out.push(meta.schema_version.unwrap_or(0));
    out.push(0);
    if let Some(instance) = meta.instance_id {
        out.extend_from_slice(&instance.0);
    }
    let request = meta.request.fields();
    let request: &[&str] = if with_request { &request } else { &[] };
    let fields = [
        meta.environment,
        meta.payload_id,
        meta.tags,
        meta.user_agent,
    ];
    for field in fields.iter().chain(request) {
        let field = truncate_utf8(field, u16::MAX as usize);
        out.extend_from_slice(&(field.len() as u16).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
}

/// The fingerprint of a credential stored in place of the credential itself: the first 8
/// bytes of SHA-256 over a domain prefix and the key, as 16 lowercase hex digits. Enough to
/// tell an environment's few keys apart, too short and too one-way to recover a key from.
pub fn credential_fingerprint(key: &str) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"flagstream credential v1\0");
    hasher.update(key.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// Decode a stored payload. Never panics.
pub fn decode(payload: &[u8]) -> Result<StoredBatch<'_>, StoredError> {
    let fixed = payload.get(..4).ok_or(StoredError::Truncated)?;
    let mut rest = &payload[4..];
    let instance_id = match fixed[0] {
        VERSION_1 => None,
        VERSION_2 | VERSION_3 => {
            let bytes = rest.get(..16).ok_or(StoredError::Truncated)?;
            let mut id = [0u8; 16];
            id.copy_from_slice(bytes);
            rest = &rest[16..];
            Some(InstanceId(id))
        }
        other => return Err(StoredError::Version(other)),
    };
    let format = InboundFormat::from_code(fixed[1]).ok_or(StoredError::Format(fixed[1]))?;
    let schema_version = (fixed[2] != 0).then_some(fixed[2]);
    let mut fields = [""; 9];
    let count = if fixed[0] == VERSION_3 { 9 } else { 4 };
    for field in &mut fields[..count] {
        let len_bytes = rest.get(..2).ok_or(StoredError::Truncated)?;
        let len = u16::from_le_bytes([len_bytes[0], len_bytes[1]]) as usize;
        let bytes = rest.get(2..2 + len).ok_or(StoredError::Truncated)?;
        *field = std::str::from_utf8(bytes).map_err(|_| StoredError::Utf8)?;
        rest = &rest[2 + len..];
    }
    Ok(StoredBatch {
        format,
        instance_id,
        schema_version,
        environment: fields[0],
        payload_id: non_empty(fields[1]),
        tags: non_empty(fields[2]),
        user_agent: non_empty(fields[3]),
        request: RequestMeta {
            path: fields[4],
            credential: fields[5],
            user_agent: fields[6],
            ld_user_agent: fields[7],
            wrapper: fields[8],
        },
        body: rest,
    })
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_metadata_and_body() {
        let meta = StoredMeta {
            format: Some(InboundFormat::LdBulk),
            instance_id: Some(InstanceId([7; 16])),
            schema_version: Some(4),
            environment: "production",
            payload_id: "e4e80df9-6738-4586-acea-69200e415792",
            tags: "application-id/web",
            user_agent: "PythonClient/9.18.2",
            request: RequestMeta::default(),
        };
        let mut payload = Vec::new();
        encode_header(&meta, &mut payload);
        payload.extend_from_slice(b"[{\"kind\":\"index\"}]");
        let batch = decode(&payload).expect("decodes");
        // No request fields: the version-2 layout.
        assert_eq!(payload[0], VERSION_2);
        assert_eq!(batch.request, RequestMeta::default());
        assert_eq!(batch.format, InboundFormat::LdBulk);
        assert_eq!(batch.instance_id, Some(InstanceId([7; 16])));
        assert_eq!(batch.schema_version, Some(4));
        assert_eq!(batch.environment, "production");
        assert_eq!(batch.payload_id, Some(meta.payload_id));
        assert_eq!(batch.tags, Some("application-id/web"));
        assert_eq!(batch.user_agent, Some("PythonClient/9.18.2"));
        assert_eq!(batch.body, b"[{\"kind\":\"index\"}]");
    }

    fn request_meta() -> RequestMeta<'static> {
        RequestMeta {
            path: "/mobile/events/bulk",
            credential: "0123456789abcdef",
            user_agent: "okhttp/4",
            ld_user_agent: "AndroidClient/5.0.0",
            wrapper: "ReactNative/10",
        }
    }

    #[test]
    fn version_3_round_trips_the_request() {
        let meta = StoredMeta {
            format: Some(InboundFormat::LdMobile),
            instance_id: Some(InstanceId([3; 16])),
            environment: "production",
            payload_id: "p-1",
            user_agent: "AndroidClient/5.0.0",
            request: request_meta(),
            ..StoredMeta::default()
        };
        let mut payload = Vec::new();
        encode_header(&meta, &mut payload);
        payload.extend_from_slice(b"[]");
        assert_eq!(payload[0], VERSION_3);
        let batch = decode(&payload).expect("decodes");
        assert_eq!(batch.request, request_meta());
        assert_eq!(batch.payload_id, Some("p-1"));
        assert_eq!(batch.user_agent, Some("AndroidClient/5.0.0"));
        assert_eq!(batch.body, b"[]");
        for cut in 0..payload.len() - 2 {
            assert!(decode(&payload[..cut]).is_err(), "prefix {cut}");
        }
        // Without an instance id the record is version 1: the request fields are dropped.
        encode_header(
            &StoredMeta {
                instance_id: None,
                ..meta
            },
            &mut payload,
        );
        assert_eq!(payload[0], VERSION_1);
        assert_eq!(decode(&payload).unwrap().request, RequestMeta::default());
    }

    #[test]
    fn credential_fingerprints_are_stable_short_and_distinct() {
        let key = "sdk-8d4d2c1e-0000-4000-8000-000000000001";
        let print = credential_fingerprint(key);
        assert_eq!(print.len(), 16);
        assert_eq!(print, credential_fingerprint(key));
        assert_ne!(print, credential_fingerprint("mob-other"));
        assert!(!print.contains("sdk-"));
    }

    #[test]
    fn empty_fields_decode_as_none() {
        let meta = StoredMeta {
            format: Some(InboundFormat::Generic),
            environment: "default",
            ..StoredMeta::default()
        };
        let mut payload = Vec::new();
        encode_header(&meta, &mut payload);
        // No instance id: exactly the version-1 bytes older releases wrote.
        assert_eq!(
            payload,
            [1, 6, 0, 0, 7, 0, b'd', b'e', b'f', b'a', b'u', b'l', b't', 0, 0, 0, 0, 0, 0]
        );
        let batch = decode(&payload).expect("decodes");
        assert_eq!(batch.instance_id, None);
        assert_eq!(batch.payload_id, None);
        assert_eq!(batch.schema_version, None);
        assert!(batch.body.is_empty());
    }

    #[test]
    fn never_panics_on_any_prefix_of_a_valid_payload() {
        let meta = StoredMeta {
            format: Some(InboundFormat::LdBulk),
            instance_id: Some(InstanceId([1; 16])),
            environment: "env",
            payload_id: "id",
            ..StoredMeta::default()
        };
        let mut payload = Vec::new();
        encode_header(&meta, &mut payload);
        for cut in 0..payload.len() {
            assert!(
                decode(&payload[..cut]).is_err(),
                "prefix {cut} must not decode"
            );
        }
    }

    #[test]
    fn over_long_header_is_truncated_at_a_char_boundary() {
        let long = "é".repeat(40_000);
        assert_eq!(truncate_utf8(&long, 65_535).len(), 65_534);
    }
}
