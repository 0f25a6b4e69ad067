//! The Linux backend: assembles [`Platform`] from the file identity store
//! ([`crate::platform::file_store`]) and the Linux parts below: the device facts
//! ([`facts`]), the user's NSS database ([`nss`]), Chromium's and Chrome's managed policy
//! ([`chromium_policy`]) and the systemd user timer ([`systemd`]).
//!
//! Data lives in `$XDG_DATA_HOME/devicetrust` (default `~/.local/share/devicetrust`), or the
//! configured `data_dir`. The NSS import needs the private key itself (NSS takes keys only
//! through PKCS#12), so the browser integration reads it from the file store, which is the
//! one place it is kept.
//!
//! Each part works on paths and programs it is given, so tests run against temporary
//! directories and the real `certutil`, `pk12util` and `openssl` without touching the
//! machine's own configuration.

mod chromium_policy;
mod facts;
mod nss;
mod systemd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_client::cert::CertificateInfo;
use ca_client::signer::{KeySigner as _, SoftwareKey};

use crate::autoselect::{self, OurEntry};
use crate::decision::Slot;
use crate::platform::file_store::FileIdentityStore;
use crate::platform::{
    BrowserIntegration, BrowserStatus, BrowserTarget, DeviceFacts, Identity, IdentityStore as _,
    MdmEnrollment, Notifier, Platform, PlatformError, PlatformOptions, Removal, ScheduleSpec, Scheduler,
    SchedulerStatus, Scope, SystemClock,
};
use crate::platform::{OriginStatus, WrittenEntries};
use crate::util::error_chain;
use chromium_policy::ManagedPolicy;
use facts::FactSources;
use nss::{ImportOutcome, NssDb, NssError};
use systemd::{Activation, SystemdError, UserUnits};

/// The data directory: the configured one, else `$XDG_DATA_HOME/devicetrust`, else
/// `$HOME/.local/share/devicetrust`. A relative `XDG_DATA_HOME` is ignored, as the XDG
/// specification says.
pub(crate) fn data_dir(
    configured: Option<&Path>,
    xdg_data_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_owned());
    }
    let base = match xdg_data_home.filter(|p| p.is_absolute()) {
        Some(xdg) => xdg.to_owned(),
        None => home.filter(|h| h.is_absolute())?.join(".local").join("share"),
    };
    Some(base.join("devicetrust"))
}

/// Opens the Linux backend for the current user.
pub(crate) fn open(options: &PlatformOptions) -> Result<Platform, PlatformError> {
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let data_dir = data_dir(options.data_dir.as_deref(), xdg.as_deref(), home.as_deref()).ok_or(
        PlatformError::Unavailable {
            what: "the data directory",
            hint: "set HOME, XDG_DATA_HOME or data_dir",
        },
    )?;
    let store = FileIdentityStore::new(&data_dir);
    Ok(Platform {
        data_dir,
        store: Arc::new(store.clone()),
        device: Box::new(LinuxDevice { sources: FactSources::system() }),
        browsers: Box::new(LinuxBrowsers {
            store,
            nss: NssDb::from_env(),
            policies: ManagedPolicy::all_system(),
        }),
        scheduler: Box::new(LinuxScheduler { units: UserUnits::from_env() }),
        notifier: Box::new(LinuxNotifier {
            proc_root: PathBuf::from("/proc"),
            uid: nix::unistd::getuid().as_raw(),
        }),
        clock: Arc::new(SystemClock),
    })
}

/// Tells the user, in the log (stderr at a terminal, the journal under systemd), which of
/// their running browsers to restart after a renewal.
#[derive(Debug)]
struct LinuxNotifier {
    proc_root: PathBuf,
    uid: u32,
}

impl Notifier for LinuxNotifier {
    fn browser_restart_needed(&self, browsers: &[String]) {
        let running = running_browsers(&self.proc_root, self.uid, &restart_candidates(browsers));
        if running.is_empty() {
            tracing::info!("no running browser holds the old certificate; nothing to restart");
            return;
        }
        let names: Vec<&str> = running.iter().map(|b| b.name()).collect();
        tracing::warn!(
            "the certificate was renewed; restart {} so that it presents the new one",
            names.join(" and ")
        );
    }
}

/// The browsers that present the identity: on Linux the Chromium family reads it from the
/// NSS database (`nssdb`); `browsers` stands for an unknown list. The policy entries alone
/// hold no certificate.
fn restart_candidates(holding: &[String]) -> Vec<chromium_policy::Browser> {
    if holding.iter().any(|b| b == NSS_NAME || b == "browsers") {
        chromium_policy::Browser::ALL.to_vec()
    } else {
        Vec::new()
    }
}

