//! `enroll`, `run` and `renew`: one cycle that gathers the local state, the CA's word on the
//! current certificate and the backoff, asks the decision core what to do, does it through
//! the lifecycle flows, and records the outcome (backoff, verdict, browser entries).

use std::io::Write;

use ca_client::ClientError;
use ca_client::protocol::{CertificateState, Metadata, Reaction};
use chrono::{DateTime, TimeDelta, Utc};

use super::state_dir::{AgentState, CaStatusRecord, CachedMetadata, RevokedRecord, Verdict};
use super::{
    Agent, AgentError, Current, METADATA_REFRESH, error_chain, find_client_error, rfc3339, target_of,
    warn_skipped_origins,
};
use crate::decision::MdmEnrollment;
use crate::decision::backoff::Jitter;
use crate::decision::{self, BackoffState, Blocked, Decision, Inputs, Intent, RenewReason};
use crate::lifecycle::{self, CaApi, LifecycleError};
use crate::platform::{Scope, WrittenEntries};
use crate::token::Secret;

impl Agent {
    /// `enroll`.
    pub(crate) fn enroll(&self, token: Option<Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Enroll, token.as_ref(), out)?;
        self.ensure_scheduled(out)
    }

    /// `run`.
    pub(crate) fn run(&self, token: Option<Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Run, token.as_ref(), out)
    }

    /// `renew [--force]`.
    pub(crate) fn renew(&self, force: bool, out: &mut dyn Write) -> Result<(), AgentError> {
        self.cycle(Intent::Renew { force }, None, out)
    }

    fn cycle(&self, intent: Intent, token: Option<&Secret>, out: &mut dyn Write) -> Result<(), AgentError> {
        // First of all, before the lock file and the state can fail: browsers in this session
        // prompt for a password nobody knows while the keychain is locked (after a login, until
        // a run unlocks it). A failure is logged; the run goes on and reports its own errors.
        self.unlock_store();
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
                .map_or(decision::CaVerdict::Unknown, |c| state.verdict_for(c.info.serial_number())),
            intent,
            token_given: token.is_some(),
            renew_before: self.config.renew_before()?,
            slot: self.device_slot(current.as_ref()),
            utc_offset: self.platform.clock.utc_offset(now),
            backoff: state.backoff.clone(),
            mdm: MdmEnrollment::Unknown,
        };
        let mut decision = decision::decide_at(&inputs, now);
        if matches!(decision, Decision::Enroll | Decision::Renew(_)) {
            // Asked only when it matters: on macOS it runs `profiles`.
            inputs.mdm = self.platform.device.mdm_enrollment().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the local MDM enrollment check failed; leaving it to the CA");
                MdmEnrollment::Unknown
            });
            decision = decision::decide_at(&inputs, now);
        }
        tracing::debug!(?decision, "decided");
        // The periodic run keeps its own schedule at the slot (an uninstall removes it anyway).
        if intent == Intent::Run && decision != Decision::Uninstall {
            self.refresh_schedule(inputs.slot);
        }

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
                    tracing::info!(next = %rfc3339(next_due), serial = c.info.serial_number(), "nothing to do until then");
                }
                if intent == Intent::Run && status_error.is_none() && now < c.info.not_after() {
                    self.refresh_metadata(cached.as_ref(), &mut state, now, out)?;
                }
                match status_error {
                    Some(source) => {
                        Err(AgentError::Ca { action: "check the certificate's status at the CA", source })
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
                    try_now: if current.is_some() {
                        AgentError::TRY_RENEW_NOW
                    } else {
                        AgentError::TRY_ENROLL_NOW
                    },
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
                tracing::warn!(asked = serial, answered = %status.serial_number, "the CA answered about another certificate; ignoring it");
                return Ok(Some(ClientError::Malformed {
                    status: 200,
                    reason: "the status is about another certificate".to_owned(),
                }));
            }
            Err(e) => match e.reaction() {
                Reaction::Uninstall => Verdict::Revoked,
                Reaction::Reenroll => Verdict::ReenrollRequired,
                _ => {
                    // Info, not a warning: when nothing else is to be done the run ends with
                    // this error, which is then reported (once); a renewal goes ahead anyway.
                    tracing::info!(error = %error_chain(&e), "could not check the certificate's status at the CA");
                    return Ok(Some(e));
                }
            },
        };
        tracing::debug!(?verdict, serial, "the CA's view of the certificate");
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
                tracing::warn!(error = %error_chain(&e), "could not refresh the CA metadata; using the cached copy");
                return Ok(());
            }
        };
        let told = |m: &Metadata| {
            (m.cert_auth_domain.clone(), m.issuer_common_name.clone(), m.protected_origins.clone())
        };
        if cached.is_none_or(|c| told(&c.metadata) != told(&fresh)) {
            tracing::info!("the CA changed what browsers are told; applying it");
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
            let err = AgentError::Ca { action: "fetch the CA metadata", source };
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
            tracing::warn!(error = %e, "could not cache the CA metadata");
        }
        Ok(metadata)
    }

    fn record_failure(
        &self,
        state: &mut AgentState,
        now: DateTime<Utc>,
        error: &(dyn std::error::Error + 'static),
    ) {
        // A failure that waiting cannot cure (a wrong token, a server certificate outside
        // ca_bundle) is recorded for `status` but starts no backoff: the run after the fix
        // goes ahead at once.
        if find_client_error(error).is_some_and(|e| !e.is_retryable()) {
            state.backoff = state.backoff.after_permanent_failure(now, error_chain(error));
            tracing::info!(
                failures = state.backoff.failures,
                "attempt failed; not retried until something changes"
            );
            if let Err(e) = self.state.save(state) {
                tracing::error!(error = %e, "could not record the failure");
            }
            return;
        }
        let retry_after = find_client_error(error).and_then(ClientError::retry_after);
        let mut next = state.backoff.after_failure(now, Jitter(rand::random()), error_chain(error));
        if let (Some(wait), Some(at)) =
            (retry_after.and_then(|w| TimeDelta::from_std(w).ok()), next.next_attempt)
            && now + wait > at
        {
            // The CA asked for a longer wait than the backoff: honour it.
            next.next_attempt = Some(now + wait.min(decision::backoff::CAP));
        }
        tracing::info!(
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
        // Only browsers that hold the identity and are installed can present the old one.
        let names = match statuses {
            Some(statuses) => statuses
                .into_iter()
                .filter(|s| s.present && s.installed != Some(false))
                .map(|s| s.browser)
                .collect(),
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
                tracing::warn!(error = %e, "the CA metadata cannot configure the browsers; nothing was written");
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

    fn uninstall_revoked(
        &self,
        serial: &str,
        metadata: Option<&Metadata>,
        state: &mut AgentState,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> Result<(), AgentError> {
        tracing::info!(serial, "the CA revoked the certificate; uninstalling");
        let (removal, incomplete) = self.remove_user_artifacts(metadata, &state.autoselect_written);
        // Kept while a removal failed, so that the next run can still tell our entries.
        let autoselect_written =
            if incomplete.is_empty() { WrittenEntries::new() } else { state.autoselect_written.clone() };
        for line in &removal.removed {
            writeln!(out, "removed {line}")?;
        }
        for note in &removal.notes {
            writeln!(out, "{note}")?;
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
}

/// Whether a failure was an attempt that should count for the backoff (not a local misuse
/// or a simulated crash).
fn counts_as_attempt(e: &LifecycleError) -> bool {
    !matches!(e, LifecycleError::Crash(_) | LifecycleError::AlreadyEnrolled | LifecycleError::NotEnrolled)
}
