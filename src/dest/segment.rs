//! Segment destination (`segment:?write_key=env:SEGMENT_WRITE_KEY&region=us`): Segment's
//! HTTP Tracking API batch call, `POST {endpoint}/v1/batch`.
//!
//! Events are mapped by the `segment` schema (`src/event/schema/segment.rs`: track / page /
//! alias calls as LaunchDarkly's Segment integration sends them, `messageId` = the stable
//! event id, `userId` = the context key or `anonymousId` when there is none). This module
//! wraps them as `{"batch":[…],"sentAt":"<now>"}` and authenticates with HTTP Basic, the
//! write key as user and an empty password, as Segment's own libraries do.
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `write_key` | the source's write key (a secret: `env:` / `file:`) | required |
//! | `region` | `us` → `https://api.segment.io`, `eu` → `https://events.eu1.segmentapis.com` | `us` |
//! | `endpoint` | endpoint override (proxy, stand-in) | the region's |
//! | `gzip` | gzip request bodies (Segment accepts `Content-Encoding: gzip`) | `false` |
//! | `timeout` | per-request timeout | `30s` |
//!
//! ## Limits (Segment, "HTTP API source": max request size)
//!
//! ≤ 500 KB per batch request and ≤ 32 KB per message, else `400 Bad Request` for the whole
//! request. [`BatchLimits`] declares both (with KB = 1,000 bytes for the request, which is
//! the stricter reading, and the envelope reserved), so the engine cuts batches within them
//! and dead-letters a larger message with the reason while its neighbours are delivered.
//!
//! ## Invariants
//!
//! 1. Delivered only on 2xx. Segment answers 200 for everything except size and JSON errors
//!    (400, permanent, Segment's text in the reason); 429 and 5xx are retried through the
//!    shared classifier.
//! 2. Re-sending is harmless: Segment deduplicates on `messageId`, which is the event id.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::HeaderMap;
use serde::Deserialize;

use super::http::{json_basic_auth_headers, HttpClient, HttpOptions, VendorUrl};
use super::kind::{BuildContext, DestinationKind};
use super::options::RequestOptions;
use super::secrets::Secret;
use super::{Batch, BatchItem, BatchLimits, DestError, Destination, SendOutcome};
use crate::event::Schema;

/// Most bytes per batch request: 500 KB.
pub const MAX_REQUEST_BYTES: usize = 500_000;
/// Most bytes per message: 32 KB.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Room kept for `{"batch":[` … `],"sentAt":"2026-11-29T08:00:00.000Z"}`.
const ENVELOPE_BYTES: usize = 64;

/// Segment's data regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

impl Region {
    pub fn endpoint(self) -> &'static str {
        match self {
            Region::Us => "https://api.segment.io",
            Region::Eu => "https://events.eu1.segmentapis.com",
        }
    }
}

/// The Segment destination's own options.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SegmentOptions {
    pub write_key: Option<Secret>,
    #[serde(default)]
    pub region: Region,
}

/// The `segment` destination type.
#[derive(Debug, Clone, Copy)]
pub struct SegmentKind;

impl DestinationKind for SegmentKind {
    const SCHEME: &'static str = "segment";
    const SUMMARY: &'static str = "Segment HTTP Tracking API (/v1/batch), `segment` schema";
    const EXAMPLE: &'static str = "segment:?write_key=env:SEGMENT_WRITE_KEY&region=us";
    type Options = (SegmentOptions, RequestOptions, HttpOptions);

    fn default_schema(&self) -> Schema {
        Schema::Segment
    }

