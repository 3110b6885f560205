//! PostgreSQL destination (`postgres://USER@HOST:PORT/DATABASE?db_schema=flags&sslmode=…`),
//! also Amazon Redshift (`flavor=redshift`).
//!
//! Lands mapped events in tables, **exactly once**: each batch is loaded in one transaction
//! that skips rows whose key the table already holds, so a batch re-sent after a crash or a
//! retry adds nothing. `config` (target and options), `tls` (rustls), `tables` (DDL from the
//! schema's column lists), `migrate` (versioned creation and the mismatch check), `rows`
//! (items → typed cells), `load` (staging + `COPY` + `INSERT … ON CONFLICT DO NOTHING`, bad
//! rows isolated), `redshift` (what differs there), `classify` (SQLSTATE → outcome).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `[USER@]HOST[:PORT]/DATABASE` | user `postgres`, port 5432 |
//! | `password` | the user's password (give it as `env:NAME` or `file:PATH`) | none (trust / peer auth) |
//! | `db_schema` | database schema of the tables, created when missing (`schema=` is the event schema) | `public` |
//! | `table` | the one table of a non-`warehouse` event schema (`event_id`, `kind`, `environment`, `received_at`, `payload jsonb`) | `flagstream_events` |
//! | `sslmode` | `disable`, `prefer`, `require` (encrypted, not verified, as libpq), `verify-full` | `prefer` |
//! | `sslrootcert` | PEM file of CAs trusted by `verify-full` | the platform's roots |
//! | `flavor` | `postgres` or `redshift` ([`redshift`]) | `postgres` |
//! | `pool_size` | most pooled connections | 8 |
//! | `query_indexes` | create the `timestamp` and `flag_key` indexes with the tables (`false`: ≈ 27 % less server CPU per loaded row (docs/performance.md), slower queries; the unique key is always created, and existing indexes are never dropped) | `true` |
//! | `timeout` | how long one statement may run (PostgreSQL `statement_timeout`; a whole load is abandoned after twice this); retriable | `30s` |
//!
//! The default event schema is `warehouse`: `evaluation_events`, `metric_events` and
//! `summary_counters` with the typed columns of docs/schemas.md.
//!
//! ## Invariants
//!
//! 1. A row is in its table at most once per key, whatever was re-sent: the key is enforced
//!    by the table (PostgreSQL) or checked under a table lock (Redshift), in the same
//!    transaction that inserts.
//! 2. A batch is reported delivered only after its transactions committed; rows the server
//!    refused are permanent item failures naming the event id, the others are delivered.
//! 3. Tables are created (versioned migrations) before the first load; an existing table that
//!    does not match is a permanent error naming table and column, never altered or dropped.

mod classify;
mod config;
mod load;
mod migrate;
pub mod redshift;
mod rows;
mod tables;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

pub use classify::{classify, Fault};
pub use config::{Flavor, PostgresOptions, ServerTarget, SslMode};
pub use load::{copy_into_stage, copy_into_table, create_stage, insert_new};
pub use migrate::{verify, ExistingColumn, ExistingColumns, MIGRATIONS};
pub use rows::{document_rows, warehouse_rows, Cell, Grouped, Row};
pub use tables::{document_table, warehouse_tables, Table};

use super::kind::{BuildContext, DestinationKind};
use super::options::{RequestOptions, CONNECT_TIMEOUT};
use super::{warehouse, Batch, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;

/// Rows per batch: large batches make `COPY` pay off.
pub const MAX_ROWS_PER_BATCH: usize = 5_000;

/// The `postgres` destination type.
#[derive(Debug, Clone, Copy)]
pub struct PostgresKind;

impl DestinationKind for PostgresKind {
    const SCHEME: &'static str = "postgres";
    const SUMMARY: &'static str =
        "PostgreSQL or Redshift tables, exactly once (COPY + INSERT … ON CONFLICT DO NOTHING)";
    const EXAMPLE: &'static str =
        "postgres://flagstream@db:5432/analytics?db_schema=flags&sslmode=verify-full&password=env:PGPASSWORD";
    type Options = (PostgresOptions, RequestOptions);

    fn default_schema(&self) -> Schema {
        Schema::Warehouse
    }

    async fn build(
        &self,
        target: &str,
        (options, request): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let server = ServerTarget::parse(target).map_err(|reason| context.error(reason))?;
        let timeout = request.timeout().map_err(|reason| context.error(reason))?;
        if request.endpoint.is_some() {
            return Err(context.error("option `endpoint` does not apply: the target is the server"));
        }
        let db_schema = options.db_schema.clone().unwrap_or_else(|| "public".into());
        let mut tables =
            warehouse::tables_for(context.schema, &db_schema, options.table.as_deref());
        for table in &mut tables {
            table.query_indexes = options.query_indexes.unwrap_or(true);
        }
        let pool = pool(&server, &options, timeout).map_err(|reason| context.error(reason))?;
        Ok(Arc::new(PostgresDestination {
            name: context.name.clone(),
            schema: context.schema,
            server,
            flavor: options.flavor,
            tables,
            pool,
            timeout,
            migrated: OnceCell::new(),
        }))
    }
}

/// The connection pool. The server enforces `timeout` per statement (`statement_timeout`:
/// the transaction is rolled back there and the error is retriable); connections are
/// verified with a round trip when taken from the pool, so one left mid-statement by an
/// abandoned load is discarded rather than reused.
fn pool(
    server: &ServerTarget,
    options: &PostgresOptions,
    timeout: Duration,
) -> Result<Pool, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .user(&server.user)
        .host(&server.host)
        .port(server.port)
        .dbname(&server.database)
        .application_name("flagstream")
        .connect_timeout(CONNECT_TIMEOUT)
        .ssl_mode(match options.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    if options.flavor == Flavor::Postgres {
        // Redshift's startup packet takes no `options`; there the client-side bound applies.
        config.options(format!("-c statement_timeout={}", timeout.as_millis()));
    }
    if let Some(password) = &options.password {
        config.password(password.expose());
    }
    let tls = tls::connector(options.sslmode, options.sslrootcert.as_deref())?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(options.pool_size.unwrap_or(8).max(1))
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|err| format!("connection pool: {err}"))
}

