//! `Delivery::rewind`: resolve a rewind target against the WAL and hand it to the
//! destination's worker (which does the work, `worker/rewind.rs`).
//!
//! A target before the oldest stored record is refused rather than clamped: the operator asked
//! for events that are gone and should hear which are still there.

use tokio::sync::oneshot;

use super::start::RewindTo;
use super::worker::{Control, RewindRefused};
use super::Delivery;
use crate::wal::{Position, WalError};

pub use super::worker::Rewound;

/// Why a rewind was refused.
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error("no destination named `{0}`")]
    UnknownDestination(String),
    /// The target lies before the oldest stored record.
    #[error("{requested} is no longer stored; the earliest stored record is seq {first_seq}")]
    BeforeEarliest {
        requested: String,
        first_seq: u64,
        /// Receive time of the earliest stored record (Unix ms), when there is one.
        first_received_at_ms: Option<u64>,
    },
    #[error("seq {seq} is beyond the end of the log (the next record gets seq {next_seq})")]
    BeyondEnd { seq: u64, next_seq: u64 },
    #[error("seq {to} is ahead of the destination's acked seq {acked}; a rewind only moves back")]
    Ahead { to: u64, acked: u64 },
    #[error("the destination is stopping")]
    Stopped,
    #[error("{0}")]
    Failed(String),
}

impl Delivery {
    /// Move `name`'s cursor back to `to` (persisted) and deliver from there again. Resolves
    /// once the worker has dropped its in-flight batches and persisted the new position.
    pub async fn rewind(&self, name: &str, to: RewindTo) -> Result<Rewound, RewindError> {
        let handle = self
            .handle(name)
            .map_err(|_| RewindError::UnknownDestination(name.to_string()))?;
        let seq = self.resolve_rewind(to)?;
        let (reply, answer) = oneshot::channel();
        let to = Position { seq, event: 0 };
        handle
            .control
            .send(Control::Rewind { to, reply })
            .map_err(|_| RewindError::Stopped)?;
        match answer.await.map_err(|_| RewindError::Stopped)? {
            Ok(rewound) => Ok(rewound),
            Err(RewindRefused::Ahead { to, acked }) => Err(RewindError::Ahead { to, acked }),
            Err(RewindRefused::Trimmed(WalError::Trimmed { first_seq, .. })) => {
                Err(self.before_earliest(format!("seq {seq}"), first_seq))
            }
            Err(other) => Err(RewindError::Failed(other.to_string())),
        }
    }

    fn resolve_rewind(&self, to: RewindTo) -> Result<u64, RewindError> {
        let wal = &self.shared.wal;
        let first_seq = wal.first_seq();
        match to {
            RewindTo::Earliest => Ok(first_seq),
            RewindTo::Seq(seq) if seq < first_seq => {
                Err(self.before_earliest(format!("seq {seq}"), first_seq))
            }
            RewindTo::Seq(seq) if seq > wal.next_seq() => Err(RewindError::BeyondEnd {
                seq,
                next_seq: wal.next_seq(),
            }),
            RewindTo::Seq(seq) => Ok(seq),
            RewindTo::Time(unix_ms) => match wal.first_record_time() {
                Some(first) if unix_ms < first => {
                    Err(self.before_earliest(super::start::format_time(unix_ms), first_seq))
                }
                _ => Ok(wal.seq_at_time(unix_ms)),
            },
        }
    }

    fn before_earliest(&self, requested: String, first_seq: u64) -> RewindError {
        RewindError::BeforeEarliest {
            requested,
            first_seq,
            first_received_at_ms: self.shared.wal.first_record_time(),
        }
    }
}
