//! The tables a PostgreSQL (or Redshift) destination writes, and their DDL.
//!
//! With the `warehouse` event schema the tables are the schema's public column lists
//! ([`crate::event::schema::warehouse::TABLES`]); with any other schema, each event's mapped
//! document lands whole in one `jsonb` column of a single table (`table=`, default
//! `flagstream_events`). Column types map one to one ([`sql_type`]); the unique key is the
//! documented primary key.
//!
//! A PostgreSQL primary key cannot hold NULL, but `context_kind` is null for an event without
//! any context. Keys with a nullable column are therefore a unique index over
//! `coalesce(column, '')` (one row per event and context kind, the event without context
//! included), which `ON CONFLICT` names with the same expression; keys of non-null columns
//! are a real `PRIMARY KEY`.

use crate::event::schema::warehouse::{Column, ColumnType, TABLES};

use super::config::Flavor;

/// One destination table: qualified name parts, columns in load order, unique key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The database schema (`db_schema=`), unquoted.
    pub schema: String,
    /// The table name, unquoted.
    pub name: String,
    pub columns: &'static [Column],
    /// Column names of the unique key, in order.
    pub key: &'static [&'static str],
    /// Whether [`Table::create_indexes`] adds the query indexes (`timestamp`, `flag_key`)
    /// besides the unique key (`query_indexes=false`: faster loads, slower queries).
    pub query_indexes: bool,
}

const fn column(name: &'static str, ty: ColumnType, nullable: bool) -> Column {
    Column { name, ty, nullable }
}

/// Columns of the one table that holds events of a non-warehouse schema.
pub const DOCUMENT_COLUMNS: &[Column] = &[
    column("event_id", ColumnType::String, false),
    column("kind", ColumnType::String, false),
    column("environment", ColumnType::String, false),
    column("received_at", ColumnType::Timestamp, false),
    column("payload", ColumnType::Json, false),
];

/// The key of `evaluation_events` and `metric_events` (docs/schemas.md).
const CONTEXT_ROW_KEY: &[&str] = &["event_id", "context_kind"];
/// The key of `summary_counters`.
const SUMMARY_KEY: &[&str] = &["event_id", "flag_key", "counter_index"];
/// The key of the document table.
const DOCUMENT_KEY: &[&str] = &["event_id"];

/// The three warehouse tables in `schema`.
pub fn warehouse_tables(schema: &str) -> Vec<Table> {
    TABLES
        .iter()
        .map(|&(name, columns)| Table {
            schema: schema.to_string(),
            name: name.to_string(),
            columns,
            key: if name == "summary_counters" {
                SUMMARY_KEY
            } else {
                CONTEXT_ROW_KEY
            },
            query_indexes: true,
        })
        .collect()
}

/// The document table `name` in `schema`.
pub fn document_table(schema: &str, name: &str) -> Table {
    Table {
        schema: schema.to_string(),
        name: name.to_string(),
        columns: DOCUMENT_COLUMNS,
        key: DOCUMENT_KEY,
        query_indexes: true,
    }
}

/// `"name"` with embedded quotes doubled: every identifier we emit goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL type of a column type, as `CREATE TABLE` writes it.
pub fn sql_type(ty: ColumnType, flavor: Flavor) -> &'static str {
    match (ty, flavor) {
        (ColumnType::String, Flavor::Postgres) => "text",
        // Redshift has no unbounded text; VARCHAR's maximum is 65535 bytes.
        (ColumnType::String, Flavor::Redshift) => "varchar(65535)",
        (ColumnType::Int64, _) => "bigint",
        (ColumnType::Float64, _) => "double precision",
        (ColumnType::Bool, _) => "boolean",
        (ColumnType::Json, Flavor::Postgres) => "jsonb",
        (ColumnType::Json, Flavor::Redshift) => "super",
        (ColumnType::Timestamp, _) => "timestamptz",
    }
}

/// The type as `information_schema.columns.data_type` reports it (for the mismatch check).
pub fn reported_type(ty: ColumnType, flavor: Flavor) -> &'static str {
    match (ty, flavor) {
        (ColumnType::String, Flavor::Postgres) => "text",
        (ColumnType::String, Flavor::Redshift) => "character varying",
        (ColumnType::Timestamp, _) => "timestamp with time zone",
        (other, flavor) => sql_type(other, flavor),
    }
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for messages.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Quoted column names, comma separated, in load order.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn nullable(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name && c.nullable)
    }

    /// Does the key include a nullable column (a unique index rather than a primary key)?
    pub fn key_is_nullable(&self) -> bool {
        self.key.iter().any(|name| self.nullable(name))
    }

    /// The key as an index (and `ON CONFLICT`) target: nullable columns as
    /// `(coalesce(col, ''))`, so NULL compares equal to NULL.
    pub fn key_target(&self) -> String {
        let parts: Vec<String> = self
            .key
            .iter()
            .map(|name| {
                if self.nullable(name) {
                    format!("(coalesce({}, ''))", quote_ident(name))
                } else {
                    quote_ident(name)
                }
            })
            .collect();
        format!("({})", parts.join(", "))
    }

    /// `CREATE TABLE IF NOT EXISTS …` with the column types of `flavor`, and the primary key
    /// when no key column is nullable.
    pub fn create_table(&self, flavor: Flavor) -> String {
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!("  {} {}{null}", quote_ident(c.name), sql_type(c.ty, flavor))
            })
            .collect();
        // Redshift records (but does not enforce) primary keys, nullable columns included.
        if !self.key_is_nullable() || flavor == Flavor::Redshift {
            let key: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
            lines.push(format!("  PRIMARY KEY ({})", key.join(", ")));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
            self.qualified(),
            lines.join(",\n")
        )
    }

    /// Index statements: the unique key (when not a primary key) and the query indexes
    /// (`timestamp`; `flag_key` for evaluations). Redshift has no indexes (sort keys instead,
    /// left to the operator), so none there.
    pub fn create_indexes(&self, flavor: Flavor) -> Vec<String> {
        if flavor == Flavor::Redshift {
            return Vec::new();
        }
        let mut statements = Vec::new();
        if self.key_is_nullable() {
            statements.push(format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} {}",
                quote_ident(&format!("{}_key", self.name)),
                self.qualified(),
                self.key_target()
            ));
        }
        if !self.query_indexes {
            return statements;
        }
        for name in ["timestamp", "received_at", "flag_key"] {
            let indexed = self.columns.iter().any(|c| c.name == name)
                && !(name == "received_at" && self.columns.iter().any(|c| c.name == "timestamp"))
                && !(name == "flag_key" && self.name == "summary_counters");
            if indexed {
                statements.push(format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                    quote_ident(&format!("{}_{name}_idx", self.name)),
                    self.qualified(),
                    quote_ident(name)
                ));
            }
        }
        statements
    }
}
