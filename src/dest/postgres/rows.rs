//! Batch items → typed rows, grouped by table.
//!
//! A `warehouse` item is one JSON object naming its table and carrying every column as a
//! scalar (docs/schemas.md); it becomes one [`Row`] of [`Cell`]s in the table's column order.
//! Any other schema's item becomes one row of the document table. An item that cannot be a
//! row (not an object, unknown table, a value of the wrong type, a null in a non-null column)
//! is a permanent failure of that item alone, named by its event id.

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use serde_json::{Map, Value};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::tables::Table;
use crate::dest::{BatchItem, ItemFailure};
use crate::event::schema::warehouse::{Column, ColumnType};

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// JSON text, sent as-is (the server validates it).
    Json(String),
    Timestamp(SystemTime),
}

impl Cell {
    /// The value as text, for statements that bind every parameter as text (Redshift).
    pub fn to_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(text) | Cell::Json(text) => Some(text.clone()),
            Cell::Int(value) => Some(value.to_string()),
            Cell::Float(value) => Some(value.to_string()),
            Cell::Bool(value) => Some(value.to_string()),
            Cell::Timestamp(time) => Some(humantime::format_rfc3339_millis(*time).to_string()),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(text) => text.to_sql(ty, out),
            Cell::Int(value) => value.to_sql(ty, out),
            Cell::Float(value) => value.to_sql(ty, out),
            Cell::Bool(value) => value.to_sql(ty, out),
            Cell::Timestamp(time) => time.to_sql(ty, out),
            Cell::Json(text) => {
                // jsonb's binary form is a version byte (1) and the JSON text; json's is the text.
                if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // The loader declares the column types of the table it checked; each cell was built
        // from that column's type.
        true
    }

    to_sql_checked!();
}

/// The binary `COPY` type of a column.
pub fn copy_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::String => Type::TEXT,
        ColumnType::Int64 => Type::INT8,
        ColumnType::Float64 => Type::FLOAT8,
        ColumnType::Bool => Type::BOOL,
        ColumnType::Json => Type::JSONB,
        ColumnType::Timestamp => Type::TIMESTAMPTZ,
    }
}

/// One row and the batch item it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub index: usize,
    pub event_id: String,
    pub cells: Vec<Cell>,
}

/// Rows for each table (same order as the tables), and the items that could not be rows.
#[derive(Debug, Default)]
pub struct Grouped {
    pub rows: Vec<Vec<Row>>,
    pub failures: Vec<ItemFailure>,
}

/// Decode warehouse items into rows of `tables`.
pub fn warehouse_rows(items: &[BatchItem], tables: &[Table]) -> Grouped {
    let mut grouped = Grouped {
        rows: vec![Vec::new(); tables.len()],
        failures: Vec::new(),
    };
    for (index, item) in items.iter().enumerate() {
        match warehouse_row(item, tables) {
            Ok((table, cells)) => grouped.rows[table].push(Row {
                index,
                event_id: item.event_id.to_string(),
                cells,
            }),
            Err(reason) => grouped.failures.push(ItemFailure::new(
                index,
                crate::dest::FailureClass::Permanent,
                format!("event {}: {reason}", item.event_id),
            )),
        }
    }
    grouped
}

fn warehouse_row(item: &BatchItem, tables: &[Table]) -> Result<(usize, Vec<Cell>), String> {
    let object: Map<String, Value> = serde_json::from_slice(&item.payload)
        .map_err(|err| format!("not a warehouse row (a JSON object): {err}"))?;
    let name = object
        .get("table")
        .and_then(Value::as_str)
        .ok_or("warehouse row without a `table` field")?;
    let table = tables
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| format!("row for unknown table `{name}`"))?;
    let cells = tables[table]
        .columns
        .iter()
        .map(|column| cell(column, object.get(column.name).unwrap_or(&Value::Null)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| format!("table {name}: {reason}"))?;
    Ok((table, cells))
}

fn cell(column: &Column, value: &Value) -> Result<Cell, String> {
    let cell = match (column.ty, value) {
        (_, Value::Null) if column.nullable => Cell::Null,
        (_, Value::Null) => return Err(format!("column {} is null", column.name)),
        (ColumnType::String, Value::String(text)) => Cell::Text(text.clone()),
        (ColumnType::Json, Value::String(text)) => Cell::Json(text.clone()),
        (ColumnType::Int64, Value::Number(n)) if n.as_i64().is_some() => {
            Cell::Int(n.as_i64().unwrap_or_default())
        }
        (ColumnType::Float64, Value::Number(n)) if n.as_f64().is_some() => {
            Cell::Float(n.as_f64().unwrap_or_default())
        }
        (ColumnType::Bool, Value::Bool(b)) => Cell::Bool(*b),
        (ColumnType::Timestamp, Value::String(text)) => Cell::Timestamp(
            humantime::parse_rfc3339(text)
                .map_err(|err| format!("column {}: `{text}`: {err}", column.name))?,
        ),
        (ty, other) => {
            return Err(format!(
                "column {}: {other} is not a {ty:?} (out of range or wrong type)",
                column.name
            ))
        }
    };
    Ok(cell)
}

/// Every item as one row of the document table (event id, kind, environment, received at,
/// the mapped document).
pub fn document_rows(items: &[BatchItem]) -> Grouped {
    let mut grouped = Grouped {
        rows: vec![Vec::new()],
        failures: Vec::new(),
    };
    for (index, item) in items.iter().enumerate() {
        match std::str::from_utf8(&item.payload) {
            Ok(text) => grouped.rows[0].push(Row {
                index,
                event_id: item.event_id.to_string(),
                cells: vec![
                    Cell::Text(item.event_id.to_string()),
                    Cell::Text(item.kind.to_string()),
                    Cell::Text(item.environment.to_string()),
                    Cell::Timestamp(UNIX_EPOCH + Duration::from_millis(item.received_at_ms)),
                    Cell::Json(text.to_string()),
                ],
            }),
            Err(err) => grouped.failures.push(ItemFailure::new(
                index,
                crate::dest::FailureClass::Permanent,
                format!("event {}: payload is not UTF-8: {err}", item.event_id),
            )),
        }
    }
    grouped
}
