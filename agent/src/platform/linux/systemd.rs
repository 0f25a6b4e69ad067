//! The per-user schedule on Linux: systemd user units that run `devicetrust-agent run` at
//! login and once a day, the equivalent of the macOS LaunchAgent.
//!
//! The units live in `$XDG_CONFIG_HOME/systemd/user/` (default `~/.config/systemd/user/`).
//! `systemctl --user` is reached through the [`Systemctl`] trait so that tests never touch a
//! real user manager. When no user manager is reachable (an ssh session without lingering, a
//! container, root without a session), installation still writes the units and the
//! enablement links `systemctl enable` would make, so they start at the next login.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::decision::Slot;
use crate::util::exec::{self, ExecError};

/// The service unit's file name.
pub(super) const SERVICE: &str = "devicetrust-agent.service";
/// The timer unit's file name.
pub(super) const TIMER: &str = "devicetrust-agent.timer";

// Where `WantedBy=` links go, as `systemctl enable` would create them.
const SERVICE_WANTS: &str = "default.target.wants";
const TIMER_WANTS: &str = "timers.target.wants";

/// What went wrong with the user units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SystemdError {
    /// The agent's path is not absolute, which `ExecStart=` requires.
    #[error("the agent binary path {path} is not absolute")]
    RelativeBinary {
        /// The path as given.
        path: PathBuf,
    },
    /// Neither `$XDG_CONFIG_HOME` nor `$HOME` gives a unit directory.
    #[error("neither XDG_CONFIG_HOME nor HOME is set; cannot find the systemd user unit directory")]
    NoConfigDir,
    /// A file operation failed.
    #[error("{action} {path}: {reason}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The user manager was reachable but refused a request.
    #[error("systemctl --user {command} failed: {diagnostics}")]
    Systemctl {
        /// The arguments after `--user`.
        command: String,
        /// What systemctl printed.
        diagnostics: String,
    },
}

/// Why a `systemctl --user` call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum SystemctlFailure {
    /// systemctl is missing, or there is no user manager to talk to.
    Unreachable(String),
    /// The manager answered with an error.
    Failed(String),
}

/// `systemctl --user`, injectable so tests never reach the real user manager.
pub(crate) trait Systemctl: Send + Sync + std::fmt::Debug {
    /// Runs `systemctl --user ARGS...`.
    fn user(&self, args: &[&str]) -> Result<(), SystemctlFailure>;
}

/// The real `systemctl` binary.
#[derive(Debug, Clone)]
pub(super) struct SystemctlCommand {
    /// The program to run (`systemctl` on `PATH` by default).
    pub program: PathBuf,
    /// Deadline for each call; a hung D-Bus must not hang the installer.
    pub timeout: Duration,
}

impl Default for SystemctlCommand {
    fn default() -> Self {
        Self { program: "systemctl".into(), timeout: Duration::from_secs(30) }
    }
}

impl Systemctl for SystemctlCommand {
    fn user(&self, args: &[&str]) -> Result<(), SystemctlFailure> {
        let mut full = vec!["--user"];
        full.extend_from_slice(args);
        match exec::run(&self.program, &full, None, self.timeout) {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => {
                let text = out.diagnostics();
                // systemctl's wording when it has no user bus or manager to connect to.
                let needles = [
                    "Failed to connect to bus",
                    "Failed to connect to user scope bus",
                    "No medium found",
                    "$DBUS_SESSION_BUS_ADDRESS",
                    "XDG_RUNTIME_DIR",
                    "System has not been booted with systemd",
                ];
                // The line that says why, not what systemctl did before it failed (its
                // "Removed ..." lines).
                let why = text.lines().find(|line| needles.iter().any(|needle| line.contains(needle)));
                Err(if let Some(why) = why {
                    SystemctlFailure::Unreachable(why.trim().to_owned())
                } else {
                    SystemctlFailure::Failed(text)
                })
            }
            Err(e @ (ExecError::NotFound { .. } | ExecError::TimedOut { .. })) => {
                Err(SystemctlFailure::Unreachable(e.to_string()))
            }
            Err(e) => Err(SystemctlFailure::Failed(e.to_string())),
        }
    }
}

