//! The subcommands: gather the inputs, ask the decision core, act through the lifecycle
//! flows and the platform, and report.
//!
//! [`Agent`] holds everything a command needs (configuration, platform backend, state files,
//! CA client, crash checkpoints), so that tests build one from in-memory parts and run the
//! same code the binary runs. Human-readable results go to the given output; diagnostics
//! go to the log (stderr).

use std::io::Write;

use ca_client::ClientError;
use ca_client::cert::CertificateInfo;
use ca_client::protocol::{CertificateState, DeviceInfo, ErrorCode, Metadata, Reaction};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::autoselect::{AutoSelectError, OurEntry};
use crate::config::{ConfigError, Loaded};
use crate::core::backoff::Jitter;
use crate::core::{
    self, BackoffState, Blocked, CertFacts, Decision, Inputs, Intent, LocalIdentity, RenewReason,
};
use crate::exit::Exit;
use crate::hooks::Checkpoints;
use crate::lifecycle::{self, CaApi, Enrollee, LifecycleError};
use crate::platform::{
    BrowserTarget, Identity, MdmEnrollment, Platform, PlatformError, ScheduleSpec, Scope, WrittenEntries,
};
use crate::state::{AgentState, CaStatusRecord, CachedMetadata, RevokedRecord, StateDir, Verdict};
use crate::token::{Secret, TokenError};

/// Why a command did not succeed; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
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
    #[error("this device reports no mdm enrollment, so the ca would refuse it")]
    DeviceNotManaged,
    /// A recent failure; automatic attempts wait.
    #[error(
        "waiting until {until} after {failures} failed attempt(s) (last error: {last_error}); \
         `renew --force` tries now"
    )]
    BackingOff {
        /// The earliest next attempt.
        until: String,
        /// Consecutive failures.
        failures: u32,
        /// The last failure's message.
        last_error: String,
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
        "the ca no longer accepts certificate {serial}; run `devicetrust-agent uninstall`, then enroll again"
    )]
    ReenrollRequired {
        /// Its serial.
        serial: String,
    },
    /// The CA revoked the certificate; the agent uninstalled.
    #[error("the ca revoked certificate {serial}; everything was uninstalled{}", incomplete_suffix(.incomplete))]
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
    #[error("the ca metadata {from} cannot configure browsers")]
    BrowserTarget {
        /// Where the metadata came from.
        from: String,
        /// What is wrong with it.
        #[source]
        source: AutoSelectError,
    },
    /// `install --system` as root has no CA to ask and a cache root may not use.
    #[error("install --system needs the ca's metadata fetched now: set ca_url in {config} or pass --ca-url")]
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
pub fn exit_for_client_error(e: &ClientError) -> Exit {
    match e.code() {
        Some(ErrorCode::DeviceNotManaged) => Exit::NotManaged,
        Some(ErrorCode::EnrollmentLimitReached) => Exit::LimitReached,
        Some(ErrorCode::CertificateRevoked) => Exit::Revoked,
        Some(ErrorCode::CertificateExpired | ErrorCode::ClientCertificateRequired) => Exit::Expired,
        Some(ErrorCode::InvalidToken) => Exit::Usage,
        _ => match e.reaction() {
            Reaction::RetryLater | Reaction::RetryNextRun => Exit::CaUnavailable,
            Reaction::Reenroll => Exit::Expired,
            Reaction::Uninstall => Exit::Revoked,
            Reaction::Fail => Exit::Failure,
        },
    }
}

