//! The command line: every subcommand and flag, as clap derive structs.
//!
//! Every serve flag has an environment variable (`FLAGSTREAM_…`) and shows its default in
//! `--help`. Values are parsed by clap itself (sizes, durations, addresses, enums), so a bad
//! value is reported by clap with the flag's name and the accepted values, exit code 2.
//! Cross-flag checks (environments, destinations, size relations) happen in
//! [`super::resolve`], which reports [`super::ConfigError`]s that also name the flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Self-hosted Data Export for feature-flag analytics events.
#[derive(Debug, Parser)]
#[command(name = "flagstream", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingest server, the delivery engine and the admin listener.
    Serve(ServeArgs),
    /// Inspect or verify a write-ahead log directory (offline; stop the server first).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Check the flags, the config file and every destination's settings; exit 0 when valid.
    Validate(ServeArgs),
    /// Send one recognisable test event to the named destination and print the outcome.
    TestDestination {
        /// Name of a configured destination (see `GET /v1/destinations`).
        name: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Load generator: posts LaunchDarkly `/bulk` batches and reports throughput and latency.
    Bench(BenchArgs),
    /// Live view of a running flagstream (ingest rate, WAL use, each destination's rate, lag,
    /// retries, dead letters), read from its admin API. `--once` prints one screen.
    Top(TopArgs),
    /// List, show (with reasons) and redrive dead letters of a running flagstream, over its
    /// admin API.
    DeadLetters(DeadLettersArgs),
    /// Act on the destinations of a running flagstream through its admin API.
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
    },
}

/// `flagstream destinations …` (each talks to the admin API of a running server).
#[derive(Debug, Subcommand)]
pub enum DestinationsCommand {
    /// Move a destination's cursor back and deliver from there again (replayed batches keep
    /// their ids). Prints the server's answer as JSON.
    Rewind(RewindArgs),
}

/// Where the admin API is and how to reach it (shared by the `destinations` and
/// `dead-letters` subcommands).
#[derive(Debug, Clone, Args)]
pub struct AdminClientArgs {
    /// Base URL of the server's admin API: `http://HOST:PORT`, or `https://HOST:PORT` when the
    /// admin listener speaks TLS (`--admin-tls-cert`; then pass `--admin-tls-ca`).
    #[arg(
        long,
        global = true,
        env = "FLAGSTREAM_ADMIN_URL",
        default_value = "http://127.0.0.1:8031"
    )]
    pub admin_url: String,

    /// The server's admin token: the token, `env:NAME` or `file:PATH`.
    #[arg(
        long,
        global = true,
        env = "FLAGSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN|env:NAME|file:PATH"
    )]
    pub admin_token: Option<String>,

    /// For an `https://` admin URL: trust the CA certificates of this PEM file.
    #[arg(
        long,
        global = true,
        env = "FLAGSTREAM_ADMIN_TLS_CA",
        value_name = "FILE"
    )]
    pub admin_tls_ca: Option<PathBuf>,

    /// For an `https://` admin URL: the name the server's certificate must carry.
    #[arg(long, global = true, default_value = "localhost")]
    pub tls_server_name: String,
}

/// Settings of `flagstream destinations rewind`.
#[derive(Debug, Clone, Args)]
pub struct RewindArgs {
    /// Name of the destination (see `GET /v1/destinations`).
    pub name: String,

    /// Where to go back to: an RFC 3339 time (`2026-11-01T00:00:00Z`), a seq, or `earliest`.
    #[arg(long, value_parser = parse_rewind_to)]
    pub to: crate::delivery::start::RewindTo,

    #[command(flatten)]
    pub admin: AdminClientArgs,
}

