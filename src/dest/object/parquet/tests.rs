use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::Array;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Encoding, LogicalType, Repetition, TimeUnit as ParquetTimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use serde_json::Value;

use super::*;

/// Every warehouse row of the golden expectations (real SDK payloads, all three tables).
fn golden_rows() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/expected");
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".warehouse.") {
            let text = std::fs::read_to_string(&path).unwrap();
            rows.extend(text.lines().map(str::to_string));
        }
    }
    rows
}

fn item(row: &str) -> BatchItem {
    let event_id = serde_json::from_str::<Value>(row).unwrap()["event_id"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    BatchItem {
        event_id: event_id.into(),
        ..BatchItem::with_payload(Bytes::copy_from_slice(row.as_bytes()))
    }
}

fn table(name: &str) -> Table {
    warehouse::TABLES
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap()
}

fn write(name: &str, rows: &[String], settings: &ParquetSettings) -> Bytes {
    let items: Vec<BatchItem> = rows.iter().map(|r| item(r)).collect();
    encode(table(name), items.iter(), settings, 0).unwrap()
}

fn rows_of(rows: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{{\"table\":\"{name}\"");
    rows.iter()
        .filter(|r| r.starts_with(&prefix))
        .cloned()
        .collect()
}

/// The file read back: its metadata (with the page index) and every row as JSON values in
/// the warehouse's own JSON conventions (timestamps as RFC 3339 text).
fn read_back(file: &Bytes) -> (Arc<ParquetMetaData>, Vec<serde_json::Map<String, Value>>) {
    let options = ArrowReaderOptions::new().with_page_index(true);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new_with_options(file.clone(), options).unwrap();
    let metadata = builder.metadata().clone();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        for r in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
                row.insert(field.name().clone(), json_of(array, r));
            }
            rows.push(row);
        }
    }
    (metadata, rows)
}

fn json_of(array: &ArrayRef, r: usize) -> Value {
    if array.is_null(r) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(r)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(r)),
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(r)),
        DataType::Boolean => Value::from(array.as_boolean().value(r)),
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(r);
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            Value::from(humantime::format_rfc3339_millis(time).to_string())
        }
        other => panic!("unexpected column type {other:?}"),
    }
}

