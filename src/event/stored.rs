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
//! u8   version            = 2 (1: same without the instance id)
//! u8   format             InboundFormat code
//! u8   schema_version     X-LaunchDarkly-Event-Schema, 0 = not sent
//! u8   reserved           = 0
//! [16] instance id        version 2 only: the data dir that accepted the record
//! u16  len + bytes        environment name (UTF-8)
//! u16  len + bytes        payload id (X-LaunchDarkly-Payload-ID), may be empty
//! u16  len + bytes        X-LaunchDarkly-Tags, may be empty
//! u16  len + bytes        User-Agent, may be empty
//! ...  body               the rest of the payload
//! ```
//!
//! Ingest writes version 2 (every record names the instance that accepted it, so its event
//! ids are unique across instances: see `super::id`); version 1 records, written before
//! instance ids existed, are still read (their `instance_id` is `None`). A meta without an
//! instance id is encoded as version 1, byte for byte what older releases wrote.
//!
//! Invariants: a header field longer than `u16::MAX` bytes is truncated at a UTF-8 boundary
//! when encoding (headers are metadata, never data), and decoding never panics on any input.

use super::{InboundFormat, InstanceId};

const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;

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
    out.push(match meta.instance_id {
        Some(_) => VERSION_2,
        None => VERSION_1,
    });
    out.push(meta.format.map(InboundFormat::code).unwrap_or(0));
    out.push(meta.schema_version.unwrap_or(0));
    out.push(0);
    if let Some(instance) = meta.instance_id {
        out.extend_from_slice(&instance.0);
    }
    for field in [
        meta.environment,
        meta.payload_id,
        meta.tags,
        meta.user_agent,
    ] {
        let field = truncate_utf8(field, u16::MAX as usize);
        out.extend_from_slice(&(field.len() as u16).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
}

/// Decode a stored payload. Never panics.
pub fn decode(payload: &[u8]) -> Result<StoredBatch<'_>, StoredError> {
    let fixed = payload.get(..4).ok_or(StoredError::Truncated)?;
    let mut rest = &payload[4..];
    let instance_id = match fixed[0] {
        VERSION_1 => None,
        VERSION_2 => {
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
    let mut fields = [""; 4];
    for field in &mut fields {
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
        };
        let mut payload = Vec::new();
        encode_header(&meta, &mut payload);
        payload.extend_from_slice(b"[{\"kind\":\"index\"}]");
        let batch = decode(&payload).expect("decodes");
        assert_eq!(payload[0], VERSION_2);
        assert_eq!(batch.format, InboundFormat::LdBulk);
        assert_eq!(batch.instance_id, Some(InstanceId([7; 16])));
        assert_eq!(batch.schema_version, Some(4));
        assert_eq!(batch.environment, "production");
        assert_eq!(batch.payload_id, Some(meta.payload_id));
        assert_eq!(batch.tags, Some("application-id/web"));
        assert_eq!(batch.user_agent, Some("PythonClient/9.18.2"));
        assert_eq!(batch.body, b"[{\"kind\":\"index\"}]");
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
