//! The real SDK payload plus a 100k-event load through `flagstream serve` into one destination
//! per format — Parquet, CSV, NDJSON, NDJSON.gz and NDJSON.zst files, Parquet on S3 (moto) — read back by
//! DuckDB and pyarrow. The NDJSON rows are the reference (checked against what was sent);
//! every reader must see each of them exactly once, with the same values, the documented
//! Parquet types, the right partition columns, and working equality filters.
//!
//! Two tests (Parquet on files and S3; the row formats), so each stays well inside the test
//! runner's time limit on a debug build; they run side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use flagstream::event::schema::civil_date;
use flagstream::event::schema::warehouse::{self, Column, ColumnType};

use crate::support::cloud::{self, StandIn};
use crate::support::readers::{read_objects, TableRead};
use crate::support::serve::{production_env, Flagstream, SDK_KEY};

const LOAD_EVENTS: u64 = 100_000;
const PER_REQUEST: u64 = 1_000;
/// Creation time of load event 0 (2026-11-29T00:00:00Z); the SDK capture is older.
const LOAD_START_MS: u64 = 1_795_910_400_000;
const COMMON: &str = "schema=warehouse&expand_summaries=true&kinds=default,summary&rotate=1s";
/// The bucket and prefix of the S3 destination.
const S3_SOURCE: &str = "s3://objects/exports";
/// Where the documented example reads from (replaced by the test's directory).
const DOC_EXPORT_DIR: &str = "/var/lib/flagstream/export";

/// A warehouse table's rows by primary key.
type Rows = BTreeMap<String, Map<String, Value>>;

/// One destination under test: its name (also its directory), format, and URL options.
struct Target {
    name: &'static str,
    format: &'static str,
    options: &'static str,
}

/// The reference every run also writes: plain NDJSON, no partitions.
const NDJSON: Target = Target {
    name: "ndjson",
    format: "ndjson",
    options: "format=ndjson",
};

/// Parquet files and Parquet objects on S3 (moto), both read by DuckDB and pyarrow; DuckDB
/// also runs the documented example over the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_and_s3_objects_read_back_exactly_once_with_the_documented_types() {
    let parquet = Target {
        name: "parquet",
        format: "parquet",
        options: "format=parquet&partitions=dt,hour",
    };
    run(&[parquet], true).await;
}

/// CSV, NDJSON, NDJSON.gz and NDJSON.zst files (Hive-partitioned), read by DuckDB and pyarrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_ndjson_ndjson_gz_and_ndjson_zst_files_read_back_exactly_once() {
    let csv = Target {
        name: "csv",
        format: "csv",
        options: "format=csv&partitions=dt&csv_columns=table,event_id,flag_key,metric_key,\
                  context_kind,context_key,counter_index,variation_index,metric_value,count,timestamp",
    };
    let gz = Target {
        name: "ndjson_gz",
        format: "ndjson.gz",
        options: "format=ndjson.gz&partitions=kind,dt,hour",
    };
    let zst = Target {
        name: "ndjson_zst",
        format: "ndjson.zst",
        options: "format=ndjson.zst&zstd_level=3&partitions=dt,hour",
    };
    run(&[csv, NDJSON, gz, zst], false).await;
}

