//! Hostile and careless clients against the real binary (issue 16): silent and half-open
//! connections, stalled bodies, cross-origin admin requests, and malformed or oversized heads.
//! Every wait is on a condition with a deadline; timeouts are shortened by flags.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::eventually;
use crate::support::serve::*;

/// A small valid `/bulk` request that closes its connection after the answer.
fn small_bulk() -> Vec<u8> {
    let body = numbered_bulk(0, 2);
    format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A fresh raw connection to `addr`.
async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// A fresh raw connection to `addr` that has sent `bytes`.
async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = connect(addr).await;
    stream.write_all(bytes).await.expect("send");
    stream
}

/// Send `request` on a fresh connection and read the whole answer (the server closes).
/// Returns the status and the JSON body (`Null` when the body is not JSON).
async fn exchange(addr: SocketAddr, request: &[u8], patience: Duration) -> (u16, Value) {
    let mut stream = connect_and_send(addr, request).await;
    read_answer(&mut stream, patience).await
}

/// One read that fails (like a socket read timeout) when nothing arrives within `patience`.
async fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    patience: Duration,
) -> std::io::Result<usize> {
    tokio::time::timeout(patience, stream.read(buf))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Read until the server closes; each read waits at most `patience`.
async fn read_answer(stream: &mut TcpStream, patience: Duration) -> (u16, Value) {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match read_some(stream, &mut chunk, patience).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            // A reset after the answer arrived (the server closed with unread input) is fine.
            Err(_) if !answer.is_empty() => break,
            Err(err) => panic!("no answer: {err}"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:.200}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// True once the peer closed the connection (EOF or reset) before `deadline`; bytes it sends
/// are skipped.
async fn closed_within(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_elapsed) => return false,
        }
    }
}

/// A server with the test credentials and `extra` flags.
async fn start(data: &tempfile::TempDir, extra: &[&str]) -> Flagstream {
    Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args(extra.iter().copied())
        .start()
        .await
}

/// Connections the ingest listener closed for `reason`.
async fn closed_for(admin: SocketAddr, reason: &str) -> f64 {
    metric(
        admin,
        "flagstream_connections_closed_total",
        &[("listener", "ingest"), ("reason", reason)],
    )
    .await
}

/// Bytes the ingest holds for request bodies in progress.
async fn inflight_bytes(admin: SocketAddr) -> f64 {
    metric(admin, "flagstream_ingest_inflight_bytes", &[]).await
}

