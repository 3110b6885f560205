//! The object writer shared by every object store (`file`, `s3`, later `gs`): a batch becomes
//! one object per partition, with a key derived from the batch id, in one of the
//! [`format`]s, laid out by [`layout`].
//!
//! A store (a directory, a bucket) only has to [`ObjectStore::put`] whole objects; everything
//! about keys, partitions, formats and exactly-once lives here, once.
//!
//! ## Options (every object destination)
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `rotate` | longest time events wait before their object is written (the batch linger) | `file`: `5s`; buckets: `60s` |
//! | `max_bytes` | largest batch of mapped events per object (before compression) | `file`: `8MiB`; buckets: `64MiB` |
//! | `format` | `ndjson`, `ndjson.gz`, `ndjson.zst`, `csv`, `parquet` ([`format`]; `parquet` needs `schema=warehouse`, see [`parquet`]) | `ndjson` |
//! | `partitions` | Hive partitions in path order: `dt`, `hour`, `environment`, `kind` (comma-separated), or `none` | `file`: `none`; buckets: `dt,hour` |
//! | `partition_time` | `received` (when flagstream accepted the event) or `event` (the event's creation time) | `received` |
//! | `file_name` | file name template; must contain `{batch_id}`, may contain `{ext}` | `{batch_id}.{ext}` |
//! | `csv_columns` | CSV columns: `name` or `header:/json/pointer`, comma-separated | go-feature-flag's set |
//! | `csv_header` | write a header row | `true` |
//! | `csv_delimiter` | one ASCII character | `,` |
//! | `parquet_compression` | `snappy`, `zstd` or `none` | `snappy` |
//! | `parquet_row_group_rows` | most rows per Parquet row group | `122880` |
//! | `gzip_level` | `ndjson.gz` compression level, 1 (fastest) to 9 (smallest) | `1` |
//! | `zstd_level` | `ndjson.zst` compression level, 1 (fastest) to 19 (smallest) | `1` |
//!
//! With `format=parquet` the table name is a directory before the partitions
//! (`<prefix>/<table>/dt=…/hour=…/<batch id>.parquet`): one object per (table, partition).
//!
//! ## Exactly once by construction
//!
//! Keys are a pure function of the batch id and the items' partition values ([`layout`]), and
//! a store's `put` replaces an object whole. If any object of a batch fails, the whole batch
//! is reported failed (never partial): the engine re-sends the same batch (same id, same
//! items), which rewrites the objects that did land with identical bytes. So a bucket or
//! directory never holds an event twice, whatever crashes or retries happen.

mod body_pool;
pub mod format;
pub mod layout;
pub mod parquet;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;

pub use body_pool::{BodyPool, BODY_ALIGN};
pub use format::{CsvColumn, EncodeError, Format, FormatKind, GOFF_CSV_COLUMNS};
pub use layout::{Layout, Partition, PartitionTime, Partitions, MAX_KEY_BYTES};
pub use parquet::{ParquetCompression, ParquetSettings};

use super::options::{HumanDuration, Parsed, Size};
use super::{Batch, BatchLimits, DestError, Destination, Failure, SendOutcome};
use crate::event::Schema;
use parquet::Table;

/// Most events per object.
pub const MAX_EVENTS_PER_OBJECT: usize = 1_000_000;

/// Default longest wait before a bucket object (S3, GCS) is written: one upload per minute per
/// partition at low traffic keeps request costs and small-file counts down.
pub const BUCKET_ROTATE: Duration = Duration::from_secs(60);
/// Default largest batch per bucket object.
pub const BUCKET_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default partitions of bucket keys: what Athena, BigQuery external tables and Spark prune by.
pub const BUCKET_PARTITIONS: [Partition; 2] = [Partition::Date, Partition::Hour];

impl ObjectOptions {
    /// A bucket store's batch limits and object writer, with the bucket defaults.
    pub fn for_bucket(
        self,
        prefix: &str,
        schema: Schema,
    ) -> Result<(BatchLimits, ObjectWriter), String> {
        let limits = self.limits(BUCKET_ROTATE, BUCKET_MAX_BYTES)?;
        let writer = self.writer(prefix, &BUCKET_PARTITIONS, schema)?;
        Ok((limits, writer))
    }

