//! Crash safety across processes (feature `test-hooks`): the agent aborts at each named step
//! of enrollment and renewal, exactly as a kill would leave it; the next `run` must end with
//! exactly one valid identity and the CA must hold no extra unbound certificate.

use agent::{ABORT_AT_ENV, Step};
use testkit::Finished;

use crate::support::{FakeCa, Home, TOKEN, code, text};

fn assert_aborted(out: &Finished, step: Step) {
    assert_eq!(out.signal(), Some(6), "{step}: expected SIGABRT: {}", text(out));
}

fn assert_one_identity(home: &Home, step: Step) {
    let status = home.status();
    assert_eq!(status["state"], "enrolled", "{step}: {status}");
    assert_eq!(status["store"]["pendingKey"], false, "{step}: {status}");
    assert_eq!(home.identity_dirs(), 1, "{step}");
}

#[test]
fn every_enroll_step() {
    for step in Step::ALL.into_iter().filter(|s| s.is_enrollment()) {
        let ca = FakeCa::start();
        let home = Home::for_ca(&ca);
        let mut cmd = home.command(&["enroll", "--token-stdin"]);
        cmd.env(ABORT_AT_ENV, step.name());
        assert_aborted(&home.run_with(cmd, Some(&format!("{TOKEN}\n"))), step);

        let mut cmd = home.command(&["run"]);
        cmd.env("DEVICETRUST_ENROLLMENT_TOKEN", TOKEN);
        let out = home.run_with(cmd, None);
        assert_eq!(code(&out), 0, "{step}: {}", text(&out));
        assert_one_identity(&home, step);
        assert_eq!(ca.certs().len(), 1, "{step}: one certificate issued in all");
        assert_eq!(ca.unbound(), 1, "{step}");
    }
}

#[test]
fn every_renew_step() {
    for step in Step::ALL.into_iter().filter(|s| !s.is_enrollment()) {
        let ca = FakeCa::start();
        let home = Home::for_ca(&ca);
        home.enroll();
        let mut cmd = home.command(&["renew", "--force"]);
        cmd.env(ABORT_AT_ENV, step.name());
        assert_aborted(&home.run_with(cmd, None), step);

        let out = home.run(&["run"]);
        assert_eq!(code(&out), 0, "{step}: {}", text(&out));
        assert_one_identity(&home, step);
        assert_eq!(home.serial().as_deref(), Some("2001"), "{step}: the renewal completed");
        assert_eq!(ca.certs().len(), 2, "{step}: one renewal, one new certificate");
        assert_eq!(ca.unbound(), 1, "{step}");
    }
}
