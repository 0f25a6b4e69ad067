//! The subcommands: gather the inputs, ask the decision core, act through the lifecycle
//! flows and the platform, and report. [`run`] is the one dispatcher; each group of
//! subcommands has its file: `cycle` (enroll, run, renew), `install` (install, uninstall),
//! `status`, `profile`, and on macOS `jamf` and `allowlist`. `state_dir` holds what the agent
//! remembers between runs (backoff, the CA's last verdict, cached metadata), beside the
//! identities that the platform's store keeps.
//!
//! [`Agent`] holds everything a command needs (configuration, platform backend, state files,
//! CA client, crash checkpoints), so that tests build one from in-memory parts and run the
//! same code the binary runs. Human-readable results go to the given output; diagnostics
//! go to the log (stderr).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use ca_client::ClientError;
use ca_client::cert::CertificateInfo;
use ca_client::protocol::{DeviceInfo, ErrorCode, Metadata, Reaction};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::autoselect::{AutoSelectError, OurEntry};
use crate::cli::{Cli, Command, TokenArgs};
use crate::config::{ConfigError, Loaded};
use crate::decision::{self, CertFacts, LocalIdentity};
use crate::lifecycle::checkpoints::Checkpoints;
use crate::lifecycle::{self, CaApi, Enrollee, LifecycleError};
use crate::platform::{BrowserTarget, Identity, Platform, PlatformError};
use crate::token::{Secret, TokenError};
use state_dir::StateDir;

mod cycle;
mod install;
mod profile;
mod state_dir;
mod status;

#[cfg(target_os = "macos")]
mod allowlist;
#[cfg(target_os = "macos")]
mod jamf;

#[cfg(test)]
mod tests;

pub use crate::exit::Exit;

/// Why a command did not succeed; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AgentError {
    /// The configuration is missing a value or has a bad one.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The enrollment token could not be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A platform operation failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// A device fact is missing (configure `device_udid` / `device_serial`).
    #[error("could not determine this device's identity")]
    DeviceFacts(#[source] PlatformError),
    /// Enrollment or renewal failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// A request to the CA outside enrollment and renewal failed.
    #[error("could not {action}")]
    Ca {
        /// What was being asked.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: ClientError,
    },
    /// `renew` without an identity.
    #[error("this device is not enrolled; enroll it first")]
    NotEnrolled,
    /// Enrollment is needed but no token was given.
    #[error(
        "this device is not enrolled and no enrollment token was given \
         (use --token-stdin, --token-file PATH or DEVICETRUST_ENROLLMENT_TOKEN)"
    )]
    NoToken,
    /// The device's own check says it is not MDM-enrolled.
    #[error("this device reports no MDM enrollment, so the CA would refuse it")]
    DeviceNotManaged,
    /// A recent failure; automatic attempts wait.
    #[error(
        "waiting until {until} after {failures} failed attempt(s) (last error: {last_error}); \
         {try_now} tries now"
    )]
    BackingOff {
        /// The earliest next attempt.
        until: String,
        /// Consecutive failures.
        failures: u32,
        /// The last failure's message.
        last_error: String,
        /// The command that tries at once in this state ([`AgentError::TRY_RENEW_NOW`] or
        /// [`AgentError::TRY_ENROLL_NOW`]).
        try_now: &'static str,
    },
    /// The certificate is past its notAfter; its files are kept for diagnosis.
    #[error(
        "the certificate {serial} expired at {not_after}; run `devicetrust-agent uninstall`, then enroll again"
    )]
    Expired {
        /// Its serial.
        serial: String,
        /// When it expired.
        not_after: String,
    },
    /// The CA no longer accepts the certificate.
    #[error(
        "the CA no longer accepts certificate {serial}; run `devicetrust-agent uninstall`, then enroll again"
    )]
    ReenrollRequired {
        /// Its serial.
        serial: String,
    },
    /// The CA revoked the certificate; the agent uninstalled.
    #[error("the CA revoked certificate {serial}; everything was uninstalled{}", incomplete_suffix(.incomplete))]
    Revoked {
        /// The revoked certificate.
        serial: String,
        /// Removals that failed (retried by the next run).
        incomplete: Vec<String>,
    },
    /// Uninstall could not remove everything.
    #[error("could not remove everything: {}", .0.join("; "))]
    Incomplete(Vec<String>),
    /// A configuration profile could not be made or written.
    #[error(transparent)]
    Profile(#[from] crate::mobileconfig::ProfileError),
    /// The CA's metadata names a browser target the agent refuses to write: a
    /// `certAuthDomain` that is not a safe https origin, or an unusable issuer CN.
    #[error("the CA metadata {from} cannot configure browsers")]
    BrowserTarget {
        /// Where the metadata came from.
        from: String,
        /// What is wrong with it.
        #[source]
        source: AutoSelectError,
    },
    /// `install --system` as root has no CA to ask and a cache root may not use.
    #[error("install --system needs the CA's metadata fetched now: set ca_url in {config} or pass --ca-url")]
    NoTrustedMetadata {
        /// The configuration file to set `ca_url` in.
        config: String,
        /// Why the cache was not used.
        #[source]
        source: PlatformError,
    },
    /// Writing the command's output failed.
    #[error("could not write the output")]
    Output(#[source] std::io::Error),
}

fn incomplete_suffix(incomplete: &[String]) -> String {
    if incomplete.is_empty() { String::new() } else { format!(" except: {}", incomplete.join("; ")) }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e)
    }
}

