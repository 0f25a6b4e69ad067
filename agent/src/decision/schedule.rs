//! When a certificate's renewal is due.
//!
//! Renewal starts when less than `min(renew_before, lifetime / 3)` is left, the cap at a
//! third of the lifetime preventing a renewal loop when the CA issues shorter certificates
//! than the configuration expects. A stable per-device offset of up to seven days moves it
//! earlier, so that a fleet enrolled in one day does not renew in one hour; the offset is
//! capped at a third of the lifetime too, so that a fresh certificate is never due.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use super::CertFacts;

/// The largest per-device offset.
pub const MAX_DEVICE_OFFSET: TimeDelta = TimeDelta::days(7);

/// The renewal window when the configuration says nothing.
pub const DEFAULT_RENEW_BEFORE: TimeDelta = TimeDelta::days(30);

/// This device's offset in `[0, 7 days]`, derived from its UDID by SHA-256 so that it is the
/// same at every run and spread evenly across a fleet.
pub fn device_offset(udid: &str) -> TimeDelta {
    let digest = Sha256::digest(udid.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    let span = MAX_DEVICE_OFFSET.num_seconds().unsigned_abs() + 1;
    let secs = u64::from_be_bytes(first) % span;
    // `secs` < 7 days in seconds, far inside i64.
    TimeDelta::seconds(i64::try_from(secs).unwrap_or(0))
}

/// The first minute (local time, from midnight) of the daily window of the calendar run.
pub const DAILY_WINDOW_START: u16 = 9 * 60;

/// The daily window's length in minutes (09:00 to 16:59).
pub const DAILY_WINDOW_MINUTES: u16 = 8 * 60;

/// The local minute of the day (from midnight) of this device's daily calendar run: the
/// offset, counted in minutes, folded into 09:00–16:59, when Macs are usually awake and
/// online.
pub fn daily_run_minute(device_offset: TimeDelta) -> u16 {
    let minutes = device_offset.num_minutes().unsigned_abs() % u64::from(DAILY_WINDOW_MINUTES);
    // `minutes` < 480.
    DAILY_WINDOW_START + u16::try_from(minutes).unwrap_or(0)
}

/// When the renewal of `cert` is due.
pub fn renewal_due(cert: &CertFacts, renew_before: TimeDelta, device_offset: TimeDelta) -> DateTime<Utc> {
    let third = ((cert.not_after - cert.not_before) / 3).max(TimeDelta::zero());
    let window = renew_before.max(TimeDelta::zero()).min(third);
    let offset = device_offset.max(TimeDelta::zero()).min(third);
    cert.not_after - window - offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000 + days)
    }

    #[test]
    fn due_time_table() {
        let year = CertFacts { not_before: at(0), not_after: at(365) };
        let day = TimeDelta::days(1);
        let table = [
            ("ok/year-default-window-no-offset", year, 30, 0, at(335)),
            ("ok/year-default-window-max-offset", year, 30, 7, at(328)),
            ("ok/year-short-window", year, 10, 3, at(352)),
            // 30 days on a 30-day certificate would renew at once: capped to 10 days.
            ("ok/month-capped-at-a-third", CertFacts { not_before: at(0), not_after: at(30) }, 30, 0, at(20)),
            ("ok/month-offset-capped-too", CertFacts { not_before: at(0), not_after: at(30) }, 30, 7, at(13)),
            ("ok/zero-window", year, 0, 0, at(365)),
        ];
        for (name, cert, window_days, offset_days, want) in table {
            assert_eq!(renewal_due(&cert, day * window_days, day * offset_days), want, "{name}");
        }
    }

    #[test]
    fn device_offset_is_stable_and_spread() {
        assert_eq!(device_offset("564D1234-AAAA"), device_offset("564D1234-AAAA"));
        let offsets: std::collections::BTreeSet<_> =
            (0..50).map(|i| device_offset(&format!("device-{i}")).num_hours()).collect();
        // Fifty devices over 169 possible hours: a hash spreads them, a constant would not.
        assert!(offsets.len() > 30, "{offsets:?}");
    }

    proptest! {
        #[test]
        fn offset_within_seven_days(udid in ".*") {
            let offset = device_offset(&udid);
            prop_assert!(offset >= TimeDelta::zero());
            prop_assert!(offset <= MAX_DEVICE_OFFSET);
        }

        #[test]
        fn fresh_certificate_is_never_due(
            lifetime_secs in 3i64..(3 * 365 * 86_400),
            window_secs in 0i64..(400 * 86_400),
            udid in "[0-9A-F-]{1,40}",
        ) {
            let cert = CertFacts { not_before: at(0), not_after: at(0) + TimeDelta::seconds(lifetime_secs) };
            let due = renewal_due(&cert, TimeDelta::seconds(window_secs), device_offset(&udid));
            // At least a third of the lifetime passes before renewal: no renewal loops.
            prop_assert!(due >= cert.not_before + (cert.not_after - cert.not_before) / 3);
            prop_assert!(due <= cert.not_after);
        }
    }
}
