//! `format=parquet`: the typed tables of `schema=warehouse` as Parquet files (arrow-rs).
//!
//! ## Objects: one per table
//!
//! A Parquet file has one schema, and the warehouse schema has three tables
//! (`evaluation_events`, `metric_events`, `summary_counters`, see
//! [`crate::event::schema::warehouse`]), so a batch becomes **one object per (table,
//! partition)**: the table name is the first directory under the prefix, before the Hive
//! partitions — `exports/evaluation_events/dt=2026-11-29/hour=07/<batch id>.parquet` — which is
//! the layout Athena, Trino, Spark and BigQuery external tables want (one table location
//! per schema). Keys stay a pure function of the batch id, the table and the partition values.
//!
//! ## Column types
//!
//! Columns are the table's, in its order, with the warehouse types: text → `BYTE_ARRAY`
//! `STRING` (plain UTF-8 logical type), JSON columns (`context_attributes`, `data`, values,
//! …) → `STRING` holding compact JSON text, int64 → `INT64`, float64 → `DOUBLE`, bool →
//! `BOOLEAN`, `timestamp` → `INT64 TIMESTAMP(MILLIS, isAdjustedToUTC=true)`. Columns the
//! schema marks not null are `REQUIRED`, the others `OPTIONAL`.
//!
//! ## What readers need (`../shared/spec/formats.md` §2.5, §6)
//!
//! go-feature-flag's first Parquet files broke Athena v3 equality filters: its library wrote a
//! wrong page index (column/offset index), which Trino reads for `WHERE x = …`. arrow-rs writes
//! the page index correctly (a unit test reads it back and checks it tiles each column chunk);
//! we also keep dictionary encoding and page statistics on for the filter columns
//! (`flag_key`, `context_key`, …), Parquet 1.0 data pages (every reader), and turn
//! dictionaries off only for unique-per-row columns (ids, times, attribute JSON), where a
//! dictionary costs CPU and saves nothing. Likewise min/max statistics are off for the event
//! id, the JSON columns and a few low-cardinality details (`context_kind`, `reason_kind`, …;
//! their column-index entries are absent, which the format allows): no reader skips a page
//! on the range of random ids, JSON documents or values every page spans.
//!
//! Compression: snappy by default, `parquet_compression=zstd` (or `none`). Row groups hold
//! at most `parquet_row_group_rows` rows (default [`DEFAULT_ROW_GROUP_ROWS`], DuckDB's own
//! row-group size: readers parallelise and skip by row group, and a batch of the default
//! `max_bytes` fits in one or a few).
//!
//! ## Reading rows
//!
//! Rows arrive as the warehouse mapper's JSON (`{"table":…, <every column in order>}`); each
//! is read in one pass by [`flat_row`] (compact flat objects, the mapper's output; any other
//! row is parsed with simd-json into a reused tape) and its values appended to Arrow column
//! builders. Columns are matched by name (in order on the fast path), so a reordered or
//! partial row still lands right; a value of the wrong type, or null in a not-null column,
//! fails the object with an error naming the event and column.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use simd_json::{Buffers, Node, StaticNode, Tape};

use super::super::BatchItem;
use crate::event::schema::warehouse::{self, Column, ColumnType};

mod flat_row;

/// Default most rows per row group (DuckDB's row-group size).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 122_880;
/// Rows appended to the builders before they are handed to the writer as one record batch
/// (bounds the Arrow arrays held at once; the writer still fills whole row groups).
const CHUNK_ROWS: usize = 16_384;
/// Columns whose values are (nearly) unique per row: no dictionary.
const NO_DICTIONARY: &[&str] = &[
    "event_id",
    "context_attributes",
    "data",
    "creation_date",
    "timestamp",
    "received_at",
    "start_date",
    "end_date",
];

/// The `parquet_compression` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    #[default]
    Snappy,
    Zstd,
    None,
}

impl std::str::FromStr for ParquetCompression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "snappy" => Ok(ParquetCompression::Snappy),
            "zstd" => Ok(ParquetCompression::Zstd),
            "none" => Ok(ParquetCompression::None),
            other => Err(format!(
                "unknown parquet_compression `{other}` (use snappy, zstd or none)"
            )),
        }
    }
}