    /// The batch limits: `rotate` (else `default_rotate`) as the linger, `max_bytes` (else
    /// `default_max_bytes`, at least 1 KiB) as the byte limit.
    pub fn limits(
        &self,
        default_rotate: Duration,
        default_max_bytes: usize,
    ) -> Result<BatchLimits, String> {
        let rotate = self.rotate.map_or(default_rotate, |HumanDuration(d)| d);
        if rotate.is_zero() {
            return Err("option `rotate` must be longer than 0s".into());
        }
        let max_bytes = self.max_bytes.map_or(default_max_bytes, |Size(s)| s);
        if max_bytes < 1024 {
            return Err("option `max_bytes` must be at least 1KiB".into());
        }
        Ok(object_limits(rotate, max_bytes))
    }
}

/// Batch limits of an object store: one object per batch of up to `max_bytes`.
pub fn object_limits(rotate: Duration, max_bytes: usize) -> BatchLimits {
    BatchLimits {
        max_items: MAX_EVENTS_PER_OBJECT,
        max_bytes,
        max_item_bytes: max_bytes,
        per_item_overhead: 1, // the newline
        linger: rotate,
    }
}

/// The object options shared by object destinations (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectOptions {
    pub rotate: Option<HumanDuration>,
    pub max_bytes: Option<Size>,
    pub format: Option<Parsed<FormatKind>>,
    pub partitions: Option<Parsed<Partitions>>,
    pub partition_time: Option<PartitionTime>,
    pub file_name: Option<String>,
    pub csv_columns: Option<String>,
    pub csv_header: Option<bool>,
    pub csv_delimiter: Option<String>,
    pub parquet_compression: Option<Parsed<ParquetCompression>>,
    pub parquet_row_group_rows: Option<usize>,
    pub gzip_level: Option<u32>,
    pub zstd_level: Option<i32>,
}

impl ObjectOptions {
    /// Validate the options into a writer for keys under `prefix`, with `default_partitions`
    /// when `partitions` is not given.
    pub fn writer(
        self,
        prefix: &str,
        default_partitions: &[Partition],
        schema: Schema,
    ) -> Result<ObjectWriter, String> {
        let kind = self.format.map_or(FormatKind::Ndjson, |Parsed(f)| f);
        if kind != FormatKind::Csv
            && (self.csv_columns.is_some()
                || self.csv_header.is_some()
                || self.csv_delimiter.is_some())
        {
            return Err("options `csv_*` need `format=csv`".into());
        }
        if kind != FormatKind::NdjsonGz && self.gzip_level.is_some() {
            return Err("option `gzip_level` needs `format=ndjson.gz`".into());
        }
        if kind != FormatKind::NdjsonZst && self.zstd_level.is_some() {
            return Err("option `zstd_level` needs `format=ndjson.zst`".into());
        }
        let format = match kind {
            FormatKind::Parquet => Format::Parquet(self.parquet_settings(schema)?),
            _ if self.parquet_compression.is_some() || self.parquet_row_group_rows.is_some() => {
                return Err("options `parquet_*` need `format=parquet`".into())
            }
            FormatKind::Ndjson => Format::Ndjson,
            FormatKind::NdjsonGz => Format::NdjsonGz {
                level: GZIP_LEVELS.pick(self.gzip_level)?,
            },
            FormatKind::NdjsonZst => Format::NdjsonZst {
                level: ZSTD_LEVELS.pick(self.zstd_level)?,
            },
            FormatKind::Csv => Format::Csv {
                columns: format::parse_csv_columns(
                    self.csv_columns.as_deref().unwrap_or(GOFF_CSV_COLUMNS),
                )?,
                header: self.csv_header.unwrap_or(true),
                delimiter: csv_delimiter(self.csv_delimiter.as_deref())?,
            },
        };
        let file_name = self
            .file_name
            .unwrap_or_else(|| layout::DEFAULT_FILE_NAME.to_string());
        Layout::check_file_name(&file_name)?;
        let layout = Layout {
            prefix: prefix.trim_matches('/').to_string(),
            partitions: self
                .partitions
                .map_or_else(|| default_partitions.to_vec(), |Parsed(p)| p.0),
            time: self.partition_time.unwrap_or_default(),
            file_name,
        };
        Ok(ObjectWriter {
            layout,
            format,
            schema,
        })
    }
}

