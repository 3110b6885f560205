//! The PostgreSQL destination against a real PostgreSQL 15 cluster (one per test): types
//! round-trip, re-sent batches add nothing, a mismatched table is a named permanent error,
//! a refused row is isolated by event id, missing databases and permissions are permanent and
//! named, an outage is retriable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flagstream::dest::{Batch, BatchItem, FailureClass, SendOutcome};
use flagstream::event::Schema;
use serde_json::{json, Value};

use crate::support::cloud::destination;
use crate::support::postgres::Cluster;
use crate::support::slow_link::SlowLink;

/// A complete `evaluation_events` row (every column, as the warehouse schema emits it).
pub(crate) fn evaluation(event_id: &str, context_kind: Option<&str>) -> Value {
    json!({
        "table": "evaluation_events",
        "event_id": event_id,
        "project": "default",
        "environment": "production",
        "kind": "feature",
        "flag_key": "new-checkout",
        "flag_version": "12",
        "context_kind": context_kind,
        "context_key": "user-1",
        "context_anonymous": false,
        "context_attributes": "{\"plan\":\"pro\",\"seats\":12345678901234}",
        "variation_index": 1,
        "variation_name": null,
        "variation_value": "{\"colour\":\"grün\",\"nested\":[1,2.5,null]}",
        "default_value": "false",
        "used_default": false,
        "reason_kind": "RULE_MATCH",
        "reason_detail": null,
        "in_experiment": true,
        "prereq_of": null,
        "sampling_ratio": null,
        "source": null,
        "creation_date": 1_716_999_999_001i64,
        "timestamp": "2024-05-29T16:26:39.001Z",
        "received_at": 1_717_000_000_123i64,
    })
}

/// A `metric_events` row.
pub(crate) fn metric(event_id: &str, value: f64) -> Value {
    json!({
        "table": "metric_events",
        "event_id": event_id,
        "project": "default",
        "environment": "production",
        "kind": "custom",
        "metric_key": "checkout",
        "context_kind": "user",
        "context_key": "user-1",
        "context_anonymous": true,
        "metric_value": value,
        "data": null,
        "url": null,
        "selector": null,
        "creation_date": 9_007_199_254_740_993i64,
        "timestamp": "1999-12-31T23:59:59.999Z",
        "received_at": 1_717_000_000_123i64,
    })
}

pub(crate) fn item(row: &Value) -> BatchItem {
    BatchItem {
        event_id: row["event_id"].as_str().unwrap().into(),
        payload: Bytes::from(serde_json::to_vec(row).unwrap()),
        kind: "feature".into(),
        key: None,
        context_key: None,
        environment: "production".into(),
        received_at_ms: 1_717_000_000_123,
    }
}

pub(crate) fn batch(id: &str, rows: &[Value]) -> Batch {
    Batch {
        id: id.into(),
        schema: Schema::Warehouse,
        items: rows.iter().map(item).collect(),
        lines: None,
    }
}

pub(crate) fn evaluations(prefix: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| evaluation(&format!("{prefix}-{i}"), Some("user")))
        .collect()
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

