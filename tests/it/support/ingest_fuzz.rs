//! The body of the `ingest_request` fuzz target: one HTTP request built from arbitrary bytes
//! (method, path, headers, gzip, body), answered by [`Ingest::handle`] — the whole request
//! path after hyper's parser, without a socket — in front of a recording sink. Shared with
//! the `ingest_fuzz_harness` test so the same properties run on stable Rust in every CI run.
//!
//! Input layout: byte 0 flags, byte 1 path choice, byte 2 length `n` of a header block, `n`
//! bytes of `name:value` lines (invalid ones are dropped), then the body.
//! * flags bits 0-2: the method (POST ×2, GET, OPTIONS, PUT, HEAD, DELETE, PATCH);
//! * bit 3: gzip the body (a valid stream); with bit 4 as well, the stream is cut short;
//! * bit 4 alone: `Content-Encoding: gzip` on the raw bytes (fuzzes our gunzip);
//! * bit 5: environments configured (key `sdk-key`, client id `client-id`); bit 6 presents
//!   the right key (path routes use the client id);
//! * bit 7: send the same request twice (payload-id deduplication, determinism).
//!
//! Properties: never a panic; a refusal is a JSON `{"error","detail"}` with a 4xx/5xx status
//! and stores nothing; a success stores exactly one record (none for a repeated payload id)
//! whose stored header names the route's format and environment and whose body validates to
//! the acknowledged event count and is byte for byte what was sent (after gunzip); a cut gzip
//! stream is never accepted; the same request twice gets the same status.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use flagstream::event::{self, InstanceId};
use flagstream::ingest::routes::match_route;
use flagstream::ingest::{Environments, Ingest, IngestSettings, RecordSink};
use flagstream::wal::{AppendReceipt, AppendRequest, WalError};

/// Bodies above this are refused (kept small so the fuzzer reaches the caps).
const MAX_BODY: usize = 16 * 1024;

const METHODS: [Method; 8] = [
    Method::POST,
    Method::POST,
    Method::GET,
    Method::OPTIONS,
    Method::PUT,
    Method::HEAD,
    Method::DELETE,
    Method::PATCH,
];

const PATHS: [&str; 14] = [
    "/bulk",
    "/diagnostic",
    "/mobile",
    "/mobile/events",
    "/mobile/events/bulk",
    "/mobile/events/diagnostic",
    "/v1/data/collector",
    "/v1/events",
    "/events/bulk/client-id",
    "/events/diagnostic/client-id",
    "/a/client-id.gif",
    "/events/bulk/other-id",
    "/bulk/",
    "/",
];

/// One stored record: (tag, event count, payload).
type Stored = (u8, u32, Vec<u8>);

/// Keeps every append in memory.
#[derive(Default)]
struct RecordingSink {
    records: Mutex<Vec<Stored>>,
}

impl RecordSink for RecordingSink {
    fn append<'a>(
        &'a self,
        request: AppendRequest<'a>,
    ) -> BoxFuture<'a, Result<AppendReceipt, WalError>> {
        let mut records = self.records.lock().unwrap();
        records.push((request.tag, request.event_count, request.parts.concat()));
        let seq = records.len() as u64;
        Box::pin(async move { Ok(AppendReceipt { seq }) })
    }
}

/// The request the input describes, and what the harness knows about its body.
struct Built {
    method: Method,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    /// The decoded body the server must store, when the harness controls the encoding.
    expected_body: Option<Vec<u8>>,
    /// A gzip stream cut short: must never be accepted.
    truncated_gzip: bool,
    pixel: bool,
    closed_environments: bool,
    repeat: bool,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn parse_headers(block: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
    block
        .split(|&byte| byte == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&byte| byte == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(&line[colon + 1..]).ok()?;
            Some((name, value))
        })
        .collect()
}

fn build(data: &[u8]) -> Option<Built> {
    let (&flags, rest) = data.split_first()?;
    let (&path_choice, rest) = rest.split_first()?;
    let (&header_len, rest) = rest.split_first()?;
    let header_len = usize::from(header_len).min(rest.len());
    let (header_block, raw_body) = rest.split_at(header_len);
    let mut headers = parse_headers(header_block);
    let path = PATHS[usize::from(path_choice) % PATHS.len()];
    let mut uri = path.to_string();
    if path.ends_with(".gif") {
        // The pixel's body travels base64 in `d`; the raw bytes when they are valid query text.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw_body);
        let raw_query = std::str::from_utf8(raw_body)
            .ok()
            .filter(|_| flags & 8 != 0);
        uri += &raw_query.map_or(format!("?d={encoded}"), |query| format!("?{query}"));
    }
    let pixel = path.ends_with(".gif");
    let gzip_body = flags & 8 != 0;
    let claim_gzip = flags & 16 != 0;
    let closed_environments = flags & 32 != 0;
    let mut body = raw_body.to_vec();
    let mut expected_body = None;
    let mut truncated_gzip = false;
    if gzip_body {
        body = gzip(raw_body);
        if claim_gzip {
            body.pop();
            // The pixel route reads its payload from the query, never the body.
            truncated_gzip = !pixel;
        } else {
            expected_body = Some(raw_body.to_vec());
        }
        headers.retain(|(name, _)| *name != CONTENT_ENCODING);
        headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
    } else if claim_gzip {
        headers.retain(|(name, _)| *name != CONTENT_ENCODING);
        headers.push((CONTENT_ENCODING, HeaderValue::from_static("gzip")));
    } else if headers.iter().all(|(name, _)| *name != CONTENT_ENCODING) {
        expected_body = Some(raw_body.to_vec());
    }
    if closed_environments && flags & 64 != 0 {
        headers.retain(|(name, _)| *name != AUTHORIZATION && name.as_str() != "x-api-key");
        headers.push((AUTHORIZATION, HeaderValue::from_static("sdk-key")));
    }
    Some(Built {
        method: METHODS[usize::from(flags & 7)].clone(),
        uri,
        headers,
        body,
        expected_body,
        truncated_gzip,
        pixel,
        closed_environments,
        repeat: flags & 128 != 0,
    })
}

