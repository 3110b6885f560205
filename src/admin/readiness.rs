//! Readiness: one small state machine shared by `main` (which moves it forward) and the admin
//! server (which reports it on `/readyz`).
//!
//! `Starting → Recovering → Ready → ShuttingDown`. `/readyz` answers 200 only in `Ready` *and*
//! while the WAL reports no fatal error, so a load balancer stops sending traffic both while the
//! WAL recovers at startup and after an fdatasync failure.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Recovering = 1,
    Ready = 2,
    ShuttingDown = 3,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Recovering => "recovering",
            Phase::Ready => "ready",
            Phase::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Debug, Default)]
pub struct Readiness {
    phase: AtomicU8,
}

impl Readiness {
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        metrics::gauge!(crate::metrics::READY).set(if phase == Phase::Ready { 1.0 } else { 0.0 });
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Recovering,
            2 => Phase::Ready,
            _ => Phase::ShuttingDown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip() {
        let readiness = Readiness::default();
        assert_eq!(readiness.phase(), Phase::Starting);
        for phase in [Phase::Recovering, Phase::Ready, Phase::ShuttingDown] {
            readiness.set(phase);
            assert_eq!(readiness.phase(), phase);
        }
    }
}
