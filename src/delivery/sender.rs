//! One in-flight batch: send, classify, back off, resend, until it is delivered or given up.
//!
//! Each batch runs as its own task so that a slow send or a long backoff occupies one
//! concurrency slot of its destination and nothing else. The task owns the batch; the worker
//! learns about it through [`Progress`] messages (retry state, for the cursor and the status
//! endpoint) and one final [`SendReport`].
//!
//! * `Delivered` → done.
//! * `Partial` → items the target accepted are done; permanent item failures become dead
//!   letters; only the retriable ones are sent again (same batch id).
//! * `Failed` with a retriable (or throttled) failure → wait per [`RetryPolicy`] (honouring
//!   `Retry-After`), then resend.
//! * `Failed` permanently, or the retry budget spent → every remaining item becomes a dead
//!   letter.
//!
//! Pausing the destination holds retries before their next send. On shutdown a waiting task
//! returns [`SendReport::Interrupted`] with its retry state, which the worker persists; a send
//! already on the wire is given the engine's grace period to finish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{Counter, Histogram};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cursor_state::RetryState;
use super::spare_buffers::{Returned, Spare};
use crate::dest::{Batch, BatchItem, Destination, ItemFailure, SendOutcome};
use crate::metrics as names;
use crate::wal::{Position, Ticket};

use super::retry::{unix_ms_now, ErrorClass, RetryDecision, RetryPolicy};

/// Metric handles of one destination, resolved once (labels allocate).
#[derive(Clone)]
pub struct SendMetrics {
    pub delivered_events: Counter,
    pub sends_delivered: Counter,
    pub sends_partial: Counter,
    pub sends_retriable: Counter,
    pub sends_permanent: Counter,
    pub retries: Counter,
    pub throttled: Counter,
    pub batch_events: Histogram,
    pub batch_bytes: Histogram,
    pub send_seconds: Histogram,
}

impl SendMetrics {
    pub fn new(destination: &str) -> Self {
        let d = destination.to_string();
        let sends = |outcome: &'static str| metrics::counter!(names::DEST_SENDS_TOTAL, "destination" => d.clone(), "outcome" => outcome);
        SendMetrics {
            delivered_events: metrics::counter!(names::DEST_DELIVERED_EVENTS_TOTAL, "destination" => d.clone()),
            sends_delivered: sends("delivered"),
            sends_partial: sends("partial"),
            sends_retriable: sends("retriable"),
            sends_permanent: sends("permanent"),
            retries: metrics::counter!(names::DEST_RETRIES_TOTAL, "destination" => d.clone()),
            throttled: metrics::counter!(names::DEST_THROTTLED_TOTAL, "destination" => d.clone()),
            batch_events: metrics::histogram!(names::DEST_BATCH_EVENTS, "destination" => d.clone()),
            batch_bytes: metrics::histogram!(names::DEST_BATCH_BYTES, "destination" => d.clone()),
            send_seconds: metrics::histogram!(names::DEST_SEND_DURATION_SECONDS, "destination" => d),
        }
    }
}

/// Shared by every send task of one destination.
pub struct SendContext {
    pub destination: Arc<dyn Destination>,
    pub policy: RetryPolicy,
    pub paused: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    pub progress: mpsc::UnboundedSender<Progress>,
    pub metrics: SendMetrics,
}

/// A batch handed to a send task.
pub struct SendJob {
    pub ticket: Ticket,
    pub batch: Batch,
    /// Position of each item's event (parallel to `batch.items`), for dead letters.
    pub positions: Vec<Position>,
    /// Retry state carried over (non-default after a restart).
    pub retry: RetryState,
    /// Do not send before this instant (restart backoff).
    pub not_before: Option<Instant>,
    /// The arena the items' payloads are slices of, handed back with the batch's other
    /// buffers when the send finishes (`spare_buffers.rs`).
    pub arena: Option<Bytes>,
}

/// A retry was scheduled.
#[derive(Debug, Clone)]
pub struct Progress {
    pub ticket: Ticket,
    pub retry: RetryState,
    pub error: String,
    /// The target asked us to slow down (feeds the adaptive concurrency limit).
    pub throttled: bool,
}

/// Items given up on, with the reason.
#[derive(Debug)]
pub struct DeadItems {
    pub reason: String,
    /// Why, as a short metric label (`permanent`, `retries_exhausted`, `partial_permanent`).
    pub label: &'static str,
    pub items: Vec<(BatchItem, Position)>,
}

/// How a send task ended.
#[derive(Debug)]
pub enum SendReport {
    /// Every item is delivered or in `dead`; the batch can be acked.
    Finished {
        ticket: Ticket,
        batch_id: String,
        delivered: usize,
        dead: Vec<DeadItems>,
        /// The batch's emptied buffers, for the next batches.
        spare: Option<Spare>,
    },
    /// Shutdown while waiting to retry: not acked; `retry` is persisted.
    Interrupted { ticket: Ticket, retry: RetryState },
}

