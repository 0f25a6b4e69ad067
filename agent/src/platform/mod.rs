//! The seam between the platform-free agent and each operating system.
//!
//! The commands ([`crate::app`]) and the lifecycle reach the operating system's own parts only
//! through the traits here (the decision core reaches nothing; the agent's own state files,
//! its configuration and the token file are plain files read by `app::state_dir`, `config`
//! and `token`): where identities live ([`IdentityStore`]), what the device is
//! ([`DeviceFacts`]), how browsers are told to present the certificate
//! ([`BrowserIntegration`]), what runs the agent periodically ([`Scheduler`]), how the user
//! hears about a needed browser restart ([`Notifier`]) and what time it is ([`Clock`]).
//!
//! The traits are shaped for the strictest backend, the macOS keychain, whose private keys
//! can sign but can never be exported: a key is only ever handed out as an
//! `Arc<dyn KeySigner>`, and the store, not the caller, decides how a pending identity sits
//! beside the current one until it is promoted.
//!
//! # Platform specific behaviour
//!
//! The backend is chosen at compile time, here and only here: `macos` (the keychain,
//! CFPreferences, the LaunchAgent) on macOS, `linux` (the [`file_store`], NSS, Chromium's
//! policy, systemd) everywhere else. Each has an `open(options: &PlatformOptions) ->
//! Result<Platform, PlatformError>`; [`open`] calls the one compiled in. The macOS module's
//! platform-free half (the parsers of tool output, the Jamf argument handling, the
//! allowlist) also compiles into the tests on every target, so that it is tested on Linux
//! against the transcribed outputs in `fixtures/macos/`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_client::signer::KeySigner;

use crate::decision::{MdmEnrollment, Slot};
use chrono::{DateTime, FixedOffset, Offset as _, TimeZone as _, Utc};

#[cfg(any(not(target_os = "macos"), test))]
pub(crate) mod file_store;
#[cfg(not(target_os = "macos"))]
pub(crate) mod linux;
#[cfg(any(target_os = "macos", test))]
pub(crate) mod macos;

/// Why a platform operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PlatformError {
    /// A file or directory could not be read, written or removed.
    #[error("{action} {path}")]
    Io {
        /// What was being done, e.g. "could not write".
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored item exists but cannot be used (truncated file, wrong format, foreign key).
    #[error("{what} at {location} is corrupt: {reason}")]
    Corrupt {
        /// What the item is, e.g. "the pending key".
        what: &'static str,
        /// Where it is (a path, a keychain label).
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An operation needs an item that is not there (e.g. promoting without a pending identity).
    #[error("{0} is missing")]
    Missing(&'static str),
    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// A helper program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// The program, e.g. `certutil`.
        program: String,
        /// Its exit status, as text.
        status: String,
        /// The end of its standard error; never contains a secret.
        stderr: String,
    },
    /// A key could not be generated, loaded or used.
    #[error("{action}")]
    Key {
        /// What went wrong, e.g. "the stored key is not a p-256 pkcs#8 key".
        action: Cow<'static, str>,
        /// The cause, when there is one beyond the action.
        #[source]
        source: Option<BoxError>,
    },
    /// A platform fact is not available and has no override (e.g. the serial number).
    #[error("{what} is not available on this device: {hint}")]
    Unavailable {
        /// The fact, e.g. "the serial number".
        what: &'static str,
        /// How to supply it instead.
        hint: &'static str,
    },
    /// A part of the platform failed: the keychain, the preferences, the NSS database, the
    /// systemd units, the device facts, or the output of one of their tools.
    #[error("{action}")]
    Backend {
        /// What was being done, e.g. "could not open the keychain".
        action: Cow<'static, str>,
        /// The part's own error (a keychain status, an `NssError`, ...), kept so that the
        /// whole chain is printed and tests can downcast it.
        #[source]
        source: BoxError,
    },
    /// A state file could not be encoded (never expected: the types are plain data).
    #[error("could not encode {what}")]
    Encode {
        /// The file, e.g. "the identity index".
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Running as root, a file another user could have changed was not used
    /// (see [`crate::trust`]).
    #[error(transparent)]
    Untrusted(#[from] crate::trust::Refused),
}

/// The cause a backend error keeps: any error of the platform's parts.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl From<crate::util::files::FileError> for PlatformError {
    fn from(e: crate::util::files::FileError) -> Self {
        Self::Io { action: e.action, path: e.path, source: e.source }
    }
}

impl PlatformError {
    /// A [`PlatformError::Backend`]: `action` failed because of `source` (an error, or a
    /// message when the part gave only text).
    pub(crate) fn backend(action: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self::Backend { action: action.into(), source: source.into() }
    }

    /// A [`PlatformError::Key`] with a cause.
    pub(crate) fn key(action: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self::Key { action: action.into(), source: Some(source.into()) }
    }

    /// A [`PlatformError::Command`]: `program` ran and failed as `out` shows.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    pub(crate) fn command(program: impl Into<String>, out: &crate::util::exec::Output) -> Self {
        Self::Command { program: program.into(), status: out.status_text(), stderr: out.stderr_tail() }
    }

    /// An [`PlatformError::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.into(), source }
    }
}

