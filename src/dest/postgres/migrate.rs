//! Versioned migrations: create the tables (and indexes) when missing, then check that what
//! exists matches what flagstream writes.
//!
//! Each table's applied versions are recorded in `<db_schema>.flagstream_migrations`
//! (`table_name`, `version`, `description`, `applied_at`); a start applies the versions a
//! table lacks, in order, in one transaction holding an advisory lock (PostgreSQL), so two
//! flagstream processes starting together do not race. Version 1 creates the table and its
//! indexes with `IF NOT EXISTS`, so it adopts a table an operator created beforehand.
//!
//! Afterwards [`verify`] compares every column flagstream writes with
//! `information_schema.columns`: a missing column, another type, or `NOT NULL` on a column
//! flagstream may leave null is a permanent error naming the table and column. flagstream
//! never drops, renames or alters an operator's column; extra columns are left alone (they
//! must be nullable or have a default, or every insert fails, naming them).

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::{Client, GenericClient};

use super::classify::{classify, Fault};
use super::config::Flavor;
use super::tables::{quote_ident, reported_type, Table};
use crate::dest::Failure;

/// The name of the migrations table in the destination's schema.
pub const MIGRATIONS_TABLE: &str = "flagstream_migrations";

/// One step of a table's history.
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    pub statements: fn(&Table, Flavor) -> Vec<String>,
}

fn create_table_and_indexes(table: &Table, flavor: Flavor) -> Vec<String> {
    let mut statements = vec![table.create_table(flavor)];
    statements.extend(table.create_indexes(flavor));
    statements
}

/// Every migration, oldest first. Append; never edit one that shipped.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "create table, unique key and indexes",
    statements: create_table_and_indexes,
}];

/// Apply missing migrations to `tables` and verify their columns.
pub async fn migrate(client: &mut Client, tables: &[Table], flavor: Flavor) -> Result<(), Failure> {
    let Some(first) = tables.first() else {
        return Ok(());
    };
    let schema = first.schema.as_str();
    let fail = |doing: &str| {
        let target = format!("schema `{schema}`");
        let doing = doing.to_string();
        move |error: tokio_postgres::Error| match classify(&error, &doing, &target) {
            Fault::Batch(failure) => failure,
            Fault::Row(detail) => Failure::permanent(format!("{doing} {target}: {detail}")),
        }
    };
    let transaction = client.transaction().await.map_err(fail("migrating"))?;
    if flavor == Flavor::Postgres {
        transaction
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('flagstream_migrations'))",
                &[],
            )
            .await
            .map_err(fail("locking migrations in"))?;
    }
    let exists = transaction
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(fail("looking up"))?;
    if exists.is_none() {
        transaction
            .batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
            .await
            .map_err(fail("creating"))?;
    }
    let log = format!("{}.{}", quote_ident(schema), quote_ident(MIGRATIONS_TABLE));
    let now = match flavor {
        Flavor::Postgres => "now()",
        Flavor::Redshift => "getdate()",
    };
    transaction
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {log} (table_name varchar(256) NOT NULL, version integer NOT NULL, \
             description varchar(256) NOT NULL, applied_at timestamptz NOT NULL DEFAULT {now}, \
             PRIMARY KEY (table_name, version))"
        ))
        .await
        .map_err(fail("creating the migrations table in"))?;
    // An existing table is checked before any migration touches it (an index over a column
    // it lacks would fail with a less helpful message).
    let existing = columns(&transaction, schema)
        .await
        .map_err(fail("reading the columns of"))?;
    let present: Vec<Table> = tables
        .iter()
        .filter(|t| existing.keys().any(|(name, _)| *name == t.name))
        .cloned()
        .collect();
    verify(&present, flavor, &existing)?;
    for table in tables {
        let applied: BTreeSet<i32> = transaction
            .query(
                &format!("SELECT version FROM {log} WHERE table_name = $1"),
                &[&table.name],
            )
            .await
            .map_err(fail("reading migrations of"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            for statement in (migration.statements)(table, flavor) {
                transaction
                    .batch_execute(&statement)
                    .await
                    .map_err(fail(&format!(
                        "migration {} of table {}",
                        migration.version, table.name
                    )))?;
            }
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {log} (table_name, version, description) VALUES ($1, $2, $3)"
                    ),
                    &[&table.name, &migration.version, &migration.description],
                )
                .await
                .map_err(fail("recording a migration in"))?;
        }
    }
    transaction.commit().await.map_err(fail("migrating"))?;
    let existing = columns(client, schema)
        .await
        .map_err(fail("reading the columns of"))?;
    verify(tables, flavor, &existing)
}

/// What `information_schema.columns` says of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub data_type: String,
    pub nullable: bool,
}

/// `(table, column) → type and nullability` of every column in `schema`.
pub type ExistingColumns = BTreeMap<(String, String), ExistingColumn>;

async fn columns(
    client: &impl GenericClient,
    schema: &str,
) -> Result<ExistingColumns, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = $1",
            &[&schema],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let nullable: String = row.get(3);
            (
                (row.get(0), row.get(1)),
                ExistingColumn {
                    data_type: row.get(2),
                    nullable: nullable == "YES",
                },
            )
        })
        .collect())
}

/// Compare the tables flagstream writes with the columns that exist; the first mismatch is a
/// permanent failure naming table and column.
pub fn verify(tables: &[Table], flavor: Flavor, existing: &ExistingColumns) -> Result<(), Failure> {
    for table in tables {
        for column in table.columns {
            let expected = reported_type(column.ty, flavor);
            let key = (table.name.clone(), column.name.to_string());
            let problem = match existing.get(&key) {
                None => format!("has no column `{}` (flagstream writes {expected})", column.name),
                Some(found) if found.data_type != expected => format!(
                    "column `{}` is {}, flagstream writes {expected}",
                    column.name, found.data_type
                ),
                Some(found) if column.nullable && !found.nullable => format!(
                    "column `{}` is NOT NULL, but flagstream writes NULL when the event has no value",
                    column.name
                ),
                Some(_) => continue,
            };
            return Err(Failure::permanent(format!(
                "table {} does not match the warehouse schema: {problem}; flagstream never alters an \
                 existing column: fix the table or choose another `db_schema`",
                table.display()
            )));
        }
    }
    Ok(())
}
