//! `devicetrust-demo-app` (this crate's binary) as a child process on 127.0.0.1: the app
//! behind the proxies, which admits a request only with a device assertion that verifies
//! against the CA's JWKS.
//!
//! The binary's path comes from the test (`env!("CARGO_BIN_EXE_devicetrust-demo-app")`,
//! which cargo sets for integration tests only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use tempfile::TempDir;

use testkit::Guard;

/// What the app checks.
#[derive(Debug, Clone)]
pub struct DemoAppOptions {
    /// The CA's JWKS URL.
    pub jwks_url: String,
    /// PEM roots for an https JWKS URL.
    pub ca_bundle: Option<PathBuf>,
    /// The expected `iss` (the CA's cert-auth domain).
    pub issuer: String,
    /// The accepted `aud` values (relying-party names).
    pub audiences: Vec<String>,
}

/// A running demo app; stopped when dropped.
#[derive(Debug)]
pub struct DemoApp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stderr: PathBuf,
    guard: Guard,
    // Dropped after the guard: the app stops before its log goes.
    _dir: TempDir,
}

#[derive(Debug, Deserialize)]
struct Ready {
    url: String,
}

impl DemoApp {
    /// Starts `binary` with `options` on a free port and waits for its ready line.
    pub fn start(binary: &Path, options: &DemoAppOptions) -> Self {
        let dir = tempfile::Builder::new().prefix("devicetrust-demo-app-").tempdir().expect("a dir");
        let stderr = dir.path().join("stderr.log");
        let mut command = Command::new(binary);
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--jwks-url",
            &options.jwks_url,
            "--issuer",
            &options.issuer,
        ]);
        if let Some(bundle) = &options.ca_bundle {
            command.arg("--ca-bundle").arg(bundle);
        }
        for audience in &options.audiences {
            command.args(["--audience", audience]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("the app's stderr file"));
        let mut guard = Guard::spawn(&mut command, "devicetrust-demo-app");
        let line = guard.ready_line(&stderr);
        let ready: Ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the ready line {line:?} is not JSON: {e}"));
        Self { url: ready.url, stderr, guard, _dir: dir }
    }

    /// What the app wrote on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }
}
