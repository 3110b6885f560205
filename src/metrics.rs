//! Every metric flagstream exports, in one place.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds`/`_bytes` units). Code
//! records through the `metrics` crate macros using these constants, so a renamed metric is a
//! one-line change and `/metrics` documentation (README) can be checked against this file.
//! Labels used: `route`, `status`, `reason`, `environment`, `destination`, `outcome`.
//! Record metrics per batch or per request, never per byte in a tight loop.

// --- ingest -------------------------------------------------------------------------------
/// Counter{route, status}: HTTP requests answered.
pub const INGEST_REQUESTS_TOTAL: &str = "flagstream_ingest_requests_total";
/// Counter{route}: events accepted (stored in the WAL).
pub const INGEST_EVENTS_TOTAL: &str = "flagstream_ingest_events_total";
/// Counter{route}: body bytes accepted (after gunzip).
pub const INGEST_BYTES_TOTAL: &str = "flagstream_ingest_bytes_total";
/// Counter{route, reason}: requests refused (malformed_json, too_large, unauthorized, wal_full, ...).
pub const INGEST_REJECTED_TOTAL: &str = "flagstream_ingest_rejected_total";
/// Histogram{route}: time from request start to response (includes the WAL sync wait).
pub const INGEST_REQUEST_DURATION_SECONDS: &str = "flagstream_ingest_request_duration_seconds";
/// Counter: SDK retries answered from the payload-id cache without a second append.
pub const INGEST_DUPLICATE_PAYLOADS_TOTAL: &str = "flagstream_ingest_duplicate_payloads_total";
/// Gauge: request body bytes currently held in memory.
pub const INGEST_INFLIGHT_BYTES: &str = "flagstream_ingest_inflight_bytes";
/// Counter: events accepted inside a body although they have no `kind` (dead letters to come).
pub const INGEST_INVALID_EVENTS_TOTAL: &str = "flagstream_ingest_invalid_events_total";

// --- wal ----------------------------------------------------------------------------------
/// Counter: bytes appended to the WAL (record headers included).
pub const WAL_APPEND_BYTES_TOTAL: &str = "flagstream_wal_append_bytes_total";
/// Counter: records appended.
pub const WAL_APPEND_RECORDS_TOTAL: &str = "flagstream_wal_append_records_total";
/// Gauge: bytes of segment files on disk (spares included).
pub const WAL_BYTES: &str = "flagstream_wal_bytes";
/// Gauge: the WAL byte budget (`--wal-max-bytes`).
pub const WAL_CAPACITY_BYTES: &str = "flagstream_wal_capacity_bytes";
/// Gauge: segment files on disk.
pub const WAL_SEGMENTS: &str = "flagstream_wal_segments";
/// Histogram: fdatasync latency.
pub const WAL_FSYNC_SECONDS: &str = "flagstream_wal_fsync_seconds";
/// Histogram: records made durable by one fdatasync (group-commit width).
pub const WAL_RECORDS_PER_FSYNC: &str = "flagstream_wal_records_per_fsync";
/// Counter: corrupt records skipped (recovery and reads).
pub const WAL_CORRUPT_RECORDS_TOTAL: &str = "flagstream_wal_corrupt_records_total";
/// Gauge: seconds the last recovery took.
pub const WAL_RECOVERY_SECONDS: &str = "flagstream_wal_recovery_seconds";
/// Counter{reason}: appends refused (full, too_large, fatal).
pub const WAL_REJECTED_APPENDS_TOTAL: &str = "flagstream_wal_rejected_appends_total";
/// Gauge{cursor}: 1 for each persisted cursor that no configured destination owns (it pins the WAL).
pub const WAL_ORPHAN_CURSORS: &str = "flagstream_wal_orphan_cursors";
/// Counter: bytes of mapped WAL pages dropped from the process once their readers passed.
pub const WAL_RELEASED_BYTES_TOTAL: &str = "flagstream_wal_released_bytes_total";
/// Counter: durable WAL bytes dropped from the OS page cache beyond `--wal-page-cache-bytes`.
pub const WAL_PAGE_CACHE_DROPPED_BYTES_TOTAL: &str =
    "flagstream_wal_page_cache_dropped_bytes_total";
