//! Reading request bodies within limits: the raw size cap, the decompressed size cap (no gzip
//! bombs), and the browser pixel's base64 `d` parameter.
//!
//! Invariant: no body ever occupies more than `max_body_bytes` (+1 byte of look-ahead) in
//! memory, however it is framed or compressed.

use std::io::Read;

use base64::Engine;
use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use http::HeaderMap;
use http_body_util::BodyExt;

use super::error::IngestError;

/// The body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Parse `Content-Encoding`; anything but identity/gzip is 415.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() || text.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else {
        Err(IngestError::UnsupportedEncoding(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ))
    }
}

/// Collect a body of at most `limit` bytes.
///
/// A body over the limit is read on (and discarded, never buffered) up to `limit` more bytes
/// before the 413 is returned: a client that is still sending when we answer would otherwise
/// see its connection reset instead of reading the 413.
pub async fn collect<B>(body: B, limit: usize) -> Result<Bytes, IngestError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| IngestError::BodyRead(err.into().to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            chunks.clear();
            if total > limit.saturating_mul(2) {
                break;
            }
            continue;
        }
        chunks.push(data);
    }
    if total > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    Ok(match chunks.len() {
        // The common case: one chunk, handed on without a copy.
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut joined = Vec::with_capacity(total);
            for chunk in &chunks {
                joined.extend_from_slice(chunk);
            }
            Bytes::from(joined)
        }
    })
}

/// Read and discard up to `max` bytes of a body we are refusing (see [`collect`]), for at
/// most `patience`.
pub async fn drain<B>(body: B, max: usize, patience: std::time::Duration)
where
    B: hyper::body::Body<Data = Bytes>,
{
    let drain = async {
        let mut body = std::pin::pin!(body);
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len());
                if total > max {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(patience, drain).await;
}

/// Decompress a gzip body, refusing to produce more than `limit` bytes.
pub fn gunzip(compressed: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    let mut capped = decoder.take(limit as u64 + 1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit + 1));
    capped
        .read_to_end(&mut out)
        .map_err(|err| IngestError::InvalidGzip(err.to_string()))?;
    if out.len() > limit {
        return Err(IngestError::DecompressedTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// Decode the `d` query parameter of `GET /a/{env}.gif?d=<base64 JSON array>`.
pub fn pixel_payload(query: Option<&str>, limit: usize) -> Result<Bytes, IngestError> {
    let encoded = query
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "d")
                .map(|(_, value)| value.into_owned())
        })
        .ok_or_else(|| IngestError::InvalidPixel("missing query parameter `d`".to_string()))?;
    // The base64 text is 4/3 of the payload: refuse before decoding anything too large.
    if encoded.len() / 4 * 3 > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|engine| engine.decode(encoded.trim()).ok())
        .map(Bytes::from)
        .ok_or_else(|| IngestError::InvalidPixel("query parameter `d` is not base64".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzip_round_trips_within_the_limit() {
        let data = b"[{\"kind\":\"custom\"}]".repeat(10);
        assert_eq!(&gunzip(&gzip(&data), data.len()).unwrap()[..], &data[..]);
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_cap() {
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "compresses well: {}", bomb.len());
        let err = gunzip(&bomb, 1024 * 1024).unwrap_err();
        assert_eq!(err.code(), "decompressed_too_large");
    }

    #[test]
    fn corrupt_gzip_is_a_400() {
        let err = gunzip(b"definitely not gzip", 1024).unwrap_err();
        assert_eq!(err.code(), "invalid_gzip");
        let mut truncated = gzip(&[b'x'; 4096]);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(
            gunzip(&truncated, 1 << 20).unwrap_err().code(),
            "invalid_gzip"
        );
    }

    #[test]
    fn encodings() {
        let mut headers = HeaderMap::new();
        assert_eq!(encoding(&headers).unwrap(), Encoding::Identity);
        headers.insert(CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert_eq!(encoding(&headers).unwrap(), Encoding::Gzip);
        headers.insert(CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(
            encoding(&headers).unwrap_err().code(),
            "unsupported_encoding"
        );
    }

    #[test]
    fn pixel_payload_accepts_standard_and_url_safe_base64() {
        let json = br#"[{"kind":"custom","key":"k?>"}]"#;
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let encoded = engine.encode(json);
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("d", &encoded)
                .finish();
            assert_eq!(&pixel_payload(Some(&query), 1024).unwrap()[..], json);
        }
        assert_eq!(
            pixel_payload(None, 10).unwrap_err().code(),
            "invalid_pixel_payload"
        );
        assert_eq!(
            pixel_payload(Some("d=%%%"), 10).unwrap_err().code(),
            "invalid_pixel_payload"
        );
        let big = "A".repeat(4000);
        assert_eq!(
            pixel_payload(Some(&format!("d={big}")), 100)
                .unwrap_err()
                .code(),
            "body_too_large"
        );
    }

    #[tokio::test]
    async fn collect_enforces_the_limit() {
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(collect(body.clone(), 10).await.unwrap().len(), 10);
        assert_eq!(collect(body, 9).await.unwrap_err().code(), "body_too_large");
        let chunks = futures::stream::iter([&b"01234"[..], b"56789"].map(|chunk| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(chunk)))
        }));
        let body = http_body_util::StreamBody::new(chunks);
        assert_eq!(&collect(body, 10).await.unwrap()[..], b"0123456789");
    }
}