/// Deliver the SDK payload and the load to `targets` (plus the NDJSON reference, and
/// Parquet on S3 with `s3`), then check every reader over every target.
async fn run(targets: &[Target], s3: bool) {
    let moto = s3.then(StandIn::moto);
    if let Some(moto) = &moto {
        cloud::s3::create_bucket(&cloud::s3::client(moto).await, "objects").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let server = start(dir.path(), &out, targets, moto.as_ref()).await;
    send_sdk_payload(&server).await;
    send_load(&server).await;
    server.wait_delivered(Duration::from_secs(600)).await;

    let reference = reference_rows(&out.join(NDJSON.name));
    check_reference(&reference);
    let parquet_dir = out.join("parquet").display().to_string();
    let mut sources: Vec<(&str, String, Option<String>)> = targets
        .iter()
        .map(|t| (t.format, out.join(t.name).display().to_string(), None))
        .collect();
    if let Some(moto) = &moto {
        sources.push(("parquet", S3_SOURCE.into(), Some(moto.host_port())));
    }
    for (format, source, endpoint) in &sources {
        // DuckDB and pyarrow side by side: each is one Python process.
        std::thread::scope(|scope| {
            for reader in ["duckdb", "pyarrow"] {
                let documented = reader == "duckdb" && *source == parquet_dir;
                let request = json!({
                    "reader": reader,
                    "format": format,
                    "source": source,
                    "s3": endpoint.as_ref().map(|e| json!({ "endpoint": e })),
                    "tables": tables_request(),
                    "sql": documented.then(|| documented_query().replace(DOC_EXPORT_DIR, source)),
                });
                let reference = &reference;
                scope.spawn(move || check_reader(reader, format, &request, reference));
            }
        });
    }
}

/// Run one reader and check every table it read against the reference.
fn check_reader(
    reader: &str,
    format: &str,
    request: &Value,
    reference: &BTreeMap<&'static str, Rows>,
) {
    let output = read_objects(request);
    let what = format!("{reader} reading {format} from {}", request["source"]);
    for (table, columns) in warehouse::TABLES {
        let read = &output.tables[table];
        check_table(
            &what,
            reader,
            format,
            table,
            columns,
            &reference[table],
            read,
        );
    }
    if !request["sql"].is_null() {
        let rows = output.sql_rows.as_ref().expect("the example's rows");
        assert_eq!(
            *rows,
            expected_example_rows(&reference["evaluation_events"])
        );
    }
}

/// The server with one destination per target, the NDJSON reference, and Parquet on S3.
async fn start(dir: &Path, out: &Path, targets: &[Target], moto: Option<&StandIn>) -> Flagstream {
    let mut destinations: Vec<String> = targets
        .iter()
        .chain(
            targets
                .iter()
                .all(|t| t.name != NDJSON.name)
                .then_some(&NDJSON),
        )
        .map(|t| {
            let dir = out.join(t.name);
            format!(
                "file://{}?name={}&{COMMON}&{}",
                dir.display(),
                t.name,
                t.options
            )
        })
        .collect();
    if let Some(moto) = moto {
        destinations.push(format!(
            "s3://{}?name=s3&region=us-east-1&endpoint={}&{COMMON}&format=parquet",
            &S3_SOURCE["s3://".len()..],
            moto.endpoint()
        ));
    }
    let mut builder = Flagstream::builder(dir.join("data"))
        .args(["--environment", &production_env()])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for destination in &destinations {
        builder = builder.args(["--dest", destination]);
    }
    builder.start().await
}

async fn post_bulk(server: &Flagstream, headers: &[(&str, &str)], body: String) {
    let mut request = reqwest::Client::new()
        .post(server.url("/bulk"))
        .header("Authorization", SDK_KEY)
        .header("Content-Type", "application/json")
        .header("X-LaunchDarkly-Event-Schema", "4")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// The LaunchDarkly Python SDK's captured `/bulk` payload, byte for byte (key order matters:
/// summary counters are numbered in the order flags are listed), with its own headers.
async fn send_sdk_payload(server: &Flagstream) {
    #[derive(serde::Deserialize)]
    struct Capture {
        headers: BTreeMap<String, String>,
        body: Box<serde_json::value::RawValue>,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/inputs/ld-python-sdk-bulk.json"
    );
    let capture: Capture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let headers: Vec<(&str, &str)> = ["User-Agent", "X-LaunchDarkly-Payload-ID"]
        .into_iter()
        .map(|name| (name, capture.headers[name].as_str()))
        .collect();
    post_bulk(server, &headers, capture.body.get().to_string()).await;
}

/// Load event `n`: six in ten single-context evaluations, two in ten two-context
/// evaluations (two rows each), two in ten custom metrics.
fn load_event(n: u64) -> String {
    let created = LOAD_START_MS + n;
    let (flag, user, org) = (n % 20, n % 1000, n % 7);
    let value = n.is_multiple_of(3);
    match n % 10 {
        0..=5 => format!(
            r#"{{"kind":"feature","creationDate":{created},"key":"flag-{flag}","version":3,"variation":{},"value":{value},"default":false,"context":{{"kind":"user","key":"user-{user}","name":"U{user}"}}}}"#,
            n % 3
        ),
        6 | 7 => format!(
            r#"{{"kind":"feature","creationDate":{created},"key":"flag-{flag}","version":3,"variation":1,"value":"v{}","default":"off","reason":{{"kind":"FALLTHROUGH"}},"context":{{"kind":"multi","user":{{"key":"user-{user}"}},"org":{{"key":"org-{org}","plan":"pro"}}}}}}"#,
            n % 4
        ),
        _ => format!(
            r#"{{"kind":"custom","creationDate":{created},"key":"purchase","context":{{"kind":"user","key":"user-{user}"}},"data":{{"n":{n}}},"metricValue":{}}}"#,
            n as f64 * 0.5
        ),
    }
}

async fn send_load(server: &Flagstream) {
    for first in (0..LOAD_EVENTS).step_by(PER_REQUEST as usize) {
        let events: Vec<String> = (first..first + PER_REQUEST).map(load_event).collect();
        post_bulk(server, &[], format!("[{}]", events.join(","))).await;
    }
}

/// The equality filters each reader runs, per table.
fn filters() -> Value {
    json!({
        "evaluation_events": [["flag_key", "flag-3"], ["context_key", "user-42"]],
        "metric_events": [["context_key", "user-48"]],
        "summary_counters": [["flag_key", "new-checkout"]],
    })
}

/// What readers read of each table: its columns and the equality filters.
fn tables_request() -> Value {
    let tables: Map<String, Value> = warehouse::TABLES
        .iter()
        .map(|(table, columns)| {
            let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
            let spec = json!({ "columns": names, "filters": filters()[table] });
            (table.to_string(), spec)
        })
        .collect();
    Value::Object(tables)
}

/// A row's primary key as text (numbers and their CSV text agree); `get` reads a column.
fn row_key<'a>(table: &str, get: impl Fn(&str) -> Option<&'a Value>) -> String {
    let columns: &[&str] = match table {
        "summary_counters" => &["event_id", "flag_key", "counter_index"],
        _ => &["event_id", "context_kind"],
    };
    let parts: Vec<String> = columns
        .iter()
        .map(|c| cell(get(c).unwrap_or(&Value::Null)))
        .collect();
    parts.join("|")
}

/// A value as CSV text: strings as they are, null (and empty) as empty, others as JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The NDJSON destination's rows, by table and key (each key once).
fn reference_rows(dir: &Path) -> BTreeMap<&'static str, Rows> {
    let mut tables: BTreeMap<&'static str, Rows> = warehouse::TABLES
        .iter()
        .map(|(t, _)| (*t, Rows::new()))
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let row: Map<String, Value> = serde_json::from_str(line).unwrap();
            let table = warehouse::TABLES
                .iter()
                .find(|(t, _)| row["table"] == *t)
                .map(|(t, _)| *t)
                .unwrap_or_else(|| panic!("unknown table in {line}"));
            let key = row_key(table, |c| row.get(c));
            let rows = tables.get_mut(table).unwrap();
            assert!(rows.insert(key, row).is_none(), "twice in NDJSON: {line}");
        }
    }
    tables
}

