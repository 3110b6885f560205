//! Object keys: `prefix` + Hive-style partitions + a file name derived from the batch id.
//!
//! `exports/dt=2026-11-29/hour=07/f-120-369.ndjson.gz`
//!
//! ## Invariants
//!
//! 1. A key is a pure function of (layout, batch id, the partition values of the batch's
//!    items), so the same batch re-sent after a crash or retry produces the same keys and
//!    overwrites its own objects: a bucket never holds a batch twice.
//! 2. A batch whose items fall into several partitions (an hour boundary, several
//!    environments) is split into **one object per partition**, in first-seen order; each key
//!    is still derived from the batch id (and its partition path), so splits are deterministic
//!    too and never collide with another batch's objects.
//! 3. Partition values are escaped the way Hive does (`%XX` for every byte outside
//!    `[A-Za-z0-9._-]`), so an environment named `a/b` can never add a directory level; an
//!    empty value becomes Hive's `__HIVE_DEFAULT_PARTITION__`.
//!
//! Partition time is the receive time (default: every batch lands in one or two hours, and an
//! old partition is never rewritten) or the event time (`partition_time=event`: the event's
//! own creation time, read from the mapped payload — see [`event_time_ms`] — falling back to
//! the receive time when the payload has none).

use std::fmt::Write as _;

use crate::event::Schema;

use super::super::BatchItem;
use crate::event::schema::civil_date;

/// One partition column of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// `dt=YYYY-MM-DD` (UTC).
    Date,
    /// `hour=HH` (UTC, 00-23).
    Hour,
    /// `environment=<name>`.
    Environment,
    /// `kind=<event kind>`.
    Kind,
}

impl Partition {
    fn column(self) -> &'static str {
        match self {
            Partition::Date => "dt",
            Partition::Hour => "hour",
            Partition::Environment => "environment",
            Partition::Kind => "kind",
        }
    }
}

/// The `partitions` option: a comma-separated list in path order, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions(pub Vec<Partition>);

impl std::str::FromStr for Partitions {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "none" {
            return Ok(Partitions(Vec::new()));
        }
        let mut list = Vec::new();
        for name in text.split(',').map(str::trim) {
            let partition = match name {
                "dt" => Partition::Date,
                "hour" => Partition::Hour,
                "environment" => Partition::Environment,
                "kind" => Partition::Kind,
                other => {
                    return Err(format!(
                        "unknown partition `{other}` (use dt, hour, environment, kind, or none)"
                    ))
                }
            };
            if list.contains(&partition) {
                return Err(format!("partition `{name}` is listed twice"));
            }
            list.push(partition);
        }
        Ok(Partitions(list))
    }
}

/// Which clock the `dt`/`hour` partitions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTime {
    #[default]
    Received,
    Event,
}

/// Default file name template.
pub const DEFAULT_FILE_NAME: &str = "{batch_id}.{ext}";
/// Longest object key S3 accepts (UTF-8 bytes); GCS allows the same.
pub const MAX_KEY_BYTES: usize = 1024;

/// How keys are laid out (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    pub partitions: Vec<Partition>,
    pub time: PartitionTime,
    /// File name template with `{batch_id}` and optionally `{ext}`.
    pub file_name: String,
}

impl Layout {
    /// Validate a file name template: it must contain `{batch_id}` (else keys would collide
    /// or not be deterministic) and no other placeholder than `{ext}`.
    pub fn check_file_name(template: &str) -> Result<(), String> {
        if !template.contains("{batch_id}") {
            return Err(format!(
                "option `file_name` must contain {{batch_id}} (got `{template}`)"
            ));
        }
        let rest = template.replace("{batch_id}", "").replace("{ext}", "");
        if rest.contains('{') || rest.contains('}') || rest.contains('/') {
            return Err(format!(
                "option `file_name` may only use {{batch_id}} and {{ext}} and no `/` (got `{template}`)"
            ));
        }
        Ok(())
    }

