//! Object formats: how a run of batch items becomes one object's bytes.
//!
//! | `format=` | bytes | `Content-Type` | `Content-Encoding` |
//! |---|---|---|---|
//! | `ndjson` (default) | one mapped event per line, `\n`-terminated | `application/x-ndjson` | — |
//! | `ndjson.gz` | the same, gzip (one member; `gzip_level`, default 1) | `application/x-ndjson` | `gzip` |
//! | `ndjson.zst` | the same, Zstandard (one frame with a checksum; `zstd_level`, default 1) | `application/x-ndjson` | `zstd` |
//! | `csv` | RFC 4180 CSV, optional header row, one row per event | `text/csv` | — |
//! | `parquet` | typed `schema=warehouse` tables, one object per table ([`super::parquet`]) | `application/vnd.apache.parquet` | — |
//!
//! CSV columns are values of the mapped payload picked by JSON pointer (`csv_columns`): each
//! entry is `name` (the top-level field `name`) or `header:/json/pointer`. Strings are written
//! as they are, numbers and booleans as JSON text, objects and arrays as compact JSON, null and
//! missing fields as an empty cell. The default column set is go-feature-flag's CSV exporter's
//! (`kind, contextKind, userKey, creationDate, key, variation, value, default, source`),
//! which matches `schema=gofeatureflag` payloads; unlike go-feature-flag we write a header row
//! (`csv_header=false` to drop it) and `,` (`csv_delimiter=;` for go-feature-flag's).

use std::io::{BufWriter, Write};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::super::BatchItem;
use super::parquet::{self, ParquetError, ParquetSettings, Table};
use super::BodyPool;

/// go-feature-flag's default CSV column set (its template
/// `{{ .Kind}};{{ .ContextKind}};{{ .UserKey}};{{ .CreationDate}};{{ .Key}};{{ .Variation}};{{ .Value}};{{ .Default}};{{ .Source}}`).
pub const GOFF_CSV_COLUMNS: &str =
    "kind,contextKind,userKey,creationDate,key,variation,value,default,source";

/// Default `gzip_level`: the fastest. zlib-rs' level 1 (zlib-ng's `deflate_quick`) compresses
/// the warehouse rows about as well as level 6 does at a fraction of the CPU (measured in
/// `docs/performance.md`).
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// Bytes of NDJSON handed to a compressor (gzip, zstd) at once.
const COMPRESS_CHUNK_BYTES: usize = 256 * 1024;
/// Default `zstd_level`: zstd's fastest regular level. On the warehouse rows it makes objects
/// 3.5× smaller than gzip level 1 for about a quarter less CPU (`docs/performance.md`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// The `format` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    Ndjson,
    NdjsonGz,
    NdjsonZst,
    Csv,
    Parquet,
}

impl std::str::FromStr for FormatKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "ndjson" => Ok(FormatKind::Ndjson),
            "ndjson.gz" => Ok(FormatKind::NdjsonGz),
            "ndjson.zst" => Ok(FormatKind::NdjsonZst),
            "csv" => Ok(FormatKind::Csv),
            "parquet" => Ok(FormatKind::Parquet),
            other => Err(format!(
                "unknown format `{other}` (use ndjson, ndjson.gz, ndjson.zst, csv or parquet)"
            )),
        }
    }
}

/// One CSV column: its header and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumn {
    pub header: String,
    pub pointer: String,
}

/// Parse `csv_columns` (`name` or `header:/json/pointer`, comma-separated).
pub fn parse_csv_columns(text: &str) -> Result<Vec<CsvColumn>, String> {
    let mut columns = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let column = match entry.split_once(':') {
            Some((header, pointer)) if pointer.starts_with('/') && !header.is_empty() => {
                CsvColumn {
                    header: header.to_string(),
                    pointer: pointer.to_string(),
                }
            }
            None if !entry.is_empty() => CsvColumn {
                header: entry.to_string(),
                pointer: format!("/{}", entry.replace('~', "~0").replace('/', "~1")),
            },
            _ => {
                return Err(format!(
                    "`{entry}` in `csv_columns` is not `name` or `header:/json/pointer`"
                ))
            }
        };
        columns.push(column);
    }
    Ok(columns)
}

/// A validated format with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    /// gzip at `level` (1 fastest … 9 smallest).
    NdjsonGz {
        level: u32,
    },
    /// Zstandard at `level` (1 fastest … 19 smallest).
    NdjsonZst {
        level: i32,
    },
    Csv {
        columns: Vec<CsvColumn>,
        header: bool,
        delimiter: u8,
    },
    Parquet(ParquetSettings),
}

