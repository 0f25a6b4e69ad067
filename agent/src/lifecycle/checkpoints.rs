//! Named steps of enrollment and renewal, and the crash-test hook at each of them.
//!
//! Crash tests need the process to die at a precise point, exactly as a power cut or a kill
//! would leave it: no destructors, no cleanup. Built with the cargo feature `test-hooks`,
//! the agent calls `std::process::abort()` when the environment variable
//! `DEVICETRUST_TEST_ABORT_AT` names the step it reached. Without the feature the hook is
//! compiled out and the variable is ignored. In-process tests inject their own
//! [`Checkpoints`] instead.

use std::fmt;

/// The environment variable naming the step to abort at (feature `test-hooks` only).
pub const ABORT_AT_ENV: &str = "DEVICETRUST_TEST_ABORT_AT";

/// A point in enrollment or renewal after which a crash must be recoverable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The enrollment key is persisted as pending; nothing was sent.
    EnrollAfterPendingKey,
    /// The CA answered the enrollment; nothing was stored.
    EnrollAfterRequest,
    /// The certificate is stored beside the pending key; not yet promoted.
    EnrollAfterStoreCert,
    /// The renewal key is persisted beside the current identity; nothing was sent.
    RenewAfterPendingKey,
    /// The CA answered the renewal; nothing was stored.
    RenewAfterRequest,
    /// The new identity is stored beside the old one; not yet switched over.
    RenewAfterStoreNew,
    /// The new identity is current; the old one is not deleted yet.
    RenewAfterSwitch,
}

impl Step {
    /// Every step, in the order they are reached.
    pub const ALL: [Self; 7] = [
        Self::EnrollAfterPendingKey,
        Self::EnrollAfterRequest,
        Self::EnrollAfterStoreCert,
        Self::RenewAfterPendingKey,
        Self::RenewAfterRequest,
        Self::RenewAfterStoreNew,
        Self::RenewAfterSwitch,
    ];

    /// Whether the step is one of enrollment (else of renewal).
    pub const fn is_enrollment(self) -> bool {
        matches!(self, Self::EnrollAfterPendingKey | Self::EnrollAfterRequest | Self::EnrollAfterStoreCert)
    }

    /// The name `DEVICETRUST_TEST_ABORT_AT` uses, e.g. `enroll.after_request`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EnrollAfterPendingKey => "enroll.after_pending_key",
            Self::EnrollAfterRequest => "enroll.after_request",
            Self::EnrollAfterStoreCert => "enroll.after_store_cert",
            Self::RenewAfterPendingKey => "renew.after_pending_key",
            Self::RenewAfterRequest => "renew.after_request",
            Self::RenewAfterStoreNew => "renew.after_store_new",
            Self::RenewAfterSwitch => "renew.after_switch",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A crash simulated by an in-process test at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("simulated crash at {0}")]
pub(crate) struct SimulatedCrash(pub Step);

/// Called at every [`Step`]; an error stops the operation right there, with no cleanup.
pub(crate) trait Checkpoints: fmt::Debug {
    /// The operation reached `step`.
    fn reached(&self, step: Step) -> Result<(), SimulatedCrash>;
}

/// The production checkpoints: a log line, and with the feature `test-hooks`, an abort when
/// `DEVICETRUST_TEST_ABORT_AT` names the step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessCheckpoints;

impl Checkpoints for ProcessCheckpoints {
    fn reached(&self, step: Step) -> Result<(), SimulatedCrash> {
        tracing::debug!(step = step.name(), "reached");
        #[cfg(feature = "test-hooks")]
        if std::env::var_os(ABORT_AT_ENV).is_some_and(|at| at == step.name()) {
            eprintln!("devicetrust-agent: test hook: aborting at {step}");
            std::process::abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let names: std::collections::BTreeSet<_> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Step::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("enroll.after_") || n.starts_with("renew.after_")));
    }
}