pub(crate) fn failure_of(outcome: SendOutcome) -> flagstream::dest::Failure {
    match outcome {
        SendOutcome::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn types_round_trip_as_the_schema_documents() {
    let cluster = Cluster::start();
    let db = cluster.create_database("types").await;
    let dest = destination(&cluster.url("types", "db_schema=flags")).await;
    let rows = [
        evaluation("e-1", Some("user")),
        evaluation("e-1", Some("org")),
        evaluation("e-2", None),
        metric("m-1", 1.0e300),
    ];
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);

    let row = db
        .query_one(
            "SELECT timestamp, creation_date, variation_value::text, context_attributes::text, \
             in_experiment, variation_name, variation_index FROM flags.evaluation_events \
             WHERE event_id = 'e-1' AND context_kind = 'org'",
            &[],
        )
        .await
        .unwrap();
    let timestamp: SystemTime = row.get(0);
    assert_eq!(
        timestamp,
        UNIX_EPOCH + Duration::from_millis(1_716_999_999_001)
    );
    assert_eq!(row.get::<_, i64>(1), 1_716_999_999_001);
    let value: Value = serde_json::from_str(row.get::<_, &str>(2)).unwrap();
    assert_eq!(value, json!({"colour": "grün", "nested": [1, 2.5, null]}));
    let attributes: Value = serde_json::from_str(row.get::<_, &str>(3)).unwrap();
    assert_eq!(
        attributes["seats"],
        json!(12_345_678_901_234i64),
        "{attributes}"
    );
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, Option<&str>>(5), None);
    assert_eq!(row.get::<_, Option<i64>>(6), Some(1));

    let no_context: i64 = db
        .query_one(
            "SELECT count(*) FROM flags.evaluation_events WHERE event_id = 'e-2' AND context_kind IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(no_context, 1);

    let metric = db
        .query_one(
            "SELECT metric_value, creation_date, timestamp, data::text FROM flags.metric_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(metric.get::<_, f64>(0), 1.0e300);
    assert_eq!(metric.get::<_, i64>(1), 9_007_199_254_740_993);
    let timestamp: SystemTime = metric.get(2);
    assert_eq!(
        timestamp,
        UNIX_EPOCH + Duration::from_millis(946_684_799_999)
    );
    assert_eq!(metric.get::<_, Option<&str>>(3), None);

    let types: Vec<(String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'flags' AND table_name = 'evaluation_events' \
             AND column_name IN ('timestamp', 'variation_value', 'creation_date')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        types.contains(&("timestamp".into(), "timestamp with time zone".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("variation_value".into(), "jsonb".into())),
        "{types:?}"
    );
    assert!(
        types.contains(&("creation_date".into(), "bigint".into())),
        "{types:?}"
    );
}

/// `query_indexes=false`: the tables get their unique key (exactly once still holds on a
/// re-send) but not the `timestamp` / `flag_key` indexes.
#[tokio::test]
async fn without_query_indexes_only_the_unique_key_is_created() {
    let cluster = Cluster::start();
    let db = cluster.create_database("keyonly").await;
    let url = cluster.url("keyonly", "query_indexes=false");
    let dest = destination(&url).await;
    let rows = evaluations("k", 20);
    for _ in 0..2 {
        assert_eq!(dest.send(&batch("b1", &rows)).await, SendOutcome::Delivered);
    }
    assert_eq!(count(&db, "evaluation_events").await, 20);
    let indexes: Vec<String> = db
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'evaluation_events' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(indexes, ["evaluation_events_key"]);
}

#[tokio::test]
async fn a_resent_batch_inserts_nothing_twice() {
    let cluster = Cluster::start();
    let db = cluster.create_database("resend").await;
    let url = cluster.url("resend", "");
    let rows = evaluations("r", 300);
    let first = destination(&url).await;
    assert_eq!(
        first.send(&batch("b1", &rows)).await,
        SendOutcome::Delivered
    );
    // Again through the same destination, and through a new one (a restarted process).
    assert_eq!(
        first.send(&batch("b1", &rows)).await,
        SendOutcome::Delivered
    );
    let restarted = destination(&url).await;
    let mut overlapping = evaluations("r", 310);
    overlapping.reverse();
    assert_eq!(
        restarted.send(&batch("b2", &overlapping)).await,
        SendOutcome::Delivered
    );

    assert_eq!(count(&db, "evaluation_events").await, 310);
    let duplicates: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT event_id FROM evaluation_events \
             GROUP BY event_id, context_kind HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
    let migrations: i64 = db
        .query_one("SELECT count(*) FROM flagstream_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        migrations, 3,
        "one version-1 migration per table, applied once"
    );
}

#[tokio::test]
async fn a_table_that_does_not_match_is_a_permanent_error_naming_the_column() {
    let cluster = Cluster::start();
    let db = cluster.create_database("mismatch").await;
    db.batch_execute("CREATE TABLE metric_events (event_id text, metric_value text)")
        .await
        .unwrap();
    let dest = destination(&cluster.url("mismatch", "")).await;
    let err = dest.check().await.unwrap_err().to_string();
    assert!(
        err.contains("public.metric_events") && err.contains("`project`"),
        "{err}"
    );

    db.batch_execute("DROP TABLE metric_events").await.unwrap();
    let dest = destination(&cluster.url("mismatch", "")).await;
    dest.check().await.unwrap();
    // An operator breaks the table after it was created: a new process finds out by name.
    db.batch_execute("ALTER TABLE evaluation_events ALTER COLUMN variation_index TYPE text")
        .await
        .unwrap();
    let dest = destination(&cluster.url("mismatch", "")).await;
    let failure = failure_of(dest.send(&batch("b", &evaluations("x", 3))).await);
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.reason.contains("public.evaluation_events")
            && failure.reason.contains("`variation_index` is text"),
        "{}",
        failure.reason
    );
    assert_eq!(count(&db, "evaluation_events").await, 0);
}

#[tokio::test]
async fn a_refused_row_is_a_permanent_failure_with_its_event_id_and_the_rest_land() {
    let cluster = Cluster::start();
    let db = cluster.create_database("refused").await;
    let dest = destination(&cluster.url("refused", "")).await;
    dest.check().await.unwrap();
    db.batch_execute(
        "ALTER TABLE evaluation_events ADD CONSTRAINT no_forbidden CHECK (context_key <> 'forbidden')",
    )
    .await
    .unwrap();
    let mut rows = evaluations("ok", 40);
    rows[17]["context_key"] = json!("forbidden");
    let SendOutcome::Partial { failures } = dest.send(&batch("b", &rows)).await else {
        panic!("expected a partial outcome");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].index, 17);
    assert!(!failures[0].is_retriable());
    let reason = &failures[0].failure.reason;
    assert!(
        reason.contains("ok-17") && reason.contains("no_forbidden"),
        "{reason}"
    );
    assert_eq!(count(&db, "evaluation_events").await, 39);
}

#[tokio::test]
async fn a_missing_database_or_permission_is_permanent_and_named() {
    let cluster = Cluster::start();
    let dest = destination(&cluster.url("no_such_db", "")).await;
    let failure = failure_of(dest.send(&batch("b", &evaluations("x", 2))).await);
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(failure.reason.contains("no_such_db"), "{}", failure.reason);

    let db = cluster.create_database("locked").await;
    db.batch_execute("CREATE ROLE reader LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .await
        .unwrap();
    let url = cluster
        .url("locked", "db_schema=flags")
        .replace("postgres@", "reader@");
    let failure = failure_of(
        destination(&url)
            .await
            .send(&batch("b", &evaluations("x", 2)))
            .await,
    );
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.reason.contains("`flags`") && failure.reason.contains("permission denied"),
        "{}",
        failure.reason
    );
}

#[tokio::test]
async fn an_outage_is_retriable_and_the_batch_lands_once_after_it() {
    let mut cluster = Cluster::start();
    let db = cluster.create_database("outage").await;
    let dest = destination(&cluster.url("outage", "")).await;
    let rows = evaluations("o", 50);
    assert_eq!(
        dest.send(&batch("b", &rows[..20])).await,
        SendOutcome::Delivered
    );
    drop(db);
    cluster.stop();
    let failure = failure_of(dest.send(&batch("b", &rows)).await);
    assert!(failure.is_retriable(), "{failure:?}");
    cluster.resume();
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);
    let db = cluster.client("outage").await;
    assert_eq!(count(&db, "evaluation_events").await, 50);
}

