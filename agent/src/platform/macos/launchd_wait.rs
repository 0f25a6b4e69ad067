//! How long the agent waits on launchd, decided without running `launchctl`: which failures
//! of `launchctl bootstrap` are worth another try, and the bounded loops that wait for a job to
//! drain and retry a bootstrap.
//!
//! `launchctl bootout` returns before launchd has finished with the job: launchd sends it
//! SIGTERM and cleans the label up to about five seconds later. A `bootstrap` of the same label
//! in that window fails with `Bootstrap failed: 5: Input/output error` (launchd's own error 37,
//! "Operation already in progress", surfaces as 5 through the command line tool). Seen in
//! DeterminateSystems/nix-installer#1157, fixed there by #1146 (retry every 500 ms for a few
//! seconds) and by polling `launchctl print` until the job is gone. The agent does both: it
//! waits until `launchctl print gui/<uid>/<label>` no longer finds the job, then retries a
//! bootstrap that fails with 5 or 37, each loop bounded.

use std::time::Duration;

/// `launchctl print`'s exit status for a service it cannot find ("Could not find service ...
/// in domain for user gui: 501").
pub(crate) const NOT_FOUND: i32 = 113;
/// How often and how long to poll for a booted-out job to be gone: 50 × 200 ms = 10 s, twice
/// launchd's cleanup delay.
pub(crate) const DRAIN_POLLS: u32 = 50;
/// See [`DRAIN_POLLS`].
pub(crate) const DRAIN_INTERVAL: Duration = Duration::from_millis(200);
/// How often and how long to retry a bootstrap that failed for a transient reason: 20 × 500 ms.
pub(crate) const BOOTSTRAP_ATTEMPTS: u32 = 20;
/// See [`BOOTSTRAP_ATTEMPTS`].
pub(crate) const BOOTSTRAP_INTERVAL: Duration = Duration::from_millis(500);

/// `EIO`: what the command line tool reports while the label drains.
const EIO: i32 = 5;
/// `EALREADY`: launchd's own answer while the label drains or is being loaded.
const EALREADY: i32 = 37;

/// The error number of a failed `bootstrap` or `bootout`: from its message (`Bootstrap failed:
/// 5: Input/output error`), else its exit status, which launchctl sets to the same number.
pub(crate) fn error_number(status: i32, stderr: &str) -> i32 {
    stderr
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once(" failed: ")?;
            rest.split(':').next()?.trim().parse().ok()
        })
        .unwrap_or(status)
}

/// Whether a failed `bootstrap` may succeed when tried again shortly: the label is still
/// draining (5, 37).
pub(crate) fn is_transient(status: i32, stderr: &str) -> bool {
    matches!(error_number(status, stderr), EIO | EALREADY)
}

/// One try of a retried step.
#[derive(Debug)]
pub(crate) enum Attempt<T, E> {
    /// It worked.
    Done(T),
    /// It failed for a reason that may pass.
    Retry(E),
    /// It failed for good.
    Fail(E),
}

/// Runs `op` up to `attempts` times, sleeping `interval` between tries, while it asks for a
/// retry; the last error when it never succeeds.
pub(crate) fn retry<T, E>(
    attempts: u32,
    interval: Duration,
    sleep: &mut dyn FnMut(Duration),
    mut op: impl FnMut() -> Attempt<T, E>,
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        tries += 1;
        match op() {
            Attempt::Done(value) => return Ok(value),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry(e) if tries >= attempts => return Err(e),
            Attempt::Retry(_) => sleep(interval),
        }
    }
}

/// Polls `done` up to `polls` times, sleeping `interval` between polls; `Ok(false)` when it
/// never became true.
pub(crate) fn wait_until<E>(
    polls: u32,
    interval: Duration,
    sleep: &mut dyn FnMut(Duration),
    mut done: impl FnMut() -> Result<bool, E>,
) -> Result<bool, E> {
    for poll in 0..polls {
        if done()? {
            return Ok(true);
        }
        if poll + 1 < polls {
            sleep(interval);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: the name, exit status, standard error, transient. The messages are
    /// launchctl's as quoted in DeterminateSystems/nix-installer#1157 and launchd's man page.
    #[test]
    fn transient_table() {
        let cases: &[(&str, i32, &str, bool)] = &[
            ("ok/eio-while-draining", 5, "Bootstrap failed: 5: Input/output error\n", true),
            ("ok/ealready", 37, "Bootstrap failed: 37: Operation already in progress\n", true),
            ("ok/number-from-the-message", 1, "Bootstrap failed: 5: Input/output error\n", true),
            ("ok/number-from-the-status", 5, "", true),
            ("fail/no-such-file", 2, "Bootstrap failed: 2: No such file or directory\n", false),
            (
                "fail/bad-domain",
                125,
                "Bootstrap failed: 125: Domain does not support specified action\n",
                false,
            ),
            (
                "fail/not-found",
                NOT_FOUND,
                "Could not find service \"x\" in domain for user gui: 501\n",
                false,
            ),
        ];
        for (name, status, stderr, want) in cases {
            assert_eq!(is_transient(*status, stderr), *want, "{name}");
        }
    }

    #[test]
    fn retry_is_bounded_and_stops_early() {
        let mut slept = Vec::new();
        let mut calls = 0;
        let result: Result<(), &str> =
            retry(BOOTSTRAP_ATTEMPTS, BOOTSTRAP_INTERVAL, &mut |d| slept.push(d), || {
                calls += 1;
                Attempt::Retry("busy")
            });
        assert_eq!((result, calls), (Err("busy"), BOOTSTRAP_ATTEMPTS), "fail/gives-up-after-the-bound");
        let waited: Duration = slept.iter().sum();
        assert_eq!(waited, Duration::from_millis(9_500), "about ten seconds, launchd's drain time twice");

        let mut calls = 0;
        let result: Result<u32, &str> = retry(5, BOOTSTRAP_INTERVAL, &mut |_| {}, || {
            calls += 1;
            if calls < 3 { Attempt::Retry("busy") } else { Attempt::Done(calls) }
        });
        assert_eq!(result, Ok(3), "ok/succeeds-once-drained");

        let mut calls = 0;
        let result: Result<(), &str> = retry(5, BOOTSTRAP_INTERVAL, &mut |_| {}, || {
            calls += 1;
            Attempt::Fail("bad plist")
        });
        assert_eq!((result, calls), (Err("bad plist"), 1), "fail/permanent-is-not-retried");
    }

    #[test]
    fn wait_until_is_bounded() {
        let mut slept = 0;
        let mut polls = 0;
        let gone: Result<bool, ()> = wait_until(DRAIN_POLLS, DRAIN_INTERVAL, &mut |_| slept += 1, || {
            polls += 1;
            Ok(polls == 4)
        });
        assert_eq!((gone, polls, slept), (Ok(true), 4, 3), "ok/gone-after-three-waits");
        let mut polls = 0;
        let never: Result<bool, ()> = wait_until(4, DRAIN_INTERVAL, &mut |_| {}, || {
            polls += 1;
            Ok(false)
        });
        assert_eq!((never, polls), (Ok(false), 4), "fail/still-there");
        let error: Result<bool, &str> =
            wait_until(4, DRAIN_INTERVAL, &mut |_| {}, || Err("launchctl missing"));
        assert_eq!(error, Err("launchctl missing"), "fail/probe-error-stops");
    }
}