#[test]
fn every_golden_row_reads_back_with_the_same_values_in_every_table() {
    let rows = golden_rows();
    for (name, columns) in warehouse::TABLES {
        let expected = rows_of(&rows, name);
        assert!(expected.len() >= 3, "golden rows of {name}");
        let (_, actual) = read_back(&write(name, &expected, &ParquetSettings::default()));
        assert_eq!(actual.len(), expected.len(), "{name}");
        for (row, text) in actual.iter().zip(&expected) {
            let mut want: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
            want.remove("table");
            assert_eq!(want.len(), columns.len());
            for (column, value) in &want {
                let got = &row[column];
                let same = match (value, got) {
                    (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                    (a, b) => a == b,
                };
                assert!(same, "{name}.{column}: {value} became {got} in {text}");
            }
        }
    }
}

#[test]
fn columns_have_the_documented_parquet_types() {
    let rows = golden_rows();
    let file = write(
        "evaluation_events",
        &rows_of(&rows, "evaluation_events"),
        &ParquetSettings::default(),
    );
    let (metadata, _) = read_back(&file);
    let schema = metadata.file_metadata().schema_descr();
    for (i, column) in EVALUATION.iter().enumerate() {
        let descr = schema.column(i);
        assert_eq!(descr.name(), column.name);
        let repetition = descr.self_type().get_basic_info().repetition();
        let expected = if column.nullable {
            Repetition::OPTIONAL
        } else {
            Repetition::REQUIRED
        };
        assert_eq!(repetition, expected, "{}", column.name);
        let logical = descr.logical_type_ref();
        match column.ty {
            ColumnType::String | ColumnType::Json => {
                assert_eq!(logical, Some(&LogicalType::String), "{}", column.name)
            }
            ColumnType::Timestamp => assert!(
                matches!(
                    logical,
                    Some(&LogicalType::Timestamp {
                        is_adjusted_to_u_t_c: true,
                        unit: ParquetTimeUnit::MILLIS
                    })
                ),
                "{}: {logical:?}",
                column.name
            ),
            _ => assert_eq!(logical, None, "{}", column.name),
        }
    }
    let chunk = metadata.row_group(0);
    assert_eq!(chunk.column(0).compression(), Compression::SNAPPY);
}

const EVALUATION: &[Column] = warehouse::EVALUATION_COLUMNS;

/// go-feature-flag's Athena bug (§6): a page index whose page locations did not tile the
/// column chunk. Ours must: pages back to back, the last ending where the chunk ends, one
/// column-index entry per page; and the filter columns keep dictionaries and min/max.
#[test]
fn page_index_tiles_every_column_chunk_and_filter_columns_have_dictionaries_and_stats() {
    let rows: Vec<String> = (0..5000)
        .map(|i| {
            format!(
                r#"{{"table":"metric_events","event_id":"e{i}","project":"p","environment":"prod","kind":"custom","metric_key":"k{}","context_kind":"user","context_key":"user-{}","context_anonymous":false,"metric_value":{i}.5,"data":null,"url":null,"selector":null,"creation_date":{},"timestamp":"2024-05-29T16:26:40.001Z","received_at":1717000000000}}"#,
                i % 7,
                i % 300,
                1_717_000_000_000u64 + i
            )
        })
        .collect();
    let settings = ParquetSettings {
        compression: ParquetCompression::Zstd,
        row_group_rows: 2000,
    };
    let file = write("metric_events", &rows, &settings);
    let (metadata, read) = read_back(&file);
    assert_eq!(read.len(), 5000);
    assert_eq!(
        metadata.num_row_groups(),
        3,
        "row groups of at most 2000 rows"
    );
    let offsets = metadata.offset_index().expect("an offset index");
    let indexes = metadata.column_index().expect("a column index");
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            assert_eq!(chunk.compression(), Compression::ZSTD(ZstdLevel::default()));
            let pages = offsets[g][c].page_locations();
            let (start, len) = chunk.byte_range();
            assert!(pages[0].offset as u64 >= start);
            for pair in pages.windows(2) {
                assert_eq!(
                    pair[0].offset + pair[0].compressed_page_size as i64,
                    pair[1].offset
                );
            }
            let last = pages.last().unwrap();
            assert_eq!(
                (last.offset + last.compressed_page_size as i64) as u64,
                start + len
            );
            let name = chunk.column_descr().name();
            // Columns without statistics (the event id, JSON text, details every page spans)
            // have no column index.
            if ["event_id", "data", "context_kind", "url", "selector"].contains(&name) {
                assert!(matches!(indexes[g][c], ColumnIndexMetaData::NONE), "{name}");
                assert!(chunk.statistics().is_none(), "{name}");
            } else {
                assert_eq!(indexes[g][c].num_pages() as usize, pages.len(), "{name}");
            }
            if ["metric_key", "context_key", "kind"].contains(&name) {
                assert!(
                    chunk.encodings().any(|e| e == Encoding::RLE_DICTIONARY),
                    "{name}"
                );
                let stats = chunk.statistics().expect("statistics");
                assert!(stats.min_bytes_opt().is_some() && stats.max_bytes_opt().is_some());
            }
        }
    }
}

/// The flat-row reader (compact rows, the mapper's) and the general parser (any other JSON:
/// here the same rows pretty-printed) write the same file, escapes and all.
#[test]
fn flat_rows_and_reformatted_rows_write_identical_files() {
    let rows = golden_rows();
    for (name, _) in warehouse::TABLES {
        let compact = rows_of(&rows, name);
        let pretty: Vec<String> = compact
            .iter()
            .map(|row| {
                let value: Value = serde_json::from_str(row).unwrap();
                serde_json::to_string_pretty(&value).unwrap()
            })
            .collect();
        assert!(
            compact.iter().any(|row| row.contains('\\')),
            "escapes in {name}"
        );
        let keys = flat_row::ExpectedKeys::new(["table"]);
        let mut fields = flat_row::Fields::default();
        assert!(compact
            .iter()
            .all(|row| flat_row::scan(row, &keys, &mut fields).is_some()));
        assert!(pretty
            .iter()
            .all(|row| flat_row::scan(row, &keys, &mut fields).is_none()));
        let settings = ParquetSettings::default();
        assert_eq!(
            write(name, &compact, &settings),
            write(name, &pretty, &settings),
            "{name}"
        );
    }
}

#[test]
fn rows_are_matched_by_name_when_reordered_or_partial() {
    let row = r#"{"table":"summary_counters","count":2,"flag_key":"f","event_id":"e1","project":"p","environment":"prod","counter_index":0,"unknown_flag":false,"extra":[1]}"#;
    let (_, read) = read_back(&write(
        "summary_counters",
        &[row.to_string()],
        &ParquetSettings::default(),
    ));
    assert_eq!(read[0]["count"], 2);
    assert_eq!(read[0]["flag_key"], "f");
    assert_eq!(read[0]["variation_index"], Value::Null);
}

