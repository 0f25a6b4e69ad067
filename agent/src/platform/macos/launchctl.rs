//! The LaunchAgent: written from [`super::launch_agent`], loaded with `launchctl bootstrap
//! gui/<uid> <plist>`, removed with `launchctl bootout gui/<uid>/com.devicetrust.agent`.
//!
//! When the agent itself runs as that job (launchd sets `XPC_SERVICE_NAME` to the label), a
//! bootout would kill it half-way through its work, so then the file is updated or removed
//! and launchd picks the change up at the next login.
//!
//! A bootout is followed by a wait until launchd has let the label go, and a bootstrap that
//! fails while it drains is retried, both bounded ([`super::launchd_wait`]). `status` also says
//! when the user switched the job off in Login Items ([`super::btm`]).

use std::path::{Path, PathBuf};

use super::btm::{self, LoginItem};
use super::launch_agent::{self, DailyTime, LABEL, LaunchAgentSpec};
use super::launchd_wait::{self, Attempt};
use crate::decision::Slot;
use crate::platform::{PlatformError, Removal, ScheduleSpec, Scheduler, SchedulerStatus};
use crate::util::exec;
use crate::util::files;

const LAUNCHCTL: &str = "/bin/launchctl";
const SFLTOOL: &str = "/usr/bin/sfltool";
/// `sfltool dumpbtm` reads a database; it has no business taking longer.
const SFLTOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The per-user LaunchAgent.
#[derive(Debug)]
pub(super) struct LaunchAgentScheduler {
    pub uid: u32,
    pub home: PathBuf,
}

impl LaunchAgentScheduler {
    fn plist(&self) -> PathBuf {
        launch_agent::plist_path(&self.home)
    }

    fn domain(&self) -> String {
        format!("gui/{}", self.uid)
    }

    fn service(&self) -> String {
        format!("gui/{}/{LABEL}", self.uid)
    }

    fn launchctl(args: &[&str]) -> Result<exec::Output, PlatformError> {
        exec::run(Path::new(LAUNCHCTL), args, None, exec::DEFAULT_TIMEOUT)
            .map_err(|e| PlatformError::backend("could not run launchctl", e))
    }

    /// Whether launchd has the job: `print` succeeds, or says it cannot find it (113). Any other
    /// failure is an error, so that a wait for the job to go cannot mistake it for gone.
    fn loaded(&self) -> Result<bool, PlatformError> {
        let out = Self::launchctl(&["print", &self.service()])?;
        match out.code() {
            0 => Ok(true),
            launchd_wait::NOT_FOUND => Ok(false),
            _ if out.stderr.contains("Could not find service") => Ok(false),
            _ => Err(PlatformError::command(format!("{LAUNCHCTL} print"), &out)),
        }
    }

    fn running_as_the_job() -> bool {
        std::env::var("XPC_SERVICE_NAME").is_ok_and(|name| name == LABEL)
    }

    /// Boots the job out and waits until launchd has let its label go; `Ok(false)` when it
    /// was not loaded.
    fn bootout(&self) -> Result<bool, PlatformError> {
        if !self.loaded()? {
            return Ok(false);
        }
        let out = Self::launchctl(&["bootout", &self.service()])?;
        // A bootout that fails because the job went away meanwhile did its work.
        if !out.success() && self.loaded()? && !launchd_wait::is_transient(out.code(), &out.stderr) {
            return Err(PlatformError::command(format!("{LAUNCHCTL} bootout"), &out));
        }
        let gone = launchd_wait::wait_until(
            launchd_wait::DRAIN_POLLS,
            launchd_wait::DRAIN_INTERVAL,
            &mut std::thread::sleep,
            || self.loaded().map(|loaded| !loaded),
        )?;
        if !gone {
            return Err(PlatformError::Command {
                program: format!("{LAUNCHCTL} bootout"),
                status: "the job is still loaded 10 seconds later".to_owned(),
                stderr: out.stderr_tail(),
            });
        }
        Ok(true)
    }

    /// Loads the plist, retrying while launchd still drains an earlier instance of the label.
    fn bootstrap(&self, plist: &Path) -> Result<(), PlatformError> {
        let plist_arg = plist.to_string_lossy().into_owned();
        launchd_wait::retry(
            launchd_wait::BOOTSTRAP_ATTEMPTS,
            launchd_wait::BOOTSTRAP_INTERVAL,
            &mut std::thread::sleep,
            || {
                let out = match Self::launchctl(&["bootstrap", &self.domain(), &plist_arg]) {
                    Ok(out) => out,
                    Err(e) => return Attempt::Fail(e),
                };
                if out.success() {
                    return Attempt::Done(());
                }
                let error = PlatformError::command(format!("{LAUNCHCTL} bootstrap"), &out);
                if !launchd_wait::is_transient(out.code(), &out.stderr) {
                    return Attempt::Fail(error);
                }
                // 37 can also mean another bootstrap of the label got there first.
                match self.loaded() {
                    Ok(true) => Attempt::Done(()),
                    Ok(false) => Attempt::Retry(error),
                    Err(e) => Attempt::Fail(e),
                }
            },
        )
    }