/// Those of `candidates` with a process of user `uid` under `proc_root` (`/proc`), by the
/// process name in `comm`. Unreadable entries (processes that ended, other users') are
/// skipped; the scan is bounded by the number of processes.
fn running_browsers(
    proc_root: &Path,
    uid: u32,
    candidates: &[chromium_policy::Browser],
) -> Vec<chromium_policy::Browser> {
    use std::os::unix::fs::MetadataExt as _;
    let mut running = Vec::new();
    if candidates.is_empty() {
        return running;
    }
    let Ok(entries) = std::fs::read_dir(proc_root) else { return running };
    for entry in entries.flatten() {
        let is_pid = entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid || entry.metadata().map_or(true, |m| m.uid() != uid) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else { continue };
        if let Some(browser) = candidates.iter().find(|b| b.process_name() == comm.trim_end())
            && !running.contains(browser)
        {
            running.push(*browser);
            if running.len() == candidates.len() {
                break;
            }
        }
    }
    running.sort_by_key(|b| b.name());
    running
}

/// Device facts from the system files (`/etc/machine-id`, DMI, `os-release`).
#[derive(Debug)]
pub(crate) struct LinuxDevice {
    sources: FactSources,
}

impl DeviceFacts for LinuxDevice {
    fn udid(&self) -> Result<String, PlatformError> {
        self.sources.udid().map_err(|e| PlatformError::backend("could not read the device id", e))
    }

    fn serial_number(&self) -> Result<String, PlatformError> {
        self.sources
            .serial_number()
            .map_err(|e| PlatformError::backend("could not read the serial number", e))
    }

    fn display_name(&self) -> Result<String, PlatformError> {
        self.sources.hostname().map_err(|e| PlatformError::backend("could not read the host name", e))
    }

    fn os_version(&self) -> Result<String, PlatformError> {
        self.sources.os_version().map_err(|e| PlatformError::backend("could not read the os version", e))
    }

    fn current_user(&self) -> Result<String, PlatformError> {
        facts::current_user().map_err(|e| PlatformError::backend("could not tell who runs the agent", e))
    }

    fn mdm_enrollment(&self) -> Result<MdmEnrollment, PlatformError> {
        // No local MDM client to ask: the CA's check decides.
        Ok(MdmEnrollment::Unknown)
    }
}

/// The user's NSS database (user scope) and the browsers' managed policy (system scope).
#[derive(Debug)]
pub(crate) struct LinuxBrowsers {
    store: FileIdentityStore,
    nss: Result<NssDb, NssError>,
    policies: Vec<ManagedPolicy>,
}

const NSS_NAME: &str = "nssdb";

impl LinuxBrowsers {
    fn nss(&self) -> Result<&NssDb, PlatformError> {
        self.nss
            .as_ref()
            .map_err(|e| PlatformError::backend("could not find the user's nss database", e.clone()))
    }

    fn import(&self, identity: &Identity) -> Result<Vec<String>, PlatformError> {
        let nss = self.nss()?;
        let key = self.store.current_key_pkcs8()?.ok_or(PlatformError::Missing("the current key"))?;
        // The store's current key must be the identity's, or NSS would pair a certificate with
        // a foreign key.
        let loaded = SoftwareKey::from_pkcs8_der(&key)
            .map_err(|e| PlatformError::key("could not load the current key for the nss import", e))?;
        if loaded.public_key_sec1() != identity.key.public_key_sec1() {
            return Err(PlatformError::Key {
                action: "the identity to import is not the store's current identity".into(),
                source: None,
            });
        }
        match nss
            .import(nss::DEFAULT_NICKNAME, identity.certificate_pem.as_bytes(), &key)
            .map_err(|e| PlatformError::backend("could not import the identity into the nss database", e))?
        {
            ImportOutcome::AlreadyCurrent => Ok(Vec::new()),
            ImportOutcome::Imported { replaced } => {
                let mut line = format!("imported the identity into the nss database {}", nss.dir().display());
                if !replaced.is_empty() {
                    line.push_str(&format!(" (replacing {} certificate(s))", replaced.certificates));
                }
                Ok(vec![line])
            }
        }
    }