/// `--to` of `destinations rewind`: `earliest`, a seq (a whole number from 1) or a time.
pub fn parse_rewind_to(text: &str) -> Result<crate::delivery::start::RewindTo, String> {
    use crate::delivery::start::{parse_time, RewindTo};
    if text == "earliest" {
        return Ok(RewindTo::Earliest);
    }
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return match text.parse::<u64>() {
            Ok(seq) if seq > 0 => Ok(RewindTo::Seq(seq)),
            _ => Err(format!("`{text}` is not a seq (a whole number from 1)")),
        };
    }
    parse_time(text).map(RewindTo::Time).map_err(|err| {
        format!("`{text}` is not `earliest`, a seq or an RFC 3339 time such as 2026-11-01T00:00:00Z ({err})")
    })
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Print segments, records and cursors of a WAL directory.
    Inspect {
        /// The data dir (`--data-dir`) or the WAL directory inside it (`<data-dir>/wal`).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum; exit 1 when anything is wrong or nothing was checked.
    Verify {
        /// The data dir (`--data-dir`) or the WAL directory inside it (`<data-dir>/wal`).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// How appends become durable before the client gets its 202.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalSyncArg {
    /// fdatasync (group commit) before answering: nothing acknowledged is ever lost.
    Always,
    /// Answer after the copy into the log; fdatasync every `--wal-sync-interval`.
    Interval,
    /// Answer after the copy; the kernel writes back when it likes (a power loss loses data).
    Never,
}

/// What recovery does with valid records after a damaged one in the tail segment (a torn
/// tail with nothing valid after it is always cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WalRecoveryArg {
    /// Keep every valid record; skip, count and log only the damaged ones.
    TolerateTail,
    /// Refuse to start, naming the damaged seqs.
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A byte size (`512KiB`, `10MiB`, `1GiB`, plain bytes), with a message that says what is
/// expected: bytesize's own error for an out-of-range number names an empty unit.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let expected = "expected a size such as 512KiB, 10MiB or 1GiB";
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() && digits.parse::<u64>().is_err() {
        return Err(format!("`{text}` is too large; {expected}"));
    }
    let size = text
        .parse::<ByteSize>()
        .map_err(|_| format!("`{text}` is not a size; {expected}"))?;
    // bytesize saturates numbers × units that overflow; anything near u64::MAX is such a case.
    if size.as_u64() >= u64::MAX / 2 {
        return Err(format!("`{text}` is too large; {expected}"));
    }
    Ok(size)
}

/// `--wal-page-cache-bytes`: a size of at least [`MIN_PAGE_CACHE_BYTES`], or `unlimited`.
///
/// [`MIN_PAGE_CACHE_BYTES`]: crate::wal::MIN_PAGE_CACHE_BYTES
pub fn parse_page_cache(text: &str) -> Result<Limit<ByteSize>, String> {
    if text.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(Limit::Unlimited);
    }
    let size = parse_size(text.trim())?;
    let floor = crate::wal::MIN_PAGE_CACHE_BYTES;
    if size.as_u64() < floor {
        return Err(format!(
            "`{text}` is below the {}MiB the log's recent records need; give a larger size or `unlimited`",
            floor >> 20
        ));
    }
    Ok(Limit::Finite(size))
}

/// `--wal-retention`: `off`, a duration, a size, or a duration and a size separated by `,`.
pub fn parse_retention(text: &str) -> Result<crate::wal::Retention, String> {
    let mut retention = crate::wal::Retention::default();
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(retention);
    }
    let expected = "expected `off`, a duration (24h), a size (10GiB) or both (24h,10GiB)";
    for part in text.split(',').map(str::trim) {
        if let Ok(age) = humantime::parse_duration(part) {
            if age.is_zero() || retention.max_age.replace(age).is_some() {
                return Err(format!("`{text}`: {expected}"));
            }
        } else if let Ok(size) = parse_size(part) {
            if size.as_u64() == 0 || retention.max_bytes.replace(size.as_u64()).is_some() {
                return Err(format!("`{text}`: {expected}"));
            }
        } else {
            return Err(format!(
                "`{part}` is neither a duration nor a size; {expected}"
            ));
        }
    }
    Ok(retention)
}

/// A count that may be `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Finite(T),
    Unlimited,
}

impl<T: std::str::FromStr> std::str::FromStr for Limit<T>
where
    T::Err: std::fmt::Display,
{
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Limit::Unlimited);
        }
        text.parse::<T>()
            .map(Limit::Finite)
            .map_err(|err| format!("{err} (expected a value or `unlimited`)"))
    }
}

impl<T: Copy> Limit<T> {
    /// `None` means unlimited.
    pub fn finite(self) -> Option<T> {
        match self {
            Limit::Finite(value) => Some(value),
            Limit::Unlimited => None,
        }
    }
}