    /// Whether the user switched the job off in Login Items; `None` when that cannot be told
    /// (macOS before 13, or `sfltool` refused).
    fn login_item(&self) -> Option<LoginItem> {
        let out = exec::run(Path::new(SFLTOOL), &["dumpbtm"], None, SFLTOOL_TIMEOUT).ok()?;
        if !out.success() {
            tracing::debug!(stderr = %out.stderr_tail(), "sfltool dumpbtm failed");
            return None;
        }
        let url = format!("file://{}", self.plist().display());
        btm::login_item(&out.stdout, self.uid, LABEL, &url)
    }

    /// The plist `install` writes for `spec`.
    fn render(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<u8>, PlatformError> {
        launch_agent::render(&LaunchAgentSpec {
            program: spec.program,
            config: spec.config,
            home: &self.home,
            time: DailyTime::from_slot(spec.slot),
        })
        .map_err(|e| PlatformError::backend("could not make the launchagent", e))
    }
}

impl Scheduler for LaunchAgentScheduler {
    fn refresh(&self, slot: Slot) -> Result<Vec<String>, PlatformError> {
        let plist = self.plist();
        let Some(old) = files::read_optional(&plist)? else { return Ok(Vec::new()) };
        let Some((program, config)) = launch_agent::installed_command(&old) else {
            tracing::warn!(path = %plist.display(), "the launch agent does not run the agent as it writes it; leaving it");
            return Ok(Vec::new());
        };
        let spec = ScheduleSpec { program: &program, config: config.as_deref(), slot };
        if self.render(&spec)? == old {
            return Ok(Vec::new());
        }
        // Running as the job, `install` writes the file and launchd reads it at the next login.
        self.install(&spec)
    }

    fn install(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<String>, PlatformError> {
        let plist = self.plist();
        let bytes = self.render(spec)?;

        let mut changes = Vec::new();
        // launchd does not create the log directory, and refuses to start a job whose log
        // path it cannot open.
        let logs = launch_agent::log_dir(&self.home);
        files::ensure_private_dir(&logs)?;
        if let Some(dir) = plist.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PlatformError::io("could not create", dir, e))?;
        }
        let unchanged = files::read_optional(&plist)?.is_some_and(|old| old == bytes);
        if !unchanged {
            files::write_atomic(&plist, &bytes)?;
            changes.push(format!("wrote the launch agent {}", plist.display()));
        }
        if Self::running_as_the_job() {
            if !unchanged {
                changes.push("the launch agent takes the new settings at the next login".to_owned());
            }
            return Ok(changes);
        }
        let loaded = self.loaded()?;
        if loaded && unchanged {
            return Ok(changes);
        }
        if loaded {
            self.bootout()?;
        }
        self.bootstrap(&plist)?;
        changes.push(format!("loaded the launch agent into {}", self.domain()));
        Ok(changes)
    }

    fn uninstall(&self) -> Result<Removal, PlatformError> {
        let mut removed = Vec::new();
        let mut notes = Vec::new();
        if Self::running_as_the_job() {
            notes.push(format!(
                "running as the launch agent {LABEL}: it stays loaded until logout, without its file, and does not start again"
            ));
        } else if self.bootout()? {
            removed.push(format!("the launch agent {LABEL} from {}", self.domain()));
        }
        let plist = self.plist();
        if files::remove_file_if_exists(&plist)? {
            removed.push(plist.display().to_string());
        }
        let logs = launch_agent::log_dir(&self.home);
        if files::remove_dir_all_if_exists(&logs)? {
            removed.push(logs.display().to_string());
        }
        Ok(Removal { removed, notes })
    }

    fn status(&self) -> Result<SchedulerStatus, PlatformError> {
        let plist = self.plist();
        let installed = plist.exists();
        let loaded = installed && self.loaded()?;
        let mut detail = match (installed, loaded) {
            (true, true) => format!("{} (loaded in {})", plist.display(), self.domain()),
            (true, false) => format!("{} (not loaded; it loads at the next login)", plist.display()),
            (false, _) => format!("no launch agent at {}", plist.display()),
        };
        if installed && self.login_item() == Some(LoginItem::Disabled) {
            detail.push_str(
                "; switched off in System Settings > General > Login Items, so it runs neither at login nor daily: switch it on there, or deploy the profile from `devicetrust-agent profile login-items` with the MDM",
            );
        }
        Ok(SchedulerStatus { installed, detail })
    }
}
