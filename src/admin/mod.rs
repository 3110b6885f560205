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
//!
//! The admin server starts *before* the WAL is recovered, so `/healthz` and `/readyz` (503
//! `recovering`) answer during a long recovery; the WAL and the delivery engine are attached
//! once they exist. Errors use the ingest shape `{"error": "...", "detail": "..."}`.

pub mod readiness;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Delivery, DeliveryError};
use crate::metrics as m;
use crate::wal::{Wal, WalStats};

pub use readiness::{Phase, Readiness};

/// Everything the admin routes read. Shared with `main`, which attaches parts as they start.
pub struct Admin {
    prometheus: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    wal: OnceLock<Wal>,
    delivery: OnceLock<Delivery>,
}

impl Admin {
    /// `prometheus` is `None` when no recorder is installed (then `/metrics` is 404).
    pub fn new(prometheus: Option<PrometheusHandle>, readiness: Arc<Readiness>) -> Self {
        Admin {
            prometheus,
            readiness,
            wal: OnceLock::new(),
            delivery: OnceLock::new(),
        }
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

    /// Answer one admin request.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
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
                        "destinations": delivery.statuses(),
                        "wal": self.wal.get().map(|wal| wal_summary(&wal.stats())),
                    }),
                ),
                None => not_ready("delivery has not started yet"),
            },
            (&Method::GET, ["v1", "destinations", name]) => self.status(name),
            (&Method::POST, ["v1", "destinations", name, action @ ("pause" | "resume")]) => {
                self.control(name, action)
            }
            (_, ["healthz" | "readyz" | "metrics"]) | (_, ["v1", "destinations"]) => {
                method_not_allowed("GET")
            }
            (_, ["v1", "destinations", _]) => method_not_allowed("GET"),
            (_, ["v1", "destinations", _, "pause" | "resume"]) => method_not_allowed("POST"),
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no admin route {method} {path}"),
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
            Some(status) => json(StatusCode::OK, serde_json::json!(status)),
            None => unknown_destination(name),
        }
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
        "next_seq": stats.next_seq,
        "segments": stats.segments,
        "bytes_on_disk": stats.bytes_on_disk,
        "capacity_bytes": stats.capacity_bytes,
        "corrupt_records": stats.corrupt_records,
        "fatal": stats.fatal,
    })
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

/// Serve the admin API until `shutdown` is cancelled. Also runs the Prometheus upkeep tick.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = upkeep.tick() => {
                if let Some(prometheus) = &admin.prometheus {
                    prometheus.run_upkeep();
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = admin.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(request).await) }
        });
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
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
