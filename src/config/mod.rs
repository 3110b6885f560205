//! Configuration: the command line ([`cli`]), the optional TOML file ([`file`]) and their
//! resolution into one validated [`ServeConfig`].
//!
//! ## Sources and precedence
//!
//! Command line > `FLAGSTREAM_*` environment variable > `--config` file > built-in default.
//! clap does the first, second and fourth; [`merge_config_file`] adds the file's settings as
//! extra `--flag=value` arguments for the flags that nothing higher set, then clap parses
//! again — so every value, wherever it came from, goes through the same parser and gets the
//! same error message.
//!
//! ## Invariants
//!
//! * Every error names the flag (or file key) and what is accepted; `main` prints it and exits
//!   with code 2, like clap's own usage errors.
//! * [`ServeConfig`] is only built from values that passed validation: the rest of the program
//!   never re-checks flags.
//! * With no destination anywhere, the embedded default is a file destination under
//!   `<data-dir>/export`.

pub mod cli;
pub mod file;
pub mod limits;
pub mod reload;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};

pub use cli::{
    AutoCount, AutoSize, BenchArgs, Cli, Command, DeadLettersArgs, DeadLettersCommand, LogFormat,
    ServeArgs, TopArgs, WalCommand, WalSyncArg,
};
pub use file::ConfigFile;

use crate::admin::auth::{AdminAuth, MIN_TOKEN_BYTES};
use crate::delivery::DeadLetterLimits;
use crate::dest::file::FileDestination;
use crate::dest::secrets::resolve_value;
use crate::dest::DestinationSpec;
use crate::ingest::connection::ConnectionLimits;
use crate::ingest::tls::TlsFiles;
use crate::ingest::{Environments, IngestSettings};
use crate::wal::{RecoveryMode, SyncMode, WalError, WalOption, WalOptions};

/// A configuration problem, naming the flag (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `--{flag}`: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl ConfigError {
    fn invalid(flag: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            flag,
            message: message.into(),
        }
    }
}

/// The `--retry-*` flags. `main` turns them into the delivery engine's `RetryPolicy`
/// (same fields; `None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_attempts: Option<u32>,
    pub max_age: Option<Duration>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

/// Room reserved in a WAL record for the stored metadata header in front of the body. Every
/// stored field but the environment name and the credential fingerprint comes from the
/// request head, which ingest caps at `MAX_HEAD_BYTES` for all header lines together; one of
/// them (the user agent) is stored twice, raw for forwarding and merged for the output
/// schemas, hence twice the head. The environment name is at most
/// `MAX_ENVIRONMENT_NAME_BYTES`; the rest is fixed fields and length prefixes. 4 KiB covers
/// the latter with room to spare (checked by a test).
pub(crate) const RECORD_METADATA_BYTES: u64 =
    (2 * crate::ingest::head::MAX_HEAD_BYTES + 4096) as u64;

/// Everything `flagstream serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Who may use the admin API (`--admin-token`, `--admin-metrics-public`).
    pub admin_auth: AdminAuth,
    /// `--tls-cert`/`--tls-key`, checked to load: the ingest listener serves TLS.
    pub tls: Option<TlsFiles>,
    /// `--admin-tls-cert`/`--admin-tls-key`: the admin listener serves TLS.
    pub admin_tls: Option<TlsFiles>,
    /// `--tls-reload-interval`.
    pub tls_reload_interval: Duration,
    pub data_dir: PathBuf,
    pub wal: WalOptions,
    pub ingest: IngestSettings,
    /// Every destination, from `--dest` then the file's `[[destination]]` tables; never empty.
    pub destinations: Vec<DestinationSpec>,
    /// True when `destinations` is the embedded default (nothing was configured).
    pub default_destination: bool,
    pub retry: RetrySettings,
    /// The dead-letter store's budget and free-space floor.
    pub dead_letters: DeadLetterLimits,
    /// `--shared-records-max-bytes`: decoded records shared by destinations configured alike.
    pub shared_records_max_bytes: usize,
    pub project: String,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub shutdown_timeout: Duration,
}