/// Wait until `probe`'s value satisfies `done`; fails with the last value seen.
async fn wait_for_value<F, Fut>(what: &str, timeout: Duration, probe: F, done: impl Fn(f64) -> bool)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    eventually(what, timeout, || async {
        let value = probe().await;
        if done(value) {
            Ok(())
        } else {
            Err(format!("at {value}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_shed_and_closed_while_a_valid_client_gets_202() {
    let data = tempfile::tempdir().unwrap();
    let max = 16;
    let header_timeout = Duration::from_secs(6);
    let max_flag = max.to_string();
    let server = start(
        &data,
        &["--max-connections", &max_flag, "--header-timeout", "6s"],
    )
    .await;

    // 2 × max-connections sockets that never complete a request head: silent ones, a partial
    // HTTP/1 head, and HTTP/2 connections that only send the preface.
    let mut silent = Vec::new();
    for i in 0..2 * max {
        let first: &[u8] = match i % 4 {
            1 => b"POST /bulk HTTP/1.1\r\nHost: t\r\n",
            2 => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            _ => b"",
        };
        silent.push(connect_and_send(server.ingest, first).await);
    }
    // Every socket is accepted (shedding older ones), so the server has seen all of them.
    wait_for_value(
        "every silent socket accepted (shed count)",
        Duration::from_secs(10),
        || closed_for(server.admin, "shed"),
        |shed| shed >= max as f64,
    )
    .await;

    // A valid client gets through well before any header timeout could free a slot.
    let started = Instant::now();
    let (status, body) = exchange(server.ingest, &small_bulk(), Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert!(took < header_timeout / 2, "202 took {took:?}");

    // Every silent socket is closed: the shed ones at once, the rest at the header timeout
    // counted from accept.
    let deadline = Instant::now() + header_timeout + Duration::from_secs(10);
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(stream, deadline).await,
            "socket {i} still open"
        );
    }
    assert!(closed_for(server.admin, "header_timeout").await >= 1.0);
    assert_eq!(http_status(server.admin, "/readyz").await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &["--idle-timeout", "1s", "--header-timeout", "30s"]).await;
    let body = numbered_bulk(0, 1);
    let request = format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect_and_send(server.ingest, request.as_bytes()).await;
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202");
    let started = Instant::now();
    assert!(closed_within(&mut stream, Instant::now() + Duration::from_secs(20)).await);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 30 s header timeout did not close it"
    );
    assert!(closed_for(server.admin, "idle_timeout").await >= 1.0);
}

/// `count` chunked `/bulk` requests that send one body byte and stall; returns once the server
/// holds all of them in flight.
async fn open_stalled_bodies(server: &Flagstream, count: usize) -> Vec<TcpStream> {
    let request = format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\n\
         Transfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
    );
    let mut stalled = Vec::new();
    for _ in 0..count {
        stalled.push(connect_and_send(server.ingest, request.as_bytes()).await);
    }
    wait_for_value(
        "stalled bodies in flight",
        Duration::from_secs(10),
        || inflight_bytes(server.admin),
        |bytes| bytes >= count as f64,
    )
    .await;
    stalled
}

/// A budget that two bodies reserved up front (the old behaviour) would fill, and a short stall
/// timeout.
const STALL_LIMITS: &[&str] = &[
    "--max-body-bytes",
    "1MiB",
    "--max-inflight-bytes",
    "2MiB",
    "--body-stall-timeout",
    "4s",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_chunked_bodies_do_not_delay_a_small_request() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, STALL_LIMITS).await;
    // Eight chunked bodies that send one byte and stall: before bytes were reserved as they
    // arrive, each held a whole --max-body-bytes and two of them filled the budget.
    let mut stalled = open_stalled_bodies(&server, 8).await;

    let started = Instant::now();
    let (status, body) = exchange(server.ingest, &small_bulk(), Duration::from_secs(15)).await;
    let took = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert!(took < Duration::from_secs(3), "202 took {took:?}");

    // The stalled bodies are refused once they have sent nothing for --body-stall-timeout.
    let (status, body) = read_answer(&mut stalled[0], Duration::from_secs(20)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (408, Some("body_stalled"))
    );
    wait_for_value(
        "the in-flight budget returned",
        Duration::from_secs(20),
        || inflight_bytes(server.admin),
        |bytes| bytes == 0.0,
    )
    .await;
}

