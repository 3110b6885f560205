//! The admin listener (separate address, loopback by default): health, readiness, metrics and
//! destination control.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves HTTP at all |
//! | `GET /readyz` | 200 when recovery finished and the WAL is healthy; else 503 with the reason |
//! | `GET /metrics` | Prometheus text exposition (every name in [`crate::metrics`]) |
//! | `GET /v1/destinations` | state, cursor, lag (records / bytes / seconds), retry state, dead letters; plus `wal`: seqs, size, corrupt records |
//! | `GET /v1/destinations/{name}` | the same for one destination |
//! | `POST /v1/destinations/{name}/pause` / `resume` | stop / restart sending; answers the new status |
//! | `POST /v1/destinations`, `PUT` / `DELETE /v1/destinations/{name}` | create, change, delete while running ([`destinations`]) |
//! | `/v1/dead-letters…` | list, show and redrive dead letters ([`dead_letters`]) |
//! | `POST /v1/destinations/{name}/rewind` | move the cursor back to a time / seq / `earliest` and deliver again (`admin/rewind.rs`) |
//!
//! The admin server starts *before* the WAL is recovered, so `/healthz` and `/readyz` (503
//! `recovering`) answer during a long recovery; the WAL and the delivery engine are attached
//! once they exist. Errors use the ingest shape `{"error": "...", "detail": "..."}`.
//!
//! The listener runs the ingest accept loop ([`crate::ingest::server::serve_listener`]): the
//! same header and idle deadlines, head limits and idle-connection shedding.
//!
//! ## Cross-origin requests
//!
//! The admin API sends no CORS headers, but a browser still *delivers* "simple" cross-origin
//! requests (a form post, a `text/plain` fetch) before it looks at the answer, so any web page
//! open on the host could pause a destination. State-changing requests (anything but GET and
//! HEAD) are therefore refused unless they are evidently not from another origin:
//!
//! * an `Origin` header naming another origin than the request's `Host` (or `null`), or a
//!   `Sec-Fetch-Site` other than `same-origin`/`none`, is 403 `cross_origin`;
//! * a `Content-Type` other than `application/json` is 415 `json_required`: that content type
//!   makes a browser send a CORS preflight, which this API never approves.
//!
//! A request without `Content-Type` and without `Origin` (curl, scripts, Prometheus tooling)
//! is accepted: browsers attach `Origin` to every cross-origin POST. A request carrying the
//! admin token needs none of this: a browser never adds `Authorization` to a cross-origin
//! request without a preflight, which this API never approves.
//!
//! ## Access
//!
//! With `--admin-token`, every route but the probes needs the bearer token ([`auth`]); a
//! refusal is 401 `unauthorized` with `WWW-Authenticate: Bearer`.

pub mod auth;
pub mod dead_letters;
pub mod destinations;
pub mod readiness;
mod rewind;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::destination_set::DestinationSet;
use crate::delivery::{Delivery, DeliveryError};
use crate::ingest::connection::{ConnectionLimits, Connections};
use crate::ingest::server::serve_listener;
use crate::metrics as m;
use crate::wal::{Wal, WalStats};

pub use auth::AdminAuth;
pub use readiness::{Phase, Readiness};

/// Everything the admin routes read. Shared with `main`, which attaches parts as they start.
pub struct Admin {
    prometheus: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    auth: AdminAuth,
    wal: OnceLock<Wal>,
    delivery: OnceLock<Delivery>,
    destination_set: OnceLock<Arc<DestinationSet>>,
    ingest_connections: OnceLock<Arc<Connections>>,
}

impl Admin {
    /// `prometheus` is `None` when no recorder is installed (then `/metrics` is 404).
    pub fn new(prometheus: Option<PrometheusHandle>, readiness: Arc<Readiness>) -> Self {
        Admin {
            prometheus,
            readiness,
            auth: AdminAuth::open(),
            wal: OnceLock::new(),
            delivery: OnceLock::new(),
            destination_set: OnceLock::new(),
            ingest_connections: OnceLock::new(),
        }
    }