impl ServeConfig {
    /// Where the WAL lives inside the data dir.
    pub fn wal_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("wal")
    }

    /// Where dead letters live inside the data dir.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letters")
    }

    /// A warning when the free-space floor already exceeds the free space of the data dir's
    /// filesystem: every WAL segment allocation and dead-letter write would be refused, so
    /// ingest would answer 503 from the first body that needs a new segment. A warning, not a
    /// refusal: delivery should still start and drain what the WAL holds (which frees room).
    pub fn free_space_warning(&self) -> Option<String> {
        let available =
            crate::delivery::dead_letter_budget::available_bytes(&self.data_dir).ok()?;
        (available < self.wal.min_free_bytes).then(|| {
            format!(
                "--wal-min-free-bytes {} exceeds the {} free under {}: new WAL segments and dead \
                 letters will be refused (ingest answers 503) until space is freed; use a value \
                 below the free space, e.g. --wal-min-free-bytes {}",
                bytesize::ByteSize(self.wal.min_free_bytes),
                bytesize::ByteSize(available),
                self.data_dir.display(),
                bytesize::ByteSize(available / 10)
            )
        })
    }

    /// Validate parsed flags (already merged with the config file, see [`merge_config_file`]).
    pub fn from_args(args: &ServeArgs, file: Option<&ConfigFile>) -> Result<Self, ConfigError> {
        // Absolute from here on: destinations derived from it (the embedded default) need an
        // absolute path, and logs should say exactly where the data is.
        let data_dir = std::path::absolute(&args.data_dir)
            .map_err(|err| ConfigError::invalid("data-dir", err.to_string()))?;
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(ConfigError::invalid(
                "data-dir",
                format!(
                    "{} exists and is not a directory: name a directory (it is created if missing)",
                    data_dir.display()
                ),
            ));
        }
        let mut wal = WalOptions::new(Self::wal_dir(&data_dir));
        wal.segment_bytes = args.wal_segment_bytes.as_u64();
        wal.max_bytes = args.wal_max_bytes.as_u64();
        wal.min_free_bytes = args.wal_min_free_bytes.as_u64();
        wal.retention = args.wal_retention;
        wal.page_cache_bytes = args.wal_page_cache_bytes.finite().map(|size| size.as_u64());
        wal.sync = match args.wal_sync {
            WalSyncArg::Always => SyncMode::Always,
            WalSyncArg::Interval => SyncMode::Interval(args.wal_sync_interval.into()),
            WalSyncArg::Never => SyncMode::Never,
        };
        wal.recovery = match args.wal_recovery {
            cli::WalRecoveryArg::TolerateTail => RecoveryMode::TolerateTail,
            cli::WalRecoveryArg::Strict => RecoveryMode::Strict,
        };
        match wal.validate() {
            Ok(()) => {}
            Err(WalError::InvalidOption { option, message }) => {
                let flag = match option {
                    WalOption::SegmentBytes => "wal-segment-bytes",
                    WalOption::MaxBytes => "wal-max-bytes",
                    WalOption::SyncInterval => "wal-sync-interval",
                };
                return Err(ConfigError::invalid(flag, message));
            }
            Err(other) => return Err(ConfigError::invalid("wal-segment-bytes", other.to_string())),
        }
        let max_body = args.max_body_bytes.as_u64();
        if wal.max_record_bytes() < RECORD_METADATA_BYTES + MIN_BODY_BYTES {
            return Err(ConfigError::invalid(
                "wal-segment-bytes",
                format!(
                    "{} leaves no room for a request body beside the {} metadata reserve: use at least {}",
                    args.wal_segment_bytes,
                    bytesize::ByteSize(RECORD_METADATA_BYTES),
                    bytesize::ByteSize(smallest_usable_segment(&wal))
                ),
            ));
        }
        if max_body < MIN_BODY_BYTES {
            return Err(ConfigError::invalid(
                "max-body-bytes",
                "must be at least 1KiB",
            ));
        }
        if max_body.saturating_add(RECORD_METADATA_BYTES) > wal.max_record_bytes() {
            return Err(ConfigError::invalid(
                "max-body-bytes",
                format!(
                    "{} does not fit in one WAL record of --wal-segment-bytes {}: keep it at most \
                     {} bytes, or raise --wal-segment-bytes",
                    args.max_body_bytes,
                    args.wal_segment_bytes,
                    wal.max_record_bytes() - RECORD_METADATA_BYTES
                ),
            ));
        }
        let inflight = args.max_inflight_bytes.as_u64();
        if inflight < max_body {
            return Err(ConfigError::invalid(
                "max-inflight-bytes",
                format!(
                    "{} is smaller than --max-body-bytes {}: such a body could never be \
                     admitted; use at least {}",
                    args.max_inflight_bytes, args.max_body_bytes, args.max_body_bytes
                ),
            ));
        }
        let dead_letters = dead_letter_limits(args, &wal)?;
        if args.max_connections == 0 {
            return Err(ConfigError::invalid(
                "max-connections",
                "must be at least 1",
            ));
        }
        for (flag, value) in [
            ("header-timeout", args.header_timeout),
            ("idle-timeout", args.idle_timeout),
            ("body-timeout", args.body_timeout),
            ("body-stall-timeout", args.body_stall_timeout),
        ] {
            check_timeout(flag, value, MAX_TIMEOUT)?;
        }
        check_timeout(
            "shutdown-timeout",
            args.shutdown_timeout,
            MAX_SHUTDOWN_TIMEOUT,
        )?;

        let mut environment_entries = Vec::new();
        for value in &args.environment {
            let (name, keys) = value.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    "environment",
                    format!("`{value}` is not of the form NAME=KEY[,KEY…]"),
                )
            })?;
            environment_entries.push((
                name.trim().to_string(),
                keys.split(',').map(str::to_string).collect::<Vec<_>>(),
            ));
        }
        if let Some(file) = file {
            environment_entries.extend(file.environments.iter().cloned());
        }
        let environments = Environments::from_entries(environment_entries)
            .map_err(|message| ConfigError::invalid("environment", message))?;

        let mut destinations = Vec::new();
        for text in &args.dest {
            let spec = DestinationSpec::parse(text)
                .map_err(|err| ConfigError::invalid("dest", err.to_string()))?;
            destinations.push(spec);
        }
        if let Some(file) = file {
            destinations.extend(file.destinations.iter().cloned());
        }
        let default_destination = destinations.is_empty();
        if default_destination {
            // Sized so one event as large as the largest body fits (see `limits`).
            let mut spec = FileDestination::default_spec(&data_dir);
            spec.options.insert(
                "max_bytes".to_string(),
                limits::default_file_max_bytes(max_body).to_string(),
            );
            destinations.push(spec);
        }

        let retry = RetrySettings {
            max_attempts: args.retry_max_attempts.finite(),
            max_age: args.retry_max_age.finite().map(Duration::from),
            initial_backoff: args.retry_initial_backoff.into(),
            max_backoff: args.retry_max_backoff.into(),
        };
        if retry.initial_backoff > retry.max_backoff {
            return Err(ConfigError::invalid(
                "retry-initial-backoff",
                format!(
                    "{} is longer than --retry-max-backoff {}: use at most {}",
                    args.retry_initial_backoff, args.retry_max_backoff, args.retry_max_backoff
                ),
            ));
        }

        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&args.log_level) {
            return Err(ConfigError::invalid("log-level", err.to_string()));
        }
        if args.project.trim().is_empty() {
            return Err(ConfigError::invalid("project", "must not be empty"));
        }

        let ingest = IngestSettings {
            max_body_bytes: to_usize(max_body),
            max_inflight_bytes: to_usize(inflight),
            max_connections: args.max_connections,
            max_connections_per_client: match args.max_connections_per_client {
                AutoCount::Auto => ConnectionLimits::default_per_client(args.max_connections),
                AutoCount::Count(count) => count,
            },
            dedupe_cache_size: args.dedupe_cache_size,
            dedupe_recovery_window: args.dedupe_recovery_window.into(),
            header_timeout: args.header_timeout.into(),
            idle_timeout: args.idle_timeout.into(),
            body_timeout: args.body_timeout.into(),
            body_stall_timeout: args.body_stall_timeout.into(),
            environments,
            ..IngestSettings::default()
        };
        let admin_auth = admin_auth(args)?;
        let tls = tls_files(&args.tls_cert, &args.tls_key, "tls-cert", "tls-key")?;
        let admin_tls = tls_files(
            &args.admin_tls_cert,
            &args.admin_tls_key,
            "admin-tls-cert",
            "admin-tls-key",
        )?;
        check_timeout("tls-reload-interval", args.tls_reload_interval, MAX_TIMEOUT)?;
        Ok(ServeConfig {
            listen: args.listen,
            admin_listen: args.admin_listen,
            admin_auth,
            tls,
            admin_tls,
            tls_reload_interval: args.tls_reload_interval.into(),
            data_dir,
            wal,
            ingest,
            destinations,
            default_destination,
            retry,
            dead_letters,
            shared_records_max_bytes: to_usize(args.shared_records_max_bytes.as_u64()),
            project: args.project.trim().to_string(),
            log_format: args.log_format,
            log_filter: args.log_level.clone(),
            shutdown_timeout: args.shutdown_timeout.into(),
        })
    }
}

