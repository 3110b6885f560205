//! Rewinding a running destination: the worker drops what it has read, cut and sent, moves
//! its cursor back (persisted) and reads again from there.
//!
//! Steps, all inside the worker task so nothing else touches its state meanwhile (the
//! destination is in effect paused for the duration):
//! 1. Refuse a target ahead of the acked position (a rewind never skips undelivered events).
//! 2. Abort the send tasks and wait for them to end; their batches are not acked. A send
//!    already on the wire may still land: it carries the same batch id as its replay
//!    (`batcher.rs`), so dedupe-capable destinations overwrite instead of duplicating.
//! 3. Wait for a running cursor persist, then persist the new position with
//!    [`Cursor::rewind`](crate::wal::Cursor::rewind), which fails if the records were freed
//!    meanwhile. On failure the worker resets to its own acked position instead, which is
//!    what a restart would do.
//! 4. Reset the ack window, batcher, pipeline and reader to the new position; a pause set by
//!    the operator stays in force.
//!
//! The persisted position is not the target itself but the last recorded batch boundary at or
//! before it (`cut_log.rs`), and the recorded boundaries after it become planned cuts: the
//! replay cuts the batches the first delivery cut, with the same ids. Batches that end at or
//! before the target are acked without sending (`skip_until`); a restart during that stretch
//! forgets it and sends them again (same ids, so overwriting destinations stay exact).

use tokio::sync::oneshot;

use crate::delivery::cursor_state::{DeliveryCursor, RetryState};
use crate::delivery::cut_log::replay_start;
use crate::wal::{Position, WalError};

use super::Worker;

/// A request to the worker.
pub(crate) enum Control {
    Rewind {
        to: Position,
        reply: oneshot::Sender<Result<Rewound, RewindRefused>>,
    },
}

/// A rewind that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewound {
    /// The acked position before the rewind.
    pub from: Position,
    /// The position asked for: every event from here on is delivered again.
    pub to: Position,
    /// The batch boundary at or before `to` reading restarts from (the persisted cursor);
    /// batches that end at or before `to` are re-cut but not sent (`cut_log.rs`).
    pub replay_from: Position,
}

/// Why a rewind did not happen (the destination continues where it was).
#[derive(Debug, thiserror::Error)]
pub enum RewindRefused {
    #[error("seq {to} is ahead of the destination's acked seq {acked}; a rewind only moves back")]
    Ahead { to: u64, acked: u64 },
    #[error("{0}")]
    Trimmed(#[source] WalError),
    #[error("persisting the rewound cursor failed: {0}")]
    Persist(String),
}

impl Worker {
    pub(super) async fn on_control(&mut self, control: Control) {
        match control {
            Control::Rewind { to, reply } => {
                let outcome = self.rewind(to).await;
                // The caller may have gone away (client disconnected); the rewind stands.
                let _ = reply.send(outcome);
            }
        }
    }

    async fn rewind(&mut self, to: Position) -> Result<Rewound, RewindRefused> {
        let from = self.window.acked();
        if to > from {
            return Err(RewindRefused::Ahead {
                to: to.seq,
                acked: from.seq,
            });
        }
        self.drop_in_flight().await;
        let boundaries = match self.cut_log.read() {
            Ok(boundaries) => boundaries,
            Err(err) => {
                tracing::warn!(destination = %self.name, error = %err, "reading the cut log failed; the replay may cut batches differently");
                Vec::new()
            }
        };
        let replay_from = replay_start(&boundaries, to, self.wal.first_seq());
        let state = DeliveryCursor {
            acked: replay_from,
            plan: None,
            retry: RetryState::default(),
            dead_lettered: self.dead.total(),
        };
        let cursor = self.cursor.clone();
        let persisted = tokio::task::spawn_blocking(move || {
            let mut cursor = match cursor.lock() {
                Ok(cursor) => cursor,
                Err(poisoned) => poisoned.into_inner(),
            };
            cursor.rewind(state.encode())
        })
        .await;
        let refused = match persisted {
            Ok(Ok(())) => None,
            Ok(Err(trimmed @ WalError::Trimmed { .. })) => Some(RewindRefused::Trimmed(trimmed)),
            Ok(Err(other)) => Some(RewindRefused::Persist(other.to_string())),
            Err(join) => Some(RewindRefused::Persist(join.to_string())),
        };
        if let Some(refused) = refused {
            // In-flight work is gone: continue from our own acked position, as after a restart.
            self.reset_to(from, self.persisted);
            return Err(refused);
        }
        self.reset_to(replay_from, state);
        self.batcher.plan_cuts(boundaries);
        self.skip_until = (to > replay_from).then_some(to);
        // The new start is a boundary of the sequence from now on (written with the next
        // persist, before anything is sent).
        self.pending_cuts.push(replay_from);
        tracing::warn!(destination = %self.name, from_seq = from.seq, to_seq = to.seq, replay_from_seq = replay_from.seq,
            "Rewound the destination; events from here on are delivered again.");
        Ok(Rewound {
            from,
            to,
            replay_from,
        })
    }

    /// Abort every send and wait for the tasks and a running persist to end.
    async fn drop_in_flight(&mut self) {
        self.tasks.abort_all();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            // Finished before the abort took effect: ignore (not acked; replayed).
            if let Ok((id, _)) = joined {
                self.task_tickets.remove(&id);
            }
        }
        self.task_tickets.clear();
        while self.progress_rx.try_recv().is_ok() {}
        if let Some(job) = self.persist_job.take() {
            let done = job.await;
            self.persist_again = false;
            self.on_persisted(done);
        }
    }

    /// Read, cut and ack from `position` as if the worker had just started with `persisted`.
    fn reset_to(&mut self, position: Position, persisted: DeliveryCursor) {
        self.in_flight.clear();
        self.deferred = None;
        self.unfinished = None;
        self.restart_retry = None;
        self.gate = None;
        self.skip_until = None;
        self.pending_cuts.clear();
        self.window = crate::wal::AckWindow::new(position);
        self.batcher.restart_at(position);
        self.pipeline.forget_unfinished();
        self.reader = self.wal.reader(position.seq);
        self.loaded = DeliveryCursor {
            acked: position,
            plan: None,
            retry: RetryState::default(),
            dead_lettered: self.dead.total(),
        };
        self.persisted = persisted;
        self.publish_status();
    }
}
