//! The Snowflake destination against fakesnow (Snowflake's driver protocol; one server per
//! test), read back with Snowflake's official Python connector: login, table creation,
//! rows and types as documented, every event id once, a re-sent batch inserts nothing
//! twice, a mismatched table is a named permanent error, key-pair login.

use flagstream::dest::{FailureClass, SendOutcome};
use serde_json::{json, Value};

use crate::postgres::{batch, evaluation, evaluations, failure_of, metric};
use crate::support::cloud::destination;
use crate::support::snowflake::Fakesnow;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_lands_rows_with_the_documented_types() {
    let server = Fakesnow::start();
    server.create_schema("analytics", "flags");
    let dest = destination(&server.url("analytics", "flags", "")).await;
    dest.check().await.unwrap();
    let rows = [
        evaluation("e-1", Some("user")),
        evaluation("e-1", Some("org")),
        evaluation("e-2", None),
        metric("m-1", 1.0e300),
    ];
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);

    let row = &server.sql(&[
        "SELECT timestamp, creation_date, variation_value, context_attributes, in_experiment, \
         variation_name, variation_index FROM analytics.flags.evaluation_events \
         WHERE event_id = 'e-1' AND context_kind = 'org'",
    ])[0];
    assert_eq!(row[0], "2024-05-29 16:26:39.001000+00:00");
    assert_eq!(row[1], 1_716_999_999_001i64);
    let value: Value = serde_json::from_str(row[2].as_str().unwrap()).unwrap();
    assert_eq!(value, json!({"colour": "grün", "nested": [1, 2.5, null]}));
    let attributes: Value = serde_json::from_str(row[3].as_str().unwrap()).unwrap();
    assert_eq!(attributes["seats"], json!(12_345_678_901_234i64));
    assert_eq!(
        (row[4].clone(), row[5].clone(), row[6].clone()),
        (json!(true), Value::Null, json!(1))
    );
    let no_context = "SELECT count(*) FROM analytics.flags.evaluation_events \
                      WHERE event_id = 'e-2' AND context_kind IS NULL";
    assert_eq!(server.count(no_context), 1);

    let metric = &server.sql(&[
        "SELECT metric_value, creation_date, timestamp, data FROM analytics.flags.metric_events",
    ])[0];
    assert_eq!(metric[0].as_f64().unwrap(), 1.0e300);
    assert_eq!(metric[1], json!(9_007_199_254_740_993i64));
    assert_eq!(metric[2], "1999-12-31 23:59:59.999000+00:00");
    assert_eq!(metric[3], Value::Null);
    let types = server.sql(&[
        "SELECT column_name, data_type FROM analytics.information_schema.columns \
         WHERE table_name = 'EVALUATION_EVENTS' AND column_name IN ('TIMESTAMP', 'VARIATION_VALUE', 'CREATION_DATE') \
         ORDER BY column_name",
    ]);
    assert_eq!(
        types,
        vec![
            vec![json!("CREATION_DATE"), json!("NUMBER")],
            vec![json!("TIMESTAMP"), json!("TIMESTAMP_TZ")],
            vec![json!("VARIATION_VALUE"), json!("VARIANT")],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_inserts_nothing_twice() {
    let server = Fakesnow::start();
    server.create_schema("analytics", "flags");
    let url = server.url("analytics", "flags", "");
    let rows = evaluations("r", 300);
    let first = destination(&url).await;
    for _ in 0..2 {
        assert_eq!(
            first.send(&batch("b1", &rows)).await,
            SendOutcome::Delivered
        );
    }
    let restarted = destination(&url).await;
    let mut overlapping = evaluations("r", 310);
    overlapping.reverse();
    overlapping.push(evaluation("r-0", Some("user")));
    assert_eq!(
        restarted.send(&batch("b2", &overlapping)).await,
        SendOutcome::Delivered
    );

    assert_eq!(
        server.count("SELECT count(*) FROM analytics.flags.evaluation_events"),
        310
    );
    let duplicates =
        "SELECT count(*) FROM (SELECT event_id FROM analytics.flags.evaluation_events \
                      GROUP BY event_id, context_kind HAVING count(*) > 1)";
    assert_eq!(server.count(duplicates), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_match_is_a_permanent_error_naming_the_column() {
    let server = Fakesnow::start();
    server.create_schema("analytics", "flags");
    let columns: Vec<String> = flagstream::event::schema::warehouse::METRIC_COLUMNS
        .iter()
        .map(|c| format!("{} TEXT", c.name))
        .collect();
    server.sql(&[&format!(
        "CREATE TABLE analytics.flags.metric_events ({})",
        columns.join(", ")
    )]);
    let dest = destination(&server.url("analytics", "flags", "")).await;
    let failure = failure_of(dest.send(&batch("b", &[metric("m", 1.0)])).await);
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.reason.contains("metric_events") && failure.reason.contains("context_anonymous"),
        "{}",
        failure.reason
    );
    assert_eq!(
        server.count("SELECT count(*) FROM analytics.flags.metric_events"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_pair_login_loads_through_the_driver_protocol() {
    let server = Fakesnow::start();
    server.create_schema("analytics", "flags");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/dest/snowflake/testdata/rsa_key.p8"
    );
    let url = server
        .url("analytics", "flags", &format!("private_key=file:{key}"))
        .replace("&password=unused", "");
    let dest = destination(&url).await;
    assert_eq!(
        dest.send(&batch("b", &evaluations("k", 5))).await,
        SendOutcome::Delivered
    );
    assert_eq!(
        server.count("SELECT count(*) FROM analytics.flags.evaluation_events"),
        5
    );
}
