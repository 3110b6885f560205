//! The HTTP layer against a real in-process hyper server on a loopback port.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

const TARGET: &str = "test endpoint";

/// Answers by path; `/echo` returns the (gunzipped) request body and its `User-Agent`.
async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let gzipped = request.headers().get(CONTENT_ENCODING).is_some();
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let body = body.unwrap_or_default();
    let respond = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("x-user-agent", user_agent.clone())
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let response = match path.as_str() {
        "/echo" => {
            let mut decoded = Vec::new();
            if gzipped {
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut decoded)
                    .unwrap();
            } else {
                decoded = body.to_vec();
            }
            respond(202, decoded)
        }
        "/bad" => respond(
            400,
            format!("invalid write key {}", "é".repeat(1000)).into_bytes(),
        ),
        "/gone" => respond(404, b"no such source".to_vec()),
        "/throttled" => {
            let mut response = respond(429, Vec::new());
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("7"));
            response
        }
        "/unavailable" => {
            let later = SystemTime::now() + Duration::from_secs(120);
            let mut response = respond(503, b"maintenance".to_vec());
            let date = httpdate::fmt_http_date(later);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
            response
        }
        "/request-timeout" => respond(408, Vec::new()),
        "/slow" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => respond(500, Vec::new()),
    };
    Ok(response)
}

async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    address
}

fn client(timeout: &str, gzip: bool) -> HttpClient {
    let mut options = super::super::options::OptionMap::new(
        "test",
        [("timeout".to_string(), timeout.to_string())].into(),
        Default::default(),
    );
    let request: RequestOptions = options.parse().unwrap();
    HttpClient::new("http-test", &request, &HttpOptions { gzip }).unwrap()
}

async fn send(
    client: &HttpClient,
    address: SocketAddr,
    path: &str,
) -> Result<HttpResponse, Failure> {
    let url = format!("http://{address}{path}?key=SECRET-IN-QUERY");
    client
        .send(
            Method::POST,
            &url,
            HeaderMap::new(),
            Bytes::from_static(b"{\"events\":[1,2,3]}"),
            &TARGET,
        )
        .await
}

#[tokio::test]
async fn statuses_are_classified_with_retry_after_and_quoted_bodies() {
    let address = server().await;
    let client = client("5s", false);

    let ok = send(&client, address, "/echo").await.unwrap();
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    assert_eq!(&ok.body[..], b"{\"events\":[1,2,3]}");
    assert_eq!(ok.headers["x-user-agent"], USER_AGENT);
    assert!(USER_AGENT.starts_with("flagstream/"));

    let bad = send(&client, address, "/bad").await.unwrap_err();
    assert_eq!(bad.class, FailureClass::Permanent);
    assert!(bad.reason.contains("400") && bad.reason.contains("invalid write key"));
    assert!(
        bad.reason.len() < MAX_QUOTED_BODY_BYTES + 100,
        "{}",
        bad.reason.len()
    );
    assert!(bad.reason.ends_with('…'));
    assert!(!bad.reason.contains("SECRET-IN-QUERY"));

    let gone = send(&client, address, "/gone").await.unwrap_err();
    assert_eq!(gone.class, FailureClass::Permanent);
    assert!(gone.reason.contains("no such source"), "{}", gone.reason);

    let throttled = send(&client, address, "/throttled").await.unwrap_err();
    assert_eq!(throttled.class, FailureClass::Throttled);
    assert_eq!(throttled.retry_after, Some(Duration::from_secs(7)));

    let unavailable = send(&client, address, "/unavailable").await.unwrap_err();
    assert_eq!(unavailable.class, FailureClass::Retriable);
    let wait = unavailable.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
    assert!(
        !unavailable.reason.contains("maintenance"),
        "5xx bodies are not quoted"
    );

    let timeout = send(&client, address, "/request-timeout")
        .await
        .unwrap_err();
    assert_eq!(timeout.class, FailureClass::Retriable);
    let internal = send(&client, address, "/anything-else").await.unwrap_err();
    assert_eq!(internal.class, FailureClass::Retriable);
}

#[tokio::test]
async fn gzip_bodies_are_decoded_by_the_server() {
    let address = server().await;
    let ok = send(&client("5s", true), address, "/echo").await.unwrap();
    assert_eq!(&ok.body[..], b"{\"events\":[1,2,3]}");
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retriable() {
    let address = server().await;
    let slow = send(&client("200ms", false), address, "/slow")
        .await
        .unwrap_err();
    assert_eq!(slow.class, FailureClass::Retriable);
    assert!(slow.reason.contains("timed out"), "{}", slow.reason);

    // A port nobody listens on: bind, note it, close.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let refused = send(&client("5s", false), closed_address, "/echo")
        .await
        .unwrap_err();
    assert_eq!(refused.class, FailureClass::Retriable);
    assert!(
        !refused.reason.contains("SECRET-IN-QUERY"),
        "{}",
        refused.reason
    );
}

#[test]
fn retry_after_forms_and_body_quoting() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
    let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
    headers.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
    headers.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&headers, now), None);

    let quoted = quote_body("é".repeat(600).as_bytes());
    assert!(quoted.len() <= MAX_QUOTED_BODY_BYTES + '…'.len_utf8());
    assert!(quoted.ends_with('…'));
    assert_eq!(quote_body(b"line one\nline two\n"), "line one line two");
    assert_eq!(classify_status_code(429), FailureClass::Throttled);
    assert_eq!(classify_status_code(401), FailureClass::Permanent);
    assert!(classify(StatusCode::OK, &HeaderMap::new(), b"", &TARGET, now).is_none());
}