/// `kill -9` flagstream while it loads into PostgreSQL, again and again: every event accepted
/// is in `evaluation_events` exactly once at the end (0 lost, 0 duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loop_loses_nothing_and_duplicates_nothing() {
    use crate::conformance::{post, serve, wait_acknowledged};
    use crate::support::cloud::ld_bulk;

    let cluster = Cluster::start();
    let db = cluster.create_database("crash").await;
    let scratch = tempfile::tempdir().unwrap();
    let dest = cluster.url("crash", "name=conformance&batch_max_events=50");
    let mut posted = 0i64;
    for round in 0..4 {
        let mut server = serve(scratch.path(), &dest, &[]).await;
        for body in 0..3 {
            post(&server, &ld_bulk(&format!("r{round}b{body}"), 200, 7)).await;
            posted += 200;
        }
        // Kill once this round's loading has begun (some rows committed), mostly mid-way.
        let before = posted - 600;
        crate::support::eventually("loading began", Duration::from_secs(60), || async {
            match count(&db, "evaluation_events").await {
                n if n > before => Ok(()),
                n => Err(format!("{n} rows")),
            }
        })
        .await;
        server.kill9();
    }
    let server = serve(scratch.path(), &dest, &[]).await;
    wait_acknowledged(&server).await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT event_id) FROM evaluation_events",
            &[],
        )
        .await
        .unwrap();
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(distinct, posted, "every accepted event, none lost");
    assert_eq!(rows, posted, "no event twice");
}

/// A load blocked past `timeout` (another session holds the table locked) is cancelled by the
/// server and retriable; once the lock is gone the same batch lands, once.
///
/// Over a link where the server's replies take 100 ms: the refused `COPY` leaves its
/// connection out of step (a spare `ReadyForQuery` still on its way), and a connection
/// handed out again before that arrives fails the next load; the destination closes it
/// instead.
#[tokio::test]
async fn a_statement_past_its_timeout_is_retriable() {
    let cluster = Cluster::start();
    let mut db = cluster.create_database("slow").await;
    let link = SlowLink::start(cluster.addr(), Duration::from_millis(100)).await;
    let dest = destination(&cluster.url_via(link.port, "slow", "timeout=1s")).await;
    dest.check().await.unwrap();
    let locker = db.transaction().await.unwrap();
    locker
        .batch_execute("LOCK TABLE evaluation_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let rows = evaluations("slow", 10);
    let failure = failure_of(dest.send(&batch("b", &rows)).await);
    assert!(failure.is_retriable(), "{failure:?}");
    assert!(failure.reason.contains("57014"), "{}", failure.reason);
    locker.rollback().await.unwrap();
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);
    assert_eq!(count(&db, "evaluation_events").await, 10);
}