/// Validated Parquet settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetSettings {
    pub compression: ParquetCompression,
    pub row_group_rows: usize,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            compression: ParquetCompression::Snappy,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// Why a run of rows could not become a Parquet file.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("event {event_id}: {reason}")]
    Row { event_id: String, reason: String },
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// A warehouse table: its name and columns.
pub type Table = (&'static str, &'static [Column]);

/// The table a warehouse row belongs to (its `"table"` field), if it is one of
/// [`warehouse::TABLES`]. The mapper writes `table` first, so that is checked in place; any
/// other row is parsed.
pub fn table_of(payload: &[u8]) -> Option<Table> {
    let leading = payload.strip_prefix(b"{\"table\":\"").and_then(|rest| {
        warehouse::TABLES.into_iter().find(|(name, _)| {
            rest.strip_prefix(name.as_bytes())
                .is_some_and(|after| after.first() == Some(&b'"'))
        })
    });
    leading.or_else(|| {
        let row: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let name = row.get("table")?.as_str()?;
        warehouse::TABLES
            .into_iter()
            .find(|(table, _)| *table == name)
    })
}

/// Encode `items` (rows of `table`) as one Parquet file.
pub fn encode<'a>(
    table: Table,
    items: impl Iterator<Item = &'a BatchItem>,
    settings: &ParquetSettings,
    size_hint: usize,
) -> Result<Bytes, ParquetError> {
    let (_, columns) = table;
    let schema = Arc::new(arrow_schema(columns));
    let properties = writer_properties(columns, settings);
    let mut writer = ArrowWriter::try_new(
        Vec::with_capacity(size_hint / 4),
        schema.clone(),
        Some(properties),
    )?;
    let mut rows = RowReader {
        expected_keys: flat_row::ExpectedKeys::new(
            std::iter::once("table").chain(columns.iter().map(|c| c.name)),
        ),
        ..RowReader::default()
    };
    let mut builders = Builders::new(columns);
    for item in items {
        rows.append(item, columns, &mut builders)?;
        if builders.rows == CHUNK_ROWS {
            writer.write(&builders.finish(&schema)?)?;
        }
    }
    if builders.rows > 0 {
        writer.write(&builders.finish(&schema)?)?;
    }
    Ok(writer.into_inner()?.into())
}

/// The Arrow schema of a table's columns.
pub fn arrow_schema(columns: &[Column]) -> ArrowSchema {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c.name, data_type(c.ty), c.nullable))
        .collect();
    ArrowSchema::new(fields)
}

fn data_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

fn writer_properties(columns: &[Column], settings: &ParquetSettings) -> WriterProperties {
    let compression = match settings.compression {
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        ParquetCompression::None => Compression::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder()
        .set_created_by(format!("flagstream {}", env!("CARGO_PKG_VERSION")))
        .set_compression(compression)
        .set_max_row_group_size(settings.row_group_rows)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true);
    for column in columns.iter().filter(|c| NO_DICTIONARY.contains(&c.name)) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column.name), false);
    }
    for column in columns.iter().filter(|c| !has_statistics(c)) {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column.name), EnabledStatistics::None);
    }
    builder.build()
}

/// Text columns without min/max statistics besides the event id and JSON text (see
/// [`has_statistics`]): low-cardinality details that every page of mixed traffic spans
/// (`context_kind` `org`…`user`, `reason_kind` `ERROR`…`TARGET_MATCH`), so their range never
/// lets a reader skip a page, while comparing each value with the page's minimum and maximum
/// cost ≈ 200 instructions per row. Equality filters on them still have the dictionary.
const NO_STATISTICS: &[&str] = &[
    "flag_version",
    "context_kind",
    "variation_name",
    "reason_kind",
    "prereq_of",
    "source",
    "url",
    "selector",
];

/// Whether a column gets min/max statistics (page and chunk). Not for JSON text or the event
/// id: a page's min and max of random ids or JSON documents never lets a reader skip it, and
/// comparing every long value against both was a tenth of the writer's work; nor for the
/// columns of [`NO_STATISTICS`]. The filter columns (`flag_key`, `context_key`,
/// `metric_key`), the partition-like ones (`project`, `environment`, `kind`: constant in most
/// files, so their range does skip files) and every number and time keep them.
fn has_statistics(column: &Column) -> bool {
    column.ty != ColumnType::Json
        && column.name != "event_id"
        && !NO_STATISTICS.contains(&column.name)
}