    async fn build(
        &self,
        _target: &str,
        (options, request, http): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        if context.schema != Schema::Segment {
            return Err(context.error(format!(
                "Segment takes Segment calls: use `schema=segment` (the default), not `{}`",
                context.schema.name()
            )));
        }
        let write_key = options.write_key.ok_or_else(|| {
            context.error("missing option `write_key` (e.g. write_key=env:SEGMENT_WRITE_KEY)")
        })?;
        let endpoint = request
            .endpoint
            .as_ref()
            .map_or(options.region.endpoint(), |endpoint| endpoint.as_str());
        let headers = json_basic_auth_headers(write_key.expose(), "")
            .ok_or_else(|| context.error("option `write_key` is not valid in an HTTP header"))?;
        Ok(Arc::new(SegmentDestination {
            name: context.name.clone(),
            target: VendorUrl {
                vendor: "Segment",
                url: format!("{endpoint}/v1/batch"),
            },
            headers,
            client: HttpClient::new(&context.name, &request, &http)
                .map_err(|reason| context.error(reason))?,
        }))
    }
}

/// The Segment destination.
pub struct SegmentDestination {
    name: String,
    target: VendorUrl,
    headers: HeaderMap,
    client: HttpClient,
}

impl fmt::Debug for SegmentDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentDestination")
            .field("name", &self.name)
            .field("url", &self.target.url)
            .finish_non_exhaustive()
    }
}

/// `{"batch":[items…],"sentAt":"<sent_at>"}`.
pub fn batch_body(items: &[BatchItem], sent_at: SystemTime) -> Vec<u8> {
    let payload: usize = items.iter().map(|item| item.payload.len() + 1).sum();
    let mut body = Vec::with_capacity(payload + ENVELOPE_BYTES);
    body.extend_from_slice(b"{\"batch\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.payload);
    }
    body.extend_from_slice(b"],\"sentAt\":\"");
    body.extend_from_slice(
        humantime::format_rfc3339_millis(sent_at)
            .to_string()
            .as_bytes(),
    );
    body.extend_from_slice(b"\"}");
    body
}

impl Destination for SegmentDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "segment"
    }

    fn schema(&self) -> Schema {
        Schema::Segment
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_bytes: MAX_REQUEST_BYTES - ENVELOPE_BYTES,
            max_item_bytes: MAX_MESSAGE_BYTES,
            // The `,` between messages.
            per_item_overhead: 1,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        let body = Bytes::from(batch_body(&batch.items, SystemTime::now()));
        Box::pin(
            self.client
                .post_batch(&self.target.url, self.headers.clone(), body, &self.target),
        )
    }

    /// Segment has no endpoint that checks a write key without recording data: the options
    /// were validated when built; `flagstream test-destination` sends its test event.
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{registry, DestinationSpec};

    fn item(payload: &str) -> BatchItem {
        BatchItem::with_payload(Bytes::copy_from_slice(payload.as_bytes()))
    }

    #[test]
    fn body_wraps_messages_with_sent_at() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let body = batch_body(&[item(r#"{"a":1}"#), item(r#"{"b":2}"#)], at);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"batch":[{"a":1},{"b":2}],"sentAt":"2023-11-14T22:13:20.123Z"}"#
        );
    }

    #[tokio::test]
    async fn builds_with_a_write_key_and_refuses_other_schemas_and_missing_keys() {
        let segment = registry::build_named(
            DestinationSpec::parse("segment:?write_key=wk&region=eu").unwrap(),
            "s",
        )
        .await
        .unwrap();
        assert_eq!(
            (segment.kind(), segment.schema()),
            ("segment", Schema::Segment)
        );
        assert!(format!("{segment:?}").contains("events.eu1.segmentapis.com/v1/batch"));
        assert!(!format!("{segment:?}").contains("wk"));
        let limits = segment.limits();
        assert_eq!(limits.max_item_bytes, MAX_MESSAGE_BYTES);
        assert!(limits.max_bytes + ENVELOPE_BYTES <= MAX_REQUEST_BYTES);

        for (url, needle) in [
            ("segment:", "write_key"),
            ("segment:?write_key=wk&region=mars", "region"),
        ] {
            let err = registry::build_named(DestinationSpec::parse(url).unwrap(), "s")
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let mut spec = DestinationSpec::parse("segment:?write_key=wk").unwrap();
        let redaction = registry::prepare(&mut spec).unwrap();
        let err = registry::build(
            &mut spec,
            "s",
            Some(Schema::LaunchDarkly),
            std::path::Path::new("."),
            &redaction.secret,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("schema=segment"), "{err}");
    }
}
