//! Snowflake destination (`snowflake://ACCOUNT/DATABASE/SCHEMA?user=…&private_key=file:…`),
//! speaking Snowflake's driver protocol over the shared HTTP layer ([`session`]).
//!
//! No Rust Snowflake driver fits: `snowflake-api` (community, last released 2024, pulls its
//! own Arrow and object-store stacks) and `snowflake-connector-rs` (query-only, no bindings
//! of its own types) were considered; the SQL API v2 is not served by any stand-in. The
//! protocol used here is small — log in, post a statement with bindings, read JSON or Arrow
//! IPC rows — and is the one every official driver speaks.
//!
//! Lands mapped events in the schema's tables, **exactly once**: each batch is one `MERGE`
//! per table that inserts only keys the table lacks ([`load`]), so a batch re-sent after a
//! crash or a retry inserts nothing twice. `config` (target, options, identifiers), `auth`
//! (password, key-pair JWT), `tables` (DDL and the mismatch check).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `ACCOUNT/DATABASE/SCHEMA`; the database and schema must exist, tables are created | — |
//! | `user` | login name | required |
//! | `password` | password (`env:NAME` / `file:PATH`) | — |
//! | `private_key` | unencrypted PKCS#8 RSA key for key-pair (JWT) auth, usually `file:PATH` | — |
//! | `warehouse`, `role` | session warehouse and role | the user's defaults |
//! | `table` | the one table of a non-`warehouse` event schema (`event_id`, `kind`, `environment`, `received_at`, `payload VARIANT`) | `flagstream_events` |
//! | `endpoint` | server URL (a stand-in) | `https://ACCOUNT.snowflakecomputing.com` |
//! | `timeout` | one request's timeout; a whole send is abandoned after twice this, retriably | `30s` |
//!
//! One of `password` and `private_key` is required.
//!
//! ## Invariants
//!
//! 1. A row is in its table at most once per key, whatever was re-sent: the only statement
//!    that inserts is a `MERGE … WHEN NOT MATCHED`, atomic per table and batch.
//! 2. A batch is delivered only after every table's `MERGE` succeeded; rows the server
//!    refused are permanent item failures naming the event id.
//! 3. Tables are created before the first load; an existing table that cannot take our rows
//!    is a permanent error naming table and column, never altered.

pub mod auth;
pub mod config;
pub mod load;
pub mod session;
pub mod tables;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

pub use config::{SnowflakeOptions, SnowflakeTarget};

use super::http::{HttpClient, HttpOptions};
use super::kind::{BuildContext, DestinationKind};
use super::options::RequestOptions;
use super::postgres::Table;
use super::warehouse;
use super::{Batch, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;
use auth::{Login, RsaKey};
use session::Session;

/// Rows per batch: one `MERGE` binds every value of a table's rows (24 per evaluation row).
pub const MAX_ROWS_PER_BATCH: usize = 1_000;

/// The `snowflake` destination type.
#[derive(Debug, Clone, Copy)]
pub struct SnowflakeKind;

impl DestinationKind for SnowflakeKind {
    const SCHEME: &'static str = "snowflake";
    const SUMMARY: &'static str =
        "Snowflake tables, exactly once (one MERGE on the primary key per table and batch)";
    const EXAMPLE: &'static str =
        "snowflake://myorg-myaccount/ANALYTICS/FLAGS?user=FLAGSTREAM&private_key=file:/etc/flagstream/rsa_key.p8&warehouse=LOAD_WH";
    // MERGE takes a table lock in Snowflake: concurrent batches would only queue there.
    const DEFAULT_CONCURRENCY: usize = 1;
    const SECRET_OPTIONS: &'static [&'static str] = &["private_key"];
    type Options = (SnowflakeOptions, RequestOptions);

    fn default_schema(&self) -> Schema {
        Schema::Warehouse
    }

    async fn build(
        &self,
        target: &str,
        (options, request): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let target = SnowflakeTarget::parse(target).map_err(|reason| context.error(reason))?;
        let timeout = request.timeout().map_err(|reason| context.error(reason))?;
        let user = options
            .user
            .clone()
            .ok_or_else(|| context.error("option `user` is required"))?;
        let login =
            match (&options.password, &options.private_key) {
                (Some(password), None) => Login::Password(password.clone()),
                (None, Some(pem)) => {
                    Login::KeyPair(RsaKey::from_pem(pem.expose()).map_err(|r| context.error(r))?)
                }
                _ => return Err(context.error(
                    "give exactly one of `password` and `private_key` (as env:NAME or file:PATH)",
                )),
            };
        let http = HttpClient::new(&context.name, &request, &HttpOptions::default())
            .map_err(|reason| context.error(reason))?;
        let endpoint = request
            .endpoint
            .as_ref()
            .map_or_else(|| target.public_endpoint(), |e| e.as_str().to_string());
        let tables =
            warehouse::tables_for(context.schema, &target.schema, options.table.as_deref());
        let mut session = Session::new(http, endpoint, target, user, login);
        session.warehouse = options.warehouse.clone();
        session.role = options.role.clone();
        Ok(Arc::new(SnowflakeDestination {
            name: context.name.clone(),
            schema: context.schema,
            session,
            tables,
            timeout,
            created: OnceCell::new(),
        }))
    }
}