/// One value of a row, whichever parser read it.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    /// An object or array where a scalar belongs.
    Nested,
}

/// One Arrow builder per column.
struct Builders {
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder, TimeReader),
}

impl Builders {
    fn new(columns: &[Column]) -> Builders {
        let builders = columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::String | ColumnType::Json => {
                    ColumnBuilder::Text(StringBuilder::with_capacity(CHUNK_ROWS, CHUNK_ROWS * 16))
                }
                ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(CHUNK_ROWS)),
                ColumnType::Float64 => {
                    ColumnBuilder::Float(Float64Builder::with_capacity(CHUNK_ROWS))
                }
                ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(CHUNK_ROWS)),
                ColumnType::Timestamp => ColumnBuilder::Time(time_builder(), TimeReader::default()),
            })
            .collect();
        Builders {
            columns: builders,
            rows: 0,
        }
    }

    /// The rows appended so far as a record batch; the builders start over empty, with room
    /// for a whole chunk (a finished builder keeps no capacity: growing it again from nothing
    /// copied every column's buffers a dozen times a chunk).
    fn finish(&mut self, schema: &Arc<ArrowSchema>) -> Result<RecordBatch, ParquetError> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|builder| -> ArrayRef {
                match builder {
                    ColumnBuilder::Text(b) => {
                        let array = b.finish();
                        let bytes = array.value_data().len();
                        *b = StringBuilder::with_capacity(CHUNK_ROWS, bytes + bytes / 8);
                        Arc::new(array)
                    }
                    ColumnBuilder::Int(b) => Arc::new(
                        std::mem::replace(b, Int64Builder::with_capacity(CHUNK_ROWS)).finish(),
                    ),
                    ColumnBuilder::Float(b) => Arc::new(
                        std::mem::replace(b, Float64Builder::with_capacity(CHUNK_ROWS)).finish(),
                    ),
                    ColumnBuilder::Bool(b) => Arc::new(
                        std::mem::replace(b, BooleanBuilder::with_capacity(CHUNK_ROWS)).finish(),
                    ),
                    ColumnBuilder::Time(b, _) => {
                        Arc::new(std::mem::replace(b, time_builder()).finish())
                    }
                }
            })
            .collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), arrays)?)
    }
}

fn time_builder() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(CHUNK_ROWS).with_timezone("UTC")
}

