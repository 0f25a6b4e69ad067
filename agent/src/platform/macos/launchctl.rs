//! The LaunchAgent: written from [`super::launch_agent`], loaded with `launchctl bootstrap
//! gui/<uid> <plist>`, removed with `launchctl bootout gui/<uid>/com.devicetrust.agent`.
//!
//! When the agent itself runs as that job (launchd sets `XPC_SERVICE_NAME` to the label), a
//! bootout would kill it half-way through its work, so then the file is updated or removed
//! and launchd picks the change up at the next login.

use std::path::{Path, PathBuf};

use super::launch_agent::{self, DailyTime, LABEL, LaunchAgentSpec};
use crate::platform::{PlatformError, ScheduleSpec, Scheduler, SchedulerStatus};
use crate::util::exec;
use crate::util::files;

const LAUNCHCTL: &str = "/bin/launchctl";

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

    fn loaded(&self) -> Result<bool, PlatformError> {
        Ok(Self::launchctl(&["print", &self.service()])?.success())
    }

    fn running_as_the_job() -> bool {
        std::env::var("XPC_SERVICE_NAME").is_ok_and(|name| name == LABEL)
    }

    fn bootout(&self) -> Result<bool, PlatformError> {
        if !self.loaded()? {
            return Ok(false);
        }
        let out = Self::launchctl(&["bootout", &self.service()])?;
        if !out.success() {
            return Err(PlatformError::Command {
                program: format!("{LAUNCHCTL} bootout"),
                status: out.status_text(),
                stderr: out.stderr_tail(),
            });
        }
        Ok(true)
    }
}

impl Scheduler for LaunchAgentScheduler {
    fn install(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<String>, PlatformError> {
        let plist = self.plist();
        let bytes = launch_agent::render(&LaunchAgentSpec {
            program: spec.program,
            config: spec.config,
            home: &self.home,
            time: DailyTime::from_offset(spec.device_offset),
        })
        .map_err(|e| PlatformError::backend("could not make the launchagent", e))?;

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
        let plist_arg = plist.to_string_lossy().into_owned();
        let out = Self::launchctl(&["bootstrap", &self.domain(), &plist_arg])?;
        if !out.success() {
            return Err(PlatformError::Command {
                program: format!("{LAUNCHCTL} bootstrap"),
                status: out.status_text(),
                stderr: out.stderr_tail(),
            });
        }
        changes.push(format!("loaded the launch agent into {}", self.domain()));
        Ok(changes)
    }

    fn uninstall(&self) -> Result<Vec<String>, PlatformError> {
        let mut removed = Vec::new();
        if Self::running_as_the_job() {
            tracing::info!("running as the launch agent: it stays loaded until logout, without its file");
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
        Ok(removed)
    }

    fn status(&self) -> Result<SchedulerStatus, PlatformError> {
        let plist = self.plist();
        let installed = plist.exists();
        let loaded = installed && self.loaded()?;
        let detail = match (installed, loaded) {
            (true, true) => format!("{} (loaded in {})", plist.display(), self.domain()),
            (true, false) => format!("{} (not loaded; it loads at the next login)", plist.display()),
            (false, _) => format!("no launch agent at {}", plist.display()),
        };
        Ok(SchedulerStatus { installed, detail })
    }
}
