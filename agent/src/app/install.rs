//! `install` and `uninstall`, for the user (the scheduled run, and the browser settings for
//! the current certificate) or with `--system` for the whole machine (the browsers' managed
//! policy), and the removal a revocation triggers.

use std::io::Write;

use ca_client::protocol::Metadata;

use super::{Agent, AgentError, Current, error_chain, target_of, warn_skipped_origins};
use crate::platform::{PlatformError, Removal, ScheduleSpec, Scope, WrittenEntries};

impl Agent {
    /// Removes the user's artifacts: browser settings, identities, the scheduled run.
    /// Returns what was removed (with the notes of steps that could not do everything) and
    /// the failures.
    pub(super) fn remove_user_artifacts(
        &self,
        metadata: Option<&Metadata>,
        written: &WrittenEntries,
    ) -> (Removal, Vec<String>) {
        let target = metadata.and_then(|m| target_of(m).ok());
        let mut removal = Removal::default();
        let mut failed = Vec::new();
        let as_removal = |lines: Vec<String>| Removal { removed: lines, notes: Vec::new() };
        let steps: [(&str, Result<Removal, PlatformError>); 3] = [
            (
                "browser settings",
                self.platform.browsers.remove(Scope::User, target.as_ref(), written).map(as_removal),
            ),
            ("identities", self.platform.store.remove_all().map(as_removal)),
            ("scheduled run", self.platform.scheduler.uninstall()),
        ];
        for (what, result) in steps {
            match result {
                Ok(step) => {
                    removal.removed.extend(step.removed);
                    removal.notes.extend(step.notes);
                }
                Err(e) => failed.push(format!("{what}: {}", error_chain(&e))),
            }
        }
        (removal, failed)
    }

    /// `uninstall [--system]`.
    pub(crate) fn uninstall(&self, system: bool, out: &mut dyn Write) -> Result<(), AgentError> {
        if system && cfg!(target_os = "macos") {
            writeln!(
                out,
                "nothing to remove: on macOS the system-wide browser settings are the MDM's configuration profiles; remove them in the MDM"
            )?;
            return Ok(());
        }
        if system {
            let metadata = self.metadata_for_system();
            let target = metadata.as_ref().and_then(|m| target_of(m).ok());
            let lines =
                self.platform.browsers.remove(Scope::System, target.as_ref(), &WrittenEntries::new())?;
            report_removed(&lines, out)?;
            return Ok(());
        }
        let _lock = self.state.lock()?;
        // A corrupt cache or state must not block an uninstall.
        let cached = self.state.load_metadata().ok().flatten();
        let written = self.state.load().map(|s| s.autoselect_written).unwrap_or_default();
        let (mut removal, failed) =
            self.remove_user_artifacts(cached.as_ref().map(|c| &c.metadata), &written);
        // The state holds the record of the entries the agent wrote: after a failure it stays,
        // so that `uninstall` run again still knows what to remove.
        if failed.is_empty() {
            removal.removed.extend(self.state.remove_all()?);
        }
        report_removed(&removal.removed, out)?;
        for note in &removal.notes {
            writeln!(out, "{note}")?;
        }
        if failed.is_empty() { Ok(()) } else { Err(AgentError::Incomplete(failed)) }
    }