    fn nss_status(&self) -> BrowserStatus {
        let mut status = BrowserStatus {
            browser: NSS_NAME.to_owned(),
            present: false,
            managed: false,
            installed: None,
            detail: None,
            origins: Vec::new(),
        };
        let nss = match self.nss() {
            Ok(nss) => nss,
            Err(e) => {
                status.detail = Some(error_chain(&e));
                return status;
            }
        };
        if !nss.exists() {
            status.detail = Some(format!("no nss database at {}", nss.dir().display()));
            return status;
        }
        let current = match self.store.current() {
            Ok(Some(identity)) => identity,
            Ok(None) => {
                status.detail = Some("no identity to compare with".to_owned());
                return status;
            }
            Err(e) => {
                status.detail = Some(error_chain(&e));
                return status;
            }
        };
        let der = CertificateInfo::from_pem(&current.certificate_pem).map(|info| info.der().to_vec());
        match (nss.identity(nss::DEFAULT_NICKNAME), der) {
            (Ok(Some(found)), Ok(der)) => {
                status.present = found.is_exactly(&der);
                status.detail = Some(if status.present {
                    format!("current identity in {}", nss.dir().display())
                } else {
                    format!(
                        "{} holds another certificate under {}",
                        nss.dir().display(),
                        nss::DEFAULT_NICKNAME
                    )
                });
            }
            (Ok(None), _) => status.detail = Some(format!("not in {}", nss.dir().display())),
            (Err(e), _) => status.detail = Some(error_chain(&e)),
            (_, Err(e)) => status.detail = Some(error_chain(&e)),
        }
        status
    }
}

impl BrowserIntegration for LinuxBrowsers {
    fn apply(
        &self,
        scope: Scope,
        target: &BrowserTarget<'_>,
        identity: Option<&Identity>,
        // The user scope writes no shared list, and the system scope owns its whole file.
        _written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        match scope {
            Scope::User => match identity {
                Some(identity) => self.import(identity),
                None => Err(PlatformError::Missing("the identity to import into nss")),
            },
            Scope::System => {
                let wanted = target
                    .wanted()
                    .map_err(|e| PlatformError::backend("the CA's browser target is unusable", e))?;
                let patterns: Vec<&str> = wanted.entries.iter().map(OurEntry::pattern).collect();
                let mut lines = Vec::new();
                for policy in &self.policies {
                    let change = policy.install(&wanted.entries).map_err(|e| {
                        PlatformError::backend("could not write the browsers' managed policy", e)
                    })?;
                    if change.file_changed {
                        lines.push(format!(
                            "wrote the {} managed policy {} for {}",
                            policy.browser().name(),
                            change.file.display(),
                            patterns.join(", ")
                        ));
                    }
                }
                Ok(lines)
            }
        }
    }

    fn status(&self, target: &BrowserTarget<'_>) -> Result<Vec<BrowserStatus>, PlatformError> {
        let mut out = vec![self.nss_status()];
        let wanted =
            target.wanted().map_err(|e| PlatformError::backend("the CA's browser target is unusable", e))?;
        for policy in &self.policies {
            let name = policy.browser().name().to_owned();
            out.push(match policy.status(&wanted.entries) {
                Ok(status) => BrowserStatus {
                    browser: name,
                    present: status.entries.iter().all(|(_, s)| *s == autoselect::Status::Present),
                    origins: status
                        .entries
                        .iter()
                        .map(|(origin, entry)| OriginStatus { origin: origin.clone(), entry: *entry })
                        .collect(),
                    managed: status.managed,
                    installed: Some(policy.browser().installed()),
                    detail: Some(match (&status.effective_file, status.in_sync) {
                        (Some(file), true) => format!("policy in {}", file.display()),
                        (Some(file), false) => {
                            format!("policy in {} (run install --system to refresh)", file.display())
                        }
                        (None, _) => format!("no policy in {}", status.dir.display()),
                    }),
                },
                Err(e) => BrowserStatus {
                    browser: name,
                    present: false,
                    managed: false,
                    installed: Some(policy.browser().installed()),
                    detail: Some(error_chain(&e)),
                    origins: Vec::new(),
                },
            });
        }
        Ok(out)
    }

    fn remove(
        &self,
        scope: Scope,
        _target: Option<&BrowserTarget<'_>>,
        _written: &WrittenEntries,
    ) -> Result<Vec<String>, PlatformError> {
        match scope {
            Scope::User => {
                let nss = self.nss()?;
                let removed = nss.remove(nss::DEFAULT_NICKNAME).map_err(|e| {
                    PlatformError::backend("could not remove the identity from the nss database", e)
                })?;
                Ok(if removed.is_empty() {
                    Vec::new()
                } else {
                    vec![format!(
                        "{} certificate(s) and {} key(s) from the nss database {}",
                        removed.certificates,
                        removed.keys,
                        nss.dir().display()
                    )]
                })
            }
            Scope::System => {
                // Our policy file holds only our entries' list; uninstalling drops the policy
                // from it whatever the entries were, so it needs no target (the CA's metadata
                // may never have been learnt).
                let mut lines = Vec::new();
                for policy in &self.policies {
                    let change = policy.uninstall().map_err(|e| {
                        PlatformError::backend("could not remove the browsers' managed policy", e)
                    })?;
                    if change.file_changed {
                        lines.push(format!(
                            "the {} managed policy {}",
                            policy.browser().name(),
                            change.file.display()
                        ));
                    }
                }
                Ok(lines)
            }
        }
    }
}

