//! TLS on the ingest and admin listeners, through the binary: certificates made by the test
//! with `rcgen` (a CA and a leaf for `localhost`), a client (tokio-rustls + hyper) that trusts
//! only that CA, HTTP/1.1 and HTTP/2 chosen by ALPN, certificate reloads (good and bad), the
//! handshake deadline, and start-up errors naming the flag.

use crate::support::eventually;
use crate::support::serve::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A test CA and a `localhost` leaf certificate it signed, as PEM.
struct TestPki {
    ca: CertificateDer<'static>,
    /// The CA certificate as PEM, for `--ca` / `--admin-tls-ca` of `flagstream bench`/`top`.
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TestPki {
    fn new(name: &str) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = CertificateParams::new(leaf_names)
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        TestPki {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Write the pair as `<prefix>.crt` and `<prefix>.key` in `dir` (each replaced by a rename,
    /// as deployment tools do); the two paths.
    fn write(&self, dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{prefix}.crt")),
            dir.join(format!("{prefix}.key")),
        );
        replace(&key, &self.key_pem);
        replace(&cert, &self.cert_pem);
        (cert, key)
    }
}

fn replace(path: &Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Http {
    One,
    Two,
}

/// One HTTPS connection, kept open between requests.
struct Connection {
    sender: Sender,
    /// The protocol the server chose by ALPN.
    alpn: Option<Vec<u8>>,
}

enum Sender {
    One(http1::SendRequest<Full<Bytes>>),
    Two(http2::SendRequest<Full<Bytes>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connect to `addr` as `localhost`, trusting only `ca`, offering only `http` by ALPN.
async fn connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    http: Http,
) -> Result<Connection, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match http {
        Http::One => b"http/1.1".to_vec(),
        Http::Two => b"h2".to_vec(),
    }];
    let tcp = TcpStream::connect(addr).await?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(stream);
    let sender = match http {
        Http::One => {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Sender::One(sender)
        }
        Http::Two => {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            Sender::Two(sender)
        }
    };
    Ok(Connection { sender, alpn })
}

impl Connection {
    /// One request: status and body text.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        if matches!(self.sender, Sender::One(_)) {
            request = request.header("host", "localhost");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = match &mut self.sender {
            Sender::One(sender) => {
                sender.ready().await.expect("connection ready");
                sender.send_request(request).await
            }
            Sender::Two(sender) => sender.send_request(request).await,
        }
        .expect("response");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn post_bulk(&mut self, body: &str) -> u16 {
        let headers = [
            ("authorization", SDK_KEY),
            ("content-type", "application/json"),
        ];
        self.send("POST", "/bulk", &headers, body).await.0
    }
}

/// A series of the admin listener's `/metrics`, over TLS trusting `ca`.
async fn tls_metric(
    admin: SocketAddr,
    ca: &CertificateDer<'static>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let mut connection = connect(admin, ca, Http::One).await.expect("admin over TLS");
    let (status, text) = connection.send("GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{text}");
    metric_in(&text, name, labels)
}

async fn start(data: &Path, tls_args: &[&str]) -> Flagstream {
    Flagstream::builder(data.join("data"))
        .args(["--environment", &production_env()])
        .args([
            "--dest",
            &format!(
                "file://{}?rotate=100ms&name=archive",
                data.join("export").display()
            ),
        ])
        .args(tls_args.iter().copied())
        .start()
        .await
}

/// Write `pki` as the ingest pair and start a server serving it, with `extra` flags; the
/// server and the pair's paths.
async fn start_tls(dir: &Path, pki: &TestPki, extra: &[&str]) -> (Flagstream, PathBuf, PathBuf) {
    let (cert, key) = pki.write(dir, "ingest");
    let mut args = vec!["--tls-cert", path(&cert), "--tls-key", path(&key)];
    args.extend_from_slice(extra);
    let server = start(dir, &args).await;
    (server, cert, key)
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn ingest_over_tls_takes_http1_and_http2_and_admin_has_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest_pki, admin_pki) = (TestPki::new("ingest"), TestPki::new("admin"));
    let (admin_cert, admin_key) = admin_pki.write(dir.path(), "admin");
    let admin_tls = [
        "--admin-tls-cert",
        path(&admin_cert),
        "--admin-tls-key",
        path(&admin_key),
    ];
    let (server, _, _) = start_tls(dir.path(), &ingest_pki, &admin_tls).await;

    let mut one = connect(server.ingest, &ingest_pki.ca, Http::One)
        .await
        .unwrap();
    assert_eq!(one.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(one.post_bulk(&numbered_bulk(0, 3)).await, 202);
    let mut two = connect(server.ingest, &ingest_pki.ca, Http::Two)
        .await
        .unwrap();
    assert_eq!(two.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(two.post_bulk(&numbered_bulk(3, 2)).await, 202);
    let mut markers = markers(&wait_for_export(&dir.path().join("export"), 5, TIMEOUT).await);
    markers.sort_unstable();
    assert_eq!(markers, [0, 1, 2, 3, 4]);

    // The admin listener serves its own pair: the ingest CA does not vouch for it.
    let mut admin = connect(server.admin, &admin_pki.ca, Http::Two)
        .await
        .unwrap();
    assert_eq!(admin.send("GET", "/readyz", &[], "").await.0, 200);
    assert!(connect(server.admin, &ingest_pki.ca, Http::One)
        .await
        .is_err());

    // Plain HTTP to a TLS port is not served, and is counted.
    assert_eq!(http_status(server.ingest, "/bulk").await, None);
    eventually("the failed handshakes are counted", TIMEOUT, || async {
        let ingest = [("listener", "ingest")];
        let admin = [("listener", "admin")];
        let failures = tls_metric(
            server.admin,
            &admin_pki.ca,
            "flagstream_tls_handshake_failures_total",
            &ingest,
        )
        .await;
        let admin_failures = tls_metric(
            server.admin,
            &admin_pki.ca,
            "flagstream_tls_handshake_failures_total",
            &admin,
        )
        .await;
        (failures >= 1.0 && admin_failures >= 1.0)
            .then_some(())
            .ok_or(format!("ingest {failures}, admin {admin_failures}"))
    })
    .await;
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_while_old_ones_finish_and_a_bad_one_is_refused(
) {
    let dir = tempfile::tempdir().unwrap();
    let first = TestPki::new("first");
    let reload_fast = ["--tls-reload-interval", "100ms"];
    let (server, cert, _) = start_tls(dir.path(), &first, &reload_fast).await;
    let mut old = connect(server.ingest, &first.ca, Http::One).await.unwrap();
    assert_eq!(old.post_bulk(&numbered_bulk(0, 1)).await, 202);

    let second = TestPki::new("second");
    second.write(dir.path(), "ingest");
    let mut new = eventually(
        "a new connection gets the new certificate",
        TIMEOUT,
        || async {
            connect(server.ingest, &second.ca, Http::Two)
                .await
                .map_err(|err| err.to_string())
        },
    )
    .await;
    assert_eq!(new.post_bulk(&numbered_bulk(1, 1)).await, 202);
    assert!(
        connect(server.ingest, &first.ca, Http::One).await.is_err(),
        "the old certificate is still served"
    );
    // The connection made before the rotation keeps its session and finishes its work.
    assert_eq!(old.post_bulk(&numbered_bulk(2, 1)).await, 202);
    assert_eq!(
        metric(
            server.admin,
            "flagstream_tls_reloads_total",
            &[("listener", "ingest")]
        )
        .await,
        1.0
    );

    // A bad pair (not PEM; then a key that is not the certificate's) keeps the good one.
    let errors = || {
        metric(
            server.admin,
            "flagstream_tls_reload_errors_total",
            &[("listener", "ingest")],
        )
    };
    let errors_before = errors().await;
    let wait_for_errors = |what: &'static str, above: f64| {
        eventually(what, TIMEOUT, move || async move {
            let errors = errors().await;
            (errors > above)
                .then_some(())
                .ok_or(format!("{errors} errors"))
        })
    };
    replace(&cert, "not a certificate");
    wait_for_errors("the unusable certificate is counted", errors_before).await;
    let third = TestPki::new("third");
    replace(&cert, &third.cert_pem);
    wait_for_errors("the mismatched key is counted", errors_before + 1.0).await;
    let mut still = connect(server.ingest, &second.ca, Http::One).await.unwrap();
    assert_eq!(still.post_bulk(&numbered_bulk(3, 1)).await, 202);
    assert!(connect(server.ingest, &third.ca, Http::One).await.is_err());
    assert!(server.log_text().contains("TLS certificate reload failed"));
    let mut markers = markers(&wait_for_export(&dir.path().join("export"), 4, TIMEOUT).await);
    markers.sort_unstable();
    assert_eq!(markers, [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("deadline");
    let short_deadline = ["--header-timeout", "300ms"];
    let (server, _, _) = start_tls(dir.path(), &pki, &short_deadline).await;
    let mut silent = TcpStream::connect(server.ingest).await.unwrap();
    // Half a ClientHello record header, then nothing.
    tokio::io::AsyncWriteExt::write_all(&mut silent, &[0x16, 0x03, 0x01])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TIMEOUT, silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
    let closed = [("listener", "ingest"), ("reason", "header_timeout")];
    assert!(metric(server.admin, "flagstream_connections_closed_total", &closed).await >= 1.0);
}

#[test]
fn bad_tls_files_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (TestPki::new("one"), TestPki::new("other"));
    let (cert, key) = pki.write(dir.path(), "good");
    let (_, other_key) = other.write(dir.path(), "other");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    let run = |args: &[String]| {
        let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
            .args(["validate", "--data-dir", path(&dir.path().join("data"))])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let pair = |cert: &Path, key: &Path| {
        vec![
            "--tls-cert".to_string(),
            text(cert),
            "--tls-key".to_string(),
            text(key),
        ]
    };
    let cases = [
        (
            vec!["--tls-cert".to_string(), text(&cert)],
            "--tls-key",
            "is required with --tls-cert",
        ),
        (
            vec!["--admin-tls-key".to_string(), text(&key)],
            "--admin-tls-cert",
            "is required",
        ),
        (pair(&missing, &key), "--tls-cert", "cannot read"),
        (pair(&not_pem, &key), "--tls-cert", "BEGIN CERTIFICATE"),
        (pair(&cert, &not_pem), "--tls-key", "BEGIN PRIVATE KEY"),
        (
            pair(&cert, &other_key),
            "--tls-key",
            "is not the key of the certificate",
        ),
    ];
    for (args, flag, problem) in cases {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("`{flag}`")) && stderr.contains(problem),
            "{args:?}: {stderr}"
        );
    }
    let (code, stderr) = run(&pair(&cert, &key));
    assert_eq!(code, Some(0), "{stderr}");
}

/// A server whose ingest and admin listeners both speak TLS (certificates of one test CA),
/// and the CA's PEM file for clients.
async fn start_with_tls_admin(dir: &Path, name: &str) -> (Flagstream, PathBuf) {
    let pki = TestPki::new(name);
    let (admin_cert, admin_key) = pki.write(dir, "admin");
    let admin_tls = [
        "--admin-tls-cert",
        path(&admin_cert),
        "--admin-tls-key",
        path(&admin_key),
    ];
    let (server, _, _) = start_tls(dir, &pki, &admin_tls).await;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    (server, ca)
}

/// `flagstream top --once` against a TLS admin listener: with `--admin-tls-ca` it shows the
/// destinations; without, it fails naming the handshake instead of printing a screen.
#[tokio::test]
async fn top_reads_a_tls_admin_listener_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = start_with_tls_admin(dir.path(), "top").await;
    let top = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flagstream"))
            .args(["top", "--once", "--interval", "200ms"])
            .args(["--admin", &server.admin.to_string()])
            .args(extra)
            .env_remove("FLAGSTREAM_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let shown = top(&["--admin-tls-ca", path(&ca)]);
    let stdout = String::from_utf8_lossy(&shown.stdout);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(shown.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("archive"), "{stdout}");

    let refused = top(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&server.admin.to_string()), "{stderr}");
}

/// `flagstream dead-letters` and `flagstream destinations` against a TLS admin listener:
/// `https://` with `--admin-tls-ca` gets the server's answers; `https://` without the CA is
/// refused before connecting, naming the flag; the right CA with the wrong name fails the
/// handshake.
#[tokio::test]
async fn admin_clis_speak_tls_with_the_admin_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = start_with_tls_admin(dir.path(), "admin-cli").await;
    let url = format!("https://{}", server.admin);
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
            .args(args)
            .args(["--admin-url", &url])
            .env_remove("FLAGSTREAM_ADMIN_TOKEN")
            .env_remove("FLAGSTREAM_ADMIN_TLS_CA")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };

