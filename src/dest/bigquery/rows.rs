//! Typed rows → the JSON BigQuery takes: newline-delimited JSON for load jobs (with each
//! row's byte offset, which load errors quote), and `insertAll` rows with insert ids.
//!
//! `JSON` columns: a load job's NDJSON carries the JSON *value* (a string there would be
//! stored as a JSON string); `insertAll` takes JSON columns as JSON text in a string.
//! Timestamps are RFC 3339 text with milliseconds.

use serde_json::{Map, Value};

use crate::dest::postgres::{Cell, Row, Table};

/// How `JSON` columns are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonColumns {
    /// As JSON values (load jobs).
    Value,
    /// As strings holding JSON text (`insertAll`).
    Text,
}

/// One row as a JSON object of `table`'s columns (nulls left out, as BigQuery reads them).
pub fn row_object(table: &Table, row: &Row, json: JsonColumns) -> Map<String, Value> {
    table
        .columns
        .iter()
        .zip(&row.cells)
        .filter_map(|(column, cell)| Some((column.name.to_string(), cell_value(cell, json)?)))
        .collect()
}

fn cell_value(cell: &Cell, json: JsonColumns) -> Option<Value> {
    Some(match cell {
        Cell::Null => return None,
        Cell::Text(text) => Value::String(text.clone()),
        Cell::Int(value) => Value::from(*value),
        Cell::Float(value) => Value::from(*value),
        Cell::Bool(value) => Value::Bool(*value),
        // Rows were built from valid JSON text (the mapper writes it); anything else would
        // have failed the row already, so fall back to the text rather than lose it.
        Cell::Json(text) if json == JsonColumns::Text => Value::String(text.clone()),
        Cell::Json(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        }
        Cell::Timestamp(_) => Value::String(cell.to_text().unwrap_or_default()),
    })
}

/// A load job's payload: NDJSON, and the byte offset where each row starts.
#[derive(Debug, Default)]
pub struct Ndjson {
    pub bytes: Vec<u8>,
    pub offsets: Vec<usize>,
}

impl Ndjson {
    pub fn of(table: &Table, rows: &[Row]) -> Ndjson {
        let mut out = Ndjson::default();
        for row in rows {
            out.offsets.push(out.bytes.len());
            let object = Value::Object(row_object(table, row, JsonColumns::Value));
            // Serialising a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out.bytes, &object);
            out.bytes.push(b'\n');
        }
        out
    }

    /// The row starting at byte `offset`, if one does.
    pub fn row_at(&self, offset: usize) -> Option<usize> {
        self.offsets.binary_search(&offset).ok()
    }
}

/// The insert id of a row: its table key (`event_id` and `context_kind`, or `event_id`,
/// `flag_key` and `counter_index`), since one event fans out into a row per context.
pub fn insert_id(table: &Table, row: &Row) -> String {
    table
        .key
        .iter()
        .map(|key| {
            table
                .columns
                .iter()
                .position(|c| c.name == *key)
                .and_then(|i| row.cells[i].to_text())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `tabledata.insertAll` body for `rows`.
pub fn insert_all_body(table: &Table, rows: &[Row]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "insertId": insert_id(table, row),
                "json": Value::Object(row_object(table, row, JsonColumns::Text)),
            })
        })
        .collect();
    serde_json::json!({
        "rows": rows,
        "skipInvalidRows": false,
        "ignoreUnknownValues": false,
    })
}