/// systemd user units.
#[derive(Debug)]
pub(crate) struct LinuxScheduler {
    units: Result<UserUnits, SystemdError>,
}

impl LinuxScheduler {
    fn units(&self) -> Result<&UserUnits, PlatformError> {
        self.units
            .as_ref()
            .map_err(|e| PlatformError::backend("could not find the systemd user unit directory", e.clone()))
    }
}

impl Scheduler for LinuxScheduler {
    fn install(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<String>, PlatformError> {
        let report = self
            .units()?
            .install(spec.program, spec.config, spec.slot)
            .map_err(|e| PlatformError::backend("could not install the systemd user timer", e))?;
        let mut lines: Vec<String> =
            report.written.iter().map(|p| format!("wrote {}", p.display())).collect();
        lines.push(match report.activation {
            Activation::Enabled => "enabled the daily timer and the run at login".to_owned(),
            Activation::AtNextLogin { reason } => {
                format!("the user manager is not reachable ({reason}); the timer starts at the next login")
            }
        });
        Ok(lines)
    }

    fn refresh(&self, slot: Slot) -> Result<Vec<String>, PlatformError> {
        let written = self
            .units()?
            .refresh_timer(slot)
            .map_err(|e| PlatformError::backend("could not bring the systemd user timer up to date", e))?;
        Ok(written.into_iter().map(|p| format!("wrote {} (the daily run's new time)", p.display())).collect())
    }

    fn uninstall(&self) -> Result<Removal, PlatformError> {
        let report = self
            .units()?
            .uninstall()
            .map_err(|e| PlatformError::backend("could not remove the systemd user timer", e))?;
        let mut removal = Removal {
            removed: report.removed.iter().map(|p| p.display().to_string()).collect(),
            notes: Vec::new(),
        };
        if let Some(reason) = &report.manager_unreachable {
            // Said as a result line, not a log line: it is what the user needs to know.
            removal.notes.push(format!(
                "the systemd user manager is not reachable ({reason}), so it was not told; with the unit \
                 files gone nothing starts at the next login, and a timer already loaded in a running \
                 session stops when that session ends"
            ));
        }
        Ok(removal)
    }

    fn status(&self) -> Result<SchedulerStatus, PlatformError> {
        let units = self.units()?;
        let installed = units.installed();
        Ok(SchedulerStatus {
            installed,
            detail: if installed {
                format!("systemd user timer in {}", units.dir().display())
            } else {
                format!("no systemd user timer in {}", units.dir().display())
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the Chromium family presents the NSS identity, and only a running process of the
    /// same user needs a restart.
    #[test]
    fn running_browsers_table() {
        use chromium_policy::Browser;
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(restart_candidates(&names(&["nssdb", "chromium"])), Browser::ALL, "ok/nss-holds-it");
        assert_eq!(restart_candidates(&names(&["browsers"])), Browser::ALL, "ok/unknown-list");
        assert!(
            restart_candidates(&names(&["chromium", "chrome"])).is_empty(),
            "ok/policy-alone-holds-nothing"
        );

        let proc_root = tempfile::tempdir().expect("tempdir");
        let process = |pid: &str, comm: &str| {
            let dir = proc_root.path().join(pid);
            std::fs::create_dir(&dir).expect("mkdir");
            std::fs::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
        };
        process("100", "bash");
        process("101", "chromium");
        process("102", "chromium");
        process("self", "chrome"); // not a pid
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(running_browsers(proc_root.path(), me, &Browser::ALL), [Browser::Chromium], "ok/running");
        assert!(running_browsers(proc_root.path(), me, &[Browser::Chrome]).is_empty(), "ok/not-running");
        assert!(
            running_browsers(proc_root.path(), me.wrapping_add(1), &Browser::ALL).is_empty(),
            "ok/another-user"
        );
        assert!(running_browsers(Path::new("/nonexistent"), me, &Browser::ALL).is_empty(), "fail/no-proc");
    }

    #[test]
    fn data_dir_table() {
        let p = |s: &str| Some(PathBuf::from(s));
        let table = [
            ("ok/configured-wins", p("/cfg"), p("/xdg"), p("/home/a"), p("/cfg")),
            ("ok/xdg", None, p("/xdg"), p("/home/a"), p("/xdg/devicetrust")),
            ("ok/home", None, None, p("/home/a"), p("/home/a/.local/share/devicetrust")),
            ("ok/relative-xdg-ignored", None, p("rel"), p("/home/a"), p("/home/a/.local/share/devicetrust")),
            ("fail/nothing", None, None, None, None),
            ("fail/relative-home", None, None, p("home"), None),
        ];
        for (name, configured, xdg, home, want) in table {
            assert_eq!(data_dir(configured.as_deref(), xdg.as_deref(), home.as_deref()), want, "{name}");
        }
    }
}
