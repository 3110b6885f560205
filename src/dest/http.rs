//! One HTTP client layer for every HTTP-speaking destination (Segment, mParticle, webhooks,
//! LaunchDarkly upstream, …), and one status classifier.
//!
//! [`HttpClient`] wraps a pooled `reqwest` client: TLS through rustls with the platform's
//! root certificates, a connect timeout ([`CONNECT_TIMEOUT`]) and a whole-request timeout
//! (the `timeout` option), optional gzip request bodies (the `gzip` option, `flate2`), and
//! `User-Agent: flagstream/<version>`. It counts every request it sends in the destination's
//! request metrics, so HTTP destinations never count their own.
//!
//! ## Classification
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx | delivered |
//! | 429 | throttled (retriable), `Retry-After` honoured |
//! | 408, 5xx | retriable, `Retry-After` honoured |
//! | other 4xx (and 1xx/3xx, which a finished request should not get) | permanent, with the response body (first KiB) in the reason |
//! | connection errors, timeouts | retriable |
//!
//! `Retry-After` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in the
//! past means "now". Reasons never contain the request URL's query (it may carry a key).

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, RETRY_AFTER};
use http::{Method, StatusCode};
use serde::Deserialize;

use super::failure::{Failure, FailureClass, RequestMetrics, RequestResult};
use super::options::{RequestOptions, CONNECT_TIMEOUT};
use super::SendOutcome;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("flagstream/", env!("CARGO_PKG_VERSION"));
/// Most bytes of an error response body quoted in a failure reason.
pub const MAX_QUOTED_BODY_BYTES: usize = 1024;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// HTTP options shared by HTTP destinations (besides `timeout` / `endpoint` in
/// [`RequestOptions`] and the credentials in [`super::options::TokenCredentials`]).
///
/// | option | meaning | default |
/// |---|---|---|
/// | `gzip` | gzip request bodies (`Content-Encoding: gzip`) | `false` |
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HttpOptions {
    #[serde(default)]
    pub gzip: bool,
}

/// A successful (2xx) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The pooled client of one destination.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    gzip: bool,
    requests: RequestMetrics,
}

impl HttpClient {
    /// A client for destination `name` with `request`'s timeout and `http`'s options.
    pub fn new(name: &str, request: &RequestOptions, http: &HttpOptions) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request.timeout()?)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|err| format!("could not create the HTTP client: {err}"))?;
        Ok(HttpClient {
            client,
            gzip: http.gzip,
            requests: RequestMetrics::new(name),
        })
    }

    /// Send one request and classify the answer (see the module doc). `target` names the
    /// destination's target in failure reasons; `headers` should include `Content-Type` and
    /// any authentication.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        mut headers: HeaderMap,
        body: Bytes,
        target: &(dyn Display + Sync),
    ) -> Result<HttpResponse, Failure> {
        let body = self.encode(body, &mut headers, target)?;
        self.send_encoded(method, url, headers, body, target).await
    }

    /// `body` as it goes on the wire: gzipped (and `Content-Encoding: gzip` added to
    /// `headers`) when the `gzip` option is on. For callers that sign the exact bytes sent;
    /// they send the result with [`Self::send_encoded`].
    pub fn encode(
        &self,
        body: Bytes,
        headers: &mut HeaderMap,
        target: &(dyn Display + Sync),
    ) -> Result<Bytes, Failure> {
        if !self.gzip {
            return Ok(body);
        }
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        gzip(&body).map(Bytes::from).map_err(|err| {
            Failure::permanent(format!("{target}: could not gzip the request body: {err}"))
        })
    }

    /// [`Self::send`] for a body already [`Self::encode`]d.
    pub async fn send_encoded(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        target: &(dyn Display + Sync),
    ) -> Result<HttpResponse, Failure> {
        let response = self.exchange(method, url, headers, body, target).await?;
        match classify(
            response.status,
            &response.headers,
            &response.body,
            target,
            SystemTime::now(),
        ) {
            None => Ok(response),
            Some(failure) => Err(failure),
        }
    }
}

