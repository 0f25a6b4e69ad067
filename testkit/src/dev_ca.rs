//! `devicetrust-ca dev` as a child process on 127.0.0.1: the one spawner every test crate
//! uses, and the JSON line it prints once it accepts connections.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;

use crate::Guard;

/// The JSON line `devicetrust-ca dev` prints when it is ready (`docs/operations.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevInfo {
    /// The CA's base URL.
    pub url: String,
    /// Where browsers present the certificate.
    pub cert_auth_domain: String,
    /// The enrollment token (for the agent's stdin only, never an argument).
    pub enrollment_token: String,
    /// The admin token.
    pub admin_token: String,
    /// The PEM roots clients trust for the CA's TLS.
    pub ca_bundle: PathBuf,
    /// The issuing CA's certificate.
    pub issuer_certificate: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The operations listener (`/healthz`, `/readyz`, `/metrics`), plain HTTP on loopback.
    pub ops_url: String,
    /// The plain-HTTP listener (OCSP, CRL, JWKS), with `--http-listen`.
    #[serde(default)]
    pub http_url: Option<String>,
    /// The OpenID Connect issuer, with `--oidc-redirect-uri`.
    #[serde(default)]
    pub oidc_issuer: Option<String>,
    /// The dev OpenID Connect client's id.
    #[serde(default)]
    pub oidc_client_id: Option<String>,
    /// Its secret.
    #[serde(default)]
    pub oidc_client_secret: Option<String>,
    /// The 0600 file holding it.
    #[serde(default)]
    pub oidc_client_secret_file: Option<PathBuf>,
}

/// How to start one `devicetrust-ca dev`.
#[derive(Debug, Clone)]
pub struct DevCaCommand<'a> {
    /// The `devicetrust-ca` binary.
    pub binary: &'a Path,
    /// Its `--data-dir`.
    pub data_dir: &'a Path,
    /// Where its stderr (its log) is appended.
    pub stderr: &'a Path,
    /// More `dev` arguments, e.g. `--managed-devices FILE`.
    pub extra: &'a [&'a str],
    /// At most this many open file descriptors (`ulimit -n`), if given.
    pub fd_limit: Option<u32>,
}

/// A running `devicetrust-ca dev` in its own process group; killed when dropped.
#[derive(Debug)]
pub struct DevCaProcess {
    /// What it printed when ready, parsed.
    pub info: DevInfo,
    /// The ready line as printed, with its `\n`.
    pub line: String,
    guard: Guard,
    stderr: PathBuf,
    rest: Option<JoinHandle<String>>,
}

impl DevCaCommand<'_> {
    /// Starts the CA on 127.0.0.1, a free port, and waits (bounded) for its ready line;
    /// panics with its log if none comes or the line is not the documented JSON.
    pub fn spawn(&self) -> DevCaProcess {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.stderr)
            .expect("the CA's stderr file");
        let mut command = match self.fd_limit {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(self.binary);
                sh
            }
            None => Command::new(self.binary),
        };
        command
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir)
            .args(self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut guard = Guard::spawn(&mut command, "devicetrust-ca dev");
        let (line, rest) = guard.ready_line_and_rest(self.stderr);
        let info = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the ready line {line:?} is not the documented JSON ({e}); the CA's log:\n{}",
                std::fs::read_to_string(self.stderr).unwrap_or_default()
            )
        });
        DevCaProcess { info, line, guard, stderr: self.stderr.to_owned(), rest: Some(rest) }
    }
}

impl DevCaProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Everything the CA wrote on stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops the CA (SIGTERM, as an operator would; SIGKILL after `grace`) and returns how
    /// it ended.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.guard.stop(grace)
    }

    /// What it printed on stdout after the ready line; call once it has stopped.
    pub fn rest_of_stdout(&mut self) -> String {
        self.rest.take().map(|rest| rest.join().unwrap_or_default()).unwrap_or_default()
    }
}
