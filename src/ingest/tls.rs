//! TLS for the ingest and admin listeners: a PEM certificate chain and private key loaded with
//! rustls (the aws-lc-rs provider already in the tree), ALPN `h2` and `http/1.1`, and the
//! pair reloaded when its files change.
//!
//! Invariants:
//! * A listener starts only with a pair that parses and matches (the key is the
//!   certificate's): [`TlsFiles::load`] names the flag at fault otherwise.
//! * A reload swaps the pair for *new* handshakes only; established connections keep the
//!   session they negotiated and finish normally.
//! * A bad new pair (unreadable, bad PEM, key not matching) never replaces a good one: the old
//!   pair keeps serving, the failure is logged at ERROR and counted once per distinct content,
//!   and the next change of the files is tried again.
//! * The handshake runs inside the connection's slot and counts against its header deadline
//!   (`--header-timeout` from accept, see [`super::connection`]), so a client that never
//!   finishes its handshake cannot hold a slot longer than one that never sends a head.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Default `--tls-reload-interval`.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A certificate/key pair on disk and the flags that named them (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_flag: &'static str,
    pub key_flag: &'static str,
}

/// Why a pair could not be loaded; [`TlsError::flag`] names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} {problem}")]
    Pem {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "the key in {key} is not the key of the certificate in `--{cert_flag}` {cert} ({problem})"
    )]
    Mismatch {
        key_flag: &'static str,
        cert_flag: &'static str,
        key: PathBuf,
        cert: PathBuf,
        problem: String,
    },
}

impl TlsError {
    /// The flag at fault, without dashes.
    pub fn flag(&self) -> &'static str {
        match self {
            TlsError::Read { flag, .. } | TlsError::Pem { flag, .. } => flag,
            TlsError::Mismatch { key_flag, .. } => key_flag,
        }
    }
}

/// The provider every listener uses: aws-lc-rs, the one rustls is built with here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsFiles {
    /// Read both files and build the pair, checking that the key matches the certificate.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let (cert, key) = self.read()?;
        self.parse(&cert, &key)
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |flag, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                flag,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok((
            read(self.cert_flag, &self.cert)?,
            read(self.key_flag, &self.key)?,
        ))
    }

    fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let pem_error = |flag, path: &Path, problem: String| TlsError::Pem {
            flag,
            path: path.to_path_buf(),
            problem,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| pem_error(self.cert_flag, &self.cert, format!("is not PEM: {err}")))?;
        if chain.is_empty() {
            let problem = "holds no `BEGIN CERTIFICATE` block".to_string();
            return Err(pem_error(self.cert_flag, &self.cert, problem));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
            let problem = match err {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "holds no `BEGIN PRIVATE KEY` (PKCS#8, RSA or EC) block".to_string()
                }
                other => format!("is not a PEM private key: {other}"),
            };
            pem_error(self.key_flag, &self.key, problem)
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                key_flag: self.key_flag,
                cert_flag: self.cert_flag,
                key: self.key.clone(),
                cert: self.cert.clone(),
                problem: err.to_string(),
            },
            other => pem_error(self.key_flag, &self.key, format!("is not usable: {other}")),
        })
    }

    /// A digest of both files' contents, to notice a change without keeping the key around.
    fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update((cert.len() as u64).to_le_bytes());
        hasher.update(cert);
        hasher.update(key);
        hasher.finalize().into()
    }
}

/// The certificate new handshakes get; swapped by the reloader.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// TLS for one listener: the acceptor and the reloadable pair behind it.
pub struct ListenerTls {
    listener: &'static str,
    files: TlsFiles,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ListenerTls")
            .field("listener", &self.listener)
            .field("files", &self.files)
            .finish()
    }
}