/// `--admin-token` resolved and checked; an admin listener off loopback must have one.
fn admin_auth(args: &ServeArgs) -> Result<AdminAuth, ConfigError> {
    let Some(value) = &args.admin_token else {
        if !args.admin_listen.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "admin-token",
                format!(
                    "--admin-listen {} is not a loopback address, so the admin API needs a \
                     token: set --admin-token env:FLAGSTREAM_ADMIN_TOKEN (or file:PATH), or \
                     listen on 127.0.0.1",
                    args.admin_listen
                ),
            ));
        }
        return Ok(AdminAuth::open());
    };
    let token = resolve_value("admin-token", value)
        .map_err(|err| ConfigError::invalid("admin-token", err.to_string()))?;
    let token_bytes = token.expose().trim().len();
    if token_bytes < MIN_TOKEN_BYTES || token.expose().trim() != token.expose() {
        return Err(ConfigError::invalid(
            "admin-token",
            format!(
                "the token has {token_bytes} bytes (after trimming spaces): use at least \
                 {MIN_TOKEN_BYTES} without leading or trailing spaces, e.g. from \
                 `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(AdminAuth::with_token(&token, args.admin_metrics_public))
}

/// A listener's certificate and key flags: both or neither, and a pair that loads (so
/// `validate` catches what `serve` would refuse).
fn tls_files(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    cert_flag: &'static str,
    key_flag: &'static str,
) -> Result<Option<TlsFiles>, ConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (Some(_), None) => {
            let message = format!("is required with --{cert_flag} (the certificate's private key)");
            return Err(ConfigError::invalid(key_flag, message));
        }
        (None, Some(_)) => {
            let message = format!("is required with --{key_flag} (the key's certificate chain)");
            return Err(ConfigError::invalid(cert_flag, message));
        }
    };
    let files = TlsFiles {
        cert,
        key,
        cert_flag,
        key_flag,
    };
    files
        .load()
        .map_err(|err| ConfigError::invalid(err.flag(), err.to_string()))?;
    Ok(Some(files))
}

/// Longest accepted connection or body timeout: longer ones only keep attackers' sockets open.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest accepted `--shutdown-timeout`.
const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Smallest accepted `--max-body-bytes`.
const MIN_BODY_BYTES: u64 = 1024;

/// `--dead-letter-max-bytes`, or its default: a tenth of the WAL budget (dead letters are the
/// exception, the WAL the rule), but never less than four largest bodies, so one body's worth
/// of dead letters (text payloads grow when escaped) always fits.
fn dead_letter_limits(args: &ServeArgs, wal: &WalOptions) -> Result<DeadLetterLimits, ConfigError> {
    let smallest = args.max_body_bytes.as_u64().saturating_mul(4);
    let max_bytes = match args.dead_letter_max_bytes {
        AutoSize::Auto => (wal.max_bytes / 10).max(smallest),
        AutoSize::Size(value) if value.as_u64() < smallest => {
            return Err(ConfigError::invalid(
                "dead-letter-max-bytes",
                format!(
                    "{value} cannot hold the dead letters of one --max-body-bytes {} body: use \
                     at least {} (4 × --max-body-bytes)",
                    args.max_body_bytes,
                    bytesize::ByteSize(smallest)
                ),
            ))
        }
        AutoSize::Size(value) => value.as_u64(),
    };
    Ok(DeadLetterLimits {
        max_bytes,
        min_free_bytes: wal.min_free_bytes,
    })
}

/// A timeout between 1 ms and `max`.
fn check_timeout(
    flag: &'static str,
    value: humantime::Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    let duration = Duration::from(value);
    if duration < Duration::from_millis(1) || duration > max {
        return Err(ConfigError::invalid(
            flag,
            format!(
                "{value} is out of range: use a duration from 1ms to {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// The smallest segment size whose records hold the metadata reserve and the smallest body.
fn smallest_usable_segment(wal: &WalOptions) -> u64 {
    let mut probe = wal.clone();
    probe.segment_bytes = crate::wal::MIN_SEGMENT_BYTES;
    while probe.max_record_bytes() < RECORD_METADATA_BYTES + MIN_BODY_BYTES {
        probe.segment_bytes += 4096;
    }
    probe.segment_bytes
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Load the `--config` file and parse the command line again with the file's settings
/// inserted below the command line and environment variables.
///
/// `raw_args` is the full argv (`flagstream serve …`); `subcommand` the name of the subcommand
/// whose flags are [`ServeArgs`]. Returns the final [`Cli`] and the loaded file.
pub fn merge_config_file(
    raw_args: &[OsString],
    subcommand: &str,
    matches: &ArgMatches,
    path: &Path,
) -> Result<(Cli, ConfigFile), ConfigError> {
    let file = ConfigFile::load(path)?;
    let known = ServeArgs::augment_args(clap::Command::new("serve"));
    let mut extra: Vec<OsString> = Vec::new();
    for (flag, value) in &file.settings {
        let id = flag.replace('-', "_");
        if !known.get_arguments().any(|arg| arg.get_id() == id.as_str()) {
            return Err(ConfigError::File {
                path: path.to_path_buf(),
                message: format!("unknown setting `{flag}` (run `flagstream serve --help`)"),
            });
        }
        let set_above = matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !set_above {
            extra.push(format!("--{flag}={value}").into());
        }
    }
    // Insert the file's flags right after the subcommand name, before the user's own.
    let position = raw_args
        .iter()
        .position(|arg| arg == subcommand)
        .map(|index| index + 1)
        .unwrap_or(raw_args.len());
    let mut args: Vec<OsString> = raw_args[..position].to_vec();
    args.extend(extra);
    args.extend_from_slice(&raw_args[position..]);
    let matches = Cli::command()
        .try_get_matches_from(args)
        .map_err(|err| ConfigError::File {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_string(),
        })?;
    Ok((Cli::from_arg_matches(&matches)?, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["flagstream", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from_checked(&argv) {
            Command::Serve(args) => args,
            other => panic!("unexpected {other:?}"),
        }
    }

    impl Cli {
        fn try_parse_from_checked(argv: &[&str]) -> Command {
            <Cli as clap::Parser>::try_parse_from(argv).unwrap().command
        }
    }

    #[test]
    fn an_admin_token_is_resolved_checked_and_required_off_loopback() {
        let config = ServeConfig::from_args(&serve_args(&[]), None).unwrap();
        assert!(!config.admin_auth.requires_token());
        let off_loopback = serve_args(&["--admin-listen", "10.0.0.1:8031"]);
        let err = ServeConfig::from_args(&off_loopback, None).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    flag: "admin-token",
                    ..
                }
            ),
            "{err}"
        );
        let short = serve_args(&["--admin-token", "tiny"]);
        assert!(ServeConfig::from_args(&short, None).is_err());
        let padded = serve_args(&["--admin-token", " 0123456789abcdef "]);
        assert!(ServeConfig::from_args(&padded, None).is_err());
        let guarded = serve_args(&[
            "--admin-listen",
            "10.0.0.1:8031",
            "--admin-token",
            "0123456789abcdef",
        ]);
        let config = ServeConfig::from_args(&guarded, None).unwrap();
        assert!(config.admin_auth.requires_token());
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn the_wal_page_cache_budget_is_a_size_above_the_floor_or_unlimited() {
        let config = |extra: &[&str]| ServeConfig::from_args(&serve_args(extra), None).unwrap();
        assert_eq!(
            config(&[]).wal.page_cache_bytes,
            Some(crate::wal::DEFAULT_PAGE_CACHE_BYTES)
        );
        let set = config(&["--wal-page-cache-bytes", "1GiB"]);
        assert_eq!(set.wal.page_cache_bytes, Some(1 << 30));
        let off = config(&["--wal-page-cache-bytes", "unlimited"]);
        assert_eq!(off.wal.page_cache_bytes, None);
        let argv = ["flagstream", "serve", "--wal-page-cache-bytes", "1MiB"];
        let err = <Cli as clap::Parser>::try_parse_from(argv)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--wal-page-cache-bytes") && err.contains("16MiB"),
            "{err}"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_build_a_config_with_the_embedded_file_destination() {
        let config = ServeConfig::from_args(&serve_args(&["--data-dir", "/srv/fs"]), None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8030");
        assert_eq!(config.wal.dir, PathBuf::from("/srv/fs/wal"));
        assert_eq!(config.wal.sync, SyncMode::Always);
        assert!(config.default_destination);
        assert_eq!(config.destinations.len(), 1);
        assert_eq!(config.destinations[0].scheme, "file");
        assert_eq!(config.destinations[0].target, "/srv/fs/export");
        assert!(config.ingest.environments.is_open());
        assert_eq!(config.retry.max_attempts, Some(5));
        assert_eq!(config.retry.max_age, Some(Duration::from_secs(30 * 60)));
        assert_eq!(
            config.shared_records_max_bytes,
            crate::delivery::DEFAULT_SHARED_RECORDS_MAX_BYTES
        );
    }

    #[test]
    fn the_metadata_reserve_covers_the_largest_metadata_a_request_can_carry() {
        use crate::event::stored::{encode_header, StoredMeta};
        // Head values filling the head limit between them (names and separators would make
        // them smaller still), the user agent stored twice, the longest environment name.
        let fifth = "t".repeat(crate::ingest::head::MAX_HEAD_BYTES / 5);
        let environment = "e".repeat(crate::ingest::environments::MAX_ENVIRONMENT_NAME_BYTES);
        let fingerprint = crate::event::stored::credential_fingerprint("sdk-key");
        let mut header = Vec::new();
        encode_header(
            &StoredMeta {
                format: Some(crate::event::InboundFormat::LdBulk),
                instance_id: Some(crate::event::InstanceId([1; 16])),
                schema_version: Some(4),
                environment: &environment,
                payload_id: &fifth,
                tags: &fifth,
                user_agent: &fifth,
                request: crate::event::stored::RequestMeta {
                    path: &fifth,
                    credential: &fingerprint,
                    user_agent: &fifth,
                    ld_user_agent: &fifth,
                    wrapper: "",
                },
            },
            &mut header,
        );
        assert!(
            header.len() as u64 <= RECORD_METADATA_BYTES,
            "{}",
            header.len()
        );
    }

    #[test]
    fn the_default_destination_takes_an_event_as_large_as_the_largest_body() {
        let config = ServeConfig::from_args(
            &serve_args(&["--data-dir", "/srv/fs", "--max-body-bytes", "12MiB"]),
            None,
        )
        .unwrap();
        let max_bytes: u64 = config.destinations[0].options["max_bytes"].parse().unwrap();
        assert!(
            max_bytes >= 12 * 1024 * 1024 + limits::MAPPED_EVENT_MARGIN,
            "{max_bytes}"
        );
    }

    #[test]
    fn dead_letter_budget_defaults_to_a_tenth_of_the_wal_and_refuses_less_than_four_bodies() {
        let config = ServeConfig::from_args(
            &serve_args(&["--data-dir", "/srv/fs", "--wal-max-bytes", "20GiB"]),
            None,
        )
        .unwrap();
        assert_eq!(config.dead_letters.max_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(
            config.dead_letters.min_free_bytes,
            config.wal.min_free_bytes
        );
        let err = ServeConfig::from_args(
            &serve_args(&["--data-dir", "/srv/fs", "--dead-letter-max-bytes", "1MiB"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--dead-letter-max-bytes") && err.contains("at least 40.0 MiB"),
            "{err}"
        );
    }

    #[test]
    fn a_relative_data_dir_becomes_absolute_for_the_wal_and_the_default_destination() {
        let config = ServeConfig::from_args(&serve_args(&[]), None).unwrap();
        assert!(config.data_dir.is_absolute());
        assert!(config.data_dir.ends_with("data"));
        assert!(config.wal.dir.is_absolute());
        assert!(Path::new(&config.destinations[0].target).is_absolute());
    }

    #[test]
    fn every_flag_shows_its_default_and_env_var() {
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            assert!(arg.get_env().is_some(), "--{id} has no env var");
            let has_default = !arg.get_default_values().is_empty();
            let documented_absent = [
                "config",
                "environment",
                "dest",
                "admin_token",
                "tls_cert",
                "tls_key",
                "admin_tls_cert",
                "admin_tls_key",
            ]
            .contains(&id);
            assert!(has_default || documented_absent, "--{id} shows no default");
        }
    }

    #[test]
    fn the_readme_documents_every_flag() {
        let readme = include_str!("../../README.md");
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            assert!(
                readme.contains(&format!("| `--{long}` |")),
                "README.md's flag table lacks --{long}"
            );
            if let Some(env) = arg.get_env() {
                assert!(
                    readme.contains(env.to_str().unwrap()),
                    "README.md lacks {env:?}"
                );
            }
        }
    }

    #[test]
    fn cross_flag_errors_name_the_flag() {
        for (argv, flag) in [
            (vec!["--wal-segment-bytes", "4KiB"], "wal-segment-bytes"),
            (vec!["--wal-segment-bytes", "1000000"], "wal-segment-bytes"),
            (
                vec!["--wal-sync", "interval", "--wal-sync-interval", "0s"],
                "wal-sync-interval",
            ),
            (
                vec!["--wal-segment-bytes", "8MiB", "--wal-max-bytes", "8MiB"],
                "wal-max-bytes",
            ),
            (
                vec!["--wal-segment-bytes", "8MiB", "--max-body-bytes", "8MiB"],
                "max-body-bytes",
            ),
            (
                vec!["--max-body-bytes", "8MiB", "--max-inflight-bytes", "1MiB"],
                "max-inflight-bytes",
            ),
            (vec!["--max-connections", "0"], "max-connections"),
            (vec!["--header-timeout", "0s"], "header-timeout"),
            (vec!["--idle-timeout", "2h"], "idle-timeout"),
            (vec!["--body-timeout", "1000y"], "body-timeout"),
            (vec!["--body-stall-timeout", "0ms"], "body-stall-timeout"),
            (vec!["--shutdown-timeout", "1000y"], "shutdown-timeout"),
            (vec!["--wal-segment-bytes", "64KiB"], "wal-segment-bytes"),
            (vec!["--data-dir", "/dev/null"], "data-dir"),
            (vec!["--environment", "prod"], "environment"),
            (
                vec!["--environment", "a=k", "--environment", "b=k"],
                "environment",
            ),
            (vec!["--dest", "no-scheme"], "dest"),
            (
                vec!["--retry-initial-backoff", "1h", "--retry-max-backoff", "1m"],
                "retry-initial-backoff",
            ),
            (vec!["--log-level", "info,=bad=x"], "log-level"),
        ] {
            let err = ServeConfig::from_args(&serve_args(&argv), None).unwrap_err();
            assert!(
                err.to_string().contains(&format!("`--{flag}`")),
                "{argv:?}: {err}"
            );
        }
    }

    #[test]
    fn the_largest_body_named_in_an_error_is_accepted() {
        let segment = ["--wal-segment-bytes", "1MiB"];
        let too_big = [&segment[..], &["--max-body-bytes", "1MiB"]].concat();
        let err = ServeConfig::from_args(&serve_args(&too_big), None).unwrap_err();
        let text = err.to_string();
        let largest: String = text
            .split("at most ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("{text}"))
            .to_string();
        let fits = [&segment[..], &["--max-body-bytes", &largest]].concat();
        assert!(
            ServeConfig::from_args(&serve_args(&fits), None).is_ok(),
            "{text}"
        );
        let over = (largest.parse::<u64>().unwrap() + 1).to_string();
        let over = [&segment[..], &["--max-body-bytes", &over]].concat();
        assert!(ServeConfig::from_args(&serve_args(&over), None).is_err());
    }

    #[test]
    fn clap_rejects_bad_values_naming_the_flag_and_accepted_values() {
        let err = <Cli as clap::Parser>::try_parse_from([
            "flagstream",
            "serve",
            "--wal-sync",
            "sometimes",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("--wal-sync") && text.contains("always"),
            "{text}"
        );
        let err = <Cli as clap::Parser>::try_parse_from([
            "flagstream",
            "serve",
            "--max-body-bytes",
            "lots",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--max-body-bytes"), "{err}");
        for huge in [
            "99999999999999999999",
            "99999999999999999999GiB",
            "20000000000EiB",
        ] {
            let err = <Cli as clap::Parser>::try_parse_from([
                "flagstream",
                "serve",
                "--max-body-bytes",
                huge,
            ])
            .unwrap_err();
            assert!(err.to_string().contains("too large"), "{huge}: {err}");
        }
        let err = <Cli as clap::Parser>::try_parse_from([
            "flagstream",
            "serve",
            "--retry-max-attempts",
            "often",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("unlimited"), "{err}");
    }

    #[test]
    fn unlimited_retries_and_explicit_destinations() {
        let config = ServeConfig::from_args(
            &serve_args(&[
                "--retry-max-attempts",
                "unlimited",
                "--retry-max-age",
                "unlimited",
                "--dest",
                "log:",
                "--dest",
                "file:///tmp/x",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(config.retry.max_attempts, None);
        assert_eq!(config.retry.max_age, None);
        assert!(!config.default_destination);
        assert_eq!(config.destinations.len(), 2);
    }

    #[test]
    fn config_file_sits_below_command_line_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flagstream.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax-connections = 7\nproject = \"from-file\"\n\
             [environments]\nprod = [\"k1\"]\n[[destination]]\nurl = \"log:\"\n",
        )
        .unwrap();
        let raw: Vec<OsString> = [
            "flagstream",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--max-connections",
            "3",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let matches = Cli::command().try_get_matches_from(&raw).unwrap();
        let serve_matches = matches.subcommand_matches("serve").unwrap();
        let (cli, file) = merge_config_file(&raw, "serve", serve_matches, &path).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let config = ServeConfig::from_args(&args, Some(&file)).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(config.ingest.max_connections, 3, "command line wins");
        assert_eq!(config.project, "from-file");
        assert_eq!(
            config.ingest.environments.lookup(Some("k1")).as_deref(),
            Some("prod")
        );
        assert_eq!(config.destinations[0].scheme, "log");
    }

    #[test]
    fn config_file_errors_name_the_file_and_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flagstream.toml");
        for (text, needle) in [
            ("listn = \"x\"", "unknown setting `listn`"),
            ("wal-sync = \"sometimes\"", "--wal-sync"),
        ] {
            std::fs::write(&path, text).unwrap();
            let raw: Vec<OsString> = ["flagstream", "serve", "--config", path.to_str().unwrap()]
                .iter()
                .map(OsString::from)
                .collect();
            let matches = Cli::command().try_get_matches_from(&raw).unwrap();
            let serve_matches = matches.subcommand_matches("serve").unwrap();
            let err = merge_config_file(&raw, "serve", serve_matches, &path).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("flagstream.toml") && text.contains(needle),
                "{text}"
            );
        }
    }
}
