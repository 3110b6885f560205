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
    /// Answer by the contract (keeping what it accepts), but send this status instead: the
    /// vendor kept the request, the sender believes it failed (a lost answer).
    LostAnswer(u16),
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

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
        Some(Fault::LostAnswer(status)) => {
            answer_by_contract(state, &received);
            Answer::new(status, r#"{"error":"injected after accepting"}"#)
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
            // Over the raw request body, before any decoding, as GitHub documents it.
            let expected = format!(
                "sha256={}",
                hmac_sha256_hex(secret.as_bytes(), &request.wire_body)
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

/// Basic credentials of a request, decoded (`user`, `password`).
pub fn basic_credentials(request: &Received) -> Option<(String, String)> {
    use base64::Engine;
    let value = request.headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Segment's HTTP Tracking API batch call, as documented ("HTTP API source"): `POST
/// /v1/batch`, Basic auth with the write key and an empty password (401 otherwise), ≤ 500 KB
/// per request and ≤ 32 KB per message or `400`, invalid JSON `400`, otherwise `200` — also
/// for messages that break the spec, which Segment drops later: those are listed in
/// `invalid` so tests can fail on them.
pub struct SegmentContract {
    pub write_key: String,
    pub invalid: Arc<Mutex<Vec<String>>>,
}

/// Segment's limits (KB read as 1,000 bytes for the request: the stricter reading).
pub const SEGMENT_MAX_REQUEST_BYTES: usize = 500_000;
pub const SEGMENT_MAX_MESSAGE_BYTES: usize = 32 * 1024;

impl Contract for SegmentContract {
    fn answer(&self, request: &Received, _accepted: &[Received]) -> Answer {
        if request.method != Method::POST || request.path != "/v1/batch" {
            return Answer::new(404, r#"{"success":false,"message":"not found"}"#);
        }
        if basic_credentials(request) != Some((self.write_key.clone(), String::new())) {
            return Answer::new(401, r#"{"success":false,"message":"Invalid write key"}"#);
        }
        if request.body.len() > SEGMENT_MAX_REQUEST_BYTES {
            return Answer::new(
                400,
                r#"{"success":false,"message":"Exceeded payload size limit"}"#,
            );
        }
        #[derive(serde::Deserialize)]
        struct Batch<'a> {
            #[serde(borrow)]
            batch: Vec<&'a serde_json::value::RawValue>,
            #[serde(rename = "sentAt")]
            sent_at: Option<String>,
        }
        let Ok(batch) = serde_json::from_slice::<Batch>(&request.body) else {
            return Answer::new(400, r#"{"success":false,"message":"Invalid JSON"}"#);
        };
        if batch
            .batch
            .iter()
            .any(|m| m.get().len() > SEGMENT_MAX_MESSAGE_BYTES)
        {
            return Answer::new(
                400,
                r#"{"success":false,"message":"Exceeded payload size limit"}"#,
            );
        }
        let mut invalid = self.invalid.lock();
        if !batch.sent_at.as_deref().is_some_and(is_iso8601) {
            invalid.push(format!(
                "batch without an ISO-8601 sentAt: {:?}",
                batch.sent_at
            ));
        }
        for message in &batch.batch {
            let value: serde_json::Value = serde_json::from_str(message.get()).unwrap();
            if let Err(problem) = segment_spec_problem(&value) {
                invalid.push(format!("{problem}: {value}"));
            }
        }
        Answer::accepted(200, r#"{"success":true}"#)
    }
}

fn is_iso8601(text: &str) -> bool {
    humantime::parse_rfc3339(text).is_ok()
}

/// What is wrong with a message by Segment's spec (common fields + the call's own).
fn segment_spec_problem(message: &serde_json::Value) -> Result<(), &'static str> {
    let text = |key: &str| message[key].as_str().filter(|s| !s.is_empty());
    let kind = text("type").ok_or("no type")?;
    text("messageId").ok_or("no messageId")?;
    text("timestamp")
        .filter(|t| is_iso8601(t))
        .ok_or("no ISO-8601 timestamp")?;
    if !message["properties"].is_null() && !message["properties"].is_object() {
        return Err("properties is not an object");
    }
    match kind {
        "track" => {
            text("event").ok_or("track without event")?;
        }
        "page" | "identify" | "screen" | "group" => {}
        "alias" => {
            text("previousId").ok_or("alias without previousId")?;
            text("userId").ok_or("alias without userId")?;
        }
        _ => return Err("unknown type"),
    }
    if text("userId").is_none() && text("anonymousId").is_none() {
        return Err("neither userId nor anonymousId");
    }
    Ok(())
}

/// The messages Segment holds: every accepted message once per `messageId` (Segment
/// deduplicates on it), in arrival order.
pub fn segment_messages(receiver: &Receiver) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    let mut messages = Vec::new();
    for request in receiver.accepted() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        for message in body["batch"].as_array().unwrap() {
            if seen.insert(
                message["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ) {
                messages.push(message.clone());
            }
        }
    }
    messages
}

/// mParticle's Events API bulk call, as documented (Events API reference, "Default Service
/// Limits"): `POST /v2/bulkevents`, Basic `key:secret` (401 otherwise), a JSON array of ≤ 100
/// batches, ≤ 256 KB per request (413) and ≤ 128 KB per batch (400), `202 Accepted`.
/// Batches that break the documented schema are accepted (mParticle drops them later) and
/// listed in `invalid` so tests can fail on them.
pub struct MParticleContract {
    pub key: String,
    pub secret: String,
    pub invalid: Arc<Mutex<Vec<String>>>,
}

pub const MPARTICLE_MAX_BATCHES: usize = 100;
pub const MPARTICLE_MAX_REQUEST_BYTES: usize = 256 * 1024;
pub const MPARTICLE_MAX_BATCH_BYTES: usize = 128 * 1024;

impl Contract for MParticleContract {
    fn answer(&self, request: &Received, _accepted: &[Received]) -> Answer {
        if request.method != Method::POST || request.path != "/v2/bulkevents" {
            return Answer::new(404, r#"{"errors":[{"code":"NOT_FOUND"}]}"#);
        }
        if basic_credentials(request) != Some((self.key.clone(), self.secret.clone())) {
            return Answer::new(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad key or secret"}]}"#,
            );
        }
        if request.body.len() > MPARTICLE_MAX_REQUEST_BYTES {
            return Answer::new(413, r#"{"errors":[{"code":"REQUEST_TOO_LARGE"}]}"#);
        }
        let Ok(batches) =
            serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&request.body)
        else {
            return Answer::new(400, r#"{"errors":[{"code":"INVALID_JSON"}]}"#);
        };
        if batches.len() > MPARTICLE_MAX_BATCHES {
            return Answer::new(400, r#"{"errors":[{"code":"TOO_MANY_BATCHES"}]}"#);
        }
        if batches
            .iter()
            .any(|b| b.get().len() > MPARTICLE_MAX_BATCH_BYTES)
        {
            return Answer::new(400, r#"{"errors":[{"code":"BATCH_TOO_LARGE"}]}"#);
        }
        let mut invalid = self.invalid.lock();
        let mut users = std::collections::HashSet::new();
        for batch in &batches {
            let value: serde_json::Value = serde_json::from_str(batch.get()).unwrap();
            if !users.insert(value["user_identities"].to_string()) {
                invalid.push(format!("a second batch for one user in a request: {value}"));
            }
            if let Err(problem) = mparticle_batch_problem(&value) {
                invalid.push(format!("{problem}: {value}"));
            }
        }
        Answer::accepted(202, "")
    }
}

/// What is wrong with an mParticle batch by the Events API schema.
fn mparticle_batch_problem(batch: &serde_json::Value) -> Result<(), &'static str> {
    let identities = batch["user_identities"]
        .as_object()
        .ok_or("no user_identities")?;
    if identities.is_empty()
        || !identities
            .values()
            .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    {
        return Err("user_identities without a string identity");
    }
    if !matches!(
        batch["environment"].as_str(),
        Some("production" | "development")
    ) {
        return Err("environment is not production or development");
    }
    let events = batch["events"]
        .as_array()
        .filter(|e| !e.is_empty())
        .ok_or("no events")?;
    for event in events {
        let data = event["data"].as_object().ok_or("event without data")?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        text("source_message_id").ok_or("event without source_message_id")?;
        data.get("timestamp_unixtime_ms")
            .and_then(|v| v.as_u64())
            .ok_or("no timestamp_unixtime_ms")?;
        match event["event_type"].as_str() {
            Some("custom_event") => {
                text("event_name").ok_or("custom_event without event_name")?;
                const TYPES: &[&str] = &[
                    "navigation",
                    "location",
                    "search",
                    "transaction",
                    "user_content",
                    "user_preference",
                    "social",
                    "media",
                    "other",
                ];
                if !text("custom_event_type").is_some_and(|t| TYPES.contains(&t)) {
                    return Err("custom_event with an unknown custom_event_type");
                }
            }
            Some("screen_view") => {
                text("screen_name").ok_or("screen_view without screen_name")?;
            }
            _ => return Err("unknown event_type"),
        }
        if let Some(attributes) = data.get("custom_attributes") {
            let attributes = attributes
                .as_object()
                .ok_or("custom_attributes is not an object")?;
            if !attributes
                .values()
                .all(|v| v.as_str().is_some_and(|s| s.chars().count() <= 4096))
            {
                return Err("a custom attribute that is not a string of ≤ 4096 characters");
            }
        }
    }
    Ok(())
}

/// Every event mParticle accepted, with its batch's `user_identities` and `environment`.
pub fn mparticle_events(receiver: &Receiver) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut events = Vec::new();
    for request in receiver.accepted() {
        let batches: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
        for batch in batches {
            let header = serde_json::json!({
                "user_identities": batch["user_identities"],
                "environment": batch["environment"],
            });
            for event in batch["events"].as_array().unwrap() {
                events.push((header.clone(), event.clone()));
            }
        }
    }
    events
}
