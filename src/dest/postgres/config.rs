//! PostgreSQL options and the connection target (`postgres://USER@HOST:PORT/DATABASE`).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::super::secrets::Secret;

/// Which SQL dialect the server speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// PostgreSQL: binary `COPY` into a temporary table, `INSERT … ON CONFLICT DO NOTHING`.
    #[default]
    Postgres,
    /// Amazon Redshift: no `COPY FROM STDIN`, no `ON CONFLICT`: multi-row `INSERT` into a
    /// staging table, `DELETE … USING` of rows already loaded, `INSERT … SELECT`.
    Redshift,
}

/// `sslmode`, as libpq spells it (the subset with distinct behaviour here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, certificate not verified (libpq's default).
    #[default]
    Prefer,
    /// TLS required, certificate not verified (libpq's meaning of `require`).
    Require,
    /// TLS required, certificate chain and host name verified.
    VerifyFull,
}

/// The destination's own options (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostgresOptions {
    /// Database schema holding the tables (`schema=` is the event schema, common to all
    /// destinations).
    pub db_schema: Option<String>,
    /// Table for events of a non-warehouse schema.
    pub table: Option<String>,
    pub password: Option<Secret>,
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the CA certificates to trust for `verify-full` (else the platform's).
    pub sslrootcert: Option<PathBuf>,
    #[serde(default)]
    pub flavor: Flavor,
    /// Most pooled connections.
    pub pool_size: Option<usize>,
    /// Create the `timestamp` / `flag_key` query indexes with the tables (default true).
    pub query_indexes: Option<bool>,
}

/// Where to connect: `[USER@]HOST[:PORT]/DATABASE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl ServerTarget {
    pub fn parse(target: &str) -> Result<Self, String> {
        let usage = "use postgres://USER@HOST[:PORT]/DATABASE (password as `password=env:NAME`)";
        let (authority, database) = target
            .split_once('/')
            .ok_or_else(|| format!("`{target}` names no database: {usage}"))?;
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, rest)) => (user, rest),
            None => ("postgres", authority),
        };
        if user.contains(':') {
            return Err(format!(
                "a password in the URL would be shown in logs: give it as `password=env:NAME` or `password=file:PATH` ({usage})"
            ));
        }
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("`{port}` is not a port number: {usage}"))?,
            ),
            None => (host_port, 5432),
        };
        if host.is_empty() || user.is_empty() || database.is_empty() || database.contains('/') {
            return Err(format!("`{target}` is incomplete: {usage}"));
        }
        Ok(ServerTarget {
            user: user.to_string(),
            host: host.to_string(),
            port,
            database: database.to_string(),
        })
    }
}

impl fmt::Display for ServerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database `{}` on {}:{}",
            self.database, self.host, self.port
        )
    }
}