    fn metadata_for_system(&self) -> Option<Metadata> {
        if self.ca.is_some() {
            match self.ca().and_then(|ca| {
                ca.metadata().map_err(|source| AgentError::Ca { action: "fetch the CA metadata", source })
            }) {
                Ok(metadata) => return Some(metadata),
                Err(e) => tracing::warn!(error = %error_chain(&e), "using the cached CA metadata"),
            }
        }
        match self.state.load_metadata() {
            Ok(cached) => cached.map(|c| c.metadata),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "not using the cached CA metadata");
                None
            }
        }
    }

    /// Installs (or refreshes) the scheduled run of this binary; a line per change.
    fn install_schedule(&self, current: Option<&Current>) -> Result<Vec<String>, AgentError> {
        // The scheduler runs the binary itself, not a symbolic link to it that someone might
        // repoint (`/usr/local/bin/devicetrust-agent` on a Mac).
        let program = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| PlatformError::io("could not find", "the agent binary", e))?;
        let config = if self.config.explicit { self.config.path.as_deref() } else { None };
        let spec = ScheduleSpec { program: &program, config, slot: self.device_slot(current) };
        Ok(self.platform.scheduler.install(&spec)?)
    }

    /// In a `run`: a schedule written by an earlier version fires at another minute than the
    /// device's `slot` (or, on Linux, at midnight), which would leave its renewals to the grace;
    /// bring it to the slot, keeping what it runs. Logged, never fatal: the run's own result is
    /// what it reports.
    pub(crate) fn refresh_schedule(&self, slot: crate::decision::Slot) {
        match self.platform.scheduler.refresh(slot) {
            Ok(lines) => {
                for line in lines {
                    tracing::info!("{line}");
                }
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not bring the schedule to the device's slot")
            }
        }
    }

    /// After an `enroll`: a device is only working with its scheduled run (renewal, revocation
    /// checks), so one that has none gets it, as `install` would (after a revocation removed it,
    /// say). A failure here does not undo the enrollment; it says what to run.
    pub(crate) fn ensure_scheduled(&self, out: &mut dyn Write) -> Result<(), AgentError> {
        if self.platform.scheduler.status().is_ok_and(|s| s.installed) {
            return Ok(());
        }
        let current = self.current()?;
        match self.install_schedule(current.as_ref()) {
            Ok(lines) => {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
            }
            Err(e) => writeln!(
                out,
                "the scheduled run is not installed ({}); `devicetrust-agent install` installs it",
                error_chain(&e)
            )?,
        }
        Ok(())
    }

    /// `install [--system]`.
    ///
    /// With `--system` the metadata is fetched now when a CA is configured, else taken from
    /// the cache (as root only a cache only root can change). Its browser target is checked
    /// before anything is written.
    pub(crate) fn install(&self, system: bool, out: &mut dyn Write) -> Result<(), AgentError> {
        if system {
            let (metadata, from) = match self.ca() {
                Ok(ca) => {
                    let metadata = ca
                        .metadata()
                        .map_err(|source| AgentError::Ca { action: "fetch the CA metadata", source })?;
                    let url = self.config.config.ca_url.clone().unwrap_or_default();
                    (metadata, format!("fetched from {url}"))
                }
                Err(no_ca) => match self.state.load_metadata() {
                    Ok(Some(cached)) => {
                        (cached.metadata, format!("cached in {}", self.state.metadata_path().display()))
                    }
                    Ok(None) => return Err(no_ca),
                    Err(source @ PlatformError::Untrusted(_)) => {
                        let config = self.config.path.as_deref().map_or_else(
                            || crate::config::SYSTEM_CONFIG.to_owned(),
                            |p| p.display().to_string(),
                        );
                        return Err(AgentError::NoTrustedMetadata { config, source });
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let target = target_of(&metadata).map_err(|source| AgentError::BrowserTarget { from, source })?;
            warn_skipped_origins(&target);
            // The system scope owns its whole policy file and needs no record.
            let lines =
                self.platform.browsers.apply(Scope::System, &target, None, &mut WrittenEntries::new())?;
            report_changes(&lines, out)?;
            return Ok(());
        }
        self.unlock_store();
        let current = self.current()?;
        // Checked before the scheduler is touched, so that a bad target writes nothing.
        let cached = match &current {
            Some(_) => self.state.load_metadata()?,
            None => None,
        };
        let target = match &cached {
            Some(cached) => {
                Some(target_of(&cached.metadata).map_err(|source| AgentError::BrowserTarget {
                    from: format!("cached in {}", self.state.metadata_path().display()),
                    source,
                })?)
            }
            None => None,
        };
        let mut lines = self.install_schedule(current.as_ref())?;
        if let (Some(current), Some(target)) = (&current, &target) {
            warn_skipped_origins(target);
            let _lock = self.state.lock()?;
            let mut state = self.state.load()?;
            let result = self.platform.browsers.apply(
                Scope::User,
                target,
                Some(&current.identity),
                &mut state.autoselect_written,
            );
            self.state.save(&state)?;
            lines.extend(result?);
        }
        report_changes(&lines, out)?;
        Ok(())
    }
}

/// Prints what `uninstall` removed, or that there was nothing to remove.
fn report_removed(lines: &[String], out: &mut dyn Write) -> Result<(), AgentError> {
    report(lines, "removed ", "nothing to remove", out)
}

/// Prints what `install` changed, or that everything was already in place.
fn report_changes(lines: &[String], out: &mut dyn Write) -> Result<(), AgentError> {
    report(lines, "", "everything is already in place", out)
}

fn report(lines: &[String], prefix: &str, when_empty: &str, out: &mut dyn Write) -> Result<(), AgentError> {
    if lines.is_empty() {
        writeln!(out, "{when_empty}")?;
    }
    for line in lines {
        writeln!(out, "{prefix}{line}")?;
    }
    Ok(())
}
