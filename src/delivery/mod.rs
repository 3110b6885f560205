//! Placeholder: owned by the `flagstream serve` work (issue 4).