impl AgentError {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
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
pub const METADATA_REFRESH: TimeDelta = TimeDelta::hours(12);

/// Formats a time the way every output of the agent does (RFC 3339, UTC, seconds).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The current identity with its parsed certificate.
#[derive(Debug)]
pub struct Current {
    /// The identity.
    pub identity: Identity,
    /// Its certificate.
    pub info: CertificateInfo,
}

/// Everything a command needs.
#[derive(Debug)]
pub struct Agent {
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
    pub fn new(
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
                || AgentError::Platform(PlatformError::Missing("the ca client")),
                AgentError::Config,
            )),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.platform.clock.now()
    }

    /// The current identity, parsed.
    pub fn current(&self) -> Result<Option<Current>, AgentError> {
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
    pub fn device_udid(&self) -> Result<String, PlatformError> {
        match &self.config.config.device_udid {
            Some(udid) => Ok(udid.trim().to_owned()),
            None => self.platform.device.udid(),
        }
    }

    /// The per-device offset: from the UDID the certificate names, else the device's.
    pub fn device_offset(&self, current: Option<&Current>) -> TimeDelta {
        let udid = current
            .and_then(|c| c.info.device_udid().map(str::to_owned))
            .or_else(|| self.device_udid().ok())
            .unwrap_or_default();
        core::schedule::device_offset(&udid)
    }

    fn enrollee(&self) -> Result<Enrollee, AgentError> {
        let device = &self.platform.device;
        let serial = match &self.config.config.device_serial {
            Some(serial) => serial.trim().to_owned(),
            None => device.serial_number().map_err(AgentError::DeviceFacts)?,
        };
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

    /// `enroll`.
    pub fn enroll(&self, token: Option<Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Enroll, token.as_ref(), out)
    }

    /// `run`.
    pub fn run(&self, token: Option<Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Run, token.as_ref(), out)
    }

    /// `renew [--force]`.
    pub fn renew(&self, force: bool, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Renew { force }, None, out)
    }

    fn cycle(&self, intent: Intent, token: Option<&Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        let _lock = self.state.lock()?;
        let now = self.now();
        let mut state = self.state.load()?;
        let cached = self.state.load_metadata()?;
        let recovery = lifecycle::recover(
            self.platform.store.as_ref(),
            cached.as_ref().map(|c| c.metadata.ca_certificates.as_slice()),
            self.device_udid().ok().as_deref(),
            now,
        )?;
        for action in &recovery.actions {
            tracing::info!("{action}");
        }
        let (local, current) = self.local_identity()?;

        // A crash between storing an identity and importing it into the browsers (or a
        // failed import) leaves the browsers behind the store; catch them up, cheaply,
        // from the state file rather than by asking every browser at every run.
        if let (Some(c), Some(cached)) = (&current, &cached)
            && state
                .browsers_serial
                .as_deref()
                .is_none_or(|s| !ca_client::cert::serials_equal(s, c.info.serial_number()))
            && now < c.info.not_after()
        {
            tracing::info!(
                serial = c.info.serial_number(),
                "the browsers lag behind the stored identity; applying it"
            );
            self.apply_user_browsers(&cached.metadata, &mut state, out)?;
        }

        // `run` asks the CA about the certificate at every run: that is how a revocation
        // reaches the device.
        let mut status_error = None;
        if intent == Intent::Run
            && let Some(c) = &current
            && now < c.info.not_after()
        {
            status_error = self.check_status(c, &mut state, now)?;
        }

        let mut inputs = Inputs {
            identity: local,
            ca: current
                .as_ref()
                .map_or(core::CaVerdict::Unknown, |c| state.verdict_for(c.info.serial_number())),
            intent,
            token_given: token.is_some(),
            renew_before: self.config.renew_before()?,
            device_offset: self.device_offset(current.as_ref()),
            backoff: state.backoff.clone(),
            mdm: MdmEnrollment::Unknown,
        };
        let mut decision = core::decide_at(&inputs, now);
        if matches!(decision, Decision::Enroll | Decision::Renew(_)) {
            // Asked only when it matters: on macOS it runs `profiles`.
            inputs.mdm = self.platform.device.mdm_enrollment().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the local mdm enrollment check failed; leaving it to the ca");
                MdmEnrollment::Unknown
            });
            decision = core::decide_at(&inputs, now);
        }
        tracing::debug!(?decision, "decided");

        match decision {
            Decision::Enroll => {
                let token = token.ok_or(AgentError::NoToken)?;
                self.do_enroll(token, &mut state, now, out)
            }
            Decision::Renew(reason) => self.do_renew(reason, &mut state, now, out),
            Decision::Nothing { next_due } => {
                let Some(c) = &current else { return Ok(()) };
                if intent == Intent::Enroll {
                    writeln!(
                        out,
                        "already enrolled: certificate {} valid until {}",
                        c.info.serial_number(),
                        rfc3339(c.info.not_after())
                    )?;
                } else if intent != Intent::Run {
                    writeln!(out, "nothing to do: renewal is due at {}", rfc3339(next_due))?;
                } else {
                    tracing::info!(due = %rfc3339(next_due), serial = c.info.serial_number(), "nothing to do");
                }
                if intent == Intent::Run && status_error.is_none() && now < c.info.not_after() {
                    self.refresh_metadata(cached.as_ref(), &mut state, now, out)?;
                }
                match status_error {
                    Some(source) => {
                        Err(AgentError::Ca { action: "check the certificate's status at the ca", source })
                    }
                    None => Ok(()),
                }
            }
            Decision::Uninstall => {
                let serial = current.as_ref().map(|c| c.info.serial_number().to_owned()).unwrap_or_default();
                self.uninstall_revoked(&serial, cached.as_ref().map(|c| &c.metadata), &mut state, now, out)
            }
            Decision::Blocked(blocked) => Err(match blocked {
                Blocked::NotEnrolled => AgentError::NotEnrolled,
                Blocked::NoToken => AgentError::NoToken,
                Blocked::DeviceNotManaged => AgentError::DeviceNotManaged,
                Blocked::BackingOff { until } => AgentError::BackingOff {
                    until: rfc3339(until),
                    failures: state.backoff.failures,
                    last_error: state.backoff.last_error.clone().unwrap_or_else(|| "unknown".to_owned()),
                },
                Blocked::ReenrollRequired => AgentError::ReenrollRequired {
                    serial: current.as_ref().map(|c| c.info.serial_number().to_owned()).unwrap_or_default(),
                },
            }),
            Decision::Expired { not_after } => Err(AgentError::Expired {
                serial: current.as_ref().map(|c| c.info.serial_number().to_owned()).unwrap_or_default(),
                not_after: rfc3339(not_after),
            }),
        }
    }

    /// Asks the CA about the current certificate and records its verdict; returns the error
    /// of a CA that could not answer (the verdict then stays what it was).
    fn check_status(
        &self,
        current: &Current,
        state: &mut AgentState,
        now: DateTime<Utc>,
    ) -> Result<Option<ClientError>, AgentError> {
        let serial = current.info.serial_number();
        let verdict = match self.ca()?.certificate_status(&current.identity) {
            Ok(status) if ca_client::cert::serials_equal(&status.serial_number, serial) => match status.state
            {
                CertificateState::Revoked => Verdict::Revoked,
                CertificateState::Unbound | CertificateState::Bound | CertificateState::Superseded => {
                    Verdict::Good
                }
            },
            Ok(status) => {
                tracing::warn!(asked = serial, answered = %status.serial_number, "the ca answered about another certificate; ignoring it");
                return Ok(Some(ClientError::Malformed {
                    status: 200,
                    reason: "the status is about another certificate".to_owned(),
                }));
            }
            Err(e) => match e.reaction() {
                Reaction::Uninstall => Verdict::Revoked,
                Reaction::Reenroll => Verdict::ReenrollRequired,
                _ => {
                    tracing::warn!(error = %error_chain(&e), "could not check the certificate's status at the ca");
                    return Ok(Some(e));
                }
            },
        };
        tracing::debug!(?verdict, serial, "the ca's view of the certificate");
        let record = CaStatusRecord { serial_number: serial.to_owned(), verdict, checked_at: now };
        if state
            .ca_status
            .as_ref()
            .is_none_or(|old| old.serial_number != record.serial_number || old.verdict != verdict)
        {
            state.ca_status = Some(record);
            self.state.save(state)?;
        }
        Ok(None)
    }

    /// Fetches the metadata again once the cache is older than [`METADATA_REFRESH`] (or from
    /// the future), and applies the browsers again when what they are told changed (the
    /// cert-auth domain, the issuer CN or the protected origins). A CA that cannot answer
    /// leaves the cached copy in use; it is no failed attempt.
    fn refresh_metadata(
        &self,
        cached: Option<&CachedMetadata>,
        state: &mut AgentState,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        let stale = cached.is_none_or(|c| now < c.fetched_at || now - c.fetched_at >= METADATA_REFRESH);
        if !stale {
            return Ok(());
        }
        let Ok(ca) = self.ca() else { return Ok(()) };
        let fresh = match self.fetch_metadata(ca, now) {
            Ok(metadata) => metadata,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not refresh the ca metadata; using the cached copy");
                return Ok(());
            }
        };
        let told = |m: &Metadata| {
            (m.cert_auth_domain.clone(), m.issuer_common_name.clone(), m.protected_origins.clone())
        };
        if cached.is_none_or(|c| told(&c.metadata) != told(&fresh)) {
            tracing::info!("the ca changed what browsers are told; applying it");
            // The fresh copy is cached already: should the apply fail or be cut short, the
            // browsers must count as behind, so that the next run's catch-up applies it again.
            state.browsers_serial = None;
            self.state.save(state)?;
            self.apply_user_browsers(&fresh, state, out)?;
        }
        Ok(())
    }

    /// The CA's metadata at the start of an enrollment or renewal; a failure counts as a
    /// failed attempt (backoff).
    fn fetch_metadata_for_attempt(
        &self,
        ca: &dyn CaApi,
        state: &mut AgentState,
        now: DateTime<Utc>,
    ) -> Result<Metadata, AgentError> {
        self.fetch_metadata(ca, now).map_err(|source| {
            let err = AgentError::Ca { action: "fetch the ca metadata", source };
            self.record_failure(state, now, &err);
            err
        })
    }

    fn fetch_metadata(&self, ca: &dyn CaApi, now: DateTime<Utc>) -> Result<Metadata, ClientError> {
        let metadata = ca.metadata()?;
        // Checked before it is cached: a malformed answer must change nothing.
        for pem in &metadata.ca_certificates {
            ca_client::cert::certificates_from_pem(pem.as_bytes()).map_err(|e| ClientError::Malformed {
                status: 200,
                reason: format!("caCertificates: {e}"),
            })?;
        }
        if metadata.ca_certificates.is_empty() {
            return Err(ClientError::Malformed { status: 200, reason: "caCertificates is empty".to_owned() });
        }
        // A cache that names an unsafe cert-auth domain would be applied to the browsers later.
        target_of(&metadata).map_err(|e| ClientError::Malformed { status: 200, reason: e.to_string() })?;
        let cached = CachedMetadata {
            fetched_at: now,
            ca_url: self.config.config.ca_url.clone().unwrap_or_default(),
            metadata: metadata.clone(),
        };
        if let Err(e) = self.state.save_metadata(&cached) {
            tracing::warn!(error = %e, "could not cache the ca metadata");
        }
        Ok(metadata)
    }

    fn record_failure(
        &self,
        state: &mut AgentState,
        now: DateTime<Utc>,
        error: &(dyn std::error::Error + 'static),
    ) {
        let retry_after = find_client_error(error).and_then(ClientError::retry_after);
        let mut next = state.backoff.after_failure(now, Jitter::random(), error_chain(error));
        if let (Some(wait), Some(at)) =
            (retry_after.and_then(|w| TimeDelta::from_std(w).ok()), next.next_attempt)
            && now + wait > at
        {
            // The CA asked for a longer wait than the backoff: honour it.
            next.next_attempt = Some(now + wait.min(core::backoff::CAP));
        }
        tracing::warn!(
            failures = next.failures,
            next_attempt = %next.next_attempt.map(rfc3339).unwrap_or_default(),
            "attempt failed; backing off"
        );
        state.backoff = next;
        if let Err(e) = self.state.save(state) {
            tracing::error!(error = %e, "could not record the failure");
        }
    }

    fn record_success(
        &self,
        state: &mut AgentState,
        serial: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        state.backoff = BackoffState::after_success(now);
        state.ca_status = Some(CaStatusRecord {
            serial_number: serial.to_owned(),
            verdict: Verdict::Good,
            checked_at: now,
        });
        state.revoked = None;
        self.state.save(state)?;
        Ok(())
    }

    fn do_enroll(
        &self,
        token: &Secret,
        state: &mut AgentState,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        let ca = self.ca()?;
        let enrollee = self.enrollee()?;
        let metadata = self.fetch_metadata_for_attempt(ca, state, now)?;
        let done = match lifecycle::enroll(
            self.platform.store.as_ref(),
            ca,
            token,
            &enrollee,
            &metadata,
            now,
            self.checkpoints.as_ref(),
        ) {
            Ok(done) => done,
            Err(e) => {
                if counts_as_attempt(&e) {
                    self.record_failure(state, now, &e);
                }
                return Err(e.into());
            }
        };
        self.record_success(state, done.certificate.serial_number(), now)?;
        tracing::info!(serial = done.certificate.serial_number(), created = done.created, "enrolled");
        writeln!(
            out,
            "enrolled: certificate {} valid until {}",
            done.certificate.serial_number(),
            rfc3339(done.certificate.not_after())
        )?;
        self.apply_user_browsers(&metadata, state, out)?;
        Ok(())
    }

    fn do_renew(
        &self,
        reason: RenewReason,
        state: &mut AgentState,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        tracing::info!(?reason, "renewing");
        let ca = self.ca()?;
        let metadata = self.fetch_metadata_for_attempt(ca, state, now)?;
        let result = lifecycle::renew(
            self.platform.store.as_ref(),
            self.ca()?,
            &metadata,
            now,
            self.checkpoints.as_ref(),
        );
        let done = match result {
            Ok(done) => done,
            Err(LifecycleError::Ca { source, .. }) if source.reaction() == Reaction::Uninstall => {
                let serial = self.current()?.map(|c| c.info.serial_number().to_owned()).unwrap_or_default();
                return self.uninstall_revoked(&serial, Some(&metadata), state, now, out);
            }
            Err(e) => {
                if let LifecycleError::Ca { source, .. } = &e
                    && source.reaction() == Reaction::Reenroll
                    && let Some(c) = self.current()?
                {
                    state.ca_status = Some(CaStatusRecord {
                        serial_number: c.info.serial_number().to_owned(),
                        verdict: Verdict::ReenrollRequired,
                        checked_at: now,
                    });
                }
                if counts_as_attempt(&e) {
                    self.record_failure(state, now, &e);
                }
                return Err(e.into());
            }
        };
        self.record_success(state, done.certificate.serial_number(), now)?;
        let old = done.replaced.as_deref().unwrap_or("?");
        tracing::info!(old, new = done.certificate.serial_number(), "renewed");
        writeln!(
            out,
            "renewed: certificate {} replaces {old}, valid until {}",
            done.certificate.serial_number(),
            rfc3339(done.certificate.not_after())
        )?;
        self.apply_user_browsers(&metadata, state, out)?;
        let statuses = target_of(&metadata).ok().and_then(|t| self.platform.browsers.status(&t).ok());
        let names = match statuses {
            Some(statuses) => statuses.into_iter().map(|s| s.browser).collect(),
            None => vec!["browsers".to_owned()],
        };
        self.platform.notifier.browser_restart_needed(&names);
        Ok(())
    }

    /// Puts the current identity into the user's browsers and records which certificate is
    /// there. A failure is reported but does not undo the enrollment: the next run sees that
    /// the browsers lag behind the store and applies it again.
    fn apply_user_browsers(
        &self,
        metadata: &Metadata,
        state: &mut AgentState,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        let Some(current) = self.current()? else { return Ok(()) };
        let target = match target_of(metadata) {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(error = %e, "the ca metadata cannot configure the browsers; nothing was written");
                return Ok(());
            }
        };
        warn_skipped_origins(&target);
        let mut written = state.autoselect_written.clone();
        let result =
            self.platform.browsers.apply(Scope::User, &target, Some(&current.identity), &mut written);
        // Recorded even after a failure: what was added before it is ours to remove later.
        state.autoselect_written = written;
        match result {
            Ok(lines) => {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
                state.browsers_serial = Some(current.info.serial_number().to_owned());
                self.state.save(state)?;
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "could not configure the browsers for the new certificate");
                // `browsers_serial` stays behind, so the next run applies again.
                if let Err(e) = self.state.save(state) {
                    tracing::warn!(error = %error_chain(&e), "could not record the browser entries added");
                }
            }
        }
        Ok(())
    }

    /// Removes the user's artifacts: browser settings, identities, the scheduled run.
    /// Returns the removed items and the failures.
    fn remove_user_artifacts(
        &self,
        metadata: Option<&Metadata>,
        written: &WrittenEntries,
    ) -> (Vec<String>, Vec<String>) {
        let target = metadata.and_then(|m| target_of(m).ok());
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        let steps: [(&str, Result<Vec<String>, PlatformError>); 3] = [
            ("browser settings", self.platform.browsers.remove(Scope::User, target.as_ref(), written)),
            ("identities", self.platform.store.remove_all()),
            ("scheduled run", self.platform.scheduler.uninstall()),
        ];
        for (what, result) in steps {
            match result {
                Ok(lines) => removed.extend(lines),
                Err(e) => failed.push(format!("{what}: {}", error_chain(&e))),
            }
        }
        (removed, failed)
    }

    fn uninstall_revoked(
        &self,
        serial: &str,
        metadata: Option<&Metadata>,
        state: &mut AgentState,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        tracing::warn!(serial, "the ca revoked the certificate; uninstalling");
        let (removed, incomplete) = self.remove_user_artifacts(metadata, &state.autoselect_written);
        // Kept while a removal failed, so that the next run can still tell our entries.
        let autoselect_written =
            if incomplete.is_empty() { WrittenEntries::new() } else { state.autoselect_written.clone() };
        for line in &removed {
            writeln!(out, "removed {line}")?;
        }
        // Keep the verdict (so that an incomplete removal is finished by the next run) and a
        // marker for `status`; drop everything else.
        *state = AgentState {
            backoff: BackoffState::default(),
            ca_status: Some(CaStatusRecord {
                serial_number: serial.to_owned(),
                verdict: Verdict::Revoked,
                checked_at: now,
            }),
            revoked: Some(RevokedRecord { serial_number: serial.to_owned(), uninstalled_at: now }),
            browsers_serial: None,
            autoselect_written,
        };
        self.state.save(state)?;
        Err(AgentError::Revoked { serial: serial.to_owned(), incomplete })
    }

    /// `uninstall [--system]`.
    pub fn uninstall(&self, system: bool, out: &mut dyn Write) -> Result<(), AgentError> {
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
        let (mut removed, failed) =
            self.remove_user_artifacts(cached.as_ref().map(|c| &c.metadata), &written);
        // The state holds the record of the entries the agent wrote: after a failure it stays,
        // so that `uninstall` run again still knows what to remove.
        if failed.is_empty() {
            removed.extend(self.state.remove_all()?);
        }
        report_removed(&removed, out)?;
        if failed.is_empty() { Ok(()) } else { Err(AgentError::Incomplete(failed)) }
    }

    fn metadata_for_system(&self) -> Option<Metadata> {
        if self.ca.is_some() {
            match self.ca().and_then(|ca| {
                ca.metadata().map_err(|source| AgentError::Ca { action: "fetch the ca metadata", source })
            }) {
                Ok(metadata) => return Some(metadata),
                Err(e) => tracing::warn!(error = %error_chain(&e), "using the cached ca metadata"),
            }
        }
        match self.state.load_metadata() {
            Ok(cached) => cached.map(|c| c.metadata),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "not using the cached ca metadata");
                None
            }
        }
    }

    /// `install [--system]`.
    ///
    /// With `--system` the metadata is fetched now when a CA is configured, else taken from
    /// the cache (as root only a cache only root can change). Its browser target is checked
    /// before anything is written.
    pub fn install(&self, system: bool, out: &mut dyn Write) -> Result<(), AgentError> {
        if system {
            let (metadata, from) = match self.ca() {
                Ok(ca) => {
                    let metadata = ca
                        .metadata()
                        .map_err(|source| AgentError::Ca { action: "fetch the ca metadata", source })?;
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
        // The scheduler runs the binary itself, not a symbolic link to it that someone might
        // repoint (`/usr/local/bin/devicetrust-agent` on a Mac).
        let program = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| PlatformError::io("could not find", "the agent binary", e))?;
        let config = if self.config.explicit { self.config.path.as_deref() } else { None };
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
        let spec = ScheduleSpec {
            program: &program,
            config,
            device_offset: self.device_offset(current.as_ref()).to_std().unwrap_or_default(),
        };
        let mut lines = self.platform.scheduler.install(&spec)?;
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

/// The browser target a CA's metadata describes, checked with the validator every browser
/// setting uses ([`OurEntry::new`], [`crate::origin`]): the agent writes no browser setting
/// for a target whose cert-auth domain or issuer CN fails here. A protected origin that fails
/// is only skipped ([`BrowserTarget::wanted`]; [`warn_skipped_origins`] says so).
pub fn target_of(metadata: &Metadata) -> Result<BrowserTarget<'_>, AutoSelectError> {
    OurEntry::new(&metadata.cert_auth_domain, &metadata.issuer_common_name)?;
    Ok(BrowserTarget {
        cert_auth_domain: &metadata.cert_auth_domain,
        issuer_common_name: &metadata.issuer_common_name,
        protected_origins: &metadata.protected_origins,
    })
}

/// Logs each protected origin of `target` that fails the origin check, and is therefore
/// written nowhere.
pub fn warn_skipped_origins(target: &BrowserTarget<'_>) {
    if let Ok(wanted) = target.wanted() {
        for skipped in &wanted.skipped {
            tracing::warn!(origin = %skipped.value, "skipping a protected origin: {skipped}");
        }
    }
}

/// Whether a failure was an attempt that should count for the backoff (not a local misuse
/// or a simulated crash).
fn counts_as_attempt(e: &LifecycleError) -> bool {
    !matches!(e, LifecycleError::Crash(_) | LifecycleError::AlreadyEnrolled | LifecycleError::NotEnrolled)
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

/// An error and its causes on one line: `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let next = e.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cur = e.source();
    }
    text
}

#[cfg(test)]
mod tests;

/// Runs the parsed command line: loads the configuration, opens the platform backend and
/// runs the subcommand. `stdin` is read only for `--token-stdin`.
pub fn execute(
    cli: &crate::cli::Cli,
    stdin: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
) -> Result<(), AgentError> {
    use crate::cli::Command;
    if let Command::Version = cli.command {
        writeln!(
            out,
            "devicetrust-agent {} (protocol v1, {})",
            lifecycle::CLIENT_VERSION,
            ca_client::protocol::Platform::current()
        )?;
        return Ok(());
    }
    // As root, only root's files (see `crate::trust`): the user's configuration is not looked
    // for, and what is read must be root's.
    let trust = crate::trust::Trust::of_this_process();
    let mut config =
        crate::config::load(cli.config.as_deref(), &crate::config::default_candidates(trust), trust)?;
    // Forced values of the managed preferences domain win over the file.
    #[cfg(target_os = "macos")]
    crate::macos::apply_managed_config(&mut config.config)?;
    if let Some(url) = &cli.ca_url {
        config.config.ca_url = Some(url.clone());
    }
    config.validate()?;
    if let Command::Profile(args) = &cli.command {
        return profile(args, &config, out);
    }
    let token = match &cli.command {
        Command::Enroll(args) | Command::Run(args) => {
            crate::token::read_token(&args.source(), stdin, std::env::var(crate::token::TOKEN_ENV).ok())?
        }
        _ => None,
    };
    let needs_ca = !matches!(cli.command, Command::Status { .. } | Command::Uninstall { system: false });
    let agent = Agent::open(config, needs_ca)?;
    match &cli.command {
        Command::Enroll(_) => agent.enroll(token, out),
        Command::Run(_) => agent.run(token, out),
        Command::Renew { force } => agent.renew(*force, out),
        Command::Status { json, jamf_ea } => {
            let format = match (json, jamf_ea) {
                (true, _) => crate::status::Format::Json,
                (_, true) => crate::status::Format::JamfEa,
                _ => crate::status::Format::Plain,
            };
            crate::status::render(&crate::status::gather(&agent), format, out)
        }
        Command::Install { system } => agent.install(*system, out),
        Command::Uninstall { system } => agent.uninstall(*system, out),
        Command::Version | Command::Profile(_) => Ok(()),
        #[cfg(target_os = "macos")]
        Command::Jamf(_) | Command::Allowlist(_) => Ok(()),
    }
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

/// `profile <kind>`: asks the CA for its metadata, then prints (or writes, 0600) a
/// configuration profile made from it. Needs no enrollment and touches no local state.
fn profile(args: &crate::cli::ProfileArgs, config: &Loaded, out: &mut dyn Write) -> Result<(), AgentError> {
    use crate::mobileconfig::{self, ProfileInputs};
    let url = config.require_ca_url()?;
    let roots = match &args.ca_bundle {
        Some(path) => Some(config.read_bundle(path)?),
        None => config.ca_bundle()?,
    };
    let remote = crate::remote::RemoteCa::new(client_options(config, url.clone(), roots, "unknown")?)
        .map_err(|source| AgentError::Ca { action: "set up the ca client", source })?;
    let metadata =
        remote.metadata().map_err(|source| AgentError::Ca { action: "fetch the ca's metadata", source })?;
    if let Ok(target) = target_of(&metadata) {
        warn_skipped_origins(&target);
    }
    let mut inputs = ProfileInputs::from_metadata(&metadata, &url);
    if let Some(path) = &args.token_file {
        let token = crate::token::read_token(
            &crate::token::TokenSource::File(path.clone()),
            &mut std::io::empty(),
            None,
        )?;
        inputs.enrollment_token = token.map(|t| t.expose().to_owned());
    }
    match &args.out {
        Some(path) => {
            mobileconfig::write_file(path, &mobileconfig::render(args.kind, &inputs)?)?;
            writeln!(out, "wrote {} profile to {}", args.kind, path.display())?;
        }
        None => mobileconfig::write_profile(args.kind, &inputs, out)?,
    }
    Ok(())
}

impl Agent {
    /// The agent on this machine's backend, with a client of the configured CA when
    /// `needs_ca` and a `ca_url` is configured.
    pub fn open(config: Loaded, needs_ca: bool) -> Result<Self, AgentError> {
        let platform = crate::platform::open(&crate::platform::PlatformOptions {
            data_dir: config.config.data_dir.clone(),
        })?;
        let ca: Option<Box<dyn CaApi>> = match config.ca_url()? {
            Some(url) if needs_ca => {
                let os_version = platform.device.os_version().unwrap_or_else(|_| "unknown".to_owned());
                let options = client_options(&config, url, config.ca_bundle()?, &os_version)?;
                let remote = crate::remote::RemoteCa::new(options)
                    .map_err(|source| AgentError::Ca { action: "set up the ca client", source })?;
                Some(Box::new(remote))
            }
            _ => None,
        };
        Ok(Self::new(config, platform, ca, Box::new(crate::hooks::ProcessCheckpoints)))
    }
}