    let (ok, stdout, stderr) = run(&[
        "dead-letters",
        "list",
        "--json",
        "--admin-tls-ca",
        path(&ca),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(listed.is_object() || listed.is_array(), "{stdout}");

    let rewind = ["destinations", "rewind", "archive", "--to", "earliest"];
    let (ok, stdout, stderr) = run(&[&rewind[..], &["--admin-tls-ca", path(&ca)]].concat());
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("archive"), "{stdout}");

    let (ok, _, stderr) = run(&["dead-letters", "list"]);
    assert!(!ok && stderr.contains("--admin-tls-ca"), "{stderr}");

    let wrong_name = [
        "--admin-tls-ca",
        path(&ca),
        "--tls-server-name",
        "elsewhere",
    ];
    let (ok, _, stderr) = run(&[&["dead-letters", "list"][..], &wrong_name].concat());
    assert!(
        !ok && stderr.contains(&server.admin.port().to_string()),
        "{stderr}"
    );
}

/// `flagstream bench --ca` against the TLS listeners of the server it starts: requests go
/// over TLS to ingest, the delivered counts come over TLS from the admin listener.
#[test]
fn bench_posts_and_reads_counts_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("bench");
    let (cert, key) = pki.write(dir.path(), "server");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let serve_args = [
        format!("--serve-arg=--tls-cert={}", text(&cert)),
        format!("--serve-arg=--tls-key={}", text(&key)),
        format!("--serve-arg=--admin-tls-cert={}", text(&cert)),
        format!("--serve-arg=--admin-tls-key={}", text(&key)),
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["bench", "--duration", "1s", "--connections", "2", "--json"])
        .args([
            "--ca",
            path(&ca),
            "--data-dir",
            path(&dir.path().join("data")),
        ])
        .args(&serve_args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let accepted = report["accepted_events"].as_u64().unwrap();
    assert!(accepted > 0, "{report:#}");
    assert_eq!(report["failed_requests"], 0, "{report:#}");
    assert_eq!(
        report["destinations"][0]["delivered_all_accepted"], true,
        "{report:#}"
    );

    let without_ca = Command::new(env!("CARGO_BIN_EXE_flagstream"))
        .args(["bench", "--duration", "1s", "--connections", "1"])
        .args(["--data-dir", path(&dir.path().join("data2"))])
        .args(&serve_args)
        .output()
        .unwrap();
    assert!(!without_ca.status.success());
    let stderr = String::from_utf8_lossy(&without_ca.stderr);
    assert!(stderr.contains("--ca"), "{stderr}");
}