/// A size, or `auto` for one derived from other flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoSize {
    Auto,
    Size(ByteSize),
}

/// `auto` or a size (see [`parse_size`]).
pub fn parse_auto_size(text: &str) -> Result<AutoSize, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(AutoSize::Auto);
    }
    parse_size(text)
        .map(AutoSize::Size)
        .map_err(|err| format!("{err}, or `auto`"))
}

/// A count, or `auto` for one derived from other flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCount {
    Auto,
    Count(usize),
}

/// `auto` or a whole number of at least 1.
pub fn parse_auto_count(text: &str) -> Result<AutoCount, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(AutoCount::Auto);
    }
    match text.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a count of at least 1, or `auto`")),
        Ok(count) => Ok(AutoCount::Count(count)),
    }
}

/// Every setting of a running flagstream. Also accepted by `validate` and `test-destination`,
/// and settable (by long name, without the dashes) in the `--config` TOML file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with the same settings (keys are the flag names without `--`), plus
    /// `[environments]` and `[[destination]]` tables. Flags and env vars override it.
    #[arg(long, env = "FLAGSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of the ingest listener (SDK traffic).
    #[arg(long, env = "FLAGSTREAM_LISTEN", default_value = "127.0.0.1:8030")]
    pub listen: SocketAddr,

    /// Address of the admin listener (/metrics, /healthz, /readyz, /v1/destinations).
    #[arg(
        long,
        env = "FLAGSTREAM_ADMIN_LISTEN",
        default_value = "127.0.0.1:8031"
    )]
    pub admin_listen: SocketAddr,

    /// Bearer token the admin API requires on every route but /healthz and /readyz: the token
    /// itself, `env:NAME` or `file:PATH` (at least 16 bytes). Required when --admin-listen is
    /// not a loopback address.
    #[arg(
        long,
        env = "FLAGSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN|env:NAME|file:PATH"
    )]
    pub admin_token: Option<String>,

    /// Serve /metrics without the admin token (for scrapers that cannot send one).
    #[arg(long, env = "FLAGSTREAM_ADMIN_METRICS_PUBLIC", default_value_t = false)]
    pub admin_metrics_public: bool,

    /// PEM certificate chain for TLS on the ingest listener (leaf first); with --tls-key.
    /// Reloaded when the file changes. Without it, ingest serves plain HTTP.
    #[arg(long, env = "FLAGSTREAM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, env = "FLAGSTREAM_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain for TLS on the admin listener; with --admin-tls-key. The admin
    /// listener has its own pair (often an internal CA); give the ingest files to share one.
    #[arg(long, env = "FLAGSTREAM_ADMIN_TLS_CERT", value_name = "FILE")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key of --admin-tls-cert.
    #[arg(long, env = "FLAGSTREAM_ADMIN_TLS_KEY", value_name = "FILE")]
    pub admin_tls_key: Option<PathBuf>,

    /// How often the TLS certificate and key files are checked for changes (a changed pair
    /// serves new connections; a bad one is logged and the old pair kept).
    #[arg(long, env = "FLAGSTREAM_TLS_RELOAD_INTERVAL", default_value = "10s")]
    pub tls_reload_interval: humantime::Duration,

    /// Directory for the WAL (`wal/`), dead letters and the default file destination.
    #[arg(long, env = "FLAGSTREAM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Maps credentials to an environment: `NAME=KEY[,KEY…]` (SDK keys, mobile keys, client-side
    /// IDs, API keys). Repeatable; `;` separates entries in the env var. With none, the server
    /// is open: every request goes to environment `default`.
    #[arg(
        long,
        env = "FLAGSTREAM_ENVIRONMENTS",
        value_name = "NAME=KEY[,KEY…]",
        value_delimiter = ';'
    )]
    pub environment: Vec<String>,

    /// A destination as a URL: `file:///path?format=ndjson`, `log:`, `kinesis://stream`, …
    /// Repeatable (the long help lists every destination type).
    #[arg(
        long,
        env = "FLAGSTREAM_DEST",
        value_name = "URL",
        value_delimiter = ';',
        long_help = crate::dest::registry::dest_help()
    )]
    pub dest: Vec<String>,

    /// Project name written into the LaunchDarkly export envelope.
    #[arg(long, env = "FLAGSTREAM_PROJECT", default_value = "default")]
    pub project: String,

    /// Size of each WAL segment file (preallocated).
    #[arg(long, env = "FLAGSTREAM_WAL_SEGMENT_BYTES", value_parser = parse_size, default_value = "128MiB")]
    pub wal_segment_bytes: ByteSize,

    /// Disk budget for all WAL segments; when full, ingest answers 503 with Retry-After.
    #[arg(long, env = "FLAGSTREAM_WAL_MAX_BYTES", value_parser = parse_size, default_value = "20GiB")]
    pub wal_max_bytes: ByteSize,

    /// Keep WAL segments every destination has passed, for replays (`start=`, rewinds): a
    /// duration (`24h`), a size (`10GiB`) or both (`24h,10GiB`: each must hold), or `off`.
    /// Retained segments count against `--wal-max-bytes` and are evicted, oldest first, when
    /// new records need the room.
    #[arg(long, env = "FLAGSTREAM_WAL_RETENTION", value_parser = parse_retention, default_value = "off")]
    pub wal_retention: crate::wal::Retention,

    /// Never allocate a segment when the filesystem's free space would drop below this.
    #[arg(long, env = "FLAGSTREAM_WAL_MIN_FREE_BYTES", value_parser = parse_size, default_value = "1GiB")]
    pub wal_min_free_bytes: ByteSize,

    /// OS page cache the WAL may fill: durable bytes more than this far behind the newest
    /// record are dropped from it (a destination further behind reads them back from disk),
    /// so a long backlog does not grow the page cache, which counts in the container's
    /// memory. `unlimited` leaves it to the kernel. At least 16MiB.
    #[arg(long, env = "FLAGSTREAM_WAL_PAGE_CACHE_BYTES", value_parser = parse_page_cache, default_value = "256MiB")]
    pub wal_page_cache_bytes: Limit<ByteSize>,

    /// When an accepted body counts as durable (the 202 waits for it).
    #[arg(
        long,
        env = "FLAGSTREAM_WAL_SYNC",
        value_enum,
        default_value = "always"
    )]
    pub wal_sync: WalSyncArg,

    /// fdatasync period for `--wal-sync interval`.
    #[arg(long, env = "FLAGSTREAM_WAL_SYNC_INTERVAL", default_value = "100ms")]
    pub wal_sync_interval: humantime::Duration,

    /// What recovery does with valid records after a damaged one in the tail segment.
    #[arg(
        long,
        env = "FLAGSTREAM_WAL_RECOVERY",
        value_enum,
        default_value = "tolerate-tail"
    )]
    pub wal_recovery: WalRecoveryArg,

    /// Disk budget for all dead-letter files; a destination whose dead letters do not fit
    /// pauses (its events wait in the WAL) until room appears. Default: a tenth of
    /// `--wal-max-bytes`, at least 4 × `--max-body-bytes`.
    #[arg(long, env = "FLAGSTREAM_DEAD_LETTER_MAX_BYTES", value_parser = parse_auto_size, default_value = "auto")]
    pub dead_letter_max_bytes: AutoSize,

    /// Memory for decoded records shared by destinations with the same schema, export options
    /// and filter, so each record is decoded once for all of them; 0 turns sharing off.
    #[arg(long, env = "FLAGSTREAM_SHARED_RECORDS_MAX_BYTES", value_parser = parse_size, default_value = "64MiB")]
    pub shared_records_max_bytes: ByteSize,

    /// Largest accepted request body, after gunzip (bigger → 413).
    #[arg(long, env = "FLAGSTREAM_MAX_BODY_BYTES", value_parser = parse_size, default_value = "10MiB")]
    pub max_body_bytes: ByteSize,

    /// Memory budget for request bodies being received, decompressed or appended at once;
    /// requests wait for room (backpressure), then get 503.
    #[arg(long, env = "FLAGSTREAM_MAX_INFLIGHT_BYTES", value_parser = parse_size, default_value = "64MiB")]
    pub max_inflight_bytes: ByteSize,

    /// Most simultaneous ingest connections; further connections wait in the accept queue.
    #[arg(long, env = "FLAGSTREAM_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Most ingest connections one client (peer IP address) may hold; over it, its idle ones are
    /// closed first and then new ones refused with 503. `auto`: a quarter of
    /// `--max-connections`, at least 64 (no cap with 64 slots or fewer).
    #[arg(long, env = "FLAGSTREAM_MAX_CONNECTIONS_PER_CLIENT", value_parser = parse_auto_count, default_value = "auto")]
    pub max_connections_per_client: AutoCount,

    /// Close an ingest or admin connection that has not sent a complete request head this long
    /// after it was accepted (silent and slow-header clients).
    #[arg(long, env = "FLAGSTREAM_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: humantime::Duration,

    /// Close a connection that has had no request in progress this long (HTTP/1 keep-alive,
    /// HTTP/2 without an open stream).
    #[arg(long, env = "FLAGSTREAM_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: humantime::Duration,

    /// A request body must arrive within this long after its head (else 408 `body_timeout`).
    #[arg(long, env = "FLAGSTREAM_BODY_TIMEOUT", default_value = "60s")]
    pub body_timeout: humantime::Duration,

    /// Longest gap between two pieces of a request body (else 408 `body_stalled`).
    #[arg(long, env = "FLAGSTREAM_BODY_STALL_TIMEOUT", default_value = "10s")]
    pub body_stall_timeout: humantime::Duration,

    /// How many recent `X-LaunchDarkly-Payload-ID`s are remembered to drop SDK retries (0 = off).
    #[arg(long, env = "FLAGSTREAM_DEDUPE_CACHE_SIZE", default_value_t = 100_000)]
    pub dedupe_cache_size: usize,

    /// At start-up, remember again the payload ids of records received this recently (read
    /// from the WAL), so an SDK retry arriving after a restart is not stored twice (0s = off).
    #[arg(long, env = "FLAGSTREAM_DEDUPE_RECOVERY_WINDOW", default_value = "5m")]
    pub dedupe_recovery_window: humantime::Duration,

    /// Attempts per batch before it goes to the dead letters (or `unlimited`).
    #[arg(long, env = "FLAGSTREAM_RETRY_MAX_ATTEMPTS", default_value = "5")]
    pub retry_max_attempts: Limit<u32>,

    /// Give up on a batch (dead letters) this long after its first failure (or `unlimited`).
    #[arg(long, env = "FLAGSTREAM_RETRY_MAX_AGE", default_value = "30m")]
    pub retry_max_age: Limit<humantime::Duration>,

    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long, env = "FLAGSTREAM_RETRY_INITIAL_BACKOFF", default_value = "1m")]
    pub retry_initial_backoff: humantime::Duration,

    /// Longest delay between two attempts.
    #[arg(long, env = "FLAGSTREAM_RETRY_MAX_BACKOFF", default_value = "16m")]
    pub retry_max_backoff: humantime::Duration,

    /// Log format on stderr.
    #[arg(
        long,
        env = "FLAGSTREAM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,flagstream=debug`).
    #[arg(long, env = "FLAGSTREAM_LOG", default_value = "info")]
    pub log_level: String,

    /// On SIGTERM/SIGINT, how long in-flight requests and deliveries may take to finish.
    #[arg(long, env = "FLAGSTREAM_SHUTDOWN_TIMEOUT", default_value = "30s")]
    pub shutdown_timeout: humantime::Duration,
}

