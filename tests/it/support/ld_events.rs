//! LaunchDarkly's events service as an in-process stand-in ([`LdEventsContract`], served by
//! [`crate::support::http_receivers::Receiver`]), and a [`RecordingProxy`] that sits between
//! an SDK and flagstream to record exactly what the SDK sent.
//!
//! The contract is the one LaunchDarkly's SDKs and ld-relay implement: `POST` only; server
//! routes (`/bulk`, `/diagnostic`) take `Authorization: <SDK key>`, mobile routes
//! (`/mobile`, `/mobile/events`, `/mobile/events/bulk`, `/mobile/events/diagnostic`) a mobile
//! key, browser routes (`/events/bulk/{id}`, `/events/diagnostic/{id}`) the client-side id in
//! the path and no key; a wrong key is 401, an unknown path or id 404, a body that is not JSON
//! of the route's shape (array of events; one diagnostic object) 400, and success is `202`.
//! A payload id seen before is accepted again without being recorded (LaunchDarkly
//! deduplicates on `X-LaunchDarkly-Payload-ID`).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

use super::http_receivers::{Answer, Contract, Received};

/// The credentials LaunchDarkly knows, by kind.
pub struct LdEventsContract {
    pub sdk_keys: Vec<String>,
    pub mobile_keys: Vec<String>,
    pub client_side_ids: Vec<String>,
}

/// What a route expects.
enum Route {
    /// A key of this list in `Authorization`; `diagnostic` bodies are one object.
    Keyed { keys: Vec<String>, diagnostic: bool },
    /// A client-side id in the path.
    PathId { id: String, diagnostic: bool },
}

impl LdEventsContract {
    fn route(&self, path: &str) -> Option<Route> {
        let keyed = |keys: &Vec<String>, diagnostic| Route::Keyed {
            keys: keys.clone(),
            diagnostic,
        };
        Some(match path {
            "/bulk" => keyed(&self.sdk_keys, false),
            "/diagnostic" => keyed(&self.sdk_keys, true),
            "/mobile" | "/mobile/events" | "/mobile/events/bulk" => keyed(&self.mobile_keys, false),
            "/mobile/events/diagnostic" => keyed(&self.mobile_keys, true),
            _ => {
                let (id, diagnostic) = match path.strip_prefix("/events/bulk/") {
                    Some(id) => (id, false),
                    None => (path.strip_prefix("/events/diagnostic/")?, true),
                };
                Route::PathId {
                    id: id.to_string(),
                    diagnostic,
                }
            }
        })
    }
}

impl Contract for LdEventsContract {
    fn answer(&self, request: &Received, accepted: &[Received]) -> Answer {
        if request.method != Method::POST {
            return Answer::new(405, "");
        }
        let Some(route) = self.route(&request.path) else {
            return Answer::new(404, "");
        };
        let header = |name: &str| header(&request.headers, name);
        let diagnostic = match route {
            Route::Keyed { keys, diagnostic } => {
                if !keys.iter().any(|key| *key == header("authorization")) {
                    return Answer::new(401, r#"{"message":"invalid key"}"#);
                }
                diagnostic
            }
            Route::PathId { id, diagnostic } => {
                if !self.client_side_ids.contains(&id) {
                    return Answer::new(404, "");
                }
                diagnostic
            }
        };
        if !header("content-type").starts_with("application/json") {
            return Answer::new(400, r#"{"message":"expected application/json"}"#);
        }
        let shape_ok = match serde_json::from_slice::<serde_json::Value>(&request.body) {
            Ok(serde_json::Value::Object(_)) => diagnostic,
            Ok(serde_json::Value::Array(events)) => {
                !diagnostic && events.iter().all(serde_json::Value::is_object)
            }
            _ => false,
        };
        if !shape_ok {
            return Answer::new(400, r#"{"message":"malformed body"}"#);
        }
        let payload_id = header("x-launchdarkly-payload-id");
        let seen = !payload_id.is_empty()
            && accepted.iter().any(|old| {
                old.path == request.path
                    && header_of(old, "x-launchdarkly-payload-id") == payload_id
            });
        if seen {
            return Answer::new(202, "");
        }
        Answer::accepted(202, "")
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// A header of a recorded request, `""` when absent.
pub fn header_of<'a>(request: &'a Received, name: &str) -> &'a str {
    header(&request.headers, name)
}

/// One request an SDK made, as the proxy passed it on.
#[derive(Debug, Clone)]
pub struct Proxied {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// flagstream's answer.
    pub status: u16,
}

/// Records every request and passes it on to `upstream` unchanged (method, path, query,
/// headers, body), answering with upstream's status and body.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Proxied>>>,
}

impl RecordingProxy {
    pub async fn start(upstream: String) -> RecordingProxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let client = reqwest::Client::new();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (client, upstream, recorded) =
                    (client.clone(), upstream.clone(), recorded.clone());
                let service = hyper::service::service_fn(move |request| {
                    let (client, upstream, recorded) =
                        (client.clone(), upstream.clone(), recorded.clone());
                    async move {
                        let response = pass_on(&client, &upstream, request, &recorded).await;
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        RecordingProxy { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Proxied> {
        self.requests.lock().clone()
    }
}

async fn pass_on(
    client: &reqwest::Client,
    upstream: &str,
    request: hyper::Request<hyper::body::Incoming>,
    recorded: &Mutex<Vec<Proxied>>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut headers = parts.headers.clone();
    for hop in [
        http::header::HOST,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
        http::header::CONNECTION,
    ] {
        headers.remove(hop);
    }
    let answer = client
        .request(parts.method.clone(), format!("{upstream}{target}"))
        .headers(headers)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let answer_body = answer.bytes().await.unwrap_or_default();
    recorded.lock().push(Proxied {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        status,
    });
    hyper::Response::builder()
        .status(status)
        .body(Full::new(answer_body))
        .unwrap()
}
