//! The GCS destination against a real Cloud Storage JSON API (fake-gcs-server), read back over
//! that API: object names and Hive layout, formats (ndjson, ndjson.gz, csv), HTTP metadata,
//! single-request uploads above the client's resumable threshold, re-sends, error classes and
//! `STORAGE_EMULATOR_HOST`. `Content-Type` is checked in the upload requests as sent (see
//! [`UploadRecorder`] for why the stand-in cannot show it).

use crate::support::cloud::{self, assert_exactly_once, batch, destination, event_id_of, ids};
use crate::support::gcs::{FakeGcs, UploadRecorder};
use flagstream::dest::SendOutcome;

fn url(gcs: &FakeGcs, target: &str, extra: &str) -> String {
    format!("gs://{target}?endpoint={}{extra}", gcs.endpoint())
}

/// `contentType` and `contentEncoding` of every upload's metadata part, as sent.
fn sent_metadata(recorder: &UploadRecorder) -> Vec<(Option<String>, Option<String>)> {
    let field = |metadata: &serde_json::Value, key: &str| metadata[key].as_str().map(String::from);
    recorder
        .upload_metadata()
        .iter()
        .map(|m| (field(m, "contentType"), field(m, "contentEncoding")))
        .collect()
}

fn event_ids(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| event_id_of(line.as_bytes()))
        .collect()
}

#[tokio::test]
async fn gzip_objects_land_under_hive_partitions_with_metadata_and_resends_overwrite() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("flag-bucket").await;
    let recorder = UploadRecorder::new(gcs.port()).await;
    let dest = destination(&format!(
        "gs://flag-bucket/exports/v1?endpoint={}&format=ndjson.gz&storage_class=NEARLINE",
        recorder.endpoint()
    ))
    .await;
    dest.check().await.unwrap();

    let batch = batch("gz", 300, 10);
    assert_eq!(dest.send(&batch).await, SendOutcome::Delivered);
    // The same batch again (a retry after a lost acknowledgement): same name, no duplicate.
    assert_eq!(dest.send(&batch).await, SendOutcome::Delivered);

    let objects = gcs.read_objects("flag-bucket", "exports/").await;
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    // received_at 1_700_000_000_000 = 2023-11-14T22:13:20Z.
    assert_eq!(
        names,
        ["exports/v1/dt=2023-11-14/hour=22/batch-gz.ndjson.gz"]
    );
    let object = &objects[0];
    let gzip_ndjson = (
        Some("application/x-ndjson".to_string()),
        Some("gzip".to_string()),
    );
    assert_eq!(sent_metadata(&recorder), [gzip_ndjson.clone(), gzip_ndjson]);
    assert_eq!(object.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(object.storage_class.as_deref(), Some("NEARLINE"));
    assert!(object.size < object.text.len() as u64 / 3, "compressed");
    assert_exactly_once(&event_ids(&object.text), ids(&batch));
}

#[tokio::test]
async fn ndjson_objects_split_by_environment_and_csv_objects_carry_their_columns() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("plain-bucket").await;
    let recorder = UploadRecorder::new(gcs.port()).await;
    let ndjson = destination(&format!(
        "gs://plain-bucket/p?endpoint={}&partitions=environment,dt&file_name=flags-{{batch_id}}.{{ext}}",
        recorder.endpoint()
    ))
    .await;
    let mut split = batch("n", 6, 2);
    for item in split.items.iter_mut().skip(3) {
        item.environment = "staging/eu".into();
    }
    assert_eq!(ndjson.send(&split).await, SendOutcome::Delivered);
    let objects = gcs.read_objects("plain-bucket", "p/").await;
    let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "p/environment=production/dt=2023-11-14/flags-batch-n.ndjson",
            "p/environment=staging%2Feu/dt=2023-11-14/flags-batch-n.ndjson",
        ]
    );
    assert!(objects.iter().all(|o| o.content_encoding.is_none()));
    let seen: Vec<String> = objects.iter().flat_map(|o| event_ids(&o.text)).collect();
    assert_exactly_once(&seen, ids(&split));

    let csv = destination(&format!(
        "gs://plain-bucket/csv?endpoint={}&format=csv&partitions=none\
         &csv_columns=id:/event/id,flag:/event/key,user:/event/contextKeys/user",
        recorder.endpoint()
    ))
    .await;
    assert_eq!(csv.send(&batch("c", 3, 2)).await, SendOutcome::Delivered);
    let objects = gcs.read_objects("plain-bucket", "csv/").await;
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].name, "csv/batch-c.csv");
    let ndjson_type = (Some("application/x-ndjson".to_string()), None);
    let csv_type = (Some("text/csv; charset=utf-8".to_string()), None);
    assert_eq!(
        sent_metadata(&recorder),
        [ndjson_type.clone(), ndjson_type, csv_type]
    );
    assert_eq!(
        objects[0].text,
        "id,flag,user\nc-0,new-checkout,user-0\nc-1,new-checkout,user-1\nc-2,new-checkout,user-0\n"
    );
}

