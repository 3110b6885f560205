//! The in-flight byte budget (`--max-inflight-bytes`): memory held by request bodies being
//! received, decompressed or appended.
//!
//! A request's [`Reservation`] grows *as bytes arrive* (and as gzip output is produced), never
//! ahead of them: a client that declares 10 MiB and sends one byte holds one byte. Two
//! consequences, both deliberate:
//!
//! * A stalled or trickling body holds only what it really sent, so a few stalled requests
//!   cannot take the budget from everyone else; and each growth step is at most one received
//!   chunk, so no request waits for a huge block of the FIFO semaphore while small requests
//!   queue behind it.
//! * Growing can wait when the budget is full; it waits at most `--inflight-wait` per step,
//!   then the request gets 503 `overloaded` and releases what it held.
//!
//! * One connection's requests together (HTTP/2 streams) hold at most its
//!   [`ConnectionShare`], so a single connection cannot take the whole budget.
//!
//! Invariant: the bytes a request keeps in memory are covered by its reservation from the
//! moment it keeps them until its append resolved (the reservation is dropped last).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::IngestError;
use crate::metrics as m;

/// Largest single acquisition. tokio's semaphore is FIFO and a queued waiter takes permits as
/// they free up, so a waiter never holds back more than one step from the requests behind it.
const GROWTH_STEP: usize = 64 * 1024;

/// The shared budget.
pub struct InflightBudget {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    connection_capacity: usize,
    wait: Duration,
}

/// One connection's share of the budget: everything its requests (HTTP/2 streams) hold
/// together. The listener puts one in each request's extensions.
#[derive(Clone)]
pub struct ConnectionShare {
    semaphore: Arc<Semaphore>,
    capacity: usize,
}

impl InflightBudget {
    /// `connection_capacity`: most bytes one connection's requests may hold together.
    pub fn new(capacity: usize, connection_capacity: usize, wait: Duration) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        InflightBudget {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
            connection_capacity: connection_capacity.clamp(1, capacity),
            wait,
        }
    }

    /// A fresh share for a new connection.
    pub fn connection_share(&self) -> ConnectionShare {
        ConnectionShare {
            semaphore: Arc::new(Semaphore::new(self.connection_capacity)),
            capacity: self.connection_capacity,
        }
    }

    /// An empty reservation, counted against `share` too when given.
    pub fn reservation(&self, share: Option<&ConnectionShare>) -> Reservation {
        Reservation {
            global: Held::new(self.semaphore.clone()),
            connection: share.map(|share| Held::new(share.semaphore.clone())),
            capacity: share.map_or(self.capacity, |share| share.capacity.min(self.capacity)),
            wait: self.wait,
            bytes: 0,
        }
    }

    /// Bytes not reserved by anyone.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Permits taken from one semaphore.
struct Held {
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    fn new(semaphore: Arc<Semaphore>) -> Self {
        Held {
            semaphore,
            permit: None,
        }
    }

    /// Take `weight` more permits, waiting at most `wait`; `full` when they do not come.
    async fn take(
        &mut self,
        weight: u32,
        wait: Duration,
        full: IngestError,
    ) -> Result<(), IngestError> {
        let permit = match self.semaphore.clone().try_acquire_many_owned(weight) {
            Ok(permit) => permit,
            Err(_) => {
                let acquire = self.semaphore.clone().acquire_many_owned(weight);
                match tokio::time::timeout(wait, acquire).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(IngestError::ShuttingDown),
                    Err(_elapsed) => return Err(full),
                }
            }
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

/// Bytes held by one request; returned (and the gauge lowered) on drop.
pub struct Reservation {
    global: Held,
    connection: Option<Held>,
    capacity: usize,
    wait: Duration,
    bytes: usize,
}

impl Reservation {
    /// Reserve `bytes` more, waiting (bounded) for room.
    pub async fn grow(&mut self, bytes: usize) -> Result<(), IngestError> {
        // One request can never hold more than the whole budget (or its connection's share).
        let mut wanted = bytes.min(self.capacity.saturating_sub(self.bytes));
        while wanted > 0 {
            let step = wanted.min(GROWTH_STEP);
            self.grow_step(step).await?;
            wanted -= step;
        }
        Ok(())
    }

    async fn grow_step(&mut self, bytes: usize) -> Result<(), IngestError> {
        let weight = bytes as u32; // at most GROWTH_STEP
        if let Some(connection) = &mut self.connection {
            let full = IngestError::ConnectionOverloaded;
            connection.take(weight, self.wait, full).await?;
        }
        let full = IngestError::Overloaded;
        self.global.take(weight, self.wait, full).await?;
        self.bytes += weight as usize;
        metrics::gauge!(m::INGEST_INFLIGHT_BYTES).increment(f64::from(weight));
        Ok(())
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            metrics::gauge!(m::INGEST_INFLIGHT_BYTES).decrement(self.bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_grow_and_return_their_bytes() {
        let budget = InflightBudget::new(100, 100, Duration::from_millis(10));
        let mut first = budget.reservation(None);
        first.grow(60).await.unwrap();
        first.grow(30).await.unwrap();
        assert_eq!((first.bytes(), budget.available()), (90, 10));
        let mut second = budget.reservation(None);
        assert_eq!(second.grow(20).await.unwrap_err().code(), "overloaded");
        second.grow(10).await.unwrap();
        drop(first);
        assert_eq!(budget.available(), 90);
        second.grow(1000).await.unwrap();
        assert_eq!(second.bytes(), 100, "capped at the whole budget");
    }

    #[tokio::test]
    async fn one_connection_cannot_hold_more_than_its_share() {
        let budget = InflightBudget::new(1000, 100, Duration::from_millis(10));
        let share = budget.connection_share();
        let mut first_stream = budget.reservation(Some(&share));
        first_stream.grow(80).await.unwrap();
        let mut second_stream = budget.reservation(Some(&share));
        let err = second_stream.grow(30).await.unwrap_err();
        assert_eq!(err.code(), "connection_overloaded");
        let other = budget.connection_share();
        let mut elsewhere = budget.reservation(Some(&other));
        elsewhere.grow(100).await.unwrap();
        assert_eq!(budget.available(), 1000 - 80 - 100);
        drop(first_stream);
        second_stream.grow(30).await.unwrap();
    }
}