/// The exit code for a failed CA request.
pub(crate) fn exit_for_client_error(e: &ClientError) -> Exit {
    match e.code() {
        Some(ErrorCode::DeviceNotManaged) => Exit::NotManaged,
        Some(ErrorCode::EnrollmentLimitReached) => Exit::LimitReached,
        Some(ErrorCode::CertificateRevoked) => Exit::Revoked,
        Some(ErrorCode::CertificateExpired | ErrorCode::ClientCertificateRequired) => Exit::Expired,
        Some(ErrorCode::InvalidToken) => Exit::Usage,
        // Which server certificate the agent accepts is configuration (`ca_bundle`).
        _ if matches!(e, ClientError::UntrustedServer { .. }) => Exit::Usage,
        _ => match e.reaction() {
            Reaction::RetryLater | Reaction::RetryNextRun => Exit::CaUnavailable,
            Reaction::Reenroll => Exit::Expired,
            Reaction::Uninstall => Exit::Revoked,
            Reaction::Fail => Exit::Failure,
        },
    }
}

impl AgentError {
    /// What tries at once on an enrolled device: a forced renewal ignores the backoff.
    pub(crate) const TRY_RENEW_NOW: &'static str = "`devicetrust-agent renew --force`";
    /// What tries at once on a device that is not enrolled yet: an explicit enrollment is an
    /// operator's request, which does not back off.
    pub(crate) const TRY_ENROLL_NOW: &'static str =
        "`devicetrust-agent enroll` (with --token-stdin, --token-file or DEVICETRUST_ENROLLMENT_TOKEN)";

    /// The exit code this error ends the process with.
    pub(crate) fn exit(&self) -> Exit {
        match self {
            Self::Config(_) | Self::Token(_) | Self::DeviceFacts(_) => Exit::Usage,
            Self::BrowserTarget { .. } | Self::NoTrustedMetadata { .. } => Exit::Usage,
            Self::Platform(PlatformError::Untrusted(_)) => Exit::Usage,
            Self::Platform(_) | Self::Incomplete(_) | Self::Output(_) => Exit::Failure,
            Self::Profile(crate::mobileconfig::ProfileError::Write { .. }) => Exit::Failure,
            Self::Profile(_) => Exit::Usage,
            Self::Lifecycle(e) => match e {
                LifecycleError::Ca { source, .. } => exit_for_client_error(source),
                LifecycleError::Rejected(_) => Exit::CaUnavailable,
                LifecycleError::NotEnrolled => Exit::NotEnrolled,
                _ => Exit::Failure,
            },
            Self::Ca { source, .. } => exit_for_client_error(source),
            Self::NotEnrolled | Self::NoToken => Exit::NotEnrolled,
            Self::DeviceNotManaged => Exit::NotManaged,
            Self::BackingOff { .. } => Exit::CaUnavailable,
            Self::Expired { .. } | Self::ReenrollRequired { .. } => Exit::Expired,
            Self::Revoked { .. } => Exit::Revoked,
        }
    }
}

