//! `devicetrust-ca dev` as a process: the ready line, the warning, SIGTERM, and the Python
//! contract client (`tests/contract/contract_client.py`) run against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use testkit::{Guard, HANG_LIMIT, run_bounded};

/// A running `devicetrust-ca dev` in its own process group; killed when dropped.
pub(crate) struct DevProcess {
    guard: Guard,
    pub(crate) line: String,
    pub(crate) info: serde_json::Value,
    stderr: PathBuf,
    rest: Option<JoinHandle<String>>,
}

impl DevProcess {
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_fd_limit(dir, extra, None)
    }

    /// Starts it with at most `fd_limit` open file descriptors (`ulimit -n`), if given.
    pub(crate) fn start_with_fd_limit(dir: &Path, extra: &[&str], fd_limit: Option<u32>) -> Self {
        let stderr = dir.join("stderr.log");
        let binary = env!("CARGO_BIN_EXE_devicetrust-ca");
        let mut command = match fd_limit {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(binary);
                sh
            }
            None => Command::new(binary),
        };
        command
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut guard = Guard::spawn(&mut command, "devicetrust-ca dev");
        let (line, rest) = guard.ready_line_and_rest(&stderr);
        let info = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "not a JSON line ({e}): {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        Self { guard, line, info, stderr, rest: Some(rest) }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).expect("stderr")
    }

    /// Sends SIGTERM (SIGKILL after a grace period), and returns the exit code and the rest
    /// of stdout.
    fn terminate(mut self) -> (Option<i32>, String) {
        let status = self.guard.stop(Duration::from_secs(30));
        let rest = self.rest.take().map(|rest| rest.join().expect("the stdout reader")).unwrap_or_default();
        (status.code(), rest)
    }
}

#[test]
fn dev_prints_one_json_line_warns_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(dir.path(), &[]);
    assert!(dev.line.ends_with('\n') && dev.line.trim_end().lines().count() == 1);
    let info = dev.info.clone();
    let url = info["url"].as_str().expect("url");
    assert!(url.starts_with("https://127.0.0.1:") && !url.ends_with(":0"), "{url}");
    assert_eq!(info["certAuthDomain"], url);
    for key in ["enrollmentToken", "adminToken"] {
        assert!(info[key].as_str().expect(key).len() >= 32, "{key}");
    }
    assert_ne!(info["enrollmentToken"], info["adminToken"]);
    for key in ["caBundle", "issuerCertificate"] {
        let path = info[key].as_str().expect(key);
        assert!(std::fs::read_to_string(path).expect(key).contains("BEGIN CERTIFICATE"), "{key}");
    }
    let data_dir = PathBuf::from(info["dataDir"].as_str().expect("dataDir"));
    {
        use std::os::unix::fs::PermissionsExt as _;
        for secret in ["ca.key", "tls.key", "enrollment-token", "admin-token"] {
            let mode = std::fs::metadata(data_dir.join(secret)).expect(secret).permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
    }
    let stderr = dev.stderr();
    assert!(stderr.contains("every device counts as managed"), "{stderr}");
    assert!(!stderr.contains(info["enrollmentToken"].as_str().expect("token")), "no token in logs");

    let (code, rest) = dev.terminate();
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    assert_eq!(rest, "", "exactly one line on stdout");

    // A restart reuses the CA and the tokens.
    let again = DevProcess::start(dir.path(), &[]);
    assert_eq!(again.info["enrollmentToken"], info["enrollmentToken"]);
    assert_eq!(
        std::fs::read(again.info["issuerCertificate"].as_str().expect("issuer")).expect("issuer"),
        std::fs::read(info["issuerCertificate"].as_str().expect("issuer")).expect("issuer")
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
    let dev = DevProcess::start(
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
    for secret in ["enrollmentToken", "adminToken"] {
        assert!(
            !log.contains(dev.info[secret].as_str().expect("token")),
            "the CA log must not contain the {secret}"
        );
    }
    assert!(!log.contains("BEGIN CERTIFICATE REQUEST") && !log.contains("PRIVATE KEY"));
    let (code, _) = dev.terminate();
    assert_eq!(code, Some(0));
}