fn ingest(closed: bool, sink: Arc<RecordingSink>) -> Ingest {
    let environments = if closed {
        Environments::from_entries([(
            "prod".to_string(),
            vec!["sdk-key".to_string(), "client-id".to_string()],
        )])
        .unwrap()
    } else {
        Environments::open()
    };
    let settings = IngestSettings {
        max_body_bytes: MAX_BODY,
        environments,
        ..IngestSettings::default()
    };
    Ingest::new(settings, sink, InstanceId([7; 16]))
}

fn request(built: &Built) -> Option<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(built.method.clone())
        .uri(&built.uri);
    for (name, value) in &built.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(built.body.clone())))
        .ok()
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
}

/// Returns the first answer's status (`None` when the input is no request), so tests can
/// check that inputs reach the paths they mean to.
pub fn run(data: &[u8]) -> Option<StatusCode> {
    let built = build(data)?;
    // URIs the HTTP parser would refuse never reach the handler.
    let first = request(&built)?;
    let sink = Arc::new(RecordingSink::default());
    let server = ingest(built.closed_environments, sink.clone());
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let (status, body) = answer(&server, first).await;
            let stored = sink.records.lock().unwrap().clone();
            check_answer(&built, status, &body, &stored);
            if built.repeat {
                let second = request(&built).unwrap();
                let (again, _) = answer(&server, second).await;
                assert_eq!(status, again, "the same request answered differently");
                check_repeat(&built, status, &stored, &sink.records.lock().unwrap());
            }
            Some(status)
        })
    })
}

async fn answer(server: &Ingest, request: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let response = server.handle(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value == "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    if !status.is_success() {
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{status}"
        );
        assert!(is_json, "refusal {status} without a JSON content type");
        let error: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|err| panic!("refusal {status} is not JSON ({err}): {body:?}"));
        assert!(
            error["error"].is_string() && error["detail"].is_string(),
            "{error}"
        );
    }
    (status, body)
}

fn check_answer(built: &Built, status: StatusCode, body: &[u8], stored: &[Stored]) {
    if !status.is_success() || status == StatusCode::NO_CONTENT {
        assert!(stored.is_empty(), "{status} but something was stored");
        return;
    }
    assert!(
        !built.truncated_gzip,
        "a cut gzip stream was accepted ({status})"
    );
    assert_eq!(stored.len(), 1, "{status}: one body, one record");
    let (tag, event_count, payload) = &stored[0];
    let record = event::stored::decode(payload).expect("ingest stores a readable header");
    let route = match_route(&built.method, built.uri.split('?').next().unwrap()).unwrap();
    assert_eq!(record.format, route.format);
    assert_eq!(*tag, route.format.code());
    let environment = if built.closed_environments {
        "prod"
    } else {
        "default"
    };
    assert_eq!(record.environment, environment);
    assert_eq!(record.instance_id, Some(InstanceId([7; 16])));
    assert_eq!(event::validate(route.format, record.body), Ok(*event_count));
    if let Some(expected) = built.expected_body.as_ref().filter(|_| !built.pixel) {
        assert!(record.body == expected.as_slice(), "stored body differs");
    }
    if status == StatusCode::OK {
        // The go-feature-flag collector answers with the count it ingested.
        let answer: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(answer["ingestedContentCount"], *event_count);
    }
    let mut scratch = event::DecodeScratch::default();
    let ctx = event::RecordContext {
        format: record.format,
        environment: record.environment,
        payload_id: record.payload_id,
        schema_version: record.schema_version,
        seq: 1,
        received_at_ms: 0,
        instance_id: record.instance_id,
    };
    event::decode(&ctx, record.body, &mut scratch).expect("a stored body decodes");
}

/// After the same request twice: a refusal stored nothing, a success stored a second record
/// unless it carried a payload id (then the retry is recognised and stores nothing).
fn check_repeat(built: &Built, status: StatusCode, first: &[Stored], after: &[Stored]) {
    if !status.is_success() || status == StatusCode::NO_CONTENT {
        assert!(after.is_empty());
        return;
    }
    // As the handler reads it: the first such header, as text, trimmed, not empty.
    let has_payload_id = built
        .headers
        .iter()
        .find(|(name, _)| name.as_str() == "x-launchdarkly-payload-id")
        .and_then(|(_, value)| value.to_str().ok())
        .is_some_and(|id| !id.trim().is_empty());
    if has_payload_id {
        assert_eq!(after.len(), 1, "a repeated payload id was stored twice");
    } else if after.len() == 2 {
        assert_eq!(after[1].2, first[0].2, "the same body stored differently");
    }
}
