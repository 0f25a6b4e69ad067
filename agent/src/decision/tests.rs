//! Table tests and property tests of the decision rules.

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use proptest::prelude::*;

use super::backoff::Jitter;
use super::*;

fn at(days: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000 + days)
}

/// A one-year certificate from day 0 (Friday 2024-10-04) to day 365 (Saturday 2025-10-04).
fn year() -> CertFacts {
    CertFacts { not_before: at(0), not_after: at(365) }
}

/// Its due time with the first slot in UTC: the window opens at day 335 (Thursday 00:00),
/// before the slot's 09:00, so the previous workday (Wednesday) at 09:00.
fn due() -> DateTime<Utc> {
    at(334) + TimeDelta::hours(9)
}

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).expect("utc")
}

fn inputs(identity: LocalIdentity, intent: Intent) -> Inputs {
    Inputs {
        identity,
        ca: CaVerdict::Unknown,
        intent,
        token_given: false,
        renew_before: TimeDelta::days(30),
        slot: Slot::FIRST,
        utc_offset: utc(),
        backoff: BackoffState::default(),
        mdm: MdmEnrollment::Unknown,
    }
}

/// The periodic run's inputs for an identity, nothing else in the way.
fn periodic(cert: CertFacts, renew_before: TimeDelta, slot: Slot, utc_offset: FixedOffset) -> Inputs {
    Inputs { renew_before, slot, utc_offset, ..inputs(LocalIdentity::Enrolled(cert), Intent::Run) }
}

fn failing_since(day: i64) -> BackoffState {
    BackoffState::default().after_failure(at(day), Jitter::NONE, "ca down")
}