    /// Guard the API with `auth` (see [`auth`]); the default is open.
    pub fn with_auth(mut self, auth: AdminAuth) -> Self {
        self.auth = auth;
        self
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Attach the recovered WAL (for readiness and WAL gauges).
    pub fn attach_wal(&self, wal: Wal) {
        let _ = self.wal.set(wal);
    }

    /// Attach the running delivery engine (for `/v1/destinations`).
    pub fn attach_delivery(&self, delivery: Delivery) {
        let _ = self.delivery.set(delivery);
    }

    /// Attach the destination set (for creating, changing and deleting destinations).
    pub fn attach_destination_set(&self, set: Arc<DestinationSet>) {
        let _ = self.destination_set.set(set);
    }

    /// Attach the ingest listener's connection slots (`/readyz` fails while they are all busy).
    pub fn attach_ingest_connections(&self, connections: Arc<Connections>) {
        let _ = self.ingest_connections.set(connections);
    }

    /// Answer one admin request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if let Err(refusal) = self
            .auth
            .check(auth::RouteClass::of(&path), request.headers())
        {
            tracing::warn!(%method, path, "admin request refused: {refusal}");
            return unauthorized(refusal);
        }
        if !self.auth.requires_token() && !matches!(method, Method::GET | Method::HEAD) {
            if let Some(refusal) = cross_origin_refusal(request.headers()) {
                tracing::warn!(%method, path, "admin request refused: {}", refusal.status());
                return refusal;
            }
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => {
                json(StatusCode::OK, serde_json::json!({"status": "ok"}))
            }
            (&Method::GET, ["readyz"]) => self.ready(),
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::GET, ["v1", "destinations"]) => match self.delivery.get() {
                Some(delivery) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "destinations": delivery
                            .statuses()
                            .into_iter()
                            .map(|status| self.with_source(status))
                            .collect::<Vec<_>>(),
                        "wal": self.wal.get().map(|wal| wal_summary(&wal.stats())),
                    }),
                ),
                None => not_ready("delivery has not started yet"),
            },
            (&Method::POST, ["v1", "destinations"]) => match self.destination_set.get() {
                Some(set) => destinations::create_or_update(set, None, request).await,
                None => not_ready("delivery has not started yet"),
            },
            (&Method::PUT, ["v1", "destinations", name]) => match self.destination_set.get() {
                Some(set) => destinations::create_or_update(set, Some(name), request).await,
                None => not_ready("delivery has not started yet"),
            },
            (&Method::DELETE, ["v1", "destinations", name]) => match self.destination_set.get() {
                Some(set) => destinations::delete(set, name).await,
                None => not_ready("delivery has not started yet"),
            },
            (&Method::GET, ["v1", "destinations", name]) => self.status(name),
            (&Method::POST, ["v1", "destinations", name, action @ ("pause" | "resume")]) => {
                self.control(name, action)
            }
            (&Method::POST, ["v1", "destinations", name, "rewind"]) => {
                rewind::handle(self.delivery.get(), name, request.into_body()).await
            }
            (_, ["v1", "dead-letters", ..]) => self.dead_letters(request, &segments[2..]).await,
            (_, ["healthz" | "readyz" | "metrics"]) => method_not_allowed("GET"),
            (_, ["v1", "destinations"]) => method_not_allowed("GET, POST"),
            (_, ["v1", "destinations", _]) => method_not_allowed("GET, PUT, DELETE"),
            (_, ["v1", "destinations", _, "pause" | "resume" | "rewind"]) => {
                method_not_allowed("POST")
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no admin route {method} {path}"),
            ),
        }
    }

    /// `/v1/dead-letters` routes (see [`dead_letters`]); `rest` is the path after them.
    async fn dead_letters<B>(&self, request: Request<B>, rest: &[&str]) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(delivery) = self.delivery.get() else {
            return not_ready("delivery has not started yet");
        };
        let method = request.method().clone();
        match (&method, rest) {
            (&Method::GET, []) => dead_letters::list_all(delivery).await,
            (&Method::GET, [name]) => dead_letters::summary(delivery, name).await,
            (&Method::GET, [name, "events"]) => {
                dead_letters::events(delivery, name, request.uri().query()).await
            }
            (&Method::POST, [name, "redrive"]) => {
                dead_letters::redrive(delivery, name, request.into_body()).await
            }
            (_, [] | [_] | [_, "events"]) => method_not_allowed("GET"),
            (_, [_, "redrive"]) => method_not_allowed("POST"),
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no admin route {method} {}", request.uri().path()),
            ),
        }
    }

    fn ready(&self) -> Response<Full<Bytes>> {
        let phase = self.readiness.phase();
        if phase != Phase::Ready {
            return not_ready(phase.name());
        }
        if let Some(fatal) = self.wal.get().and_then(|wal| wal.stats().fatal) {
            return not_ready(&format!("write-ahead log is in a fatal state: {fatal}"));
        }
        if let Some(connections) = self.ingest_connections.get() {
            if connections.saturated() {
                return not_ready(&format!(
                    "ingest cannot accept: all {} connection slots are busy with requests",
                    connections.limits().max_connections
                ));
            }
        }
        json(StatusCode::OK, serde_json::json!({"status": "ready"}))
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let Some(prometheus) = &self.prometheus else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no metrics recorder is installed".to_string(),
            );
        };
        m::record_process_memory();
        if let Some(wal) = self.wal.get() {
            let stats = wal.stats();
            metrics::gauge!(m::WAL_BYTES).set(stats.bytes_on_disk as f64);
            metrics::gauge!(m::WAL_CAPACITY_BYTES).set(stats.capacity_bytes as f64);
            metrics::gauge!(m::WAL_SEGMENTS).set(stats.segments as f64);
        }
        let mut response = Response::new(Full::new(Bytes::from(prometheus.render())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    fn status(&self, name: &str) -> Response<Full<Bytes>> {
        let Some(delivery) = self.delivery.get() else {
            return not_ready("delivery has not started yet");
        };
        match delivery.status(name) {
            Some(status) => json(StatusCode::OK, self.with_source(status)),
            None => unknown_destination(name),
        }
    }

    /// A destination's status with where it is defined (`config` or `api`), when known.
    fn with_source(&self, status: crate::delivery::DestinationStatus) -> serde_json::Value {
        let source = self
            .destination_set
            .get()
            .and_then(|set| set.source_of(&status.name));
        let mut value = serde_json::json!(status);
        if let (Some(source), Some(fields)) = (source, value.as_object_mut()) {
            fields.insert("source".into(), serde_json::json!(source));
        }
        value
    }

    fn control(&self, name: &str, action: &str) -> Response<Full<Bytes>> {
        let Some(delivery) = self.delivery.get() else {
            return not_ready("delivery has not started yet");
        };
        let result = if action == "pause" {
            delivery.pause(name)
        } else {
            delivery.resume(name)
        };
        match result {
            Ok(()) => {
                tracing::info!(destination = name, action, "destination control");
                match delivery.status(name) {
                    Some(status) => json(StatusCode::OK, serde_json::json!(status)),
                    None => unknown_destination(name),
                }
            }
            Err(DeliveryError::UnknownDestination(_)) => unknown_destination(name),
            Err(err) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "control_failed",
                err.to_string(),
            ),
        }
    }
}

