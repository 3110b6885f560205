//! [`AckWindow`]: in-memory tracking of a cursor's in-flight batches.
//!
//! Batches are registered in log order, each starting where the previous one ended. They may
//! be acknowledged in any order (concurrent sends), but the acked position only moves over the
//! *contiguous* prefix of acknowledged batches — a later batch finishing first never lets the
//! cursor skip an earlier one that might still fail.

use std::collections::VecDeque;

use super::Position;

/// In-memory tracking of in-flight batches: acks may arrive out of order, the acked position
/// advances only over the contiguous prefix.
#[derive(Debug)]
pub struct AckWindow {
    acked: Position,
    /// In-flight batches in log order; the front one is never done (done fronts are popped).
    batches: VecDeque<InFlight>,
    next_ticket: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    ticket: u64,
    start: Position,
    end: Position,
    done: bool,
}

/// Handle for one batch registered in an [`AckWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub u64);

impl AckWindow {
    pub fn new(acked: Position) -> Self {
        AckWindow {
            acked,
            batches: VecDeque::new(),
            next_ticket: 0,
        }
    }

    /// Register the next batch `[start, end)`; `start` must equal the previous batch's end
    /// (or the acked position when nothing is in flight), and `end` must not precede `start`.
    ///
    /// # Panics
    /// On a gap, overlap or backwards batch: acking across it could skip undelivered events,
    /// so it is treated as the programming error it is.
    pub fn push(&mut self, start: Position, end: Position) -> Ticket {
        let expected = self.batches.back().map_or(self.acked, |last| last.end);
        assert!(
            start == expected && end >= start,
            "AckWindow::push({start:?}, {end:?}): batches must be contiguous from {expected:?}"
        );
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.batches.push_back(InFlight {
            ticket,
            start,
            end,
            done: false,
        });
        Ticket(ticket)
    }

    /// Mark a batch done; returns the new acked position if the contiguous prefix grew.
    /// Unknown or already-acked tickets change nothing.
    pub fn ack(&mut self, ticket: Ticket) -> Option<Position> {
        let front_ticket = self.batches.front()?.ticket;
        let index = usize::try_from(ticket.0.checked_sub(front_ticket)?).ok()?;
        let batch = self.batches.get_mut(index)?;
        batch.done = true;
        let before = self.acked;
        while let Some(front) = self.batches.front().filter(|front| front.done) {
            self.acked = front.end;
            self.batches.pop_front();
        }
        (self.acked != before).then_some(self.acked)
    }

    pub fn acked(&self) -> Position {
        self.acked
    }

    /// Start and end of the oldest batch still in flight.
    pub fn oldest_in_flight(&self) -> Option<(Position, Position)> {
        self.batches.front().map(|batch| (batch.start, batch.end))
    }

    pub fn in_flight(&self) -> usize {
        self.batches.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seq: u64) -> Position {
        Position { seq, event: 0 }
    }

    #[test]
    fn out_of_order_acks_wait_for_the_prefix() {
        let mut window = AckWindow::new(at(10));
        let first = window.push(at(10), at(12));
        let second = window.push(at(12), Position { seq: 15, event: 2 });
        let third = window.push(Position { seq: 15, event: 2 }, at(20));
        assert_eq!(window.ack(third), None);
        assert_eq!(window.ack(second), None);
        assert_eq!(window.acked(), at(10));
        assert_eq!(window.oldest_in_flight(), Some((at(10), at(12))));
        assert_eq!(window.ack(first), Some(at(20)));
        assert_eq!(window.in_flight(), 0);
        assert_eq!(window.oldest_in_flight(), None);
        assert_eq!(window.ack(first), None, "double ack is ignored");
        assert_eq!(window.ack(Ticket(99)), None);
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn gaps_are_refused() {
        let mut window = AckWindow::new(at(1));
        window.push(at(2), at(3));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the ack order, the acked position is always the end of the longest
        /// fully-acked prefix of batches.
        #[test]
        fn acked_is_always_the_contiguous_prefix(
            sizes in prop::collection::vec(1u64..5, 1..40),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..40),
        ) {
            let mut window = AckWindow::new(at(0));
            let mut ends = Vec::new();
            let mut tickets = Vec::new();
            let mut cursor = 0;
            for size in &sizes {
                tickets.push(window.push(at(cursor), at(cursor + size)));
                cursor += size;
                ends.push(cursor);
            }
            let mut acked = vec![false; sizes.len()];
            for pick in order {
                let index = pick.index(sizes.len());
                window.ack(tickets[index]);
                acked[index] = true;
                let prefix = acked.iter().take_while(|done| **done).count();
                let expected = if prefix == 0 { 0 } else { ends[prefix - 1] };
                prop_assert_eq!(window.acked(), at(expected));
                prop_assert_eq!(window.in_flight(), sizes.len() - prefix);
            }
        }
    }
}
