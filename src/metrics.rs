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
/// Counter: segments freed by garbage collection.
pub const WAL_SEGMENTS_FREED_TOTAL: &str = "flagstream_wal_segments_freed_total";

// --- destinations -------------------------------------------------------------------------
/// Counter{destination}: events the destination acknowledged.
pub const DEST_DELIVERED_EVENTS_TOTAL: &str = "flagstream_dest_delivered_events_total";
/// Counter{destination, outcome}: send attempts by outcome (delivered, partial, retriable, permanent).
pub const DEST_SENDS_TOTAL: &str = "flagstream_dest_sends_total";
/// Counter{destination}: retried sends.
pub const DEST_RETRIES_TOTAL: &str = "flagstream_dest_retries_total";
/// Counter{destination}: sends the target throttled (429, ProvisionedThroughputExceeded, ...).
pub const DEST_THROTTLED_TOTAL: &str = "flagstream_dest_throttled_total";
/// Counter{destination, outcome}: API requests a destination made (one batch may need several:
/// Kinesis `PutRecords`, Pub/Sub publish); outcome = ok, partial, throttled, error.
pub const DEST_REQUESTS_TOTAL: &str = "flagstream_dest_requests_total";
/// Counter{destination}: API requests the target throttled, wholly or for some of their records
/// (Kinesis `ProvisionedThroughputExceeded`, Pub/Sub `RESOURCE_EXHAUSTED`). Counted by the
/// destination, which sees every request; `DEST_THROTTLED_TOTAL` counts throttled sends.
pub const DEST_THROTTLED_REQUESTS_TOTAL: &str = "flagstream_dest_throttled_requests_total";
/// Counter{destination, reason}: events written to the dead-letter store.
pub const DEST_DEAD_LETTERED_EVENTS_TOTAL: &str = "flagstream_dest_dead_lettered_events_total";
/// Counter{destination}: events the destination's filters did not select.
pub const DEST_FILTERED_EVENTS_TOTAL: &str = "flagstream_dest_filtered_events_total";
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
