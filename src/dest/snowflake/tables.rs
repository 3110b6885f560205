//! Snowflake tables from the warehouse column lists: DDL, and the check that an existing
//! table can take our rows (read from `information_schema.columns`).
//!
//! Types: `TEXT`, `NUMBER(38,0)`, `FLOAT`, `BOOLEAN`, `VARIANT` (JSON columns),
//! `TIMESTAMP_TZ`; non-null columns are `NOT NULL`. Names are stored upper case (as
//! Snowflake stores unquoted names), so queries name them unquoted in any case. Snowflake
//! records but does not enforce primary keys, so none is declared: the load's `MERGE`
//! ([`super::load`]) is what keeps one row per key.

use crate::dest::postgres::Table;
use crate::event::schema::warehouse::ColumnType;

use super::config::{ident, stored_ident, SnowflakeTarget};

/// The type `CREATE TABLE` writes.
pub fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "TEXT",
        ColumnType::Int64 => "NUMBER(38,0)",
        ColumnType::Float64 => "FLOAT",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Json => "VARIANT",
        ColumnType::Timestamp => "TIMESTAMP_TZ",
    }
}

/// The type as `information_schema.columns.data_type` reports it.
pub fn reported_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int64 => "NUMBER",
        other => sql_type(other),
    }
}

/// `"DATABASE"."SCHEMA"."TABLE"`.
pub fn qualified(target: &SnowflakeTarget, table: &Table) -> String {
    format!(
        "{}.{}.{}",
        ident(&target.database),
        ident(&target.schema),
        ident(&table.name)
    )
}

/// `CREATE TABLE IF NOT EXISTS …`.
pub fn create_table(target: &SnowflakeTarget, table: &Table) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{null}", ident(c.name), sql_type(c.ty))
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        qualified(target, table),
        columns.join(", ")
    )
}

/// The query of a table's columns (name, type, nullable), with its bindings.
pub fn columns_query(target: &SnowflakeTarget, table: &Table) -> (String, Vec<Option<String>>) {
    (
        format!(
            "SELECT column_name::VARCHAR, data_type::VARCHAR, is_nullable::VARCHAR \
             FROM {}.information_schema.columns WHERE table_schema = ? AND table_name = ? \
             ORDER BY ordinal_position",
            ident(&target.database)
        ),
        vec![
            Some(stored_ident(&target.schema)),
            Some(stored_ident(&table.name)),
        ],
    )
}

/// Why existing columns (`[name, data_type, is_nullable]` rows) cannot take `table`'s rows.
pub fn mismatch(table: &Table, existing: &[Vec<Option<String>>]) -> Option<String> {
    let text =
        |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    for column in table.columns {
        let Some(row) = existing
            .iter()
            .find(|row| text(row, 0).eq_ignore_ascii_case(column.name))
        else {
            return Some(format!("column `{}` is missing", column.name));
        };
        let reported = text(row, 1);
        if !reported.eq_ignore_ascii_case(reported_type(column.ty)) {
            return Some(format!(
                "column `{}` is {reported}, flagstream writes {}",
                column.name,
                reported_type(column.ty)
            ));
        }
        if column.nullable && text(row, 2) == "NO" {
            return Some(format!(
                "column `{}` is NOT NULL but may be null",
                column.name
            ));
        }
    }
    existing
        .iter()
        .filter(|row| text(row, 2) == "NO")
        .map(|row| text(row, 0))
        .find(|name| {
            !table
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(name))
        })
        .map(|name| format!("column `{name}` is NOT NULL but flagstream does not write it"))
}
