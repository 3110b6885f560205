//! Unit tests: target parsing, generated SQL (both flavors), row decoding, the mismatch check.

use super::config::{Flavor, ServerTarget};
use super::migrate::{verify, ExistingColumn, ExistingColumns};
use super::redshift;
use super::rows::{warehouse_rows, Cell};
use super::tables::{document_table, warehouse_tables, Table};
use super::{copy_into_stage, copy_into_table, create_stage, insert_new};

fn evaluation_table() -> Table {
    warehouse_tables("flags").remove(0)
}

#[test]
fn targets_parse_and_refuse_inline_passwords() {
    let target = ServerTarget::parse("loader@db.internal:6543/analytics").unwrap();
    assert_eq!(
        (
            target.user.as_str(),
            target.host.as_str(),
            target.port,
            target.database.as_str()
        ),
        ("loader", "db.internal", 6543, "analytics")
    );
    let target = ServerTarget::parse("db/analytics").unwrap();
    assert_eq!((target.user.as_str(), target.port), ("postgres", 5432));
    let err = ServerTarget::parse("loader:hunter2@db/analytics").unwrap_err();
    assert!(
        err.contains("password=env:") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(ServerTarget::parse("db:port/x")
        .unwrap_err()
        .contains("`port`"));
    assert!(ServerTarget::parse("db")
        .unwrap_err()
        .contains("no database"));
}

#[test]
fn postgres_statements_stage_copy_and_skip_known_keys() {
    let table = evaluation_table();
    let create = table.create_table(Flavor::Postgres);
    assert!(create.starts_with("CREATE TABLE IF NOT EXISTS \"flags\".\"evaluation_events\""));
    assert!(
        create.contains("\"variation_value\" jsonb,")
            && create.contains("\"timestamp\" timestamptz NOT NULL")
    );
    assert!(
        !create.contains("PRIMARY KEY"),
        "context_kind is nullable: a unique index instead"
    );
    let indexes = table.create_indexes(Flavor::Postgres);
    assert_eq!(
        indexes[0],
        "CREATE UNIQUE INDEX IF NOT EXISTS \"evaluation_events_key\" ON \"flags\".\"evaluation_events\" \
         (\"event_id\", (coalesce(\"context_kind\", '')))"
    );
    assert!(indexes.iter().any(|i| i.contains("(\"flag_key\")")));
    let key_only = Table {
        query_indexes: false,
        ..table.clone()
    };
    assert_eq!(key_only.create_indexes(Flavor::Postgres), indexes[..1]);
    assert!(create_stage(&table).ends_with("FROM \"flags\".\"evaluation_events\" WITH NO DATA"));
    assert!(copy_into_stage(&table).ends_with("FROM STDIN (FORMAT binary)"));
    assert!(
        copy_into_table(&table).starts_with("COPY \"flags\".\"evaluation_events\" (\"event_id\", ")
    );
    assert!(insert_new(&table).ends_with(
        "FROM \"flagstream_stage_evaluation_events\" ON CONFLICT (\"event_id\", (coalesce(\"context_kind\", ''))) DO NOTHING"
    ));
    let summary = warehouse_tables("flags").remove(2);
    assert!(summary
        .create_table(Flavor::Postgres)
        .contains("PRIMARY KEY (\"event_id\", \"flag_key\", \"counter_index\")"));
    let documents = document_table("public", "odd\"name");
    assert!(documents.qualified().ends_with("\"odd\"\"name\""));
}

#[test]
fn redshift_statements_use_a_locked_stage_and_delete_using() {
    let table = evaluation_table();
    let create = table.create_table(Flavor::Redshift);
    assert!(create.contains("\"event_id\" varchar(65535) NOT NULL"));
    assert!(create.contains("\"variation_value\" super,"));
    assert!(create.contains("PRIMARY KEY (\"event_id\", \"context_kind\")"));
    assert!(table.create_indexes(Flavor::Redshift).is_empty());
    assert_eq!(
        redshift::begin(&table),
        [
            "LOCK \"flags\".\"evaluation_events\"",
            "CREATE TEMP TABLE \"flagstream_stage_evaluation_events\" (LIKE \"flags\".\"evaluation_events\")",
        ]
    );
    let insert = redshift::stage_rows(&table, 2);
    let width = table.columns.len();
    assert!(
        insert.starts_with("INSERT INTO \"flagstream_stage_evaluation_events\" (\"event_id\", ")
    );
    assert!(
        insert.contains(&format!("(${}::varchar, ", width + 1)),
        "{insert}"
    );
    assert!(
        insert.contains(&format!("${width}::varchar::bigint)")),
        "{insert}"
    );
    assert!(insert.contains("JSON_PARSE($10::varchar)"), "{insert}");
    assert!(!insert.contains(&format!("${}", 2 * width + 1)));
    let finish = redshift::finish(&table);
    assert_eq!(
        finish[0],
        "DELETE FROM \"flagstream_stage_evaluation_events\" USING \"flags\".\"evaluation_events\" WHERE \
         \"flagstream_stage_evaluation_events\".\"event_id\" = \"flags\".\"evaluation_events\".\"event_id\" AND \
         coalesce(\"flagstream_stage_evaluation_events\".\"context_kind\", '') = \
         coalesce(\"flags\".\"evaluation_events\".\"context_kind\", '')"
    );
    assert!(
        finish[1].starts_with("INSERT INTO \"flags\".\"evaluation_events\" (")
            && !finish[1].contains("ON CONFLICT")
    );
    assert_eq!(
        finish[2],
        "DROP TABLE \"flagstream_stage_evaluation_events\""
    );
    assert!(redshift::rows_per_statement(&table) * width <= redshift::MAX_PARAMETERS);
}

#[test]
fn rows_decode_typed_and_bad_items_fail_alone_by_event_id() {
    let tables = warehouse_tables("public");
    let item = |payload: serde_json::Value| crate::dest::BatchItem {
        event_id: payload["event_id"].as_str().unwrap_or("e-x").into(),
        payload: serde_json::to_vec(&payload).unwrap().into(),
        kind: "custom".into(),
        key: None,
        context_key: None,
        environment: "production".into(),
        received_at_ms: 0,
    };
    let good = serde_json::json!({"table": "metric_events", "event_id": "e-1", "project": "p",
        "environment": "e", "kind": "custom", "metric_key": "k", "context_kind": null,
        "context_key": null, "context_anonymous": false, "metric_value": 2.5, "data": "{\"a\":1}",
        "url": null, "selector": null, "creation_date": 1, "timestamp": "2024-05-29T16:26:40.001Z",
        "received_at": 2});
    let mut wrong_type = good.clone();
    wrong_type["event_id"] = "e-2".into();
    wrong_type["creation_date"] = "soon".into();
    let mut null_key = good.clone();
    null_key["event_id"] = "e-3".into();
    null_key["metric_key"] = serde_json::Value::Null;
    let grouped = warehouse_rows(&[item(good), item(wrong_type), item(null_key)], &tables);
    assert_eq!(grouped.rows[1].len(), 1);
    let cells = &grouped.rows[1][0].cells;
    assert_eq!(cells[8], Cell::Float(2.5));
    assert_eq!(cells[9], Cell::Json("{\"a\":1}".into()));
    assert_eq!(cells[5], Cell::Null);
    let reasons: Vec<(usize, &str)> = grouped
        .failures
        .iter()
        .map(|f| (f.index, f.failure.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0 == 1 && reasons[0].1.contains("e-2") && reasons[0].1.contains("creation_date")
    );
    assert!(
        reasons[1].0 == 2
            && reasons[1].1.contains("e-3")
            && reasons[1].1.contains("metric_key is null")
    );
}

#[test]
fn verify_names_the_first_mismatched_column() {
    let tables = vec![evaluation_table()];
    let mut existing: ExistingColumns = tables[0]
        .columns
        .iter()
        .map(|c| {
            let column = ExistingColumn {
                data_type: super::tables::reported_type(c.ty, Flavor::Postgres).into(),
                nullable: c.nullable,
            };
            (
                ("evaluation_events".to_string(), c.name.to_string()),
                column,
            )
        })
        .collect();
    verify(&tables, Flavor::Postgres, &existing).unwrap();
    let key = ("evaluation_events".to_string(), "reason_detail".to_string());
    existing.get_mut(&key).unwrap().nullable = false;
    let reason = verify(&tables, Flavor::Postgres, &existing)
        .unwrap_err()
        .reason;
    assert!(
        reason.contains("flags.evaluation_events")
            && reason.contains("`reason_detail` is NOT NULL"),
        "{reason}"
    );
    existing.remove(&key);
    let reason = verify(&tables, Flavor::Postgres, &existing)
        .unwrap_err()
        .reason;
    assert!(
        reason.contains("no column `reason_detail` (flagstream writes jsonb)"),
        "{reason}"
    );
}

#[test]
fn an_untrusted_certificate_is_found_inside_io_errors() {
    let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
    let boxed: Box<dyn std::error::Error + Send + Sync> = io.into();
    assert!(super::classify::is_untrusted_certificate(&*boxed));
}
