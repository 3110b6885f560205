//! Placeholder: every metric name in one place (owned by the `flagstream serve` work).
