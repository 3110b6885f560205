//! The `flagstream` binary: parse the command line, wire the library's parts together, run.
//!
//! Wiring only — every behaviour lives in the library. Exit codes: 0 success, 1 runtime
//! failure (WAL locked or fatal, destination test failed, `wal verify` found problems),
//! 2 configuration error (a message naming the flag, like clap's own usage errors).
//!
//! `serve` start-up order, chosen so that every failure is early and visible: logging and the
//! metrics recorder; bind both listeners (a busy port fails fast); admin server up (`/readyz`
//! answers 503 `recovering`); destinations built (bad options fail before any disk work); WAL
//! recovery; payload ids of recent records (before delivery, whose backlog drain would compete
//! for the cores); delivery workers; ingest serves; ready.
//!
//! Shutdown (SIGTERM/SIGINT, or a fatal WAL): not ready → ingest stops accepting and drains
//! in-flight appends → delivery persists cursors → WAL final sync → exit.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, FromArgMatches};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use flagstream::admin::{self, Admin, Phase, Readiness};
use flagstream::config::{
    self, BenchArgs, Cli, Command, ConfigError, ConfigFile, DeadLettersArgs, DeadLettersCommand,
    LogFormat, ServeArgs, ServeConfig, TopArgs, WalCommand, WalSyncArg,
};
use flagstream::delivery::{self, destination_set, DeliveryDefaults, EngineOptions, RetryPolicy};
use flagstream::dest::{registry, Batch, BatchItem, Input, SendOutcome};
use flagstream::event::{self, InboundFormat, RecordContext};
use flagstream::ingest::{self, Ingest};
use flagstream::wal::{inspect, Wal};

/// jemalloc instead of glibc's malloc (issue 15, measured in `docs/performance.md` "Memory"):
/// delivery's multi-MiB batch buffers are allocated and freed many times a second, and glibc's
/// dynamic mmap threshold moved them onto its heaps, where freed holes stayed resident — the
/// process held about twice its live heap. jemalloc (with background purge threads) keeps RSS
/// near the live heap at the same CPU per event.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (`MALLOC_CONF` in the environment still overrides them):
/// one arena per CPU (the thread running on a CPU allocates from its arena) instead of four
/// per CPU assigned to threads. Tokio's `block_in_place` starts new worker threads, each of
/// which got an arena of its own and kept its freed pages there; with arenas per CPU a burst
/// at 64 connections peaked at 124–128 MiB instead of 153–165 MiB at the same CPU per event
/// (`docs/performance.md`, "Warm buffers and arenas per CPU").
///
/// jemalloc reads this NUL-terminated string once, before the first allocation; it is
/// immutable, so exporting it under the C name jemalloc looks up is sound.
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8; 20] = b"percpu_arena:percpu\0";

/// Exit code for configuration errors (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