/// The reference holds exactly what was sent: the SDK payload's rows as the golden
/// expectation has them, and every load event's rows once.
fn check_reference(reference: &BTreeMap<&'static str, Rows>) {
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/expected/ld-python-sdk-bulk.warehouse.expanded.ndjson"
    );
    let comparable = |row: &Map<String, Value>| {
        let mut row = row.clone();
        for volatile in ["event_id", "project", "received_at"] {
            row.remove(volatile);
        }
        serde_json::to_string(&row).unwrap()
    };
    let mut expected: Vec<String> = std::fs::read_to_string(golden)
        .unwrap()
        .lines()
        .map(|line| comparable(&serde_json::from_str(line).unwrap()))
        .collect();
    let is_sdk = |row: &&Map<String, Value>| {
        row.get("creation_date")
            .and_then(Value::as_u64)
            .is_none_or(|ms| ms < LOAD_START_MS)
    };
    let mut sdk: Vec<String> = reference
        .values()
        .flat_map(|rows| rows.values())
        .filter(is_sdk)
        .map(comparable)
        .collect();
    expected.sort();
    sdk.sort();
    let missing: Vec<&String> = expected.iter().filter(|r| !sdk.contains(r)).collect();
    let extra: Vec<&String> = sdk.iter().filter(|r| !expected.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && sdk.len() == expected.len(),
        "the SDK payload's rows: missing {missing:#?}, unexpected {extra:#?}"
    );

    let mut per_event = BTreeMap::<u64, usize>::new();
    for row in reference.values().flat_map(|rows| rows.values()) {
        let created = row.get("creation_date").and_then(Value::as_u64);
        if let Some(ms) = created.filter(|&ms| ms >= LOAD_START_MS) {
            *per_event.entry(ms - LOAD_START_MS).or_default() += 1;
        }
    }
    assert_eq!(
        per_event.len() as u64,
        LOAD_EVENTS,
        "every load event has rows"
    );
    for (n, rows) in per_event {
        assert_eq!(
            rows,
            if n % 10 == 6 || n % 10 == 7 { 2 } else { 1 },
            "rows of event {n}"
        );
    }
}