#[test]
fn decision_table() {
    use Blocked::*;
    use LocalIdentity as L;
    let run = Intent::Run;
    let renew = Intent::Renew { force: false };
    let force = Intent::Renew { force: true };
    let with = |mut i: Inputs, f: &dyn Fn(&mut Inputs)| {
        f(&mut i);
        i
    };
    let table: Vec<(&str, Inputs, DateTime<Utc>, Decision)> = vec![
        (
            "ok/enroll-with-token",
            with(inputs(L::None, run), &|i| i.token_given = true),
            at(0),
            Decision::Enroll,
        ),
        (
            "ok/enroll-command",
            with(inputs(L::None, Intent::Enroll), &|i| i.token_given = true),
            at(0),
            Decision::Enroll,
        ),
        (
            "ok/enroll-resumes-pending-key",
            with(inputs(L::PendingKey, run), &|i| i.token_given = true),
            at(0),
            Decision::Enroll,
        ),
        ("fail/enroll-without-token", inputs(L::None, run), at(0), Decision::Blocked(NoToken)),
        ("fail/pending-key-without-token", inputs(L::PendingKey, run), at(0), Decision::Blocked(NoToken)),
        ("fail/renew-without-identity", inputs(L::None, force), at(0), Decision::Blocked(NotEnrolled)),
        (
            "fail/enroll-not-managed",
            with(inputs(L::None, Intent::Enroll), &|i| {
                i.token_given = true;
                i.mdm = MdmEnrollment::NotEnrolled;
            }),
            at(0),
            Decision::Blocked(DeviceNotManaged),
        ),
        (
            "fail/run-enroll-backing-off",
            with(inputs(L::None, run), &|i| {
                i.token_given = true;
                i.backoff = failing_since(0);
            }),
            at(0),
            Decision::Blocked(BackingOff { until: at(0) + TimeDelta::hours(1) }),
        ),
        (
            "ok/explicit-enroll-ignores-backoff",
            with(inputs(L::None, Intent::Enroll), &|i| {
                i.token_given = true;
                i.backoff = failing_since(0);
            }),
            at(0),
            Decision::Enroll,
        ),
        (
            "ok/already-enrolled",
            with(inputs(L::Enrolled(year()), Intent::Enroll), &|i| i.token_given = true),
            at(1),
            Decision::Nothing { next_due: due() },
        ),
        ("ok/not-due", inputs(L::Enrolled(year()), run), at(334), Decision::Nothing { next_due: due() }),
        ("ok/due-at-the-slot", inputs(L::Enrolled(year()), run), due(), Decision::Renew(RenewReason::Due)),
        (
            "ok/due-in-the-afternoon",
            inputs(L::Enrolled(year()), run),
            due() + TimeDelta::hours(7),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/due-run-after-work-waits-for-tomorrows-slot",
            inputs(L::Enrolled(year()), run),
            due() + TimeDelta::hours(8),
            Decision::Nothing { next_due: due() + TimeDelta::days(1) },
        ),
        (
            "ok/due-run-at-login-waits-for-the-slot",
            inputs(L::Enrolled(year()), run),
            at(336) + TimeDelta::hours(8),
            Decision::Nothing { next_due: at(336) + TimeDelta::hours(9) },
        ),
        (
            "ok/renew-command-does-not-wait-for-the-slot",
            inputs(L::Enrolled(year()), renew),
            at(336) + TimeDelta::hours(8),
            Decision::Renew(RenewReason::Due),
        ),
        (
            // Due on Wednesday: the grace of three workdays ends on Monday at 09:00.
            "ok/before-the-grace-the-weekend-waits-for-the-slot",
            inputs(L::Enrolled(year()), run),
            at(337),
            Decision::Nothing { next_due: at(337) + TimeDelta::hours(9) },
        ),
        (
            "ok/grace-over-any-run-renews",
            inputs(L::Enrolled(year()), run),
            at(339) + TimeDelta::hours(19),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/grace-ends-at-the-slot-time",
            inputs(L::Enrolled(year()), run),
            at(339) + TimeDelta::hours(8),
            Decision::Nothing { next_due: at(339) + TimeDelta::hours(9) },
        ),
        (
            "ok/slot-in-local-time",
            // In UTC+9 the window opens on Thursday at 09:00 local (day 335, 00:00 UTC), the
            // slot's own time: due then, a day later than in UTC.
            with(inputs(L::Enrolled(year()), run), &|i| {
                i.utc_offset = FixedOffset::east_opt(9 * 3600).expect("tz")
            }),
            at(335),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/short-lifetime-renews-at-any-run",
            inputs(L::Enrolled(CertFacts { not_before: at(0), not_after: at(30) }), run),
            at(20) + TimeDelta::hours(20),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/renew-command-due",
            inputs(L::Enrolled(year()), renew),
            at(340),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/renew-command-not-due",
            inputs(L::Enrolled(year()), renew),
            at(10),
            Decision::Nothing { next_due: due() },
        ),
        (
            "ok/slot-moves-due-earlier-in-workdays",
            // Four workdays before Wednesday: the Thursday before, 10:00.
            with(inputs(L::Enrolled(year()), run), &|i| i.slot = Slot::new(4, 60).expect("slot")),
            at(328) + TimeDelta::hours(10),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/slot-not-yet",
            with(inputs(L::Enrolled(year()), run), &|i| i.slot = Slot::new(4, 60).expect("slot")),
            at(328) + TimeDelta::hours(9),
            Decision::Nothing { next_due: at(328) + TimeDelta::hours(10) },
        ),
        ("ok/force", inputs(L::Enrolled(year()), force), at(1), Decision::Renew(RenewReason::Forced)),
        (
            "ok/force-ignores-backoff",
            with(inputs(L::Enrolled(year()), force), &|i| i.backoff = failing_since(1)),
            at(1),
            Decision::Renew(RenewReason::Forced),
        ),
        (
            "fail/due-but-backing-off",
            with(inputs(L::Enrolled(year()), run), &|i| i.backoff = failing_since(340)),
            at(340),
            Decision::Blocked(BackingOff { until: at(340) + TimeDelta::hours(1) }),
        ),
        (
            "ok/due-after-backoff",
            with(inputs(L::Enrolled(year()), run), &|i| i.backoff = failing_since(340)),
            at(341),
            Decision::Renew(RenewReason::Due),
        ),
        (
            "ok/resume-renewal",
            inputs(L::Renewing { current: year() }, run),
            at(1),
            Decision::Renew(RenewReason::Resume),
        ),
        (
            "fail/resume-backing-off",
            with(inputs(L::Renewing { current: year() }, run), &|i| i.backoff = failing_since(1)),
            at(1),
            Decision::Blocked(BackingOff { until: at(1) + TimeDelta::hours(1) }),
        ),
        (
            "fail/renew-not-managed",
            with(inputs(L::Enrolled(year()), force), &|i| i.mdm = MdmEnrollment::NotEnrolled),
            at(1),
            Decision::Blocked(DeviceNotManaged),
        ),
        (
            "ok/not-managed-but-not-due",
            with(inputs(L::Enrolled(year()), run), &|i| i.mdm = MdmEnrollment::NotEnrolled),
            at(1),
            Decision::Nothing { next_due: due() },
        ),
        (
            "ok/revoked-uninstalls",
            with(inputs(L::Enrolled(year()), run), &|i| i.ca = CaVerdict::Revoked),
            at(1),
            Decision::Uninstall,
        ),
        (
            "ok/revoked-and-expired-uninstalls",
            with(inputs(L::Enrolled(year()), run), &|i| i.ca = CaVerdict::Revoked),
            at(400),
            Decision::Uninstall,
        ),
        (
            "ok/revoked-during-renewal-uninstalls",
            with(inputs(L::Renewing { current: year() }, force), &|i| i.ca = CaVerdict::Revoked),
            at(1),
            Decision::Uninstall,
        ),
        (
            "ok/revoked-verdict-without-identity-allows-enroll",
            with(inputs(L::None, run), &|i| {
                i.ca = CaVerdict::Revoked;
                i.token_given = true;
            }),
            at(1),
            Decision::Enroll,
        ),
        ("fail/expired", inputs(L::Enrolled(year()), run), at(365), Decision::Expired { not_after: at(365) }),
        (
            "fail/expired-forced",
            inputs(L::Enrolled(year()), force),
            at(366),
            Decision::Expired { not_after: at(365) },
        ),
        (
            "fail/expired-with-token-never-enrolls",
            with(inputs(L::Enrolled(year()), Intent::Enroll), &|i| i.token_given = true),
            at(366),
            Decision::Expired { not_after: at(365) },
        ),
        (
            "fail/ca-wants-reenrollment",
            with(inputs(L::Enrolled(year()), force), &|i| i.ca = CaVerdict::ReenrollRequired),
            at(1),
            Decision::Blocked(ReenrollRequired),
        ),
    ];
    for (name, inputs, now, want) in table {
        assert_eq!(decide_at(&inputs, now), want, "{name}");
    }
}

