//! What `GET /v1/destinations` shows for one destination.
//!
//! The worker publishes into a [`StatusCell`] whenever something visible changes (and on its
//! persist tick); readers take a cheap snapshot and add the WAL lag at read time, so the
//! numbers are fresh even when the worker is idle or stuck.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::cursor_state::RetryState;
use crate::wal::{Position, Wal};

use super::retry::{unix_ms_now, ErrorClass};

/// Coarse state of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Reading and sending normally (or idle, caught up).
    Running,
    /// Paused by the operator; nothing is sent.
    Paused,
    /// At least one batch is waiting to be retried.
    BackingOff,
    /// The dead-letter store refused this destination's dead letters (budget or free-space
    /// floor): nothing is read or sent until they fit; events wait in the WAL.
    DeadLettersFull,
    /// The worker stopped on an error it cannot recover from (see `last_error`); its cursor
    /// stays where it was and pins the WAL until restart.
    Failed,
    /// Shut down.
    Stopped,
}

/// A log position as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PositionView {
    pub seq: u64,
    pub event: u32,
}

impl From<Position> for PositionView {
    fn from(position: Position) -> Self {
        PositionView {
            seq: position.seq,
            event: position.event,
        }
    }
}

/// Backlog behind the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagView {
    pub records: u64,
    pub bytes: u64,
    /// Age of the oldest undelivered record (0 when caught up).
    pub seconds: f64,
}

/// The retry state of the oldest in-flight batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryView {
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_unix_ms: u64,
    pub first_failure_unix_ms: u64,
    pub last_error_class: ErrorClass,
}

impl RetryView {
    pub fn from_state(state: &RetryState) -> Option<Self> {
        (state.attempts > 0).then(|| RetryView {
            attempts: state.attempts,
            next_attempt_unix_ms: state.next_attempt_unix_ms,
            first_failure_unix_ms: state.first_failure_unix_ms,
            last_error_class: ErrorClass::from_code(state.last_error_class),
        })
    }
}

/// The status snapshot of one destination.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStatus {
    pub name: String,
    pub kind: String,
    pub schema: String,
    /// The options as configured; secrets shown as their `env:` / `file:` reference or `***`.
    pub options: BTreeMap<String, String>,
    pub state: DeliveryState,
    pub paused: bool,
    /// Every event before this position is delivered or dead-lettered (in memory; the
    /// persisted cursor trails it by at most one sync interval).
    pub cursor: PositionView,
    pub lag: LagView,
    pub in_flight_batches: usize,
    /// Batches allowed in flight now (lowered while the target throttles).
    pub concurrency: usize,
    /// The configured most batches in flight.
    pub concurrency_limit: usize,
    pub retry: Option<RetryView>,
    pub delivered_events: u64,
    pub dead_lettered_events: u64,
    pub dead_letter_path: String,
    pub last_error: Option<String>,
    pub last_error_unix_ms: Option<u64>,
}

/// What the worker publishes; lag is added by [`StatusCell::snapshot`].
#[derive(Debug, Clone)]
pub(crate) struct WorkerStatus {
    pub state: DeliveryState,
    pub paused: bool,
    pub acked: Position,
    pub in_flight_batches: usize,
    pub concurrency: usize,
    pub retry: RetryState,
    pub delivered_events: u64,
    pub dead_lettered_events: u64,
    pub last_error: Option<(String, u64)>,
}

/// Fixed facts plus the latest published [`WorkerStatus`].
#[derive(Debug)]
pub(crate) struct StatusCell {
    pub name: String,
    pub kind: String,
    pub schema: String,
    pub concurrency: usize,
    pub options: BTreeMap<String, String>,
    pub dead_letter_path: String,
    pub current: Mutex<WorkerStatus>,
}

impl StatusCell {
    pub fn publish(&self, status: WorkerStatus) {
        if let Ok(mut current) = self.current.lock() {
            *current = status;
        }
    }

    pub fn update(&self, change: impl FnOnce(&mut WorkerStatus)) {
        if let Ok(mut current) = self.current.lock() {
            change(&mut current);
        }
    }

    pub fn snapshot(&self, wal: &Wal) -> DestinationStatus {
        let current = match self.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let lag = wal.lag(current.acked.seq);
        let seconds = lag
            .oldest_received_at_ms
            .map(|oldest| unix_ms_now().saturating_sub(oldest) as f64 / 1000.0)
            .unwrap_or(0.0);
        DestinationStatus {
            name: self.name.clone(),
            kind: self.kind.clone(),
            schema: self.schema.clone(),
            options: self.options.clone(),
            state: current.state,
            paused: current.paused,
            cursor: current.acked.into(),
            lag: LagView {
                records: lag.records,
                bytes: lag.bytes,
                seconds,
            },
            in_flight_batches: current.in_flight_batches,
            concurrency: current.concurrency,
            concurrency_limit: self.concurrency,
            retry: RetryView::from_state(&current.retry),
            delivered_events: current.delivered_events,
            dead_lettered_events: current.dead_lettered_events,
            dead_letter_path: self.dead_letter_path.clone(),
            last_error: current.last_error.as_ref().map(|(error, _)| error.clone()),
            last_error_unix_ms: current.last_error.as_ref().map(|(_, at)| *at),
        }
    }
}