/// Gauge: resident anonymous memory (heap: request bodies, batches), from /proc/self/status.
pub const PROCESS_RESIDENT_ANON_BYTES: &str = "flagstream_process_resident_anon_bytes";
/// Gauge: resident file-backed memory (mostly mapped WAL pages), from /proc/self/status.
pub const PROCESS_RESIDENT_FILE_BYTES: &str = "flagstream_process_resident_file_bytes";
/// Counter: segments freed by garbage collection.
pub const WAL_SEGMENTS_FREED_TOTAL: &str = "flagstream_wal_segments_freed_total";
/// Gauge: bytes of segments every cursor has passed that `--wal-retention` keeps for replays.
pub const WAL_RETAINED_BYTES: &str = "flagstream_wal_retained_bytes";
/// Counter: bytes of retained segments freed early to stay within the WAL's budget.
pub const WAL_RETENTION_EVICTED_BYTES_TOTAL: &str = "flagstream_wal_retention_evicted_bytes_total";

// --- destinations -------------------------------------------------------------------------
/// Counter{destination}: events the destination acknowledged.
pub const DEST_DELIVERED_EVENTS_TOTAL: &str = "flagstream_dest_delivered_events_total";
/// Counter{destination, outcome}: send attempts by outcome (delivered, partial, retriable, permanent).
pub const DEST_SENDS_TOTAL: &str = "flagstream_dest_sends_total";
/// Counter{destination}: retried sends.
pub const DEST_RETRIES_TOTAL: &str = "flagstream_dest_retries_total";
/// Counter{destination}: sends the target throttled (429, ProvisionedThroughputExceeded, ...).
pub const DEST_THROTTLED_TOTAL: &str = "flagstream_dest_throttled_total";
/// Counter{destination, outcome}: API requests a destination sent to its target — one Kinesis
/// `PutRecords`, one Pub/Sub publish RPC (one per ordering key), one HTTP request; a batch may
/// need several. outcome = ok (all accepted), partial (some items refused), throttled or error
/// (the whole request failed). Counted in one place, `dest::failure::RequestMetrics`.
pub const DEST_REQUESTS_TOTAL: &str = "flagstream_dest_requests_total";
/// Counter{destination}: API requests the target throttled, wholly or for some of their records
/// (Kinesis `ProvisionedThroughputExceeded`, Pub/Sub `RESOURCE_EXHAUSTED`, HTTP 429). Counted
/// with `DEST_REQUESTS_TOTAL`; `DEST_THROTTLED_TOTAL` counts throttled sends.
pub const DEST_THROTTLED_REQUESTS_TOTAL: &str = "flagstream_dest_throttled_requests_total";
/// Counter{destination, reason}: events written to the dead-letter store.
pub const DEST_DEAD_LETTERED_EVENTS_TOTAL: &str = "flagstream_dest_dead_lettered_events_total";
/// Counter{destination}: events the destination's filters did not select.
pub const DEST_FILTERED_EVENTS_TOTAL: &str = "flagstream_dest_filtered_events_total";
/// Counter{destination, format}: stored records a forwarding destination does not forward
/// (LaunchDarkly upstream: go-feature-flag and generic records), acknowledged unsent.
pub const DEST_SKIPPED_RECORDS_TOTAL: &str = "flagstream_dest_skipped_records_total";
/// Counter{destination}: structurally invalid events found while decoding (dead-lettered).
pub const DEST_INVALID_EVENTS_TOTAL: &str = "flagstream_dest_invalid_events_total";
/// Gauge{destination}: records between the cursor and the WAL's committed end.
pub const DEST_LAG_RECORDS: &str = "flagstream_dest_lag_records";
/// Gauge{destination}: bytes between the cursor and the WAL's committed end.
pub const DEST_LAG_BYTES: &str = "flagstream_dest_lag_bytes";
/// Gauge{destination}: age of the oldest undelivered record.
pub const DEST_LAG_SECONDS: &str = "flagstream_dest_lag_seconds";
/// Histogram{destination}: events per sent batch.
pub const DEST_BATCH_EVENTS: &str = "flagstream_dest_batch_events";
/// Histogram{destination}: payload bytes per sent batch.
pub const DEST_BATCH_BYTES: &str = "flagstream_dest_batch_bytes";
/// Histogram{destination}: send latency.
pub const DEST_SEND_DURATION_SECONDS: &str = "flagstream_dest_send_duration_seconds";
/// Gauge{destination}: 1 while paused by the operator.
pub const DEST_PAUSED: &str = "flagstream_dest_paused";
/// Gauge{destination}: 1 while paused because the dead-letter store refuses its dead letters.
pub const DEST_DEAD_LETTERS_FULL: &str = "flagstream_dest_dead_letters_full";
/// Gauge{destination}: dead letters waiting in memory for room in the store.
pub const DEST_DEAD_LETTERS_WAITING: &str = "flagstream_dest_dead_letters_waiting";
/// Counter: records a destination replayed from another destination's decoding (same
/// schema, export options and filter: `--shared-records-max-bytes`).
pub const SHARED_RECORDS_HITS_TOTAL: &str = "flagstream_shared_records_hits_total";
/// Counter: records a sharing destination decoded on its own (another was decoding it at that
/// moment, or it lags behind the records kept).
pub const SHARED_RECORDS_MISSES_TOTAL: &str = "flagstream_shared_records_misses_total";
/// Counter: records decoded once and kept for the other destinations of a group.
pub const SHARED_RECORDS_RECORDED_TOTAL: &str = "flagstream_shared_records_recorded_total";
/// Counter: kept records dropped to stay within the bound before every reader read them.
pub const SHARED_RECORDS_EVICTED_TOTAL: &str = "flagstream_shared_records_evicted_total";
/// Gauge: bytes of decoded records kept for sharing.
pub const SHARED_RECORDS_BYTES: &str = "flagstream_shared_records_bytes";