impl ListenerTls {
    /// Load the pair for the listener named `listener` (`ingest`, `admin`: metric label).
    pub fn new(listener: &'static str, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(files.load()?))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/2 for clients that ask for it; hyper's auto builder reads the preface either way.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        metrics::counter!(m::TLS_RELOAD_ERRORS_TOTAL, "listener" => listener).increment(0);
        metrics::counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener).increment(0);
        Ok(Arc::new(ListenerTls {
            listener,
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// Run the server side of the handshake (the caller bounds it by the header deadline).
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let accepted = self.acceptor.accept(stream).await;
        if accepted.is_err() {
            metrics::counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => self.listener)
                .increment(1);
        }
        accepted
    }

    /// Check the files every `interval` and swap in a changed pair, until `shutdown`.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut seen = tls.files.read().ok().map(|(c, k)| TlsFiles::digest(&c, &k));
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => tls.reload_if_changed(&mut seen).await,
                }
            }
        });
    }

    /// One check: `seen` is the digest of the contents last tried (good or bad).
    async fn reload_if_changed(&self, seen: &mut Option<[u8; 32]>) {
        let (files, last) = (self.files.clone(), *seen);
        let outcome = tokio::task::spawn_blocking(move || {
            let (cert, key) = files.read()?;
            let digest = TlsFiles::digest(&cert, &key);
            // Parse only what changed: an unchanged pair costs two small reads per interval.
            let parsed = (last != Some(digest)).then(|| files.parse(&cert, &key));
            Ok::<_, TlsError>((digest, parsed))
        })
        .await;
        match outcome {
            Ok(Ok((_, None))) => {}
            Ok(Ok((digest, Some(Ok(pair))))) => {
                *seen = Some(digest);
                *self.current.0.write() = Arc::new(pair);
                metrics::counter!(m::TLS_RELOADS_TOTAL, "listener" => self.listener).increment(1);
                tracing::info!(listener = self.listener, cert = %self.files.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            Ok(Ok((digest, Some(Err(err))))) => self.reload_failed(seen, Some(digest), &err),
            Ok(Err(err)) => self.reload_failed(seen, None, &err),
            Err(join) => tracing::error!(error = %join, "certificate reload task failed"),
        }
    }

    /// Keep the old pair; report a failure once per distinct content (an unreadable file is
    /// reported once until it becomes readable).
    fn reload_failed(&self, seen: &mut Option<[u8; 32]>, digest: Option<[u8; 32]>, err: &TlsError) {
        const UNREADABLE: [u8; 32] = [0; 32];
        let digest = digest.unwrap_or(UNREADABLE);
        if *seen == Some(digest) {
            return;
        }
        *seen = Some(digest);
        metrics::counter!(m::TLS_RELOAD_ERRORS_TOTAL, "listener" => self.listener).increment(1);
        tracing::error!(listener = self.listener, flag = err.flag(), error = %err, "TLS certificate reload failed; still serving the previous certificate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed `localhost` pair written to `dir` as `tls.crt`/`tls.key`.
    fn write_pair(dir: &Path) -> TlsFiles {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            cert_flag: "tls-cert",
            key_flag: "tls-key",
        };
        std::fs::write(&files.cert, pair.cert.pem()).unwrap();
        std::fs::write(&files.key, pair.key_pair.serialize_pem()).unwrap();
        files
    }

    fn served(tls: &ListenerTls) -> CertificateDer<'static> {
        tls.current.0.read().cert[0].clone()
    }

    #[tokio::test]
    async fn a_changed_pair_is_swapped_in_and_a_bad_one_keeps_the_old_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path());
        let tls = ListenerTls::new("test", files.clone()).unwrap();
        let (cert, key) = files.read().unwrap();
        let mut seen = Some(TlsFiles::digest(&cert, &key));
        let first = served(&tls);
        tls.reload_if_changed(&mut seen).await;
        assert_eq!(served(&tls), first, "unchanged files change nothing");

        write_pair(dir.path());
        tls.reload_if_changed(&mut seen).await;
        let second = served(&tls);
        assert_ne!(second, first, "the new pair serves new handshakes");

        std::fs::write(&files.cert, "garbage").unwrap();
        tls.reload_if_changed(&mut seen).await;
        let bad = seen;
        tls.reload_if_changed(&mut seen).await;
        assert_eq!(seen, bad, "the same bad content is tried once");
        assert_eq!(served(&tls), second, "a bad pair keeps the old one");
        std::fs::remove_file(&files.key).unwrap();
        tls.reload_if_changed(&mut seen).await;
        assert_eq!(served(&tls), second, "an unreadable pair keeps the old one");
    }

    #[test]
    fn errors_name_the_flag_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path());
        assert!(files.load().is_ok());
        std::fs::write(&files.key, "no key here").unwrap();
        assert_eq!(files.load().unwrap_err().flag(), "tls-key");
        let missing = TlsFiles {
            cert: dir.path().join("missing.crt"),
            ..files
        };
        assert_eq!(missing.load().unwrap_err().flag(), "tls-cert");
    }
}
