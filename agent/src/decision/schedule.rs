//! When a certificate's renewal is due, and when in the day a due renewal is carried out.
//!
//! The configured window is `renew_before`: renewal starts at the latest that long before
//! the end of validity, capped at a third of the lifetime so that a CA issuing shorter
//! certificates than the configuration expects causes no renewal loop.
//!
//! A fleet enrolled in one day would renew in one hour a year later, so every device has a
//! [`Slot`], derived from its UDID: a workday (one of the five before the window opens) and a
//! minute of the working day (09:00–16:59 local). The renewal is due at that minute of that
//! workday, counted back in workdays, so that the fleet's due times fall evenly over the
//! working hours of a week instead of over seven calendar days (which put every renewal that
//! fell due at a weekend into Monday's first hour). The agent's daily run fires at the same
//! minute every day (launchd's `StartCalendarInterval`, systemd's `OnCalendar=`).
//!
//! A periodic run after the due time renews only in the device's part of the day
//! ([`in_slot`]: from its slot's minute to 17:00 local, and at least [`MIN_IN_SLOT`]), on any
//! day of the week: a run at login, or one the scheduler fires on wake for a run missed in
//! the night, does not renew until the slot comes round, so the Monday morning does not
//! collect the renewals of Friday afternoon. Once [`GRACE_WORKDAYS`] workdays have passed
//! since the due time ([`grace_end`]), any run renews: a Mac that is never awake at its slot
//! (awake an hour a week, say) still renews at least [`MIN_SPREAD_WINDOW`] less the grace
//! (at most five days with a weekend) less a week, nine days, before its certificate ends.
//! Counting the grace in workdays keeps the grace's renewals on the workday mornings after
//! it, not all on a Monday.
//!
//! Local time is the offset in force at the run. Across a daylight saving change the due
//! time moves by the hour of the shift; every run recomputes it, so decisions stay
//! consistent.
//!
//! Certificates whose window is shorter than [`MIN_SPREAD_WINDOW`] (a lifetime under nine
//! weeks, or a short `renew_before`) have no room for a week of slots and a grace: they
//! are due at the window's start less a wall-clock offset of up to seven days (capped at a
//! third of the lifetime, so a fresh certificate is never due), and any run after it renews.

use chrono::{
    DateTime, Datelike as _, FixedOffset, NaiveDate, NaiveTime, TimeDelta, Timelike as _, Utc, Weekday,
};
use sha2::{Digest, Sha256};

use super::CertFacts;

/// The renewal window when the configuration says nothing.
pub const DEFAULT_RENEW_BEFORE: TimeDelta = TimeDelta::days(30);

/// The first minute (local time, from midnight) of the working day the slots fall in.
pub const WORKDAY_START: u16 = 9 * 60;

/// The working day's length in minutes (09:00 to 16:59).
pub const WORKDAY_MINUTES: u16 = 8 * 60;

/// How many workdays before the window the slots spread over.
pub const SPREAD_WORKDAYS: u8 = 5;

/// After this many workdays past the due time any run renews, at the slot or not.
pub const GRACE_WORKDAYS: u8 = 3;

/// The shortest part of the day a due renewal may run in, from the slot's minute on: a slot
/// late in the afternoon keeps two hours after it.
pub const MIN_IN_SLOT: TimeDelta = TimeDelta::hours(2);

/// The shortest window (after the cap at a third of the lifetime) that is spread over slots:
/// after a grace of three workdays (five days over a weekend) and a week between two runs of
/// a Mac awake once a week, nine days are left before the end.
pub const MIN_SPREAD_WINDOW: TimeDelta = TimeDelta::days(21);

/// The largest wall-clock offset of a certificate whose window is too short for slots.
pub const MAX_SHORT_OFFSET: TimeDelta = TimeDelta::days(7);

/// This device's place in the working week: when it renews and when its daily run fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Workdays before the last slot time at or before the window opens, `0..SPREAD_WORKDAYS`.
    workdays_before: u8,
    /// Minutes after [`WORKDAY_START`], `0..WORKDAY_MINUTES`.
    minute: u16,
}