impl ObjectOptions {
    /// The Parquet settings; Parquet writes the typed warehouse tables only.
    fn parquet_settings(&self, schema: Schema) -> Result<ParquetSettings, String> {
        if schema != Schema::Warehouse {
            return Err(format!(
                "`format=parquet` writes the typed tables of `schema=warehouse` (got `schema={schema}`): add `schema=warehouse`"
            ));
        }
        let row_group_rows = self
            .parquet_row_group_rows
            .unwrap_or(parquet::DEFAULT_ROW_GROUP_ROWS);
        if row_group_rows == 0 {
            return Err("option `parquet_row_group_rows` must be at least 1".into());
        }
        Ok(ParquetSettings {
            compression: self
                .parquet_compression
                .map(|Parsed(c)| c)
                .unwrap_or_default(),
            row_group_rows,
        })
    }
}

/// A compression level option: its name, its default and its levels, fastest first.
struct Levels<T> {
    option: &'static str,
    default: T,
    levels: std::ops::RangeInclusive<T>,
}

const GZIP_LEVELS: Levels<u32> = Levels {
    option: "gzip_level",
    default: format::DEFAULT_GZIP_LEVEL,
    levels: 1..=9,
};

/// zstd's regular levels; its negative "fast" levels and 20–22 ("ultra", with windows a
/// reader must be told to accept) are left out.
const ZSTD_LEVELS: Levels<i32> = Levels {
    option: "zstd_level",
    default: format::DEFAULT_ZSTD_LEVEL,
    levels: 1..=19,
};

impl<T: Copy + PartialOrd + std::fmt::Display> Levels<T> {
    /// The default when unset, else `level` if it is one of the levels.
    fn pick(&self, level: Option<T>) -> Result<T, String> {
        match level.unwrap_or(self.default) {
            level if self.levels.contains(&level) => Ok(level),
            other => Err(format!(
                "option `{}` must be {} (fastest) to {} (smallest) (got {other})",
                self.option,
                self.levels.start(),
                self.levels.end()
            )),
        }
    }
}

fn csv_delimiter(text: Option<&str>) -> Result<u8, String> {
    match text {
        None => Ok(b','),
        Some(text) if text.len() == 1 && text.is_ascii() && text != "\"" && text != "\n" => {
            Ok(text.as_bytes()[0])
        }
        Some(text) => Err(format!(
            "option `csv_delimiter` must be one ASCII character other than `\"` (got `{text}`)"
        )),
    }
}

/// One object to store: its key, bytes, HTTP metadata, and which batch items it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedObject {
    pub key: String,
    pub body: Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
    /// Indices of the batch items in this object.
    pub items: Vec<usize>,
}

/// A place objects go: a directory or a bucket.
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// The destination type (`file`, `s3`).
    const KIND: &'static str;

    /// Store `object` under its key, replacing any object with that key whole (readers see the
    /// old or the new object, never a mix). Failures name the key.
    fn put<'a>(&'a self, object: &'a EncodedObject) -> BoxFuture<'a, Result<(), Failure>>;

    /// Probe the store (directory writable, bucket exists) for destination `name`.
    fn check<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), DestError>>;
}

/// A destination writing batches as objects into store `S`: what `file` and `s3` are.
#[derive(Debug)]
pub struct ObjectDestination<S> {
    pub name: String,
    pub store: S,
    pub writer: ObjectWriter,
    pub limits: BatchLimits,
    /// Buffers of bodies already put, for the next objects (`body_pool.rs`).
    pub bodies: BodyPool,
}

impl<S: ObjectStore> Destination for ObjectDestination<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        S::KIND
    }

    fn schema(&self) -> Schema {
        self.writer.schema
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.writer.write(&self.store, batch, &self.bodies))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        self.store.check(&self.name)
    }
}

/// Turns batches into objects (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectWriter {
    pub layout: Layout,
    pub format: Format,
    pub schema: Schema,
}

impl ObjectWriter {
    /// The objects of `batch`: one per partition (per table and partition for Parquet), in
    /// first-seen order.
    pub fn encode(&self, batch: &Batch) -> Result<Vec<EncodedObject>, Failure> {
        self.encode_with(batch, &BodyPool::default())
    }

    /// [`Self::encode`], building bodies in buffers from `bodies` where the format allows.
    fn encode_with(&self, batch: &Batch, bodies: &BodyPool) -> Result<Vec<EncodedObject>, Failure> {
        let ext = self.format.extension();
        let mut objects = Vec::new();
        for (path, table, items) in self.groups(batch)? {
            let key = self.layout.key(&path, &batch.id, ext);
            if key.len() > MAX_KEY_BYTES {
                return Err(Failure::permanent(format!(
                    "object key is {} bytes, more than the {MAX_KEY_BYTES} allowed: {key}",
                    key.len()
                )));
            }
            let body = match self.laid_out_ndjson(batch, &items) {
                Some(lines) => lines,
                None => self.encode_group(batch, table, &items, bodies, &key)?,
            };
            objects.push(EncodedObject {
                key,
                body,
                content_type: self.format.content_type(),
                content_encoding: self.format.content_encoding(),
                items,
            });
        }
        Ok(objects)
    }