/// The time source. The decision core asks it once per run; tests pass a fake.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The local time's offset from UTC at `at` (the device's time zone), for the slot of
    /// the working day the renewal waits for.
    fn utc_offset(&self, at: DateTime<Utc>) -> FixedOffset;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn utc_offset(&self, at: DateTime<Utc>) -> FixedOffset {
        // `TZ`, else /etc/localtime (both platforms), as launchd and systemd read it for
        // the calendar run.
        chrono::Local.offset_from_utc_datetime(&at.naive_utc()).fix()
    }
}

#[cfg(test)]
/// A clock that says what it is told; for tests and for replaying decisions.
#[derive(Debug)]
pub(crate) struct FixedClock(std::sync::Mutex<DateTime<Utc>>);

#[cfg(test)]
impl FixedClock {
    /// A clock stopped at `now`.
    pub(crate) fn new(now: DateTime<Utc>) -> Self {
        Self(std::sync::Mutex::new(now))
    }

    /// Moves the clock to `now`.
    pub(crate) fn set(&self, now: DateTime<Utc>) {
        // A poisoned lock only means another test thread panicked; the value is still usable.
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

#[cfg(test)]
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// UTC, so that the tests' times are the device's local times.
    fn utc_offset(&self, _at: DateTime<Utc>) -> FixedOffset {
        Utc.fix()
    }
}

/// A stored identity: the certificate and a handle to its private key.
#[derive(Clone)]
pub(crate) struct Identity {
    /// The leaf certificate, PEM.
    pub certificate_pem: String,
    /// The issuing chain the CA returned, PEM, leaf's issuer first.
    pub chain_pem: Vec<String>,
    /// The private key; it can sign, it need not be exportable.
    pub key: Arc<dyn KeySigner>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificate_pem_len", &self.certificate_pem.len())
            .field("chain_len", &self.chain_pem.len())
            .field("key", &self.key)
            .finish()
    }
}

/// What a store holds right now, without loading any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StoreSnapshot {
    /// A current identity (key and certificate) is present.
    pub current: bool,
    /// A pending key is present (an enrollment or renewal started and did not finish).
    pub pending_key: bool,
    /// The pending key's certificate is stored too (only the switch-over is left).
    pub pending_certificate: bool,
    /// The identity replaced by the last promotion has not been deleted yet.
    pub previous: bool,
}

/// How a store describes itself in `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreDescription {
    /// The kind of store, e.g. `files` or `keychain`.
    pub kind: String,
    /// Where it is (a directory, a keychain path).
    pub location: String,
    /// Backend-specific facts worth showing (e.g. the app allowlist on macOS), by name.
    pub details: BTreeMap<String, String>,
}

/// Where this device's identities live.
///
/// A store holds at most one *current* identity, at most one *pending* key (with, once the CA
/// answered, its certificate) and, between a promotion and the cleanup after it, the
/// *previous* identity. Every method persists its effect before returning, so that a crash
/// at any point leaves a state from which [`crate::lifecycle`] recovers without asking the
/// CA for a second certificate.
pub(crate) trait IdentityStore: Send + Sync + fmt::Debug {
    /// Makes the store usable by the rest of the user's session, before anything else a run
    /// does: on macOS it unlocks the dedicated keychain, which securityd tracks per security
    /// session, so that browsers find it unlocked even when the run fails later. `Ok(false)`
    /// when there is nothing to unlock (no store yet, or a store without a lock).
    fn unlock(&self) -> Result<bool, PlatformError> {
        Ok(false)
    }

    /// The pending key a previous attempt left behind, if any.
    fn pending_key(&self) -> Result<Option<Arc<dyn KeySigner>>, PlatformError>;

    /// Generates a new pending key and persists it before returning; replaces any pending key
    /// and pending certificate. The current identity is untouched.
    fn create_pending_key(&self) -> Result<Arc<dyn KeySigner>, PlatformError>;

