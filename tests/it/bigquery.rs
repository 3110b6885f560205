//! The BigQuery destination against bqemulator (REST, one emulator per test): tables created
//! partitioned and clustered, rows and types as documented, every event id once, a
//! mismatched table and a missing dataset are named permanent errors, `mode=stream` lands
//! rows through `insertAll`, an outage is retriable.
//!
//! bqemulator ignores the job id of an upload and never answers 409 (see
//! [`crate::support::bigquery`]), so the job-id idempotency — a re-sent batch is refused as a
//! duplicate job and counted delivered; a failed job's id is spent and the next id of the
//! sequence is used; a running job is polled — is checked against [`JobIdContract`], an
//! in-process server answering as BigQuery documents it (the 409 `duplicate` error body,
//! job resources with `status.state` / `errorResult`).

use std::collections::HashMap;
use std::sync::Mutex;

use flagstream::dest::{FailureClass, SendOutcome};
use serde_json::{json, Value};

use crate::postgres::{batch, evaluation, evaluations, failure_of, metric};
use crate::support::bigquery::{BqEmulator, PROJECT};
use crate::support::cloud::destination;
use crate::support::http_receivers::{Answer, Contract, Received, Receiver};

/// `SELECT count(*)` of `sql`'s rows, as a number.
async fn count(emulator: &BqEmulator, sql: &str) -> i64 {
    let rows = emulator.query(sql).await;
    rows[0][0].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_jobs_create_the_tables_and_land_rows_with_the_documented_types() {
    let emulator = BqEmulator::start();
    emulator.create_dataset("flags").await;
    let dest = destination(&emulator.url("flags", "")).await;
    dest.check().await.unwrap();
    let rows = [
        evaluation("e-1", Some("user")),
        evaluation("e-1", Some("org")),
        evaluation("e-2", None),
        metric("m-1", 1.0e300),
    ];
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);

    let table = emulator.table("flags", "evaluation_events").await;
    assert_eq!(
        table["timePartitioning"],
        json!({"type": "DAY", "field": "timestamp"})
    );
    assert_eq!(table["clustering"]["fields"], json!(["flag_key"]));
    let fields = table["schema"]["fields"].as_array().unwrap();
    let field = |name: &str| fields.iter().find(|f| f["name"] == name).unwrap().clone();
    assert_eq!(field("event_id")["mode"], "REQUIRED");
    assert_eq!(field("variation_value")["type"], "JSON");
    assert_eq!(field("timestamp")["type"], "TIMESTAMP");

    let row = &emulator
        .query(
            "SELECT UNIX_MILLIS(timestamp), creation_date, TO_JSON_STRING(variation_value), \
             TO_JSON_STRING(context_attributes), in_experiment, variation_name, variation_index \
             FROM flags.evaluation_events WHERE event_id = 'e-1' AND context_kind = 'org'",
        )
        .await[0];
    assert_eq!(row[0], "1716999999001");
    assert_eq!(row[1], "1716999999001");
    let value: Value = serde_json::from_str(row[2].as_str().unwrap()).unwrap();
    assert_eq!(value, json!({"colour": "grün", "nested": [1, 2.5, null]}));
    let attributes: Value = serde_json::from_str(row[3].as_str().unwrap()).unwrap();
    assert_eq!(attributes["seats"], json!(12_345_678_901_234i64));
    assert_eq!(row[4], "true");
    assert_eq!(row[5], Value::Null);
    assert_eq!(row[6], "1");
    let no_context = "SELECT count(*) FROM flags.evaluation_events \
                      WHERE event_id = 'e-2' AND context_kind IS NULL";
    assert_eq!(count(&emulator, no_context).await, 1);

    let metric = &emulator
        .query("SELECT metric_value, creation_date, UNIX_MILLIS(timestamp), data FROM flags.metric_events")
        .await[0];
    assert_eq!(metric[0].as_str().unwrap().parse::<f64>().unwrap(), 1.0e300);
    assert_eq!(metric[1], "9007199254740993");
    assert_eq!(metric[2], "946684799999");
    assert_eq!(metric[3], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_id_lands_once_per_context() {
    let emulator = BqEmulator::start();
    emulator.create_dataset("flags").await;
    let dest = destination(&emulator.url("flags", "")).await;
    for (n, chunk) in evaluations("x", 900).chunks(300).enumerate() {
        let outcome = dest.send(&batch(&format!("b{n}"), chunk)).await;
        assert_eq!(outcome, SendOutcome::Delivered);
    }
    let total = count(&emulator, "SELECT count(*) FROM flags.evaluation_events").await;
    let distinct = count(
        &emulator,
        "SELECT count(DISTINCT event_id) FROM flags.evaluation_events",
    )
    .await;
    assert_eq!((total, distinct), (900, 900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_match_is_a_permanent_error_naming_the_column() {
    let emulator = BqEmulator::start();
    emulator.create_dataset("flags").await;
    let mut fields: Vec<Value> = flagstream::event::schema::warehouse::EVALUATION_COLUMNS
        .iter()
        .map(|c| json!({"name": c.name, "type": "STRING", "mode": "NULLABLE"}))
        .collect();
    fields.retain(|f| f["name"] != "kind");
    emulator
        .create_table("flags", "evaluation_events", json!(fields))
        .await;
    let dest = destination(&emulator.url("flags", "")).await;
    let failure = failure_of(dest.send(&batch("b", &evaluations("m", 3))).await);
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.reason.contains("evaluation_events")
            && failure.reason.contains("`kind` is missing"),
        "{}",
        failure.reason
    );
    // Every column STRING: the first typed column is named.
    let check = dest.check().await.unwrap_err().to_string();
    assert!(check.contains("evaluation_events"), "{check}");
    assert_eq!(
        count(&emulator, "SELECT count(*) FROM flags.evaluation_events").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dataset_is_permanent_and_named() {
    let emulator = BqEmulator::start();
    let dest = destination(&emulator.url("no_such_dataset", "")).await;
    let failure = failure_of(dest.send(&batch("b", &evaluations("m", 1))).await);
    assert_eq!(failure.class, FailureClass::Permanent, "{}", failure.reason);
    assert!(
        failure.reason.contains("no_such_dataset"),
        "{}",
        failure.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_inserts_every_row_with_json_columns_as_values() {
    let emulator = BqEmulator::start();
    emulator.create_dataset("flags").await;
    let dest = destination(&emulator.url("flags", "mode=stream")).await;
    let mut rows = evaluations("s", 20);
    rows.push(evaluation("s-0", Some("org")));
    assert_eq!(dest.send(&batch("b", &rows)).await, SendOutcome::Delivered);
    let sql = "SELECT count(*) FROM flags.evaluation_events \
               WHERE JSON_VALUE(variation_value, '$.colour') = 'grün'";
    assert_eq!(count(&emulator, sql).await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_retriable_and_the_batch_lands_once_after_it() {
    let mut emulator = BqEmulator::start();
    emulator.create_dataset("flags").await;
    let dest = destination(&emulator.url("flags", "timeout=2s")).await;
    dest.check().await.unwrap();
    emulator.stop();
    let failure = failure_of(dest.send(&batch("b", &evaluations("o", 5))).await);
    assert!(failure.is_retriable(), "{}", failure.reason);
    emulator.restart();
    assert_eq!(
        dest.send(&batch("b", &evaluations("o", 5))).await,
        SendOutcome::Delivered
    );
    assert_eq!(
        count(&emulator, "SELECT count(*) FROM flags.evaluation_events").await,
        5
    );
}

/// BigQuery's job-id contract for one dataset, as documented: `datasets.get`, `tables.get` /
/// `tables.insert`,
/// multipart `jobs.insert` that refuses a job id it has seen (409, reason `duplicate`), and
/// `jobs.get`. Jobs answer `RUNNING` to their first `jobs.get` when `running_polls` is set;
/// the first upload fails with `backendError` when `fail_first_job` is.
#[derive(Default)]
struct JobIdContract {
    fail_first_job: bool,
    running_polls: bool,
    /// job id → (failed, gets so far)
    jobs: Mutex<HashMap<String, (bool, usize)>>,
    tables: Mutex<HashMap<String, Value>>,
}

fn job_resource(id: &str, state: &str, failed: bool) -> String {
    let mut status = json!({"state": state});
    if failed {
        status["errorResult"] =
            json!({"reason": "backendError", "message": "Backend error. Job aborted."});
    }
    json!({"kind": "bigquery#job", "jobReference": {"projectId": PROJECT, "jobId": id}, "status": status})
        .to_string()
}

/// The `jobId` in a multipart upload's metadata part.
fn uploaded_job_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let metadata = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n--")
        .next()
        .unwrap();
    let metadata: Value = serde_json::from_str(metadata).unwrap();
    metadata["jobReference"]["jobId"]
        .as_str()
        .unwrap()
        .to_string()
}

impl Contract for JobIdContract {
    fn answer(&self, request: &Received, _accepted: &[Received]) -> Answer {
        let path = request.path.split('?').next().unwrap_or_default();
        let last = path.rsplit('/').next().unwrap_or_default().to_string();
        if request.method == "GET" && path.ends_with("/datasets/flags") {
            return Answer::new(
                200,
                json!({"datasetReference": {"datasetId": "flags"}}).to_string(),
            );
        }
        match (
            request.method.as_str(),
            path.contains("/jobs"),
            path.ends_with("/tables"),
        ) {
            ("POST", true, _) => {
                let id = uploaded_job_id(&request.body);
                let mut jobs = self.jobs.lock().unwrap();
                if jobs.contains_key(&id) {
                    let message = format!("Already Exists: Job {PROJECT}:US.{id}");
                    return Answer::new(
                        409,
                        json!({"error": {"code": 409, "message": message,
                        "errors": [{"domain": "global", "reason": "duplicate", "message": message}],
                        "status": "ALREADY_EXISTS"}})
                        .to_string(),
                    );
                }
                let failed = self.fail_first_job && jobs.is_empty();
                jobs.insert(id.clone(), (failed, 0));
                let state = if self.running_polls {
                    "RUNNING"
                } else {
                    "DONE"
                };
                Answer::accepted(200, job_resource(&id, state, failed && !self.running_polls))
            }
            ("GET", true, _) => match self.jobs.lock().unwrap().get_mut(&last) {
                Some((failed, gets)) => {
                    *gets += 1;
                    let state = if self.running_polls && *gets < 2 {
                        "RUNNING"
                    } else {
                        "DONE"
                    };
                    Answer::new(200, job_resource(&last, state, *failed && state == "DONE"))
                }
                None => Answer::new(
                    404,
                    r#"{"error":{"code":404,"errors":[{"reason":"notFound"}]}}"#,
                ),
            },
            ("POST", false, true) => {
                let resource: Value = serde_json::from_slice(&request.body).unwrap();
                let table = resource["tableReference"]["tableId"]
                    .as_str()
                    .unwrap()
                    .to_string();
                self.tables.lock().unwrap().insert(table, resource.clone());
                Answer::new(200, resource.to_string())
            }
            ("GET", false, false) => match self.tables.lock().unwrap().get(&last) {
                Some(resource) => Answer::new(200, resource.to_string()),
                None => Answer::new(
                    404,
                    r#"{"error":{"code":404,"errors":[{"reason":"notFound"}]}}"#,
                ),
            },
            _ => Answer::new(400, "unexpected request"),
        }
    }
}

/// The job ids of the uploads the contract accepted.
fn accepted_job_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .accepted()
        .iter()
        .map(|request| uploaded_job_id(&request.body))
        .collect()
}

fn contract_url(receiver: &Receiver) -> String {
    format!(
        "bigquery://{PROJECT}/flags?endpoint={}",
        receiver.base_url()
    )
}

#[tokio::test]
async fn a_resent_batch_is_refused_as_a_duplicate_job_and_counted_delivered() {
    let receiver = Receiver::start(JobIdContract::default()).await;
    let rows = evaluations("r", 10);
    for _ in 0..2 {
        let dest = destination(&contract_url(&receiver)).await;
        assert_eq!(dest.send(&batch("b1", &rows)).await, SendOutcome::Delivered);
    }
    let ids = accepted_job_ids(&receiver);
    assert_eq!(ids.len(), 1, "one job loaded: {ids:?}");
    assert!(
        ids[0].starts_with("flagstream_evaluation_events_b1_"),
        "{ids:?}"
    );
    let refused = receiver
        .answered()
        .iter()
        .filter(|(_, status)| *status == 409)
        .count();
    assert_eq!(
        refused, 1,
        "the re-sent batch's job was refused as a duplicate"
    );
}

#[tokio::test]
async fn a_failed_job_spends_its_id_and_the_next_id_loads_the_batch() {
    let receiver = Receiver::start(JobIdContract {
        fail_first_job: true,
        ..JobIdContract::default()
    })
    .await;
    let dest = destination(&contract_url(&receiver)).await;
    let rows = evaluations("f", 3);
    let failure = failure_of(dest.send(&batch("b1", &rows)).await);
    assert!(
        failure.is_retriable() && failure.reason.contains("backendError"),
        "{}",
        failure.reason
    );
    assert_eq!(dest.send(&batch("b1", &rows)).await, SendOutcome::Delivered);
    assert_eq!(dest.send(&batch("b1", &rows)).await, SendOutcome::Delivered);
    let ids = accepted_job_ids(&receiver);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], format!("{}_r1", ids[0]));
}

#[tokio::test]
async fn a_running_job_is_polled_until_done() {
    let receiver = Receiver::start(JobIdContract {
        running_polls: true,
        ..JobIdContract::default()
    })
    .await;
    let dest = destination(&contract_url(&receiver)).await;
    assert_eq!(
        dest.send(&batch("b1", &evaluations("p", 2))).await,
        SendOutcome::Delivered
    );
    let polls = receiver
        .answered()
        .iter()
        .filter(|(request, _)| request.method == "GET" && request.path.contains("/jobs/"))
        .count();
    assert_eq!(polls, 2, "RUNNING, then DONE");
}