/// The fenced `sql` blocks of docs/warehouse.md, in order.
fn documented_queries() -> Vec<String> {
    let doc = include_str!("../../docs/warehouse.md");
    doc.split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_documented_queries_answer_on_loaded_rows() {
    let cluster = Cluster::start();
    let db = cluster.create_database("queries").await;
    let dest = destination(&cluster.url("queries", "")).await;
    let exposure = |id: &str, user: &str, variation: i64, at: &str| {
        let mut row = evaluation(id, Some("user"));
        row["context_key"] = json!(user);
        row["variation_index"] = json!(variation);
        row["timestamp"] = json!(at);
        row
    };
    let conversion = |id: &str, user: &str, at: &str| {
        let mut row = metric(id, 1.0);
        row["metric_key"] = json!("checkout");
        row["context_key"] = json!(user);
        row["timestamp"] = json!(at);
        row
    };
    let day1 = "2024-05-01T10:00:00.000Z";
    let day2 = "2024-05-02T10:00:00.000Z";
    let rows = [
        exposure("e0", "u0", 0, day1),
        exposure("e1", "u1", 0, day1),
        exposure("e2", "u2", 0, day2),
        exposure("e3", "u3", 0, day2),
        exposure("e4", "u0", 0, day2),
        exposure("e5", "u4", 1, day1),
        exposure("e6", "u5", 1, day2),
        conversion("m0", "u0", day2),
        conversion("m1", "u4", day2),
        // Before u5's exposure: not a conversion.
        conversion("m2", "u5", day1),
    ];
    assert_eq!(dest.send(&batch("q", &rows)).await, SendOutcome::Delivered);

    let queries = documented_queries();
    assert_eq!(queries.len(), 2, "docs/warehouse.md has two sql blocks");
    let wrapped = |query: &str, columns: &str| {
        format!(
            "SELECT {columns} FROM ({}) q",
            query.trim().trim_end_matches(';')
        )
    };
    let per_day: Vec<(String, String, Option<i64>, i64, i64)> = db
        .query(
            &wrapped(
                &queries[0],
                "day::text, flag_key, variation_index, evaluations, contexts",
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect();
    let expected_per_day = [
        ("2024-05-01", Some(0), 2, 2),
        ("2024-05-01", Some(1), 1, 1),
        ("2024-05-02", Some(0), 3, 3),
        ("2024-05-02", Some(1), 1, 1),
    ]
    .map(|(day, variation, evaluations, contexts)| {
        (
            day.to_string(),
            "new-checkout".to_string(),
            variation,
            evaluations,
            contexts,
        )
    });
    assert_eq!(per_day, expected_per_day);
    let conversion: Vec<(Option<i64>, i64, i64, String)> = db
        .query(
            &wrapped(
                &queries[1],
                "variation_index, exposed, converted, conversion_rate::text",
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    assert_eq!(
        conversion,
        [
            (Some(0), 4, 1, "0.2500".to_string()),
            (Some(1), 2, 1, "0.5000".to_string()),
        ]
    );
}

/// `sslmode=require` encrypts without verifying; `verify-full` verifies against
/// `sslrootcert` and refuses a server whose certificate it cannot verify (permanently).
#[tokio::test]
async fn tls_require_and_verify_full() {
    let (cluster, cert) = Cluster::start_with_tls();
    let db = cluster.create_database("tls").await;
    let url = |mode: &str| cluster.url("tls", "").replace("sslmode=disable", mode);
    let require = destination(&url("sslmode=require")).await;
    assert_eq!(
        require.send(&batch("a", &evaluations("a", 3))).await,
        SendOutcome::Delivered
    );
    let verified = format!("sslmode=verify-full&sslrootcert={}", cert.display());
    let verify = destination(&url(&verified)).await;
    assert_eq!(
        verify.send(&batch("b", &evaluations("b", 3))).await,
        SendOutcome::Delivered
    );
    let encrypted: i64 = db
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 2, "{encrypted} TLS connections");

    // The platform's roots do not know the self-signed certificate.
    let unverified = destination(&url("sslmode=verify-full")).await;
    let failure = failure_of(unverified.send(&batch("c", &evaluations("c", 3))).await);
    assert_eq!(failure.class, FailureClass::Permanent, "{failure:?}");
    assert!(failure.reason.contains("certificate"), "{}", failure.reason);
    assert_eq!(count(&db, "evaluation_events").await, 6);
}
