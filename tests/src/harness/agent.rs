//! `devicetrust-agent` in a home of its own.
//!
//! [`AgentHome`] is a temporary directory used as `HOME`, with `XDG_DATA_HOME`,
//! `XDG_CONFIG_HOME` and `XDG_RUNTIME_DIR` inside it, so that the agent's store, its NSS
//! database (`$HOME/.pki/nssdb`) and its systemd units never touch the real user's files.
//! The agent runs with a cleared environment (only `PATH` and `USER`/`LOGNAME` pass
//! through), so a developer's `DEVICETRUST_ENROLLMENT_TOKEN` or `DEVICETRUST_LOG` cannot
//! change a test. The configuration file names the CA, its pinned TLS roots and fixed
//! device facts; the enrollment token goes to the agent on stdin (`--token-stdin`), never
//! in its arguments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::binaries::binaries;
use super::ca::{DevCa, StoredIdentity};
use testkit::{Finished, HANG_LIMIT, run_bounded};

/// The nickname the agent gives its identity in the NSS database.
pub const NSS_NICKNAME: &str = "DeviceTrust";

/// A home directory for one agent, removed when dropped.
#[derive(Debug)]
pub struct AgentHome {
    /// Device UDID in the configuration (also the CA's key for the device).
    pub udid: String,
    /// Device serial number in the configuration.
    pub serial: String,
    /// The configuration file passed with `--config`.
    pub config: PathBuf,
    /// `HOME`.
    pub home: PathBuf,
    dir: TempDir,
}

impl AgentHome {
    /// A home whose configuration points at `ca`, for the device `udid`.
    pub fn new(ca: &DevCa, udid: &str) -> Self {
        let home = Self::empty(udid);
        home.point_at(&ca.info().url, &ca.info().ca_bundle);
        home
    }

    /// A home with no configuration file yet (see [`Self::point_at`]).
    pub fn empty(udid: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("devicetrust-agent-").tempdir().expect("a temporary home");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("the home directory");
        Self {
            udid: udid.to_owned(),
            serial: format!("SER-{udid}"),
            config: dir.path().join("agent.toml"),
            home,
            dir,
        }
    }

    /// (Re)writes the configuration file so that the agent talks to `ca_url`, trusting only
    /// the roots in `ca_bundle`.
    pub fn point_at(&self, ca_url: &str, ca_bundle: &Path) {
        let text = format!(
            "# Written by the end-to-end tests.\n\
             ca_url = {}\n\
             ca_bundle = {}\n\
             device_udid = {}\n\
             device_serial = {}\n\
             # A CA that stops answering must not stall the test for the default 30 s.\n\
             ca_timeout_seconds = 10\n",
            toml_string(ca_url),
            toml_string(&ca_bundle.to_string_lossy()),
            toml_string(&self.udid),
            toml_string(&self.serial),
        );
        std::fs::write(&self.config, text).expect("the agent configuration");
    }

    /// The agent's data directory (`$XDG_DATA_HOME/devicetrust`).
    pub fn data_dir(&self) -> PathBuf {
        self.home.join(".local/share/devicetrust")
    }

    /// The NSS database the agent imports into and Chromium reads.
    pub fn nss_dir(&self) -> PathBuf {
        self.home.join(".pki/nssdb")
    }

    /// A command running the agent in this home, with `--config` and `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&binaries().agent);
        command.env_clear();
        for name in ["PATH", "USER", "LOGNAME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("LANG", "C.UTF-8")
            .env("RUST_BACKTRACE", "1")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.home);
        command
    }

    /// Runs the agent with `args` and no input.
    pub fn run(&self, args: &[&str]) -> Finished {
        self.run_full(args, None, &[])
    }

    /// Runs the agent with `args`, the token on stdin (pass `--token-stdin` in `args`).
    pub fn run_with_token(&self, args: &[&str], token: &str) -> Finished {
        self.run_full(args, Some(token), &[])
    }

    /// Runs the agent with `args`, an optional token on stdin and extra environment.
    pub fn run_full(&self, args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> Finished {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let stdin = token.map(|t| format!("{t}\n").into_bytes());
        run_bounded(
            &mut command,
            stdin.as_deref(),
            HANG_LIMIT,
            &format!("devicetrust-agent {}", args.join(" ")),
        )
    }

    /// `status --json`, parsed.
    #[track_caller]
    pub fn status_json(&self) -> serde_json::Value {
        let finished = self.run(&["status", "--json"]);
        finished.expect_code(0);
        serde_json::from_str(&finished.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{finished}"))
    }

    /// The store's index (`identities.json`), or `None` when there is none.
    pub fn store_index(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.data_dir().join("identities.json")).ok()?;
        Some(serde_json::from_str(&text).expect("identities.json is JSON"))
    }

    /// The identity directories present in the store.
    pub fn identity_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("identities")) else { return Vec::new() };
        let mut dirs: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        dirs
    }

    /// The current identity, as the store's index names it.
    pub fn current_identity(&self) -> Option<StoredIdentity> {
        let index = self.store_index()?;
        let id = index["current"].as_str()?;
        Some(StoredIdentity::read(&self.data_dir().join("identities").join(id)))
    }

    /// Every file of the identity store (the index and the identity directories), path to
    /// bytes: a test compares two snapshots byte for byte. The agent's bookkeeping
    /// (`state.json`, `metadata.json`, the lock) is not part of the identity.
    pub fn identity_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let index = self.data_dir().join("identities.json");
        if let Ok(bytes) = std::fs::read(&index) {
            files.insert(index, bytes);
        }
        collect_files(&self.data_dir().join("identities"), &mut files);
        collect_files(&self.nss_dir(), &mut files);
        files
    }

    /// Every file under the home and the configuration, for secret scans.
    pub fn all_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        collect_files(self.dir.path(), &mut files);
        files
    }

    /// The nicknames of the certificates with a private key (user certificates) in the NSS
    /// database; empty when there is no database.
    pub fn nss_user_certificates(&self) -> Vec<String> {
        if !self.nss_dir().join("cert9.db").exists() {
            return Vec::new();
        }
        let finished = run_bounded(
            Command::new("certutil").arg("-L").arg("-d").arg(format!("sql:{}", self.nss_dir().display())),
            None,
            HANG_LIMIT,
            "certutil -L",
        );
        finished.expect_code(0);
        // Lines are "<nickname padded>  <trust>"; user certificates have trust "u,u,u".
        finished
            .stdout
            .lines()
            .filter_map(|line| line.trim_end().strip_suffix("u,u,u").map(|name| name.trim().to_owned()))
            .collect()
    }

    /// The DER of the NSS certificate `nickname` (`certutil -L -n NAME -r`).
    pub fn nss_certificate_der(&self, nickname: &str) -> Vec<u8> {
        let output = Command::new("certutil")
            .arg("-L")
            .arg("-d")
            .arg(format!("sql:{}", self.nss_dir().display()))
            .args(["-n", nickname, "-r"])
            .output()
            .expect("certutil runs");
        assert!(
            output.status.success(),
            "certutil -L -n {nickname}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}

fn collect_files(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.insert(path, bytes);
        }
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