/// A failure that maps to a specific exit code.
#[derive(Debug)]
struct Exit(u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&raw);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    match run(cli, &raw, &matches) {
        Ok(code) => code,
        Err(err) => {
            if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            if let Some(config) = err.downcast_ref::<ConfigError>() {
                if let ConfigError::Clap(clap) = config {
                    clap.exit();
                }
                eprintln!("flagstream: {config}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("flagstream: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, raw: &[OsString], matches: &clap::ArgMatches) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let reloader = args.config.clone().map(|path| config::reload::Reloader {
                path,
                raw: raw.to_vec(),
                matches: matches.clone(),
            });
            let (config, file) = load_config_and_file("serve", args, raw, matches)?;
            runtime()?.block_on(serve(config, reloader.zip(file)))
        }
        Command::Validate(args) => {
            let config = load_config("validate", args, raw, matches)?;
            runtime()?.block_on(validate(config))
        }
        Command::TestDestination { name, serve } => {
            let config = load_config("test-destination", serve, raw, matches)?;
            runtime()?.block_on(test_destination(config, &name))
        }
        Command::Wal { command } => wal_command(command),
        Command::Bench(args) => runtime()?.block_on(bench(args)),
        Command::Top(args) => runtime()?.block_on(top(args)),
        Command::DeadLetters(args) => runtime()?.block_on(dead_letters(args)),
        Command::Destinations { command } => runtime()?.block_on(destinations(command)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("flagstream")
        .build()
        .context("starting the async runtime")
}

/// Merge the `--config` file (if any) under the command line, then validate.
fn load_config(
    subcommand: &str,
    args: ServeArgs,
    raw: &[OsString],
    matches: &clap::ArgMatches,
) -> Result<ServeConfig> {
    Ok(load_config_and_file(subcommand, args, raw, matches)?.0)
}

/// [`load_config`], also returning the parsed file.
fn load_config_and_file(
    subcommand: &str,
    args: ServeArgs,
    raw: &[OsString],
    matches: &clap::ArgMatches,
) -> Result<(ServeConfig, Option<ConfigFile>)> {
    let (args, file) = match args.config.clone() {
        None => (args, None),
        Some(path) => {
            let sub_matches = matches
                .subcommand_matches(subcommand)
                .ok_or_else(|| anyhow!("no matches for subcommand {subcommand}"))?;
            let (cli, file) = config::merge_config_file(raw, subcommand, sub_matches, &path)?;
            let args = match cli.command {
                Command::Serve(args) | Command::Validate(args) => args,
                Command::TestDestination { serve, .. } => serve,
                _ => bail!("unexpected subcommand after merging {}", path.display()),
            };
            (args, Some(file))
        }
    };
    let config = ServeConfig::from_args(&args, file.as_ref())?;
    Ok((config, file))
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests, library embedding) is harmless: keep the first.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn delivery_defaults(config: &ServeConfig) -> DeliveryDefaults {
    DeliveryDefaults {
        retry: RetryPolicy {
            max_attempts: config.retry.max_attempts,
            max_age: config.retry.max_age,
            initial_backoff: config.retry.initial_backoff,
            max_backoff: config.retry.max_backoff,
        },
        project: config.project.clone(),
        environment_keys: flagstream::dest::EnvironmentKeys::from_pairs(
            config.ingest.environments.credentials(),
        ),
    }
}

/// A destination configuration error: printed naming `--dest`, exit code 2.
fn invalid_dest(err: impl std::fmt::Display) -> anyhow::Error {
    eprintln!("flagstream: invalid value for `--dest`: {err}");
    anyhow::Error::new(Exit(EXIT_CONFIG))
}

/// Build every destination from its spec; errors are configuration errors (exit 2).
async fn configure_destinations(
    config: &ServeConfig,
) -> Result<Vec<delivery::ConfiguredDestination>> {
    delivery::configure(
        config.destinations.clone(),
        &delivery_defaults(config),
        &config.data_dir,
    )
    .await
    .map_err(invalid_dest)
}

/// Build the starting destinations: `--dest`/`--config` and those created through the admin
/// API (stored in the data dir). Errors are configuration errors (exit 2).
async fn configure_startup(config: &ServeConfig) -> Result<destination_set::Startup> {
    let store = delivery::destination_store::DestinationStore::new(&config.data_dir);
    destination_set::configure_startup(
        config.destinations.clone(),
        &store,
        &delivery_defaults(config),
        &config.data_dir,
    )
    .await
    .map_err(invalid_dest)
}

async fn serve(
    config: ServeConfig,
    reload: Option<(config::reload::Reloader, ConfigFile)>,
) -> Result<ExitCode> {
    init_logging(config.log_format, &config.log_filter);
    let prometheus = flagstream::metrics::install_recorder().context("installing metrics")?;
    let readiness = Arc::new(Readiness::default());
    let admin_state = Arc::new(
        Admin::new(Some(prometheus), readiness.clone()).with_auth(config.admin_auth.clone()),
    );

    let ingest_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", config.admin_listen))?;
    let ingest_addr = ingest_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let admin_shutdown = CancellationToken::new();
    let admin_limits = ingest::connection::ConnectionLimits {
        max_connections: admin::MAX_ADMIN_CONNECTIONS,
        header_timeout: config.ingest.header_timeout,
        idle_timeout: config.ingest.idle_timeout,
        max_per_client: admin::MAX_ADMIN_CONNECTIONS,
    };
    let admin_tls = listener_tls("admin", &config.admin_tls, &config, &admin_shutdown)?;
    if admin_tls.is_none() && !admin_addr.ip().is_loopback() && config.admin_auth.requires_token() {
        tracing::warn!(%admin_addr, "the admin listener is off loopback without TLS: its token travels in clear text (set --admin-tls-cert/--admin-tls-key)");
    }
    let admin_task = tokio::spawn(admin::serve(
        ingest::Listener::new(admin_listener, admin_tls.clone()),
        admin_state.clone(),
        admin_limits,
        admin_shutdown.clone(),
    ));
    tracing::info!(%admin_addr, tls = admin_tls.is_some(), "admin listening");

    if config.ingest.environments.is_open() {
        tracing::warn!(
            "no --environment configured: ingest is OPEN, every request is accepted into \
             environment `{}`",
            ingest::DEFAULT_ENVIRONMENT
        );
    }
    let mut startup = configure_startup(&config).await?;
    let destinations = std::mem::take(&mut startup.configured);
    for warning in config::limits::check_destination_limits(&destinations, max_body(&config))? {
        tracing::warn!("{warning}");
    }

    readiness.set(Phase::Recovering);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating --data-dir {}", config.data_dir.display()))?;
    if let Some(warning) = config.free_space_warning() {
        tracing::warn!("{warning}");
    }
    let wal_options = config.wal.clone();
    let started = std::time::Instant::now();
    // OsIo, unless a test sets the fault hook (flagstream::wal::io::from_env).
    let wal_io = flagstream::wal::io::from_env().context("the WAL's test hook")?;
    let wal = tokio::task::spawn_blocking(move || Wal::open_with_io(wal_options, wal_io))
        .await
        .context("WAL recovery task")?
        .context("opening the write-ahead log")?;
    metrics::gauge!(flagstream::metrics::WAL_RECOVERY_SECONDS).set(started.elapsed().as_secs_f64());
    tracing::info!(
        dir = %config.wal.dir.display(),
        first_seq = wal.first_seq(),
        next_seq = wal.next_seq(),
        recovery_ms = started.elapsed().as_millis() as u64,
        "write-ahead log open"
    );
    admin_state.attach_wal(wal.clone());
    // Payload ids are recovered before delivery starts: with a backlog, delivery workers
    // decode on every core at once, and recovery (and so readiness) would wait for the drain.
    let instance_id = ingest::instance::load_or_create(&config.data_dir)
        .context("loading the data dir's instance id")?;
    tracing::info!(instance_id = %instance_id.to_hex(), "instance id");
    let ingest_state = Arc::new(Ingest::new(
        config.ingest.clone(),
        Arc::new(wal.clone()),
        instance_id,
    ));
    admin_state.attach_ingest_connections(ingest_state.connections().clone());
    recover_payload_ids(&ingest_state, &wal).await?;

    let mut engine_options = EngineOptions::new(&config.data_dir);
    engine_options.shutdown_grace = engine_options.shutdown_grace.min(config.shutdown_timeout);
    engine_options.dead_letter_limits = config.dead_letters;
    engine_options.shared_records_max_bytes = config.shared_records_max_bytes;
    let delivery = delivery::Delivery::start(&wal, destinations, &engine_options)
        .context("starting delivery")?;
    admin_state.attach_delivery(delivery.clone());
    let destination_set = Arc::new(
        destination_set::DestinationSet::new(
            delivery.clone(),
            startup,
            delivery_defaults(&config),
            &config.data_dir,
        )
        .with_check(limits_check(max_body(&config))),
    );
    admin_state.attach_destination_set(destination_set.clone());
    let reload_shutdown = CancellationToken::new();
    // SIGHUP reloads --config's destinations (or, without one, is refused with a warning).
    let reload_task = match reload {
        Some((reloader, file)) => tokio::spawn(reloader.run_on_sighup(
            destination_set.clone(),
            file,
            reload_shutdown.clone(),
        )),
        None => tokio::spawn(config::reload::refuse_sighup(reload_shutdown.clone())),
    };

    let ingest_shutdown = CancellationToken::new();
    let ingest_tls = listener_tls("ingest", &config.tls, &config, &admin_shutdown)?;
    let tls = ingest_tls.is_some();
    let ingest_task = tokio::spawn(ingest::serve(
        ingest::Listener::new(ingest_listener, ingest_tls),
        ingest_state,
        ingest_shutdown.clone(),
        config.shutdown_timeout,
    ));
    readiness.set(Phase::Ready);
    tracing::info!(%ingest_addr, tls, destinations = ?delivery.names(), "ingest listening");

    let fatal = wait_for_shutdown(&wal).await;
    readiness.set(Phase::ShuttingDown);
    tracing::info!("shutting down: draining in-flight requests");
    ingest_shutdown.cancel();
    let drained = ingest_task.await.unwrap_or(false);
    tracing::info!(drained, "ingest stopped; stopping delivery");
    reload_shutdown.cancel();
    let _ = reload_task.await;
    delivery.shutdown().await;
    if let Err(err) = wal.close().await {
        tracing::error!(error = %err, "final WAL sync failed");
        admin_shutdown.cancel();
        let _ = admin_task.await;
        return Ok(ExitCode::FAILURE);
    }
    admin_shutdown.cancel();
    let _ = admin_task.await;
    match fatal {
        Some(reason) => {
            tracing::error!(%reason, "stopped because the write-ahead log is in a fatal state");
            Ok(ExitCode::FAILURE)
        }
        None => {
            tracing::info!("shutdown complete");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Rebuild the payload-id dedupe cache from the WAL's recent records (before ingest serves).
async fn recover_payload_ids(ingest: &Arc<Ingest>, wal: &Wal) -> Result<()> {
    let (ingest, wal) = (ingest.clone(), wal.clone());
    let started = std::time::Instant::now();
    let recovered = tokio::task::spawn_blocking(move || ingest.recover_payload_ids(&wal))
        .await
        .context("payload-id recovery task")?;
    tracing::info!(
        records = recovered.records,
        payload_ids = recovered.ids,
        recovery_ms = started.elapsed().as_millis() as u64,
        "payload ids of recent records remembered again"
    );
    Ok(())
}

/// TLS for a listener when its pair is configured, with its reloader running until `stop`.
fn listener_tls(
    listener: &'static str,
    files: &Option<ingest::tls::TlsFiles>,
    config: &ServeConfig,
    stop: &CancellationToken,
) -> Result<Option<Arc<ingest::tls::ListenerTls>>> {
    let Some(files) = files else { return Ok(None) };
    // Checked by the config already; a file changed since then is still a config error.
    let tls = ingest::tls::ListenerTls::new(listener, files.clone()).map_err(|err| {
        eprintln!("flagstream: invalid value for `--{}`: {err}", err.flag());
        anyhow::Error::new(Exit(EXIT_CONFIG))
    })?;
    tls.spawn_reloader(config.tls_reload_interval, stop.clone());
    Ok(Some(tls))
}

/// Wait for SIGTERM/SIGINT (→ `None`) or a fatal WAL state (→ `Some(reason)`).
async fn wait_for_shutdown(wal: &Wal) -> Option<String> {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                None
            }
        };
    let mut fatal_check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT received");
                return None;
            }
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                tracing::info!("SIGTERM received");
                return None;
            }
            _ = fatal_check.tick() => {
                if let Some(reason) = wal.stats().fatal {
                    return Some(reason);
                }
            }
        }
    }
}

