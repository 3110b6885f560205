//! Request-head limits, enforced by our code so that every refusal carries the JSON
//! `{"error", "detail"}` body.
//!
//! hyper answers head errors it detects itself (malformed framing, too many or too large
//! headers, long URIs) with a bare status and an empty body, and offers no hook to change that.
//! So the head is checked twice, always with limits *tighter* than hyper's:
//!
//! * [`read_first_head`] reads a connection's first bytes before hyper sees them, parses the
//!   HTTP/1 head with `httparse` (hyper's own parser) and answers every problem itself — bad
//!   syntax, header folding, NUL bytes, a malformed or conflicting `Content-Length`,
//!   `Content-Length` together with `Transfer-Encoding`, too many headers, an oversized head
//!   or URI. A good head (or the HTTP/2 preface) is handed to hyper unchanged through
//!   [`Rewind`]. Most clients and every probe send one request per connection, or their first
//!   request is the one that goes wrong.
//! * [`check`] applies the size and count limits to every request hyper parsed (later requests
//!   on a keep-alive connection, HTTP/2 streams), before any handler runs.
//!
//! What is left to hyper: a later keep-alive request whose head is malformed (not merely too
//! big) or larger than hyper's own buffer (`HYPER_MAX_BUF_BYTES`); those get hyper's bare status
//! and the connection is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::error::IngestError;

/// Largest request head (request line and headers) we read.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Longest request target (path and query).
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// hyper's HTTP/1 read buffer: heads up to this size reach [`check`]. Above [`MAX_HEAD_BYTES`]
/// so that our limit, not hyper's, is the one clients meet.
pub const HYPER_MAX_BUF_BYTES: usize = 256 * 1024;
/// hyper's header count limit, above [`MAX_HEADERS`] for the same reason.
pub const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a refused connection's remaining input is read (and discarded) after the answer,
/// so that closing does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_secs(1);

/// Check a parsed request's head against the limits.
pub fn check<B>(request: &Request<B>) -> Result<(), IngestError> {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri > MAX_URI_BYTES {
        return Err(IngestError::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return Err(IngestError::TooManyHeaders { limit: MAX_HEADERS });
    }
    // name + ": " + value + CRLF, as on the wire.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > MAX_HEAD_BYTES {
        return Err(IngestError::HeadTooLarge {
            limit: MAX_HEAD_BYTES,
        });
    }
    Ok(())
}

/// Read the connection's first request head (or HTTP/2 preface).
///
/// `Ok` holds the bytes read so far, to be replayed to hyper; `Err(Some(_))` is the refusal to
/// answer; `Err(None)` means the client closed (or failed) before sending a head.
pub async fn read_first_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Bytes, Option<IngestError>> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        buf.reserve(8192);
        let read = stream.read_buf(&mut buf).await;
        if !matches!(read, Ok(n) if n > 0) {
            return Err(None);
        }
        let preface_len = buf.len().min(H2_PREFACE.len());
        if buf[..preface_len] == H2_PREFACE[..preface_len] {
            if buf.len() >= H2_PREFACE.len() {
                return Ok(buf.freeze());
            }
            continue;
        }
        if validate_head(&buf)? {
            return Ok(buf.freeze());
        }
    }
}

/// True when `buf` holds a complete, acceptable head; false when more bytes are needed.
fn validate_head(buf: &[u8]) -> Result<bool, IngestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            if buf.len() <= MAX_HEAD_BYTES {
                return Ok(false);
            }
            let request_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            return Err(if request_line > MAX_URI_BYTES {
                IngestError::UriTooLong {
                    limit: MAX_URI_BYTES,
                }
            } else {
                IngestError::HeadTooLarge {
                    limit: MAX_HEAD_BYTES,
                }
            });
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(IngestError::TooManyHeaders { limit: MAX_HEADERS })
        }
        Err(err) => return Err(IngestError::MalformedRequest(err.to_string())),
    }
    if request.path.map_or(0, str::len) > MAX_URI_BYTES {
        return Err(IngestError::UriTooLong {
            limit: MAX_URI_BYTES,
        });
    }
    check_framing(request.headers)?;
    Ok(true)
}