/// The log every destination reads, as `/v1/destinations` shows it: `corrupt_records` are
/// stored records found unreadable since start (lost for every destination).
fn wal_summary(stats: &WalStats) -> serde_json::Value {
    serde_json::json!({
        "first_seq": stats.first_seq,
        "first_received_at": stats.first_received_at_ms.map(crate::delivery::start::format_time),
        "next_seq": stats.next_seq,
        "segments": stats.segments,
        "bytes_on_disk": stats.bytes_on_disk,
        "capacity_bytes": stats.capacity_bytes,
        "corrupt_records": stats.corrupt_records,
        "fatal": stats.fatal,
    })
}

/// The refusal of a state-changing request that a browser may have sent from another origin
/// (see the module documentation); `None` lets it through.
fn cross_origin_refusal(headers: &HeaderMap) -> Option<Response<Full<Bytes>>> {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase())
    };
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or_default();
        let same = ["http://", "https://"]
            .iter()
            .any(|scheme| !host.is_empty() && origin == format!("{scheme}{host}"));
        if !same {
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!("requests from origin `{origin}` may not change state"),
            ));
        }
    }
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!("requests from a `{site}` context may not change state"),
            ));
        }
    }
    if let Some(content_type) = text(header::CONTENT_TYPE) {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type != "application/json" {
            return Some(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "json_required",
                format!(
                    "Content-Type `{content_type}` is refused: send `application/json` or no body"
                ),
            ));
        }
    }
    None
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, code: &str, detail: String) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({"error": code, "detail": detail}))
}