/// The start-up check of destination limits against `--max-body-bytes`, for destinations
/// added while running: an error refuses the change, warnings are logged.
fn limits_check(max_body: u64) -> destination_set::Check {
    Box::new(move |destinations| {
        let warnings = config::limits::check_destination_limits(destinations, max_body)
            .map_err(|err| err.to_string())?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        Ok(())
    })
}

/// `--max-body-bytes` as validated.
fn max_body(config: &ServeConfig) -> u64 {
    config.ingest.max_body_bytes as u64
}

async fn validate(config: ServeConfig) -> Result<ExitCode> {
    let destinations = configure_destinations(&config).await?;
    for warning in config::limits::check_destination_limits(&destinations, max_body(&config))? {
        println!("warning: {warning}");
    }
    println!("configuration is valid");
    println!("  ingest:       {}", config.listen);
    println!("  admin:        {}", config.admin_listen);
    println!("  data dir:     {}", config.data_dir.display());
    let environments: Vec<&str> = config.ingest.environments.names().collect();
    if config.ingest.environments.is_open() {
        println!("  environments: none (open: everything goes to `default`)");
    } else {
        println!("  environments: {}", environments.join(", "));
    }
    for configured in &destinations {
        println!(
            "  destination:  {} ({}, schema {})",
            configured.settings.name,
            configured.destination.kind(),
            configured.destination.schema().name()
        );
        // Secrets show as their env:/file: reference or `***` (dest::secrets).
        for (key, value) in &configured.settings.shown_options {
            println!("    {key} = {value}");
        }
    }
    println!("  destination types: {}", registry::schemes().join(", "));
    Ok(ExitCode::SUCCESS)
}