/// How old the cached metadata may get before `run` asks the CA again, so that a change of the
/// protected origins reaches the browsers within a day (the timer runs daily) without a
/// metadata request at every login.
pub(crate) const METADATA_REFRESH: TimeDelta = TimeDelta::hours(12);

/// Formats a time the way every output of the agent does (RFC 3339, UTC, seconds).
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The current identity with its parsed certificate.
#[derive(Debug)]
pub(crate) struct Current {
    /// The identity.
    pub identity: Identity,
    /// Its certificate.
    pub info: CertificateInfo,
}

/// Everything a command needs.
#[derive(Debug)]
pub(crate) struct Agent {
    /// The configuration in effect.
    pub config: Loaded,
    /// The platform backend.
    pub platform: Platform,
    /// The agent's state files.
    pub state: StateDir,
    ca: Option<Box<dyn CaApi>>,
    checkpoints: Box<dyn Checkpoints>,
}

impl Agent {
    /// An agent over the given parts; `ca` is `None` when no `ca_url` is configured.
    pub(crate) fn new(
        config: Loaded,
        platform: Platform,
        ca: Option<Box<dyn CaApi>>,
        checkpoints: Box<dyn Checkpoints>,
    ) -> Self {
        let state = StateDir::new(platform.data_dir.clone()).with_trust(config.trust);
        Self { config, platform, state, ca, checkpoints }
    }

    fn ca(&self) -> Result<&dyn CaApi, AgentError> {
        match &self.ca {
            Some(ca) => Ok(ca.as_ref()),
            None => Err(self.config.require_ca_url().err().map_or_else(
                || AgentError::Platform(PlatformError::Missing("the CA client")),
                AgentError::Config,
            )),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.platform.clock.now()
    }

    /// Unlocks the identity store for the user's session ([`crate::platform::IdentityStore::unlock`]);
    /// a failure is logged, not returned, so that it cannot stop the run that reports it.
    fn unlock_store(&self) {
        match self.platform.store.unlock() {
            Ok(true) => tracing::debug!("unlocked the identity store"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %crate::util::error_chain(&e), "could not unlock the identity store")
            }
        }
    }

    /// The current identity, parsed.
    pub(crate) fn current(&self) -> Result<Option<Current>, AgentError> {
        let Some(identity) = self.platform.store.current()? else { return Ok(None) };
        let info =
            CertificateInfo::from_pem(&identity.certificate_pem).map_err(|e| PlatformError::Corrupt {
                what: "the current certificate",
                location: self.platform.store.describe().location,
                reason: e.to_string(),
            })?;
        Ok(Some(Current { identity, info }))
    }

    /// The device UDID: the configured one, else the platform's.
    pub(crate) fn device_udid(&self) -> Result<String, PlatformError> {
        match &self.config.config.device_udid {
            Some(udid) => Ok(udid.trim().to_owned()),
            None => self.platform.device.udid(),
        }
    }

    /// The device's slot: from the UDID the certificate names, else the device's.
    pub(crate) fn device_slot(&self, current: Option<&Current>) -> decision::Slot {
        let udid = current
            .and_then(|c| c.info.device_udid().map(str::to_owned))
            .or_else(|| self.device_udid().ok())
            .unwrap_or_default();
        decision::Slot::for_device(&udid)
    }

    /// The device's serial number: the configured one, else the platform's.
    pub(crate) fn device_serial(&self) -> Result<String, PlatformError> {
        match &self.config.config.device_serial {
            Some(serial) => Ok(serial.trim().to_owned()),
            None => self.platform.device.serial_number(),
        }
    }