impl ColumnBuilder {
    /// Append `cell` as this column's value; `Err` names the problem.
    fn append(&mut self, column: &Column, cell: Cell<'_>) -> Result<(), String> {
        if matches!(cell, Cell::Null) {
            if !column.nullable {
                return Err(format!("column `{}` is null or missing", column.name));
            }
            self.append_null();
            return Ok(());
        }
        let wrong = || wrong_value(column, cell);
        match self {
            ColumnBuilder::Text(b) => match cell {
                Cell::Str(text) => b.append_value(text),
                Cell::Int(v) => b.append_value(v.to_string()),
                Cell::Uint(v) => b.append_value(v.to_string()),
                Cell::Float(v) => b.append_value(v.to_string()),
                Cell::Bool(v) => b.append_value(if v { "true" } else { "false" }),
                Cell::Null | Cell::Nested => return Err(wrong()),
            },
            ColumnBuilder::Int(b) => b.append_value(as_i64(cell).ok_or_else(wrong)?),
            ColumnBuilder::Float(b) => b.append_value(match cell {
                Cell::Int(v) => v as f64,
                Cell::Uint(v) => v as f64,
                Cell::Float(v) => v,
                _ => return Err(wrong()),
            }),
            ColumnBuilder::Bool(b) => match cell {
                Cell::Bool(v) => b.append_value(v),
                _ => return Err(wrong()),
            },
            ColumnBuilder::Time(b, times) => b.append_value(match cell {
                Cell::Str(text) => times.unix_ms(text).ok_or_else(wrong)?,
                other => as_i64(other).ok_or_else(wrong)?,
            }),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Text(b) => b.append_null(),
            ColumnBuilder::Int(b) => b.append_null(),
            ColumnBuilder::Float(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Time(b, _) => b.append_null(),
        }
    }
}

/// The error of a value of the wrong type for its column.
fn wrong_value(column: &Column, cell: Cell<'_>) -> String {
    format!("column `{}` has a {cell:?} value", column.name)
}

fn as_i64(cell: Cell<'_>) -> Option<i64> {
    match cell {
        Cell::Int(v) => Some(v),
        Cell::Uint(v) => i64::try_from(v).ok(),
        Cell::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Some(v as i64),
        _ => None,
    }
}

/// Unix ms of an RFC 3339 UTC time (`2024-05-29T16:26:40.001Z`, what the warehouse writes).
fn parse_timestamp_ms(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// Unix ms of the `timestamp` column's RFC 3339 times, remembering the hour of the last one:
/// a batch's times share a day and mostly an hour, so a time in the mapper's form
/// (`2024-05-29T16:26:40.001Z`) in the same hour as the one before costs only its minutes,
/// seconds and milliseconds (≈ 40 instructions instead of `humantime`'s ≈ 280). Any other
/// time goes to `humantime`, which also reads (and so vouches for) each new hour.
#[derive(Debug, Default)]
struct TimeReader {
    /// `YYYY-MM-DDTHH:` of the last time read in the mapper's form, and Unix ms at its start.
    hour: Option<([u8; 14], i64)>,
}

impl TimeReader {
    fn unix_ms(&mut self, text: &str) -> Option<i64> {
        let Some((hour, within)) = split_hour(text.as_bytes()) else {
            return parse_timestamp_ms(text);
        };
        match self.hour {
            Some((last, start)) if last == *hour => Some(start + within),
            _ => {
                let ms = parse_timestamp_ms(text)?;
                self.hour = Some((*hour, ms - within));
                Some(ms)
            }
        }
    }
}

/// `YYYY-MM-DDTHH:` and the milliseconds within the hour of a time in the mapper's form
/// (`…THH:MM:SS.mmmZ`, minutes and seconds below 60); `None` for any other text.
fn split_hour(bytes: &[u8]) -> Option<(&[u8; 14], i64)> {
    let (hour, rest) = bytes.split_first_chunk::<14>()?;
    let rest: &[u8; 10] = rest.try_into().ok()?; // MM:SS.mmmZ
    if hour[13] != b':' || rest[2] != b':' || rest[5] != b'.' || rest[9] != b'Z' {
        return None;
    }
    let digit = |i: usize| rest[i].checked_sub(b'0').filter(|d| *d < 10).map(i64::from);
    let minutes = digit(0)? * 10 + digit(1)?;
    let seconds = digit(3)? * 10 + digit(4)?;
    let millis = digit(6)? * 100 + digit(7)? * 10 + digit(8)?;
    (minutes < 60 && seconds < 60).then_some((hour, (minutes * 60 + seconds) * 1000 + millis))
}

/// Parses rows into cells, reusing its buffers from row to row.
#[derive(Default)]
struct RowReader {
    /// The keys of a row as the mapper writes them: `table`, then the columns in order.
    expected_keys: flat_row::ExpectedKeys,
    fields: flat_row::Fields,
    scratch: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    cells: Vec<Option<usize>>,
}

impl RowReader {
    /// Parse `item`'s row and append its values to `builders`: flat rows (what the mapper
    /// writes) with [`flat_row`], anything else with simd-json.
    fn append(
        &mut self,
        item: &BatchItem,
        columns: &[Column],
        builders: &mut Builders,
    ) -> Result<(), ParquetError> {
        let text = std::str::from_utf8(&item.payload).ok();
        let in_order =
            text.and_then(|row| flat_row::scan(row, &self.expected_keys, &mut self.fields));
        // Valid by construction (runs of a valid row cut at ASCII bytes, decoded escapes);
        // checked all the same, once per row, as there is no unchecked conversion outside
        // the WAL.
        let unescaped = std::str::from_utf8(&self.fields.unescaped).ok();
        let result = match (text, in_order, unescaped) {
            (Some(text), Some(in_order), Some(unescaped)) => {
                let row = FlatRow {
                    text,
                    unescaped,
                    fields: &self.fields,
                    expected_keys: &self.expected_keys,
                };
                row.append(in_order, columns, builders, &mut self.cells)
            }
            _ => self.append_parsed(&item.payload, columns, builders),
        };
        result.map_err(|reason| ParquetError::Row {
            event_id: item.event_id.to_string(),
            reason,
        })?;
        builders.rows += 1;
        Ok(())
    }

    /// Append a row the flat reader left: simd-json, or serde_json for the few numbers
    /// simd-json refuses.
    fn append_parsed(
        &mut self,
        payload: &[u8],
        columns: &[Column],
        builders: &mut Builders,
    ) -> Result<(), String> {
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        let len = self.scratch.len();
        self.scratch.resize(len + simd_json::INPUT_PADDING, 0);
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let parsed =
            simd_json::fill_tape_padded(&mut self.scratch, len, &mut self.buffers, &mut tape);
        let result = match parsed {
            Ok(()) => append_tape_row(&tape.0, columns, &mut self.cells, builders),
            Err(_) => append_serde_row(payload, columns, builders),
        };
        self.tape = Some(tape.reset());
        result
    }
}

/// A row [`flat_row::scan`] read: its text, the decoded text of its strings with escapes,
/// its fields and the keys they were scanned with.
struct FlatRow<'r> {
    text: &'r str,
    unescaped: &'r str,
    fields: &'r flat_row::Fields,
    expected_keys: &'r flat_row::ExpectedKeys,
}

impl FlatRow<'_> {
    /// Append the row's values to `builders`; `in_order`: its keys are `table` and then
    /// exactly the columns, in order.
    fn append(
        &self,
        in_order: bool,
        columns: &[Column],
        builders: &mut Builders,
        slots: &mut Vec<Option<usize>>,
    ) -> Result<(), String> {
        if in_order {
            return self.append_in_order(columns, builders);
        }
        let values = &self.fields.values;
        let keys = (0..values.len()).map(|i| self.fields.key(i, self.text, self.expected_keys));
        slot_columns(keys, columns, slots);
        for ((column, builder), slot) in columns.iter().zip(&mut builders.columns).zip(slots) {
            let cell = slot.map_or(Cell::Null, |i| self.cell(&values[i]));
            builder.append(column, cell)?;
        }
        Ok(())
    }