// --- dead-letter store --------------------------------------------------------------------
/// Gauge: bytes of all dead-letter files (as last counted by the store's budget).
pub const DEAD_LETTER_BYTES: &str = "flagstream_dead_letter_bytes";
/// Counter{destination, reason}: dead-letter writes refused (`budget` or `disk` floor); each
/// refused write is retried every cursor sync while the destination waits.
pub const DEAD_LETTER_REFUSED_WRITES_TOTAL: &str = "flagstream_dead_letter_refused_writes_total";
/// Counter{destination, to}: dead letters of `destination` redriven and delivered by `to`.
pub const DEAD_LETTERS_REDRIVEN_TOTAL: &str = "flagstream_dead_letters_redriven_total";
/// Counter{destination, to}: dead letters of `destination` redriven that failed again at `to`
/// (dead-lettered again into `to`'s store with the new reason).
pub const DEAD_LETTERS_REDRIVE_FAILED_TOTAL: &str = "flagstream_dead_letters_redrive_failed_total";

// --- process ------------------------------------------------------------------------------
/// Gauge: ingest connections currently open.
pub const INGEST_OPEN_CONNECTIONS: &str = "flagstream_ingest_open_connections";
/// Gauge: 1 once recovery finished and ingest accepts traffic, 0 while recovering or fatal.
pub const READY: &str = "flagstream_ready";
/// counter{listener, reason}: connections closed by the server (`header_timeout`,
/// `idle_timeout`, `shed`).
pub const CONNECTIONS_CLOSED_TOTAL: &str = "flagstream_connections_closed_total";
/// gauge{listener}: 1 while every connection slot is busy with a request and new clients wait.
pub const CONNECTIONS_SATURATED: &str = "flagstream_connections_saturated";
/// counter{listener}: certificate/key pairs swapped in after their files changed.
pub const TLS_RELOADS_TOTAL: &str = "flagstream_tls_reloads_total";
/// counter{listener}: changed certificate/key files that could not be used (the old pair stays).
pub const TLS_RELOAD_ERRORS_TOTAL: &str = "flagstream_tls_reload_errors_total";
/// counter{listener}: TLS handshakes that failed (bad client, untrusted certificate, plain HTTP).
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "flagstream_tls_handshake_failures_total";
/// gauge: payload ids put back into the dedupe cache from the WAL at start-up.
pub const INGEST_DEDUPE_RECOVERED_IDS: &str = "flagstream_ingest_dedupe_recovered_ids";

