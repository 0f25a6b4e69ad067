//! The agent's command-line contract against a real CA: where the enrollment token may come
//! from, and the documented exit code of each refusal.
//!
//! - token from `--token-file`, from `DEVICETRUST_ENROLLMENT_TOKEN`, from stdin; none → 7;
//! - a wrong token → 2 and no identity, and the token is never echoed;
//! - a device the MDM does not manage → 3 and no identity;
//! - the sixth unbound certificate of a device → 4 with the CA's exact message, and after
//!   the admin revokes the device, enrollment works again;
//! - a configuration error → 2; `uninstall` twice: the second removes nothing.

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt as _;

use ca_client::protocol::CertificateState;
use tests::harness::agent::AgentHome;
use tests::harness::ca::DevCa;

const LIMIT_MESSAGE: &str = "Maximum enrollment limit of 5 certificates for a device is reached";

/// A CA whose MDM (a static list) manages exactly `udids`, with serial `SER-<udid>` as
/// [`AgentHome`] configures.
fn ca_managing(udids: &[&str]) -> (DevCa, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let list: Vec<serde_json::Value> = udids
        .iter()
        .map(|udid| serde_json::json!({"udid": udid, "serialNumber": format!("SER-{udid}")}))
        .collect();
    let file = dir.path().join("managed-devices.json");
    std::fs::write(&file, serde_json::to_vec(&list).expect("JSON")).expect("the managed-devices file");
    let ca = DevCa::start_with_args(&["--managed-devices", &file.to_string_lossy()]);
    (ca, dir)
}

