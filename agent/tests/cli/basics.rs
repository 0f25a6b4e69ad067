//! The command line without a CA: help, version, usage errors, and commands that need none.

use testkit::RefusedPort;

use crate::support::{Home, code, text};

#[test]
fn help_documents_every_exit_code() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    let out = home.run(&["--help"]);
    assert_eq!(code(&out), 0);
    let help = out.stdout;
    for line in
        ["0  done", "5  CA unavailable, retry later", "6  certificate revoked", "8  certificate expired"]
    {
        assert!(help.contains(line), "{line}: {help}");
    }
    let out = home.run(&["run", "--help"]);
    assert!(out.stdout.contains("7  not enrolled and no enrollment token"));
}

#[test]
fn version_needs_no_valid_configuration() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    std::fs::write(&home.config, "not = [valid").expect("break config");
    let out = home.run(&["version"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(out.stdout.starts_with("devicetrust-agent 0."), "{}", text(&out));
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    let cases: [(&str, &[&str]); 4] = [
        ("fail/token-as-argument", &["enroll", "--token", "secret"]),
        ("fail/unknown-command", &["frobnicate"]),
        ("fail/token-file-missing", &["enroll", "--token-file", "/nonexistent/token"]),
        ("fail/both-formats", &["status", "--json", "--jamf-ea"]),
    ];
    for (name, args) in cases {
        let out = home.run(args);
        assert_eq!(code(&out), 2, "{name}: {}", text(&out));
    }
    std::fs::write(&home.config, "ca_url = \"https://x\"\nrenew_before = 3\n").expect("typo");
    let out = home.run(&["status"]);
    assert_eq!(code(&out), 2, "fail/unknown-key: {}", text(&out));
    assert!(out.stderr.contains("renew_before"), "{}", text(&out));
}

#[test]
fn status_of_a_fresh_device() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    let json = home.status();
    assert_eq!(json["state"], "not_enrolled");
    assert_eq!(json["certificate"], serde_json::Value::Null);
    assert!(json["ca"]["url"].as_str().is_some_and(|u| u.starts_with("https://127.0.0.1:")), "{json}");
    let out = home.run(&["status", "--jamf-ea"]);
    assert_eq!(out.stdout, "<result>not_enrolled</result>\n");
    let out = home.run(&["status"]);
    assert!(out.stdout.starts_with("State:"), "{}", text(&out));
    assert!(!home.data_dir().exists(), "status writes nothing");
}

#[test]
fn not_enrolled_without_token_exits_7() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    for args in [&["run"][..], &["enroll"], &["renew", "--force"]] {
        let out = home.run(args);
        assert_eq!(code(&out), 7, "{args:?}: {}", text(&out));
    }
}

#[test]
fn ca_down_exits_5_and_creates_no_identity() {
    let down = RefusedPort::new();
    let home = Home::new(&down.https_url());
    let out = home.run_with(home.command(&["enroll", "--token-stdin"]), Some("some-token\n"));
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert_eq!(home.identity_dirs(), 0);
    let status = home.status();
    assert_eq!(status["state"], "not_enrolled");
    assert!(status["renewal"]["lastError"].as_str().is_some_and(|e| e.contains("connect")), "{status}");
    assert!(!out.stderr.contains("some-token"), "the token is never logged");
}