    /// [`Self::append`] of a row whose fields are `table` and then the columns in order (the
    /// mapper's rows): the common pairs of column and value go straight to their builder,
    /// without a detour through [`Cell`] (a third of the reader's instructions per row went
    /// to that dispatch); any other pair takes the general way.
    fn append_in_order(&self, columns: &[Column], builders: &mut Builders) -> Result<(), String> {
        use flat_row::Value;
        let values = self.fields.values.get(1..).unwrap_or_default();
        for ((column, builder), value) in columns.iter().zip(&mut builders.columns).zip(values) {
            match (&mut *builder, value) {
                (ColumnBuilder::Text(b), Value::Str(range)) => {
                    b.append_value(&self.text[range.clone()])
                }
                (ColumnBuilder::Text(b), Value::Unescaped(range)) => {
                    b.append_value(&self.unescaped[range.clone()])
                }
                (ColumnBuilder::Int(b), Value::Int(v)) => b.append_value(*v),
                (ColumnBuilder::Bool(b), Value::Bool(v)) => b.append_value(*v),
                (ColumnBuilder::Float(b), Value::Float(v)) => b.append_value(*v),
                (ColumnBuilder::Time(b, times), Value::Str(range)) => {
                    let text = &self.text[range.clone()];
                    let ms = times.unix_ms(text);
                    b.append_value(ms.ok_or_else(|| wrong_value(column, Cell::Str(text)))?)
                }
                (ColumnBuilder::Text(b), Value::Null) if column.nullable => b.append_null(),
                (ColumnBuilder::Int(b), Value::Null) if column.nullable => b.append_null(),
                (builder, Value::Null) if column.nullable => builder.append_null(),
                (builder, value) => builder.append(column, self.cell(value))?,
            }
        }
        Ok(())
    }

