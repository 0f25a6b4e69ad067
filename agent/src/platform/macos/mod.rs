//! The macOS backend: the dedicated keychain, the app allowlist, browser preferences, the
//! LaunchAgent, device facts, the Jamf Pro entry point and unified logging.
//!
//! The module is split in two on purpose. Everything that only turns text into values or
//! values into text (parsers of `profiles`, `codesign`, `ioreg` and `security` output, the
//! LaunchAgent plist, the Jamf argument handling and command lines, the allowlist and its
//! partition-list encoding, preference merging, configuration layering) compiles on every
//! target, so that its tests run on Linux against the transcribed tool outputs in
//! `fixtures/macos/`. The code that calls Security.framework, CFPreferences, `launchctl` and
//! friends lives in the submodules gated on `target_os = "macos"`; it is type-checked and
//! linted for both darwin targets but has never run here (see `docs/macos.md`).
//!
//! # Platform specific behaviour
//!
//! `open` (macOS only) returns the [`crate::platform::Platform`] whose store is the
//! keychain `~/Library/Keychains/devicetrust.keychain-db`. The only `unsafe` code of the
//! agent is in `sys`, the thin layer over Security.framework calls that the
//! `security-framework` crate does not wrap.

pub(crate) mod allowlist;
pub(crate) mod browsers;
pub(crate) mod btm;
pub(crate) mod codesign;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod ioreg;
pub(crate) mod jamf;
pub(crate) mod keychain_list;
pub(crate) mod launch_agent;
pub(crate) mod launchd_wait;
pub(crate) mod logging;
pub(crate) mod profiles;
pub(crate) mod safari;

#[cfg(target_os = "macos")]
mod backend;
#[cfg(target_os = "macos")]
pub(crate) mod facts;
#[cfg(target_os = "macos")]
mod keychain;
#[cfg(target_os = "macos")]
mod launchctl;
#[cfg(target_os = "macos")]
mod notify;
#[cfg(target_os = "macos")]
mod prefs;
#[cfg(target_os = "macos")]
mod sys;

/// A deliberate type error that only the CI's canary check compiles (`.ci/check-darwin`):
/// that check must fail, which proves the darwin type-check reaches macOS-only code.
#[cfg(all(target_os = "macos", devicetrust_darwin_canary))]
const _DARWIN_CANARY: u32 = "the darwin type-check must reject this";

#[cfg(target_os = "macos")]
pub(crate) use backend::{apply_managed_config, mac_settings, open, signature_of, store};
#[cfg(target_os = "macos")]
pub use logging::oslog_layer;

/// The unified-logging subsystem, the managed preferences domain and the LaunchAgent label.
pub(crate) const BUNDLE_ID: &str = "com.devicetrust.agent";

#[cfg(target_os = "macos")]
/// The dedicated keychain's file name under `~/Library/Keychains/`.
pub(crate) const KEYCHAIN_FILE_NAME: &str = "devicetrust.keychain-db";

#[cfg(target_os = "macos")]
/// The generic password item in the login keychain that holds the dedicated keychain's
/// password: its service ...
pub(crate) const PASSWORD_SERVICE: &str = "devicetrust";
#[cfg(target_os = "macos")]
/// ... and its account.
pub(crate) const PASSWORD_ACCOUNT: &str = "keychain";

/// Reads a transcribed tool output from `fixtures/macos/` (see `fixtures/README.md`).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/../fixtures/macos/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
