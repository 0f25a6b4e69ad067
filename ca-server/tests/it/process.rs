//! `devicetrust-ca dev` as a process: the ready line, the warning, SIGTERM, and the Python
//! contract client (`tests/contract/contract_client.py`) run against it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A running `devicetrust-ca dev`; killed when dropped.
pub(crate) struct DevProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub(crate) line: String,
    pub(crate) info: serde_json::Value,
    stderr: PathBuf,
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
        let mut child = command
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn devicetrust-ca");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the ready line");
        let info = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "not a JSON line ({e}): {line:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        Self { child, stdout, line, info, stderr }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).expect("stderr")
    }

    /// Sends SIGTERM, waits, and returns the exit code and the rest of stdout.
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("rest of stdout");
        (status.code(), rest)
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    let mut python = Command::new("python3")
        .arg(&script)
        .arg("--managed-devices")
        .arg(&list)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the contract test");
    // The tokens go over stdin, never on a command line.
    python.stdin.take().expect("stdin").write_all(dev.line.as_bytes()).expect("write the ready line");
    let output = python.wait_with_output().expect("python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "contract client failed:\n{stdout}\n{stderr}\nCA log:\n{}",
        dev.stderr()
    );
    assert!(stdout.contains(" 0 failures"), "{stdout}");

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
