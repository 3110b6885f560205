//! Hostile and careless clients against the real binary (issue 16): silent and half-open
//! connections, stalled bodies, cross-origin admin requests, and malformed or oversized heads.
//! Every wait is on a condition with a deadline; timeouts are shortened by flags.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::serve::*;
use crate::support::eventually;

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

/// Send `request` on a fresh connection and read the whole answer (the server closes).
/// Returns the status and the JSON body (`Null` when the body is not JSON).
fn exchange(addr: SocketAddr, request: &[u8], patience: Duration) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(patience)).unwrap();
    stream.write_all(request).expect("send");
    read_answer(&mut stream)
}

fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
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

/// True once the peer closed the connection (EOF or reset); bytes it sends are skipped.
fn closed_within(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_reset) => return true,
        }
    }
    false
}

/// A server with the test credentials and `extra` flags.
fn start(data: &tempfile::TempDir, extra: &[&str]) -> Flagstream {
    Flagstream::builder(data.path().join("data"))
        .args(["--environment", &production_env()])
        .args(extra.iter().copied())
        .start()
}

/// Connections the ingest listener closed for `reason`.
fn closed_for(server: &Flagstream, reason: &str) -> f64 {
    metric(
        server.admin,
        "flagstream_connections_closed_total",
        &[("listener", "ingest"), ("reason", reason)],
    )
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn silent_connections_are_shed_and_closed_while_a_valid_client_gets_202() {
    let data = tempfile::tempdir().unwrap();
    let max = 16;
    let header_timeout = Duration::from_secs(6);
    let max_flag = max.to_string();
    let server = start(
        &data,
        &["--max-connections", &max_flag, "--header-timeout", "6s"],
    );

    // 2 × max-connections sockets that never complete a request head: silent ones, a partial
    // HTTP/1 head, and HTTP/2 connections that only send the preface.
    let mut silent: Vec<TcpStream> = (0..2 * max)
        .map(|i| {
            let mut stream = TcpStream::connect(server.ingest).expect("connect");
            match i % 4 {
                1 => stream
                    .write_all(b"POST /bulk HTTP/1.1\r\nHost: t\r\n")
                    .unwrap(),
                2 => stream
                    .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    .unwrap(),
                _ => {}
            }
            stream
        })
        .collect();
    // Every socket is accepted (shedding older ones), so the server has seen all of them.
    wait_until("silent sockets accepted", Duration::from_secs(10), || {
        closed_for(&server, "shed") >= max as f64
    });

    // A valid client gets through well before any header timeout could free a slot.
    let started = Instant::now();
    let (status, body) = exchange(server.ingest, &small_bulk(), Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert!(took < header_timeout / 2, "202 took {took:?}");

    // Every silent socket is closed: the shed ones at once, the rest at the header timeout
    // counted from accept.
    let deadline = Instant::now() + header_timeout + Duration::from_secs(10);
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(closed_within(stream, deadline), "socket {i} still open");
    }
    assert!(closed_for(&server, "header_timeout") >= 1.0);
    assert_eq!(http_status(server.admin, "/readyz"), Some(200));
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &["--idle-timeout", "1s", "--header-timeout", "30s"]);
    let mut stream = TcpStream::connect(server.ingest).unwrap();
    let body = numbered_bulk(0, 1);
    write!(
        stream,
        "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 202");
    let started = Instant::now();
    assert!(closed_within(
        &mut stream,
        Instant::now() + Duration::from_secs(20)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 30 s header timeout did not close it"
    );
    assert!(closed_for(&server, "idle_timeout") >= 1.0);
}

/// `count` chunked `/bulk` requests that send one body byte and stall; returns once the server
/// holds all of them in flight.
fn open_stalled_bodies(server: &Flagstream, count: usize) -> Vec<TcpStream> {
    let stalled: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(server.ingest).unwrap();
            write!(
                stream,
                "POST /bulk HTTP/1.1\r\nHost: t\r\nAuthorization: {SDK_KEY}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
            )
            .unwrap();
            stream
        })
        .collect();
    wait_until("stalled bodies in flight", Duration::from_secs(10), || {
        metric(server.admin, "flagstream_ingest_inflight_bytes", &[]) >= count as f64
    });
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

#[test]
fn stalled_chunked_bodies_do_not_delay_a_small_request() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, STALL_LIMITS);
    // Eight chunked bodies that send one byte and stall: before bytes were reserved as they
    // arrive, each held a whole --max-body-bytes and two of them filled the budget.
    let mut stalled = open_stalled_bodies(&server, 8);

    let started = Instant::now();
    let (status, body) = exchange(server.ingest, &small_bulk(), Duration::from_secs(15));
    let took = started.elapsed();
    assert_eq!(status, 202, "{body}");
    assert!(took < Duration::from_secs(3), "202 took {took:?}");

    // The stalled bodies are refused once they have sent nothing for --body-stall-timeout.
    stalled[0]
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (status, body) = read_answer(&mut stalled[0]);
    assert_eq!(
        (status, body["error"].as_str()),
        (408, Some("body_stalled"))
    );
    wait_until("budget returned", Duration::from_secs(20), || {
        metric(server.admin, "flagstream_ingest_inflight_bytes", &[]) == 0.0
    });
}