/// The service unit: one `run` of the agent, no secrets (the agent reads its own store).
///
/// `WantedBy=default.target` makes the user manager start it when it starts, i.e. at login.
/// That login run is not the timer's: it checks the certificate with the CA (how a revocation
/// reaches the device); a due renewal waits for the device's slot (the decision core's
/// `schedule`) unless the login falls in it or the grace after the due time is over.
/// Nothing orders `default.target` after this unit, so login never waits for the CA.
pub(super) fn service_unit(binary: &Path, config: Option<&Path>) -> Result<String, SystemdError> {
    if !binary.is_absolute() {
        return Err(SystemdError::RelativeBinary { path: binary.to_owned() });
    }
    let mut exec_start = quote(&binary.to_string_lossy());
    exec_start.push_str(" run");
    if let Some(config) = config {
        exec_start.push_str(" --config ");
        exec_start.push_str(&quote(&config.to_string_lossy()));
    }
    Ok(format!(
        "# Written by devicetrust-agent install; removed by devicetrust-agent uninstall.\n\
         [Unit]\n\
         Description=DeviceTrust agent: keep this device's client certificate enrolled and renewed\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exec_start}\n\
         Nice=10\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    ))
}

/// The timer unit: daily at the device's slot, local time, catching up after the machine was
/// off or asleep (`Persistent=`; a run that fires late outside the slot renews nothing that
/// can wait). No `RandomizedDelaySec=`: the slot already spreads a fleet over the working
/// day, and a random delay would push runs out of it, to midnight for the old `daily`.
pub(super) fn timer_unit(slot: Slot) -> String {
    let (hour, minute) = slot.hour_minute();
    format!(
        "# Written by devicetrust-agent install; removed by devicetrust-agent uninstall.\n\
         [Unit]\n\
         Description=Daily DeviceTrust agent run\n\
         \n\
         [Timer]\n\
         OnCalendar=*-*-* {hour:02}:{minute:02}:00\n\
         Persistent=true\n\
         Unit={SERVICE}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

// systemd splits ExecStart= on spaces, expands `%` specifiers and `$` variables, and honours
// C-style escapes inside double quotes.
fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How far an install got with the user manager.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Activation {
    /// `daemon-reload` and `enable --now` succeeded: the timer runs from now on.
    Enabled,
    /// No user manager was reachable: the units and enablement links are written and take
    /// effect at the next login.
    AtNextLogin {
        /// Why the manager could not be reached.
        reason: String,
    },
}

/// What [`UserUnits::install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstallReport {
    /// Unit files written (or rewritten).
    pub written: Vec<PathBuf>,
    /// Whether the user manager took them.
    pub activation: Activation,
}

/// What [`UserUnits::uninstall`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UninstallReport {
    /// Unit files and links removed; empty when there was nothing to remove.
    pub removed: Vec<PathBuf>,
    /// Set when the user manager could not be told; the files are gone all the same.
    pub manager_unreachable: Option<String>,
}

/// The agent's user units in one unit directory, and the manager that loads them.
#[derive(Debug)]
pub(crate) struct UserUnits {
    dir: PathBuf,
    systemctl: Box<dyn Systemctl>,
}

impl UserUnits {
    /// Units in `dir`, managed through `systemctl`.
    pub(crate) fn new(dir: PathBuf, systemctl: Box<dyn Systemctl>) -> Self {
        Self { dir, systemctl }
    }

    /// Units in the current user's directory, managed through the real `systemctl`.
    pub(crate) fn from_env() -> Result<Self, SystemdError> {
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let dir = unit_dir(xdg.as_deref(), home.as_deref()).ok_or(SystemdError::NoConfigDir)?;
        Ok(Self::new(dir, Box::new(SystemctlCommand::default())))
    }

    /// The unit directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether both unit files are in place (what `status` reports).
    pub(crate) fn installed(&self) -> bool {
        self.dir.join(SERVICE).is_file() && self.dir.join(TIMER).is_file()
    }

    /// Writes both units for `binary` (absolute), then reloads the user manager and enables
    /// the timer now and the service for the next login. Re-running rewrites the same files.
    pub(crate) fn install(
        &self,
        binary: &Path,
        config: Option<&Path>,
        slot: Slot,
    ) -> Result<InstallReport, SystemdError> {
        let service = service_unit(binary, config)?;
        let timer = timer_unit(slot);
        create_dir(&self.dir)?;
        let written = vec![self.write(SERVICE, &service)?, self.write(TIMER, &timer)?];

        let activation = match self.systemctl.user(&["daemon-reload"]) {
            Ok(()) => {
                self.run_manager(&["enable", "--now", TIMER])?;
                // Enabled, not started: it runs at the next login. Starting it here would run
                // the agent inside the installer, whose exit code means something else.
                self.run_manager(&["enable", SERVICE])?;
                Activation::Enabled
            }
            Err(SystemctlFailure::Unreachable(reason)) => {
                self.link(SERVICE_WANTS, SERVICE)?;
                self.link(TIMER_WANTS, TIMER)?;
                Activation::AtNextLogin { reason }
            }
            Err(SystemctlFailure::Failed(diagnostics)) => {
                return Err(SystemdError::Systemctl { command: "daemon-reload".into(), diagnostics });
            }
        };
        Ok(InstallReport { written, activation })
    }

    /// Rewrites the timer when it is installed with another content than `slot`'s (a timer
    /// written by an earlier version: `OnCalendar=daily`, or another minute), then reloads the
    /// user manager, which recomputes the next elapse. Returns the path written; nothing when
    /// no timer is installed (that is `install`'s job) or it is already right. A user manager
    /// that cannot be reached reads the file at its next start.
    pub(crate) fn refresh_timer(&self, slot: Slot) -> Result<Option<PathBuf>, SystemdError> {
        let path = self.dir.join(TIMER);
        let want = timer_unit(slot);
        match fs::read_to_string(&path) {
            Ok(have) if have == want => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path, e)),
        }
        let written = self.write(TIMER, &want)?;
        match self.systemctl.user(&["daemon-reload"]) {
            Ok(()) | Err(SystemctlFailure::Unreachable(_)) => Ok(Some(written)),
            Err(SystemctlFailure::Failed(diagnostics)) => {
                Err(SystemdError::Systemctl { command: "daemon-reload".into(), diagnostics })
            }
        }
    }

    /// Disables and removes the units and their links; a second run removes nothing and
    /// succeeds.
    pub(crate) fn uninstall(&self) -> Result<UninstallReport, SystemdError> {
        let mut manager_unreachable = None;
        let present = [SERVICE, TIMER].iter().any(|u| self.dir.join(u).exists());
        if present {
            match self.systemctl.user(&["disable", "--now", TIMER, SERVICE]) {
                Ok(()) => {}
                Err(SystemctlFailure::Unreachable(reason)) => manager_unreachable = Some(reason),
                Err(SystemctlFailure::Failed(diagnostics)) => {
                    return Err(SystemdError::Systemctl {
                        command: format!("disable --now {TIMER} {SERVICE}"),
                        diagnostics,
                    });
                }
            }
        }
        let mut removed = Vec::new();
        // Links first: disable already removed them when the manager was there, and a dangling
        // link left behind would make the manager log an error at every login.
        for path in [
            self.dir.join(SERVICE_WANTS).join(SERVICE),
            self.dir.join(TIMER_WANTS).join(TIMER),
            self.dir.join(SERVICE),
            self.dir.join(TIMER),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path, e)),
            }
        }
        if !removed.is_empty() && manager_unreachable.is_none() {
            // The manager still has the removed units loaded until told; failing here changes
            // nothing on disk, so it is reported but not an error.
            if let Err(SystemctlFailure::Unreachable(r) | SystemctlFailure::Failed(r)) =
                self.systemctl.user(&["daemon-reload"])
            {
                manager_unreachable = Some(r);
            }
        }
        Ok(UninstallReport { removed, manager_unreachable })
    }

    fn run_manager(&self, args: &[&str]) -> Result<(), SystemdError> {
        self.systemctl.user(args).map_err(|f| SystemdError::Systemctl {
            command: args.join(" "),
            diagnostics: match f {
                SystemctlFailure::Unreachable(d) | SystemctlFailure::Failed(d) => d,
            },
        })
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, SystemdError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let result = (|| {
            let mut file =
                OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::set_permissions(&tmp, Permissions::from_mode(0o644))?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &path, e));
        }
        Ok(path)
    }

    fn link(&self, wants: &str, unit: &str) -> Result<(), SystemdError> {
        let dir = self.dir.join(wants);
        create_dir(&dir)?;
        let link = dir.join(unit);
        let target = self.dir.join(unit);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(());
        }
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("replace", &link, e)),
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|e| io_err("link", &link, e))
    }
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `$HOME/.config/systemd/user`; an empty or relative
/// `XDG_CONFIG_HOME` is ignored, as the XDG specification says.
pub(super) fn unit_dir(xdg_config_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let base = match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(xdg) => xdg.to_owned(),
        None => home.filter(|h| !h.as_os_str().is_empty())?.join(".config"),
    };
    Some(base.join("systemd").join("user"))
}