/// The Snowflake destination.
pub struct SnowflakeDestination {
    name: String,
    schema: Schema,
    session: Session,
    tables: Vec<Table>,
    timeout: Duration,
    /// Set once every table exists and matched, in this process.
    created: OnceCell<()>,
}

impl fmt::Debug for SnowflakeDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeDestination")
            .field("name", &self.name)
            .field("target", &self.session.target)
            .finish_non_exhaustive()
    }
}

impl SnowflakeDestination {
    async fn ensure_tables(&self) -> Result<(), Failure> {
        warehouse::once_for_each(&self.created, &self.tables, |table| {
            self.ensure_table(table)
        })
        .await
    }

    async fn ensure_table(&self, table: &Table) -> Result<(), Failure> {
        let target = &self.session.target;
        let (sql, bindings) = tables::columns_query(target, table);
        let mut columns = self.session.query(&sql, &bindings).await?;
        if columns.is_empty() {
            self.session
                .query(&tables::create_table(target, table), &[])
                .await?;
            columns = self.session.query(&sql, &bindings).await?;
        }
        match tables::mismatch(table, &columns) {
            None => Ok(()),
            Some(reason) => Err(Failure::permanent(format!(
                "Snowflake table `{}.{}.{}` does not match the warehouse schema: {reason} (docs/schemas.md)",
                target.database, target.schema, table.name
            ))),
        }
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let grouped = warehouse::rows_for(self.schema, &batch.items, &self.tables);
        let load = async {
            self.ensure_tables().await?;
            let mut refused = Vec::new();
            for (table, rows) in self.tables.iter().zip(&grouped.rows) {
                if !rows.is_empty() {
                    refused.extend(load::merge(&self.session, table, rows).await?);
                }
            }
            Ok(refused)
        };
        let late = || format!("{}: loading", self.session.target);
        warehouse::outcome_within(
            batch.items.len(),
            grouped.failures,
            self.timeout * 2,
            late,
            load,
        )
        .await
    }
}

impl Destination for SnowflakeDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "snowflake"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: MAX_ROWS_PER_BATCH,
            max_bytes: 16 * 1024 * 1024,
            // VARIANT values hold at most 16 MB (compressed); stay well below.
            max_item_bytes: 8 * 1024 * 1024,
            per_item_overhead: 0,
            linger: Duration::from_secs(1),
        }
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        Box::pin(async {
            self.ensure_tables()
                .await
                .map_err(|failure| DestError::Check(failure.reason))
        })
    }
}