mod tls;

/// The PostgreSQL / Redshift destination.
pub struct PostgresDestination {
    name: String,
    schema: Schema,
    server: ServerTarget,
    flavor: Flavor,
    tables: Vec<Table>,
    pool: Pool,
    timeout: Duration,
    /// Set once the migrations ran and the tables matched in this process.
    migrated: OnceCell<()>,
}

impl fmt::Debug for PostgresDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDestination")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl PostgresDestination {
    async fn client(&self) -> Result<deadpool_postgres::Object, Failure> {
        self.pool
            .get()
            .await
            .map_err(|err| classify::classify_pool(&err, &self.server.to_string()))
    }

    /// Run the migrations once per process (again after a failure).
    async fn ensure_tables(&self, client: &mut deadpool_postgres::Object) -> Result<(), Failure> {
        self.migrated
            .get_or_try_init(|| async { migrate::migrate(client, &self.tables, self.flavor).await })
            .await
            .map(|_| ())
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let grouped = warehouse::rows_for(self.schema, &batch.items, &self.tables);
        let load = async {
            let mut lease = Lease(Some(self.client().await?));
            let client = lease.client();
            self.ensure_tables(client).await?;
            let mut refused = Vec::new();
            for (table, rows) in self.tables.iter().zip(&grouped.rows) {
                refused.extend(load::load_isolating(client, table, rows, self.flavor).await?);
            }
            lease.release();
            Ok(refused)
        };
        // The server's statement_timeout normally fires first; this bounds a hung connection.
        let late = || format!("loading into {}", self.server);
        warehouse::outcome_within(
            batch.items.len(),
            grouped.failures,
            self.timeout * 2,
            late,
            load,
        )
        .await
    }

    async fn check_tables(&self) -> Result<(), DestError> {
        let mut client = self
            .client()
            .await
            .map_err(|failure| DestError::Check(failure.reason))?;
        self.ensure_tables(&mut client)
            .await
            .map_err(|failure| DestError::Check(failure.reason))
    }
}

/// A pooled connection that goes back to the pool only when a load ended cleanly: one whose
/// load failed or was abandoned is closed instead.
///
/// Why not trust the pool's verification: tokio-postgres sends `Bind, Execute, Sync` for a
/// `COPY … FROM STDIN` and a second `Sync` with its `CopyDone`/`CopyFail`. When the server
/// refuses the `COPY` before entering copy mode (a statement timeout while waiting for a lock,
/// a missing table), both `Sync`s are answered, and the spare `ReadyForQuery` is taken as the
/// answer to whatever the connection sends next, or, when nothing is pending, closes it
/// (rust-postgres issue 789). A verification round trip sent before it arrives passes, and the
/// next load then fails with "connection closed".
struct Lease(Option<deadpool_postgres::Object>);

impl Lease {
    fn client(&mut self) -> &mut deadpool_postgres::Object {
        self.0
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    /// The load ended cleanly: the connection goes back to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            // Out of the pool for good; dropping the client closes the connection.
            drop(deadpool_postgres::Object::take(connection));
        }
    }
}

impl Destination for PostgresDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_ROWS_PER_BATCH,
            max_bytes: 32 * 1024 * 1024,
            // jsonb and text hold up to 255 MiB / 1 GiB; a bound well below keeps one event
            // from stalling a batch's transaction.
            max_item_bytes: 16 * 1024 * 1024,
            ..BatchLimits::default()
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(self.check_tables())
    }
}