#[test]
fn the_same_inputs_decide_by_the_time() {
    let i = inputs(LocalIdentity::Enrolled(year()), Intent::Run);
    assert_eq!(decide_at(&i, at(1)), Decision::Nothing { next_due: due() });
    assert_eq!(decide_at(&i, at(336) + TimeDelta::hours(10)), Decision::Renew(RenewReason::Due));
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-800i64 * 86_400..800 * 86_400).prop_map(|s| at(0) + TimeDelta::seconds(s))
}

fn arb_cert() -> impl Strategy<Value = CertFacts> {
    (arb_time(), 1i64..(800 * 86_400))
        .prop_map(|(nb, life)| CertFacts { not_before: nb, not_after: nb + TimeDelta::seconds(life) })
}

fn arb_identity() -> impl Strategy<Value = LocalIdentity> {
    prop_oneof![
        Just(LocalIdentity::None),
        Just(LocalIdentity::PendingKey),
        arb_cert().prop_map(LocalIdentity::Enrolled),
        arb_cert().prop_map(|current| LocalIdentity::Renewing { current }),
    ]
}

fn arb_inputs() -> impl Strategy<Value = Inputs> {
    let intent = prop_oneof![
        Just(Intent::Run),
        Just(Intent::Enroll),
        Just(Intent::Renew { force: false }),
        Just(Intent::Renew { force: true }),
    ];
    let ca = prop_oneof![
        Just(CaVerdict::Unknown),
        Just(CaVerdict::Good),
        Just(CaVerdict::Revoked),
        Just(CaVerdict::ReenrollRequired),
    ];
    let mdm = prop_oneof![
        Just(MdmEnrollment::Unknown),
        Just(MdmEnrollment::Enrolled),
        Just(MdmEnrollment::NotEnrolled)
    ];
    let backoff = (0u32..12, arb_time(), any::<u16>()).prop_map(|(failures, last, jitter)| {
        (0..failures).fold(BackoffState::default(), |b, _| b.after_failure(last, Jitter(jitter), "failed"))
    });
    (arb_identity(), ca, intent, any::<bool>(), 0i64..400, arb_slot(), arb_utc_offset(), backoff, mdm)
        .prop_map(|(identity, ca, intent, token_given, window_days, slot, utc_offset, backoff, mdm)| Inputs {
            identity,
            ca,
            intent,
            token_given,
            renew_before: TimeDelta::days(window_days),
            slot,
            utc_offset,
            backoff,
            mdm,
        })
}

