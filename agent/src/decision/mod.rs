//! The decision core: what the agent should do now.
//!
//! [`decide_at`] is a pure function of the local identity state, what the CA last said, the
//! configuration, the persisted backoff state, the time and the local offset from UTC (for
//! the device's slot, [`schedule`]). It performs no I/O: it does not
//! read files, talk to the CA, look at the clock or draw random numbers by itself (the
//! backoff's [`backoff::Jitter`] is handed in), so every rule is tested with a fixed time and
//! property tests. The agent's commands gather the inputs, call it, and carry out the
//! decision through the crash-safe lifecycle.
//!
//! The module is public so that the fleet simulator (`tests/src/bin/devicetrust-fleet-sim.rs`)
//! drives the very rules the agent runs; the agent itself is its only other user.

pub mod backoff;
pub mod schedule;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};

pub use backoff::BackoffState;
pub use schedule::Slot;

/// Whether the device's own MDM enrollment check says it is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MdmEnrollment {
    /// The device reports an MDM enrollment.
    Enrolled,
    /// The device reports none: enrollment and renewal are pointless (the CA would refuse).
    NotEnrolled,
    /// The platform cannot tell (Linux): the CA's check decides.
    Unknown,
}

/// The validity of a certificate, as far as the core cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFacts {
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

/// What the device holds locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalIdentity {
    /// Nothing at all.
    None,
    /// Only a key persisted before an enrollment request whose answer was never stored; an
    /// enrollment retried with it gets the same certificate back.
    PendingKey,
    /// An identity.
    Enrolled(CertFacts),
    /// An identity, and beside it the key of a renewal that has not switched over yet.
    Renewing {
        /// The identity still in use.
        current: CertFacts,
    },
}

impl LocalIdentity {
    #[cfg(test)]
    /// The identity in use, if any.
    pub const fn current(&self) -> Option<&CertFacts> {
        match self {
            Self::Enrolled(facts) | Self::Renewing { current: facts } => Some(facts),
            Self::None | Self::PendingKey => None,
        }
    }
}

/// What the CA last said about the current certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CaVerdict {
    /// Not asked yet, or the CA could not be reached.
    #[default]
    Unknown,
    /// Known to the CA, not revoked.
    Good,
    /// Revoked: everything must go.
    Revoked,
    /// The CA no longer accepts it for renewal (`client_certificate_required`,
    /// `certificate_expired`): only a new enrollment helps.
    ReenrollRequired,
}

/// The command that asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// `run`: the periodic job; enrolls, renews or does nothing, as due.
    Run,
    /// `enroll`: an explicit request to enroll; does nothing when already enrolled.
    Enroll,
    /// `renew`: renews when due, or now with `force`.
    Renew {
        /// `--force`: renew now, ignoring the due time and the backoff.
        force: bool,
    },
}

/// Everything the decision depends on, except the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// What the device holds.
    pub identity: LocalIdentity,
    /// What the CA last said about the current certificate.
    pub ca: CaVerdict,
    /// Which command asks.
    pub intent: Intent,
    /// Whether an enrollment token was supplied.
    pub token_given: bool,
    /// The configured renewal window (`renew_before_days`).
    pub renew_before: TimeDelta,
    /// This device's place in the working week ([`Slot::for_device`]).
    pub slot: Slot,
    /// The device's local time, as an offset from UTC, now.
    pub utc_offset: FixedOffset,
    /// Failures remembered across runs.
    pub backoff: BackoffState,
    /// The device's own MDM enrollment check.
    pub mdm: MdmEnrollment,
}

/// Why a renewal happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenewReason {
    /// The due time has passed, and the run is in the device's slot or the grace is over.
    Due,
    /// `renew --force`.
    Forced,
    /// A renewal left its key beside the current identity; finishing it reuses that key.
    Resume,
}