// --- configuration (runtime) -------------------------------------------------------------
/// Counter{outcome}: `--config` reloads on SIGHUP, `success` or `failure` (nothing changed).
pub const CONFIG_RELOADS_TOTAL: &str = "flagstream_config_reloads_total";
/// Counter{action}: destinations changed while running (`create`, `update`, `delete`), through
/// the admin API or a reload.
pub const DESTINATION_CHANGES_TOTAL: &str = "flagstream_destination_changes_total";

// --- recorder -----------------------------------------------------------------------------

/// Latency buckets (seconds): 100 µs … 10 s, dense where group commit lives (0.5–20 ms).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// Count buckets (events per batch, records per fsync).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];
/// Size buckets (bytes per batch): 1 KiB … 16 MiB.
const BYTE_BUCKETS: &[f64] = &[
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Install the process-wide Prometheus recorder and describe every metric above.
/// Call once, before anything records. The returned handle renders `/metrics`; call its
/// `run_upkeep` periodically (the admin server does) to bound histogram memory.
pub fn install_recorder(
) -> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError>
{
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(WAL_RECORDS_PER_FSYNC.into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DEST_BATCH_EVENTS.into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DEST_BATCH_BYTES.into()), BYTE_BUCKETS)?
        .install_recorder()?;
    describe();
    register_zeroes();
    Ok(handle)
}

/// Set the process memory gauges from `/proc/self/status` (Linux; elsewhere nothing is set).
/// Called when `/metrics` is rendered.
pub fn record_process_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    for (field, name) in [
        ("RssAnon:", PROCESS_RESIDENT_ANON_BYTES),
        ("RssFile:", PROCESS_RESIDENT_FILE_BYTES),
    ] {
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse::<f64>().ok());
        if let Some(kib) = kib {
            metrics::gauge!(name).set(kib * 1024.0);
        }
    }
}

