//! Webhook destination (`webhook+https://HOST/PATH?…`, `webhook+http://…` for plain HTTP):
//! one `POST` per batch.
//!
//! Owns turning a [`Batch`] into one request body (`config`: options, headers; `body`: body
//! formats and the signature) and sending it through the shared [`HttpClient`], whose
//! classifier alone decides what an answer means (2xx delivered; 408, 429, 5xx, timeouts and
//! connection errors retriable, `Retry-After` honoured; other 4xx permanent with the body).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `HOST[:PORT]/PATH` of the receiver (the URL cannot carry a query: options use it) | required |
//! | `format` | `gofeatureflag` (go-feature-flag's webhook envelope `{"meta":{"hostname":…},"events":[…]}`), `json` (array), `ndjson` | `gofeatureflag` for `schema=gofeatureflag`, else `json` |
//! | `secret` | sign each body: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` | unsigned |
//! | `header.NAME` | an extra header (repeatable) | — |
//! | `meta.NAME` | an extra `meta` field of the `gofeatureflag` envelope (`meta.hostname` replaces the host name) | — |
//! | `token` / `username`, `password` | `Authorization: Bearer …` / `Basic …` | none |
//! | `gzip` | gzip the body (`Content-Encoding: gzip`; the signature covers the gzipped bytes sent) | `false` |
//! | `max_bytes` | largest request body; bigger events are dead-lettered | `4MiB` |
//! | `timeout` | per-request timeout | `30s` |
//!
//! ## Invariants
//!
//! 1. One batch = one request; it is delivered only on a 2xx answer.
//! 2. Every request carries `Idempotency-Key: <batch id>`: a batch re-sent after a retry or a
//!    crash has the same id (and the same body), so the receiver can deduplicate.
//! 3. The signature is computed over exactly the body bytes on the wire (after the optional
//!    gzip: receivers verify the raw request body before decoding it, as GitHub documents and
//!    go-feature-flag's receivers do), and the secret never appears in logs or reasons.

mod body;
mod config;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};

pub use body::{signature, write_body};
pub use config::{BodyFormat, WebhookConfig, WebhookOptions};

use super::http::HttpClient;
use super::kind::{BuildContext, DestinationKind};
use super::secrets::Secret;
use super::{Batch, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;

/// The signature header GitHub and go-feature-flag use.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The deduplication header (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Default largest request body.
pub const DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The `webhook+https` (`TLS`) and `webhook+http` destination types.
#[derive(Debug, Clone, Copy)]
pub struct WebhookKind<const TLS: bool>;

impl<const TLS: bool> DestinationKind for WebhookKind<TLS> {
    const SCHEME: &'static str = if TLS { "webhook+https" } else { "webhook+http" };
    const SUMMARY: &'static str = if TLS {
        "HTTPS webhook: one POST per batch (JSON, NDJSON or go-feature-flag), optional HMAC signature"
    } else {
        "plain-HTTP webhook (as webhook+https, without TLS)"
    };
    const EXAMPLE: &'static str = if TLS {
        "webhook+https://hooks.example.com/flags?secret=env:WEBHOOK_SECRET"
    } else {
        "webhook+http://127.0.0.1:8080/events?format=ndjson"
    };
    type Options = WebhookConfig;

    async fn build(
        &self,
        target: &str,
        config: WebhookConfig,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let scheme = if TLS { "https" } else { "http" };
        if target.is_empty() || target.starts_with('/') {
            return Err(context.error(format!(
                "missing host: use {}://HOST[:PORT]/PATH",
                Self::SCHEME
            )));
        }
        let destination = WebhookDestination::new(&format!("{scheme}://{target}"), config, context)
            .map_err(|reason| context.error(reason))?;
        Ok(Arc::new(destination))
    }
}

/// A receiver URL, for reasons and logs.
#[derive(Debug, Clone)]
struct Receiver(String);

impl fmt::Display for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "webhook `{}`", self.0)
    }
}

