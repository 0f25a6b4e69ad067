//! Crash safety of enrollment and renewal, with real process deaths.
//!
//! For every named step of `agent::Step::ALL`, the agent (built with the feature
//! `test-hooks`) runs `enroll` or `renew --force` with `DEVICETRUST_TEST_ABORT_AT=<step>`
//! and dies there by `abort()`: no destructor, no cleanup, as a power cut would leave it.
//! The next `run` must end with exactly one valid identity (store, NSS database and the CA
//! agree on it) and the CA must show no extra unbound certificate: a crash never costs one
//! of the device's five slots.
//!
//! One CA serves every step, each step with its own device (UDID), so that the CA's
//! per-device bookkeeping of one step cannot hide a leak of another.

#![cfg(target_os = "linux")]

use std::panic::AssertUnwindSafe;

use agent::{ABORT_AT_ENV, Step};
use ca_client::cert::CertificateInfo;
use ca_client::protocol::CertificateState;
use tests::harness::agent::{AgentHome, NSS_NICKNAME};
use tests::harness::binaries::binaries;
use tests::harness::ca::{Admin, DevCa};

#[test]
fn a_crash_at_any_step_recovers_to_one_identity_without_wasting_a_slot() {
    assert!(
        binaries().agent_has_test_hooks,
        "the agent under test was built without the feature test-hooks; the crash test needs it"
    );
    let ca = DevCa::start();
    let admin = ca.admin();
    let mut failures = Vec::new();
    for step in Step::ALL {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| crash_then_run(&ca, &admin, step)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned());
            failures.push(format!("== {step}\n{message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} steps failed:\n{}\n--- CA log\n{}",
        failures.len(),
        Step::ALL.len(),
        failures.join("\n"),
        ca.stderr()
    );
}

fn crash_then_run(ca: &DevCa, admin: &Admin, step: Step) {
    let agent = AgentHome::new(ca, &format!("CRASH-{}", step.name().replace(['.', '_'], "-")));
    let token = ca.info().enrollment_token.as_str();
    let enrolling = step.is_enrollment();
    let abort = [(ABORT_AT_ENV, step.name())];

    let crashed = if enrolling {
        agent.run_full(&["enroll", "--token-stdin"], Some(token), &abort)
    } else {
        agent.run_with_token(&["enroll", "--token-stdin"], token).expect_code(0);
        agent.run_full(&["renew", "--force"], None, &abort)
    };
    assert_eq!(
        crashed.signal(),
        Some(nix::sys::signal::Signal::SIGABRT as i32),
        "the agent must die by abort() at {step}\n{crashed}"
    );
    assert!(crashed.stderr.contains(&format!("aborting at {step}")), "{crashed}");

    // What the daily timer does next; only an enrollment still needs the token.
    let recovered =
        if enrolling { agent.run_with_token(&["run", "--token-stdin"], token) } else { agent.run(&["run"]) };
    recovered.expect_code(0);
    assert_exactly_one_valid_identity(ca, admin, &agent);
    if enrolling {
        let device = admin.device(&agent.udid).expect("the CA knows the device");
        assert_eq!(
            device.certificates.len(),
            1,
            "one enrollment, one certificate: {:#?}",
            device.certificates
        );
    }

    // Whatever the crash left, the identity keeps working: a forced renewal succeeds and
    // leaves one identity again.
    agent.run(&["renew", "--force"]).expect_code(0);
    assert_exactly_one_valid_identity(ca, admin, &agent);
}

#[track_caller]
fn assert_exactly_one_valid_identity(ca: &DevCa, admin: &Admin, agent: &AgentHome) {
    let status = agent.status_json();
    assert_eq!(status["state"], "enrolled", "status --json: {status:#}");
    assert_eq!(status["store"]["identity"], true, "{status:#}");
    assert_eq!(status["store"]["pendingKey"], false, "{status:#}");

    // The store: one identity directory, named as current, nothing pending or previous.
    let index = agent.store_index().expect("identities.json exists");
    assert!(index["pending"].is_null() && index["previous"].is_null(), "identities.json: {index}");
    let dirs = agent.identity_dirs();
    let current = agent.current_identity().expect("a current identity");
    assert_eq!(dirs, vec![current.dir.clone()], "exactly one identity directory, the current one");

    // The certificate: issued by this CA for this device, for client authentication.
    let info = current.info();
    let issuer = std::fs::read_to_string(&ca.info().issuer_certificate).expect("the issuer certificate");
    ca_client::cert::verify_issued_by(info.der(), &[issuer], chrono::Utc::now())
        .expect("the current certificate chains to the issuing CA");
    // The CA signs the canonical (uppercase) spelling of the device's UDID.
    assert_eq!(info.device_udid(), Some(agent.udid.to_ascii_uppercase().as_str()));
    assert!(info.has_client_auth_eku());

    // The CA accepts it (the handshake proves the stored key is the certificate's).
    let answer = admin.certificate_status_with(&current);
    assert_eq!(answer.status, 200, "GET /api/v1/certificate with the current identity: {}", answer.body);
    let at_ca: serde_json::Value = answer.json();
    assert_eq!(at_ca["serialNumber"], info.serial_number(), "{at_ca}");
    assert!(matches!(at_ca["state"].as_str(), Some("unbound" | "bound")), "{at_ca}");

    // The CA: the only unbound certificate of the device is the one the agent holds.
    let device = admin.device(&agent.udid).expect("the CA knows the device");
    let unbound: Vec<&str> = device
        .certificates
        .iter()
        .filter(|c| c.state == CertificateState::Unbound)
        .map(|c| c.serial_number.as_str())
        .collect();
    assert_eq!(
        unbound,
        vec![info.serial_number()],
        "unbound certificates at the CA (a crash must not waste a slot): {:#?}",
        device.certificates
    );

    // The browsers' copy: one user certificate in NSS, the current one.
    assert_eq!(
        agent.nss_user_certificates(),
        vec![NSS_NICKNAME.to_owned()],
        "the NSS database (what browsers present) must hold exactly the agent's identity"
    );
    let nss = CertificateInfo::from_der(&agent.nss_certificate_der(NSS_NICKNAME)).expect("NSS's copy parses");
    assert_eq!(
        nss.serial_number(),
        info.serial_number(),
        "the NSS database (what browsers present) must hold the current certificate"
    );
}
