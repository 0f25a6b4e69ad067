//! Assembles the macOS [`Platform`], and the pieces of it that the macOS-only subcommands
//! (`crate::app::jamf`, `crate::app::allowlist`) use on their own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::platform::{Platform, PlatformError, PlatformOptions, SystemClock};

use super::allowlist::{self, PartitionId};
use super::codesign;
use super::config::{self, MacSettings};
use super::facts::{self, MacDevice};
use super::keychain::{KeychainStore, Paths};
use super::launchctl::LaunchAgentScheduler;
use super::notify::MacNotifier;
use super::prefs::{self, MacBrowsers};
use crate::util::exec;

const CODESIGN: &str = "/usr/bin/codesign";

/// The agent's data directory: the configured one, else `~/Library/Application
/// Support/DeviceTrust`.
fn data_dir(options: &PlatformOptions, home: &Path) -> PathBuf {
    options.data_dir.clone().unwrap_or_else(|| home.join("Library/Application Support/DeviceTrust"))
}

pub(crate) fn mac_settings() -> Result<MacSettings, PlatformError> {
    config::mac_settings(&prefs::managed_preferences())
        .map_err(|e| PlatformError::backend("the managed preferences are unusable", e))
}

/// The signature report of some code; `codesign` exits 1 for unsigned code, whose report is
/// still worth parsing.
pub(crate) fn signature_of(path: &Path) -> Result<codesign::Signature, PlatformError> {
    let path_arg = path.to_string_lossy();
    let out = exec::run(Path::new(CODESIGN), &["-dv", "--verbose=4", &path_arg], None, exec::DEFAULT_TIMEOUT)
        .map_err(|e| PlatformError::backend("could not run codesign", e))?;
    codesign::parse(&out.stderr).map_err(|e| {
        PlatformError::backend(format!("could not read the code signature of {}", path.display()), e)
    })
}

/// This executable's partition ID, so that the partition list never locks the agent out.
fn own_partition() -> Option<PartitionId> {
    let exe = std::env::current_exe().ok()?;
    match signature_of(&exe) {
        Ok(sig) => allowlist::own_partition_id(&sig),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the agent's own code signature");
            None
        }
    }
}

pub(crate) fn store(
    options: &PlatformOptions,
    settings: &MacSettings,
) -> Result<(Arc<KeychainStore>, PathBuf, PathBuf), PlatformError> {
    let me = facts::this_user()?;
    let home = me.dir;
    let data_dir = data_dir(options, &home);
    let store =
        KeychainStore::new(Paths::new(&home, data_dir.clone()), own_partition, settings.allowlist.clone());
    Ok((Arc::new(store), home, data_dir))
}

/// Opens the macOS backend for the user running the agent.
pub(crate) fn open(options: &PlatformOptions) -> Result<Platform, PlatformError> {
    let settings = mac_settings()?;
    let (store, home, data_dir) = store(options, &settings)?;
    let uid = nix::unistd::Uid::current().as_raw();
    Ok(Platform {
        data_dir,
        store: store.clone(),
        device: Box::new(MacDevice::default()),
        browsers: Box::new(MacBrowsers { store, org_domain: settings.org_domain }),
        scheduler: Box::new(LaunchAgentScheduler { uid, home }),
        notifier: Box::new(MacNotifier),
        clock: Arc::new(SystemClock),
    })
}

/// Lays the forced managed preferences of `com.devicetrust.agent` over `config` (what the
/// configuration file said); returns the keys they set. Call
/// [`crate::config::Loaded::validate`] afterwards.
pub(crate) fn apply_managed_config(config: &mut Config) -> Result<Vec<&'static str>, PlatformError> {
    let applied = config::overlay(config, &prefs::managed_preferences())
        .map_err(|e| PlatformError::backend("the managed preferences are unusable", e))?;
    if !applied.is_empty() {
        tracing::info!(keys = %applied.join(", "), "managed preferences override the configuration file");
    }
    Ok(applied)
}
