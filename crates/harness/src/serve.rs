//! Start `flagstream serve` on free loopback ports, wait until it is ready, stop it.
//!
//! Ports: the server is told to bind `127.0.0.1:0` for both listeners and reports the
//! addresses it got in its JSON log (`ingest listening` / `admin listening`), which is read
//! back here. Nothing picks a port and releases it for the server to bind later, so two
//! servers started at once can never race for the same port.
//!
//! Logs: stdout and stderr go to a fresh file per start (`flagstream-<n>.log` in the data dir
//! unless told otherwise), so a test can read or grep them and a restart keeps the earlier
//! run's log. A [`Server`] dropped while its thread panics prints its log to stderr, so a
//! failing test shows what the server said.
//!
//! Every wait here polls a condition (a log line, `/readyz`, the process' exit) against a
//! deadline; none of them stands in for "nothing happened".

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client;

/// How often a wait re-checks its condition.
const POLL: Duration = Duration::from_millis(20);
/// The most of a log printed when a test fails (its tail).
const PRINTED_LOG_BYTES: usize = 64 * 1024;

/// Why a server could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawning {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("flagstream exited early ({status}); log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("flagstream not ready after {timeout:?}; log:\n{log}")]
    NotReady { timeout: Duration, log: String },
}

/// What to start: the binary, its data dir, extra flags and environment.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    defaults: Vec<(String, String)>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    log_path: Option<PathBuf>,
    ready_timeout: Duration,
}

impl ServeOptions {
    /// `binary serve --data-dir data_dir --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
    /// --log-format json`, plus whatever is added.
    pub fn new(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        ServeOptions {
            binary: binary.into(),
            data_dir: data_dir.into(),
            args: Vec::new(),
            defaults: vec![("--log-level".into(), "info".into())],
            env: Vec::new(),
            env_remove: vec!["FLAGSTREAM_CONFIG".into()],
            log_path: None,
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// One more flag (or flag value), passed through as given.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `flag value` unless the flags given with [`arg`](Self::arg) already set `flag`
    /// (flagstream rejects a flag given twice).
    pub fn default_arg(mut self, flag: impl Into<String>, value: impl Into<String>) -> Self {
        let flag = flag.into();
        self.defaults.retain(|(existing, _)| *existing != flag);
        self.defaults.push((flag, value.into()));
        self
    }

    /// An environment variable for the server process.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Write the server's output here instead of a fresh file in the data dir.
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    fn given(&self, flag: &str) -> bool {
        let with_value = format!("{flag}=");
        self.args
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&with_value))
    }

    /// Start the server and wait until `/readyz` answers 200.
    pub async fn start(self) -> Result<Server, StartError> {
        let prepare = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::Prepare { path, source }
        };
        std::fs::create_dir_all(&self.data_dir).map_err(prepare(&self.data_dir))?;
        let log_path = match &self.log_path {
            Some(path) => path.clone(),
            None => next_log_path(&self.data_dir),
        };
        let log = File::create(&log_path).map_err(prepare(&log_path))?;
        let log_for_stdout = log.try_clone().map_err(prepare(&log_path))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--log-format", "json"]);
        for (flag, value) in self.defaults.iter().filter(|(flag, _)| !self.given(flag)) {
            command.args([flag, value]);
        }
        command.args(&self.args);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        let child = command
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_for_stdout))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|source| StartError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let mut server = Server {
            child: Some(child),
            ingest: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: self.data_dir,
            log_path,
        };
        server.wait_ready(self.ready_timeout).await?;
        Ok(server)
    }
}

/// `flagstream-<n>.log` for the first `n` not used yet in `dir`.
fn next_log_path(dir: &Path) -> PathBuf {
    (0u32..)
        .map(|n| dir.join(format!("flagstream-{n}.log")))
        .find(|path| !path.exists())
        .expect("fewer than 2^32 logs")
}

/// A running `flagstream serve`; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    ingest: SocketAddr,
    admin: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl Server {
    /// The ingest listener's bound address.
    pub fn ingest(&self) -> SocketAddr {
        self.ingest
    }

    /// The admin listener's bound address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// `http://<ingest><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The JSON log lines written so far (other lines skipped).
    pub fn log_lines(&self) -> Vec<Value> {
        let Ok(file) = File::open(&self.log_path) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Result<client::Response, client::ClientError> {
        client::get(self.admin, path).await
    }

    /// Peak resident memory (`VmHWM`) in MiB, while the server runs.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Poll until both addresses are in the log and `/readyz` answers 200.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(StartError::Exited {
                    status,
                    log: self.log_text(),
                });
            }
            if let Some((ingest, admin)) = self.bound_addresses() {
                self.ingest = ingest;
                self.admin = admin;
                // A TLS admin listener cannot be polled in plain HTTP; the server logs
                // `ingest listening` once it is ready.
                if self.admin_tls() {
                    return Ok(());
                }
                if client::get(admin, "/readyz")
                    .await
                    .is_ok_and(|response| response.status == 200)
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(StartError::NotReady {
                    timeout,
                    log: self.log_text(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The addresses the server reported binding, once it has reported both.
    fn bound_addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        let lines = self.log_lines();
        let reported = |message: &str, field: &str| {
            lines
                .iter()
                .find(|line| line["message"] == message)
                .and_then(|line| line[field].as_str())
                .and_then(|addr| addr.parse().ok())
        };
        Some((
            reported("ingest listening", "ingest_addr")?,
            reported("admin listening", "admin_addr")?,
        ))
    }

    /// True when the server reported TLS on its admin listener.
    pub fn admin_tls(&self) -> bool {
        self.reported_tls("admin listening")
    }

    /// True when the server reported TLS on its ingest listener.
    pub fn ingest_tls(&self) -> bool {
        self.reported_tls("ingest listening")
    }

    fn reported_tls(&self, message: &str) -> bool {
        let lines = self.log_lines();
        let listening = lines.iter().find(|line| line["message"] == message);
        listening.is_some_and(|line| line["tls"] == true)
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL: a crash, no chance to clean up. Does nothing once stopped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait up to `timeout` for the server to exit by itself (e.g. after a fatal error); its
    /// exit status, or `None` when it is still running (or was already stopped).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    /// SIGTERM (an orderly shutdown) and wait up to `timeout` for the exit status; after
    /// that, SIGKILL and `None`. `None` too when the server was already stopped.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail = log
                .char_indices()
                .map(|(index, _)| index)
                .find(|&index| log.len() - index <= PRINTED_LOG_BYTES)
                .map_or("", |index| &log[index..]);
            eprintln!(
                "---- flagstream log ({}, last {} bytes) ----\n{tail}\n---- end of log ----",
                self.log_path.display(),
                tail.len()
            );
        }
    }
}
