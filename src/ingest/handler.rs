//! One request, start to finish:
//!
//! ```text
//! route → CORS preflight? → authenticate → Content-Length precheck
//!       → read body (capped, reserving in-flight bytes as they arrive) → gunzip (capped) → validate (simd-json) → payload-id seen? → 202
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
//! * Memory: a request's in-flight reservation ([`super::inflight`]) covers every byte it
//!   keeps (its body and, for gzip, the decompressed copy) as soon as it keeps it, until its
//!   append resolved.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;

use crate::event::stored::{encode_header, RequestMeta, StoredMeta};
use crate::event::{self, InboundFormat, InstanceId};
use crate::metrics as m;
use crate::wal::{AppendReceipt, AppendRequest, Wal, WalError};

use super::auth::{authenticate, credential_fingerprint};
use super::body::{self, Encoding};
use super::connection::{ConnectionLimits, Connections};
use super::dedupe::PayloadIds;
use super::error::{json_response, IngestError};
use super::inflight::{ConnectionShare, InflightBudget};
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
    /// Stamped into every stored record (unique event ids across instances).
    instance_id: InstanceId,
    sink: Arc<dyn RecordSink>,
    payload_ids: PayloadIds,
    budget: InflightBudget,
    connections: Arc<Connections>,
}

/// What a successful request produced.
struct Accepted {
    events: u32,
    bytes: usize,
    duplicate: bool,
}

impl Ingest {
    /// `instance_id` is the data dir's ([`super::instance::load_or_create`]).
    pub fn new(
        settings: IngestSettings,
        sink: Arc<dyn RecordSink>,
        instance_id: InstanceId,
    ) -> Self {
        let connections = Connections::new(
            "ingest",
            ConnectionLimits {
                max_connections: settings.max_connections,
                header_timeout: settings.header_timeout,
                idle_timeout: settings.idle_timeout,
                max_per_client: settings.max_connections_per_client,
            },
        );
        Ingest {
            instance_id,
            payload_ids: PayloadIds::new(settings.dedupe_cache_size),
            budget: InflightBudget::new(
                settings.max_inflight_bytes,
                connection_share(&settings),
                settings.inflight_wait,
            ),
            connections: Arc::new(connections),
            sink,
            settings,
        }
    }

    /// Remember again the payload ids stored in the last `--dedupe-recovery-window` (see
    /// [`super::dedupe`]); call before serving. Blocking: reads the WAL.
    pub fn recover_payload_ids(&self, wal: &Wal) -> super::dedupe::Recovered {
        let window = self.settings.dedupe_recovery_window.as_millis() as u64;
        if window == 0 {
            return super::dedupe::Recovered::default();
        }
        let since_ms = unix_ms_now().saturating_sub(window);
        let recovered = self.payload_ids.recover(wal, since_ms);
        metrics::gauge!(m::INGEST_DEDUPE_RECOVERED_IDS).set(recovered.ids as f64);
        recovered
    }

    pub fn settings(&self) -> &IngestSettings {
        &self.settings
    }

    /// A new connection's share of the in-flight budget (put in its requests' extensions).
    pub fn connection_share(&self) -> ConnectionShare {
        self.budget.connection_share()
    }