    /// Stores `certificate_pem` (and its chain) for the pending key, beside the current
    /// identity. Fails with [`PlatformError::Missing`] when there is no pending key.
    fn store_pending_certificate(
        &self,
        certificate_pem: &str,
        chain_pem: &[String],
    ) -> Result<(), PlatformError>;

    /// The pending identity, once its certificate is stored.
    fn pending_identity(&self) -> Result<Option<Identity>, PlatformError>;

    /// Forgets the pending certificate but keeps the pending key (the stored certificate
    /// failed its checks; the key can still be used for a new request).
    fn discard_pending_certificate(&self) -> Result<(), PlatformError>;

    /// Makes the pending identity current in one atomic step. The replaced identity, if any,
    /// becomes *previous* and stays until [`IdentityStore::delete_previous`].
    fn promote(&self) -> Result<(), PlatformError>;

    /// Deletes the previous identity; `Ok(false)` when there was none.
    fn delete_previous(&self) -> Result<bool, PlatformError>;

    /// The current identity, if any.
    fn current(&self) -> Result<Option<Identity>, PlatformError>;

    /// What the store holds, without loading keys.
    fn snapshot(&self) -> Result<StoreSnapshot, PlatformError>;

    /// Removes every identity, key and file the store made; returns a line per removed item.
    /// Removing from an empty store succeeds and returns nothing.
    fn remove_all(&self) -> Result<Vec<String>, PlatformError>;

    /// How the store describes itself in `status`.
    fn describe(&self) -> StoreDescription;
}

/// Facts about the device and who is using it.
pub(crate) trait DeviceFacts: Send + Sync + fmt::Debug {
    /// The hardware UUID (`IOPlatformUUID` on a Mac, derived from `/etc/machine-id` on Linux).
    fn udid(&self) -> Result<String, PlatformError>;
    /// The hardware serial number (the MDM's lookup key).
    fn serial_number(&self) -> Result<String, PlatformError>;
    /// A human name for the device.
    fn display_name(&self) -> Result<String, PlatformError>;
    /// The operating system version, e.g. `14.5`.
    fn os_version(&self) -> Result<String, PlatformError>;
    /// The user running this process; the certificate is issued for them.
    fn current_user(&self) -> Result<String, PlatformError>;
    /// The device's own view of its MDM enrollment.
    fn mdm_enrollment(&self) -> Result<MdmEnrollment, PlatformError>;
}

/// Who a browser setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// The user running the agent (NSS database, user preferences, identity preferences).
    User,
    /// The whole machine (managed browser policies); needs root.
    System,
}

/// What browsers must be told: where to present the certificate and how to pick it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BrowserTarget<'a> {
    /// The origin where browsers present the certificate (`certAuthDomain`).
    pub cert_auth_domain: &'a str,
    /// The issuer CN the browser's certificate filter matches.
    pub issuer_common_name: &'a str,
    /// The origins of the apps the CA protects (`protectedOrigins`), as published; each gets
    /// its own entry once it passes the origin check ([`crate::autoselect::wanted`]).
    pub protected_origins: &'a [String],
}

impl BrowserTarget<'_> {
    /// One checked entry per origin, the cert-auth domain's first, and the origins refused.
    pub(crate) fn wanted(&self) -> Result<crate::autoselect::Wanted, crate::autoselect::AutoSelectError> {
        crate::autoselect::wanted(self.cert_auth_domain, self.protected_origins, self.issuer_common_name)
    }
}

/// The `AutoSelectCertificateForUrls` entries the agent added to lists it shares with others
/// (macOS: the user's Chrome and Edge preferences; Safari: the protected origins given an
/// identity preference), by list name; the only entries it may remove later (see
/// [`crate::autoselect`]). Kept in the agent's state file.
pub(crate) type WrittenEntries = BTreeMap<String, Vec<String>>;

/// Whether one origin's entry is in place in one browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginStatus {
    /// The origin, in canonical form.
    pub origin: String,
    /// Whether our entry is there.
    pub entry: crate::autoselect::Status,
}

/// Whether one browser's setting is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrowserStatus {
    /// A stable short name, e.g. `chromium`, `chrome`, `safari`, `nss`.
    pub browser: String,
    /// Our setting (or identity) is in place for the target: for a browser with per-origin
    /// entries, for every origin.
    pub present: bool,
    /// The setting is managed (mandatory policy) rather than a user preference.
    pub managed: bool,
    /// Whether the browser is installed: `None` when that is not known or does not apply
    /// (the NSS database is not a browser). An uninstalled browser's missing setting is
    /// nothing to fix, and it is never asked to restart.
    pub installed: Option<bool>,
    /// Where it is or why it is not, for people.
    pub detail: Option<String>,
    /// Each origin's entry, for browsers that are told per origin (empty for the NSS
    /// database, which only holds the identity).
    pub origins: Vec<OriginStatus>,
}