/// google-cloud-storage switches to resumable uploads at 16 MiB by default; the destination
/// sends every object in one request (fake-gcs-server's resumable upload URLs only work on
/// port 80, so a resumable upload here would fail).
#[tokio::test]
async fn objects_above_the_clients_resumable_threshold_go_up_in_one_request() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("big-bucket").await;
    let dest = destination(&url(&gcs, "big-bucket", "&partitions=none&max_bytes=64MiB")).await;
    let mut big = batch("big", 20, 3);
    for (i, item) in big.items.iter_mut().enumerate() {
        *item = cloud::item(&format!("big-{i}"), Some("u"), 1 << 20);
    }
    assert_eq!(dest.send(&big).await, SendOutcome::Delivered);
    let objects = gcs.read_objects("big-bucket", "").await;
    assert!(objects[0].size > 20 << 20, "{}", objects[0].size);
    assert_exactly_once(&event_ids(&objects[0].text), ids(&big));
}

#[tokio::test]
async fn a_missing_bucket_is_permanent_and_named_and_an_unreachable_store_is_retriable() {
    let gcs = FakeGcs::start();
    let dest = destination(&url(&gcs, "no-such-bucket/p", "")).await;
    let err = dest.check().await.unwrap_err().to_string();
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );
    match dest.send(&batch("m", 2, 1)).await {
        SendOutcome::Failed(failure) => {
            assert!(!failure.is_retriable(), "{}", failure.reason);
            assert!(
                failure.reason.contains("no-such-bucket")
                    && failure.reason.contains("bucket does not exist"),
                "{}",
                failure.reason
            );
        }
        other => panic!("expected a permanent failure, got {other:?}"),
    }

    let unreachable = destination("gs://some-bucket?endpoint=http://127.0.0.1:9&timeout=2s").await;
    assert!(unreachable.check().await.is_err());
    match unreachable.send(&batch("u", 1, 1)).await {
        SendOutcome::Failed(failure) => assert!(failure.is_retriable(), "{}", failure.reason),
        other => panic!("expected a retriable failure, got {other:?}"),
    }
}

/// Without `endpoint=`, `STORAGE_EMULATOR_HOST=host:port` points the destination at the
/// emulator (plain HTTP, anonymous), as Google's client libraries do. (Other tests give
/// `endpoint=`, which wins, so setting the variable here cannot redirect them.)
#[tokio::test]
async fn storage_emulator_host_is_honoured() {
    let gcs = FakeGcs::start();
    gcs.create_bucket("emulated").await;
    std::env::set_var("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", gcs.port()));
    let dest = destination("gs://emulated/e?partitions=none").await;
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    dest.check().await.unwrap();
    let sent = batch("e", 4, 2);
    assert_eq!(dest.send(&sent).await, SendOutcome::Delivered);
    let objects = gcs.read_objects("emulated", "e/").await;
    assert_eq!(objects.len(), 1);
    assert_exactly_once(&event_ids(&objects[0].text), ids(&sent));
}