    /// The partition path of one item (`dt=…/hour=…/`), empty without partitions.
    pub fn partition_path(&self, schema: Schema, item: &BatchItem) -> String {
        let mut path = String::new();
        if self.partitions.is_empty() {
            return path;
        }
        let ms = match self.time {
            PartitionTime::Received => item.received_at_ms,
            PartitionTime::Event => {
                event_time_ms(schema, &item.payload).unwrap_or(item.received_at_ms)
            }
        };
        let (year, month, day) = civil_date(ms);
        for partition in &self.partitions {
            let _ = match partition {
                Partition::Date => write!(path, "dt={year:04}-{month:02}-{day:02}/"),
                Partition::Hour => write!(path, "hour={:02}/", ms / 3_600_000 % 24),
                Partition::Environment | Partition::Kind => {
                    let value = if *partition == Partition::Kind {
                        &item.kind
                    } else {
                        &item.environment
                    };
                    write!(path, "{}={}/", partition.column(), hive_escape(value))
                }
            };
        }
        path
    }

    /// The full key of the object holding a batch's items of one partition.
    pub fn key(&self, partition_path: &str, batch_id: &str, ext: &str) -> String {
        let name = self
            .file_name
            .replace("{batch_id}", batch_id)
            .replace("{ext}", ext);
        let mut key =
            String::with_capacity(self.prefix.len() + partition_path.len() + name.len() + 1);
        if !self.prefix.is_empty() {
            key.push_str(&self.prefix);
            key.push('/');
        }
        key.push_str(partition_path);
        key.push_str(&name);
        key
    }

    /// Group a batch's item indices by partition path, in first-seen order.
    pub fn group(&self, schema: Schema, items: &[BatchItem]) -> Vec<(String, Vec<usize>)> {
        if self.partitions.is_empty() && !items.is_empty() {
            // The flat layout (the `file` default): one object of every item.
            return vec![(String::new(), (0..items.len()).collect())];
        }
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        // The items of a batch mostly share an hour: with only time partitions by receive
        // time, an item received in the previous item's hour joins that item's group without
        // its path being formatted and searched for again.
        let by_received_hour = self.time == PartitionTime::Received
            && (self.partitions.iter()).all(|p| matches!(p, Partition::Date | Partition::Hour));
        let mut previous: Option<(u64, usize)> = None;
        for (index, item) in items.iter().enumerate() {
            let hour = item.received_at_ms / 3_600_000;
            if let Some((_, group)) = previous.filter(|&(h, _)| by_received_hour && h == hour) {
                groups[group].1.push(index);
                continue;
            }
            let path = self.partition_path(schema, item);
            let group = match groups.iter().position(|(p, _)| *p == path) {
                Some(group) => {
                    groups[group].1.push(index);
                    group
                }
                None => {
                    groups.push((path, vec![index]));
                    groups.len() - 1
                }
            };
            previous = Some((hour, group));
        }
        groups
    }
}

/// Hive's partition value escaping (`FileUtils.escapePathName`, stricter: only
/// `[A-Za-z0-9._-]` pass unescaped).
pub fn hive_escape(value: &str) -> String {
    if value.is_empty() {
        return "__HIVE_DEFAULT_PARTITION__".to_string();
    }
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The event's own creation time (Unix ms) in a mapped payload, when the schema has one as a
/// number: `launchdarkly` `/event/creationDate`, `gofeatureflag` `/creationDate` (seconds),
/// `warehouse` `/creation_date`, `mparticle` `/events/0/data/timestamp_unixtime_ms`. Segment
/// only has ISO text and yields `None` (the receive time is used).
pub fn event_time_ms(schema: Schema, payload: &[u8]) -> Option<u64> {
    let pointer = match schema {
        Schema::LaunchDarkly => "/event/creationDate",
        Schema::GoFeatureFlag => "/creationDate",
        Schema::Warehouse => "/creation_date",
        Schema::MParticle => "/events/0/data/timestamp_unixtime_ms",
        Schema::Segment => return None,
    };
    let document: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let value = document.pointer(pointer)?.as_u64()?;
    // go-feature-flag writes seconds; anything below 10^11 cannot be a Unix-ms time after 1973.
    Some(if value < 100_000_000_000 {
        value * 1000
    } else {
        value
    })
}
