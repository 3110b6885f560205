//! `warehouse`: flat, typed rows for analytics tables, ready for SQL, Parquet and CSV.
//!
//! Each row is one JSON object whose first field `table` names its table, followed by that
//! table's columns — **always all of them, always in the order of [`EVALUATION_COLUMNS`] /
//! [`METRIC_COLUMNS`] / [`SUMMARY_COLUMNS`]**, `null` when unknown — so a CSV or Parquet
//! writer can take the values positionally and an SQL writer can bind them by name. Every
//! value is a scalar: columns of type [`ColumnType::Json`] carry compact JSON *text* (a JSON
//! string), which Snowflake `PARSE_JSON`, BigQuery `JSON` and Postgres `jsonb` accept.
//!
//! * `evaluation_events` — `feature` and `debug` events, **one row per context** of a
//!   multi-context (LaunchDarkly's warehouse export does the same; count `DISTINCT event_id`
//!   for evaluations). Primary key: (`event_id`, `context_kind`).
//! * `metric_events` — `custom`, `click`, `pageview` and go-feature-flag `tracking` events,
//!   also one row per context. Primary key: (`event_id`, `context_kind`).
//! * `summary_counters` — `summary` events when `expand_summaries` is on: one row per
//!   (flag, counter). Primary key: (`event_id`, `flag_key`, `counter_index`).
//!
//! Other kinds (`index`, `identify`, `alias`, unknown, and unexpanded summaries) produce no
//! row. An event without any context produces one row with `context_kind`/`context_key` null.

use super::super::decode::ContextRef;
use super::super::json::{self, Doc, ObjectWriter};
use super::fields;
use super::time::write_iso8601_ms;
use super::Row;

/// SQL-ish type of a warehouse column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer (Unix ms timestamps, counts, indices).
    Int64,
    /// 64-bit float.
    Float64,
    Bool,
    /// Compact JSON text (load as VARIANT / JSON / jsonb).
    Json,
    /// ISO-8601 UTC text with milliseconds (`2024-05-29T16:26:40.001Z`).
    Timestamp,
}

/// A column: name, type, and whether it can be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool) -> Column {
    Column { name, ty, nullable }
}

use ColumnType::{Bool, Float64, Int64, Json, String as Text, Timestamp};

/// Table names, in the order of their column lists.
pub const TABLES: [(&str, &[Column]); 3] = [
    ("evaluation_events", EVALUATION_COLUMNS),
    ("metric_events", METRIC_COLUMNS),
    ("summary_counters", SUMMARY_COLUMNS),
];

/// Columns of `evaluation_events` (after the leading `table` field).
pub const EVALUATION_COLUMNS: &[Column] = &[
    col("event_id", Text, false),
    col("project", Text, false),
    col("environment", Text, false),
    col("kind", Text, false),
    col("flag_key", Text, false),
    col("flag_version", Text, true),
    col("context_kind", Text, true),
    col("context_key", Text, true),
    col("context_anonymous", Bool, false),
    col("context_attributes", Json, true),
    col("variation_index", Int64, true),
    col("variation_name", Text, true),
    col("variation_value", Json, true),
    col("default_value", Json, true),
    col("used_default", Bool, false),
    col("reason_kind", Text, true),
    col("reason_detail", Json, true),
    col("in_experiment", Bool, false),
    col("prereq_of", Text, true),
    col("sampling_ratio", Int64, true),
    col("source", Text, true),
    col("creation_date", Int64, false),
    col("timestamp", Timestamp, false),
    col("received_at", Int64, false),
];

/// Columns of `metric_events` (after the leading `table` field).
pub const METRIC_COLUMNS: &[Column] = &[
    col("event_id", Text, false),
    col("project", Text, false),
    col("environment", Text, false),
    col("kind", Text, false),
    col("metric_key", Text, false),
    col("context_kind", Text, true),
    col("context_key", Text, true),
    col("context_anonymous", Bool, false),
    col("metric_value", Float64, true),
    col("data", Json, true),
    col("url", Text, true),
    col("selector", Text, true),
    col("creation_date", Int64, false),
    col("timestamp", Timestamp, false),
    col("received_at", Int64, false),
];

/// Columns of `summary_counters` (after the leading `table` field).
pub const SUMMARY_COLUMNS: &[Column] = &[
    col("event_id", Text, false),
    col("project", Text, false),
    col("environment", Text, false),
    col("flag_key", Text, false),
    col("counter_index", Int64, false),
    col("context_kinds", Json, true),
    col("flag_version", Text, true),
    col("unknown_flag", Bool, false),
    col("variation_index", Int64, true),
    col("variation_value", Json, true),
    col("default_value", Json, true),
    col("count", Int64, false),
    col("start_date", Int64, true),
    col("end_date", Int64, true),
];

pub(super) fn map(row: &Row<'_, '_>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let kind = row.event.kind();
    let table = match kind {
        "feature" | "debug" => Table::Evaluation,
        "custom" | "click" | "pageview" | "tracking" => Table::Metric,
        _ => return,
    };
    let mut any = false;
    row.event.for_each_context(|c| {
        any = true;
        write_row(row, table, Some(c), out);
        emit(out);
    });
    if !any {
        write_row(row, table, None, out);
        emit(out);
    }
}

#[derive(Clone, Copy)]
enum Table {
    Evaluation,
    Metric,
}

/// A column holding JSON text (`null` when absent).
pub(super) fn json_text(o: &mut ObjectWriter<'_>, name: &str, nodes: &Doc<'_>, idx: Option<usize>) {
    let out = o.key(name);
    match idx.filter(|&i| !json::is_null(nodes, i)) {
        None => out.extend_from_slice(b"null"),
        Some(i) => {
            out.push(b'"');
            json::write_json_text_content(out, nodes, i);
            out.push(b'"');
        }
    }
}

