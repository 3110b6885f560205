//! Shared harness for the delivery engine tests: a real WAL in a temp dir, records in the
//! stored-record format ingest writes, and `Destination` implementations that *simulate a
//! remote target* (scripted outcomes, recorded sends). They stand in for a network service,
//! not for any of our own client code; the file destination is tested for real.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use flagstream::delivery::{
    ConfiguredDestination, Delivery, DeliveryDefaults, DeliverySettings, EngineOptions, RetryPolicy,
};
use flagstream::dest::{Batch, BatchLimits, DestError, Destination, SendOutcome};
use flagstream::event::stored::{encode_header, StoredMeta};
use flagstream::event::{InboundFormat, Schema};
use flagstream::wal::{AppendRequest, RecoveryMode, SyncMode, Wal, WalOptions};

pub fn open_wal(dir: &Path) -> Wal {
    Wal::open(WalOptions {
        dir: dir.join("wal"),
        segment_bytes: 16 << 20,
        max_bytes: 256 << 20,
        min_free_bytes: 0,
        sync: SyncMode::Never,
        recovery: RecoveryMode::TolerateTail,
        retention: Default::default(),
        page_cache_bytes: Some(flagstream::wal::DEFAULT_PAGE_CACHE_BYTES),
    })
    .expect("open WAL")
}

/// A LaunchDarkly custom event whose `key` identifies it (`r<record>e<index>`).
pub fn custom_event(record: usize, index: usize, padding: usize) -> String {
    format!(
        r#"{{"kind":"custom","creationDate":1717000000000,"key":"r{record}e{index}","contextKeys":{{"user":"u{index}"}},"data":{{"pad":"{}"}}}}"#,
        "x".repeat(padding)
    )
}

/// Append one `/bulk` record holding `events` (JSON texts).
pub async fn append_events(wal: &Wal, events: &[String]) -> u64 {
    let mut header = Vec::new();
    encode_header(
        &StoredMeta {
            format: Some(InboundFormat::LdBulk),
            instance_id: None,
            schema_version: Some(4),
            environment: "production",
            payload_id: "",
            tags: "",
            user_agent: "delivery-test",
            request: Default::default(),
        },
        &mut header,
    );
    let body = format!("[{}]", events.join(","));
    let parts: [&[u8]; 2] = [&header, body.as_bytes()];
    wal.append(AppendRequest {
        tag: InboundFormat::LdBulk.code(),
        event_count: events.len() as u32,
        received_at_ms: 1_717_000_000_000,
        parts: &parts,
    })
    .await
    .expect("append")
    .seq
}

/// Append `records` records of `per_record` small custom events; returns every event key.
pub async fn append_records(
    wal: &Wal,
    first_record: usize,
    records: usize,
    per_record: usize,
) -> Vec<String> {
    let mut keys = Vec::new();
    for record in first_record..first_record + records {
        let events: Vec<String> = (0..per_record)
            .map(|i| custom_event(record, i, 8))
            .collect();
        keys.extend((0..per_record).map(|i| format!("r{record}e{i}")));
        append_events(wal, &events).await;
    }
    keys
}

/// The `key` of the custom event inside a mapped payload (LaunchDarkly envelope or not).
pub fn event_key(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("payload is JSON");
    let event = value.get("event").unwrap_or(&value);
    event["key"].as_str().expect("event has a key").to_string()
}

/// One recorded call to `send`.
#[derive(Debug, Clone)]
pub struct Sent {
    pub batch_id: String,
    pub keys: Vec<String>,
    pub at: Instant,
    pub outcome: SendOutcome,
}

type Script = dyn Fn(&Batch, usize) -> BoxFuture<'static, SendOutcome> + Send + Sync;

/// A simulated remote target: answers each send with a scripted outcome (given the batch and
/// how many sends came before), and records every send.
pub struct Remote {
    name: String,
    limits: BatchLimits,
    script: Box<Script>,
    pub sent: Mutex<Vec<Sent>>,
    started: Mutex<Vec<(String, Vec<String>)>>,
    calls: AtomicUsize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("name", &self.name).finish()
    }
}

impl Remote {
    pub fn new(
        name: &str,
        limits: BatchLimits,
        script: impl Fn(&Batch, usize) -> BoxFuture<'static, SendOutcome> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Remote {
            name: name.to_string(),
            limits,
            script: Box::new(script),
            sent: Mutex::new(Vec::new()),
            started: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        })
    }

    /// A target that accepts everything at once.
    pub fn accepting(name: &str, limits: BatchLimits) -> Arc<Self> {
        Remote::new(name, limits, |_, _| {
            async { SendOutcome::Delivered }.boxed()
        })
    }

    /// (batch id, keys) of every send as it started, answered or not.
    pub fn calls_started(&self) -> Vec<(String, Vec<String>)> {
        self.started.lock().unwrap().clone()
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Keys of every item in sends that were answered `Delivered`.
    pub fn delivered_keys(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|sent| sent.outcome == SendOutcome::Delivered)
            .flat_map(|sent| sent.keys)
            .collect()
    }
}

impl Destination for Remote {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "remote"
    }
    fn schema(&self) -> Schema {
        Schema::LaunchDarkly
    }
    fn limits(&self) -> BatchLimits {
        self.limits
    }
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendOutcome> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let outcome = (self.script)(batch, call);
        let keys: Vec<String> = batch
            .items
            .iter()
            .map(|item| event_key(&item.payload))
            .collect();
        let batch_id = batch.id.clone();
        self.started
            .lock()
            .unwrap()
            .push((batch_id.clone(), keys.clone()));
        async move {
            let outcome = outcome.await;
            self.sent.lock().unwrap().push(Sent {
                batch_id,
                keys,
                at: Instant::now(),
                outcome: outcome.clone(),
            });
            outcome
        }
        .boxed()
    }
    fn check(&self) -> BoxFuture<'_, Result<(), DestError>> {
        async { Ok(()) }.boxed()
    }
}

pub fn limits(max_items: usize, linger_ms: u64) -> BatchLimits {
    BatchLimits {
        max_items,
        max_bytes: 1 << 20,
        max_item_bytes: 64 << 10,
        per_item_overhead: 0,
        linger: Duration::from_millis(linger_ms),
    }
}

pub fn fast_retry(max_attempts: Option<u32>) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        max_age: None,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

pub fn configured(
    destination: Arc<dyn Destination>,
    retry: RetryPolicy,
    concurrency: usize,
) -> ConfiguredDestination {
    let mut settings = DeliverySettings::named(destination.name(), &DeliveryDefaults::default());
    settings.retry = retry;
    settings.concurrency = Some(concurrency);
    ConfiguredDestination {
        settings,
        destination,
    }
}

pub fn engine_options(dir: &Path) -> EngineOptions {
    let mut options = EngineOptions::new(dir);
    options.cursor_sync_interval = Duration::from_millis(20);
    options.shutdown_grace = Duration::from_millis(300);
    options
}

pub fn start(wal: &Wal, dir: &Path, destinations: Vec<ConfiguredDestination>) -> Delivery {
    Delivery::start(wal, destinations, &engine_options(dir)).expect("start delivery")
}

/// Poll `condition` every 10 ms until it holds or `timeout` passes.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn dead_letter_file(dir: &Path, name: &str) -> PathBuf {
    flagstream::delivery::dead_letter_path(&dir.join("dead-letters"), name)
}

pub fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}