#[test]
fn admin_refuses_cross_origin_state_changes_and_closes_silent_connections() {
    let data = tempfile::tempdir().unwrap();
    let export = data.path().join("export");
    let dest = format!("file://{}?name=archive", export.display());
    let server = start(&data, &["--dest", &dest, "--header-timeout", "1s"]);
    let pause = |headers: &str| {
        let request = format!(
            "POST /v1/destinations/archive/pause HTTP/1.1\r\nHost: {}\r\n{headers}\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            server.admin
        );
        exchange(server.admin, request.as_bytes(), Duration::from_secs(10))
    };
    let paused = || server.destinations()["destinations"][0]["paused"].clone();

    // What a web page can make a browser send without a preflight.
    let (status, body) = pause("Origin: https://evil.example\r\nContent-Type: text/plain\r\n");
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("cross_origin"))
    );
    let (status, body) = pause("Content-Type: text/plain\r\n");
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("json_required"))
    );
    assert_eq!(paused(), Value::Bool(false), "nothing was paused");

    // A same-origin JSON request is served.
    let (status, body) = pause("Content-Type: application/json\r\n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(paused(), Value::Bool(true));

    // The admin listener closes connections that send no complete head.
    let mut silent = TcpStream::connect(server.admin).unwrap();
    silent.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    assert!(closed_within(
        &mut silent,
        Instant::now() + Duration::from_secs(15)
    ));
}

#[test]
fn head_errors_answer_json_with_a_distinct_code() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]);
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
        let (got, body) = exchange(server.ingest, request.as_bytes(), Duration::from_secs(10));
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    // A later request on a keep-alive connection is checked too (after hyper parsed it).
    let mut stream = TcpStream::connect(server.ingest).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");
    let mut rest = [0u8; 4096];
    let n = stream.read(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest[..n]).contains("not_found"));
    let second = format!(
        "GET /bulk HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100 * 1024)
    );
    stream.write_all(second.as_bytes()).unwrap();
    let (status, body) = read_answer(&mut stream);
    assert_eq!(
        (status, body["error"].as_str()),
        (431, Some("head_too_large"))
    );
}

#[test]
fn an_empty_object_bomb_is_refused_and_stores_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = start(&data, &[]);
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
    let (status, body) = exchange(server.ingest, &request, Duration::from_secs(30));
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
    let (status, body) = exchange(server.ingest, request.as_bytes(), Duration::from_secs(10));
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        metric(server.admin, "flagstream_ingest_invalid_events_total", &[]),
        1.0
    );
    assert_eq!(
        metric(server.admin, "flagstream_ingest_events_total", &[]),
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
    let server = start(&data, &[STALL_LIMITS, &["--idle-timeout", "2s"]].concat());
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
    let admin = server.admin;
    tokio::task::spawn_blocking(move || {
        wait_until("stalled streams in flight", Duration::from_secs(10), || {
            metric(admin, "flagstream_ingest_inflight_bytes", &[]) >= 8.0
        })
    })
    .await
    .unwrap();

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
    let admin = server.admin;
    let idle_closed = tokio::task::spawn_blocking(move || {
        metric(
            admin,
            "flagstream_connections_closed_total",
            &[("listener", "ingest"), ("reason", "idle_timeout")],
        )
    });
    assert!(idle_closed.await.unwrap() >= 1.0);
}

#[test]
fn readyz_reports_an_ingest_whose_every_slot_is_busy() {
    let data = tempfile::tempdir().unwrap();
    let server = start(
        &data,
        &["--max-connections", "2", "--body-stall-timeout", "60s"],
    );
    // Two connections busy with a request (a body in progress): nothing can be shed.
    let mut busy = open_stalled_bodies(&server, 2);
    let _waiting = TcpStream::connect(server.ingest).unwrap();
    wait_until(
        "/readyz reports saturation",
        Duration::from_secs(10),
        || {
            http_request(server.admin, "GET", "/readyz").is_some_and(|(status, body)| {
                status == 503 && body.contains("ingest cannot accept")
            })
        },
    );
    assert_eq!(
        metric(
            server.admin,
            "flagstream_connections_saturated",
            &[("listener", "ingest")]
        ),
        1.0
    );
    // One busy client goes away: its slot goes to the waiting connection.
    drop(busy.pop());
    wait_until("ready again", Duration::from_secs(10), || {
        http_status(server.admin, "/readyz") == Some(200)
    });
}
