//! The main job, end to end, with real processes: `devicetrust-ca dev`, `devicetrust-agent`
//! in a temporary home, and headless Chromium presenting the certificate.
//!
//! enroll → status → `renew --force` (the old certificate still verifies, the new one is
//! active) → `install --system` writes Chromium's managed policy → Chromium opens the
//! verify page and is trusted → the CA shows the certificate bound → the admin revokes the
//! user → `run` uninstalls and exits 6 → enrolling again works.
//!
//! Needs root (the managed policy lives under `/etc`), `chromium`, `certutil` and
//! `pk12util`; `scripts/test.sh` installs them.

#![cfg(target_os = "linux")]

use ca_client::cert::CertificateInfo;
use ca_client::protocol::{CertificateState, EventType, Outcome};
use testkit::run_bounded;
use tests::harness::agent::{AgentHome, NSS_NICKNAME};
use tests::harness::browser::{SystemPolicy, chromium_dump_dom, trust_tls_root};
use tests::harness::ca::DevCa;
use tests::harness::require_root;

const ISSUER_CN: &str = "MTLS Certificate Authority";

#[test]
fn enroll_renew_present_in_chromium_revoke_and_enroll_again() {
    require_root("`install --system` writes Chromium's managed policy under /etc");
    let ca = DevCa::start();
    let admin = ca.admin();
    let agent = AgentHome::new(&ca, "E2E-LIFECYCLE-0001");
    let token = ca.info().enrollment_token.as_str();

    // Before enrolling: nothing, and `run` without a token says so with its own code.
    assert_eq!(agent.status_json()["state"], "not_enrolled");
    agent.run(&["run"]).expect_code(7);

    // Enroll.
    let enrolled = agent.run_with_token(&["enroll", "--token-stdin"], token);
    enrolled.expect_code(0);
    let first = agent.current_identity().expect("an identity after enroll");
    let first_info = first.info();
    assert!(enrolled.stdout.contains(first_info.serial_number()), "{enrolled}");
    check_issued_certificate(&ca, &agent, &first_info);
    let again = agent.run_with_token(&["enroll", "--token-stdin"], token);
    again.expect_code(0);
    assert!(again.stdout.contains("already enrolled"), "a second enroll changes nothing\n{again}");
    assert_eq!(agent.current_identity().as_ref(), Some(&first));

    // Status, machine-readable.
    let status = agent.status_json();
    assert_eq!(status["state"], "enrolled", "{status:#}");
    assert_eq!(status["certificate"]["serialNumber"], first_info.serial_number(), "{status:#}");
    assert_eq!(status["certificate"]["subject"], "Device Trust", "{status:#}");
    assert_eq!(status["certificate"]["issuer"], ISSUER_CN, "{status:#}");
    let days = status["certificate"]["daysRemaining"].as_i64().expect("daysRemaining is a number");
    assert!((364..=365).contains(&days), "a fresh one-year certificate: {status:#}");
    for key in ["notBefore", "notAfter"] {
        assert!(status["certificate"][key].is_string(), "certificate.{key}: {status:#}");
    }
    for key in ["dueAt", "lastAttempt", "lastError", "nextAttempt"] {
        assert!(status["renewal"].get(key).is_some(), "renewal.{key}: {status:#}");
    }
    assert!(status["renewal"]["lastError"].is_null(), "{status:#}");
    assert_eq!(status["ca"]["url"], ca.info().url, "{status:#}");
    assert_eq!(status["browsers"]["nssdb"]["present"], true, "{status:#}");
    assert_eq!(status["store"]["identity"], true, "{status:#}");
    assert_eq!(status["store"]["pendingKey"], false, "{status:#}");
    let plain = agent.run(&["status"]);
    plain.expect_code(0);
    assert!(plain.stdout.contains(first_info.serial_number()), "{plain}");
    let ea = agent.run(&["status", "--jamf-ea"]);
    ea.expect_code(0);
    let expires = first_info.not_after().format("%Y-%m-%d").to_string();
    // Chromium's managed policy is written by `install --system` (later): the one origin,
    // the cert-auth domain, is not in place in every browser yet.
    assert_eq!(
        ea.stdout.trim(),
        format!("<result>enrolled, expires {expires}, origins 0/1</result>"),
        "{ea}"
    );

    // Renew now: a new key and certificate; the old one stays acceptable at the CA.
    let renewed = agent.run(&["renew", "--force"]);
    renewed.expect_code(0);
    let second = agent.current_identity().expect("an identity after renew");
    let second_info = second.info();
    assert_ne!(second_info.serial_number(), first_info.serial_number());
    assert_ne!(second.key_pkcs8_der, first.key_pkcs8_der, "a renewal uses a new key");
    assert_eq!(agent.identity_dirs(), vec![second.dir.clone()], "the old identity is gone from the store");
    check_issued_certificate(&ca, &agent, &second_info);
    assert_eq!(agent.status_json()["certificate"]["serialNumber"], second_info.serial_number());
    let (code, verdict) = admin.verify_with(&first);
    assert_eq!(
        (code, verdict.trusted),
        (200, true),
        "the superseded certificate still verifies: {verdict:?}"
    );
    let at_ca: serde_json::Value = admin.certificate_status_with(&second).json();
    assert_eq!(at_ca["state"], "unbound", "the new certificate is active and not yet used: {at_ca}");
    let device = admin.device(&agent.udid).expect("the CA knows the device");
    let state_of =
        |serial: &str| device.certificates.iter().find(|c| c.serial_number == serial).map(|c| c.state);
    assert_eq!(state_of(first_info.serial_number()), Some(CertificateState::Superseded), "{device:#?}");
    assert_eq!(state_of(second_info.serial_number()), Some(CertificateState::Unbound), "{device:#?}");

    // The browser: the agent writes the managed policy, Chromium presents the certificate.
    let policy = SystemPolicy::guard();
    let installed = policy.install(&agent);
    installed.expect_code(0);
    let written = std::fs::read_to_string(policy.chromium_file()).expect("the agent wrote Chromium's policy");
    let policy_json: serde_json::Value = serde_json::from_str(&written).expect("the policy file is JSON");
    let entries = policy_json["AutoSelectCertificateForUrls"].as_array().expect("a list of entries");
    let ours: Vec<serde_json::Value> =
        entries.iter().filter_map(|e| e.as_str()).filter_map(|e| serde_json::from_str(e).ok()).collect();
    assert!(
        ours.iter()
            .any(|e| e["pattern"] == ca.info().cert_auth_domain && e["filter"]["ISSUER"]["CN"] == ISSUER_CN),
        "the policy names the cert-auth domain and the issuer: {written}"
    );
    let status = agent.status_json();
    assert_eq!(status["browsers"]["chromium"]["present"], true, "{status:#}");
    // Chromium must trust the CA's TLS certificate, as it would a public one in production.
    trust_tls_root(&agent.nss_dir(), &ca.info().ca_bundle, "devicetrust-e2e-tls-root");

    let url = format!("{}/api/v1/device-trust/verify", ca.info().cert_auth_domain.trim_end_matches('/'));
    let page = chromium_dump_dom(&agent.home, &url);
    assert!(
        !page.hung(),
        "Chromium hung: it found no certificate matching the policy (or waited for a prompt)\n{}",
        page.finished
    );
    let dom = page.dom();
    assert!(
        dom.contains("\"trusted\":true") && dom.contains(second_info.serial_number()),
        "the verify page must say trusted, for the current certificate {}\n{}",
        second_info.serial_number(),
        page.finished
    );
    let device = admin.device(&agent.udid).expect("the CA knows the device");
    let used = device
        .certificates
        .iter()
        .find(|c| c.serial_number == second_info.serial_number())
        .expect("the current certificate at the CA");
    assert_eq!(used.state, CertificateState::Bound, "bound at first use: {device:#?}");
    let user = used.user.clone();
    assert_eq!(used.bound_user.as_deref(), Some(user.as_str()), "bound to the enrolling user: {device:#?}");
    let events = admin.events();
    assert!(
        events.iter().any(|e| e.event_type == EventType::Authenticate
            && e.outcome == Outcome::Success
            && e.serial_number.as_deref() == Some(second_info.serial_number())),
        "the CA logged the browser's authentication: {events:#?}"
    );

    // The admin revokes the user; the next run uninstalls everything and says so with 6.
    assert!(admin.revoke_user(&user) >= 1);
    let revoked = agent.run(&["run"]);
    revoked.expect_code(6);
    assert!(agent.current_identity().is_none(), "the identity is removed\n{revoked}");
    assert!(agent.identity_dirs().is_empty(), "no identity directory is left\n{revoked}");
    assert!(agent.nss_user_certificates().is_empty(), "the NSS database holds no identity\n{revoked}");
    let status = agent.status_json();
    assert!(matches!(status["state"].as_str(), Some("revoked" | "not_enrolled")), "{status:#}");
    agent.run(&["run"]).expect_code(7);

    // Enrolling again works: a new certificate, in the store and in NSS.
    agent.run_with_token(&["enroll", "--token-stdin"], token).expect_code(0);
    let third = agent.current_identity().expect("an identity after enrolling again");
    let third_info = third.info();
    assert!(![first_info.serial_number(), second_info.serial_number()].contains(&third_info.serial_number()));
    assert_eq!(agent.status_json()["state"], "enrolled");
    assert_eq!(agent.nss_user_certificates(), vec![NSS_NICKNAME.to_owned()]);
    let at_ca: serde_json::Value = admin.certificate_status_with(&third).json();
    assert_eq!(at_ca["state"], "unbound", "{at_ca}");

    // `uninstall --system` removes the policy; a second run has nothing to remove.
    agent.run(&["uninstall", "--system"]).expect_code(0);
    assert!(!policy.chromium_file().exists(), "uninstall --system removes the agent's policy file");
    let second_uninstall = agent.run(&["uninstall", "--system"]);
    second_uninstall.expect_code(0);
    assert!(second_uninstall.stdout.contains("nothing to remove"), "{second_uninstall}");

    // The token never reached the agent's output or any file it wrote.
    for finished in [&enrolled, &again, &renewed, &installed, &revoked] {
        assert!(!finished.stdout.contains(token) && !finished.stderr.contains(token), "{finished}");
    }
    for (path, bytes) in agent.all_files() {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(token),
            "the enrollment token leaked into {}",
            path.display()
        );
    }
}

