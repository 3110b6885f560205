//! In-process stand-ins of the vendors' HTTP *servers* (webhook receivers, Segment,
//! mParticle): a hyper server on a loopback port that implements a vendor's documented
//! contract ([`Contract`]: auth, paths, size limits, status codes) and records what it
//! accepted, with faults a test can inject (a status with `Retry-After`, a slow answer) and
//! an outage ([`Receiver::stop`] closes the port and cuts live connections; [`Receiver::restart`]
//! listens on the same port again, keeping what was recorded).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// One request as the receiver saw it (body gunzipped when `Content-Encoding: gzip`).
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// The body as sent on the wire.
    pub wire_body: Bytes,
    /// The body after content decoding.
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Keep the request among the accepted ones (a duplicate the vendor ignores is not kept).
    pub record: bool,
}

impl Answer {
    pub fn new(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: body.into(),
            record: false,
        }
    }

    /// A success answer whose request is recorded.
    pub fn accepted(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            record: true,
            ..Answer::new(status, body)
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// A vendor's documented server behaviour.
pub trait Contract: Send + Sync + 'static {
    /// Answer `request`; `accepted` is everything recorded so far (for deduplication).
    fn answer(&self, request: &Received, accepted: &[Received]) -> Answer;
}

/// A fault answered instead of the contract, once per queued entry.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status, with `Retry-After: <seconds>` when given; nothing is recorded.
    Status(u16, Option<u64>),
    /// Wait this long, then answer by the contract.
    Delay(Duration),
}

struct State {
    contract: Box<dyn Contract>,
    accepted: Mutex<Vec<Received>>,
    answered: Mutex<Vec<(Received, u16)>>,
    faults: Mutex<VecDeque<Fault>>,
}

/// A running (or stopped) stand-in.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<CancellationToken>,
}

impl Receiver {
    /// Start serving `contract` on a fresh loopback port.
    pub async fn start(contract: impl Contract) -> Receiver {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let mut receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(State {
                contract: Box::new(contract),
                accepted: Mutex::new(Vec::new()),
                answered: Mutex::new(Vec::new()),
                faults: Mutex::new(VecDeque::new()),
            }),
            stop: None,
        };
        receiver.serve(listener);
        receiver
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests the contract accepted (and recorded), in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.state.accepted.lock().clone()
    }

    /// Every request answered, with its status.
    pub fn answered(&self) -> Vec<(Received, u16)> {
        self.state.answered.lock().clone()
    }

    /// Answer the next request with `fault` instead of the contract.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().push_back(fault);
    }

    /// Close the port and cut every open connection.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }

    /// Listen on the same port again, with everything recorded so far.
    pub async fn restart(&mut self) {
        let listener = crate::support::eventually(
            "the port is free again",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpListener::bind(self.addr)
                    .await
                    .map_err(|err| err.to_string())
            },
        )
        .await;
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let state = state.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

async fn handle(state: &State, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let at = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let wire_body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let gzipped = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzipped {
        let mut decoded = Vec::new();
        match flate2::read::GzDecoder::new(&wire_body[..]).read_to_end(&mut decoded) {
            Ok(_) => Bytes::from(decoded),
            Err(_) => return respond(Answer::new(400, r#"{"error":"bad gzip body"}"#)),
        }
    } else {
        wire_body.clone()
    };
    let received = Received {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        wire_body,
        body,
        at,
    };
    let fault = state.faults.lock().pop_front();
    let answer = match fault {
        Some(Fault::Status(status, retry_after)) => {
            let answer = Answer::new(status, r#"{"error":"injected"}"#);
            match retry_after {
                Some(seconds) => answer.header("retry-after", seconds.to_string()),
                None => answer,
            }
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            answer_by_contract(state, &received)
        }
        None => answer_by_contract(state, &received),
    };
    state
        .answered
        .lock()
        .push((received, answer.status.as_u16()));
    respond(answer)
}

fn answer_by_contract(state: &State, received: &Received) -> Answer {
    let mut accepted = state.accepted.lock();
    let answer = state.contract.answer(received, &accepted);
    if answer.record {
        accepted.push(received.clone());
    }
    answer
}

fn respond(answer: Answer) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::builder()
        .status(answer.status)
        .header("content-type", "application/json");
    for (name, value) in &answer.headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(Bytes::from(answer.body))).unwrap()
}

/// HMAC-SHA256 of `body` as lowercase hex, computed here independently of flagstream.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A webhook receiver as a service would run one: hooks at known paths (anything else is
/// 404), an optional shared secret checked on `X-Hub-Signature-256` (401 when wrong), an
/// optional bearer token, a body limit (413), and deduplication on `Idempotency-Key` (a
/// repeated key answers 200 and is not stored again).
pub struct WebhookContract {
    pub paths: Arc<Mutex<Vec<String>>>,
    pub secret: Option<String>,
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

impl Contract for WebhookContract {
    fn answer(&self, request: &Received, accepted: &[Received]) -> Answer {
        if request.method != Method::POST {
            return Answer::new(405, r#"{"error":"POST only"}"#);
        }
        if !self.paths.lock().contains(&request.path) {
            return Answer::new(
                404,
                format!(r#"{{"error":"no webhook at {}"}}"#, request.path),
            );
        }
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        if let Some(token) = &self.token {
            if header("authorization") != format!("Bearer {token}") {
                return Answer::new(401, r#"{"error":"bad token"}"#);
            }
        }
        if let Some(secret) = &self.secret {
            let expected = format!(
                "sha256={}",
                hmac_sha256_hex(secret.as_bytes(), &request.body)
            );
            if header("x-hub-signature-256") != expected {
                return Answer::new(401, r#"{"error":"bad signature"}"#);
            }
        }
        if request.wire_body.len() > self.max_body_bytes {
            return Answer::new(413, r#"{"error":"payload too large"}"#);
        }
        let key = header("idempotency-key");
        if key.is_empty() {
            return Answer::new(400, r#"{"error":"Idempotency-Key required"}"#);
        }
        if accepted.iter().any(|seen| {
            seen.headers
                .get("idempotency-key")
                .is_some_and(|k| k == key)
        }) {
            return Answer::new(200, r#"{"status":"duplicate"}"#);
        }
        Answer::accepted(200, r#"{"status":"ok"}"#)
    }
}