/// A text column from any scalar (numbers rendered as text, e.g. LD integer flag versions).
pub(super) fn text(o: &mut ObjectWriter<'_>, name: &str, nodes: &Doc<'_>, idx: Option<usize>) {
    let out = o.key(name);
    match idx.filter(|&i| !json::is_null(nodes, i)) {
        None => out.extend_from_slice(b"null"),
        Some(i) => {
            out.push(b'"');
            json::write_value_as_string_content(out, nodes, i);
            out.push(b'"');
        }
    }
}

fn opt_str(o: &mut ObjectWriter<'_>, name: &str, value: Option<&str>) {
    match value {
        Some(v) => o.str(name, v),
        None => o.null(name),
    }
}

fn int(o: &mut ObjectWriter<'_>, name: &str, nodes: &Doc<'_>, idx: Option<usize>) {
    match idx.and_then(|i| json::as_i64(nodes, i)) {
        Some(v) => {
            let out = o.key(name);
            json::write_i64(out, v);
        }
        None => o.null(name),
    }
}

fn write_row(row: &Row<'_, '_>, table: Table, context: Option<ContextRef<'_>>, out: &mut Vec<u8>) {
    let event = row.event;
    let nodes = event.nodes();
    let ts = fields::timestamp_ms(event, row.ctx.received_at_ms);
    out.clear();
    let mut o = ObjectWriter::new(out);
    o.str(
        "table",
        match table {
            Table::Evaluation => "evaluation_events",
            Table::Metric => "metric_events",
        },
    );
    o.str("event_id", row.id);
    o.str("project", row.options.project());
    o.str("environment", row.ctx.environment);
    o.str("kind", event.kind());
    match table {
        Table::Evaluation => {
            let e = fields::evaluation(event);
            o.str("flag_key", event.key().unwrap_or(""));
            text(&mut o, "flag_version", nodes, e.version);
            context_columns(&mut o, context, true, nodes);
            match e.variation_index {
                Some(index) => o.u64("variation_index", index),
                None => o.null("variation_index"),
            }
            opt_str(&mut o, "variation_name", e.variation_name);
            json_text(&mut o, "variation_value", nodes, e.value);
            json_text(&mut o, "default_value", nodes, e.default_value);
            o.bool("used_default", e.used_default);
            opt_str(&mut o, "reason_kind", e.reason_kind);
            reason_detail(&mut o, nodes, e.reason);
            o.bool("in_experiment", event.in_experiment());
            opt_str(&mut o, "prereq_of", e.prereq_of);
            int(&mut o, "sampling_ratio", nodes, e.sampling_ratio);
            opt_str(&mut o, "source", e.source);
        }
        Table::Metric => {
            o.str("metric_key", event.key().unwrap_or(""));
            context_columns(&mut o, context, false, nodes);
            let (value, data) = match event.kind() {
                "tracking" => {
                    let details = event.field("trackingEventDetails");
                    (details.and_then(|d| json::get(nodes, d, "value")), details)
                }
                _ => (event.field("metricValue"), event.field("data")),
            };
            // The number as sent (digits intact; the loader rounds to its FLOAT64), or null
            // when it is not a number or beyond the FLOAT64 range (`1e400`), which no
            // warehouse could load.
            match value.filter(|&v| json::as_f64(nodes, v).is_some()) {
                Some(v) => o.value("metric_value", nodes, Some(v)),
                None => o.null("metric_value"),
            }
            json_text(&mut o, "data", nodes, data);
            opt_str(&mut o, "url", fields::str_field(event, "url"));
            opt_str(&mut o, "selector", fields::str_field(event, "selector"));
        }
    }
    o.u64("creation_date", ts);
    let out = o.key("timestamp");
    out.push(b'"');
    write_iso8601_ms(out, ts);
    out.push(b'"');
    o.u64("received_at", row.ctx.received_at_ms);
    o.finish();
}

fn context_columns(
    o: &mut ObjectWriter<'_>,
    c: Option<ContextRef<'_>>,
    attributes: bool,
    nodes: &Doc<'_>,
) {
    opt_str(o, "context_kind", c.map(|c| c.kind));
    opt_str(o, "context_key", c.map(|c| c.key));
    o.bool("context_anonymous", c.is_some_and(|c| c.anonymous));
    if attributes {
        json_text(o, "context_attributes", nodes, c.and_then(|c| c.attributes));
    }
}

/// `{"in_experiment":…, "rule_id":…, …}` from the reason's details (snake_case keys, only
/// those present), as JSON text; `null` when the reason has nothing beyond its kind.
fn reason_detail(o: &mut ObjectWriter<'_>, nodes: &Doc<'_>, reason: Option<usize>) {
    const DETAILS: [(&str, &str); 6] = [
        ("inExperiment", "in_experiment"),
        ("ruleIndex", "rule_index"),
        ("ruleId", "rule_id"),
        ("prerequisiteKey", "prerequisite_key"),
        ("errorKind", "error_kind"),
        ("bigSegmentsStatus", "big_segments_status"),
    ];
    let present = |from: &str| reason.and_then(|r| json::get(nodes, r, from));
    if DETAILS.iter().all(|(from, _)| present(from).is_none()) {
        o.null("reason_detail");
        return;
    }
    let out = o.key("reason_detail");
    out.extend_from_slice(b"\"{");
    let mut first = true;
    for (from, to) in DETAILS {
        if let Some(v) = present(from) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(b"\\\"");
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(b"\\\":");
            json::write_json_text_content(out, nodes, v);
        }
    }
    out.extend_from_slice(b"}\"");
}
