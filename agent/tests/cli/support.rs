//! Shared helpers: a test home with a configuration, and the agent binary run inside it
//! (bounded, by `testkit`), against `testkit`'s fake CA over HTTPS, which issues real
//! certificates and keeps to the contract's rules the agent depends on.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use testkit::Finished;
pub(crate) use testkit::fake_ca::{FakeCa, ISSUER_CN, Mode, TOKEN};

/// A fixture file from `fixtures/tls`.
pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)
}

/// A home directory with a configuration file, for one test.
pub(crate) struct Home {
    pub(crate) temp: tempfile::TempDir,
    pub(crate) config: PathBuf,
    /// The `ca_bundle` the configuration names.
    pub(crate) bundle: PathBuf,
}

impl Home {
    /// A home whose configuration points at `ca_url`, trusting `fixtures/tls/ca.pem` (for a
    /// CA that never answers).
    pub(crate) fn new(ca_url: &str) -> Self {
        Self::with_bundle(ca_url, &fixture_path("ca.pem"))
    }

    /// A home whose configuration points at `ca_url`, trusting `ca_bundle`.
    pub(crate) fn with_bundle(ca_url: &str, ca_bundle: &Path) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        for dir in ["home", "data", "config", "run"] {
            std::fs::create_dir_all(temp.path().join(dir)).expect("dir");
        }
        std::fs::set_permissions(temp.path().join("run"), std::fs::Permissions::from_mode(0o700))
            .expect("run");
        let config = temp.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "ca_url = \"{ca_url}\"\nca_bundle = \"{}\"\ndevice_udid = \"UDID-CLI-1\"\n\
                 device_serial = \"SERIAL-CLI-1\"\nca_timeout_seconds = 20\n",
                ca_bundle.display()
            ),
        )
        .expect("config");
        Self { temp, config, bundle: ca_bundle.to_owned() }
    }

    /// A home for `ca`.
    pub(crate) fn for_ca(ca: &FakeCa) -> Self {
        Self::with_bundle(ca.url(), ca.bundle())
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.temp.path().join("data/devicetrust")
    }

    /// The agent with `args`, `--config` and a clean environment pointing into this home.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command_without_config(env!("CARGO_BIN_EXE_devicetrust-agent"), args);
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// `program` (an agent binary) with `args` and the clean environment of
    /// [`Home::command`], but no `--config`: the agent looks for its configuration itself.
    pub(crate) fn command_without_config(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.temp.path().join("home"))
            .env("XDG_DATA_HOME", self.temp.path().join("data"))
            .env("XDG_CONFIG_HOME", self.temp.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.temp.path().join("run"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the agent, feeding `stdin`, and kills it if it hangs ([`testkit::HANG_LIMIT`]).
    pub(crate) fn run_with(&self, mut cmd: Command, stdin: Option<&str>) -> Finished {
        testkit::run_bounded(&mut cmd, stdin.map(str::as_bytes), testkit::HANG_LIMIT, "devicetrust-agent")
    }

    /// Runs the agent with `args`.
    pub(crate) fn run(&self, args: &[&str]) -> Finished {
        self.run_with(self.command(args), None)
    }

    /// Enrolls with the token on standard input; asserts success.
    pub(crate) fn enroll(&self) -> Finished {
        let out = self.run_with(self.command(&["enroll", "--token-stdin"]), Some(&format!("{TOKEN}\n")));
        assert_eq!(code(&out), 0, "enroll: {}", text(&out));
        out
    }

    /// `status --json`, parsed.
    pub(crate) fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert_eq!(code(&out), 0, "status: {}", text(&out));
        serde_json::from_str(&out.stdout).expect("status json")
    }

    /// The current certificate's serial, from `status --json`.
    pub(crate) fn serial(&self) -> Option<String> {
        self.status()["certificate"]["serialNumber"].as_str().map(str::to_owned)
    }

    /// Every file under `dir` with its mode.
    pub(crate) fn tree(dir: &Path) -> Vec<(PathBuf, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries {
                let e = e.expect("entry");
                let meta = e.metadata().expect("metadata");
                if meta.is_dir() {
                    stack.push(e.path());
                }
                out.push((e.path(), meta.permissions().mode() & 0o777));
            }
        }
        out
    }

    /// Identity directories in the store.
    pub(crate) fn identity_dirs(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("identities")).map(|d| d.count()).unwrap_or(0)
    }
}

/// The exit code (panics on a signal).
pub(crate) fn code(out: &Finished) -> i32 {
    out.code().unwrap_or_else(|| panic!("no exit code: {out}"))
}

/// The command, how it ended, its standard output and error, for assertion messages.
pub(crate) fn text(out: &Finished) -> String {
    out.to_string()
}

/// Fails the test, saying what to do, unless it runs as root: the tests of what the agent
/// does as root never skip silently (the convention of `tests::harness::require_root`).
pub(crate) fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root: {why}. Run it as root (in CI the container is root), \
         e.g. `sudo -E cargo test -p agent --test cli root::`"
    );
}

/// A uid that is not root's, for files "a user" owns.
pub(crate) const NOBODY: u32 = 65534;

/// Hands `path` to [`NOBODY`] (owner and group), as if a user had made it.
pub(crate) fn give_to_nobody(path: &Path) {
    let id = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(NOBODY)))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub(crate) fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// The browsers' managed policy files that `install --system` writes, as they were when this
/// guard was made. [`PolicyFiles::assert_unchanged`] fails a test whose agent wrote them;
/// `Drop` puts back what was there (and removes directories the agent created), whatever
/// happened. It holds the lock the end-to-end tests hold while they install the policy
/// (`tests/src/harness/browser.rs`), so that their writes and these checks never overlap.
pub(crate) struct PolicyFiles {
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
    created_dirs: Vec<PathBuf>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The managed policy directories of Chromium and Chrome on Linux, and the agent's file there.
const MANAGED_DIRS: [&str; 2] = ["/etc/chromium/policies/managed", "/etc/opt/chrome/policies/managed"];
const POLICY_FILE: &str = "zz-devicetrust.json";
const POLICY_LOCK: &str = "/run/lock/devicetrust-e2e-browser-policy.lock";

impl PolicyFiles {
    pub(crate) fn guard() -> Self {
        std::fs::create_dir_all("/run/lock").expect("/run/lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(POLICY_LOCK)
            .unwrap_or_else(|e| panic!("cannot open {POLICY_LOCK}: {e}"));
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {POLICY_LOCK}: {e}"));
        let mut saved = Vec::new();
        let mut created_dirs = Vec::new();
        for dir in MANAGED_DIRS {
            let file = Path::new(dir).join(POLICY_FILE);
            saved.push((file.clone(), std::fs::read(&file).ok()));
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

    /// Fails with `what` when a policy file or directory differs from what was there.
    #[track_caller]
    pub(crate) fn assert_unchanged(&self, what: &str) {
        for (file, before) in &self.saved {
            let now = std::fs::read(file).ok();
            assert!(
                now == *before,
                "{what}: {} was written: {}",
                file.display(),
                String::from_utf8_lossy(now.as_deref().unwrap_or_default())
            );
        }
        for dir in &self.created_dirs {
            assert!(!dir.exists(), "{what}: {} was created", dir.display());
        }
    }
}

impl Drop for PolicyFiles {
    fn drop(&mut self) {
        for (file, before) in &self.saved {
            let _ = match before {
                Some(bytes) => std::fs::write(file, bytes),
                None => std::fs::remove_file(file)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }),
            };
        }
        for dir in &self.created_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