/// The flag key (and context key) of the test event, as LaunchDarkly's own test button uses.
const TEST_EVENT_KEY: &str = "LaunchDarklyDataExportTestEvent";

async fn test_destination(config: ServeConfig, name: &str) -> Result<ExitCode> {
    init_logging(config.log_format, "warn");
    let destinations = configure_destinations(&config).await?;
    let Some(configured) = destinations
        .into_iter()
        .find(|configured| configured.settings.name == name)
    else {
        eprintln!("flagstream: no destination named `{name}`");
        return Err(Exit(EXIT_CONFIG).into());
    };
    let destination = configured.destination.clone();
    println!("destination {} ({})", name, destination.kind());
    if let Err(err) = destination.check().await {
        println!("check:   FAILED: {err}");
        return Ok(ExitCode::FAILURE);
    }
    println!("check:   ok");

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0);
    let body = serde_json::json!([{
        "kind": "feature",
        "creationDate": now_ms,
        "key": TEST_EVENT_KEY,
        "version": 1,
        "context": {"kind": "user", "key": TEST_EVENT_KEY},
        "variation": 0,
        "value": true,
        "default": false
    }])
    .to_string();
    let payload_id = format!("flagstream-test-{now_ms}");
    let ctx = RecordContext {
        format: InboundFormat::LdBulk,
        environment: "test",
        payload_id: Some(&payload_id),
        schema_version: Some(4),
        seq: 0,
        received_at_ms: now_ms,
        instance_id: None,
    };
    let schema = destination.schema();
    let mut scratch = event::DecodeScratch::default();
    let decoded = event::decode(&ctx, body.as_bytes(), &mut scratch)
        .map_err(|err| anyhow!("building the test event: {err}"))?;
    let test_event = decoded
        .events
        .first()
        .ok_or_else(|| anyhow!("the test event did not decode"))?;
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let mut map_scratch = Vec::new();
    event::map_event(
        schema,
        &configured.settings.export,
        &ctx,
        test_event,
        &mut map_scratch,
        &mut |row| rows.push(row.to_vec()),
    )
    .map_err(|err| anyhow!("mapping the test event to {}: {err}", schema.name()))?;
    if destination.input() == Input::RawRecords {
        // One stored record, as the engine hands such destinations (dest::RawRecord), in the
        // first configured environment (a forwarder finds that environment's key).
        let environment = config.ingest.environments.names().next().unwrap_or("test");
        let mut record = Vec::new();
        event::stored::encode_header(
            &event::stored::StoredMeta {
                format: Some(InboundFormat::LdBulk),
                instance_id: None,
                schema_version: Some(4),
                environment,
                payload_id: &payload_id,
                tags: "",
                user_agent: "",
                request: Default::default(),
            },
            &mut record,
        );
        record.extend_from_slice(body.as_bytes());
        rows = vec![record];
    }
    let items = rows
        .into_iter()
        .map(|row| BatchItem {
            event_id: event::event_id(&ctx, 0).into(),
            payload: row.into(),
            kind: "feature".into(),
            key: Some(TEST_EVENT_KEY.into()),
            context_key: Some(TEST_EVENT_KEY.into()),
            environment: "test".into(),
            received_at_ms: now_ms,
        })
        .collect();
    let batch = Batch {
        id: format!("{name}-test-{now_ms}"),
        schema,
        items,
        lines: None,
    };
    let outcome = destination.send(&batch).await;
    match &outcome {
        SendOutcome::Delivered => {
            println!("send:    delivered (batch {})", batch.id);
            Ok(ExitCode::SUCCESS)
        }
        other => {
            println!("send:    {}: {other:?}", other.label());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn wal_command(command: WalCommand) -> Result<ExitCode> {
    match command {
        WalCommand::Inspect { dir, json } => {
            let report =
                inspect::inspect(&dir).with_context(|| format!("inspecting {}", dir.display()))?;
            print_report(&report, json)?;
            if !json {
                // The WAL stores delivery's part of each cursor as opaque bytes.
                for cursor in report.cursors.iter().filter(|c| !c.blob_hex.is_empty()) {
                    if let Some(line) = delivery::cursor_state::describe_hex(&cursor.blob_hex) {
                        println!("  {} delivery state: {line}", cursor.name);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WalCommand::Verify { dir, json } => {
            let report =
                inspect::verify(&dir).with_context(|| format!("verifying {}", dir.display()))?;
            print_report(&report, json)?;
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print_report<R: std::fmt::Display + serde::Serialize>(report: &R, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

async fn bench(args: BenchArgs) -> Result<ExitCode> {
    let wal_sync = match args.wal_sync {
        WalSyncArg::Always => "always",
        WalSyncArg::Interval => "interval",
        WalSyncArg::Never => "never",
    };
    let options = flagstream_harness::load::BenchOptions {
        url: args.url,
        admin: args.admin,
        connections: args.connections,
        duration: args.duration.into(),
        batch_events: args.batch_events,
        wal_sync: wal_sync.to_string(),
        data_dir: args.data_dir,
        drain_timeout: args.drain_timeout.into(),
        serve_args: args.serve_args,
        binary: std::env::current_exe().context("locating the flagstream binary")?,
        destinations: usize::from(args.destinations),
        pause_delivery: args.pause_delivery,
        recovery: args.recovery,
        ca: args.ca,
        tls_server_name: args.tls_server_name,
        admin_tls: args.admin_tls,
    };
    let report = flagstream_harness::load::run(options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(ExitCode::SUCCESS)
}

/// `flagstream destinations …`: one admin API call, its JSON answer on stdout; a refusal is
/// an error naming the server's reason (exit 1).
async fn destinations(command: flagstream::config::cli::DestinationsCommand) -> Result<ExitCode> {
    use flagstream::config::cli::DestinationsCommand;
    use flagstream::delivery::start::{format_time, RewindTo};
    use flagstream_harness::admin_api;
    let DestinationsCommand::Rewind(args) = command;
    flagstream::delivery::settings::validate_name(&args.name)
        .map_err(|message| anyhow::anyhow!("destination name {message}"))?;
    let api = admin_client(&args.admin).await?;
    let to = match args.to {
        RewindTo::Earliest => serde_json::json!("earliest"),
        RewindTo::Seq(seq) => serde_json::json!(seq),
        RewindTo::Time(unix_ms) => serde_json::json!(format_time(unix_ms)),
    };
    let answer = admin_api::rewind(&api, &args.name, to).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(ExitCode::SUCCESS)
}

/// The admin API client of `--admin-url`, `--admin-token`, `--admin-tls-ca` and
/// `--tls-server-name`.
async fn admin_client(
    args: &flagstream::config::cli::AdminClientArgs,
) -> Result<flagstream_harness::admin_api::AdminApi> {
    let token = resolve_admin_token(args.admin_token.as_deref())?;
    let tls = admin_tls(args.admin_tls_ca.as_deref(), &args.tls_server_name)?;
    Ok(flagstream_harness::admin_api::AdminApi::resolve(&args.admin_url, token, tls).await?)
}

/// `--admin-tls-ca FILE` (with `--tls-server-name`) as a client TLS configuration.
fn admin_tls(
    ca: Option<&std::path::Path>,
    server_name: &str,
) -> Result<Option<flagstream_harness::client::Tls>> {
    let Some(ca) = ca else { return Ok(None) };
    let tls = flagstream_harness::client::Tls::from_ca_file(ca, server_name).map_err(|err| {
        ConfigError::Invalid {
            flag: "admin-tls-ca",
            message: err.to_string(),
        }
    })?;
    Ok(Some(tls))
}

/// `--admin-token` as given: the token, `env:NAME` or `file:PATH`.
fn resolve_admin_token(value: Option<&str>) -> Result<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let secret = flagstream::dest::secrets::resolve_value("admin-token", value).map_err(|err| {
        ConfigError::Invalid {
            flag: "admin-token",
            message: err.to_string(),
        }
    })?;
    Ok(Some(secret.expose().to_string()))
}

async fn dead_letters(args: DeadLettersArgs) -> Result<ExitCode> {
    use flagstream_harness::dead_letters::{self as dl, ShowQuery};
    let api = admin_client(&args.admin).await?;
    let reason = |filter: &Option<String>| filter.as_deref().map(dl::parse_filter).transpose();
    let output = match args.command {
        DeadLettersCommand::List { name, json: true } => {
            serde_json::to_string_pretty(&dl::list_json(&api, name.as_deref()).await?)? + "\n"
        }
        DeadLettersCommand::List { name, json: false } => dl::list(&api, name.as_deref()).await?,
        DeadLettersCommand::Show {
            name,
            filter,
            offset,
            limit,
            json,
        } => {
            let query = ShowQuery {
                reason: reason(&filter)?,
                offset,
                limit,
            };
            if json {
                serde_json::to_string_pretty(&dl::show_json(&api, &name, &query).await?)? + "\n"
            } else {
                dl::show(&api, &name, &query).await?
            }
        }
        DeadLettersCommand::Redrive { name, to, filter } => {
            let reason = reason(&filter)?;
            dl::redrive(&api, &name, to.as_deref(), reason.as_deref()).await?
        }
    };
    print!("{output}");
    Ok(ExitCode::SUCCESS)
}

async fn top(args: TopArgs) -> Result<ExitCode> {
    let token = resolve_admin_token(args.admin_token.as_deref())?;
    let interval: std::time::Duration = args.interval.into();
    if interval < std::time::Duration::from_millis(100) {
        return Err(ConfigError::Invalid {
            flag: "interval",
            message: format!("{} is too short: use 100ms or more", args.interval),
        }
        .into());
    }
    let tls = admin_tls(args.admin_tls_ca.as_deref(), &args.tls_server_name)?;
    let options = flagstream_harness::top::TopOptions {
        admin: args.admin,
        tls,
        token,
        interval,
        once: args.once,
    };
    if options.once {
        print!("{}", flagstream_harness::top::once(&options).await?);
    } else {
        flagstream_harness::top::interactive(&options).await?;
    }
    Ok(ExitCode::SUCCESS)
}