impl HttpClient {
    /// Send one request and return the answer whatever its status (REST APIs whose 404 or
    /// 409 mean something, e.g. "table missing", "job already exists"); only transport
    /// errors are failures ([`HttpClient::send`] classifies the rest). The request counts as
    /// failed in the metrics when [`classify`] would fail it.
    pub async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        target: &(dyn Display + Sync),
    ) -> Result<HttpResponse, Failure> {
        let sent = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let result = match sent {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => Ok(HttpResponse {
                        status,
                        headers,
                        body,
                    }),
                    Err(error) => Err(classify_transport_error(error, target)),
                }
            }
            Err(error) => Err(classify_transport_error(error, target)),
        };
        self.requests.record(match &result {
            Ok(response) if response.status.is_success() => RequestResult::Ok,
            Ok(response) => RequestResult::Failed(classify_status_code(response.status.as_u16())),
            Err(failure) => RequestResult::Failed(failure.class),
        });
        result
    }
}

/// A vendor endpoint as reasons and logs name it: "Segment `https://…/v1/batch`".
#[derive(Debug, Clone)]
pub struct VendorUrl {
    pub vendor: &'static str,
    pub url: String,
}

impl Display for VendorUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`", self.vendor, self.url)
    }
}

/// An HTTP Basic `Authorization` value (RFC 7617): `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

impl HttpClient {
    /// POST a request that carries a whole batch: delivered on 2xx, else the classified
    /// failure for the whole batch.
    pub async fn post_batch(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        target: &(dyn Display + Sync),
    ) -> SendOutcome {
        match self.send(Method::POST, url, headers, body, target).await {
            Ok(_) => SendOutcome::Delivered,
            Err(failure) => SendOutcome::Failed(failure),
        }
    }
}

/// `Content-Type: application/json` and HTTP Basic auth (marked sensitive), the headers of
/// JSON APIs authenticated by a key (Segment, mParticle). `None` when the credentials cannot
/// be a header value.
pub fn json_basic_auth_headers(user: &str, password: &str) -> Option<HeaderMap> {
    let mut auth = HeaderValue::from_str(&basic_auth(user, password)).ok()?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, auth);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(headers)
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

/// The classifier: `None` for 2xx, else the failure (see the module doc).
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    target: &dyn Display,
    now: SystemTime,
) -> Option<Failure> {
    if status.is_success() {
        return None;
    }
    let class = classify_status_code(status.as_u16());
    let mut reason = format!("{target}: HTTP {status}");
    if class == FailureClass::Permanent {
        let quoted = quote_body(body);
        if !quoted.is_empty() {
            reason.push_str(": ");
            reason.push_str(&quoted);
        }
    }
    let retry_after = match class {
        FailureClass::Permanent => None,
        _ => retry_after(headers, now),
    };
    Some(Failure::new(class, reason).with_retry_after(retry_after))
}

/// 429 throttled; 408 and 5xx retriable; anything else that is not 2xx permanent.
pub fn classify_status_code(status: u16) -> FailureClass {
    match status {
        429 => FailureClass::Throttled,
        408 | 500..=599 => FailureClass::Retriable,
        _ => FailureClass::Permanent,
    }
}

/// `Retry-After` as a delay from `now`: delta-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first [`MAX_QUOTED_BODY_BYTES`] of `body` as text, cut at a UTF-8 boundary, on one line.
pub fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(MAX_QUOTED_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut quoted: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed_len = quoted.trim_end().len();
    quoted.truncate(trimmed_len);
    if end < text.len() {
        quoted.push('…');
    }
    quoted
}

/// Timeouts and connection errors are retriable; a request that could not be built is not.
fn classify_transport_error(error: reqwest::Error, target: &dyn Display) -> Failure {
    // The URL may carry a key in its query: never quote it.
    let error = error.without_url();
    let text = super::failure::error_chain(&error);
    if error.is_timeout() {
        Failure::retriable(format!("{target}: request timed out: {text}"))
    } else if error.is_connect() {
        Failure::retriable(format!("{target}: could not connect: {text}"))
    } else if error.is_builder() {
        Failure::permanent(format!("{target}: invalid request: {text}"))
    } else {
        Failure::retriable(format!("{target}: request failed: {text}"))
    }
}

#[cfg(test)]
mod tests;
