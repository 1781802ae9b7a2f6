//! Capped exponential backoff, for every retry loop of the services: the worker's failed
//! batches, the result feed's reconnects, the supervisor's restarts. [`Outage`] keeps their
//! logs short: one line per change of state, not one per retry.

use std::time::Duration;

/// Waits `first`, then twice as long after each further failure, never more than `max`;
/// [`reset`](Backoff::reset) after a success starts again from `first`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    #[must_use]
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// How long to wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self
            .first
            .saturating_mul(2u32.saturating_pow(self.failures.min(16)));
        self.failures = self.failures.saturating_add(1);
        wait.min(self.max)
    }

    /// After a success: the next wait is `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What a retry loop's log says: a line when it starts failing, a line when the reason
/// changes, and a line when it works again; the retries in between are logged at debug level
/// only. (`/readyz` says the current reason at any time.) The caller logs, so that the line
/// keeps its module as target.
#[derive(Debug, Default)]
pub struct Outage {
    reason: Option<String>,
    retries: u64,
}

impl Outage {
    /// Records a failure for `reason` (already in words, see [`crate::error::describe`]).
    /// `true` when it is a change of state (log it at warn level), `false` for one more retry
    /// for the same reason (debug level at most).
    pub fn failed(&mut self, reason: &str) -> bool {
        self.retries += 1;
        if self.reason.as_deref() == Some(reason) {
            return false;
        }
        self.reason = Some(reason.to_string());
        true
    }

    /// Records a success: after a failure, the number of failed tries (log that it recovered),
    /// else `None`.
    pub fn recovered(&mut self) -> Option<u64> {
        self.reason.take()?;
        Some(std::mem::take(&mut self.retries))
    }

    /// Whether the last outcome was a failure.
    pub fn is_failing(&self) -> bool {
        self.reason.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let waits: Vec<u128> = (0..9).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_wait() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn an_outage_logs_its_changes_of_state_only() {
        let mut o = Outage::default();
        assert_eq!(o.recovered(), None, "nothing to recover from");
        assert!(o.failed("connection refused"));
        assert!(!o.failed("connection refused"));
        assert!(!o.failed("connection refused"));
        assert!(o.failed("password authentication failed"));
        assert!(o.is_failing());
        assert_eq!(o.recovered(), Some(4));
        assert_eq!(o.recovered(), None);
        assert!(o.failed("password authentication failed"));
    }
}
