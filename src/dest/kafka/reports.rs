//! Per-message delivery reports, gathered per send.
//!
//! librdkafka reports each message's outcome once, on the producer's polling thread. A send
//! enqueues a batch's messages with one [`Delivery`] each (the message's delivery opaque:
//! the send's shared [`SendReports`] and the item's index); the [`ReportingContext`] records
//! a failure under its index, and dropping the `Delivery` counts the message as reported. The
//! send awaits the moment its count reaches zero, once, instead of one future per message:
//! the per-message future, channel and wake-up of rdkafka's `FutureProducer` were a third of
//! our CPU per event into Kafka (`benches/cloud_destinations.rs`).
//!
//! Invariant: every enqueued message is counted exactly once, whatever happens to it. A
//! report records its outcome and drops the opaque; an opaque dropped without a report (a
//! producer destroyed with messages inside) counts as [`Reported::Abandoned`]; an opaque
//! handed back because enqueueing failed is [`Delivery::dismiss`]ed by the send, which
//! classified that failure itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

/// The producer flagstream uses: librdkafka's own polling thread delivers reports to
/// [`ReportingContext`].
pub type ReportingProducer = ThreadedProducer<ReportingContext>;

/// What became of one message that did not land.
#[derive(Debug)]
pub enum Reported {
    /// librdkafka reported this error for it.
    Failed(KafkaError),
    /// The producer let go of it without a report (it was destroyed meanwhile).
    Abandoned,
}

/// The outcomes of one send's messages.
#[derive(Debug, Default)]
pub struct SendReports {
    outstanding: AtomicUsize,
    failures: Mutex<Vec<(usize, Reported)>>,
    all_reported: Notify,
}

impl SendReports {
    pub fn new() -> Arc<SendReports> {
        Arc::default()
    }

    /// The opaque for the message of item `index`; counts it as outstanding.
    pub fn track(self: &Arc<Self>, index: usize) -> Box<Delivery> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Box::new(Delivery {
            reports: Arc::clone(self),
            index,
            state: State::Pending,
        })
    }

    /// Wait until every tracked message is reported; the failures by item index.
    pub async fn finished(&self) -> Vec<(usize, Reported)> {
        loop {
            let notified = self.all_reported.notified();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return std::mem::take(&mut *self.failures.lock());
            }
            notified.await;
        }
    }
}

/// One message's delivery opaque.
#[derive(Debug)]
pub struct Delivery {
    reports: Arc<SendReports>,
    index: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Enqueued, no report yet.
    Pending,
    Landed,
    Failed(KafkaError),
    /// Handed back by a failed enqueue, which the send classified itself.
    Dismissed,
}

impl Delivery {
    /// Enqueueing failed and the send accounts for it itself: count it, record nothing.
    pub fn dismiss(&mut self) {
        self.state = State::Dismissed;
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let outcome = match std::mem::replace(&mut self.state, State::Dismissed) {
            State::Landed | State::Dismissed => None,
            State::Failed(error) => Some(Reported::Failed(error)),
            State::Pending => Some(Reported::Abandoned),
        };
        if let Some(outcome) = outcome {
            self.reports.failures.lock().push((self.index, outcome));
        }
        if self.reports.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reports.all_reported.notify_one();
        }
    }
}

/// The producer context: folds librdkafka's report into the message's [`Delivery`].
#[derive(Debug, Default)]
pub struct ReportingContext;

impl ClientContext for ReportingContext {}

impl ProducerContext for ReportingContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut delivery: Box<Delivery>) {
        delivery.state = match result {
            Ok(_) => State::Landed,
            Err((error, _)) => State::Failed(error.clone()),
        };
    }
}