/// Why an object's bytes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// A Parquet object was asked for without its warehouse table.
    #[error("no warehouse table given for a Parquet object")]
    NoTable,
}

impl Format {
    /// File-name extension (`{ext}`).
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::NdjsonGz { .. } => "ndjson.gz",
            Format::NdjsonZst { .. } => "ndjson.zst",
            Format::Csv { .. } => "csv",
            Format::Parquet(_) => "parquet",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Ndjson | Format::NdjsonGz { .. } | Format::NdjsonZst { .. } => {
                "application/x-ndjson"
            }
            Format::Csv { .. } => "text/csv; charset=utf-8",
            // IANA-registered in 2024.
            Format::Parquet(_) => "application/vnd.apache.parquet",
        }
    }

    pub fn content_encoding(&self) -> Option<&'static str> {
        match self {
            Format::NdjsonGz { .. } => Some("gzip"),
            // RFC 8878's content coding.
            Format::NdjsonZst { .. } => Some("zstd"),
            Format::Ndjson | Format::Csv { .. } | Format::Parquet(_) => None,
        }
    }

    /// Whether objects are split by warehouse table (one schema per file).
    pub fn splits_tables(&self) -> bool {
        matches!(self, Format::Parquet(_))
    }

    /// Encode `items` (the payloads of one object, all rows of `table` when
    /// [`Self::splits_tables`]) into the object's bytes; `ndjson`, as big as its items, is
    /// built in a buffer from `bodies`.
    pub fn encode<'a>(
        &self,
        table: Option<Table>,
        items: impl Iterator<Item = &'a BatchItem>,
        size_hint: usize,
        bodies: &BodyPool,
    ) -> Result<Bytes, EncodeError> {
        match self {
            Format::Ndjson => {
                let (mut out, pad) = bodies.take_aligned(size_hint);
                write_ndjson(&mut out, items)?;
                Ok(Bytes::from(out).slice(pad..))
            }
            Format::NdjsonGz { level } => {
                let gz =
                    GzEncoder::new(Vec::with_capacity(size_hint / 8), Compression::new(*level));
                Ok(compress_ndjson(gz, items)?.finish()?.into())
            }
            Format::NdjsonZst { level } => Ok(encode_zstd(items, *level, size_hint)?),
            Format::Csv {
                columns,
                header,
                delimiter,
            } => Ok(encode_csv(items, columns, *header, *delimiter, size_hint)?),
            Format::Parquet(settings) => {
                let table = table.ok_or(EncodeError::NoTable)?;
                Ok(parquet::encode(table, items, settings, size_hint)?)
            }
        }
    }
}

/// One Zstandard frame with a checksum (a reader tells a damaged object from a short one).
fn encode_zstd<'a>(
    items: impl Iterator<Item = &'a BatchItem>,
    level: i32,
    size_hint: usize,
) -> std::io::Result<Bytes> {
    let mut zst = zstd::stream::write::Encoder::new(Vec::with_capacity(size_hint / 8), level)?;
    zst.include_checksum(true)?;
    Ok(compress_ndjson(zst, items)?.finish()?.into())
}

/// Write the NDJSON of `items` through `compressor`, in large chunks: a compressor call per
/// line (and per newline) costs more than compressing it.
fn compress_ndjson<'a, W: Write>(
    compressor: W,
    items: impl Iterator<Item = &'a BatchItem>,
) -> std::io::Result<W> {
    let mut chunks = BufWriter::with_capacity(COMPRESS_CHUNK_BYTES, compressor);
    write_ndjson(&mut chunks, items)?;
    chunks.into_inner().map_err(|err| err.into_error())
}

fn write_ndjson<'a>(
    out: &mut impl Write,
    items: impl Iterator<Item = &'a BatchItem>,
) -> std::io::Result<()> {
    for item in items {
        out.write_all(&item.payload)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn encode_csv<'a>(
    items: impl Iterator<Item = &'a BatchItem>,
    columns: &[CsvColumn],
    header: bool,
    delimiter: u8,
    size_hint: usize,
) -> std::io::Result<Bytes> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(Vec::with_capacity(size_hint));
    if header {
        writer.write_record(columns.iter().map(|c| c.header.as_str()))?;
    }
    let mut cells: Vec<String> = Vec::with_capacity(columns.len());
    for item in items {
        let document: serde_json::Value =
            serde_json::from_slice(&item.payload).unwrap_or(serde_json::Value::Null);
        cells.clear();
        cells.extend(columns.iter().map(|c| cell(document.pointer(&c.pointer))));
        writer.write_record(&cells)?;
    }
    writer
        .into_inner()
        .map(Bytes::from)
        .map_err(|err| err.into_error())
}

fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}
