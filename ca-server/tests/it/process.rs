//! `devicetrust-ca dev` as a process: the ready line, the warning, SIGTERM, and the Python
//! contract client (`tests/contract/contract_client.py`) run against it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::{DevCaCommand, DevCaProcess, HANG_LIMIT, run_bounded};

/// Starts `devicetrust-ca dev` on `dir/data` (its log in `dir/stderr.log`) with at most
/// `fd_limit` open file descriptors (`ulimit -n`), if given.
pub(crate) fn start_with_fd_limit(dir: &Path, extra: &[&str], fd_limit: Option<u32>) -> DevCaProcess {
    DevCaCommand {
        binary: Path::new(env!("CARGO_BIN_EXE_devicetrust-ca")),
        data_dir: &dir.join("data"),
        stderr: &dir.join("stderr.log"),
        extra,
        fd_limit,
    }
    .spawn()
}

fn start(dir: &Path, extra: &[&str]) -> DevCaProcess {
    start_with_fd_limit(dir, extra, None)
}

/// Sends SIGTERM (SIGKILL after a grace period), and returns the exit code and the rest of
/// stdout.
fn terminate(mut dev: DevCaProcess) -> (Option<i32>, String) {
    let status = dev.stop(Duration::from_secs(30));
    (status.code(), dev.rest_of_stdout())
}

#[test]
fn dev_prints_one_json_line_warns_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path(), &[]);
    assert!(dev.line.ends_with('\n') && dev.line.trim_end().lines().count() == 1);
    let info = dev.info.clone();
    let url = info.url.as_str();
    assert!(url.starts_with("https://127.0.0.1:") && !url.ends_with(":0"), "{url}");
    assert_eq!(info.cert_auth_domain, url);
    for (key, token) in [("enrollmentToken", &info.enrollment_token), ("adminToken", &info.admin_token)] {
        assert!(token.len() >= 32, "{key}");
    }
    assert_ne!(info.enrollment_token, info.admin_token);
    for (key, path) in [("caBundle", &info.ca_bundle), ("issuerCertificate", &info.issuer_certificate)] {
        assert!(std::fs::read_to_string(path).expect(key).contains("BEGIN CERTIFICATE"), "{key}");
    }
    let data_dir = info.data_dir.clone();
    {
        use std::os::unix::fs::PermissionsExt as _;
        for secret in ["ca.key", "tls.key", "enrollment-token", "admin-token"] {
            let mode = std::fs::metadata(data_dir.join(secret)).expect(secret).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
    }
    // The operations listener answers over plain HTTP, on loopback.
    assert!(info.ops_url.starts_with("http://127.0.0.1:"), "{}", info.ops_url);
    let ops = info.ops_url.trim_start_matches("http://").to_owned();
    let healthz = run_bounded(
        Command::new("python3").args([
            "-c",
            "import sys,urllib.request; print(urllib.request.urlopen('http://'+sys.argv[1]+'/healthz').read().decode())",
            &ops,
        ]),
        None,
        HANG_LIMIT,
        "GET /healthz",
    );
    assert_eq!(healthz.expect_success().stdout.trim(), "ok");
    let stderr = dev.stderr();
    assert!(stderr.contains("every device counts as managed"), "{stderr}");
    assert!(!stderr.contains(&info.enrollment_token), "no token in logs");

    let (code, rest) = terminate(dev);
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    assert_eq!(rest, "", "exactly one line on stdout");

    // A restart reuses the CA and the tokens.
    let again = start(dir.path(), &[]);
    assert_eq!(again.info.enrollment_token, info.enrollment_token);
    assert_eq!(
        std::fs::read(&again.info.issuer_certificate).expect("issuer"),
        std::fs::read(&info.issuer_certificate).expect("issuer")
    );
}

#[test]
fn the_contract_client_gets_the_documented_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devices: Vec<_> = (1..=5)
        .map(|n| serde_json::json!({"udid": format!("8E1F6C2A-7B3D-4E5F-9A0B-{n:012X}"), "serialNumber": format!("C02CONTRACT{n}")}))
        .collect();
    let list = dir.path().join("managed-devices.json");
    std::fs::write(&list, serde_json::to_vec(&devices).expect("json")).expect("write list");
    // The contract client checks the per-device rate limit; the per-address budget, which
    // every one of its requests spends (they all come from 127.0.0.1), must not come first.
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, "requests_per_minute_per_address = 100000\n").expect("write limits");
    let dev = start(
        dir.path(),
        &[
            "--managed-devices",
            list.to_str().expect("utf-8 path"),
            "--limits",
            limits.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!dev.stderr().contains("every device counts as managed"));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/contract/contract_client.py");
    // The tokens go over stdin, never on a command line.
    let client = run_bounded(
        Command::new("python3").arg(&script).arg("--managed-devices").arg(&list),
        Some(dev.line.as_bytes()),
        HANG_LIMIT,
        "the python contract client",
    );
    assert_eq!(client.code(), Some(0), "{client}\nCA log:\n{}", dev.stderr());
    assert!(client.stdout.contains(" 0 failures"), "{}", client.stdout);

    let log = dev.stderr();
    for (secret, token) in
        [("enrollmentToken", &dev.info.enrollment_token), ("adminToken", &dev.info.admin_token)]
    {
        assert!(!log.contains(token.as_str()), "the CA log must not contain the {secret}");
    }
    assert!(!log.contains("BEGIN CERTIFICATE REQUEST") && !log.contains("PRIVATE KEY"));
    let (code, _) = terminate(dev);
    assert_eq!(code, Some(0));
}
