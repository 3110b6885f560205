//! A private PostgreSQL cluster per test: Debian's PostgreSQL 15 (`/usr/lib/postgresql/15/bin`,
//! or `FLAGSTREAM_PG_BIN`), `initdb` into a temporary directory owned by the `postgres` user
//! (initdb refuses to run as root), started with `pg_ctl` on a free 127.0.0.1 port with its
//! socket in that directory. Trust authentication for the `postgres` superuser; `fsync=off`
//! (a killed *server* process loses nothing; only an OS crash would). Stopped on drop.
//!
//! A missing PostgreSQL FAILS the test with the command that installs it.
#![allow(dead_code)] // benches/postgres.rs includes this module and uses only part of it

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio_postgres::{Client, NoTls};

const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";
const INSTALL: &str = "scripts/install-test-deps.sh (it runs `apt-get install -y postgresql-15`)";

/// A running cluster (stopped on drop).
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
    /// Extra server settings (`-c …`), e.g. TLS.
    settings: String,
}

impl Cluster {
    /// initdb + start on a free port.
    pub fn start() -> Cluster {
        let bin = std::env::var_os("FLAGSTREAM_PG_BIN")
            .map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
        assert!(
            bin.join("initdb").is_file() && bin.join("pg_ctl").is_file(),
            "PostgreSQL is not installed at {} (CI={}): run {INSTALL}",
            bin.display(),
            std::env::var("CI").unwrap_or_default()
        );
        let dir = tempfile::Builder::new()
            .prefix("flagstream-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cluster = Cluster {
            bin,
            dir,
            port,
            running: false,
            settings: String::new(),
        };
        run(cluster.as_postgres("initdb").args([
            "-D",
            &cluster.data().display().to_string(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        cluster.resume();
        cluster
    }

    /// Like [`Cluster::start`], with TLS on: a self-signed certificate for `127.0.0.1`
    /// (made with `openssl`); returns the cluster and the certificate's PEM path.
    pub fn start_with_tls() -> (Cluster, PathBuf) {
        let mut cluster = Cluster::start();
        cluster.stop();
        let cert = cluster.data().join("server.crt");
        let key = cluster.data().join("server.key");
        run(cluster
            .as_postgres("/usr/bin/openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        run(cluster.as_postgres("/bin/chmod").arg("600").arg(&key));
        cluster.settings = format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        cluster.resume();
        (cluster, cert)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the cluster's bin dir (or an absolute path), run as `postgres` when we
    /// are root.
    fn as_postgres(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// A `--dest` URL for database `db` (options appended after `?`).
    pub fn url(&self, db: &str, options: &str) -> String {
        self.url_via(self.port, db, options)
    }

    /// [`Cluster::url`] through a proxy listening on 127.0.0.1:`port`.
    pub fn url_via(&self, port: u16, db: &str, options: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{port}/{db}?sslmode=disable{}{options}",
            if options.is_empty() { "" } else { "&" }
        )
    }

    /// Where the server listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// Stop the server (fast shutdown: clients disconnected, data kept).
    pub fn stop(&mut self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
        self.running = false;
    }

    /// Start it again on the same port with the same data.
    pub fn resume(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.pg_ctl(&["-o", &options, "-l", &log, "start"]);
        self.running = true;
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        run(self
            .as_postgres("pg_ctl")
            .args(["-D", &data, "-w"])
            .args(args));
    }

    /// A connection to `db` as the superuser.
    pub async fn client(&self, db: &str) -> Client {
        self.client_as("postgres", db).await
    }

    /// A connection to `db` as `user`.
    pub async fn client_as(&self, user: &str, db: &str) -> Client {
        let config = format!("host=127.0.0.1 port={} user={user} dbname={db}", self.port);
        let (client, connection) = tokio_postgres::connect(&config, NoTls)
            .await
            .unwrap_or_else(|err| panic!("connect to {db}: {err}"));
        tokio::spawn(connection);
        client
    }

    /// Create database `name`; returns a superuser connection to it.
    pub async fn create_database(&self, name: &str) -> Client {
        self.client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        self.client(name).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let _ = self
                .as_postgres("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Are we root (then initdb and pg_ctl run as `postgres`)? `/proc/self` belongs to our uid.
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
