//! The Kinesis destination's outcome classification against recorded Kinesis API responses.
//!
//! moto cannot inject partial failures or throttling, so an in-process HTTP server replays
//! responses in Kinesis' real wire format (awsJson1.1: `FailedRecordCount` + per-record
//! `ErrorCode`, and `__type` error bodies) to the real `aws-sdk-kinesis` client inside the
//! destination. The server also records each request so the tests can check what was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flagstream::dest::{
    registry, Batch, BatchItem, Destination, DestinationSpec, Failure, FailureClass, SendOutcome,
};
use flagstream::event::Schema;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A recorded answer: HTTP status and JSON body.
struct Recorded {
    status: u16,
    body: &'static str,
}

#[derive(Default)]
struct Replay {
    answers: Mutex<VecDeque<Recorded>>,
    requests: Mutex<Vec<serde_json::Value>>,
}

/// Serve `answers` in order on a free loopback port; returns the endpoint and the state.
async fn replay_server(answers: Vec<Recorded>) -> (String, Arc<Replay>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let replay = Arc::new(Replay {
        answers: Mutex::new(answers.into()),
        requests: Mutex::default(),
    });
    let state = replay.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let json: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        state.requests.lock().unwrap().push(json);
                        let answer = state.answers.lock().unwrap().pop_front().unwrap_or(Recorded {
                            status: 500,
                            body: r#"{"__type":"InternalFailure","message":"replay exhausted"}"#,
                        });
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(answer.status)
                                .header("content-type", "application/x-amz-json-1.1")
                                .header("x-amzn-requestid", "replayed-request")
                                .body(Full::new(Bytes::from_static(answer.body.as_bytes())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (endpoint, replay)
}

async fn destination(endpoint: &str) -> Arc<dyn Destination> {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let spec = DestinationSpec::parse(&format!(
        "kinesis://flag-events?region=us-east-1&endpoint={endpoint}"
    ))
    .unwrap();
    registry::build_named(spec, "replay").await.unwrap()
}

fn batch(count: usize) -> Batch {
    Batch {
        id: "batch-replay".into(),
        schema: Schema::LaunchDarkly,
        items: (0..count)
            .map(|i| BatchItem {
                event_id: format!("evt-{i}").into(),
                payload: Bytes::from(format!(r#"{{"event":{{"id":"evt-{i}"}}}}"#)),
                kind: "feature".into(),
                key: Some("flag".into()),
                context_key: Some(format!("user-{i}").into()),
                environment: "production".into(),
                received_at_ms: 0,
            })
            .collect(),
        lines: None,
    }
}

/// Recorded partial failure: records 1 and 3 throttled, 4 internal failure.
const PARTIAL: &str = r#"{"FailedRecordCount":3,"Records":[
 {"SequenceNumber":"49543463076548007577105092703039560359975228518395012686","ShardId":"shardId-000000000000"},
 {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."},
 {"SequenceNumber":"49543463076570308322303623326179887152428262250726293522","ShardId":"shardId-000000000001"},
 {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard shardId-000000000001 in stream flag-events under account 111122223333."},
 {"ErrorCode":"InternalFailure","ErrorMessage":"Internal service failure."}]}"#;

#[tokio::test]
async fn recorded_partial_failure_becomes_exact_partial_outcome() {
    let (endpoint, replay) = replay_server(vec![Recorded {
        status: 200,
        body: PARTIAL,
    }])
    .await;
    let destination = destination(&endpoint).await;
    match destination.send(&batch(5)).await {
        SendOutcome::Partial { failures } => {
            assert!(failures.iter().any(|f| f.failure.is_throttled()));
            let failed: Vec<(usize, bool)> = failures
                .iter()
                .map(|f| (f.index, f.is_retriable()))
                .collect();
            assert_eq!(failed, vec![(1, true), (3, true), (4, true)]);
            assert!(
                failures[2].failure.reason.contains("InternalFailure"),
                "{}",
                failures[2].failure.reason
            );
        }
        other => panic!("expected partial, got {other:?}"),
    }
    // What went over the wire: the stream name and one record per event, keyed by context.
    let requests = replay.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["StreamName"], "flag-events");
    let keys: Vec<&str> = requests[0]["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["PartitionKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["user-0", "user-1", "user-2", "user-3", "user-4"]);
}

#[tokio::test]
async fn request_level_errors_are_classified() {
    let cases: Vec<(Recorded, &str)> = vec![
        (
            Recorded {
                status: 400,
                body: r#"{"__type":"ResourceNotFoundException","message":"Stream flag-events under account 111122223333 not found."}"#,
            },
            "permanent",
        ),
        (
            Recorded {
                status: 400,
                body: r#"{"__type":"AccessDeniedException","message":"User is not authorized to perform: kinesis:PutRecords"}"#,
            },
            "permanent",
        ),
        (
            Recorded {
                status: 400,
                body: r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
            },
            "permanent",
        ),
        (
            Recorded {
                status: 400,
                body: r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for stream flag-events."}"#,
            },
            "throttled",
        ),
        (
            Recorded {
                status: 500,
                body: r#"{"__type":"InternalFailure","message":"We encountered an internal error."}"#,
            },
            "retriable",
        ),
        (
            Recorded {
                status: 503,
                body: r#"{}"#,
            },
            "retriable",
        ),
    ];
    for (answer, expected) in cases {
        let body = answer.body;
        let (endpoint, _replay) = replay_server(vec![answer]).await;
        let destination = destination(&endpoint).await;
        let outcome = destination.send(&batch(3)).await;
        let class = match &outcome {
            SendOutcome::Failed(failure) => {
                assert!(
                    failure.reason.contains("flag-events"),
                    "reason must name the stream: {}",
                    failure.reason
                );
                failure.class.label()
            }
            other => panic!("{body}: unexpected {other:?}"),
        };
        assert_eq!(class, expected, "{body} -> {outcome:?}");
    }
}

#[tokio::test]
async fn a_failed_request_stops_the_rest_of_the_batch() {
    // 700 records = two requests; the first is throttled, so the second is not attempted
    // (later events of a context must not overtake earlier ones) and everything is retriable.
    let (endpoint, replay) = replay_server(vec![Recorded {
        status: 400,
        body: r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded"}"#,
    }])
    .await;
    let destination = destination(&endpoint).await;
    let outcome = destination.send(&batch(700)).await;
    assert!(
        matches!(
            outcome,
            SendOutcome::Failed(Failure {
                class: FailureClass::Throttled,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(replay.requests.lock().unwrap().len(), 1);
}

/// `check()` with a role that may only put records: AWS answers `AccessDenied` to
/// DescribeStreamSummary, which must not fail the check; a missing stream must.
#[tokio::test]
async fn check_tolerates_a_put_only_role_but_not_a_missing_stream() {
    let (endpoint, replay) = replay_server(vec![Recorded {
        status: 400,
        body: r#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::111122223333:assumed-role/LaunchDarkly-data-export/x is not authorized to perform: kinesis:DescribeStreamSummary"}"#,
    }])
    .await;
    destination(&endpoint).await.check().await.unwrap();
    assert_eq!(replay.requests.lock().unwrap().len(), 1);

    let (endpoint, _replay) = replay_server(vec![Recorded {
        status: 400,
        body: r#"{"__type":"ResourceNotFoundException","message":"Stream flag-events under account 111122223333 not found."}"#,
    }])
    .await;
    let err = destination(&endpoint)
        .await
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("flag-events") && err.contains("not found"),
        "{err}"
    );
}
