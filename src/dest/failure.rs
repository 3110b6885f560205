//! One failure type for every destination, and the one place request metrics are counted.
//!
//! A destination classifies whatever its target answered into a [`Failure`]: a class
//! (retriable, throttled, permanent), a reason that names the target, and the delay the target
//! asked for. Whole requests fail with a `Failure`; single items fail with an [`ItemFailure`]
//! (an index plus a `Failure`). The engine branches on the class only, never on the text.
//!
//! [`RequestMetrics`] is the single meaning of `flagstream_dest_requests_total`: one count per
//! API request a destination sent to its target (a Kinesis `PutRecords`, one Pub/Sub publish
//! RPC, one HTTP request), labelled with how that request ended.

use std::time::Duration;

use metrics::Counter;

use crate::metrics as names;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Trying again may work: timeouts, connection errors, 5xx.
    Retriable,
    /// The target asked us to slow down (HTTP 429, throughput exceeded); retriable.
    Throttled,
    /// Trying again will not help: bad credentials, missing target, rejected payload.
    Permanent,
}

impl FailureClass {
    pub fn is_retriable(self) -> bool {
        !matches!(self, FailureClass::Permanent)
    }

    pub fn is_throttled(self) -> bool {
        matches!(self, FailureClass::Throttled)
    }

    /// Short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Retriable => "retriable",
            FailureClass::Throttled => "throttled",
            FailureClass::Permanent => "permanent",
        }
    }
}

/// A classified failure of a request (or of one item of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// Human-readable, naming the target (stream, topic, URL); never contains secrets.
    pub reason: String,
    /// Server-requested delay (`Retry-After`), if any.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn new(class: FailureClass, reason: impl Into<String>) -> Self {
        Failure {
            class,
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn retriable(reason: impl Into<String>) -> Self {
        Failure::new(FailureClass::Retriable, reason)
    }

    pub fn throttled(reason: impl Into<String>) -> Self {
        Failure::new(FailureClass::Throttled, reason)
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure::new(FailureClass::Permanent, reason)
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn is_retriable(&self) -> bool {
        self.class.is_retriable()
    }

    pub fn is_throttled(&self) -> bool {
        self.class.is_throttled()
    }

    /// The same failure for item `index`.
    pub fn for_item(&self, index: usize) -> ItemFailure {
        ItemFailure {
            index,
            failure: self.clone(),
        }
    }
}

/// One item of a batch that was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFailure {
    /// Index into [`super::Batch::items`].
    pub index: usize,
    pub failure: Failure,
}

impl ItemFailure {
    pub fn new(index: usize, class: FailureClass, reason: impl Into<String>) -> Self {
        Failure::new(class, reason).for_item(index)
    }

    pub fn is_retriable(&self) -> bool {
        self.failure.is_retriable()
    }
}

/// `error: cause: cause` — SDK errors hide the useful part in their sources. Causes already
/// contained in the text so far are not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

/// The first error of type `T` in `error`'s source chain (itself included).
pub fn find_source<'e, T: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// How one API request ended, for [`RequestMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// Every item of the request was accepted.
    Ok,
    /// The target accepted some items and refused others (`throttled`: some were throttled).
    Partial { throttled: bool },
    /// The whole request failed.
    Failed(FailureClass),
}

/// Counters of the API requests one destination sends, resolved once (labels allocate).
#[derive(Clone)]
pub struct RequestMetrics {
    ok: Counter,
    partial: Counter,
    throttled: Counter,
    error: Counter,
    throttled_requests: Counter,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestMetrics")
    }
}

impl RequestMetrics {
    pub fn new(destination: &str) -> Self {
        let requests = |outcome: &'static str| metrics::counter!(names::DEST_REQUESTS_TOTAL, "destination" => destination.to_string(), "outcome" => outcome);
        RequestMetrics {
            ok: requests("ok"),
            partial: requests("partial"),
            throttled: requests("throttled"),
            error: requests("error"),
            throttled_requests: metrics::counter!(names::DEST_THROTTLED_REQUESTS_TOTAL, "destination" => destination.to_string()),
        }
    }

    /// Count one request: `outcome` label ok / partial / throttled / error, and the throttled
    /// counter when the target throttled the request wholly or in part.
    pub fn record(&self, result: RequestResult) {
        let throttled = match result {
            RequestResult::Ok => {
                self.ok.increment(1);
                false
            }
            RequestResult::Partial { throttled } => {
                self.partial.increment(1);
                throttled
            }
            RequestResult::Failed(FailureClass::Throttled) => {
                self.throttled.increment(1);
                true
            }
            RequestResult::Failed(_) => {
                self.error.increment(1);
                false
            }
        };
        if throttled {
            self.throttled_requests.increment(1);
        }
    }

    /// Count a request from the item failures it produced (`items` items were sent).
    pub fn record_items(&self, items: usize, failures: &[ItemFailure]) {
        let throttled = failures.iter().any(|f| f.failure.is_throttled());
        let result = if failures.is_empty() {
            RequestResult::Ok
        } else if failures.len() >= items {
            RequestResult::Failed(failures[0].failure.class)
        } else {
            RequestResult::Partial { throttled }
        };
        self.record(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner cause")]
    struct Inner;

    #[test]
    fn error_chain_joins_causes_once_and_find_source_finds_them() {
        let error = Outer(Inner);
        assert_eq!(error_chain(&error), "outer: inner cause");
        assert!(find_source::<Inner>(&error).is_some());
        assert!(find_source::<std::io::Error>(&error).is_none());
    }

    #[test]
    fn classes() {
        assert!(Failure::throttled("x").is_retriable());
        assert!(Failure::throttled("x").is_throttled());
        assert!(!Failure::permanent("x").is_retriable());
        let item = Failure::retriable("r").for_item(3);
        assert_eq!(item.index, 3);
        assert!(item.is_retriable());
    }
}
