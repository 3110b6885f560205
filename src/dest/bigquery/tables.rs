//! BigQuery table resources built from the warehouse column lists, and the check that an
//! existing table can take our rows.
//!
//! Types map one to one (`STRING`, `INT64`, `FLOAT64`, `BOOL`, `JSON`, `TIMESTAMP`);
//! non-null columns are `REQUIRED`. Tables with a `timestamp` column are partitioned by its
//! day (the document table by `received_at`), and clustered by `flag_key` (metric events by
//! `metric_key`) so the documented queries prune. An existing table matches when every
//! column we write is there with the same type (legacy names such as `INTEGER` count as
//! their standard ones) and no column we may leave null, nor one we never write, is
//! `REQUIRED`.

use serde_json::{json, Value};

use crate::dest::postgres::Table;
use crate::event::schema::warehouse::ColumnType;

/// The BigQuery type of a column type.
pub fn bigquery_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "STRING",
        ColumnType::Int64 => "INT64",
        ColumnType::Float64 => "FLOAT64",
        ColumnType::Bool => "BOOL",
        ColumnType::Json => "JSON",
        ColumnType::Timestamp => "TIMESTAMP",
    }
}

/// A type name as BigQuery may report it, in its standard SQL spelling.
fn standard_type(reported: &str) -> String {
    match reported.to_ascii_uppercase().as_str() {
        "INTEGER" => "INT64".into(),
        "FLOAT" => "FLOAT64".into(),
        "BOOLEAN" => "BOOL".into(),
        other => other.to_string(),
    }
}

/// The column the table is partitioned by (day), if any.
pub fn partition_column(table: &Table) -> Option<&'static str> {
    ["timestamp", "received_at"].into_iter().find(|name| {
        table
            .columns
            .iter()
            .any(|c| c.name == *name && c.ty == ColumnType::Timestamp)
    })
}

/// The column the table is clustered by, if any.
pub fn cluster_column(table: &Table) -> Option<&'static str> {
    ["flag_key", "metric_key"]
        .into_iter()
        .find(|name| table.columns.iter().any(|c| c.name == *name))
}

/// The `tables.insert` body for `table` in `project`.
pub fn table_resource(table: &Table, project: &str) -> Value {
    let fields: Vec<Value> = table
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": bigquery_type(c.ty),
                "mode": if c.nullable { "NULLABLE" } else { "REQUIRED" },
            })
        })
        .collect();
    let mut resource = json!({
        "tableReference": {"projectId": project, "datasetId": table.schema, "tableId": table.name},
        "schema": {"fields": fields},
        "description": "written by flagstream (warehouse export)",
    });
    if let Some(column) = partition_column(table) {
        resource["timePartitioning"] = json!({"type": "DAY", "field": column});
    }
    if let Some(column) = cluster_column(table) {
        resource["clustering"] = json!({"fields": [column]});
    }
    resource
}

/// Why an existing table (its `tables.get` resource) cannot take `table`'s rows: `None`
/// when it can.
pub fn mismatch(table: &Table, existing: &Value) -> Option<String> {
    let fields = existing["schema"]["fields"].as_array()?;
    let find = |name: &str| {
        fields.iter().find(|f| {
            f["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    };
    for column in table.columns {
        let Some(field) = find(column.name) else {
            return Some(format!("column `{}` is missing", column.name));
        };
        let reported = standard_type(field["type"].as_str().unwrap_or_default());
        let wanted = bigquery_type(column.ty);
        if reported != wanted {
            return Some(format!(
                "column `{}` is {reported}, flagstream writes {wanted}",
                column.name
            ));
        }
        if column.nullable && field["mode"] == "REQUIRED" {
            return Some(format!(
                "column `{}` is REQUIRED but may be null",
                column.name
            ));
        }
    }
    fields
        .iter()
        .filter(|f| f["mode"] == "REQUIRED")
        .filter_map(|f| f["name"].as_str())
        .find(|name| {
            !table
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(name))
        })
        .map(|name| format!("column `{name}` is REQUIRED but flagstream does not write it"))
}