impl Slot {
    /// The first slot: the window's own workday, 09:00.
    pub const FIRST: Self = Self { workdays_before: 0, minute: 0 };

    /// This device's slot, derived from its UDID by SHA-256 so that it is the same at every
    /// run and spread evenly across a fleet.
    pub fn for_device(udid: &str) -> Self {
        let digest = Sha256::digest(udid.as_bytes());
        let mut first = [0_u8; 8];
        first.copy_from_slice(&digest[..8]);
        let n = u64::from_be_bytes(first);
        let minutes = u64::from(WORKDAY_MINUTES);
        // Both remainders are below their small bounds.
        Self {
            workdays_before: u8::try_from(n / minutes % u64::from(SPREAD_WORKDAYS)).unwrap_or(0),
            minute: u16::try_from(n % minutes).unwrap_or(0),
        }
    }

    /// The slot `workdays_before` workdays before the window, at `minute` after 09:00;
    /// `None` outside the ranges.
    pub fn new(workdays_before: u8, minute: u16) -> Option<Self> {
        (workdays_before < SPREAD_WORKDAYS && minute < WORKDAY_MINUTES)
            .then_some(Self { workdays_before, minute })
    }

    /// The local minute of the day (from midnight) of the daily run and of the renewal.
    pub const fn daily_minute(self) -> u16 {
        WORKDAY_START + self.minute
    }

    /// The local hour and minute of the daily run and of the renewal, for the schedulers.
    pub const fn hour_minute(self) -> (u8, u8) {
        let minute = self.daily_minute();
        // Below 17:00: both fit.
        ((minute / 60) as u8, (minute % 60) as u8)
    }

    /// The local time of day of the daily run and of the renewal.
    pub fn time_of_day(self) -> NaiveTime {
        let (hour, minute) = self.hour_minute();
        NaiveTime::from_hms_opt(u32::from(hour), u32::from(minute), 0).unwrap_or(NaiveTime::MIN)
    }

    /// Workdays before the window's own.
    pub const fn workdays_before(self) -> u8 {
        self.workdays_before
    }

    /// The wall-clock offset of a certificate whose window is too short for slots: the slot's
    /// place in the working week, stretched over [`MAX_SHORT_OFFSET`].
    fn short_offset(self) -> TimeDelta {
        let place = i64::from(self.workdays_before) * i64::from(WORKDAY_MINUTES) + i64::from(self.minute);
        let week = i64::from(SPREAD_WORKDAYS) * i64::from(WORKDAY_MINUTES);
        TimeDelta::seconds(MAX_SHORT_OFFSET.num_seconds() * place / week)
    }
}

/// The renewal window of `cert`: `renew_before`, at most a third of the lifetime.
fn window(cert: &CertFacts, renew_before: TimeDelta) -> (TimeDelta, TimeDelta) {
    let third = ((cert.not_after - cert.not_before) / 3).max(TimeDelta::zero());
    (renew_before.max(TimeDelta::zero()).min(third), third)
}

/// Whether `cert`'s renewal is spread over slots (its window is long enough).
pub fn spread(cert: &CertFacts, renew_before: TimeDelta) -> bool {
    window(cert, renew_before).0 >= MIN_SPREAD_WINDOW
}