/// Run one batch to completion (or interruption).
pub async fn run(ctx: Arc<SendContext>, job: SendJob) -> SendReport {
    let SendJob {
        ticket,
        mut batch,
        mut positions,
        mut retry,
        not_before,
        arena,
    } = job;
    let mut paused = ctx.paused.clone();
    let mut delivered = 0usize;
    let mut dead = Vec::new();
    let mut wait_until = not_before;
    ctx.metrics.batch_events.record(batch.items.len() as f64);
    ctx.metrics.batch_bytes.record(batch.payload_bytes() as f64);

    loop {
        if let Some(until) = wait_until.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = ctx.shutdown.cancelled() => return SendReport::Interrupted { ticket, retry },
            }
        }
        while *paused.borrow_and_update() {
            tokio::select! {
                changed = paused.changed() => if changed.is_err() { break },
                _ = ctx.shutdown.cancelled() => return SendReport::Interrupted { ticket, retry },
            }
        }
        if retry.attempts > 0 && ctx.shutdown.is_cancelled() {
            return SendReport::Interrupted { ticket, retry };
        }
        if retry.attempts > 0 {
            ctx.metrics.retries.increment(1);
        }

        let started = Instant::now();
        let outcome = ctx.destination.send(&batch).await;
        ctx.metrics
            .send_seconds
            .record(started.elapsed().as_secs_f64());

        let (class, reason, retry_after) = match outcome {
            SendOutcome::Delivered => {
                ctx.metrics.sends_delivered.increment(1);
                delivered += batch.items.len();
                ctx.metrics
                    .delivered_events
                    .increment(batch.items.len() as u64);
                return finished(ticket, batch, positions, arena, delivered, dead);
            }
            SendOutcome::Failed(failure) if !failure.is_retriable() => {
                ctx.metrics.sends_permanent.increment(1);
                let items = take_all(&mut batch, &mut positions);
                dead.push(DeadItems {
                    reason: format!("permanent failure: {}", failure.reason),
                    label: "permanent",
                    items,
                });
                return finished(ticket, batch, positions, arena, delivered, dead);
            }
            SendOutcome::Failed(failure) => {
                ctx.metrics.sends_retriable.increment(1);
                let class = if failure.is_throttled() {
                    ctx.metrics.throttled.increment(1);
                    ErrorClass::Throttled
                } else {
                    ErrorClass::Retriable
                };
                (class, failure.reason, failure.retry_after)
            }
            SendOutcome::Partial { failures } => {
                ctx.metrics.sends_partial.increment(1);
                let throttled = failures.iter().any(|f| f.failure.is_throttled());
                if throttled {
                    ctx.metrics.throttled.increment(1);
                }
                let split = split_partial(&mut batch, &mut positions, failures);
                delivered += split.accepted;
                ctx.metrics
                    .delivered_events
                    .increment(split.accepted as u64);
                if !split.permanent.is_empty() {
                    dead.push(DeadItems {
                        reason: "permanent item failure".to_string(),
                        label: "partial_permanent",
                        items: split.permanent,
                    });
                }
                if batch.items.is_empty() {
                    return finished(ticket, batch, positions, arena, delivered, dead);
                }
                let class = if throttled {
                    ErrorClass::Throttled
                } else {
                    ErrorClass::Partial
                };
                let reason = format!(
                    "{} of the batch's items failed, first: {}",
                    batch.items.len(),
                    split.first_retriable_reason
                );
                (class, reason, split.retry_after)
            }
        };

        let decision = ctx.policy.on_failure(
            &mut retry,
            class,
            retry_after,
            unix_ms_now(),
            &mut rand::rng(),
        );
        match decision {
            RetryDecision::RetryAfter(wait) => {
                tracing::warn!(
                    destination = ctx.destination.name(),
                    batch = %batch.id,
                    attempts = retry.attempts,
                    wait_ms = wait.as_millis() as u64,
                    error = %reason,
                    "send failed, will retry"
                );
                let _ = ctx.progress.send(Progress {
                    ticket,
                    retry,
                    error: reason,
                    throttled: class == ErrorClass::Throttled,
                });
                wait_until = Some(Instant::now() + wait);
            }
            RetryDecision::GiveUp => {
                tracing::error!(
                    destination = ctx.destination.name(),
                    batch = %batch.id,
                    attempts = retry.attempts,
                    error = %reason,
                    "giving up on batch; its events go to the dead-letter store"
                );
                let items = take_all(&mut batch, &mut positions);
                dead.push(DeadItems {
                    reason: format!(
                        "gave up after {} failed attempts{}: {reason}",
                        retry.attempts,
                        age_note(&retry)
                    ),
                    label: "retries_exhausted",
                    items,
                });
                return finished(ticket, batch, positions, arena, delivered, dead);
            }
        }
    }
}

fn finished(
    ticket: Ticket,
    batch: Batch,
    positions: Vec<Position>,
    arena: Option<Bytes>,
    delivered: usize,
    dead: Vec<DeadItems>,
) -> SendReport {
    // Emptied here, on the send task, rather than on the worker's. The batch's view of the
    // arena goes first: the arena is reused only when nothing else refers to it.
    let Batch {
        id, items, lines, ..
    } = batch;
    drop(lines);
    let spare = Returned {
        items,
        positions,
        arena,
    }
    .into_spare();
    SendReport::Finished {
        ticket,
        batch_id: id,
        delivered,
        dead,
        spare,
    }
}

