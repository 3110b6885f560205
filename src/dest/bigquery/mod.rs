//! BigQuery destination (`bigquery://PROJECT/DATASET?credentials_file=…`), over the REST API
//! with the shared HTTP layer ([`crate::dest::http`]) and Google credentials
//! ([`crate::dest::gcp`]).
//!
//! Lands mapped events in the dataset's tables, **exactly once** in the default
//! `mode=load`: every batch becomes one load job per table whose job id is derived from the
//! batch id ([`jobs`]), and BigQuery refuses a second job with the same id, so a batch
//! re-sent after a crash or a retry is not loaded twice. `mode=stream` uses `insertAll`
//! with insert ids instead ([`stream`]: lower latency, best-effort dedupe). `config`
//! (target, options, URLs), `api` (one authenticated call, error classes), `tables` (table
//! resources and the mismatch check), `rows` (typed rows → JSON).
//!
//! ## Options
//!
//! | option | meaning | default |
//! |---|---|---|
//! | target | `PROJECT/DATASET`; the dataset must exist, its tables are created when missing | — |
//! | `mode` | `load` (load jobs, exactly once) or `stream` (`insertAll`, best-effort dedupe) | `load` |
//! | `location` | the dataset's location, for `jobs.get` outside the US multi-region | BigQuery's inference |
//! | `table` | the one table of a non-`warehouse` event schema (`event_id`, `kind`, `environment`, `received_at`, `payload JSON`) | `flagstream_events` |
//! | `credentials_file`, `credentials_json` | a service-account key ([`crate::dest::gcp`]) | Application Default Credentials |
//! | `endpoint` | REST endpoint (an emulator on `http://…` gets no credentials) | `https://bigquery.googleapis.com` |
//! | `timeout` | one request's timeout; a whole send (upload, polling the job) is abandoned after twice this, retriably | `30s` |
//!
//! Load jobs are rationed (1,500 per table per day), so `mode=load` batches up to 50,000
//! rows and lingers 60 s by default (`linger=` overrides it).
//!
//! ## Invariants
//!
//! 1. `mode=load`: a batch's rows of a table are in it at most once, whatever was re-sent,
//!    because they are loaded only by jobs of the batch's deterministic id sequence, at most
//!    one of which can succeed (a load job is atomic).
//! 2. A batch is delivered only when every table's job is `DONE` without error (or its rows
//!    were accepted by `insertAll`); refused rows are permanent item failures naming the
//!    event id, the others are delivered.
//! 3. Tables are created before the first load; an existing table that cannot take our rows
//!    is a permanent error naming table and column, never altered.

pub mod api;
pub mod config;
pub mod jobs;
pub mod rows;
pub mod stream;
pub mod tables;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, StatusCode};
use tokio::sync::OnceCell;

pub use config::{BigQueryOptions, DatasetTarget, Mode, Urls};

use super::gcp::GoogleOptions;
use super::http::{HttpClient, HttpOptions};
use super::kind::{BuildContext, DestinationKind};
use super::options::RequestOptions;
use super::postgres::Table;
use super::warehouse;
use super::{Batch, BatchLimits, DestError, Destination, Failure, ItemFailure, SendOutcome};
use crate::event::Schema;
use api::Api;

/// The `bigquery` destination type.
#[derive(Debug, Clone, Copy)]
pub struct BigQueryKind;

impl DestinationKind for BigQueryKind {
    const SCHEME: &'static str = "bigquery";
    const SUMMARY: &'static str =
        "BigQuery tables, exactly once (a load job per batch, its job id from the batch id)";
    const EXAMPLE: &'static str =
        "bigquery://acme-project/flag_events?credentials_file=/etc/flagstream/bq-key.json";
    type Options = (BigQueryOptions, GoogleOptions, RequestOptions);

    fn default_schema(&self) -> Schema {
        Schema::Warehouse
    }

    async fn build(
        &self,
        target: &str,
        (options, google, request): Self::Options,
        context: &BuildContext,
    ) -> Result<Arc<dyn Destination>, DestError> {
        let target = DatasetTarget::parse(target).map_err(|reason| context.error(reason))?;
        let timeout = request.timeout().map_err(|reason| context.error(reason))?;
        if let Some(location) = &options.location {
            if !location
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(context.error(format!("`location={location}` is not a location")));
            }
        }
        let plaintext = request.endpoint.as_ref().is_some_and(|e| e.is_plaintext());
        let credentials = match google.credentials(plaintext) {
            Ok(Some(credentials)) => credentials,
            Ok(None) => application_default().map_err(|reason| context.error(reason))?,
            Err(reason) => return Err(context.error(reason)),
        };
        let http = HttpClient::new(&context.name, &request, &HttpOptions::default())
            .map_err(|reason| context.error(reason))?;
        let tables =
            warehouse::tables_for(context.schema, &target.dataset, options.table.as_deref());
        Ok(Arc::new(BigQueryDestination {
            name: context.name.clone(),
            schema: context.schema,
            urls: Urls::new(&target, request.endpoint.as_ref()),
            target,
            options,
            api: Api { http, credentials },
            tables,
            timeout,
            created: OnceCell::new(),
        }))
    }
}

/// Application Default Credentials, scoped for BigQuery.
fn application_default() -> Result<google_cloud_auth::credentials::Credentials, String> {
    google_cloud_auth::credentials::Builder::default()
        .with_scopes(["https://www.googleapis.com/auth/bigquery"])
        .build()
        .map_err(|err| format!("no Google credentials (Application Default Credentials): {err}; give `credentials_file=` or set GOOGLE_APPLICATION_CREDENTIALS"))
}

