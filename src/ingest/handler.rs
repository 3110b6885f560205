//! One request, start to finish:
//!
//! ```text
//! route → CORS preflight? → authenticate → Content-Length precheck → reserve in-flight bytes
//!       → read body (capped) → gunzip (capped) → validate (simd-json) → payload-id seen? → 202
//!       → append [stored header, body] to the WAL → wait until durable → remember payload id → 202
//! ```
//!
//! Invariants:
//! * The success status is sent only after the WAL append resolved, which with
//!   `--wal-sync always` means after an fdatasync covering the record.
//! * The append runs in its own task: a client that hangs up mid-append cannot cancel a
//!   half-finished append, and graceful shutdown waits for it like any in-flight request.
//! * A refused request stored nothing; the body is stored byte for byte as received (after
//!   gunzip), behind the [`crate::event::stored`] header.
//! * Memory: a request holds in-flight permits for every byte it may keep (its body and, for
//!   gzip, the decompressed copy) from before it reads until after its append resolved.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::event::stored::{encode_header, StoredMeta};
use crate::event::{self, InboundFormat};
use crate::metrics as m;
use crate::wal::{AppendReceipt, AppendRequest, Wal, WalError};

use super::auth::authenticate;
use super::body::{self, Encoding};
use super::dedupe::PayloadIds;
use super::error::{json_response, IngestError};
use super::routes::{match_route, Action, Route};
use super::IngestSettings;

/// Where accepted bodies go: the WAL in production. A trait so the request pipeline can be
/// tested against WAL outcomes (full, fatal) that are hard to produce on a real disk.
pub trait RecordSink: Send + Sync + 'static {
    /// Append one record; resolves when it is durable.
    fn append<'a>(
        &'a self,
        request: AppendRequest<'a>,
    ) -> BoxFuture<'a, Result<AppendReceipt, WalError>>;
}

impl RecordSink for Wal {
    fn append<'a>(
        &'a self,
        request: AppendRequest<'a>,
    ) -> BoxFuture<'a, Result<AppendReceipt, WalError>> {
        Box::pin(Wal::append(self, request))
    }
}

/// A 1×1 transparent GIF, the answer browsers expect from the pixel route.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

/// Headers browsers may send cross-origin (LaunchDarkly's JS SDK set, as ld-relay allows them).
const CORS_ALLOWED_HEADERS: &str = "Accept, Content-Type, Content-Length, Content-Encoding, \
     X-LaunchDarkly-User-Agent, X-LaunchDarkly-Payload-ID, X-LaunchDarkly-Wrapper, \
     X-LaunchDarkly-Event-Schema, X-LaunchDarkly-Tags";

/// The shared state of the ingest server.
pub struct Ingest {
    settings: IngestSettings,
    sink: Arc<dyn RecordSink>,
    payload_ids: PayloadIds,
    inflight: Arc<Semaphore>,
    inflight_capacity: usize,
}

/// What a successful request produced.
struct Accepted {
    events: u32,
    bytes: usize,
    duplicate: bool,
}