    /// The listener's connection slots (the admin server reports their saturation).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
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
            Err(err) => {
                let response = refuse("unknown", &err);
                record("unknown", &response, started);
                return response;
            }
        };
        let cors = route.cors.then_some(origin);
        if route.action == Action::Preflight {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            add_cors(&mut response, cors.as_ref(), true);
            return response;
        }
        let mut response = match self.ingest(&route, request).await {
            Ok(accepted) => success(&route, &accepted),
            Err(err) => refuse(route.name, &err),
        };
        add_cors(&mut response, cors.as_ref(), false);
        record(route.name, &response, started);
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

        // Held until the append resolved: it covers every byte this request keeps.
        let share = parts.extensions.get::<ConnectionShare>();
        let mut reservation = self.budget.reservation(share);
        let body = if route.action == Action::Pixel {
            let body = body::pixel_payload(parts.uri.query(), limit)?;
            reservation.grow(body.len()).await?;
            body
        } else {
            let encoding = body::encoding(&parts.headers)?;
            if content_length(&parts.headers).is_some_and(|length| length > limit) {
                body::drain(request_body, limit, DRAIN_PATIENCE).await;
                return Err(IngestError::BodyTooLarge { limit });
            }
            // A slow sender must not hold a connection (or its bytes) forever: the whole body
            // has a deadline, and so does every gap in it (trickling bodies).
            let deadline = self.settings.body_timeout;
            let stall = self.settings.body_stall_timeout;
            let collect = body::collect(request_body, limit, &mut reservation, stall);
            let raw = tokio::time::timeout(deadline, collect)
                .await
                .map_err(|_| IngestError::BodyTimeout(deadline))??;
            match encoding {
                Encoding::Identity => raw,
                Encoding::Gzip => body::gunzip(&raw, limit, &mut reservation).await?,
            }
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

        // What an upstream forwarder needs to replay the request (never the key itself).
        let credential = credential_fingerprint(&route.credential, &parts.headers);
        let request_meta = RequestMeta {
            path: parts.uri.path(),
            credential: &credential,
            user_agent: header_text(&parts.headers, header::USER_AGENT.as_str()).unwrap_or(""),
            ld_user_agent: header_text(&parts.headers, "x-launchdarkly-user-agent").unwrap_or(""),
            wrapper: header_text(&parts.headers, "x-launchdarkly-wrapper").unwrap_or(""),
        };
        let meta = StoredMeta {
            format: Some(route.format),
            instance_id: Some(self.instance_id),
            schema_version: header_text(&parts.headers, "x-launchdarkly-event-schema")
                .and_then(|text| text.parse::<u8>().ok()),
            environment: &environment,
            payload_id: payload_id.unwrap_or(""),
            tags: header_text(&parts.headers, "x-launchdarkly-tags").unwrap_or(""),
            user_agent: header_text(&parts.headers, "x-launchdarkly-user-agent")
                .or_else(|| header_text(&parts.headers, header::USER_AGENT.as_str()))
                .unwrap_or(""),
            request: request_meta,
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
}

/// Count and log a refusal; its JSON response.
fn refuse(route: &'static str, err: &IngestError) -> Response<Full<Bytes>> {
    metrics::counter!(m::INGEST_REJECTED_TOTAL, "route" => route, "reason" => err.code())
        .increment(1);
    if err.status().is_server_error() {
        tracing::warn!(route, error = %err, "request refused");
    } else {
        tracing::debug!(route, error = %err, "request refused");
    }
    err.to_response()
}

/// Per-request metrics.
fn record(route: &'static str, response: &Response<Full<Bytes>>, started: Instant) {
    metrics::counter!(
        m::INGEST_REQUESTS_TOTAL,
        "route" => route,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    metrics::histogram!(m::INGEST_REQUEST_DURATION_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
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

/// Most bytes one connection's requests may hold together: room for one gzip body and its
/// decompressed copy, or a quarter of the budget when that is more.
fn connection_share(settings: &IngestSettings) -> usize {
    let one_gzip_body = settings.max_body_bytes.saturating_mul(2);
    one_gzip_body.max(settings.max_inflight_bytes / 4)
}

/// How long a refused oversized body may be drained so its sender can read the 413.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

/// How long a request waits for in-flight room before it gets 503 `overloaded`.
pub const DEFAULT_INFLIGHT_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use tokio::sync::Notify;

    use super::*;
    use crate::event::stored;
    use crate::ingest::Environments;

    /// What the fake WAL does with appends.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Store,
        Full,
        Fatal,
        /// Store, but only after `release` is notified.
        Block,
    }

    struct FakeSink {
        behaviour: Mutex<Behaviour>,
        records: Mutex<Vec<(u8, u32, Vec<u8>)>>,
        release: Notify,
    }

    impl FakeSink {
        fn new(behaviour: Behaviour) -> Arc<Self> {
            Arc::new(FakeSink {
                behaviour: Mutex::new(behaviour),
                records: Mutex::new(Vec::new()),
                release: Notify::new(),
            })
        }
        fn set(&self, behaviour: Behaviour) {
            *self.behaviour.lock().unwrap() = behaviour;
        }
        fn records(&self) -> Vec<(u8, u32, Vec<u8>)> {
            self.records.lock().unwrap().clone()
        }
    }

    impl RecordSink for FakeSink {
        fn append<'a>(
            &'a self,
            request: AppendRequest<'a>,
        ) -> BoxFuture<'a, Result<AppendReceipt, WalError>> {
            Box::pin(async move {
                let behaviour = *self.behaviour.lock().unwrap();
                match behaviour {
                    Behaviour::Full => {
                        return Err(WalError::Full {
                            needed: 1,
                            available: 0,
                        })
                    }
                    Behaviour::Fatal => return Err(WalError::Fatal("fdatasync failed".into())),
                    Behaviour::Block => self.release.notified().await,
                    Behaviour::Store => {}
                }
                let mut records = self.records.lock().unwrap();
                records.push((request.tag, request.event_count, request.parts.concat()));
                Ok(AppendReceipt {
                    seq: records.len() as u64 - 1,
                })
            })
        }
    }

    const BULK: &str = r#"[{"kind":"index","creationDate":1,"context":{"kind":"user","key":"u"}},
        {"kind":"custom","creationDate":2,"key":"purchase","context":{"kind":"user","key":"u"}}]"#;

    const INSTANCE: InstanceId = InstanceId([0x42; 16]);

    fn settings() -> IngestSettings {
        IngestSettings {
            environments: Environments::parse_flags(&["prod=sdk-1,client-1,api-1".into()]).unwrap(),
            ..IngestSettings::default()
        }
    }

    fn request(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    }

    async fn send(
        ingest: &Ingest,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = ingest.handle(request).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    fn error_code(body: &[u8]) -> String {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(
            json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{json}"
        );
        json["error"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn bulk_is_stored_with_its_metadata_and_answered_202() {
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let (status, _, body) = send(
            &ingest,
            request(
                "POST",
                "/bulk",
                &[
                    ("authorization", "sdk-1"),
                    ("x-launchdarkly-payload-id", "p-1"),
                    ("x-launchdarkly-event-schema", "4"),
                    ("x-launchdarkly-tags", "application-id/web"),
                    ("user-agent", "PythonClient/9.18.2"),
                ],
                BULK.into(),
            ),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let records = sink.records();
        assert_eq!(records.len(), 1);
        let (tag, events, payload) = &records[0];
        assert_eq!(*tag, InboundFormat::LdBulk.code());
        assert_eq!(*events, 2);
        let stored = stored::decode(payload).unwrap();
        assert_eq!(stored.environment, "prod");
        assert_eq!(stored.instance_id, Some(INSTANCE));
        assert_eq!(stored.payload_id, Some("p-1"));
        assert_eq!(stored.schema_version, Some(4));
        assert_eq!(stored.tags, Some("application-id/web"));
        assert_eq!(stored.user_agent, Some("PythonClient/9.18.2"));
        assert_eq!(stored.body, BULK.as_bytes(), "stored byte for byte");
        assert_eq!(stored.request.path, "/bulk");
        assert_eq!(stored.request.user_agent, "PythonClient/9.18.2");
        assert_eq!(
            stored.request.credential,
            stored::credential_fingerprint("sdk-1")
        );
        assert!(!payload.windows(5).any(|w| w == b"sdk-1"), "key not stored");
    }

    #[tokio::test]
    async fn gzip_bodies_are_stored_decompressed() {
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(BULK.as_bytes()).unwrap();
        let gz = encoder.finish().unwrap();
        let (status, _, _) = send(
            &ingest,
            request(
                "POST",
                "/mobile/events/bulk",
                &[("authorization", "sdk-1"), ("content-encoding", "gzip")],
                gz,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let stored = stored::decode(&sink.records()[0].2).unwrap().body.to_vec();
        assert_eq!(stored, BULK.as_bytes());
    }

    #[tokio::test]
    async fn a_retried_payload_is_acknowledged_without_a_second_append() {
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        for _ in 0..3 {
            let (status, _, _) = send(
                &ingest,
                request(
                    "POST",
                    "/bulk",
                    &[
                        ("authorization", "sdk-1"),
                        ("x-launchdarkly-payload-id", "same"),
                    ],
                    BULK.into(),
                ),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        assert_eq!(sink.records().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_append_is_not_remembered_so_the_retry_is_stored() {
        let sink = FakeSink::new(Behaviour::Full);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let post = || {
            request(
                "POST",
                "/bulk",
                &[
                    ("authorization", "sdk-1"),
                    ("x-launchdarkly-payload-id", "retry-me"),
                ],
                BULK.into(),
            )
        };
        let (status, headers, body) = send(&ingest, post()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(error_code(&body), "wal_full");
        sink.set(Behaviour::Fatal);
        let (status, headers, body) = send(&ingest, post()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.get(header::RETRY_AFTER).is_none());
        assert_eq!(error_code(&body), "wal_unavailable");
        sink.set(Behaviour::Store);
        assert_eq!(send(&ingest, post()).await.0, StatusCode::ACCEPTED);
        assert_eq!(sink.records().len(), 1);
    }

    #[tokio::test]
    async fn refusals_store_nothing_and_each_has_its_status() {
        let sink = FakeSink::new(Behaviour::Store);
        let mut small = settings();
        small.max_body_bytes = 64 * 1024;
        let ingest = Ingest::new(small, sink.clone(), INSTANCE);
        let auth = ("authorization", "sdk-1");
        let cases: Vec<(Request<Full<Bytes>>, StatusCode, &str)> = vec![
            (
                request("POST", "/bulk", &[auth], b"[{\"kind\":".to_vec()),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                request("POST", "/bulk", &[auth], b"{\"kind\":\"custom\"}".to_vec()),
                StatusCode::BAD_REQUEST,
                "wrong_shape",
            ),
            (
                request("POST", "/bulk", &[("authorization", "nope")], BULK.into()),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request("POST", "/bulk", &[], BULK.into()),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request("POST", "/bulk", &[auth], vec![b' '; 64 * 1024 + 1]),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                request(
                    "POST",
                    "/bulk",
                    &[auth, ("content-encoding", "br")],
                    BULK.into(),
                ),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
            ),
            (
                request(
                    "POST",
                    "/bulk",
                    &[auth, ("content-encoding", "gzip")],
                    BULK.into(),
                ),
                StatusCode::BAD_REQUEST,
                "invalid_gzip",
            ),
            (
                request("GET", "/bulk", &[auth], vec![]),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                request("POST", "/nope", &[auth], BULK.into()),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                request("GET", "/a/client-1.gif", &[], vec![]),
                StatusCode::BAD_REQUEST,
                "invalid_pixel_payload",
            ),
        ];
        for (request, status, code) in cases {
            let what = format!("{} {}", request.method(), request.uri());
            let (got, _, body) = send(&ingest, request).await;
            assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
            assert_eq!(error_code(&body), code, "{what}");
        }
        assert!(sink.records().is_empty(), "nothing partial is stored");
    }

    #[tokio::test]
    async fn browser_routes_answer_cors_and_the_pixel_is_decoded() {
        use base64::Engine;
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let (status, headers, _) = send(
            &ingest,
            request(
                "OPTIONS",
                "/events/bulk/client-1",
                &[("origin", "https://app.example")],
                vec![],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("X-LaunchDarkly-Payload-ID"));
        let (status, headers, _) = send(
            &ingest,
            request("POST", "/events/bulk/client-1", &[], BULK.into()),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let (status, headers, _) = send(
            &ingest,
            request("POST", "/events/bulk/unknown-env", &[], BULK.into()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "errors carry CORS too"
        );

        let d = base64::engine::general_purpose::STANDARD.encode(BULK);
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("d", &d)
            .finish();
        let (status, headers, body) = send(
            &ingest,
            request("GET", &format!("/a/client-1.gif?{query}"), &[], vec![]),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(headers[header::CONTENT_TYPE], "image/gif");
        assert_eq!(&body[..6], b"GIF89a");
        let records = sink.records();
        assert_eq!(records.len(), 2);
        assert_eq!(stored::decode(&records[1].2).unwrap().body, BULK.as_bytes());
    }

    #[tokio::test]
    async fn goff_collector_and_generic_answers() {
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let goff = r#"{"meta":{"provider":"py"},"events":[{"kind":"feature","userKey":"u","creationDate":1,"key":"f","variation":"on","value":true,"default":false}]}"#;
        let (status, _, body) = send(
            &ingest,
            request(
                "POST",
                "/v1/data/collector",
                &[("x-api-key", "api-1")],
                goff.into(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["ingestedContentCount"], 1);
        let (status, _, body) = send(
            &ingest,
            request(
                "POST",
                "/v1/events",
                &[("authorization", "Bearer api-1")],
                BULK.into(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["accepted"], 2);
    }

    /// A POST /bulk whose body is `frames`, answered: status, error code, and whether the
    /// in-flight budget was returned.
    async fn slow_body<S>(frames: S) -> (StatusCode, String, Duration, bool)
    where
        S: futures::Stream<Item = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>
            + Send,
    {
        let sink = FakeSink::new(Behaviour::Store);
        let ingest = Ingest::new(settings(), sink.clone(), INSTANCE);
        let request = Request::builder()
            .method("POST")
            .uri("/bulk")
            .header("authorization", "sdk-1")
            .header("content-length", "100")
            .body(http_body_util::StreamBody::new(frames))
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = ingest.handle(request).await;
        let took = started.elapsed();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(sink.records().is_empty());
        let returned = ingest.budget.available() == ingest.budget.capacity();
        (status, error_code(&body), took, returned)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_a_408_after_the_stall_timeout() {
        let one_byte = futures::stream::iter([Ok(hyper::body::Frame::data(Bytes::from("[")))]);
        let (status, code, took, returned) = slow_body(futures::StreamExt::chain(
            one_byte,
            futures::stream::pending(),
        ))
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::REQUEST_TIMEOUT, "body_stalled")
        );
        assert_eq!(took, crate::ingest::DEFAULT_BODY_STALL_TIMEOUT);
        assert!(returned, "the reservation is returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_a_408_at_the_body_deadline() {
        let gap = crate::ingest::DEFAULT_BODY_STALL_TIMEOUT / 2;
        let trickle = futures::stream::unfold((), move |()| async move {
            tokio::time::sleep(gap).await;
            Some((Ok(hyper::body::Frame::data(Bytes::from(" "))), ()))
        });
        let (status, code, took, returned) = slow_body(trickle).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        );
        assert_eq!(took, crate::ingest::DEFAULT_BODY_TIMEOUT);
        assert!(returned, "the reservation is returned");
    }

    #[tokio::test]
    async fn in_flight_bytes_are_bounded() {
        let sink = FakeSink::new(Behaviour::Block);
        let mut tight = settings();
        tight.max_body_bytes = 4096;
        tight.max_inflight_bytes = 4096;
        tight.inflight_wait = Duration::from_millis(50);
        let ingest = Arc::new(Ingest::new(tight, sink.clone(), INSTANCE));
        let first = {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                let mut body = BULK.as_bytes().to_vec();
                body.resize(3000, b' ');
                send(
                    &ingest,
                    request(
                        "POST",
                        "/bulk",
                        &[("authorization", "sdk-1"), ("content-length", "3000")],
                        body,
                    ),
                )
                .await
                .0
            })
        };
        // Wait until the first request holds its permits (it blocks inside the append).
        while ingest.budget.available() == 4096 {
            tokio::task::yield_now().await;
        }
        let mut body = BULK.as_bytes().to_vec();
        body.resize(2000, b' ');
        let (status, headers, body) = send(
            &ingest,
            request(
                "POST",
                "/bulk",
                &[("authorization", "sdk-1"), ("content-length", "2000")],
                body,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&body), "overloaded");
        assert_eq!(headers[header::RETRY_AFTER], "1");
        sink.release.notify_one();
        assert_eq!(first.await.unwrap(), StatusCode::ACCEPTED);
        assert_eq!(ingest.budget.available(), 4096, "permits are returned");
    }
}