/// The BigQuery destination.
pub struct BigQueryDestination {
    name: String,
    schema: Schema,
    target: DatasetTarget,
    urls: Urls,
    options: BigQueryOptions,
    api: Api,
    tables: Vec<Table>,
    timeout: Duration,
    /// Set once every table exists and matched, in this process.
    created: OnceCell<()>,
}

impl fmt::Debug for BigQueryDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BigQueryDestination")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("mode", &self.options.mode)
            .finish_non_exhaustive()
    }
}

impl BigQueryDestination {
    fn table_what(&self, table: &Table) -> String {
        format!(
            "BigQuery table `{}.{}.{}`",
            self.target.project, self.target.dataset, table.name
        )
    }

    /// Create every missing table, and check the existing ones (once per process).
    async fn ensure_tables(&self) -> Result<(), Failure> {
        warehouse::once_for_each(&self.created, &self.tables, |table| {
            self.ensure_table(table)
        })
        .await
    }

    async fn ensure_table(&self, table: &Table) -> Result<(), Failure> {
        let what = self.table_what(table);
        let url = self.urls.table(&table.name);
        let mut answer = self.api.call(Method::GET, &url, None, &what).await?;
        if answer.status == StatusCode::NOT_FOUND {
            self.dataset_exists(&what).await?;
            let resource = tables::table_resource(table, &self.target.project);
            let created = self
                .api
                .call_json(Method::POST, &self.urls.tables(), &resource, &what)
                .await?;
            match created.status {
                status if status.is_success() => return Ok(()),
                // Created concurrently (another process): check what is there.
                StatusCode::CONFLICT => {
                    answer = self.api.call(Method::GET, &url, None, &what).await?;
                }
                _ => return Err(self.missing_dataset_or(created, &what).await),
            }
        }
        if !answer.status.is_success() {
            return Err(self.missing_dataset_or(answer, &what).await);
        }
        match tables::mismatch(table, &answer.body) {
            None => Ok(()),
            Some(reason) => Err(Failure::permanent(format!(
                "{what} does not match the warehouse schema: {reason} (docs/schemas.md)"
            ))),
        }
    }

    /// Fail permanently, naming the dataset, when it does not exist (checked before a
    /// table is created: emulators answer a table insert into a missing dataset with 500).
    async fn dataset_exists(&self, what: &str) -> Result<(), Failure> {
        let dataset = self
            .api
            .call(Method::GET, &self.urls.dataset(), None, &what)
            .await?;
        match dataset.status {
            StatusCode::NOT_FOUND => Err(Failure::permanent(format!(
                "{} does not exist (create it; flagstream creates only its tables)",
                self.target
            ))),
            status if status.is_success() => Ok(()),
            _ => Err(api::failure(&dataset, &what)),
        }
    }

    /// A failed `tables.get` / `tables.insert`: when the dataset itself is missing, say so.
    async fn missing_dataset_or(&self, failed: api::Answer, what: &str) -> Failure {
        let dataset = self
            .api
            .call(Method::GET, &self.urls.dataset(), None, &what)
            .await;
        match dataset {
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => Failure::permanent(format!(
                "{} does not exist (create it; flagstream creates only its tables)",
                self.target
            )),
            _ => api::failure(&failed, &what),
        }
    }

    async fn send_batch(&self, batch: &Batch) -> SendOutcome {
        let grouped = warehouse::rows_for(self.schema, &batch.items, &self.tables);
        let load = async {
            self.ensure_tables().await?;
            let mut refused = Vec::new();
            for (table, rows) in self.tables.iter().zip(&grouped.rows) {
                if !rows.is_empty() {
                    refused.extend(self.write(batch, table, rows).await?);
                }
            }
            Ok(refused)
        };
        let late = || {
            format!(
                "{}: loading (a re-send finds the job by its id)",
                self.target
            )
        };
        warehouse::outcome_within(
            batch.items.len(),
            grouped.failures,
            self.timeout * 2,
            late,
            load,
        )
        .await
    }

    async fn write(
        &self,
        batch: &Batch,
        table: &Table,
        rows: &[super::postgres::Row],
    ) -> Result<Vec<ItemFailure>, Failure> {
        let what = self.table_what(table);
        match self.options.mode {
            Mode::Load => {
                let request = jobs::LoadRequest {
                    api: &self.api,
                    urls: &self.urls,
                    table,
                    batch_id: &batch.id,
                    location: self.options.location.as_deref(),
                    what: &what,
                };
                jobs::load(&request, rows).await
            }
            Mode::Stream => stream::insert_all(&self.api, &self.urls, table, rows, &what).await,
        }
    }
}

impl Destination for BigQueryDestination {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "bigquery"
    }

    fn schema(&self) -> Schema {
        self.schema
    }

    fn limits(&self) -> BatchLimits {
        match self.options.mode {
            // Load jobs: at most 1,500 per table per day; an upload may be far larger than
            // this, but a batch is held in memory while it loads.
            Mode::Load => BatchLimits {
                max_items: 50_000,
                max_bytes: 64 * 1024 * 1024,
                max_item_bytes: 8 * 1024 * 1024,
                per_item_overhead: 0,
                linger: Duration::from_secs(60),
            },
            // insertAll: 10 MB per request, 500 rows per request recommended.
            Mode::Stream => BatchLimits {
                max_items: 500,
                max_bytes: 9 * 1024 * 1024,
                max_item_bytes: 5 * 1024 * 1024,
                ..BatchLimits::default()
            },
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