fn unauthorized(refusal: auth::Refusal) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        refusal.to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"flagstream-admin\""),
    );
    response
}

fn not_ready(detail: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        detail.to_string(),
    )
}

fn unknown_destination(name: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "unknown_destination",
        format!("no destination named `{name}`"),
    )
}

fn method_not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// Most admin connections at once (scrapers, probes, operators); idle ones are shed first.
pub const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Serve the admin API until `shutdown` is cancelled. Also runs the Prometheus upkeep tick.
pub async fn serve(
    listener: impl Into<crate::ingest::Listener>,
    admin: Arc<Admin>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let upkeep = {
        let (admin, shutdown) = (admin.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => if let Some(prometheus) = &admin.prometheus {
                        prometheus.run_upkeep();
                    },
                }
            }
        })
    };
    let connections = Arc::new(Connections::new("admin", limits));
    let handle = move |request| {
        let admin = admin.clone();
        async move { admin.handle(request).await }
    };
    let grace = Duration::from_secs(2);
    let per_connection = move || handle.clone();
    serve_listener(listener, connections, per_connection, shutdown, grace).await;
    let _ = upkeep.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn call(admin: &Admin, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = admin.handle(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn admin() -> Admin {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        Admin::new(Some(recorder.handle()), Arc::new(Readiness::default()))
    }

    #[tokio::test]
    async fn health_is_ok_and_readiness_follows_the_phase() {
        let admin = admin();
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
        let (status, body) = call(&admin, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "not_ready");
        admin.readiness().set(Phase::Recovering);
        let (_, body) = call(&admin, Method::GET, "/readyz").await;
        assert_eq!(body["detail"], "recovering");
        admin.readiness().set(Phase::Ready);
        assert_eq!(call(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);
        admin.readiness().set(Phase::ShuttingDown);
        assert_eq!(
            call(&admin, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn destinations_before_start_unknown_routes_and_methods() {
        let admin = admin();
        let (status, body) = call(&admin, Method::GET, "/v1/destinations").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "not_ready");
        let (status, body) = call(&admin, Method::GET, "/nope").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, _) = call(&admin, Method::GET, "/v1/destinations/x/pause").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call(&admin, Method::POST, "/metrics").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn state_changes_from_other_origins_are_refused() {
        let admin = admin();
        let post = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri("/v1/destinations/archive/pause")
                .header("host", "127.0.0.1:8031");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(Full::new(Bytes::new())).unwrap()
        };
        for (headers, status, code) in [
            (
                vec![("origin", "https://evil.example")],
                StatusCode::FORBIDDEN,
                "cross_origin",
            ),
            (
                vec![("origin", "null")],
                StatusCode::FORBIDDEN,
                "cross_origin",
            ),
            (
                vec![("sec-fetch-site", "cross-site")],
                StatusCode::FORBIDDEN,
                "cross_origin",
            ),
            (
                vec![("content-type", "text/plain")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "json_required",
            ),
            (
                vec![("content-type", "application/x-www-form-urlencoded")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "json_required",
            ),
        ] {
            let response = admin.handle(post(&headers)).await;
            assert_eq!(response.status(), status, "{headers:?}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code, "{headers:?}");
        }
        // Same origin with JSON, or a plain non-browser client, reach the route (503 here:
        // delivery has not started).
        for headers in [
            vec![
                ("origin", "http://127.0.0.1:8031"),
                ("content-type", "application/json; charset=utf-8"),
            ],
            vec![],
        ] {
            let response = admin.handle(post(&headers)).await;
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{headers:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_token_is_required_and_replaces_the_cross_origin_rules() {
        let token = crate::dest::secrets::Secret::new("0123456789abcdef-token");
        let admin = admin().with_auth(AdminAuth::with_token(&token, false));
        let (status, body) = call(&admin, Method::GET, "/v1/destinations").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/destinations/archive/pause")
            .header("authorization", "Bearer 0123456789abcdef-token")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = admin.handle(request).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "reaches the route"
        );
    }

    #[tokio::test]
    async fn metrics_render_as_prometheus_text() {
        let admin = admin();
        let request = Request::builder()
            .uri("/metrics")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = admin.handle(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
    }
}
