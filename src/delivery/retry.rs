//! The retry schedule: how long to wait after a failed send, and when to give up.
//!
//! ## Policy
//!
//! Exponential backoff with *full jitter* (AWS architecture blog, "Exponential Backoff and
//! Jitter"): after the n-th consecutive failure the wait is uniform in
//! `[0, min(max_backoff, initial_backoff · 2^(n-1))]`, raised to the server's `Retry-After`
//! when it sent one. Full jitter spreads the retries of many batches (and many flagstream
//! instances) that failed together, instead of synchronising them into waves.
//!
//! A batch is given up on — dead-lettered with the last reason, never dropped — when either
//! budget is spent:
//! * `max_attempts` *retries* after the first failure (`None` = unlimited), or
//! * `max_age` since the first failure (`None` = unlimited). The last wait is clamped to this
//!   deadline, so the final attempt happens at the deadline rather than being skipped.
//!
//! The default is LaunchDarkly's Data Export promise — 5 retries over about 30 minutes — made
//! safer: afterwards the batch goes to the dead-letter store instead of disappearing. Without
//! jitter the waits would be 1, 2, 4, 8, 16 minutes (31 minutes); `max_age` of 30 minutes bounds
//! the whole schedule.
//!
//! ## Persistence
//!
//! [`RetryState`] (attempts, next attempt, first failure, last error class) is stored with the
//! WAL cursor for the oldest in-flight batch (`cursor_state.rs`), so a restart keeps backing off instead of
//! hammering a broken endpoint. [`ErrorClass`] gives the opaque `last_error_class` code its
//! meaning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::Serialize;

use super::cursor_state::RetryState;
use crate::dest::units::parse_duration;

/// The longest `Retry-After` honoured; a target asking for more is retried after this.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// When to retry and when to give up. Filled from `--retry-*` flags and per-destination keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first failed attempt; `None` = unlimited.
    pub max_attempts: Option<u32>,
    /// Time since the first failure after which the batch is dead-lettered; `None` = unlimited.
    pub max_age: Option<Duration>,
    /// Upper bound of the first (jittered) wait.
    pub initial_backoff: Duration,
    /// Upper bound of any (jittered) wait; `Retry-After` may exceed it.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries over about 30 minutes (LaunchDarkly's promise), then dead letters.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: Some(5),
            max_age: Some(Duration::from_secs(30 * 60)),
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(16 * 60),
        }
    }
}

/// What the engine should do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Budget spent: dead-letter the batch.
    GiveUp,
}

impl RetryPolicy {
    /// Record a failure in `state` (at wall-clock `now_ms`) and decide what happens next.
    /// On `RetryAfter`, `state.next_attempt_unix_ms` is set accordingly.
    pub fn on_failure(
        &self,
        state: &mut RetryState,
        class: ErrorClass,
        retry_after: Option<Duration>,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        if state.attempts == 0 {
            state.first_failure_unix_ms = now_ms;
        }
        state.attempts = state.attempts.saturating_add(1);
        state.last_error_class = class.code();
        // `attempts` counts failed attempts; the first one is not a retry.
        let retries_done = state.attempts - 1;
        if self.max_attempts.is_some_and(|max| retries_done >= max) {
            return RetryDecision::GiveUp;
        }
        let deadline_ms = self
            .max_age
            .map(|age| state.first_failure_unix_ms.saturating_add(duration_ms(age)));
        if deadline_ms.is_some_and(|deadline| now_ms >= deadline) {
            return RetryDecision::GiveUp;
        }
        let ceiling = self.backoff_ceiling(state.attempts);
        let jittered = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.random_range(0..=duration_ms(ceiling)))
        };
        let requested = retry_after.unwrap_or_default().min(self.longest_wait());
        let mut wait = jittered.max(requested);
        if let Some(deadline) = deadline_ms {
            wait = wait.min(Duration::from_millis(deadline - now_ms));
        }
        state.next_attempt_unix_ms = now_ms.saturating_add(duration_ms(wait));
        RetryDecision::RetryAfter(wait)
    }

    /// Upper bound of the wait after the `failures`-th consecutive failure (1-based).
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff)
    }

    /// The longest single wait: `max_backoff`, or up to [`RETRY_AFTER_CAP`] when the target
    /// asked for it with `Retry-After`.
    pub fn longest_wait(&self) -> Duration {
        self.max_backoff
            .max(self.initial_backoff)
            .max(RETRY_AFTER_CAP)
    }

    /// How long a restarted engine must still wait before retrying a batch whose persisted
    /// state says `state`: never longer than [`RetryPolicy::longest_wait`] (a clock that
    /// jumped backwards must not park a destination for days).
    pub fn remaining_wait(&self, state: &RetryState, now_ms: u64) -> Duration {
        if state.attempts == 0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_millis(state.next_attempt_unix_ms.saturating_sub(now_ms));
        wait.min(self.longest_wait())
    }
}

/// Parse a `--retry-max-attempts` / `retry_max_attempts` value: a count or `unlimited`.
pub fn parse_max_attempts(text: &str) -> Result<Option<u32>, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    text.parse::<u32>()
        .map(Some)
        .map_err(|err| format!("expected a number of retries or `unlimited`, got `{text}`: {err}"))
}

/// Parse a duration (`30m`, `1h 30m`, `250ms`) or `unlimited` (for `--retry-max-age`).
pub fn parse_max_age(text: &str) -> Result<Option<Duration>, String> {
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    parse_duration(text).map(Some)
}

/// Why the last attempt failed; persisted as [`RetryState::last_error_class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    None,
    /// Timeout, connection error, 5xx.
    Retriable,
    /// 429 / throughput exceeded.
    Throttled,
    /// Some items of the batch failed.
    Partial,
    /// The target refused the batch for good.
    Permanent,
}

