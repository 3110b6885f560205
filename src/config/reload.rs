//! `--config` reloaded on SIGHUP: destinations change while running, nothing else does.
//!
//! On SIGHUP the file is read again and merged under the original command line exactly as
//! at start ([`merge_config_file`], [`ServeConfig::from_args`]): the same validation, the
//! same error messages. Then:
//!
//! * **Any error changes nothing**: a file that does not parse, a setting out of range, a
//!   destination with a bad option, a name clashing with an API destination — the error is
//!   logged (naming the file and the option) and `flagstream_config_reloads_total{outcome=
//!   "failure"}` counts it; the running destinations stay as they were.
//! * **Destinations are reloadable**: every one is built (validated) first, then the diff is
//!   applied by [`DestinationSet::reload`] — new names start, changed ones restart keeping
//!   their cursor, dropped ones stop and release their cursor.
//! * **Everything else needs a restart** (listeners, WAL options, limits, environments,
//!   retry defaults, …): a changed setting is named in a warning and keeps its running value.
//!
//! Ingest never stops for a reload: it runs on its own tasks and shares nothing with the
//! destination set but the WAL.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::ArgMatches;
use tokio_util::sync::CancellationToken;

use super::{merge_config_file, Command, ConfigError, ConfigFile, ServeConfig};
use crate::delivery::destination_set::{DestinationSet, ReloadSummary};
use crate::metrics::CONFIG_RELOADS_TOTAL;

/// What `serve` was started with, to read the file again the same way.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub path: PathBuf,
    /// The whole argv.
    pub raw: Vec<OsString>,
    /// The matches of the whole command line (the `serve` subcommand's are taken from it).
    pub matches: ArgMatches,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config file {path}: {source}")]
    Destinations {
        path: PathBuf,
        #[source]
        source: crate::delivery::destination_set::SetError,
    },
}

impl Reloader {
    /// Read and validate the file under the original command line.
    pub fn load(&self) -> Result<(ServeConfig, ConfigFile), ConfigError> {
        let serve = self.matches.subcommand_matches("serve").ok_or_else(|| {
            ConfigError::invalid("config", "reloading needs the `serve` command line")
        })?;
        let (cli, file) = merge_config_file(&self.raw, "serve", serve, &self.path)?;
        let Command::Serve(args) = cli.command else {
            return Err(ConfigError::invalid("config", "not a `serve` command line"));
        };
        let config = ServeConfig::from_args(&args, Some(&file))?;
        Ok((config, file))
    }

    /// Reload once: validate everything, then apply the destination diff. `running` is the
    /// file as last applied; it is replaced on success.
    pub async fn reload(
        &self,
        set: &DestinationSet,
        running: &mut ConfigFile,
    ) -> Result<ReloadSummary, ReloadError> {
        let (config, file) = self.load()?;
        let summary =
            set.reload(config.destinations)
                .await
                .map_err(|source| ReloadError::Destinations {
                    path: self.path.clone(),
                    source,
                })?;
        for setting in restart_only_changes(running, &file) {
            tracing::warn!(
                file = %self.path.display(),
                setting,
                "this setting changed in the config file but only takes effect at the next restart"
            );
        }
        *running = file;
        Ok(summary)
    }

    /// Reload on every SIGHUP until `shutdown`; `running` is the file `serve` started with.
    pub async fn run_on_sighup(
        self,
        set: std::sync::Arc<DestinationSet>,
        mut running: ConfigFile,
        shutdown: CancellationToken,
    ) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; --config will not be reloaded");
                return;
            }
        };
        for outcome in ["success", "failure"] {
            metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => outcome).increment(0);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangup.recv() => if received.is_none() { return },
            }
            tracing::info!(file = %self.path.display(), "SIGHUP: reloading the config file");
            match self.reload(&set, &mut running).await {
                Ok(summary) => {
                    metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => "success").increment(1);
                    tracing::info!(
                        added = ?summary.added,
                        changed = ?summary.changed,
                        removed = ?summary.removed,
                        unchanged = summary.unchanged,
                        "config reloaded"
                    );
                }
                Err(err) => {
                    metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => "failure").increment(1);
                    tracing::error!(error = %err, "config reload refused; nothing changed");
                }
            }
        }
    }
}

/// Without `--config`, SIGHUP would end the process (its default action): take it and say
/// there is nothing to reload, so `systemctl reload` never stops flagstream by accident.
pub async fn refuse_sighup(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        metrics::counter!(CONFIG_RELOADS_TOTAL, "outcome" => "failure").increment(1);
        tracing::warn!(
            "SIGHUP: there is no --config file to reload (--dest destinations change with a \
             restart, or use the admin API's /v1/destinations)"
        );
    }
}

/// Settings (not destinations) that differ between two versions of the file.
fn restart_only_changes(old: &ConfigFile, new: &ConfigFile) -> Vec<String> {
    let mut changed: Vec<String> = new
        .settings
        .iter()
        .filter(|setting| !old.settings.contains(setting))
        .chain(
            old.settings
                .iter()
                .filter(|setting| !new.settings.iter().any(|(flag, _)| *flag == setting.0)),
        )
        .map(|(flag, _)| flag.clone())
        .collect();
    if old.environments != new.environments {
        changed.push("environments".to_string());
    }
    changed.sort();
    changed.dedup();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_needing_a_restart_are_named() {
        let parse = |text: &str| ConfigFile::parse(std::path::Path::new("f.toml"), text).unwrap();
        let old = parse("listen = \"127.0.0.1:1\"\nproject = \"a\"\n[environments]\np = [\"k\"]");
        let new =
            parse("listen = \"127.0.0.1:2\"\nwal-sync = \"never\"\n[environments]\np = [\"j\"]");
        assert_eq!(
            restart_only_changes(&old, &new),
            vec!["environments", "listen", "project", "wal-sync"]
        );
        assert!(restart_only_changes(&old, &old).is_empty());
    }
}