/// Settings of `flagstream bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Post to an already running flagstream at this base URL instead of starting one.
    #[arg(long, env = "FLAGSTREAM_BENCH_URL")]
    pub url: Option<String>,

    /// Admin address of the server given by `--url` (for the delivered-events count).
    #[arg(long, env = "FLAGSTREAM_BENCH_ADMIN")]
    pub admin: Option<SocketAddr>,

    /// Concurrent connections (each keeps one request in flight).
    #[arg(long, env = "FLAGSTREAM_BENCH_CONNECTIONS", default_value_t = 64)]
    pub connections: usize,

    /// How long to post.
    #[arg(long, env = "FLAGSTREAM_BENCH_DURATION", default_value = "10s")]
    pub duration: humantime::Duration,

    /// Events per `/bulk` body.
    #[arg(long, env = "FLAGSTREAM_BENCH_BATCH_EVENTS", default_value_t = 100)]
    pub batch_events: usize,

    /// `--wal-sync` of the flagstream the bench starts.
    #[arg(
        long,
        env = "FLAGSTREAM_BENCH_WAL_SYNC",
        value_enum,
        default_value = "always"
    )]
    pub wal_sync: WalSyncArg,

    /// Data directory of the flagstream the bench starts (a fresh temporary one by default).
    #[arg(long, env = "FLAGSTREAM_BENCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Extra flag for the flagstream the bench starts, e.g. `--serve-arg=--wal-max-bytes=2GiB`.
    /// Repeatable.
    #[arg(long = "serve-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub serve_args: Vec<String>,

    /// How long to wait for the destinations to catch up after posting stops.
    #[arg(long, env = "FLAGSTREAM_BENCH_DRAIN_TIMEOUT", default_value = "120s")]
    pub drain_timeout: humantime::Duration,

    /// File destinations of the flagstream the bench starts (`file-0`, `file-1`, …; each its
    /// own directory, every kind, `rotate=200ms`). A `--serve-arg=--dest=…` replaces them.
    #[arg(long, env = "FLAGSTREAM_BENCH_DESTINATIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub destinations: u16,

    /// Pause every destination during the load (ingest CPU alone), then resume and measure
    /// the drain of the backlog (delivery CPU, drain rate, peak memory while draining).
    #[arg(long)]
    pub pause_delivery: bool,

    /// After the load, SIGKILL the started server, restart it on the same data dir and time
    /// its recovery until `/readyz` answers 200.
    #[arg(long, conflicts_with = "url")]
    pub recovery: bool,

    /// PEM file of the CA that signed the server's TLS certificates: needed for an `https://`
    /// `--url`, `--admin-tls`, or a started server given `--serve-arg=--tls-cert=…`.
    #[arg(long, env = "FLAGSTREAM_BENCH_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// The `--admin` address speaks TLS (the server has `--admin-tls-cert`).
    #[arg(long, requires = "ca")]
    pub admin_tls: bool,

    /// The name the server's TLS certificates must carry.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `flagstream top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Admin address of the flagstream to watch.
    #[arg(
        long,
        env = "FLAGSTREAM_ADMIN_LISTEN",
        default_value = "127.0.0.1:8031"
    )]
    pub admin: SocketAddr,

    /// The server's admin token: the token, `env:NAME` or `file:PATH`.
    #[arg(
        long,
        env = "FLAGSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN|env:NAME|file:PATH"
    )]
    pub admin_token: Option<String>,

    /// Time between refreshes (and, with `--once`, the window rates are measured over).
    #[arg(long, default_value = "1s")]
    pub interval: humantime::Duration,

    /// Print one plain-text screen and exit (for scripts and logs).
    #[arg(long)]
    pub once: bool,

    /// The admin listener speaks TLS (`--admin-tls-cert`): trust the CA certificates of this
    /// PEM file.
    #[arg(long, env = "FLAGSTREAM_TOP_ADMIN_TLS_CA", value_name = "FILE")]
    pub admin_tls_ca: Option<PathBuf>,

    /// The name the admin listener's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
}

/// `flagstream dead-letters`: the admin API to talk to and what to do.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    pub command: DeadLettersCommand,

    /// The admin API of the flagstream to talk to.
    #[command(flatten)]
    pub admin: AdminClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Dead-letter files, counts by reason, bytes and redriven counts (every destination, or
    /// NAME).
    List {
        name: Option<String>,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead letters of NAME with their reasons, oldest first.
    Show {
        name: String,
        /// Only dead letters whose reason contains TEXT.
        #[arg(long, value_name = "reason=TEXT")]
        filter: Option<String>,
        /// Skip this many (matching) dead letters.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send the dead letters of NAME again through the destination's batching and retries;
    /// each is sent once (a second redrive sends only what failed again).
    Redrive {
        name: String,
        /// Send them through another destination (same schema) instead.
        #[arg(long, value_name = "OTHER")]
        to: Option<String>,
        /// Only dead letters whose reason contains TEXT.
        #[arg(long, value_name = "reason=TEXT")]
        filter: Option<String>,
    },
}