/// One reader's view of one table against the reference.
fn check_table(
    what: &str,
    reader: &str,
    format: &str,
    table: &str,
    columns: &[Column],
    want: &Rows,
    read: &TableRead,
) {
    let csv = format == "csv";
    let mut seen = BTreeSet::new();
    for i in 0..read.len() {
        let key = row_key(table, |c| read.get(c, i));
        let expected = want
            .get(&key)
            .unwrap_or_else(|| panic!("{what}: {table} row {key} was never written"));
        assert!(seen.insert(key.clone()), "{what}: {table} row {key} twice");
        for column in columns {
            let Some(got) = read.get(column.name, i) else {
                assert!(csv, "{what}: {table}.{} missing", column.name);
                continue;
            };
            let wrote = &expected[column.name];
            assert!(
                same(column.ty, csv, wrote, got),
                "{what}: {table}.{} of {key}: wrote {wrote}, read {got}",
                column.name
            );
        }
        check_partitions(what, |c| read.get(c, i), expected);
    }
    assert_eq!(seen.len(), want.len(), "{what}: {table} rows");
    let expected_counts: Vec<u64> = filters()[table]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let (column, value) = (f[0].as_str().unwrap(), &f[1]);
            want.values().filter(|r| &r[column] == value).count() as u64
        })
        .collect();
    assert!(
        expected_counts.iter().all(|&n| n > 0),
        "{table}: filters match rows"
    );
    assert_eq!(
        read.filter_counts, expected_counts,
        "{what}: {table} filters"
    );
    if format == "parquet" {
        check_parquet_types(what, reader, columns, read);
    }
}

fn same(ty: ColumnType, csv: bool, wrote: &Value, read: &Value) -> bool {
    if csv {
        return cell(wrote) == cell(read);
    }
    match ty {
        ColumnType::Timestamp => millis(wrote) == millis(read),
        ColumnType::Int64 | ColumnType::Float64 => {
            wrote.is_null() == read.is_null() && wrote.as_f64() == read.as_f64()
        }
        _ => wrote == read,
    }
}

fn millis(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => {
            let time = humantime::parse_rfc3339(text).ok()?;
            Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
        }
        other => other.as_i64(),
    }
}

/// Hive partition columns the reader added (`dt`, `hour`) match the row's receive time.
fn check_partitions<'a>(
    what: &str,
    get: impl Fn(&str) -> Option<&'a Value>,
    expected: &Map<String, Value>,
) {
    let received = expected.get("received_at").and_then(Value::as_u64);
    if let (Some(dt), Some(ms)) = (get("dt"), received) {
        let (y, m, d) = civil_date(ms);
        assert_eq!(cell(dt), format!("{y:04}-{m:02}-{d:02}"), "{what}: dt");
    }
    if let (Some(hour), Some(ms)) = (get("hour"), received) {
        assert_eq!(
            cell(hour).parse::<u64>().ok(),
            Some(ms / 3_600_000 % 24),
            "{what}: hour"
        );
    }
}

/// The Parquet column types docs/destinations.md documents, as each reader names them.
fn check_parquet_types(what: &str, reader: &str, columns: &[Column], read: &TableRead) {
    for column in columns {
        let (ty, nullable) = &read.types[column.name];
        let expected = match (reader, column.ty) {
            ("duckdb", ColumnType::String | ColumnType::Json) => "VARCHAR",
            ("duckdb", ColumnType::Int64) => "BIGINT",
            ("duckdb", ColumnType::Float64) => "DOUBLE",
            ("duckdb", ColumnType::Bool) => "BOOLEAN",
            ("duckdb", ColumnType::Timestamp) => "TIMESTAMP WITH TIME ZONE",
            (_, ColumnType::String | ColumnType::Json) => "string",
            (_, ColumnType::Int64) => "int64",
            (_, ColumnType::Float64) => "double",
            (_, ColumnType::Bool) => "bool",
            (_, ColumnType::Timestamp) => "timestamp[ms, tz=UTC]",
        };
        assert_eq!(ty, expected, "{what}: type of {}", column.name);
        if reader == "pyarrow" {
            assert_eq!(
                *nullable, column.nullable,
                "{what}: nullability of {}",
                column.name
            );
        }
    }
}

/// The DuckDB example of docs/destinations.md (the ```sql block after the marker), so the
/// documented query is the one that runs here.
fn documented_query() -> String {
    let doc = include_str!("../../../docs/destinations.md");
    let marker = "<!-- duckdb-example: tests/it/object_readers/load.rs -->";
    let after = &doc[doc.find(marker).expect("the example marker") + marker.len()..];
    let start = after.find("```sql\n").expect("a sql block") + "```sql\n".len();
    let end = after[start..].find("```").expect("the block's end");
    after[start..start + end].to_string()
}

/// What the example must return: per `variation_value` of `new-checkout`, evaluations and
/// distinct contexts, ordered by value.
fn expected_example_rows(evaluations: &Rows) -> Vec<Vec<Value>> {
    let mut groups = BTreeMap::<String, (u64, BTreeSet<String>)>::new();
    for row in evaluations
        .values()
        .filter(|r| r["flag_key"] == "new-checkout")
    {
        let group = groups
            .entry(row["variation_value"].as_str().unwrap().to_string())
            .or_default();
        group.0 += 1;
        group.1.insert(cell(&row["context_key"]));
    }
    assert!(!groups.is_empty(), "the example has rows to show");
    groups
        .into_iter()
        .map(|(value, (count, contexts))| vec![json!(value), json!(count), json!(contexts.len())])
        .collect()
}