fn create_dir(dir: &Path) -> Result<(), SystemdError> {
    DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(|e| io_err("create", dir, e))
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> SystemdError {
    SystemdError::Io { action, path: path.to_owned(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records calls and answers each with a fixed outcome.
    #[derive(Debug, Clone)]
    struct FakeSystemctl {
        calls: Arc<Mutex<Vec<String>>>,
        answer: Result<(), SystemctlFailure>,
    }

    impl FakeSystemctl {
        fn new(answer: Result<(), SystemctlFailure>) -> Self {
            Self { calls: Arc::default(), answer }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Systemctl for FakeSystemctl {
        fn user(&self, args: &[&str]) -> Result<(), SystemctlFailure> {
            self.calls.lock().unwrap().push(args.join(" "));
            self.answer.clone()
        }
    }

    fn keys(unit: &str) -> Vec<(String, String, String)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((k, v)) = line.split_once('=') {
                out.push((section.clone(), k.to_owned(), v.to_owned()));
            }
        }
        out
    }

    fn has(unit: &str, section: &str, key: &str, value: &str) -> bool {
        keys(unit).contains(&(section.into(), key.into(), value.into()))
    }

    #[test]
    fn service_unit_table() {
        let cases: &[(&str, &str, Option<&str>, Result<&str, ()>)] = &[
            ("ok/plain", "/usr/bin/devicetrust-agent", None, Ok(r#""/usr/bin/devicetrust-agent" run"#)),
            (
                "ok/config",
                "/opt/dt/devicetrust-agent",
                Some("/etc/devicetrust/agent.toml"),
                Ok(r#""/opt/dt/devicetrust-agent" run --config "/etc/devicetrust/agent.toml""#),
            ),
            ("ok/escaped", "/home/a b/100%/$x\"/agent", None, Ok(r#""/home/a b/100%%/$$x\"/agent" run"#)),
            ("fail/relative", "target/debug/devicetrust-agent", None, Err(())),
        ];
        for (name, binary, config, want) in cases {
            let got = service_unit(Path::new(binary), config.map(Path::new));
            match want {
                Ok(exec_start) => {
                    let unit = got.unwrap();
                    assert!(has(&unit, "Service", "ExecStart", exec_start), "{name}: {unit}");
                    assert!(has(&unit, "Service", "Type", "oneshot"), "{name}");
                    assert!(has(&unit, "Install", "WantedBy", "default.target"), "{name}");
                }
                Err(()) => assert!(matches!(got, Err(SystemdError::RelativeBinary { .. })), "{name}"),
            }
        }
    }

    #[test]
    fn timer_unit_keys() {
        let unit = timer_unit(Slot::new(2, 107).unwrap());
        assert!(!unit.contains("RandomizedDelaySec"), "{unit}");
        for (section, key, value) in [
            ("Timer", "OnCalendar", "*-*-* 10:47:00"),
            ("Timer", "Persistent", "true"),
            ("Timer", "Unit", SERVICE),
            ("Install", "WantedBy", "timers.target"),
        ] {
            assert!(has(&unit, section, key, value), "{section}.{key}={value} in\n{unit}");
        }
    }

    #[test]
    fn ok_units_pass_systemd_analyze_verify() {
        // Required, never skipped: scripts/test.sh installs it (Debian `systemd`).
        let analyze = which("systemd-analyze")
            .expect("systemd-analyze is missing: run scripts/test.sh, which installs it (Debian `systemd`)");
        let tmp = tempfile::tempdir().unwrap();
        // verify checks that ExecStart's program exists, so point it at a real one; the
        // config path exercises the quoting of spaces and `%`.
        let binary = std::env::current_exe().unwrap();
        let config = tmp.path().join("a b%.toml");
        fs::write(tmp.path().join(SERVICE), service_unit(&binary, Some(&config)).unwrap()).unwrap();
        fs::write(tmp.path().join(TIMER), timer_unit(Slot::for_device("E2E-DEVICE"))).unwrap();
        let out = exec::run(
            &analyze,
            &[
                "verify".as_ref(),
                "--man=no".as_ref(),
                tmp.path().join(SERVICE).as_os_str(),
                tmp.path().join(TIMER).as_os_str(),
            ],
            None,
            exec::DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert!(out.success(), "{}", out.diagnostics());
        assert!(
            !out.diagnostics().contains("devicetrust-agent"),
            "no complaint about our units: {}",
            out.diagnostics()
        );
    }

    fn which(program: &str) -> Result<PathBuf, ()> {
        let path = std::env::var_os("PATH").ok_or(())?;
        std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()).ok_or(())
    }

    #[test]
    fn unit_dir_table() {
        let cases: &[(&str, Option<&str>, Option<&str>, Option<&str>)] = &[
            ("ok/xdg", Some("/x/cfg"), Some("/home/a"), Some("/x/cfg/systemd/user")),
            ("ok/home", None, Some("/home/a"), Some("/home/a/.config/systemd/user")),
            ("ok/relative-xdg-ignored", Some("cfg"), Some("/home/a"), Some("/home/a/.config/systemd/user")),
            ("fail/nothing", None, None, None),
            ("fail/empty-home", Some(""), Some(""), None),
        ];
        for (name, xdg, home, want) in cases {
            assert_eq!(unit_dir(xdg.map(Path::new), home.map(Path::new)), want.map(PathBuf::from), "{name}");
        }
    }

    fn units(fake: &FakeSystemctl) -> (tempfile::TempDir, UserUnits) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = unit_dir(Some(tmp.path()), None).unwrap();
        (tmp, UserUnits::new(dir, Box::new(fake.clone())))
    }

    #[test]
    fn refresh_brings_an_older_timer_to_the_slot() {
        let fake = FakeSystemctl::new(Ok(()));
        let (_tmp, units) = units(&fake);
        let slot = Slot::new(2, 107).unwrap();
        assert_eq!(units.refresh_timer(slot).unwrap(), None, "ok/nothing-installed-nothing-written");
        assert!(fake.calls().is_empty());

        units.install(Path::new("/usr/bin/devicetrust-agent"), None, slot).unwrap();
        let service = fs::read_to_string(units.dir().join(SERVICE)).unwrap();
        let calls = fake.calls().len();
        assert_eq!(units.refresh_timer(slot).unwrap(), None, "ok/already-at-the-slot");
        assert_eq!(fake.calls().len(), calls, "no reload when nothing changed");

        // The timer an earlier version wrote: at midnight, with a random delay.
        let old = timer_unit(slot)
            .replace("OnCalendar=*-*-* 10:47:00\n", "OnCalendar=daily\nRandomizedDelaySec=1h\n");
        fs::write(units.dir().join(TIMER), old).unwrap();
        assert_eq!(
            units.refresh_timer(slot).unwrap(),
            Some(units.dir().join(TIMER)),
            "ok/old-timer-rewritten"
        );
        assert_eq!(fs::read_to_string(units.dir().join(TIMER)).unwrap(), timer_unit(slot));
        assert_eq!(fake.calls().last().map(String::as_str), Some("daemon-reload"));
        assert_eq!(
            fs::read_to_string(units.dir().join(SERVICE)).unwrap(),
            service,
            "the service is left as it is"
        );
    }

    #[test]
    fn ok_install_and_uninstall_with_manager() {
        let fake = FakeSystemctl::new(Ok(()));
        let (_tmp, units) = units(&fake);
        let report = units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap();
        assert_eq!(report.activation, Activation::Enabled);
        assert_eq!(report.written, [units.dir().join(SERVICE), units.dir().join(TIMER)]);
        assert!(units.installed());
        let mode = fs::metadata(units.dir().join(SERVICE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            fake.calls(),
            ["daemon-reload", "enable --now devicetrust-agent.timer", "enable devicetrust-agent.service"]
        );
        assert!(
            fs::read_dir(units.dir()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
        );

        // Reinstalling rewrites the same files.
        units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap();

        let report = units.uninstall().unwrap();
        assert_eq!(report.removed, [units.dir().join(SERVICE), units.dir().join(TIMER)]);
        assert_eq!(report.manager_unreachable, None);
        assert!(!units.installed());
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("disable --now")).count(), 1);

        let calls_before = fake.calls().len();
        let again = units.uninstall().unwrap();
        assert!(again.removed.is_empty(), "second uninstall removes nothing");
        assert_eq!(fake.calls().len(), calls_before, "and does not bother the manager");
    }

    #[test]
    fn ok_install_without_manager_links_for_next_login() {
        let fake = FakeSystemctl::new(Err(SystemctlFailure::Unreachable("Failed to connect to bus".into())));
        let (_tmp, units) = units(&fake);
        let report = units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap();
        assert!(matches!(report.activation, Activation::AtNextLogin { .. }), "{report:?}");
        assert_eq!(fake.calls(), ["daemon-reload"]);
        let timer_link = units.dir().join(TIMER_WANTS).join(TIMER);
        let service_link = units.dir().join(SERVICE_WANTS).join(SERVICE);
        assert_eq!(fs::read_link(&timer_link).unwrap(), units.dir().join(TIMER));
        assert_eq!(fs::read_link(&service_link).unwrap(), units.dir().join(SERVICE));
        units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap();

        let report = units.uninstall().unwrap();
        assert_eq!(report.removed.len(), 4, "{report:?}");
        assert!(report.manager_unreachable.is_some());
        assert!(fs::symlink_metadata(&timer_link).is_err() && fs::symlink_metadata(&service_link).is_err());
        assert!(units.uninstall().unwrap().removed.is_empty());
    }

    #[test]
    fn fail_manager_refuses() {
        let fake = FakeSystemctl::new(Err(SystemctlFailure::Failed("Access denied".into())));
        let (_tmp, units) = units(&fake);
        let err = units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap_err();
        assert!(matches!(err, SystemdError::Systemctl { .. }), "{err:?}");
        assert!(matches!(
            units.install(Path::new("devicetrust-agent"), None, Slot::FIRST),
            Err(SystemdError::RelativeBinary { .. })
        ));
    }

    #[test]
    fn ok_real_systemctl_absent_is_unreachable() {
        let tmp = tempfile::tempdir().unwrap();
        let systemctl = SystemctlCommand { program: tmp.path().join("no-systemctl"), ..Default::default() };
        assert!(matches!(systemctl.user(&["daemon-reload"]), Err(SystemctlFailure::Unreachable(_))));
        let units = UserUnits::new(tmp.path().join("units"), Box::new(systemctl));
        let report = units.install(Path::new("/usr/bin/devicetrust-agent"), None, Slot::FIRST).unwrap();
        assert!(matches!(report.activation, Activation::AtNextLogin { .. }));
    }

    #[test]
    fn ok_real_systemctl_unreachable_bus() {
        // A stand-in that answers the way systemctl does without a user bus.
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("systemctl");
        // `disable` reports the links it removed before it fails to reach the manager.
        fs::write(
            &fake,
            "#!/bin/sh\necho 'Removed \"/x/timers.target.wants/devicetrust-agent.timer\".' >&2\n\
             echo 'Failed to connect to bus: No medium found' >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&fake, Permissions::from_mode(0o755)).unwrap();
        let systemctl = SystemctlCommand { program: fake, ..Default::default() };
        match systemctl.user(&["disable", "--now"]) {
            Err(SystemctlFailure::Unreachable(why)) => {
                assert_eq!(why, "Failed to connect to bus: No medium found", "only the line that says why");
            }
            other => panic!("{other:?}"),
        }
    }
}