/// `POST /v1/destinations/archive/pause` on the admin listener with extra `headers`.
async fn pause(server: &Flagstream, headers: &str) -> (u16, Value) {
    let request = format!(
        "POST /v1/destinations/archive/pause HTTP/1.1\r\nHost: {}\r\n{headers}\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        server.admin
    );
    exchange(server.admin, request.as_bytes(), Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_cross_origin_state_changes_and_closes_silent_connections() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("export");
    let dest = format!("file://{}?name=archive", export.display());
    let server = start(&data, &["--dest", &dest, "--header-timeout", "1s"]).await;
    let paused = || async { server.destinations().await["destinations"][0]["paused"].clone() };

    // What a web page can make a browser send without a preflight.
    let (status, body) = pause(
        &server,
        "Origin: https://evil.example\r\nContent-Type: text/plain\r\n",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cross_origin"))
    );
    let (status, body) = pause(&server, "Content-Type: text/plain\r\n").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("json_required"))
    );
    assert_eq!(paused().await, Value::Bool(false), "nothing was paused");

    // A same-origin JSON request is served.
    let (status, body) = pause(&server, "Content-Type: application/json\r\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(paused().await, Value::Bool(true));

    // The admin listener closes connections that send no complete head.
    let mut silent = connect_and_send(server.admin, b"GET /metrics HTTP/1.1\r\n").await;
    assert!(closed_within(&mut silent, Instant::now() + Duration::from_secs(15)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_errors_answer_json_with_a_distinct_code() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]).await;
    let big_header = format!("X-Big: {}\r\n", "a".repeat(300 * 1024));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_path = format!("/bulk/{}", "a".repeat(70 * 1024));
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("POST /bulk HTTP/1.1\r\nHost: t\r\n{big_header}\r\n"),
            431,
            "head_too_large",
        ),
        (
            format!("POST /bulk HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n"),
            431,
            "too_many_headers",
        ),
        (
            format!("GET {long_path} HTTP/1.1\r\nHost: t\r\n\r\n"),
            414,
            "uri_too_long",
        ),
        (
            "POST /bulk HTTP/1.1\r\nHost: t\r\nContent-Length: 12abc\r\n\r\n".into(),
            400,
            "invalid_content_length",
        ),
        (
            "POST /bulk HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n folded\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
        (
            "POST /bulk HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n".into(),
            400,
            "malformed_request",
        ),
    ];
    for (request, status, code) in cases {
        let (got, body) =
            exchange(server.ingest, request.as_bytes(), Duration::from_secs(10)).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    // A later request on a keep-alive connection is checked too (after hyper parsed it).
    let patience = Duration::from_secs(10);
    let mut stream =
        connect_and_send(server.ingest, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut first = [0u8; 12];
    tokio::time::timeout(patience, stream.read_exact(&mut first))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");
    let mut rest = [0u8; 4096];
    let n = read_some(&mut stream, &mut rest, patience).await.unwrap();
    assert!(String::from_utf8_lossy(&rest[..n]).contains("not_found"));
    let second = format!(
        "GET /bulk HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    stream.write_all(second.as_bytes()).await.unwrap();
    let (status, body) = read_answer(&mut stream, patience).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (431, Some("head_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_object_bomb_is_refused_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]).await;
    // 10 KB of gzip, 10 MB of `{}`: before, 202 and ~700 MB of dead letters.
    let bomb = format!("[{}]", vec!["{}"; 3_400_000].join(","));
    let compressed = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bomb.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let mut request = format!(
        "POST /events/bulk/{CLIENT_ID} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        compressed.len()
    )
    .into_bytes();
    request.extend_from_slice(&compressed);
    let (status, body) = exchange(server.ingest, &request, Duration::from_secs(30)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("no_valid_events")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("[0]"), "{body}");

    // A batch with one kindless event among valid ones is accepted; the bad one is counted.
    let mixed = r#"[{"kind":"custom","creationDate":1,"key":"k","context":{"kind":"user","key":"u"}},{"key":"no-kind"}]"#;
    let request = format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{mixed}",
        mixed.len()
    );
    let (status, body) = exchange(server.ingest, request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        metric(server.admin, "flagstream_ingest_invalid_events_total", &[]).await,
        1.0
    );
    assert_eq!(
        metric(server.admin, "flagstream_ingest_events_total", &[]).await,
        2.0,
        "only the mixed batch was stored"
    );
}

type BodyFrame = Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>;
type ChannelBody = http_body_util::StreamBody<futures::channel::mpsc::Receiver<BodyFrame>>;

/// A request body that sends `first` and then nothing until the sender is dropped.
fn stalled_body(first: bytes::Bytes) -> (futures::channel::mpsc::Sender<BodyFrame>, ChannelBody) {
    let (mut sender, receiver) = futures::channel::mpsc::channel(1);
    sender
        .try_send(Ok(hyper::body::Frame::data(first)))
        .unwrap();
    (sender, http_body_util::StreamBody::new(receiver))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stalled_streams_do_not_block_a_small_request_and_idle_connections_close() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[STALL_LIMITS, &["--idle-timeout", "2s"]].concat()).await;
    let stream = tokio::net::TcpStream::connect(server.ingest).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let uri = format!("http://{}/bulk", server.ingest);

    // Eight streams on one connection, each stalled after one byte of its body.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let (keep_open, body) = stalled_body(bytes::Bytes::from_static(b"["));
        let request = http::Request::post(&uri)
            .header("authorization", SDK_KEY)
            .body(body)
            .unwrap();
        let mut sender = sender.clone();
        let response = tokio::spawn(async move { sender.send_request(request).await });
        stalled.push((keep_open, response));
    }
    wait_for_value(
        "stalled streams in flight",
        Duration::from_secs(10),
        || inflight_bytes(server.admin),
        |bytes| bytes >= 8.0,
    )
    .await;

    // A small request on another stream of the same connection is not held up.
    let mut small_sender = sender.clone();
    let (complete, body) = stalled_body(bytes::Bytes::from(numbered_bulk(0, 2)));
    drop(complete); // ends the body
    let request = http::Request::post(&uri)
        .header("authorization", SDK_KEY)
        .body(body)
        .unwrap();
    let started = Instant::now();
    let response = small_sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The stalled streams are refused after --body-stall-timeout; then the connection has no
    // open stream and is closed after --idle-timeout.
    for (keep_open, response) in stalled {
        let response = response.await.unwrap().unwrap();
        assert_eq!(response.status(), 408);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "body_stalled");
        drop(keep_open);
    }
    // The client keeps its handles (it would close an unused connection itself).
    let closed = tokio::time::timeout(Duration::from_secs(20), connection).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");
    drop((sender, small_sender));
    assert!(closed_for(server.admin, "idle_timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_ingest_whose_every_slot_is_busy() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        &data,
        &["--max-connections", "2", "--body-stall-timeout", "60s"],
    )
    .await;
    // Two connections busy with a request (a body in progress): nothing can be shed.
    let mut busy = open_stalled_bodies(&server, 2).await;
    let _waiting = connect(server.ingest).await;
    eventually(
        "/readyz reports saturation",
        Duration::from_secs(10),
        || async {
            match http_request(server.admin, "GET", "/readyz").await {
                Some((503, body)) if body.contains("ingest cannot accept") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        metric(
            server.admin,
            "flagstream_connections_saturated",
            &[("listener", "ingest")]
        )
        .await,
        1.0
    );
    // One busy client goes away: its slot goes to the waiting connection.
    drop(busy.pop());
    eventually("ready again", Duration::from_secs(10), || async {
        match http_status(server.admin, "/readyz").await {
            Some(200) => Ok(()),
            other => Err(format!("/readyz: {other:?}")),
        }
    })
    .await;
}

/// POST `body` to `/bulk` with the SDK key; the status.
async fn post_bulk(addr: SocketAddr, body: &str) -> (u16, Value) {
    let request = format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request.as_bytes(), Duration::from_secs(10)).await
}

/// One valid event (marker `n`) and `kindless` events without a `kind` (dead letters to be).
fn mostly_kindless_bulk(n: u64, kindless: usize) -> String {
    let valid = numbered_bulk(n, 1);
    let bad: Vec<String> = (0..kindless)
        .map(|i| format!(r#"{{"key":"no-kind-{n}-{i}","pad":"{}"}}"#, "p".repeat(60)))
        .collect();
    format!("[{},{}]", &valid[1..valid.len() - 1], bad.join(","))
}

/// Lines in every dead-letter file under `dir`, and their total bytes.
fn dead_letter_usage(dir: &std::path::Path) -> (usize, u64, Vec<String>) {
    let files = flagstream::delivery::dead_letter_files(dir, "file").unwrap();
    let lines = files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap().lines().count())
        .sum();
    let bytes = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    let names = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    (lines, bytes, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_store_pauses_the_destination_until_room_is_freed() {
    let data = tempfile::tempdir().unwrap();
    // 64 KiB budget (the least for 16 KiB bodies), rotation at 16 KiB.
    let budget = 64 * 1024;
    let server = start(
        &data,
        &[
            "--max-body-bytes",
            "16KiB",
            "--dead-letter-max-bytes",
            "64KiB",
        ],
    )
    .await;
    let dir = data.path().join("data/dead-letters");
    let per_body = 100;
    // Each body's dead letters (~27 KB) are written before the next is posted.
    for n in 0..2u64 {
        let (status, body) = post_bulk(server.ingest, &mostly_kindless_bulk(n, per_body)).await;
        assert_eq!(status, 202, "{body}");
        let want = per_body * (n as usize + 1);
        eventually("dead letters written", Duration::from_secs(20), || async {
            let (lines, _, _) = dead_letter_usage(&dir);
            if lines == want {
                Ok(())
            } else {
                Err(format!("{lines} lines"))
            }
        })
        .await;
    }
    let (_, _, names) = dead_letter_usage(&dir);
    assert_eq!(
        names,
        ["file.00000000000000000001.ndjson", "file.ndjson"],
        "the active file rotated"
    );

    // The third body's dead letters do not fit: the destination pauses instead of dropping.
    let (status, _) = post_bulk(server.ingest, &mostly_kindless_bulk(2, per_body)).await;
    assert_eq!(status, 202);
    let file_state = || async {
        let status = server.destinations().await;
        status["destinations"][0]["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually(
        "paused by the full store",
        Duration::from_secs(20),
        || async {
            match file_state().await.as_str() {
                "dead_letters_full" => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    let (status, _) = post_bulk(server.ingest, &numbered_bulk(100, 5)).await;
    assert_eq!(status, 202, "ingest keeps accepting into the WAL");
    let refused = || {
        metric(
            server.admin,
            "flagstream_dead_letter_refused_writes_total",
            &[("destination", "file"), ("reason", "budget")],
        )
    };
    let first = refused().await;
    wait_for_value(
        "refused writes are retried",
        Duration::from_secs(20),
        refused,
        |v| v >= first + 2.0,
    )
    .await;
    assert_eq!(file_state().await, "dead_letters_full");
    let export = data.path().join("data/export");
    assert!(
        !markers(&read_export(&export)).contains(&100),
        "nothing after the refused dead letters was delivered"
    );
    assert_eq!(
        metric(
            server.admin,
            "flagstream_dest_dead_letters_full",
            &[("destination", "file")]
        )
        .await,
        1.0
    );
    assert!(
        server.log_text().contains("dead-letter store is full"),
        "logged loudly"
    );
    let (lines, bytes, _) = dead_letter_usage(&dir);
    assert_eq!(lines, 2 * per_body);
    assert!(bytes <= budget, "{bytes} bytes");

    // An operator removes the handled (rotated) file: delivery resumes, nothing was lost.
    std::fs::remove_file(dir.join("file.00000000000000000001.ndjson")).unwrap();
    let exported = wait_for_export(&export, 8, Duration::from_secs(30)).await;
    let mut seen = markers(&exported);
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 100, 101, 102, 103, 104]);
    eventually(
        "all dead letters written",
        Duration::from_secs(20),
        || async {
            let (lines, _, _) = dead_letter_usage(&dir);
            if lines == 2 * per_body {
                Ok(())
            } else {
                Err(format!("{lines} lines"))
            }
        },
    )
    .await;
    assert_eq!(file_state().await, "running");
}

/// `flagstream validate` with `args` (exit code, stdout, stderr).
fn validate(data: &tempfile::TempDir, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .arg("validate")
        .args(["--data-dir", data.path().join("data").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_that_disagree_are_named_with_a_value_that_works() {
    let data = tempfile::tempdir().unwrap();
    // The log destination takes 1 MiB per event, less than a 10 MiB body can hold.
    let (code, stdout, _) = validate(&data, &["--dest", "log:"]);
    assert_eq!(code, Some(0), "{stdout}");
    let warning = stdout
        .lines()
        .find(|line| line.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning in {stdout}"));
    assert!(
        warning.contains("`log`") && warning.contains("dead-lettered"),
        "{warning}"
    );
    let fits = warning
        .rsplit("--max-body-bytes ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let (code, stdout, _) = validate(&data, &["--dest", "log:", "--max-body-bytes", fits]);
    assert_eq!(code, Some(0));
    assert!(
        !stdout.contains("warning:"),
        "the value it named works: {stdout}"
    );
    // The embedded default destination takes whatever body is allowed.
    let (_, stdout, _) = validate(
        &data,
        &["--max-body-bytes", "20MiB", "--wal-segment-bytes", "64MiB"],
    );
    assert!(!stdout.contains("warning:"), "{stdout}");

    let (code, _, stderr) = validate(&data, &["--dest", "log:?kinds=feature,bogus"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`kinds`") && stderr.contains("`bogus`") && stderr.contains("pageview"),
        "{stderr}"
    );
    let (code, _, stderr) = validate(&data, &["--dead-letter-max-bytes", "1MiB"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--dead-letter-max-bytes") && stderr.contains("at least 40.0 MiB"),
        "{stderr}"
    );

    // A free-space floor above the free space starts, but says so.
    let server = start(&data, &["--wal-min-free-bytes", "1PiB"]).await;
    let log = server.log_text();
    assert!(
        log.contains("--wal-min-free-bytes 1.0 PiB exceeds the")
            && log.contains("use a value below"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_body_of_small_events_is_delivered_in_bounded_memory() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]).await;
    let mut events = Vec::new();
    let mut size = 2;
    while size < 10 * 1000 * 1000 {
        let event = format!(r#"{{"kind":"custom","key":"k{}"}}"#, events.len() % 10);
        size += event.len() + 1;
        events.push(event);
    }
    let body = format!("[{}]", events.join(","));
    let before = server.peak_rss_mib();
    let (status, answer) = post_bulk(server.ingest, &body).await;
    assert_eq!(status, 202, "{answer}");
    server.wait_delivered(Duration::from_secs(50)).await;
    let exported = read_export_lines(&data.path().join("data/export")).len();
    assert_eq!(exported, events.len());
    // Before: the whole record's tape, event list and every batch at once (+307 MiB for this
    // body in a debug build); now one 4096-event part at a time (+125 MiB, most of it the
    // ingest-time validation of the body).
    let grown = server.peak_rss_mib() - before;
    let body_mib = body.len() as f64 / (1024.0 * 1024.0);
    assert!(
        grown < 20.0 * body_mib,
        "peak RSS grew {grown:.0} MiB for a {body_mib:.1} MiB body of {} events",
        events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_slot_and_sheds_its_own_idle_connections_first() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        &data,
        &[
            "--max-connections",
            "16",
            "--max-connections-per-client",
            "4",
            "--body-stall-timeout",
            "30s",
            "--header-timeout",
            "30s",
        ],
    )
    .await;
    // Four idle connections from 127.0.0.1, then four stalled bodies: each stalled one makes
    // room by closing one of the same client's idle connections.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(server.ingest).await);
    }
    let _stalled = open_stalled_bodies(&server, 4).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(stream, deadline).await,
            "idle connection {i} still open"
        );
    }
    // All four of its connections busy: a fifth is refused at once, with a JSON 503.
    let (status, body) = exchange(server.ingest, &small_bulk(), Duration::from_secs(10)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("too_many_connections")),
        "{body}"
    );
    assert!(closed_for(server.admin, "client_limit").await >= 1.0);
    // Another client (another loopback address) is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(server.ingest).await.unwrap();
    other.write_all(&small_bulk()).await.unwrap();
    let (status, body) = read_answer(&mut other, Duration::from_secs(10)).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_head_later_on_a_keep_alive_connection_gets_json() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]).await;
    let body = numbered_bulk(0, 1);
    let requests = format!(
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\nContent-Length: {}\r\n\r\n{body}\
         GET /bulk HTTP/1.1\r\nHost: t\r\nthis is not a header\r\n\r\n",
        body.len()
    );
    let mut stream = connect_and_send(server.ingest, requests.as_bytes()).await;
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match read_some(&mut stream, &mut chunk, Duration::from_secs(5)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let second = text
        .match_indices("HTTP/1.1 ")
        .nth(1)
        .map(|(at, _)| &text[at..])
        .unwrap_or_else(|| panic!("one answer only: {text}"));
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    assert!(second.starts_with("HTTP/1.1 400"), "{second}");
    let json: Value = serde_json::from_str(second.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(json["error"], "malformed_request", "{json}");
}
