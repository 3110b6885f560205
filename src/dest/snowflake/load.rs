//! Idempotent loading: one `MERGE` per table and batch that inserts only rows whose key
//! (`event_id`, `context_kind` — null equal to null — or the summary key) the table does not
//! hold yet, from positionally bound values:
//!
//! ```sql
//! MERGE INTO "DB"."SCHEMA"."EVALUATION_EVENTS" t
//! USING (SELECT column1 AS "EVENT_ID", …, PARSE_JSON(column10) AS "CONTEXT_ATTRIBUTES", …
//!        FROM VALUES (?, ?, …), (?, ?, …)) s
//! ON t."EVENT_ID" = s."EVENT_ID" AND EQUAL_NULL(t."CONTEXT_KIND", s."CONTEXT_KIND")
//! WHEN NOT MATCHED THEN INSERT ("EVENT_ID", …) VALUES (s."EVENT_ID", …)
//! ```
//!
//! A `MERGE` is one atomic statement, so a batch re-sent after a crash inserts nothing twice;
//! rows repeated within one batch are dropped before the statement (`MERGE` would insert
//! both). When the statement fails permanently (a value the column refuses), each row is
//! merged alone, so only the bad rows fail, each naming its event.

use std::collections::HashSet;

use crate::dest::postgres::{Row, Table};
use crate::dest::{Failure, FailureClass, ItemFailure};
use crate::event::schema::warehouse::ColumnType;

use super::config::{ident, SnowflakeTarget};
use super::session::Session;
use super::tables::qualified;

/// The `MERGE` of `rows` rows into `table` (see the module doc).
pub fn merge_statement(target: &SnowflakeTarget, table: &Table, rows: usize) -> String {
    let select: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{} AS {}",
                convert(c.ty, &format!("column{}", i + 1)),
                ident(c.name)
            )
        })
        .collect();
    let placeholders = format!("({})", vec!["?"; table.columns.len()].join(", "));
    let values = vec![placeholders; rows].join(", ");
    let on: Vec<String> = table
        .key
        .iter()
        .map(|key| {
            let (t, s) = (format!("t.{}", ident(key)), format!("s.{}", ident(key)));
            let nullable = table.columns.iter().any(|c| c.name == *key && c.nullable);
            if nullable {
                format!("EQUAL_NULL({t}, {s})")
            } else {
                format!("{t} = {s}")
            }
        })
        .collect();
    let names: Vec<String> = table.columns.iter().map(|c| ident(c.name)).collect();
    let sources: Vec<String> = names.iter().map(|n| format!("s.{n}")).collect();
    format!(
        "MERGE INTO {} t USING (SELECT {} FROM VALUES {values}) s ON {} \
         WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        qualified(target, table),
        select.join(", "),
        on.join(" AND "),
        names.join(", "),
        sources.join(", ")
    )
}

/// A bound text value converted to the column's type.
fn convert(ty: ColumnType, value: &str) -> String {
    match ty {
        ColumnType::String => value.to_string(),
        ColumnType::Int64 => format!("{value}::NUMBER(38,0)"),
        ColumnType::Float64 => format!("{value}::FLOAT"),
        ColumnType::Bool => format!("{value}::BOOLEAN"),
        ColumnType::Json => format!("PARSE_JSON({value})"),
        ColumnType::Timestamp => format!("{value}::TIMESTAMP_TZ"),
    }
}

/// Every row's cells as bound text, row after row, skipping rows whose key came earlier.
pub fn bindings(table: &Table, rows: &[Row]) -> (usize, Vec<Option<String>>) {
    let key_columns: Vec<usize> = table
        .key
        .iter()
        .filter_map(|key| table.columns.iter().position(|c| c.name == *key))
        .collect();
    let mut seen = HashSet::new();
    let mut values = Vec::with_capacity(rows.len() * table.columns.len());
    let mut count = 0;
    for row in rows {
        let key: Vec<Option<String>> = key_columns
            .iter()
            .map(|&i| row.cells[i].to_text())
            .collect();
        if seen.insert(key) {
            values.extend(row.cells.iter().map(|cell| cell.to_text()));
            count += 1;
        }
    }
    (count, values)
}

/// Merge `rows` into `table`; bad rows (when the statement fails permanently) are item
/// failures, anything else fails the whole load.
pub async fn merge(
    session: &Session,
    table: &Table,
    rows: &[Row],
) -> Result<Vec<ItemFailure>, Failure> {
    match merge_rows(session, table, rows).await {
        Ok(()) => Ok(Vec::new()),
        Err(failure) if failure.class == FailureClass::Permanent && rows.len() > 1 => {
            let mut failures = Vec::new();
            for row in rows {
                if let Err(failure) = merge_rows(session, table, std::slice::from_ref(row)).await {
                    if failure.is_retriable() {
                        return Err(failure);
                    }
                    failures.push(ItemFailure::new(
                        row.index,
                        FailureClass::Permanent,
                        format!("event {}: {}", row.event_id, failure.reason),
                    ));
                }
            }
            Ok(failures)
        }
        Err(failure) if rows.len() == 1 && !failure.is_retriable() => Ok(vec![ItemFailure::new(
            rows[0].index,
            FailureClass::Permanent,
            format!("event {}: {}", rows[0].event_id, failure.reason),
        )]),
        Err(failure) => Err(failure),
    }
}

async fn merge_rows(session: &Session, table: &Table, rows: &[Row]) -> Result<(), Failure> {
    let (count, values) = bindings(table, rows);
    let sql = merge_statement(&session.target, table, count);
    session.query(&sql, &values).await.map(|_| ())
}
