//! Headless Chromium presenting the agent's certificate, and the system-wide managed
//! policy that tells it to.
//!
//! Chromium picks a client certificate without asking only when its managed policy
//! `AutoSelectCertificateForUrls` matches the site; it reads that policy from every file in
//! `/etc/chromium/policies/managed/` (root-owned, system-wide) and the certificates from
//! `$HOME/.pki/nssdb`. When no certificate matches it waits, silently and for ever, for a
//! person to choose one: every run here is bounded and killed, and callers check the page
//! body, never the exit code. See `tests/README.md` for what was learnt about the flags.
//!
//! [`SystemPolicy`] lets `devicetrust-agent install --system` write the real policy files
//! (the agent has no way to write them elsewhere) and puts back, when dropped, exactly what
//! was there before: the previous file contents, or no file and no directory. An exclusive
//! lock on a file in `/run/lock` keeps two tests, even in two processes, from changing
//! those files at the same time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

use super::agent::AgentHome;
use testkit::{Finished, HANG_LIMIT, run_bounded};

/// The policy file the agent writes in each managed directory.
pub const AGENT_POLICY_FILE: &str = "zz-devicetrust.json";

/// The managed policy directories of Chromium and Chrome on Linux.
pub const MANAGED_DIRS: [&str; 2] = ["/etc/chromium/policies/managed", "/etc/opt/chrome/policies/managed"];

/// How long Chromium may take to load one page before it counts as hung (typically: it is
/// waiting for someone to pick a certificate, because none matched the policy).
pub const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

const LOCK_FILE: &str = "/run/lock/devicetrust-e2e-browser-policy.lock";

/// The browsers' managed policy as the agent writes it, restored to its previous state on drop.
#[derive(Debug)]
pub struct SystemPolicy {
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
    created_dirs: Vec<PathBuf>,
    _lock: Flock<File>,
}

impl SystemPolicy {
    /// Takes the lock and records the current state of both managed directories; call
    /// [`Self::install`] next.
    pub fn guard() -> Self {
        std::fs::create_dir_all("/run/lock").expect("/run/lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {LOCK_FILE}: {e}"));
        let mut saved = Vec::new();
        let mut created_dirs = Vec::new();
        for dir in MANAGED_DIRS {
            let file = Path::new(dir).join(AGENT_POLICY_FILE);
            saved.push((file.clone(), std::fs::read(&file).ok()));
            // Every missing directory up to /etc, deepest first, to remove afterwards.
            for ancestor in Path::new(dir).ancestors().take_while(|a| *a != Path::new("/etc")) {
                if !ancestor.exists() {
                    created_dirs.push(ancestor.to_path_buf());
                }
            }
        }
        created_dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        created_dirs.dedup();
        Self { saved, created_dirs, _lock: lock }
    }

    /// Runs `devicetrust-agent install --system` for `agent` (the real system paths).
    pub fn install(&self, agent: &AgentHome) -> Finished {
        agent.run(&["install", "--system"])
    }

    /// The agent's policy file for Chromium.
    pub fn chromium_file(&self) -> PathBuf {
        Path::new(MANAGED_DIRS[0]).join(AGENT_POLICY_FILE)
    }
}

impl Drop for SystemPolicy {
    fn drop(&mut self) {
        for (file, before) in &self.saved {
            let _ = match before {
                Some(bytes) => std::fs::write(file, bytes),
                None => std::fs::remove_file(file)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }),
            };
        }
        for dir in &self.created_dirs {
            // Only when empty: anything else in it is not ours to delete.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Adds `pem_file` to the NSS database at `nss_dir` as a trusted root for TLS servers
/// (`certutil -A -t "C,,"`), so that Chromium trusts the CA's TLS certificate as a real
/// deployment's public one would be. The database must exist.
pub fn trust_tls_root(nss_dir: &Path, pem_file: &Path, nickname: &str) {
    let finished = run_bounded(
        Command::new("certutil")
            .arg("-A")
            .arg("-d")
            .arg(format!("sql:{}", nss_dir.display()))
            .args(["-n", nickname, "-t", "C,,", "-i"])
            .arg(pem_file),
        None,
        HANG_LIMIT,
        "certutil -A",
    );
    finished.expect_code(0);
}

/// One page load by headless Chromium.
#[derive(Debug)]
pub struct PageLoad {
    /// The run: `status` is `None` when Chromium hung and was killed.
    pub finished: Finished,
}

impl PageLoad {
    /// The serialized DOM Chromium printed (empty when it hung or failed).
    pub fn dom(&self) -> &str {
        &self.finished.stdout
    }

    /// Whether Chromium hung (the classic sign that no certificate matched the policy).
    pub fn hung(&self) -> bool {
        self.finished.status.is_none()
    }
}

/// Loads `url` in headless Chromium with `HOME` set to `home` (so it reads
/// `home/.pki/nssdb`), a fresh profile, and prints the DOM (`--dump-dom`).
pub fn chromium_dump_dom(home: &Path, url: &str) -> PageLoad {
    let profile: TempDir =
        tempfile::Builder::new().prefix("devicetrust-chromium-").tempdir().expect("a chromium profile");
    let mut command = Command::new("chromium");
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", profile.path().join("config"))
        .env("XDG_CACHE_HOME", profile.path().join("cache"))
        .env("XDG_RUNTIME_DIR", profile.path().join("run"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .args(["--dump-dom", url]);
    let finished = run_bounded(&mut command, None, CHROMIUM_LIMIT, &format!("chromium --dump-dom {url}"));
    PageLoad { finished }
}
