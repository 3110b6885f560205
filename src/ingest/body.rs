//! Reading request bodies within limits: the raw size cap, the decompressed size cap (no gzip
//! bombs), and the browser pixel's base64 `d` parameter.
//!
//! Invariant: no body ever occupies more than `max_body_bytes` (+1 byte of look-ahead) in
//! memory, however it is framed or compressed.

use std::io::Read;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use http::HeaderMap;
use http_body_util::BodyExt;

use super::error::IngestError;
use super::inflight::Reservation;

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

/// Collect a body of at most `limit` bytes, growing `reservation` to cover what is kept.
///
/// A body over the limit is read on (and discarded, never buffered) up to `limit` more bytes
/// before the 413 is returned: a client that is still sending when we answer would otherwise
/// see its connection reset instead of reading the 413. A body that sends nothing for `stall`
/// is refused with 408 `body_stalled`.
pub async fn collect<B>(
    body: B,
    limit: usize,
    reservation: &mut Reservation,
    stall: Duration,
) -> Result<Bytes, IngestError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut collected = Collected::default();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_elapsed) => return Err(IngestError::BodyStalled(stall)),
            Ok(None) => break,
            Ok(Some(frame)) => {
                frame.map_err(|err| IngestError::BodyRead(err.into().to_string()))?
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            collected = Collected::default();
            if total > limit.saturating_mul(2) {
                break;
            }
            continue;
        }
        collected.push(data, limit, reservation).await?;
    }
    if total > limit {
        return Err(IngestError::BodyTooLarge { limit });
    }
    Ok(collected.finish())
}

/// The body so far: one chunk handed on without a copy (the common case), or a buffer whose
/// capacity the reservation covers.
#[derive(Default)]
struct Collected {
    single: Option<Bytes>,
    joined: Vec<u8>,
}

impl Collected {
    async fn push(
        &mut self,
        data: Bytes,
        limit: usize,
        reservation: &mut Reservation,
    ) -> Result<(), IngestError> {
        if self.single.is_none() && self.joined.is_empty() {
            reservation.grow(data.len()).await?;
            self.single = Some(data);
            return Ok(());
        }
        let pending = self.single.as_ref().map_or(0, Bytes::len);
        let needed = self.joined.len() + pending + data.len();
        if needed > self.joined.capacity() {
            let capacity = needed.max(self.joined.capacity() * 2).min(limit);
            reservation
                .grow(capacity.saturating_sub(reservation.bytes()))
                .await?;
            self.joined.reserve_exact(capacity - self.joined.len());
        }
        if let Some(first) = self.single.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&data);
        Ok(())
    }

    fn finish(self) -> Bytes {
        match self.single {
            Some(single) => single,
            None => Bytes::from(self.joined),
        }
    }
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

/// Decompress a gzip body, refusing to produce more than `limit` bytes; `reservation` grows
/// with the output buffer, step by step, so a bomb is stopped at the cap and never reserves
/// more than it produced.
pub async fn gunzip(
    compressed: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, IngestError> {
    let held_before = reservation.bytes();
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out: Vec<u8> = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    while out.len() <= limit {
        let step = (limit + 1 - out.len()).min(GUNZIP_STEP);
        if out.capacity() - out.len() < step {
            let capacity = (out.len() + step).max(out.capacity() * 2).min(limit + 1);
            let covered = reservation.bytes() - held_before;
            reservation.grow(capacity.saturating_sub(covered)).await?;
            out.reserve_exact(capacity - out.len());
        }
        let read = (&mut decoder)
            .take(step as u64)
            .read_to_end(&mut out)
            .map_err(|err| IngestError::InvalidGzip(err.to_string()))?;
        if read == 0 {
            break;
        }
    }
    if out.len() > limit {
        return Err(IngestError::DecompressedTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// Decompressed bytes produced between two reservation checks.
const GUNZIP_STEP: usize = 256 * 1024;

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
    use crate::ingest::inflight::InflightBudget;
    use flate2::write::GzEncoder;
    use futures::StreamExt;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        // Level 6: zlib-rs' level 1 (static Huffman codes only) leaves the 10 MiB bomb above
        // 64 KiB.
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn budget() -> InflightBudget {
        InflightBudget::new(64 << 20, 64 << 20, Duration::from_millis(10))
    }

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn gunzip_round_trips_within_the_limit() {
        let data = b"[{\"kind\":\"custom\"}]".repeat(100_000);
        let budget = budget();
        let mut held = budget.reservation(None);
        let out = gunzip(&gzip(&data), data.len(), &mut held).await.unwrap();
        assert_eq!(&out[..], &data[..]);
        assert!(held.bytes() >= data.len() && held.bytes() <= data.len() + 1);
    }

    #[tokio::test]
    async fn gzip_bomb_is_refused_at_the_cap() {
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "compresses well: {}", bomb.len());
        let budget = budget();
        let mut held = budget.reservation(None);
        let err = gunzip(&bomb, 1024 * 1024, &mut held).await.unwrap_err();
        assert_eq!(err.code(), "decompressed_too_large");
        assert!(held.bytes() <= 1024 * 1024 + 1, "{}", held.bytes());
    }

    #[tokio::test]
    async fn corrupt_gzip_is_a_400() {
        let budget = budget();
        let mut held = budget.reservation(None);
        let err = gunzip(b"definitely not gzip", 1024, &mut held)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_gzip");
        let mut truncated = gzip(&[b'x'; 4096]);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(
            gunzip(&truncated, 1 << 20, &mut held)
                .await
                .unwrap_err()
                .code(),
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
    async fn collect_enforces_the_limit_and_reserves_what_it_keeps() {
        let budget = budget();
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        let mut held = budget.reservation(None);
        let collected = collect(body.clone(), 10, &mut held, PATIENCE).await;
        assert_eq!((collected.unwrap().len(), held.bytes()), (10, 10));
        let mut held = budget.reservation(None);
        let err = collect(body, 9, &mut held, PATIENCE).await.unwrap_err();
        assert_eq!(err.code(), "body_too_large");
        let chunks = futures::stream::iter([&b"01234"[..], b"56789"].map(|chunk| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(chunk)))
        }));
        let body = http_body_util::StreamBody::new(chunks);
        let mut held = budget.reservation(None);
        let collected = collect(body, 10, &mut held, PATIENCE).await.unwrap();
        assert_eq!(&collected[..], b"0123456789");
        assert_eq!(held.bytes(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_holds_only_what_it_sent() {
        let budget = budget();
        let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
            hyper::body::Frame::data(Bytes::from_static(b"[")),
        )]);
        let body = http_body_util::StreamBody::new(first.chain(futures::stream::pending()));
        let mut held = budget.reservation(None);
        let err = collect(body, 10 << 20, &mut held, PATIENCE)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "body_stalled");
        assert_eq!(held.bytes(), 1);
    }
}