/// The webhook destination.
pub struct WebhookDestination {
    name: String,
    schema: Schema,
    url: Receiver,
    format: BodyFormat,
    meta: Vec<(String, String)>,
    headers: HeaderMap,
    secret: Option<Secret>,
    max_bytes: usize,
    client: HttpClient,
}

impl fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDestination")
            .field("name", &self.name)
            .field("url", &self.url.0)
            .field("format", &self.format)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookDestination {
    fn new(url: &str, config: WebhookConfig, context: &BuildContext) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|err| format!("`{url}` is not a URL: {err}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{url}` has no host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            // The URL is shown in reasons and logs: credentials belong in secret options.
            return Err(
                "credentials in the URL: use `username` / `password` (as env: or file:) instead"
                    .into(),
            );
        }
        let format = config
            .own
            .format
            .unwrap_or_else(|| BodyFormat::default_for(context.schema));
        let max_bytes = config
            .own
            .max_bytes
            .map_or(DEFAULT_MAX_BYTES, |size| size.0);
        let mut meta = vec![("hostname".to_string(), hostname())];
        for (key, value) in config.meta {
            match meta.iter_mut().find(|(known, _)| *known == key) {
                Some(entry) => entry.1 = value,
                None => meta.push((key, value)),
            }
        }
        let destination = WebhookDestination {
            name: context.name.clone(),
            schema: context.schema,
            url: Receiver(parsed.to_string()),
            format,
            headers: config::static_headers(format, &config.credentials, &config.headers)?,
            meta,
            secret: config.own.secret,
            max_bytes,
            client: HttpClient::new(&context.name, &config.request, &config.http)?,
        };
        if destination.envelope_bytes() + 1 >= max_bytes {
            return Err(format!("option `max_bytes` ({max_bytes}) is too small"));
        }
        Ok(destination)
    }

    fn meta(&self) -> Vec<(&str, &str)> {
        self.meta
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    }

    fn envelope_bytes(&self) -> usize {
        body::envelope_bytes(self.format, &self.meta())
    }

    /// The headers and wire body of `batch`'s request, signed over the bytes sent.
    fn request(&self, batch: &Batch) -> Result<(HeaderMap, Bytes), Failure> {
        let mut body = Vec::with_capacity(batch.payload_bytes() + batch.items.len() + 256);
        write_body(self.format, &self.meta(), &batch.items, &mut body);
        let mut headers = self.headers.clone();
        let invalid = |reason: String| Failure::permanent(format!("{}: {reason}", self.url));
        let key = HeaderValue::from_str(&batch.id).map_err(|_| {
            invalid(format!(
                "batch id `{}` is not a valid header value",
                batch.id
            ))
        })?;
        headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY), key);
        let wire = self
            .client
            .encode(Bytes::from(body), &mut headers, &self.url)?;
        if let Some(secret) = &self.secret {
            let signed = signature(secret.expose().as_bytes(), &wire);
            let value = HeaderValue::from_str(&signed).map_err(|err| invalid(err.to_string()))?;
            headers.insert(HeaderName::from_static(SIGNATURE_HEADER), value);
        }
        Ok((headers, wire))
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let sent = match self.request(batch) {
            Ok((headers, wire)) => {
                self.client
                    .send_encoded(http::Method::POST, &self.url.0, headers, wire, &self.url)
                    .await
            }
            Err(failure) => Err(failure),
        };
        match sent {
            Ok(_) => SendOutcome::Delivered,
            Err(failure) => SendOutcome::Failed(failure),
        }
    }
}

impl Destination for WebhookDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        let room = self.max_bytes - self.envelope_bytes();
        BatchLimits {
            max_bytes: room,
            max_item_bytes: room - 1,
            // The separator (`,` or newline) after each event.
            per_item_overhead: 1,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    /// A webhook has no side-effect-free probe every receiver supports: the options were
    /// validated when it was built, and `flagstream test-destination` sends its test event.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(async { Ok(()) })
    }
}

/// This machine's host name for the go-feature-flag envelope (`meta.hostname`), as
/// go-feature-flag's exporter reports it (`os.Hostname`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "flagstream".to_string())
}