/// The certificate profile of the contract, checked with webpki (through ca-client) and,
/// independently, with `openssl verify`.
#[track_caller]
fn check_issued_certificate(ca: &DevCa, agent: &AgentHome, info: &CertificateInfo) {
    assert_eq!(info.issuer_cn(), Some(ISSUER_CN));
    assert_eq!(info.subject_cn(), Some("Device Trust"));
    assert!(info.has_client_auth_eku(), "EKU clientAuth");
    let expected_uri = format!("urn:devicetrust:device:{}", agent.udid);
    assert_eq!(info.device_uri(), Some(expected_uri.as_str()));
    let issuer = std::fs::read_to_string(&ca.info().issuer_certificate).expect("the issuer certificate");
    ca_client::cert::verify_issued_by(info.der(), &[issuer], chrono::Utc::now())
        .expect("webpki: the certificate chains to the issuing CA for client auth");
    let leaf = agent.home.join("leaf-under-test.pem");
    std::fs::write(&leaf, info.to_pem()).expect("write the leaf");
    let verified = run_bounded(
        std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(&ca.info().issuer_certificate)
            .arg(&leaf),
        None,
        testkit::HANG_LIMIT,
        "openssl verify",
    );
    verified.expect_code(0);
    let _ = std::fs::remove_file(&leaf);
}