#[test]
fn token_sources_and_refusals_have_their_exit_codes() {
    let (ca, _list) = ca_managing(&["E2E-CLI-FILE", "E2E-CLI-ENV", "E2E-CLI-STDIN", "E2E-CLI-WRONG"]);
    let token = ca.info().enrollment_token.as_str();

    // --token-file, a 0600 file.
    let by_file = AgentHome::new(&ca, "E2E-CLI-FILE");
    let token_file = by_file.home.join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("the token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    by_file.run(&["enroll", "--token-file", &token_file.to_string_lossy()]).expect_code(0);
    assert!(by_file.current_identity().is_some());

    // The environment variable.
    let by_env = AgentHome::new(&ca, "E2E-CLI-ENV");
    by_env.run_full(&["enroll"], None, &[("DEVICETRUST_ENROLLMENT_TOKEN", token)]).expect_code(0);
    assert!(by_env.current_identity().is_some());

    // No token at all: 7, for `enroll` and for `run`.
    let without = AgentHome::new(&ca, "E2E-CLI-STDIN");
    without.run(&["enroll"]).expect_code(7);
    without.run(&["run"]).expect_code(7);
    assert!(without.current_identity().is_none());
    without.run_with_token(&["run", "--token-stdin"], token).expect_code(0);
    assert!(without.current_identity().is_some());

    // A wrong token: 2, no identity, and the token is not echoed anywhere.
    let wrong_token = "wrong-token-0123456789-abcdefghijklmnopqrstuvwxyz";
    let wrong = AgentHome::new(&ca, "E2E-CLI-WRONG");
    let refused = wrong.run_with_token(&["enroll", "--token-stdin"], wrong_token);
    refused.expect_code(2);
    assert!(wrong.current_identity().is_none());
    assert!(!refused.stdout.contains(wrong_token) && !refused.stderr.contains(wrong_token), "{refused}");
    assert!(!ca.stderr().contains(wrong_token) && !ca.stderr().contains(token), "the CA logged a token");

    // A device the MDM does not manage: 3, no identity.
    let unmanaged = AgentHome::new(&ca, "E2E-CLI-UNMANAGED");
    unmanaged.run_with_token(&["enroll", "--token-stdin"], token).expect_code(3);
    assert!(unmanaged.current_identity().is_none());
    assert_eq!(unmanaged.status_json()["state"], "not_enrolled");

    // A configuration error: 2.
    let misconfigured = AgentHome::new(&ca, "E2E-CLI-FILE");
    std::fs::write(&misconfigured.config, "ca_url = \"http://127.0.0.1:1\"\n").expect("a bad configuration");
    misconfigured.run(&["run"]).expect_code(2);
    std::fs::write(&misconfigured.config, "ca_ulr = \"https://127.0.0.1:1\"\n").expect("a typo");
    misconfigured.run(&["status"]).expect_code(2);

    // `uninstall` removes what enrollment made; a second one removes nothing and succeeds.
    let first = by_file.run(&["uninstall"]);
    first.expect_code(0);
    assert!(by_file.current_identity().is_none() && by_file.nss_user_certificates().is_empty(), "{first}");
    let second = by_file.run(&["uninstall"]);
    second.expect_code(0);
    assert!(second.stdout.contains("nothing to remove"), "{second}");
}

#[test]
fn the_sixth_unbound_certificate_is_refused_with_exit_4() {
    let (ca, _list) = ca_managing(&["E2E-CLI-LIMIT"]);
    let admin = ca.admin();
    let token = ca.info().enrollment_token.as_str();
    let agent = AgentHome::new(&ca, "E2E-CLI-LIMIT");

    // Five enrollments, each thrown away by `uninstall`: five unbound certificates.
    for _ in 0..5 {
        agent.run_with_token(&["enroll", "--token-stdin"], token).expect_code(0);
        agent.run(&["uninstall"]).expect_code(0);
    }
    let refused = agent.run_with_token(&["enroll", "--token-stdin"], token);
    refused.expect_code(4);
    assert!(
        refused.stderr.contains(LIMIT_MESSAGE),
        "the CA's message reaches the log (and Jamf's)\n{refused}"
    );
    assert!(agent.current_identity().is_none());
    let device = admin.device(&agent.udid).expect("the CA knows the device");
    let unbound = device.certificates.iter().filter(|c| c.state == CertificateState::Unbound).count();
    assert_eq!(unbound, 5, "{device:#?}");

    // The admin clears the device; revoked certificates hold no slot.
    assert_eq!(admin.revoke_device(&agent.udid), 5);
    agent.run_with_token(&["enroll", "--token-stdin"], token).expect_code(0);
    assert!(agent.current_identity().is_some());
}

/// What a person reads, as golden output: each command prints its result once on standard
/// output (the log goes to standard error), `run` with nothing to do prints nothing, and
/// `status` shows the device as the CA's admin looks it up.
#[test]
fn ok_each_command_prints_its_result_once() {
    use snapbox::{assert_data_eq, str};
    let ca = DevCa::start();
    let agent = AgentHome::new(&ca, "E2E-GOLDEN");
    let token = ca.info().enrollment_token.as_str();

    let enrolled = agent.run_with_token(&["enroll", "--token-stdin"], token);
    enrolled.expect_code(0);
    assert_data_eq!(
        enrolled.stdout.clone(),
        str![[r#"
enrolled: certificate [..] valid until [..]Z
imported the identity into the nss database [..]/home/.pki/nssdb
wrote [..]/home/.config/systemd/user/devicetrust-agent.service
wrote [..]/home/.config/systemd/user/devicetrust-agent.timer
the user manager is not reachable ([..]); the timer starts at the next login

"#]]
    );

    let run = agent.run(&["run"]);
    run.expect_code(0);
    assert_eq!(run.stdout, "", "run with nothing to do prints nothing");

    let renew = agent.run(&["renew"]);
    renew.expect_code(0);
    assert_data_eq!(
        renew.stdout.clone(),
        str![[r#"
nothing to do: renewal is due at [..]Z

"#]]
    );

    let status = agent.run(&["status"]);
    status.expect_code(0);
    assert_data_eq!(
        status.stdout.clone(),
        str![[r#"
State:            enrolled
Device:           UDID E2E-GOLDEN, serial SER-E2E-GOLDEN
Serial:           [..]
Subject:          Device Trust
Issuer:           [..]
Valid from:       [..]Z
Valid until:      [..]Z (364 days left)
Renewal due:      [..]Z
Daily run:        [..]:[..] local time
Last attempt:     [..]Z
Last error:       none
CA:               https://127.0.0.1:[..]
...
Browser nssdb:    in place (current identity in [..]/home/.pki/nssdb)
Origin:           https://127.0.0.1:[..]
Store:            files at [..]/home/.local/share/devicetrust
Store keyFile:    [..]/key.pem
Schedule:         systemd user timer in [..]/home/.config/systemd/user

"#]]
    );
    assert!(!status.stdout.contains('\u{1b}'), "no colour when piped");

    let uninstalled = agent.run(&["uninstall"]);
    uninstalled.expect_code(0);
    assert_data_eq!(
        uninstalled.stdout.clone(),
        str![[r#"
removed 1 certificate(s) and 1 key(s) from the nss database [..]/home/.pki/nssdb
...
removed [..]/home/.config/systemd/user/devicetrust-agent.service
removed [..]/home/.config/systemd/user/devicetrust-agent.timer
...
the systemd user manager is not reachable ([..]), so it was not told; [..]

"#]]
    );
    assert_data_eq!(
        agent.run(&["uninstall"]).stdout,
        str![[r#"
nothing to remove

"#]]
    );
}