fn is_workday(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

fn next_workday(mut date: NaiveDate) -> NaiveDate {
    loop {
        date = date.succ_opt().unwrap_or(NaiveDate::MAX);
        if is_workday(date) || date == NaiveDate::MAX {
            return date;
        }
    }
}

fn previous_workday(mut date: NaiveDate) -> NaiveDate {
    loop {
        date = date.pred_opt().unwrap_or(NaiveDate::MIN);
        if is_workday(date) || date == NaiveDate::MIN {
            return date;
        }
    }
}

/// When the renewal of `cert` is due, for a device with `slot` whose local time is
/// `utc_offset` from UTC.
pub fn renewal_due(
    cert: &CertFacts,
    renew_before: TimeDelta,
    slot: Slot,
    utc_offset: FixedOffset,
) -> DateTime<Utc> {
    let (window, third) = window(cert, renew_before);
    let opens = cert.not_after - window;
    if window < MIN_SPREAD_WINDOW {
        return opens - slot.short_offset().min(third);
    }
    // The last slot time on a workday at or before the window opens, then back in workdays.
    let local = opens.with_timezone(&utc_offset).naive_local();
    let mut date = local.date();
    if !is_workday(date) || local.time() < slot.time_of_day() {
        date = previous_workday(date);
    }
    for _ in 0..slot.workdays_before {
        date = previous_workday(date);
    }
    let due = (date.and_time(slot.time_of_day()) - utc_offset).and_utc();
    // At most a week and a weekend before the window opens: far from the third of the
    // lifetime that a spread window leaves before it. The bound keeps the promise anyway.
    due.max(opens - third)
}

/// Whether `now` is in the device's part of the day, local time: from its slot's minute to
/// the end of the working day (17:00), and at least [`MIN_IN_SLOT`] (a 16:30 slot runs to
/// 18:30), on any day of the week.
pub fn in_slot(now: DateTime<Utc>, slot: Slot, utc_offset: FixedOffset) -> bool {
    let local = now.with_timezone(&utc_offset);
    let minute = i64::from(local.hour() * 60 + local.minute());
    let start = i64::from(slot.daily_minute());
    let end = i64::from(WORKDAY_START + WORKDAY_MINUTES).max(start + MIN_IN_SLOT.num_minutes());
    (start..end).contains(&minute)
}

/// When the grace after `due` ends: [`GRACE_WORKDAYS`] workdays later, local time.
pub fn grace_end(due: DateTime<Utc>, utc_offset: FixedOffset) -> DateTime<Utc> {
    let local = due.with_timezone(&utc_offset).naive_local();
    let mut date = local.date();
    for _ in 0..GRACE_WORKDAYS {
        date = next_workday(date);
    }
    (date.and_time(local.time()) - utc_offset).and_utc()
}

/// The next start of the device's slot after `now` (tomorrow's, when today's has begun).
pub fn next_slot_start(now: DateTime<Utc>, slot: Slot, utc_offset: FixedOffset) -> DateTime<Utc> {
    let local = now.with_timezone(&utc_offset).naive_local();
    let today = local.date().and_time(slot.time_of_day());
    let next = if today > local { today } else { today + TimeDelta::days(1) };
    (next - utc_offset).and_utc()
}

/// Proptest strategies for the schedule's inputs, shared with the decision's tests.
#[cfg(test)]
pub(super) mod strategies {
    use super::*;
    use proptest::prelude::*;

    /// Any slot.
    pub(in crate::decision) fn slot() -> impl Strategy<Value = Slot> {
        (0..SPREAD_WORKDAYS, 0..WORKDAY_MINUTES)
            .prop_map(|(workdays, minute)| Slot::new(workdays, minute).expect("in range"))
    }

    /// Any offset from UTC that a time zone has, to the minute.
    pub(in crate::decision) fn utc_offset() -> impl Strategy<Value = FixedOffset> {
        (-12 * 60..=14 * 60).prop_map(|minutes: i32| FixedOffset::east_opt(minutes * 60).expect("in range"))
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::{slot as arb_slot, utc_offset as arb_offset};
    use super::*;
    use proptest::prelude::*;

    /// Midnight UTC of a date.
    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().and_time(NaiveTime::MIN).and_utc()
    }

    fn hm(at: DateTime<Utc>, h: i64, m: i64) -> DateTime<Utc> {
        at + TimeDelta::hours(h) + TimeDelta::minutes(m)
    }

    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    /// A year ending Wednesday 2027-12-08 12:00 UTC: the default window opens Monday 11-08 12:00.
    fn year() -> CertFacts {
        CertFacts { not_before: hm(day(2026, 12, 8), 12, 0), not_after: hm(day(2027, 12, 8), 12, 0) }
    }

    fn slot(workdays_before: u8, minute: u16) -> Slot {
        Slot::new(workdays_before, minute).unwrap()
    }

    #[test]
    fn due_time_table() {
        let thirty = DEFAULT_RENEW_BEFORE;
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        let month = CertFacts { not_before: day(2027, 1, 1), not_after: day(2027, 1, 31) };
        let fortnight = CertFacts { not_before: day(2027, 1, 1), not_after: day(2027, 1, 16) };
        let table: [(&str, CertFacts, TimeDelta, Slot, FixedOffset, DateTime<Utc>); 10] = [
            // The window opens Monday 11-08 12:00 UTC.
            ("ok/window-day-slot-before-noon", year(), thirty, slot(0, 0), utc(), hm(day(2027, 11, 8), 9, 0)),
            (
                "ok/window-day-slot-at-the-opening",
                year(),
                thirty,
                slot(0, 180),
                utc(),
                hm(day(2027, 11, 8), 12, 0),
            ),
            // 14:00 is after the opening: the previous workday is Friday.
            (
                "ok/slot-after-the-opening-goes-to-friday",
                year(),
                thirty,
                slot(0, 300),
                utc(),
                hm(day(2027, 11, 5), 14, 0),
            ),
            (
                "ok/one-workday-back-skips-the-weekend",
                year(),
                thirty,
                slot(1, 0),
                utc(),
                hm(day(2027, 11, 5), 9, 0),
            ),
            ("ok/last-slot", year(), thirty, slot(4, 479), utc(), hm(day(2027, 11, 1), 16, 59)),
            // 12:00 UTC is 07:00 in New York: before every slot, so Friday, at 09:00 local.
            ("ok/local-time", year(), thirty, slot(0, 0), new_york, hm(day(2027, 11, 5), 14, 0)),
            // A short window: the wall-clock rule, offset stretched over seven days.
            (
                "ok/short-window-wall-clock",
                year(),
                TimeDelta::days(10),
                slot(0, 0),
                utc(),
                hm(day(2027, 11, 28), 12, 0),
            ),
            // A 30-day certificate: window and offset capped at a third (10 days each).
            ("ok/month-capped-at-a-third", month, thirty, slot(0, 0), utc(), day(2027, 1, 21)),
            (
                "ok/month-offset-stretched",
                month,
                thirty,
                slot(4, 479),
                utc(),
                day(2027, 1, 21) - TimeDelta::seconds(604_548),
            ),
            // Five days each: the window opens 01-11, the offset of almost seven days is capped at five.
            ("ok/fortnight-offset-capped-too", fortnight, thirty, slot(4, 479), utc(), day(2027, 1, 6)),
        ];
        for (name, cert, window, slot, tz, want) in table {
            assert_eq!(renewal_due(&cert, window, slot, tz), want, "{name}");
        }
    }

    #[test]
    fn in_slot_table() {
        let s = slot(2, 107); // 10:47
        let monday = day(2027, 11, 8);
        for (name, now, want) in [
            ("fail/before-the-slot", hm(monday, 10, 46), false),
            ("ok/at-the-slot", hm(monday, 10, 47), true),
            ("ok/afternoon", hm(monday, 16, 59), true),
            ("fail/after-work", hm(monday, 17, 0), false),
            ("fail/morning-wake", hm(monday, 8, 30), false),
            ("ok/saturday-too", hm(day(2027, 11, 13), 11, 0), true),
        ] {
            assert_eq!(in_slot(now, s, utc()), want, "{name}");
        }
        // A late slot keeps two hours.
        let late = slot(0, 450); // 16:30
        assert!(in_slot(hm(monday, 18, 29), late, utc()));
        assert!(!in_slot(hm(monday, 18, 30), late, utc()));
        // Local time: 10:47 in UTC−5 is 15:47 UTC.
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        assert!(!in_slot(hm(monday, 10, 47), s, new_york));
        assert!(in_slot(hm(monday, 15, 47), s, new_york));
        assert_eq!(next_slot_start(hm(monday, 8, 0), s, utc()), hm(monday, 10, 47));
        assert_eq!(next_slot_start(hm(monday, 10, 47), s, utc()), hm(monday, 34, 47));
        assert_eq!(next_slot_start(hm(monday, 8, 0), s, new_york), hm(monday, 15, 47));
    }

    #[test]
    fn grace_end_counts_workdays() {
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        for (name, due, tz, want) in [
            ("ok/monday-to-thursday", hm(day(2027, 11, 8), 10, 47), utc(), hm(day(2027, 11, 11), 10, 47)),
            (
                "ok/wednesday-over-the-weekend",
                hm(day(2027, 11, 10), 9, 0),
                utc(),
                hm(day(2027, 11, 15), 9, 0),
            ),
            ("ok/friday-to-wednesday", hm(day(2027, 11, 12), 16, 59), utc(), hm(day(2027, 11, 17), 16, 59)),
            // Friday 09:00 in New York is 14:00 UTC: Wednesday 14:00 UTC.
            ("ok/local-time", hm(day(2027, 11, 12), 14, 0), new_york, hm(day(2027, 11, 17), 14, 0)),
        ] {
            assert_eq!(grace_end(due, tz), want, "{name}");
        }
    }

    #[test]
    fn slot_is_stable_and_spread() {
        assert_eq!(Slot::for_device("564D1234-AAAA"), Slot::for_device("564D1234-AAAA"));
        let slots: Vec<_> = (0..5_000).map(|i| Slot::for_device(&format!("device-{i}"))).collect();
        // Every workday and every hour of the working day gets its share (1,000 and 625
        // expected): a hash spreads them, a constant or a bias would not.
        for workday in 0..SPREAD_WORKDAYS {
            let n = slots.iter().filter(|s| s.workdays_before() == workday).count();
            assert!((850..1150).contains(&n), "workday {workday}: {n}");
        }
        for hour in 9..17 {
            let n = slots.iter().filter(|s| s.daily_minute() / 60 == hour).count();
            assert!((520..730).contains(&n), "hour {hour}: {n}");
        }
    }

    proptest! {
        #[test]
        fn slot_within_its_ranges(udid in ".*") {
            let s = Slot::for_device(&udid);
            prop_assert!(s.workdays_before() < SPREAD_WORKDAYS);
            prop_assert!((WORKDAY_START..WORKDAY_START + WORKDAY_MINUTES).contains(&s.daily_minute()));
        }

        #[test]
        fn fresh_certificate_is_never_due(
            start in 0i64..(20 * 365 * 86_400),
            lifetime_secs in 3i64..(3 * 365 * 86_400),
            window_secs in 0i64..(400 * 86_400),
            slot in arb_slot(),
            tz in arb_offset(),
        ) {
            let not_before = day(2020, 1, 1) + TimeDelta::seconds(start);
            let cert = CertFacts { not_before, not_after: not_before + TimeDelta::seconds(lifetime_secs) };
            let due = renewal_due(&cert, TimeDelta::seconds(window_secs), slot, tz);
            // At least a third of the lifetime passes before renewal: no renewal loops.
            prop_assert!(due >= cert.not_before + (cert.not_after - cert.not_before) / 3);
            prop_assert!(due <= cert.not_after);
        }

        #[test]
        fn spread_due_is_at_the_slot_on_a_workday_within_the_week_before_the_window(
            start in 0i64..(20 * 365 * 86_400),
            lifetime_days in 63i64..(3 * 365),
            window_days in 21i64..400,
            slot in arb_slot(),
            tz in arb_offset(),
        ) {
            let not_before = day(2020, 1, 1) + TimeDelta::seconds(start);
            let cert = CertFacts { not_before, not_after: not_before + TimeDelta::days(lifetime_days) };
            let renew_before = TimeDelta::days(window_days);
            prop_assume!(spread(&cert, renew_before));
            let due = renewal_due(&cert, renew_before, slot, tz);
            let opens = cert.not_after - renew_before.min((cert.not_after - cert.not_before) / 3);
            let local = due.with_timezone(&tz);
            prop_assert!(is_workday(local.date_naive()), "{local}");
            prop_assert_eq!(local.time(), slot.time_of_day());
            prop_assert!(in_slot(due, slot, tz));
            prop_assert!(due <= opens);
            // Five workdays and a weekend at most: the spread never eats into the window.
            prop_assert!(opens - due < TimeDelta::days(8), "{} before", opens - due);
        }
    }
}