impl ErrorClass {
    pub fn code(self) -> u16 {
        match self {
            ErrorClass::None => 0,
            ErrorClass::Retriable => 1,
            ErrorClass::Throttled => 2,
            ErrorClass::Partial => 3,
            ErrorClass::Permanent => 4,
        }
    }

    /// Unknown codes (written by a newer version) read as `Retriable`.
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => ErrorClass::None,
            2 => ErrorClass::Throttled,
            3 => ErrorClass::Partial,
            4 => ErrorClass::Permanent,
            _ => ErrorClass::Retriable,
        }
    }
}

/// Wall-clock now in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: Some(5),
            max_age: Some(Duration::from_secs(1800)),
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(960),
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = policy();
        let ceilings: Vec<u64> = (1..=7).map(|n| p.backoff_ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, vec![60, 120, 240, 480, 960, 960, 960]);
        // Huge failure counts never overflow.
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(960));
    }

    #[test]
    fn default_schedule_gives_up_after_five_retries_within_thirty_minutes() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut state = RetryState::default();
            let start = 1_000_000u64;
            let mut now = start;
            let mut retries = 0;
            while let RetryDecision::RetryAfter(wait) =
                p.on_failure(&mut state, ErrorClass::Retriable, None, now, &mut rng)
            {
                assert!(wait <= p.backoff_ceiling(state.attempts));
                assert_eq!(state.next_attempt_unix_ms, now + wait.as_millis() as u64);
                now = state.next_attempt_unix_ms;
                retries += 1;
            }
            assert!(retries <= 5, "{retries} retries");
            assert!(now - start <= 30 * 60 * 1000);
            assert_eq!(state.first_failure_unix_ms, start);
        }
    }

    #[test]
    fn jitter_is_full_and_spread() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        let waits: Vec<u64> = (0..500)
            .map(|_| {
                let mut state = RetryState::default();
                match p.on_failure(&mut state, ErrorClass::Retriable, None, 0, &mut rng) {
                    RetryDecision::RetryAfter(wait) => wait.as_millis() as u64,
                    RetryDecision::GiveUp => panic!("first failure must retry"),
                }
            })
            .collect();
        assert!(waits.iter().all(|&w| w <= 60_000));
        assert!(
            waits.iter().any(|&w| w < 15_000),
            "no short waits: full jitter expected"
        );
        assert!(waits.iter().any(|&w| w > 45_000), "no long waits");
    }

    #[test]
    fn retry_after_is_honoured_but_clamped_to_max_age() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(3);
        let mut state = RetryState::default();
        let decision = p.on_failure(
            &mut state,
            ErrorClass::Throttled,
            Some(Duration::from_secs(120)),
            0,
            &mut rng,
        );
        assert!(matches!(decision, RetryDecision::RetryAfter(w) if w >= Duration::from_secs(120)));
        assert_eq!(state.last_error_class, ErrorClass::Throttled.code());
        // Close to the deadline a long Retry-After is clamped to the deadline.
        let decision = p.on_failure(
            &mut state,
            ErrorClass::Throttled,
            Some(Duration::from_secs(3600)),
            1_790_000,
            &mut rng,
        );
        assert_eq!(decision, RetryDecision::RetryAfter(Duration::from_secs(10)));
        // At the deadline: give up.
        let decision = p.on_failure(&mut state, ErrorClass::Retriable, None, 1_800_000, &mut rng);
        assert_eq!(decision, RetryDecision::GiveUp);
    }

    #[test]
    fn unlimited_never_gives_up() {
        let p = RetryPolicy {
            max_attempts: None,
            max_age: None,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        };
        let mut rng = StdRng::seed_from_u64(5);
        let mut state = RetryState::default();
        for i in 0..1000u64 {
            let decision = p.on_failure(&mut state, ErrorClass::Retriable, None, i * 100, &mut rng);
            assert!(
                matches!(decision, RetryDecision::RetryAfter(w) if w <= Duration::from_millis(40))
            );
        }
        assert_eq!(state.attempts, 1000);
    }

    #[test]
    fn remaining_wait_after_restart_is_capped() {
        let p = policy();
        let state = RetryState {
            attempts: 2,
            next_attempt_unix_ms: 10_000,
            first_failure_unix_ms: 1,
            last_error_class: 1,
        };
        assert_eq!(p.remaining_wait(&state, 4_000), Duration::from_secs(6));
        assert_eq!(p.remaining_wait(&state, 20_000), Duration::ZERO);
        let far = RetryState {
            next_attempt_unix_ms: u64::MAX,
            ..state
        };
        assert_eq!(p.remaining_wait(&far, 0), RETRY_AFTER_CAP);
        assert_eq!(p.remaining_wait(&RetryState::default(), 0), Duration::ZERO);
    }

    #[test]
    fn parses_flag_values() {
        assert_eq!(parse_max_attempts("5"), Ok(Some(5)));
        assert_eq!(parse_max_attempts("Unlimited"), Ok(None));
        assert!(parse_max_attempts("five").unwrap_err().contains("five"));
        assert_eq!(parse_max_age("30m"), Ok(Some(Duration::from_secs(1800))));
        assert_eq!(parse_max_age("unlimited"), Ok(None));
    }

    #[test]
    fn error_class_codes_round_trip() {
        for class in [
            ErrorClass::None,
            ErrorClass::Retriable,
            ErrorClass::Throttled,
            ErrorClass::Partial,
            ErrorClass::Permanent,
        ] {
            assert_eq!(ErrorClass::from_code(class.code()), class);
        }
        assert_eq!(ErrorClass::from_code(999), ErrorClass::Retriable);
    }
}