fn age_note(retry: &RetryState) -> String {
    let age = unix_ms_now().saturating_sub(retry.first_failure_unix_ms);
    if retry.first_failure_unix_ms == 0 {
        String::new()
    } else {
        format!(
            " over {}",
            humantime::format_duration(Duration::from_secs(age / 1000))
        )
    }
}

fn take_all(batch: &mut Batch, positions: &mut Vec<Position>) -> Vec<(BatchItem, Position)> {
    std::mem::take(&mut batch.items)
        .into_iter()
        .zip(std::mem::take(positions))
        .collect()
}

struct PartialSplit {
    accepted: usize,
    permanent: Vec<(BatchItem, Position)>,
    first_retriable_reason: String,
    /// The longest `Retry-After` the target asked for among the retriable items.
    retry_after: Option<Duration>,
}

/// Keep only the retriable failures in `batch`; return the accepted count and the permanent
/// failures. Failure indices out of range or repeated are ignored (a destination bug must not
/// lose or duplicate items); a failure listed both ways counts as permanent.
fn split_partial(
    batch: &mut Batch,
    positions: &mut Vec<Position>,
    failures: Vec<ItemFailure>,
) -> PartialSplit {
    let total = batch.items.len();
    let mut by_index: BTreeMap<usize, (bool, String)> = BTreeMap::new();
    let mut retry_after: Option<Duration> = None;
    for ItemFailure { index, failure } in failures.into_iter().filter(|f| f.index < total) {
        let retriable = failure.is_retriable();
        if retriable {
            retry_after = retry_after.max(failure.retry_after);
        }
        by_index
            .entry(index)
            .and_modify(|(both, _)| *both &= retriable)
            .or_insert((retriable, failure.reason));
    }
    let mut first_retriable_reason = String::new();
    let mut kept_items = Vec::new();
    let mut kept_positions = Vec::new();
    let mut permanent = Vec::new();
    let items = std::mem::take(&mut batch.items);
    let old_positions = std::mem::take(positions);
    for (index, (item, position)) in items.into_iter().zip(old_positions).enumerate() {
        match by_index.remove(&index) {
            None => {}
            Some((true, reason)) => {
                if first_retriable_reason.is_empty() {
                    first_retriable_reason = reason;
                }
                kept_items.push(item);
                kept_positions.push(position);
            }
            Some((false, reason)) => {
                let _ = reason;
                permanent.push((item, position));
            }
        }
    }
    let accepted = total - kept_items.len() - permanent.len();
    batch.items = kept_items;
    *positions = kept_positions;
    PartialSplit {
        accepted,
        permanent,
        first_retriable_reason,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::FailureClass;
    use crate::event::Schema;
    use bytes::Bytes;

    fn batch(n: usize) -> (Batch, Vec<Position>) {
        let items = (0..n)
            .map(|i| BatchItem {
                event_id: format!("e{i}").into(),
                payload: Bytes::from(format!("{{\"i\":{i}}}")),
                kind: "custom".into(),
                key: None,
                context_key: None,
                environment: "prod".into(),
                received_at_ms: 0,
            })
            .collect();
        let positions = (0..n)
            .map(|i| Position {
                seq: 1,
                event: i as u32,
            })
            .collect();
        (
            Batch {
                id: "b".into(),
                schema: Schema::LaunchDarkly,
                items,
                lines: None,
            },
            positions,
        )
    }

    fn failure(index: usize, retriable: bool) -> ItemFailure {
        let class = if retriable {
            FailureClass::Retriable
        } else {
            FailureClass::Permanent
        };
        ItemFailure::new(index, class, format!("item {index}"))
    }

    #[test]
    fn partial_split_keeps_only_retriable_items_in_order() {
        let (mut b, mut p) = batch(6);
        let split = split_partial(
            &mut b,
            &mut p,
            vec![
                failure(4, true),
                failure(1, true),
                failure(2, false),
                failure(99, true),
            ],
        );
        assert_eq!(split.accepted, 3);
        let ids: Vec<&str> = b.items.iter().map(|i| i.event_id.as_str()).collect();
        assert_eq!(ids, vec!["e1", "e4"]);
        assert_eq!(p.iter().map(|p| p.event).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(split.permanent.len(), 1);
        assert_eq!(split.permanent[0].0.event_id, "e2");
        assert_eq!(split.first_retriable_reason, "item 1");
    }

    #[test]
    fn a_failure_reported_both_ways_is_permanent_and_counted_once() {
        let (mut b, mut p) = batch(2);
        let split = split_partial(&mut b, &mut p, vec![failure(0, true), failure(0, false)]);
        assert_eq!(split.accepted, 1);
        assert!(b.items.is_empty());
        assert_eq!(split.permanent.len(), 1);
    }
}
