//! `flavor=redshift`: the statements for Amazon Redshift, which speaks the PostgreSQL
//! protocol but lacks what the PostgreSQL path relies on.
//!
//! | PostgreSQL path | Redshift path, and why |
//! |---|---|
//! | binary `COPY … FROM STDIN` into a temp table | multi-row `INSERT … VALUES` with text parameters: Redshift's `COPY` reads only from S3, DynamoDB, EMR or SSH hosts |
//! | `INSERT … ON CONFLICT (key) DO NOTHING` | `LOCK` the table, `DELETE FROM stage USING target WHERE <key matches>`, `INSERT … SELECT` the rest: Redshift has no `ON CONFLICT` and does not enforce primary keys; the lock serializes concurrent loaders so two can't both see a key as new |
//! | unique index over `coalesce(context_kind, '')` | declared `PRIMARY KEY` (informational only), no indexes (Redshift has sort/dist keys instead, left to the operator) |
//! | `text`, `jsonb` | `varchar(65535)` (Redshift's longest), `super` loaded with `JSON_PARSE` |
//! | advisory lock around migrations | none (Redshift has no advisory locks): start one flagstream per schema first |
//!
//! A value binds as text and is cast in SQL, so one statement shape serves every column type.
//! Redshift allows at most 32,767 parameters per statement (and 16 MB per statement): rows
//! are sent in chunks under both.

use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::classify::{classify, Fault};
use super::rows::Row;
use super::tables::{quote_ident, Table};
use crate::event::schema::warehouse::ColumnType;

/// Most bind parameters per Redshift statement (its documented maximum is 32,767).
pub const MAX_PARAMETERS: usize = 32_000;

/// The staging table of a load (temporary: private to the session, dropped at the end).
fn stage(table: &Table) -> String {
    quote_ident(&format!("flagstream_stage_{}", table.name))
}

/// Statements run before the rows are staged.
pub fn begin(table: &Table) -> Vec<String> {
    vec![
        format!("LOCK {}", table.qualified()),
        format!(
            "CREATE TEMP TABLE {} (LIKE {})",
            stage(table),
            table.qualified()
        ),
    ]
}

/// `INSERT INTO stage … VALUES (…), …` for `rows` rows, parameters numbered from 1.
pub fn stage_rows(table: &Table, rows: usize) -> String {
    let width = table.columns.len();
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let values: Vec<String> = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, column)| cast(column.ty, row * width + i + 1))
                .collect();
            format!("({})", values.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        stage(table),
        table.column_list(),
        tuples.join(", ")
    )
}

fn cast(ty: ColumnType, parameter: usize) -> String {
    let text = format!("${parameter}::varchar");
    match ty {
        ColumnType::String => text,
        ColumnType::Json => format!("JSON_PARSE({text})"),
        ColumnType::Int64 => format!("{text}::bigint"),
        ColumnType::Float64 => format!("{text}::double precision"),
        ColumnType::Bool => format!("{text}::boolean"),
        ColumnType::Timestamp => format!("{text}::timestamptz"),
    }
}

/// Statements run after the rows are staged: drop staged rows already loaded, insert the
/// rest, drop the stage.
pub fn finish(table: &Table) -> Vec<String> {
    let matches: Vec<String> = table
        .key
        .iter()
        .map(|name| {
            let (staged, loaded) = (
                format!("{}.{}", stage(table), quote_ident(name)),
                format!("{}.{}", table.qualified(), quote_ident(name)),
            );
            if table.columns.iter().any(|c| c.name == *name && c.nullable) {
                format!("coalesce({staged}, '') = coalesce({loaded}, '')")
            } else {
                format!("{staged} = {loaded}")
            }
        })
        .collect();
    let columns = table.column_list();
    vec![
        format!(
            "DELETE FROM {} USING {} WHERE {}",
            stage(table),
            table.qualified(),
            matches.join(" AND ")
        ),
        format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
            table.qualified(),
            stage(table)
        ),
        format!("DROP TABLE {}", stage(table)),
    ]
}

/// Rows per staging statement.
pub fn rows_per_statement(table: &Table) -> usize {
    (MAX_PARAMETERS / table.columns.len().max(1)).max(1)
}

/// One Redshift load attempt of `rows` in one transaction.
pub async fn load(client: &mut Client, table: &Table, rows: &[Row]) -> Result<(), Fault> {
    let target = format!("table {}", table.display());
    let fail = |error: tokio_postgres::Error| classify(&error, "loading into", &target);
    let transaction = client.transaction().await.map_err(fail)?;
    for statement in begin(table) {
        transaction.batch_execute(&statement).await.map_err(fail)?;
    }
    for chunk in rows.chunks(rows_per_statement(table)) {
        let texts: Vec<Option<String>> = chunk
            .iter()
            .flat_map(|row| row.cells.iter().map(|cell| cell.to_text()))
            .collect();
        let parameters: Vec<&(dyn ToSql + Sync)> = texts
            .iter()
            .map(|text| text as &(dyn ToSql + Sync))
            .collect();
        transaction
            .execute(&stage_rows(table, chunk.len()), &parameters)
            .await
            .map_err(fail)?;
    }
    for statement in finish(table) {
        transaction.batch_execute(&statement).await.map_err(fail)?;
    }
    transaction.commit().await.map_err(fail)
}
