//! What the table destinations (`postgres` / Redshift, `bigquery`, `snowflake`) share: the
//! tables an event schema lands in, a batch's rows grouped by table, and one load bounded
//! in time and folded into an outcome.
//!
//! With the `warehouse` event schema the tables are its public column lists
//! (docs/schemas.md); with any other schema each event lands whole in one document table
//! (`table=`, default `flagstream_events`). Rows that cannot be rows are permanent item
//! failures named by event id ([`crate::dest::postgres::Row`] and friends build them).

use std::future::Future;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::postgres::{
    document_rows, document_table, warehouse_rows, warehouse_tables, Grouped, Table,
};
use super::{BatchItem, Failure, ItemFailure, SendOutcome};
use crate::event::Schema;

/// The default document table of non-warehouse schemas.
pub const DOCUMENT_TABLE: &str = "flagstream_events";

/// The tables `schema`'s events land in, inside `namespace` (database schema, dataset).
pub fn tables_for(schema: Schema, namespace: &str, table: Option<&str>) -> Vec<Table> {
    match schema {
        Schema::Warehouse => warehouse_tables(namespace),
        _ => vec![document_table(namespace, table.unwrap_or(DOCUMENT_TABLE))],
    }
}

/// `items` as rows of `tables` (see [`tables_for`]).
pub fn rows_for(schema: Schema, items: &[BatchItem], tables: &[Table]) -> Grouped {
    match schema {
        Schema::Warehouse => warehouse_rows(items, tables),
        _ => document_rows(items),
    }
}

/// Run `load` (which returns the rows the target refused) for at most `limit`, and fold
/// its result and the rows that could not be built (`unbuildable`) into the outcome of a
/// batch of `items` items. Running out of time is retriable; `late` says what took long.
pub async fn outcome_within(
    items: usize,
    unbuildable: Vec<ItemFailure>,
    limit: Duration,
    late: impl FnOnce() -> String,
    load: impl Future<Output = Result<Vec<ItemFailure>, Failure>>,
) -> SendOutcome {
    let result = match tokio::time::timeout(limit, load).await {
        Ok(result) => result,
        Err(_) => Err(Failure::retriable(format!(
            "{} took longer than {limit:?}",
            late()
        ))),
    };
    match result {
        Ok(mut refused) => {
            refused.extend(unbuildable);
            SendOutcome::from_item_failures(items, refused, None)
        }
        Err(failure) => SendOutcome::Failed(failure),
    }
}

/// Run `ensure` (create a table when missing, check it) for each of `tables`, once per
/// process: `done` is set when every table passed, and an error leaves it unset so the next
/// batch tries again.
pub async fn once_for_each<'a, F, Fut>(
    done: &OnceCell<()>,
    tables: &'a [Table],
    ensure: F,
) -> Result<(), Failure>
where
    F: Fn(&'a Table) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    done.get_or_try_init(|| async {
        for table in tables {
            ensure(table).await?;
        }
        Ok::<(), Failure>(())
    })
    .await
    .map(|_| ())
}