/// One unambiguous body length: every `Content-Length` a plain decimal number, all equal, and
/// never combined with `Transfer-Encoding` (request smuggling).
fn check_framing(headers: &[httparse::Header<'_>]) -> Result<(), IngestError> {
    let mut length: Option<&[u8]> = None;
    let content_lengths = headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("content-length"));
    for header in content_lengths {
        let value = header.value.trim_ascii();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
            return Err(IngestError::InvalidContentLength(format!(
                "`{}` is not a byte count",
                String::from_utf8_lossy(header.value)
            )));
        }
        if length.is_some_and(|seen| seen != value) {
            return Err(IngestError::InvalidContentLength(
                "several different Content-Length headers".to_string(),
            ));
        }
        length = Some(value);
    }
    let chunked = headers
        .iter()
        .any(|header| header.name.eq_ignore_ascii_case("transfer-encoding"));
    if length.is_some() && chunked {
        return Err(IngestError::InvalidContentLength(
            "Content-Length and Transfer-Encoding together are ambiguous; send one".to_string(),
        ));
    }
    Ok(())
}

/// Answer a refused head with the JSON error and close the connection.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, err: &IngestError) {
    let body = err.json_body();
    let head = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        err.status(),
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if answer.await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 * 1024];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// A stream that first replays bytes already read from it, and gives hyper's own bare error
/// answers (a later keep-alive request whose head hyper could not parse) the JSON body.
pub struct Rewind<S = TcpStream> {
    prefix: Bytes,
    inner: S,
    /// A JSON answer being written in place of hyper's bare one, and the length of the bare
    /// one (what the write reports once the JSON is out).
    replacing: Option<(Bytes, usize)>,
}

impl<S: AsyncWrite + Unpin> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind {
            prefix,
            inner,
            replacing: None,
        }
    }

    /// Write the JSON answer that replaces hyper's bare one, then report the bare one written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((rest, original)) = &mut self.replacing else {
            return Poll::Ready(Ok(0));
        };
        while !rest.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => rest.advance(n),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let original = *original;
        self.replacing = None;
        Poll::Ready(Ok(original))
    }
}

/// hyper answers a request head it cannot parse (on a keep-alive connection: the first head is
/// read by [`read_first_head`]) with a bare `400`/`414`/`431` head and no body; our own error
/// answers always carry a JSON body. So a complete 4xx head without a body is hyper's, and is
/// replaced by the same error as JSON. `None`: write `written` as it is.
fn json_for_bare_error(written: &[u8]) -> Option<Bytes> {
    let status = written.strip_prefix(b"HTTP/1.1 4")?;
    if !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = String::from_utf8_lossy(written).to_ascii_lowercase();
    let bodiless = head.contains("\r\ncontent-length: 0\r\n") || !head.contains("content-length");
    if !bodiless || head.contains("\r\ncontent-type:") {
        return None;
    }
    let err = match status.get(..2)? {
        b"31" => IngestError::HeadTooLarge {
            limit: MAX_HEAD_BYTES,
        },
        b"14" => IngestError::UriTooLong {
            limit: MAX_URI_BYTES,
        },
        _ => IngestError::MalformedRequest(
            "the request head on this keep-alive connection could not be parsed".into(),
        ),
    };
    let body = err.json_body();
    Some(Bytes::from(format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        err.status(),
        body.len()
    )))
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            self.replacing = json_for_bare_error(buf).map(|json| (json, buf.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|buf| !buf.is_empty());
        if self.replacing.is_none() && first.is_some_and(|buf| buf.starts_with(b"HTTP/1.1 4")) {
            let written: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            self.replacing = json_for_bare_error(&written).map(|json| (json, written.len()));
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(head: &[u8]) -> Result<bool, &'static str> {
        validate_head(head).map_err(|err| err.code())
    }

    #[test]
    fn good_heads_pass_and_partial_heads_ask_for_more() {
        assert_eq!(
            code(b"POST /bulk HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]"),
            Ok(true)
        );
        assert_eq!(code(b"POST /bulk HTTP/1.1\r\nHost: x\r\n"), Ok(false));
        assert_eq!(
            code(b"POST /bulk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(true)
        );
    }

    #[test]
    fn each_problem_has_its_code() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let big = format!("x-big: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD_BYTES));
        let longish = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES));
        for (head, expected) in [
            (format!("GET / HTTP/1.1\r\n{many}\r\n"), "too_many_headers"),
            (format!("GET / HTTP/1.1\r\n{big}"), "head_too_large"),
            (long, "uri_too_long"),
            (longish, "uri_too_long"),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n".into(),
                "invalid_content_length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".into(),
                "invalid_content_length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                "invalid_content_length",
            ),
            (
                "GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n".into(),
                "malformed_request",
            ),
            (
                "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n".into(),
                "malformed_request",
            ),
        ] {
            assert_eq!(code(head.as_bytes()), Err(expected), "{:.60}", head);
        }
    }
}