/// Makes browsers present the device certificate at the cert-auth domain.
pub(crate) trait BrowserIntegration: Send + Sync + fmt::Debug {
    /// Puts the settings of `scope` in place for `target`, idempotently and without disturbing
    /// other entries; entries recorded in `written` that the target no longer wants are
    /// removed, and `written` is updated with what was added. For [`Scope::User`], `identity`
    /// is the current identity (imported or referenced as the platform needs). Returns a line
    /// per change made.
    fn apply(
        &self,
        scope: Scope,
        target: &BrowserTarget<'_>,
        identity: Option<&Identity>,
        written: &mut WrittenEntries,
    ) -> Result<Vec<String>, PlatformError>;

    /// Whether each browser's setting is in place for `target`.
    fn status(&self, target: &BrowserTarget<'_>) -> Result<Vec<BrowserStatus>, PlatformError>;

    /// Removes what [`BrowserIntegration::apply`] put in place for `scope`; `target` is the
    /// last known one, `None` when it was never learnt, and `written` what apply recorded.
    /// Returns a line per removed item; nothing to remove is success.
    fn remove(
        &self,
        scope: Scope,
        target: Option<&BrowserTarget<'_>>,
        written: &WrittenEntries,
    ) -> Result<Vec<String>, PlatformError>;
}

/// What the scheduler must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScheduleSpec<'a> {
    /// The agent binary.
    pub program: &'a Path,
    /// The configuration file to pass with `--config`, if one was given explicitly.
    pub config: Option<&'a Path>,
    /// The device's slot: the daily run fires at its minute of the day, local time.
    pub slot: Slot,
}

/// Whether the periodic run is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchedulerStatus {
    /// The timer or LaunchAgent is installed.
    pub installed: bool,
    /// What and where, for people.
    pub detail: String,
}

/// What an uninstall step removed, and what the user should know about what it could not do
/// (a service manager it could not reach), each a line for people.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Removal {
    /// One line per removed item (printed after `removed `).
    pub removed: Vec<String>,
    /// Whole sentences, printed as they are.
    pub notes: Vec<String>,
}

/// Runs `devicetrust-agent run` at login and daily (systemd user timer, LaunchAgent).
pub(crate) trait Scheduler: Send + Sync + fmt::Debug {
    /// Installs (or refreshes) the periodic run for the current user; a line per change.
    fn install(&self, spec: &ScheduleSpec<'_>) -> Result<Vec<String>, PlatformError>;
    /// Removes it; nothing to remove is success.
    fn uninstall(&self) -> Result<Removal, PlatformError>;
    /// Whether it is installed.
    fn status(&self) -> Result<SchedulerStatus, PlatformError>;
    /// Brings an installed schedule's daily time to `slot`'s, keeping what it runs (a
    /// schedule written by an earlier version fires at another minute); a line per change.
    /// Nothing installed, or already at the slot: nothing to do.
    fn refresh(&self, slot: Slot) -> Result<Vec<String>, PlatformError>;
}

/// Tells the user what needs their action.
pub(crate) trait Notifier: Send + Sync + fmt::Debug {
    /// A renewal replaced the certificate: running browsers may keep presenting the old one
    /// until restarted. `browsers` are the status names of those that hold the identity and
    /// are installed; the backend tells the user about the ones that are running.
    fn browser_restart_needed(&self, browsers: &[String]);
}

/// What a backend needs to know to open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PlatformOptions {
    /// Overrides the agent's data directory (configuration `data_dir`).
    pub data_dir: Option<PathBuf>,
}

/// One backend: every platform service the agent uses.
#[derive(Debug)]
pub(crate) struct Platform {
    /// The agent's own state directory (backoff state, cached CA metadata, the run lock).
    pub data_dir: PathBuf,
    /// Where identities live.
    pub store: Arc<dyn IdentityStore>,
    /// Facts about the device.
    pub device: Box<dyn DeviceFacts>,
    /// Browser settings.
    pub browsers: Box<dyn BrowserIntegration>,
    /// The periodic run.
    pub scheduler: Box<dyn Scheduler>,
    /// User notifications.
    pub notifier: Box<dyn Notifier>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

/// Opens the backend compiled for this operating system.
pub(crate) fn open(options: &PlatformOptions) -> Result<Platform, PlatformError> {
    #[cfg(target_os = "macos")]
    {
        macos::open(options)
    }
    #[cfg(not(target_os = "macos"))]
    {
        linux::open(options)
    }
}