    fn cell(&self, value: &flat_row::Value) -> Cell<'_> {
        use flat_row::Value;
        match value {
            Value::Null => Cell::Null,
            Value::Str(range) => Cell::Str(&self.text[range.clone()]),
            Value::Unescaped(range) => Cell::Str(&self.unescaped[range.clone()]),
            Value::Int(v) => Cell::Int(*v),
            Value::Uint(v) => Cell::Uint(*v),
            Value::Float(v) => Cell::Float(*v),
            Value::Bool(v) => Cell::Bool(*v),
        }
    }
}

/// `slots[c]` = the position of column `c`'s key among `keys` (the last one if repeated), or
/// `None`. The fast path: the mapper writes `table` and then every column in order.
fn slot_columns<'k>(
    keys: impl Iterator<Item = &'k str>,
    columns: &[Column],
    slots: &mut Vec<Option<usize>>,
) {
    slots.clear();
    slots.resize(columns.len(), None);
    for (position, key) in keys.enumerate() {
        let expected = position.checked_sub(1).filter(|&i| i < columns.len());
        let column = match expected {
            Some(i) if columns[i].name == key => Some(i),
            _ => columns.iter().position(|c| c.name == key),
        };
        if let Some(column) = column {
            slots[column] = Some(position);
        }
    }
}

/// Append the row on `nodes` (a tape whose root is the row object).
fn append_tape_row(
    nodes: &[Node<'_>],
    columns: &[Column],
    slots: &mut Vec<Option<usize>>,
    builders: &mut Builders,
) -> Result<(), String> {
    let Some(Node::Object { len, .. }) = nodes.first() else {
        return Err("the row is not a JSON object".into());
    };
    // (key, index of its value node); the slow path, so allocating is fine.
    let mut fields = Vec::with_capacity(*len);
    let mut idx = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = nodes.get(idx) else {
            return Err("malformed row".into());
        };
        fields.push((*key, idx + 1));
        idx += 1 + span(nodes, idx + 1);
    }
    slot_columns(fields.iter().map(|(key, _)| *key), columns, slots);
    for ((column, builder), slot) in columns.iter().zip(&mut builders.columns).zip(slots.iter()) {
        let cell = slot.map_or(Cell::Null, |p| tape_cell(&nodes[fields[p].1]));
        builder.append(column, cell)?;
    }
    Ok(())
}

fn span(nodes: &[Node<'_>], idx: usize) -> usize {
    match nodes.get(idx) {
        Some(Node::Object { count, .. }) | Some(Node::Array { count, .. }) => count + 1,
        _ => 1,
    }
}

fn tape_cell<'a>(node: &Node<'a>) -> Cell<'a> {
    match node {
        Node::String(text) => Cell::Str(text),
        Node::Static(StaticNode::Null) => Cell::Null,
        Node::Static(StaticNode::Bool(v)) => Cell::Bool(*v),
        Node::Static(StaticNode::I64(v)) => Cell::Int(*v),
        Node::Static(StaticNode::U64(v)) => Cell::Uint(*v),
        Node::Static(StaticNode::F64(v)) => Cell::Float(*v),
        Node::Object { .. } | Node::Array { .. } => Cell::Nested,
    }
}

/// The slow path for rows simd-json refused: serde_json, columns by name.
fn append_serde_row(
    payload: &[u8],
    columns: &[Column],
    builders: &mut Builders,
) -> Result<(), String> {
    let row: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payload).map_err(|err| format!("the row is not JSON: {err}"))?;
    for (column, builder) in columns.iter().zip(&mut builders.columns) {
        let cell = match row.get(column.name) {
            None | Some(serde_json::Value::Null) => Cell::Null,
            Some(serde_json::Value::String(text)) => Cell::Str(text),
            Some(serde_json::Value::Bool(v)) => Cell::Bool(*v),
            Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(v), _, _) => Cell::Int(v),
                (_, Some(v), _) => Cell::Uint(v),
                (_, _, Some(v)) => Cell::Float(v),
                _ => Cell::Nested,
            },
            Some(_) => Cell::Nested,
        };
        builder.append(column, cell)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