impl Ingest {
    pub fn new(settings: IngestSettings, sink: Arc<dyn RecordSink>) -> Self {
        let inflight_capacity = settings.max_inflight_bytes.min(Semaphore::MAX_PERMITS);
        Ingest {
            payload_ids: PayloadIds::new(settings.dedupe_cache_size),
            inflight: Arc::new(Semaphore::new(inflight_capacity)),
            inflight_capacity,
            sink,
            settings,
        }
    }

    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    /// Answer one request. Never fails: every problem becomes a JSON error response.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let origin = request.headers().get(header::ORIGIN).cloned();
        let route = match match_route(request.method(), request.uri().path()) {
            Ok(route) => route,
            Err(err) => return self.finish("unknown", None, started, Err(err)),
        };
        let name = route.name;
        let cors = route.cors.then_some(origin);
        if route.action == Action::Preflight {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            add_cors(&mut response, cors.as_ref(), true);
            return response;
        }
        let outcome = self.ingest(&route, request).await;
        let response = match &outcome {
            Ok(accepted) => success(&route, accepted),
            Err(_) => Response::new(Full::new(Bytes::new())),
        };
        let mut response = self.finish(name, Some(response), started, outcome.map(|_| ()));
        add_cors(&mut response, cors.as_ref(), false);
        response
    }

    /// Record metrics and turn an error into its response.
    fn finish(
        &self,
        route: &'static str,
        response: Option<Response<Full<Bytes>>>,
        started: Instant,
        outcome: Result<(), IngestError>,
    ) -> Response<Full<Bytes>> {
        let response = match outcome {
            Ok(()) => response.unwrap_or_else(|| Response::new(Full::new(Bytes::new()))),
            Err(err) => {
                metrics::counter!(m::INGEST_REJECTED_TOTAL, "route" => route, "reason" => err.code())
                    .increment(1);
                if err.status().is_server_error() {
                    tracing::warn!(route, error = %err, "request refused");
                } else {
                    tracing::debug!(route, error = %err, "request refused");
                }
                err.to_response()
            }
        };
        metrics::counter!(
            m::INGEST_REQUESTS_TOTAL,
            "route" => route,
            "status" => response.status().as_str().to_owned()
        )
        .increment(1);
        metrics::histogram!(m::INGEST_REQUEST_DURATION_SECONDS, "route" => route)
            .record(started.elapsed().as_secs_f64());
        response
    }

    async fn ingest<B>(&self, route: &Route, request: Request<B>) -> Result<Accepted, IngestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let received_at_ms = unix_ms_now();
        let (parts, request_body) = request.into_parts();
        let environment = authenticate(
            &self.settings.environments,
            &route.credential,
            &parts.headers,
        )?;
        let limit = self.settings.max_body_bytes;

        let (body, _permit) = if route.action == Action::Pixel {
            let permit = self.reserve(limit).await?;
            (body::pixel_payload(parts.uri.query(), limit)?, permit)
        } else {
            let encoding = body::encoding(&parts.headers)?;
            let declared = content_length(&parts.headers);
            if declared.is_some_and(|length| length > limit) {
                return Err(IngestError::BodyTooLarge { limit });
            }
            let raw_weight = declared.unwrap_or(limit);
            let weight = match encoding {
                Encoding::Identity => raw_weight,
                Encoding::Gzip => raw_weight.saturating_add(limit),
            };
            let permit = self.reserve(weight).await?;
            let raw = body::collect(request_body, limit).await?;
            let body = match encoding {
                Encoding::Identity => raw,
                Encoding::Gzip => body::gunzip(&raw, limit)?,
            };
            (body, permit)
        };

        let events = event::validate(route.format, &body).map_err(IngestError::Invalid)?;
        let payload_id = header_text(&parts.headers, "x-launchdarkly-payload-id");
        if let Some(id) = payload_id {
            if self.payload_ids.seen(&environment, id) {
                metrics::counter!(m::INGEST_DUPLICATE_PAYLOADS_TOTAL).increment(1);
                return Ok(Accepted {
                    events,
                    bytes: body.len(),
                    duplicate: true,
                });
            }
        }

        let meta = StoredMeta {
            format: Some(route.format),
            schema_version: header_text(&parts.headers, "x-launchdarkly-event-schema")
                .and_then(|text| text.parse::<u8>().ok()),
            environment: &environment,
            payload_id: payload_id.unwrap_or(""),
            tags: header_text(&parts.headers, "x-launchdarkly-tags").unwrap_or(""),
            user_agent: header_text(&parts.headers, "x-launchdarkly-user-agent")
                .or_else(|| header_text(&parts.headers, header::USER_AGENT.as_str()))
                .unwrap_or(""),
        };
        let mut header = Vec::with_capacity(64);
        encode_header(&meta, &mut header);
        let length = body.len();
        let sink = self.sink.clone();
        let tag = route.format.code();
        let append = tokio::spawn(async move {
            let parts: [&[u8]; 2] = [&header, &body];
            sink.append(AppendRequest {
                tag,
                event_count: events,
                received_at_ms,
                parts: &parts,
            })
            .await
        });
        match append.await {
            Ok(Ok(_receipt)) => {}
            Ok(Err(err)) => return Err(IngestError::from(err)),
            Err(join) => {
                return Err(IngestError::WalUnavailable(format!(
                    "append task failed: {join}"
                )))
            }
        }
        if let Some(id) = payload_id {
            self.payload_ids.remember(&environment, id);
        }
        metrics::counter!(m::INGEST_EVENTS_TOTAL, "route" => route.name).increment(events.into());
        metrics::counter!(m::INGEST_BYTES_TOTAL, "route" => route.name).increment(length as u64);
        Ok(Accepted {
            events,
            bytes: length,
            duplicate: false,
        })
    }

    /// Wait (bounded) for room for `weight` body bytes.
    async fn reserve(&self, weight: usize) -> Result<InflightPermit, IngestError> {
        let weight = weight.clamp(1, self.inflight_capacity.min(u32::MAX as usize));
        let acquire = self.inflight.clone().acquire_many_owned(weight as u32);
        match tokio::time::timeout(self.settings.inflight_wait, acquire).await {
            Ok(Ok(permit)) => {
                metrics::gauge!(m::INGEST_INFLIGHT_BYTES).increment(weight as f64);
                Ok(InflightPermit {
                    _permit: permit,
                    weight,
                })
            }
            Ok(Err(_closed)) => Err(IngestError::ShuttingDown),
            Err(_elapsed) => Err(IngestError::Overloaded),
        }
    }
}

/// In-flight bytes held by one request; returned (and the gauge lowered) on drop.
struct InflightPermit {
    _permit: OwnedSemaphorePermit,
    weight: usize,
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        metrics::gauge!(m::INGEST_INFLIGHT_BYTES).decrement(self.weight as f64);
    }
}

fn success(route: &Route, accepted: &Accepted) -> Response<Full<Bytes>> {
    tracing::trace!(
        route = route.name,
        events = accepted.events,
        bytes = accepted.bytes,
        duplicate = accepted.duplicate,
        "accepted"
    );
    match (route.format, route.action) {
        (_, Action::Pixel) => {
            let mut response = Response::new(Full::new(Bytes::from_static(PIXEL_GIF)));
            *response.status_mut() = StatusCode::ACCEPTED;
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
            response
        }
        (InboundFormat::GoffCollector, _) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "ingestedContentCount": accepted.events }),
        ),
        (InboundFormat::Generic, _) => json_response(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": accepted.events }),
        ),
        _ => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::ACCEPTED;
            response
        }
    }
}

fn add_cors(
    response: &mut Response<Full<Bytes>>,
    cors: Option<&Option<HeaderValue>>,
    preflight: bool,
) {
    let Some(origin) = cors else { return };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        origin
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("*")),
    );
    if origin.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(CORS_ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("300"),
        );
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Date"),
        );
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A header as text, if present, valid and not empty.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    (!text.is_empty()).then_some(text)
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a request waits for in-flight room before it gets 503 `overloaded`.
pub const DEFAULT_INFLIGHT_WAIT: Duration = Duration::from_secs(10);
