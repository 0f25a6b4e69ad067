//! Exponential backoff with jitter after a failed enrollment or renewal.
//!
//! The delay starts at one hour and doubles per consecutive failure up to 24 hours. Jitter
//! takes up to a quarter off, so that a fleet that failed together (the CA was down) does
//! not come back together. The jitter is an input, drawn once per failure by the caller, so
//! that this module stays a pure function of its arguments.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The delay after the first failure.
pub const BASE: TimeDelta = TimeDelta::hours(1);

/// The longest delay, however many failures came before.
pub const CAP: TimeDelta = TimeDelta::hours(24);

/// A fraction in `[0, 1)` (in units of 1/65536) of the delay's jitter range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Jitter(pub u16);

impl Jitter {
    #[cfg(test)]
    /// No jitter: the full delay.
    pub const NONE: Self = Self(0);
}

/// How long to wait after `failures` consecutive failures (0 failures: no wait).
///
/// For a fixed jitter the delay never shrinks as failures grow, and it never exceeds
/// [`CAP`]; jitter takes off at most a quarter.
pub fn delay(failures: u32, jitter: Jitter) -> TimeDelta {
    if failures == 0 {
        return TimeDelta::zero();
    }
    // 2^(failures-1) hours, saturating well before overflow: 2^5 hours already exceeds the cap.
    let doublings = (failures - 1).min(5);
    let full = (BASE * (1_i32 << doublings)).min(CAP);
    let full_secs = full.num_seconds();
    // Remove jitter/65536 of a quarter of the delay.
    let removed = full_secs / 4 * i64::from(jitter.0) / 65_536;
    TimeDelta::seconds(full_secs - removed)
}

/// The persisted memory of failed attempts, shared by enrollment and renewal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackoffState {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// When the last attempt (successful or not) was made.
    pub last_attempt: Option<DateTime<Utc>>,
    /// What went wrong last, for `status`; never contains a secret.
    pub last_error: Option<String>,
    /// No automatic attempt before this time.
    pub next_attempt: Option<DateTime<Utc>>,
}

impl BackoffState {
    /// The state after a failure at `now`.
    pub fn after_failure(&self, now: DateTime<Utc>, jitter: Jitter, error: impl Into<String>) -> Self {
        let failures = self.failures.saturating_add(1);
        Self {
            failures,
            last_attempt: Some(now),
            last_error: Some(error.into()),
            next_attempt: Some(now + delay(failures, jitter)),
        }
    }

    /// The state after a failure at `now` that waiting cannot cure (a wrong token, a server
    /// certificate the agent does not trust): recorded, but with no wait, so that the next
    /// attempt after the fix goes ahead at once.
    pub fn after_permanent_failure(&self, now: DateTime<Utc>, error: impl Into<String>) -> Self {
        Self {
            failures: self.failures.saturating_add(1),
            last_attempt: Some(now),
            last_error: Some(error.into()),
            next_attempt: None,
        }
    }

    /// The state after a success at `now`: no failures, no waiting.
    pub fn after_success(now: DateTime<Utc>) -> Self {
        Self { failures: 0, last_attempt: Some(now), last_error: None, next_attempt: None }
    }

    /// The time before which automatic attempts wait, if it is still ahead of `now`.
    pub fn waiting_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_attempt.filter(|next| *next > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_one_hour_to_the_cap() {
        let table = [
            ("ok/no-failure", 0, 0),
            ("ok/first", 1, 1),
            ("ok/second", 2, 2),
            ("ok/third", 3, 4),
            ("ok/fourth", 4, 8),
            ("ok/fifth", 5, 16),
            ("ok/capped", 6, 24),
            ("ok/still-capped", 40, 24),
            ("ok/max", u32::MAX, 24),
        ];
        for (name, failures, hours) in table {
            assert_eq!(delay(failures, Jitter::NONE), TimeDelta::hours(hours), "{name}");
        }
    }

    #[test]
    fn success_resets_and_failure_counts() {
        let now = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000);
        let once = BackoffState::default().after_failure(now, Jitter::NONE, "ca down");
        assert_eq!(once.failures, 1);
        assert_eq!(once.waiting_until(now), Some(now + TimeDelta::hours(1)));
        assert_eq!(once.waiting_until(now + TimeDelta::hours(1)), None);
        let twice = once.after_failure(now, Jitter::NONE, "ca down");
        assert_eq!(twice.next_attempt, Some(now + TimeDelta::hours(2)));
        let ok = BackoffState::after_success(now);
        assert_eq!(ok.failures, 0);
        assert_eq!(ok.waiting_until(now), None);
        assert_eq!(ok.last_error, None);
    }

    proptest! {
        #[test]
        fn bounded_by_the_cap_and_monotone_in_failures(failures in 0u32..100, jitter in any::<u16>()) {
            let jitter = Jitter(jitter);
            let here = delay(failures, jitter);
            let next = delay(failures + 1, jitter);
            prop_assert!(here <= CAP);
            prop_assert!(next >= here);
            if failures >= 1 {
                // Jitter takes off at most a quarter.
                prop_assert!(here * 4 >= delay(failures, Jitter::NONE) * 3);
                prop_assert!(here >= BASE * 3 / 4);
            }
        }
    }
}