/// Why nothing can be done now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blocked {
    /// `renew` without an identity.
    NotEnrolled,
    /// Enrollment is needed but no token was supplied.
    NoToken,
    /// The device's own check says it is not MDM-enrolled; the CA would refuse.
    DeviceNotManaged,
    /// A recent failure: automatic attempts wait until `until`.
    BackingOff {
        /// The earliest next attempt.
        until: DateTime<Utc>,
    },
    /// The CA refuses the current certificate for renewal; re-enrollment is needed.
    ReenrollRequired,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Enroll (with the pending key when one is left, so no CA slot is wasted).
    Enroll,
    /// Renew the current identity.
    Renew(RenewReason),
    /// Nothing to do now. `next_due` is when the current certificate's renewal is due; for a
    /// periodic run after that, when it waits for its slot, the earliest time a run renews.
    Nothing {
        /// When the next run may renew.
        next_due: DateTime<Utc>,
    },
    /// The CA revoked the certificate: remove every artifact.
    Uninstall,
    /// Something prevents progress.
    Blocked(Blocked),
    /// The certificate is past its notAfter: report, keep the files for diagnosis.
    Expired {
        /// When it expired.
        not_after: DateTime<Utc>,
    },
}

/// Decides what to do at `now`.
pub fn decide_at(inputs: &Inputs, now: DateTime<Utc>) -> Decision {
    match inputs.identity {
        LocalIdentity::None | LocalIdentity::PendingKey => decide_without_identity(inputs, now),
        LocalIdentity::Enrolled(current) => decide_with_identity(inputs, current, false, now),
        LocalIdentity::Renewing { current } => decide_with_identity(inputs, current, true, now),
    }
}

fn decide_without_identity(inputs: &Inputs, now: DateTime<Utc>) -> Decision {
    if matches!(inputs.intent, Intent::Renew { .. }) {
        return Decision::Blocked(Blocked::NotEnrolled);
    }
    if !inputs.token_given {
        return Decision::Blocked(Blocked::NoToken);
    }
    if inputs.mdm == MdmEnrollment::NotEnrolled {
        return Decision::Blocked(Blocked::DeviceNotManaged);
    }
    // An explicit `enroll` is an operator's request; only the unattended run backs off.
    if inputs.intent == Intent::Run
        && let Some(until) = inputs.backoff.waiting_until(now)
    {
        return Decision::Blocked(Blocked::BackingOff { until });
    }
    Decision::Enroll
}

fn decide_with_identity(inputs: &Inputs, current: CertFacts, renewing: bool, now: DateTime<Utc>) -> Decision {
    // Revocation outranks everything, expiry included: a revoked identity must not linger.
    match inputs.ca {
        CaVerdict::Revoked => return Decision::Uninstall,
        CaVerdict::Unknown | CaVerdict::Good | CaVerdict::ReenrollRequired => {}
    }
    if now >= current.not_after {
        return Decision::Expired { not_after: current.not_after };
    }
    if inputs.ca == CaVerdict::ReenrollRequired {
        return Decision::Blocked(Blocked::ReenrollRequired);
    }
    let due = schedule::renewal_due(&current, inputs.renew_before, inputs.slot, inputs.utc_offset);
    let reason = match inputs.intent {
        Intent::Enroll => return Decision::Nothing { next_due: due },
        Intent::Renew { force: true } => RenewReason::Forced,
        Intent::Run | Intent::Renew { force: false } if renewing => RenewReason::Resume,
        Intent::Run | Intent::Renew { force: false } if now < due => {
            return Decision::Nothing { next_due: due };
        }
        // A person asking renews once due; so does the periodic run in its slot, or anywhere
        // once the grace is over ([`schedule`] says why).
        Intent::Renew { force: false } => RenewReason::Due,
        Intent::Run if !schedule::spread(&current, inputs.renew_before) => RenewReason::Due,
        Intent::Run if schedule::in_slot(now, inputs.slot, inputs.utc_offset) => RenewReason::Due,
        Intent::Run => {
            let grace_end = schedule::grace_end(due, inputs.utc_offset);
            if now >= grace_end {
                RenewReason::Due
            } else {
                let slot = schedule::next_slot_start(now, inputs.slot, inputs.utc_offset);
                return Decision::Nothing { next_due: slot.min(grace_end) };
            }
        }
    };
    if inputs.mdm == MdmEnrollment::NotEnrolled {
        return Decision::Blocked(Blocked::DeviceNotManaged);
    }
    if reason != RenewReason::Forced
        && let Some(until) = inputs.backoff.waiting_until(now)
    {
        return Decision::Blocked(Blocked::BackingOff { until });
    }
    Decision::Renew(reason)
}

#[cfg(test)]
mod tests;