fn arb_slot() -> impl Strategy<Value = Slot> {
    schedule::strategies::slot()
}

fn arb_utc_offset() -> impl Strategy<Value = FixedOffset> {
    schedule::strategies::utc_offset()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_enrolls_while_an_identity_exists(i in arb_inputs(), now in arb_time()) {
        let d = decide_at(&i, now);
        if i.identity.current().is_some() {
            prop_assert_ne!(d, Decision::Enroll);
        }
        if d == Decision::Enroll {
            prop_assert!(i.token_given, "enrolled without a token");
            prop_assert!(!matches!(i.intent, Intent::Renew { .. }), "enrolled on renew");
        }
    }

    #[test]
    fn never_renews_before_due_unless_forced_or_resuming(i in arb_inputs(), now in arb_time()) {
        if let Decision::Renew(reason) = decide_at(&i, now) {
            let current = i.identity.current().copied();
            prop_assert!(current.is_some(), "renewal without an identity");
            let Some(current) = current else { return Ok(()) };
            prop_assert!(now < current.not_after, "renewed an expired certificate");
            let due = schedule::renewal_due(&current, i.renew_before, i.slot, i.utc_offset);
            match reason {
                RenewReason::Due => prop_assert!(now >= due),
                RenewReason::Forced => prop_assert_eq!(i.intent, Intent::Renew { force: true }),
                RenewReason::Resume => {
                    prop_assert!(matches!(i.identity, LocalIdentity::Renewing { .. }), "resumed without a pending key");
                }
            }
        }
    }

    #[test]
    fn backoff_holds_unless_forced(i in arb_inputs(), now in arb_time()) {
        let d = decide_at(&i, now);
        if i.backoff.waiting_until(now).is_some() && i.intent == Intent::Run {
            prop_assert!(!matches!(d, Decision::Enroll | Decision::Renew(_)), "{d:?}");
        }
        if let Decision::Renew(reason) = d && i.backoff.waiting_until(now).is_some() {
            prop_assert_eq!(reason, RenewReason::Forced);
        }
    }

    #[test]
    fn revoked_identity_always_uninstalls(i in arb_inputs(), now in arb_time()) {
        let d = decide_at(&i, now);
        let revoked = i.ca == CaVerdict::Revoked && i.identity.current().is_some();
        prop_assert_eq!(d == Decision::Uninstall, revoked);
    }

    #[test]
    fn expired_identity_is_reported_not_renewed(i in arb_inputs(), now in arb_time()) {
        if let Some(current) = i.identity.current()
            && now >= current.not_after
            && i.ca != CaVerdict::Revoked
        {
            prop_assert_eq!(decide_at(&i, now), Decision::Expired { not_after: current.not_after });
        }
    }

    #[test]
    fn not_managed_never_contacts_the_ca(i in arb_inputs(), now in arb_time()) {
        if i.mdm == MdmEnrollment::NotEnrolled {
            prop_assert!(!matches!(decide_at(&i, now), Decision::Enroll | Decision::Renew(_)));
        }
    }

    #[test]
    fn nothing_names_a_future_due_time(i in arb_inputs(), now in arb_time()) {
        if let Decision::Nothing { next_due } = decide_at(&i, now)
            && i.intent != Intent::Enroll
        {
            prop_assert!(next_due > now);
        }
    }

    #[test]
    fn nothing_holds_until_the_time_it_names(i in arb_inputs(), now in arb_time(), fraction in 0.0f64..1.0) {
        // What the periodic run says it waits for is true at every run before then: no
        // renewal slips in earlier, and the time is a real bound, not a guess.
        if let Decision::Nothing { next_due } = decide_at(&i, now)
            && i.intent == Intent::Run
        {
            let later = now + TimeDelta::seconds(((next_due - now).num_seconds() as f64 * fraction) as i64);
            prop_assert!(matches!(decide_at(&i, later), Decision::Nothing { .. }), "{:?} at {later}", decide_at(&i, later));
        }
    }

    #[test]
    fn the_time_nothing_names_is_when_the_run_renews(
        cert in arb_cert(),
        window_days in 0i64..400,
        slot in arb_slot(),
        tz in arb_utc_offset(),
        now in arb_time(),
    ) {
        // With nothing else in the way (no backoff, not revoked, managed), the periodic run
        // renews exactly at the time its `Nothing` names: the bound is the real one.
        let i = periodic(cert, TimeDelta::days(window_days), slot, tz);
        if let Decision::Nothing { next_due } = decide_at(&i, now)
            && next_due < cert.not_after
        {
            prop_assert_eq!(decide_at(&i, next_due), Decision::Renew(RenewReason::Due), "at {}", next_due);
        }
    }

    #[test]
    fn a_due_run_outside_the_slot_waits_until_the_grace_ends(
        cert in arb_cert(),
        window_days in 0i64..400,
        slot in arb_slot(),
        tz in arb_utc_offset(),
        fraction in 0.0f64..1.0,
    ) {
        let renew_before = TimeDelta::days(window_days);
        prop_assume!(schedule::spread(&cert, renew_before));
        let due = schedule::renewal_due(&cert, renew_before, slot, tz);
        let grace_end = schedule::grace_end(due, tz);
        let now = due + TimeDelta::seconds(((grace_end - due).num_seconds() as f64 * fraction) as i64);
        let i = periodic(cert, renew_before, slot, tz);
        let renews = decide_at(&i, now) == Decision::Renew(RenewReason::Due);
        prop_assert_eq!(renews, schedule::in_slot(now, slot, tz) || now >= grace_end, "at {}", now);
    }

    #[test]
    fn after_the_grace_any_run_renews(
        cert in arb_cert(),
        window_days in 0i64..400,
        slot in arb_slot(),
        tz in arb_utc_offset(),
        at_fraction in 0.0f64..1.0,
    ) {
        let i = periodic(cert, TimeDelta::days(window_days), slot, tz);
        let due = schedule::renewal_due(&cert, i.renew_before, slot, tz);
        let from = if schedule::spread(&cert, i.renew_before) { schedule::grace_end(due, tz) } else { due };
        prop_assume!(from < cert.not_after);
        let now = from + TimeDelta::seconds(((cert.not_after - from).num_seconds() as f64 * at_fraction) as i64);
        prop_assume!(now < cert.not_after);
        prop_assert_eq!(decide_at(&i, now), Decision::Renew(RenewReason::Due));
    }

    #[test]
    fn a_mac_awake_an_hour_a_week_renews_in_time(
        start in 0i64..(10 * 365 * 86_400),
        lifetime_days in 63i64..(3 * 365),
        window_days in 21i64..120,
        slot in arb_slot(),
        tz in arb_utc_offset(),
        awake_at in 0i64..(7 * 86_400),
    ) {
        // One run a week, at a fixed time of the week (its login or its wake), never more.
        let not_before = at(0) + TimeDelta::seconds(start);
        let cert = CertFacts { not_before, not_after: not_before + TimeDelta::days(lifetime_days) };
        let i = periodic(cert, TimeDelta::days(window_days), slot, tz);
        prop_assume!(schedule::spread(&cert, i.renew_before));
        let mut run = not_before + TimeDelta::seconds(awake_at);
        let mut renewed = None;
        // A bounded walk: at most the lifetime in weeks.
        for _ in 0..=(lifetime_days / 7 + 1) {
            match decide_at(&i, run) {
                Decision::Renew(_) => {
                    renewed = Some(run);
                    break;
                }
                Decision::Nothing { .. } => run += TimeDelta::weeks(1),
                other => prop_assert!(false, "{other:?} at {run}"),
            }
        }
        let renewed = renewed.expect("renewed before the end");
        // At the latest a week after the grace (at most five days): with a spread window of
        // at least three weeks, nine days before the end.
        prop_assert!(cert.not_after - renewed >= schedule::MIN_SPREAD_WINDOW - TimeDelta::days(5) - TimeDelta::weeks(1));
        prop_assert!(cert.not_after - renewed >= TimeDelta::days(9));
    }
}
