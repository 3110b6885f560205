//! Request bodies and signatures.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::dest::BatchItem;
use crate::event::schema::write_webhook_body;

use super::config::BodyFormat;

/// Write `items` (complete JSON documents) as one body in `format`; `meta` is the
/// go-feature-flag envelope's `meta` object.
pub fn write_body(
    format: BodyFormat,
    meta: &[(&str, &str)],
    items: &[BatchItem],
    out: &mut Vec<u8>,
) {
    out.clear();
    let rows = items.iter().map(|item| &item.payload[..]);
    match format {
        BodyFormat::Gofeatureflag => write_webhook_body(meta, rows, out),
        BodyFormat::Json => {
            out.push(b'[');
            for (n, row) in rows.enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(row);
            }
            out.push(b']');
        }
        BodyFormat::Ndjson => {
            for row in rows {
                out.extend_from_slice(row);
                out.push(b'\n');
            }
        }
    }
}

/// Bytes a body adds around its items besides one separator per item.
pub fn envelope_bytes(format: BodyFormat, meta: &[(&str, &str)]) -> usize {
    match format {
        BodyFormat::Json | BodyFormat::Ndjson => 2,
        BodyFormat::Gofeatureflag => {
            let mut out = Vec::new();
            write_webhook_body(meta, std::iter::empty(), &mut out);
            out.len()
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, the `X-Hub-Signature-256` value GitHub and
/// go-feature-flag send.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