    fn enrollee(&self) -> Result<Enrollee, AgentError> {
        let device = &self.platform.device;
        let serial = self.device_serial().map_err(AgentError::DeviceFacts)?;
        Ok(Enrollee {
            device: DeviceInfo {
                udid: self.device_udid().map_err(AgentError::DeviceFacts)?,
                serial_number: serial,
                display_name: device.display_name().map_err(AgentError::DeviceFacts)?,
                os_version: device.os_version().map_err(AgentError::DeviceFacts)?,
            },
            user: device.current_user().map_err(AgentError::DeviceFacts)?,
        })
    }

    fn local_identity(&self) -> Result<(LocalIdentity, Option<Current>), AgentError> {
        let snapshot = self.platform.store.snapshot()?;
        let current = if snapshot.current { self.current()? } else { None };
        let local = match &current {
            Some(c) => {
                let facts = CertFacts { not_before: c.info.not_before(), not_after: c.info.not_after() };
                if snapshot.pending_key {
                    LocalIdentity::Renewing { current: facts }
                } else {
                    LocalIdentity::Enrolled(facts)
                }
            }
            None if snapshot.pending_key => LocalIdentity::PendingKey,
            None => LocalIdentity::None,
        };
        Ok((local, current))
    }

    /// The agent on this machine's backend, with a client of the configured CA when
    /// `needs_ca` and a `ca_url` is configured.
    pub(crate) fn open(config: Loaded, needs_ca: bool) -> Result<Self, AgentError> {
        let platform = crate::platform::open(&crate::platform::PlatformOptions {
            data_dir: config.config.data_dir.clone(),
        })?;
        let ca: Option<Box<dyn CaApi>> = match config.ca_url()? {
            Some(url) if needs_ca => {
                let os_version = platform.device.os_version().unwrap_or_else(|_| "unknown".to_owned());
                let options = client_options(&config, url, config.ca_bundle()?, &os_version)?;
                let remote =
                    crate::https_ca::HttpsCa::new(options, crate::https_ca::HttpsCa::terminal_progress())
                        .map_err(|source| AgentError::Ca { action: "set up the CA client", source })?;
                Some(Box::new(remote))
            }
            _ => None,
        };
        Ok(Self::new(config, platform, ca, Box::new(crate::lifecycle::checkpoints::ProcessCheckpoints)))
    }
}

/// The browser target a CA's metadata describes, checked with the validator every browser
/// setting uses ([`OurEntry::new`], [`crate::origin`]): the agent writes no browser setting
/// for a target whose cert-auth domain or issuer CN fails here. A protected origin that fails
/// is only skipped ([`BrowserTarget::wanted`]; [`warn_skipped_origins`] says so).
pub(crate) fn target_of(metadata: &Metadata) -> Result<BrowserTarget<'_>, AutoSelectError> {
    OurEntry::new(&metadata.cert_auth_domain, &metadata.issuer_common_name)?;
    Ok(BrowserTarget {
        cert_auth_domain: &metadata.cert_auth_domain,
        issuer_common_name: &metadata.issuer_common_name,
        protected_origins: &metadata.protected_origins,
    })
}

/// Logs each protected origin of `target` that fails the origin check, and is therefore
/// written nowhere.
pub(crate) fn warn_skipped_origins(target: &BrowserTarget<'_>) {
    if let Ok(wanted) = target.wanted() {
        for skipped in &wanted.skipped {
            tracing::warn!(origin = %skipped.value, "skipping a protected origin: {skipped}");
        }
    }
}

fn find_client_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(client) = e.downcast_ref::<ClientError>() {
            return Some(client);
        }
        cur = e.source();
    }
    None
}

pub(crate) use crate::util::error_chain;

