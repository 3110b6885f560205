//! Loading rows exactly once.
//!
//! PostgreSQL, per table, in one transaction, in two steps of which the second is rare:
//!
//! 1. **Straight in**: binary `COPY` of the rows into the table itself. The table's unique key
//!    refuses any row already there, so this either inserts every row of the batch or fails
//!    with `unique_violation` (SQLSTATE 23505) and inserts none (the transaction rolls back).
//!    A batch is sent for the first time far more often than again, and this path costs the
//!    server ~18 % less CPU per row than staging (measured: docs/performance.md).
//! 2. **Staged**, only after a unique violation (a batch re-sent after a crash or retry, or
//!    rows that reached the table another way): a temporary staging table shaped like the
//!    target (`CREATE TEMP TABLE … ON COMMIT DROP AS SELECT … WITH NO DATA`, so no
//!    constraints), binary `COPY` into it, then
//!    `INSERT INTO target SELECT … FROM stage ON CONFLICT <key> DO NOTHING`: rows whose key
//!    is already in the table are skipped, the others inserted.
//!
//! Either way a batch's rows are in the table exactly once, and on any error none of this
//! attempt's are.
//!
//! Redshift ([`super::redshift`]) has neither `COPY FROM STDIN` nor `ON CONFLICT`; its
//! statements differ, the transaction and the isolation of bad rows are the same.
//!
//! When a statement fails because of a row (a data exception or constraint violation: a
//! `CHECK` an operator added, a value the column refuses), the rows are loaded again in
//! halves, each in its own transaction, until the offending rows are alone: they are
//! permanent failures named by event id, every other row is delivered. Any other failure
//! fails the whole batch (and what was loaded before is not loaded twice on the retry).

use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::classify::{classify, Fault};
use super::config::Flavor;
use super::redshift;
use super::rows::{copy_type, Row};
use super::tables::{quote_ident, Table};
use crate::dest::{Failure, FailureClass, ItemFailure};

/// The temporary table a load stages its rows in.
pub fn stage_name(table: &Table) -> String {
    quote_ident(&format!("flagstream_stage_{}", table.name))
}

/// PostgreSQL: create the staging table.
pub fn create_stage(table: &Table) -> String {
    format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
        stage_name(table),
        table.column_list(),
        table.qualified()
    )
}

/// PostgreSQL: the binary `COPY` into the staging table.
pub fn copy_into_stage(table: &Table) -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        stage_name(table),
        table.column_list()
    )
}

/// PostgreSQL: the binary `COPY` straight into the table (a batch's first attempt).
pub fn copy_into_table(table: &Table) -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        table.qualified(),
        table.column_list()
    )
}

/// PostgreSQL: move staged rows whose key is new into the table.
pub fn insert_new(table: &Table) -> String {
    let columns = table.column_list();
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM {} ON CONFLICT {} DO NOTHING",
        table.qualified(),
        stage_name(table),
        table.key_target()
    )
}

/// Load `rows` into `table`, isolating rows the server refuses; returns those as permanent
/// item failures, or the failure that stopped the load.
pub async fn load_isolating(
    client: &mut Client,
    table: &Table,
    rows: &[Row],
    flavor: Flavor,
) -> Result<Vec<ItemFailure>, Failure> {
    let mut failures = Vec::new();
    let mut pending = vec![rows];
    while let Some(part) = pending.pop() {
        if part.is_empty() {
            continue;
        }
        let result = match flavor {
            Flavor::Postgres => load(client, table, part).await,
            Flavor::Redshift => redshift::load(client, table, part).await,
        };
        match result {
            Ok(()) => {}
            Err(Fault::Batch(failure)) => return Err(failure),
            Err(Fault::Row(detail)) if part.len() == 1 => failures.push(ItemFailure::new(
                part[0].index,
                FailureClass::Permanent,
                format!(
                    "event {} refused by table {}: {detail}",
                    part[0].event_id,
                    table.display()
                ),
            )),
            Err(Fault::Row(_)) => {
                let (first, second) = part.split_at(part.len() / 2);
                pending.push(second);
                pending.push(first);
            }
        }
    }
    Ok(failures)
}

/// One PostgreSQL load attempt of `rows`: straight in, or staged when some key is already in
/// the table (module doc).
async fn load(client: &mut Client, table: &Table, rows: &[Row]) -> Result<(), Fault> {
    let target = format!("table {}", table.display());
    let fail = |error: tokio_postgres::Error| classify(&error, "loading into", &target);
    match load_straight(client, table, rows).await {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            load_staged(client, table, rows).await.map_err(fail)
        }
        Err(error) => Err(fail(error)),
    }
}

/// `COPY` into the table in one transaction.
async fn load_straight(
    client: &mut Client,
    table: &Table,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    copy_rows(&transaction, &copy_into_table(table), table, rows).await?;
    transaction.commit().await
}

/// Stage, then insert the rows whose key is new, in one transaction.
async fn load_staged(
    client: &mut Client,
    table: &Table,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction.batch_execute(&create_stage(table)).await?;
    copy_rows(&transaction, &copy_into_stage(table), table, rows).await?;
    transaction.execute(&insert_new(table), &[]).await?;
    transaction.commit().await
}

/// Binary `COPY` of `rows` through the `COPY … FROM STDIN` statement `copy`.
async fn copy_rows(
    transaction: &Transaction<'_>,
    copy: &str,
    table: &Table,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let sink = transaction.copy_in(copy).await?;
    let types: Vec<_> = table.columns.iter().map(|c| copy_type(c.ty)).collect();
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
    for row in rows {
        values.clear();
        values.extend(row.cells.iter().map(|cell| cell as &(dyn ToSql + Sync)));
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await?;
    Ok(())
}