#[test]
fn bad_rows_fail_naming_the_event_and_column() {
    let null_key = r#"{"table":"summary_counters","event_id":"e9","project":"p","environment":"prod","flag_key":null,"counter_index":0,"unknown_flag":false,"count":1}"#;
    let wrong_type = r#"{"table":"summary_counters","event_id":"e8","project":"p","environment":"prod","flag_key":"f","counter_index":"zero","unknown_flag":false,"count":1}"#;
    for (row, needles) in [
        (null_key, ["e9", "flag_key"]),
        (wrong_type, ["e8", "counter_index"]),
    ] {
        let items = [item(row)];
        let err = encode(
            table("summary_counters"),
            items.iter(),
            &ParquetSettings::default(),
            0,
        )
        .unwrap_err()
        .to_string();
        for needle in needles {
            assert!(err.contains(needle), "{err}");
        }
    }
}

#[test]
fn numbers_simd_json_refuses_take_the_serde_path() {
    let mut builders = Builders::new(warehouse::METRIC_COLUMNS);
    let row = rows_of(&golden_rows(), "metric_events").remove(0);
    append_serde_row(row.as_bytes(), warehouse::METRIC_COLUMNS, &mut builders).unwrap();
    builders.rows += 1;
    let schema = Arc::new(arrow_schema(warehouse::METRIC_COLUMNS));
    assert_eq!(builders.finish(&schema).unwrap().num_rows(), 1);
}

#[test]
fn table_of_reads_the_table_field_first_in_place_else_anywhere() {
    assert_eq!(
        table_of(br#"{"table":"metric_events","x":1}"#).unwrap().0,
        "metric_events"
    );
    assert_eq!(
        table_of(br#"{"x":1,"table":"summary_counters"}"#)
            .unwrap()
            .0,
        "summary_counters"
    );
    assert!(table_of(br#"{"table":"metric_events_2"}"#).is_none());
    assert!(table_of(br#"{"kind":"feature"}"#).is_none());
}

/// The hour-remembering reader gives what `humantime` gives, whatever the order of hours, and
/// leaves every other form (no fraction, a leap second, an offset, garbage) to it.
#[test]
fn times_read_with_the_remembered_hour_equal_humantime() {
    let mut times = TimeReader::default();
    for text in [
        "2026-11-21T13:23:02.896Z",
        "2026-11-21T13:59:59.999Z",
        "2026-11-21T13:00:00.000Z",
        "2026-11-21T14:00:00.000Z",
        "2026-11-21T13:23:02.896Z",
        "2026-11-21T13:23:02Z",
        "2016-12-31T23:59:60.500Z",
        "2026-11-21T13:23:02.896+01:00",
        "2026-11-21T13:6x:02.896Z",
        "2026-11-21T13:61:02.896Z",
        "2026-02-30T13:23:02.896Z",
        "2026-02-30T13:23:03.896Z",
        "",
    ] {
        assert_eq!(times.unix_ms(text), parse_timestamp_ms(text), "{text}");
    }
}

/// Strings whose escapes end in backslashes next to quotes end where JSON says they do, and
/// decode to their text.
#[test]
fn escaped_strings_end_at_the_first_unescaped_quote() {
    for (text, contents) in [
        (r#""a\\""#, r"a\"),
        (r#""a\"""#, r#"a""#),
        (r#""\\\"b""#, r#"\"b"#),
        (
            r#""{\"key\":\"user-0\",\"kind\":\"user\",\"name\":\"U0\"}""#,
            r#"{"key":"user-0","kind":"user","name":"U0"}"#,
        ),
    ] {
        let row = format!(r#"{{"table":{text},"n":1}}"#);
        let mut fields = flat_row::Fields::default();
        let keys = flat_row::ExpectedKeys::new(["table", "n"]);
        flat_row::scan(&row, &keys, &mut fields).unwrap();
        let flat_row::Value::Unescaped(range) = fields.values[0].clone() else {
            panic!("{row}: {:?}", fields.values[0])
        };
        assert_eq!(&fields.unescaped[range], contents.as_bytes());
        assert_eq!(fields.values[1], flat_row::Value::Int(1), "{row}");
    }
}