/// Runs the parsed command line and returns the process's exit code: the one dispatcher of
/// every subcommand. `stdin` is read only for `--token-stdin`; an error is printed to
/// standard error with its whole chain of causes (`caused by: ...`).
pub fn run(cli: &Cli, stdin: &mut dyn BufRead, out: &mut dyn Write) -> ExitCode {
    let result = match &cli.command {
        Command::Version => version(out),
        Command::Profile(args) => load_config(cli).and_then(|config| profile::profile(args, &config, out)),
        Command::Enroll(args) => load_config(cli).and_then(|config| {
            let token = read_token(args, stdin)?;
            Agent::open(config, true)?.enroll(token, out)
        }),
        Command::Run(args) => load_config(cli).and_then(|config| {
            let token = read_token(args, stdin)?;
            Agent::open(config, true)?.run(token, out)
        }),
        Command::Renew { force } => open(cli, true).and_then(|agent| agent.renew(*force, out)),
        Command::Status { json, jamf_ea } => open(cli, false).and_then(|agent| {
            let format = match (json, jamf_ea) {
                (true, _) => status::Format::Json,
                (_, true) => status::Format::JamfEa,
                _ => status::Format::Plain,
            };
            status::render(&status::gather(&agent), format, out)
        }),
        Command::Install { system } => open(cli, true).and_then(|agent| agent.install(*system, out)),
        // A user's uninstall must work without a CA, and the system one uses it only to learn
        // which origins to remove.
        // On macOS the system scope is the MDM's profiles: nothing to fetch the metadata for.
        Command::Uninstall { system } => {
            open(cli, *system && !cfg!(target_os = "macos")).and_then(|agent| agent.uninstall(*system, out))
        }
        // The macOS-only subcommands speak in the Jamf policy log's terms (see their modules).
        #[cfg(target_os = "macos")]
        Command::Jamf(args) => return jamf::run(args, cli.config.as_deref(), stdin, out),
        #[cfg(target_os = "macos")]
        Command::Allowlist(command) => return allowlist::run(command, cli.config.as_deref(), out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`status | head -1`): the output is nobody's any more, and
        // whatever the command did is done. Quiet, like any Unix filter.
        Err(AgentError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devicetrust-agent: error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            e.exit().into()
        }
    }
}

/// `version`.
fn version(out: &mut dyn Write) -> Result<(), AgentError> {
    writeln!(
        out,
        "devicetrust-agent {} (protocol v1, {})",
        lifecycle::CLIENT_VERSION,
        ca_client::protocol::Platform::current()
    )?;
    Ok(())
}

/// The configuration in effect: the file, then (on a Mac) the forced managed preferences,
/// then `--ca-url`; checked.
fn load_config(cli: &Cli) -> Result<Loaded, AgentError> {
    // As root, only root's files (see `crate::trust`): the user's configuration is not looked
    // for, and what is read must be root's.
    let trust = crate::trust::Trust::of_this_process();
    let mut config =
        crate::config::load(cli.config.as_deref(), &crate::config::default_candidates(trust), trust)?;
    // Forced values of the managed preferences domain win over the file.
    #[cfg(target_os = "macos")]
    crate::platform::macos::apply_managed_config(&mut config.config)?;
    if let Some(url) = &cli.ca_url {
        config.config.ca_url = Some(url.clone());
    }
    config.validate()?;
    Ok(config)
}

/// The agent on this machine under the configuration in effect, with a CA client when
/// `needs_ca`.
fn open(cli: &Cli, needs_ca: bool) -> Result<Agent, AgentError> {
    Agent::open(load_config(cli)?, needs_ca)
}

/// The enrollment token the flags (or the environment) name, if any.
fn read_token(args: &TokenArgs, stdin: &mut dyn BufRead) -> Result<Option<Secret>, AgentError> {
    Ok(crate::token::read_token(&args.source(), stdin, std::env::var(crate::token::TOKEN_ENV).ok())?)
}

/// How to reach the CA at `url` under this configuration.
fn client_options(
    config: &Loaded,
    url: url::Url,
    pinned_roots_pem: Option<Vec<u8>>,
    os_version: &str,
) -> Result<ca_client::ClientOptions, AgentError> {
    let mut options = ca_client::ClientOptions::new(url);
    options.pinned_roots_pem = pinned_roots_pem;
    options.timeout = config.ca_timeout()?;
    options.connect_timeout = options.connect_timeout.min(options.timeout);
    options.user_agent = ca_client::user_agent(
        lifecycle::CLIENT_VERSION,
        ca_client::protocol::Platform::current(),
        os_version,
    );
    Ok(options)
}
