//! `devicetrust-ca admin` as a process against a CA on 127.0.0.1: the tables people read
//! (golden, with snapbox), the JSON scripts read, following the log, and each way it can
//! fail with the exit code and the message that says what to fix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ca_client::protocol::{DeviceRecord, Event, EventType};
use snapbox::{assert_data_eq, str};
use testkit::{Finished, Guard, RefusedPort};

use crate::harness::{Device, TestCa, p256};

fn admin(ca_url: &str, bundle: Option<&Path>, token_file: Option<&Path>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devicetrust-ca"));
    command.arg("admin").arg("--url").arg(ca_url);
    if let Some(bundle) = bundle {
        command.arg("--ca-bundle").arg(bundle);
    }
    if let Some(file) = token_file {
        command.arg("--token-file").arg(file);
    }
    command.args(args).env_remove("DEVICETRUST_ADMIN_TOKEN").env_remove("DEVICETRUST_CA_URL");
    command.env_remove("DEVICETRUST_CA_BUNDLE").env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// An admin command without `--url` (nor `DEVICETRUST_CA_URL`).
fn no_url(token_file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devicetrust-ca"));
    command.arg("admin").arg("--token-file").arg(token_file).arg("events").env_remove("DEVICETRUST_CA_URL");
    command
}

/// Runs the admin command for `ca` (its bundle and admin token file) off the async runtime.
async fn run_admin(ca: &TestCa, args: &[&str]) -> Finished {
    let mut command = admin(&ca.env.url, Some(&ca.env.ca_bundle), Some(&token_file(ca)), args);
    tokio::task::spawn_blocking(move || testkit::run(&mut command)).await.expect("join")
}

async fn run_command(mut command: Command) -> Finished {
    tokio::task::spawn_blocking(move || testkit::run(&mut command)).await.expect("join")
}

fn token_file(ca: &TestCa) -> std::path::PathBuf {
    ca.env.data_dir.join("admin-token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_devices_show_revoke_bind_and_users_revoke_print_tables_and_json() {
    let ca = TestCa::start().await;
    let device = Device::new(7);
    ca.enroll_ok(&device.request(&p256())).await;
    ca.enroll_ok(&device.request(&p256())).await;

    let shown = run_admin(&ca, &["devices", "show", &device.udid.to_lowercase()]).await;
    shown.expect_success();
    assert_data_eq!(
        shown.stdout.clone(),
        str![[r#"
Device:         564D2C3F-0B5A-4F6B-9C1D-000000000007
Serial number:  C02TEST00007
Name:           Alice's MacBook
Platform:       macos 14.5
First enrolled: [..]Z

SERIAL                            STATE    USER   BOUND TO  NOT AFTER             REVOKED
[..]  unbound  alice  -         [..]Z  -
[..]  unbound  alice  -         [..]Z  -

"#]]
    );
    assert_eq!(shown.stderr, "", "a result is printed once, with no log lines");

    let json = run_admin(&ca, &["--json", "devices", "show", &device.udid]).await;
    json.expect_success();
    let record: DeviceRecord = serde_json::from_str(&json.stdout).expect("the API's JSON");
    assert_eq!(record, ca.device_record(&device.udid).await);

    let revoked = run_admin(&ca, &["devices", "revoke", &device.udid]).await;
    revoked.expect_success();
    assert_data_eq!(
        revoked.stdout.clone(),
        str![[r#"
Revoked 2 certificates of device 564D2C3F-0B5A-4F6B-9C1D-000000000007.

"#]]
    );
    let again = run_admin(&ca, &["devices", "revoke", &device.udid]).await;
    again.expect_success();
    assert_data_eq!(
        again.stdout.clone(),
        str![[r#"
Nothing to revoke: device 564D2C3F-0B5A-4F6B-9C1D-000000000007 has no unexpired, unrevoked certificate.

"#]]
    );
    let after = run_admin(&ca, &["devices", "show", &device.udid]).await;
    assert_eq!(after.stdout.matches("  revoked  ").count(), 2, "{}", after.stdout);

    let mut bob = Device::new(8);
    bob.user = "bob".into();
    let bobs = ca.enroll_ok(&bob.request(&p256())).await;
    let bound = run_admin(&ca, &["certificates", "bind", &bobs.serial_number, "--user", "bob"]).await;
    bound.expect_success();
    assert_eq!(bound.stdout, format!("Certificate {} is bound, bound to bob.\n", bobs.serial_number));
    let other = run_admin(&ca, &["certificates", "bind", &bobs.serial_number, "--user", "carol"]).await;
    assert_eq!(other.code(), Some(1), "{other:?}");
    assert!(other.stderr.contains("certificate_bound_to_other_user"), "{}", other.stderr);
    let unknown = run_admin(&ca, &["certificates", "bind", "00ff", "--user", "bob"]).await;
    assert_eq!(
        (unknown.code(), unknown.stderr.as_str()),
        (Some(3), "error: the CA has no certificate 00ff\n")
    );
    let users = run_admin(&ca, &["--json", "users", "revoke", "bob"]).await;
    users.expect_success();
    assert_data_eq!(
        users.stdout.clone(),
        str![[r#"
{"revoked":1}

"#]]
    );
    ca.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_events_since_as_a_table_and_as_json_lines() {
    let ca = TestCa::start().await;
    let device = Device::new(9);
    let issued = ca.enroll_ok(&device.request(&p256())).await;

    let table = run_admin(&ca, &["events", "--since", "1h"]).await;
    table.expect_success();
    assert_data_eq!(
        table.stdout.clone(),
        str![[r#"
ID      TIME                  EVENT                             OUTCOME  USER          DEVICE                                SERIAL                            DETAIL
1       [..]Z  user.credential.enroll            SUCCESS  alice         564D2C3F-0B5A-4F6B-9C1D-000000000009  [..]  -
2       [..]Z  pki.cert.issue                    SUCCESS  alice         564D2C3F-0B5A-4F6B-9C1D-000000000009  [..]  -

"#]]
    );

    let lines = run_admin(&ca, &["--json", "events", "--after", "1"]).await;
    lines.expect_success();
    let events: Vec<Event> =
        lines.stdout.lines().map(|line| serde_json::from_str(line).expect("one event per line")).collect();
    assert_eq!(events.len(), 1, "{}", lines.stdout);
    assert_eq!((events[0].id, events[0].event_type), (2, EventType::Issue));
    assert_eq!(events[0].serial_number.as_deref(), Some(issued.serial_number.as_str()));

    // A window with nothing in it says so on stderr and prints nothing to parse.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = run_admin(&ca, &["events", "--since", &future]).await;
    none.expect_success();
    assert_eq!((none.stdout.as_str(), none.stderr.as_str()), ("", "no events\n"));

    // --limit stops early and says where to go on.
    let first = run_admin(&ca, &["events", "--after", "0", "--limit", "1"]).await;
    first.expect_success();
    assert_eq!(first.stdout.lines().count(), 2, "header and one event: {}", first.stdout);
    assert_eq!(first.stderr, "note: more events may follow; continue with --after 1\n");
    ca.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_events_follow_prints_new_events_until_interrupted() {
    let ca = TestCa::start().await;
    let mut command = admin(
        &ca.env.url,
        Some(&ca.env.ca_bundle),
        Some(&token_file(&ca)),
        &["--json", "events", "--follow"],
    );
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut follower = Guard::spawn(&mut command, "admin events --follow");
    let stdout = follower.child_mut().stdout.take().expect("stdout");
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Enrolled after the follower started: it must show up without a restart.
    let device = Device::new(10);
    ca.enroll_ok(&device.request(&p256())).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines_rx.recv())
            .await
            .expect("an event within 30 s")
            .expect("the follower is still running");
        seen.push(serde_json::from_str::<Event>(&line).expect("json").event_type);
    }
    assert_eq!(seen, [EventType::Enroll, EventType::Issue]);
    let status =
        tokio::task::spawn_blocking(move || follower.stop(Duration::from_secs(10))).await.expect("join");
    assert_eq!(status.code(), Some(0), "SIGTERM ends --follow cleanly: {status:?}");
    ca.stop().await;
}

/// Every failure: its exit code and the words that say what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_each_mistake_exits_with_its_code_and_says_what_to_set() {
    let ca = TestCa::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong_token = dir.path().join("wrong");
    std::fs::write(&wrong_token, "not-the-admin-token\n").expect("write");
    let refused = RefusedPort::new();
    let unreachable = refused.https_url();
    let bundle = ca.env.ca_bundle.as_path();
    let token = token_file(&ca);
    let cases: Vec<(&str, Command, i32, &str)> = vec![
        (
            "fail/no-token",
            admin(&ca.env.url, Some(bundle), None, &["devices", "show", "X"]),
            2,
            "error: no admin token: pass --token-file PATH",
        ),
        (
            "fail/wrong-token",
            admin(&ca.env.url, Some(bundle), Some(&wrong_token), &["devices", "show", "X"]),
            2,
            "error: the CA refused the admin token: pass --token-file",
        ),
        (
            "fail/untrusted-server",
            admin(&ca.env.url, None, Some(&token), &["devices", "show", "X"]),
            2,
            "set --ca-bundle to the PEM of the CA",
        ),
        (
            "fail/unknown-device",
            admin(
                &ca.env.url,
                Some(bundle),
                Some(&token),
                &["devices", "show", "564D2C3F-0B5A-4F6B-9C1D-00000000FFFF"],
            ),
            3,
            "error: the CA has no device 564D2C3F-0B5A-4F6B-9C1D-00000000FFFF",
        ),
        (
            "fail/unreachable",
            admin(&unreachable, Some(bundle), Some(&token), &["events"]),
            1,
            "(is the CA running, and is --url the URL agents use as ca_url?)",
        ),
        (
            "fail/bad-since",
            admin(&ca.env.url, Some(bundle), Some(&token), &["events", "--since", "yesterday"]),
            2,
            "error: --since \"yesterday\" is neither a time",
        ),
        ("fail/no-url", no_url(&token), 2, "error: no CA URL: pass --url https://HOST:PORT"),
    ];
    for (name, command, code, message) in cases {
        let finished = run_command(command).await;
        assert_eq!(finished.code(), Some(code), "{name}: {finished:?}");
        assert!(finished.stderr.contains(message), "{name}: {}", finished.stderr);
        assert_eq!(finished.stdout, "", "{name}");
    }
    ca.stop().await;
}