    /// The NDJSON body of `items` without encoding it: the batcher's arena holds every
    /// payload followed by `\n` ([`Batch::lines`]), so a group that is a run of consecutive
    /// items is that slice of it (for the flat layout, the whole batch).
    fn laid_out_ndjson(&self, batch: &Batch, items: &[usize]) -> Option<Bytes> {
        if !matches!(self.format, Format::Ndjson) {
            return None;
        }
        let (&first, &last) = (items.first()?, items.last()?);
        let consecutive = items.windows(2).all(|pair| pair[1] == pair[0] + 1);
        consecutive.then(|| batch.lines(first..last + 1)).flatten()
    }

    /// Encode the payloads of `items` into a fresh body (the format's own encoder).
    fn encode_group(
        &self,
        batch: &Batch,
        table: Option<Table>,
        items: &[usize],
        bodies: &BodyPool,
        key: &str,
    ) -> Result<Bytes, Failure> {
        let size_hint: usize = items
            .iter()
            .map(|&i| batch.items[i].payload.len() + 1)
            .sum();
        self.format
            .encode(
                table,
                items.iter().map(|&i| &batch.items[i]),
                size_hint,
                bodies,
            )
            .map_err(|err| Failure::permanent(format!("encoding {key}: {err}")))
    }

    /// The batch's items grouped by partition path and, when the format splits tables, by
    /// warehouse table (whose name then leads the path).
    #[allow(clippy::type_complexity)]
    fn groups(&self, batch: &Batch) -> Result<Vec<(String, Option<Table>, Vec<usize>)>, Failure> {
        let groups = self.layout.group(self.schema, &batch.items);
        if !self.format.splits_tables() {
            return Ok(groups
                .into_iter()
                .map(|(p, items)| (p, None, items))
                .collect());
        }
        let mut split = Vec::with_capacity(groups.len());
        for (path, items) in groups {
            let mut tables: Vec<(Table, Vec<usize>)> = Vec::new();
            for index in items {
                let item = &batch.items[index];
                let table = parquet::table_of(&item.payload).ok_or_else(|| {
                    Failure::permanent(format!(
                        "event {} is not a warehouse row: format=parquet needs schema=warehouse",
                        item.event_id
                    ))
                })?;
                match tables.iter_mut().find(|(t, _)| t.0 == table.0) {
                    Some((_, indices)) => indices.push(index),
                    None => tables.push((table, vec![index])),
                }
            }
            split.extend(
                tables
                    .into_iter()
                    .map(|(table, items)| (format!("{}/{path}", table.0), Some(table), items)),
            );
        }
        Ok(split)
    }

    /// Encode `batch` (off the async workers: gzip, CSV and Parquet are CPU work) and put its
    /// objects one after the other; the first failure fails the whole batch (see the module
    /// doc).
    pub async fn write(
        &self,
        store: &impl ObjectStore,
        batch: &Batch,
        bodies: &BodyPool,
    ) -> SendOutcome {
        let objects = match self.encode_blocking(batch, bodies) {
            Ok(objects) => objects,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        for object in &objects {
            if let Err(failure) = store.put(object).await {
                return SendOutcome::Failed(failure);
            }
        }
        for object in objects {
            bodies.give_back(object.body);
        }
        SendOutcome::Delivered
    }

    /// [`Self::encode`] in place. On a multi-threaded runtime (`serve`) the worker thread first
    /// hands its other tasks to a new worker ([`tokio::task::block_in_place`]): encoding
    /// borrows the batch where it is, where `spawn_blocking` would need a deep copy of every
    /// item (≈ 0.6 µs of CPU per event, about what the gzip itself costs). A current-thread runtime (tests) has
    /// no other worker and encodes inline.
    fn encode_blocking(
        &self,
        batch: &Batch,
        bodies: &BodyPool,
    ) -> Result<Vec<EncodedObject>, Failure> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let multi_thread = Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| self.encode_with(batch, bodies))
        } else {
            self.encode_with(batch, bodies)
        }
    }
}

#[cfg(test)]
mod tests;
