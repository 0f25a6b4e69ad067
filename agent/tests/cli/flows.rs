//! The flows through the binary against the in-test HTTPS CA: enrollment, status over mutual
//! TLS, forced renewal, malformed answers, the CA going down, revocation, re-enrollment and
//! uninstall.

use crate::support::{FakeCa, Home, Mode, TOKEN, code, text};

#[test]
fn enroll_renew_revoke_reenroll_uninstall() {
    let ca = FakeCa::start();
    let home = Home::for_ca(&ca);

    let out = home.enroll();
    assert!(out.stdout.starts_with("enrolled: certificate 2000"), "{}", text(&out));
    let status = home.status();
    assert_eq!(status["state"], "enrolled", "{status}");
    assert_eq!(status["certificate"]["issuer"], crate::support::ISSUER_CN);
    assert_eq!(status["store"]["identity"], true);
    assert!(status["certificate"]["daysRemaining"].as_i64().is_some_and(|d| d >= 364), "{status}");

    // Every file private; the token in none of them.
    for (path, mode) in Home::tree(&home.data_dir()) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}", path.display());
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "token in {}", path.display());
        }
    }

    // A run: the status check over mutual TLS succeeds, nothing is due.
    let out = home.run(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Enrolling again changes nothing.
    let out = home.run_with(home.command(&["enroll", "--token-stdin"]), Some(&format!("{TOKEN}\n")));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(out.stdout.starts_with("already enrolled"), "{}", text(&out));
    assert_eq!(ca.certs().len(), 1);
    assert_eq!(ca.unbound(), 1);

    let out = home.run(&["renew", "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(home.serial().as_deref(), Some("2001"));
    assert_eq!(home.identity_dirs(), 1, "the old identity is deleted");
    assert_eq!(ca.certs()[0].state, testkit::fake_ca::CertState::Superseded);

    ca.revoke_all();
    let out = home.run(&["run"]);
    assert_eq!(code(&out), 6, "{}", text(&out));
    assert!(out.stdout.contains("removed identities"), "{}", text(&out));
    assert_eq!(home.status()["state"], "revoked");
    let out = home.run(&["status", "--jamf-ea"]);
    assert_eq!(out.stdout, "<result>revoked</result>\n");
    assert_eq!(home.identity_dirs(), 0);

    // Re-enrollment, with the token from the environment this time.
    let out = home.run_with(
        {
            let mut cmd = home.command(&["run"]);
            cmd.env("DEVICETRUST_ENROLLMENT_TOKEN", TOKEN);
            cmd
        },
        None,
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(home.status()["state"], "enrolled");

    let out = home.run(&["uninstall"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(out.stdout.contains("removed identities"), "{}", text(&out));
    assert!(!home.data_dir().exists(), "{:?}", Home::tree(&home.data_dir()));
    let out = home.run(&["uninstall"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(out.stdout, "nothing to remove\n");
}

#[test]
fn malformed_answers_and_a_dead_ca_change_no_identity() {
    let ca = FakeCa::start();
    let home = Home::for_ca(&ca);
    home.enroll();
    let cert_files = |home: &Home| -> Vec<Vec<u8>> {
        let mut files: Vec<_> = Home::tree(&home.data_dir().join("identities"))
            .into_iter()
            .filter(|(p, _)| p.is_file())
            .map(|(p, _)| std::fs::read(p).expect("read"))
            .collect();
        files.sort();
        files
    };
    let before = cert_files(&home);

    ca.set_mode(Mode::Garbage);
    for args in [&["run"][..], &["renew", "--force"]] {
        let out = home.run(args);
        assert_eq!(code(&out), 5, "{args:?}: {}", text(&out));
    }
    assert_eq!(cert_files(&home), before, "the identity is untouched");

    // The CA gone: a port that refuses, held for the test, so that no other server can answer.
    let down = testkit::RefusedPort::new();
    for args in [&["run"][..], &["renew", "--force"]] {
        let out = home.run(&[&["--ca-url", &down.https_url()], args].concat());
        assert_eq!(code(&out), 5, "{args:?}: {}", text(&out));
    }
    assert_eq!(cert_files(&home), before);
    let status = home.status();
    assert_eq!(status["state"], "enrolled");
    assert!(status["renewal"]["nextAttempt"].is_string(), "backing off: {status}");
}

/// Without the `test-hooks` feature the crash hook is compiled out: the variable is ignored.
#[cfg(not(feature = "test-hooks"))]
#[test]
fn abort_hook_is_absent_from_normal_builds() {
    let ca = FakeCa::start();
    let home = Home::for_ca(&ca);
    let mut cmd = home.command(&["enroll", "--token-stdin"]);
    cmd.env(agent::ABORT_AT_ENV, agent::Step::EnrollAfterPendingKey.name());
    let out = home.run_with(cmd, Some(&format!("{TOKEN}\n")));
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// The profiles carry the cert-auth domain into every Mac's browser policy: one that is not a
/// safe https origin is refused (exit 2) and no file is written.
#[test]
fn profile_refuses_an_unsafe_cert_auth_domain_and_writes_nothing() {
    let ca = FakeCa::start();
    let home = Home::for_ca(&ca);
    let out_file = home.temp.path().join("browsers.mobileconfig");
    let profile = |kind: &str| {
        let out_arg = out_file.display().to_string();
        home.run(&["profile", kind, "--out", &out_arg])
    };
    for domain in ["*", "https://*", "https://evil.example/path", "https://*.example.com"] {
        ca.publish_cert_auth_domain(domain);
        for kind in ["browsers", "chrome", "edge", "agent"] {
            let out = profile(kind);
            assert_eq!(code(&out), 2, "{domain} {kind}: {}", text(&out));
            assert!(out.stderr.contains("is not a safe https origin"), "{}", text(&out));
            assert!(!out_file.exists(), "{domain} {kind}: nothing written");
        }
    }
    ca.publish_cert_auth_domain("https://[*.]example.com");
    let out = profile("browsers");
    assert_eq!(code(&out), 0, "ok/subdomain-wildcard: {}", text(&out));
    let written = std::fs::read_to_string(&out_file).expect("the profile");
    assert!(written.contains(r#"&quot;pattern&quot;:&quot;https://[*.]example.com&quot;"#), "{written}");
}

/// The profile carries one entry per origin: the cert-auth domain's, then each protected
/// origin's; an invalid protected origin is left out with a warning naming it.
#[test]
fn profile_has_an_entry_per_protected_origin() {
    let ca = FakeCa::start();
    let home = Home::for_ca(&ca);
    ca.publish_protected_origins(&["https://[*.]apps.example.com", "http://wiki.example.com", "https://*"]);
    let out_file = home.temp.path().join("chrome.json");
    let out_arg = out_file.display().to_string();
    let out = home.run(&["profile", "browsers", "--out", &out_arg]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let written = std::fs::read_to_string(&out_file).expect("the profile");
    let entries = written.matches("&quot;pattern&quot;").count();
    assert_eq!(entries, 4, "two entries for each of chrome and edge: {written}");
    assert!(written.contains("&quot;pattern&quot;:&quot;https://[*.]apps.example.com&quot;"), "{written}");
    assert!(!written.contains("wiki.example.com"), "{written}");
    let stderr = out.stderr;
    assert!(
        stderr.contains("skipping a protected origin") && stderr.contains("http://wiki.example.com"),
        "{stderr}"
    );
}