/// Counters without labels that may stay at zero for the life of a healthy process: register
/// them now so `/metrics` shows them (a dashboard or alert querying a series that does not
/// exist yet sees "no data", not 0, and `increase()` misses the first increment).
fn register_zeroes() {
    for name in [
        INGEST_DUPLICATE_PAYLOADS_TOTAL,
        INGEST_INVALID_EVENTS_TOTAL,
        WAL_CORRUPT_RECORDS_TOTAL,
        WAL_SEGMENTS_FREED_TOTAL,
        WAL_RELEASED_BYTES_TOTAL,
        WAL_PAGE_CACHE_DROPPED_BYTES_TOTAL,
        WAL_RETENTION_EVICTED_BYTES_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// `# HELP` lines for `/metrics`.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        INGEST_REQUESTS_TOTAL,
        "HTTP requests answered, by route and status"
    );
    describe_counter!(
        INGEST_EVENTS_TOTAL,
        "Events accepted into the WAL, by route"
    );
    describe_counter!(
        INGEST_BYTES_TOTAL,
        Unit::Bytes,
        "Body bytes accepted (after gunzip)"
    );
    describe_counter!(
        INGEST_REJECTED_TOTAL,
        "Requests refused, by route and reason"
    );
    describe_histogram!(
        INGEST_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Request start to response, including the WAL sync wait"
    );
    describe_counter!(
        INGEST_DUPLICATE_PAYLOADS_TOTAL,
        "SDK retries answered from the payload-id cache without a second append"
    );
    describe_gauge!(
        INGEST_INFLIGHT_BYTES,
        Unit::Bytes,
        "Request body bytes reserved in memory"
    );
    describe_counter!(
        INGEST_INVALID_EVENTS_TOTAL,
        "Events accepted although they have no `kind`; delivery dead-letters them"
    );
    describe_gauge!(INGEST_OPEN_CONNECTIONS, "Ingest connections currently open");
    describe_gauge!(READY, "1 when recovery finished and ingest accepts traffic");
    describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        "Connections closed by the server: header_timeout, idle_timeout or shed"
    );
    describe_gauge!(
        CONNECTIONS_SATURATED,
        "1 while every connection slot is busy with a request and new clients wait"
    );
    describe_counter!(
        TLS_RELOADS_TOTAL,
        "Certificate/key pairs swapped in after their files changed, by listener"
    );
    describe_counter!(
        TLS_RELOAD_ERRORS_TOTAL,
        "Changed certificate/key files that could not be used; the previous pair keeps serving"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes that failed, by listener"
    );
    describe_gauge!(
        INGEST_DEDUPE_RECOVERED_IDS,
        "Payload ids put back into the dedupe cache from the WAL at start-up"
    );
    describe_counter!(
        WAL_APPEND_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes appended to the WAL"
    );
    describe_counter!(WAL_APPEND_RECORDS_TOTAL, "Records appended to the WAL");
    describe_gauge!(WAL_BYTES, Unit::Bytes, "Bytes of WAL segment files on disk");
    describe_gauge!(WAL_CAPACITY_BYTES, Unit::Bytes, "WAL byte budget");
    describe_gauge!(WAL_SEGMENTS, "WAL segment files on disk");
    describe_histogram!(WAL_FSYNC_SECONDS, Unit::Seconds, "fdatasync latency");
    describe_histogram!(
        WAL_RECORDS_PER_FSYNC,
        "Records made durable by one fdatasync"
    );
    describe_counter!(WAL_CORRUPT_RECORDS_TOTAL, "Corrupt WAL records skipped");
    describe_gauge!(
        WAL_RECOVERY_SECONDS,
        Unit::Seconds,
        "Duration of the last recovery"
    );
    describe_counter!(WAL_REJECTED_APPENDS_TOTAL, "Appends refused, by reason");
    describe_gauge!(WAL_ORPHAN_CURSORS, "Persisted cursors no destination owns");
    describe_counter!(
        WAL_SEGMENTS_FREED_TOTAL,
        "Segments freed by garbage collection"
    );
    describe_gauge!(
        WAL_RETAINED_BYTES,
        Unit::Bytes,
        "Bytes of passed segments kept by --wal-retention"
    );
    describe_counter!(
        WAL_RETENTION_EVICTED_BYTES_TOTAL,
        Unit::Bytes,
        "Retained WAL bytes freed early to stay within --wal-max-bytes"
    );
    describe_counter!(
        WAL_RELEASED_BYTES_TOTAL,
        Unit::Bytes,
        "Mapped WAL bytes dropped from resident memory once readers passed them"
    );
    describe_counter!(
        WAL_PAGE_CACHE_DROPPED_BYTES_TOTAL,
        Unit::Bytes,
        "Durable WAL bytes dropped from the OS page cache beyond --wal-page-cache-bytes"
    );
    describe_gauge!(
        PROCESS_RESIDENT_ANON_BYTES,
        Unit::Bytes,
        "Resident anonymous memory (RssAnon)"
    );
    describe_gauge!(
        PROCESS_RESIDENT_FILE_BYTES,
        Unit::Bytes,
        "Resident file-backed memory, mostly mapped WAL pages (RssFile)"
    );
    describe_counter!(
        DEST_DELIVERED_EVENTS_TOTAL,
        "Events a destination acknowledged"
    );
    describe_counter!(DEST_SENDS_TOTAL, "Send attempts, by outcome");
    describe_counter!(DEST_RETRIES_TOTAL, "Retried sends");
    describe_counter!(DEST_THROTTLED_TOTAL, "Sends the target throttled");
    describe_counter!(
        DEST_REQUESTS_TOTAL,
        "API requests a destination made (PutRecords, publish), by outcome"
    );
    describe_counter!(
        DEST_THROTTLED_REQUESTS_TOTAL,
        "API requests the target throttled, wholly or for some records"
    );
    describe_counter!(
        DEST_DEAD_LETTERED_EVENTS_TOTAL,
        "Events written to dead letters"
    );
    describe_counter!(
        DEST_FILTERED_EVENTS_TOTAL,
        "Events the destination's filters skipped"
    );
    describe_counter!(
        DEST_SKIPPED_RECORDS_TOTAL,
        "Records a forwarding destination does not forward"
    );
    describe_counter!(
        DEST_INVALID_EVENTS_TOTAL,
        "Invalid events found while decoding"
    );
    describe_gauge!(
        DEST_LAG_RECORDS,
        "Records between the cursor and the WAL end"
    );
    describe_gauge!(
        DEST_LAG_BYTES,
        Unit::Bytes,
        "Bytes between the cursor and the WAL end"
    );
    describe_gauge!(
        DEST_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest undelivered record"
    );
    describe_histogram!(DEST_BATCH_EVENTS, "Events per sent batch");
    describe_histogram!(
        DEST_BATCH_BYTES,
        Unit::Bytes,
        "Payload bytes per sent batch"
    );
    describe_histogram!(DEST_SEND_DURATION_SECONDS, Unit::Seconds, "Send latency");
    describe_gauge!(DEST_PAUSED, "1 while paused by the operator");
    describe_gauge!(
        DEST_DEAD_LETTERS_FULL,
        "1 while paused because the dead-letter store is full"
    );
    describe_gauge!(
        DEST_DEAD_LETTERS_WAITING,
        "Dead letters waiting for room in the store"
    );
    describe_counter!(
        SHARED_RECORDS_HITS_TOTAL,
        "Records replayed from another destination's decoding"
    );
    describe_counter!(
        SHARED_RECORDS_MISSES_TOTAL,
        "Records a sharing destination decoded on its own"
    );
    describe_counter!(
        SHARED_RECORDS_RECORDED_TOTAL,
        "Records decoded once and kept for the destinations sharing them"
    );
    describe_counter!(
        SHARED_RECORDS_EVICTED_TOTAL,
        "Kept decoded records dropped for the memory bound before every reader read them"
    );
    describe_gauge!(
        SHARED_RECORDS_BYTES,
        Unit::Bytes,
        "Bytes of decoded records kept for sharing"
    );
    describe_gauge!(
        DEAD_LETTER_BYTES,
        Unit::Bytes,
        "Bytes of all dead-letter files"
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "--config reloads on SIGHUP, by outcome (a failed one changed nothing)"
    );
    describe_counter!(
        DESTINATION_CHANGES_TOTAL,
        "Destinations created, updated or deleted while running"
    );
    describe_counter!(
        DEAD_LETTER_REFUSED_WRITES_TOTAL,
        "Dead-letter writes refused by the budget or the free-space floor"
    );
    describe_counter!(
        DEAD_LETTERS_REDRIVEN_TOTAL,
        "Dead letters redriven and delivered"
    );
    describe_counter!(
        DEAD_LETTERS_REDRIVE_FAILED_TOTAL,
        "Dead letters redriven that failed again (dead-lettered again)"
    );
}

#[cfg(test)]
mod tests {
    /// Every metric name declared above, read from this file's source.
    fn declared_names() -> Vec<&'static str> {
        include_str!("metrics.rs")
            .lines()
            .filter(|line| line.starts_with("pub const ") && line.contains(": &str = \""))
            .filter_map(|line| line.split('"').nth(1))
            .collect()
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let names = declared_names();
        assert!(names.len() > 30, "{names:?}");
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate metric name");
        assert!(names.iter().all(|name| name.starts_with("flagstream_")));
    }

    #[test]
    fn the_readme_documents_every_metric() {
        let readme = include_str!("../README.md");
        for name in declared_names() {
            assert!(readme.contains(name), "README.md does not document {name}");
        }
    }
}
