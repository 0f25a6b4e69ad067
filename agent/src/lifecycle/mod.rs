//! Crash-safe, slot-saving enrollment and renewal, and recovery after a crash.
//!
//! The CA counts every unbound certificate against a device limit, and enrollment is
//! idempotent per key: the same key gets the same certificate back. So the key is persisted
//! as *pending* before any request, and every retry reuses it. A new identity is stored
//! beside the current one, checked (the certificate is for the key, chains to the CA's
//! certificates, names this device, and the key produces a signature that verifies),
//! switched to in one atomic step, and only then is the old one deleted. At every named
//! [`Step`] a crash leaves a state that [`recover`] or the next attempt completes without a
//! second certificate.
//!
//! The CA is reached through [`CaApi`], so that tests run these flows against an in-memory
//! CA and stop them at any step.

use std::fmt;
use std::sync::Arc;

use ca_client::ClientError;
use ca_client::cert::{self, CertificateInfo};
use ca_client::csr::{self, CsrError};
use ca_client::protocol::{CertificateStatus, DeviceInfo, EnrollRequest, Metadata, Platform, RenewRequest};
use ca_client::response::Issued;
use ca_client::signer::{KeyAlgorithm, KeySigner};
use chrono::{DateTime, Utc};

use crate::lifecycle::checkpoints::{Checkpoints, SimulatedCrash, Step};
use crate::platform::{Identity, IdentityStore, PlatformError};
use crate::token::Secret;

/// The agent's version, sent as `clientVersion`.
pub(crate) const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The CN put in CSRs; the CA ignores it and sets its own.
const CSR_COMMON_NAME: &str = "devicetrust-agent";

/// The calls the flows make to the CA.
pub(crate) trait CaApi: fmt::Debug {
    /// `GET /api/v1/metadata`.
    fn metadata(&self) -> Result<Metadata, ClientError>;
    /// `POST /api/v1/enroll` with the bearer token.
    fn enroll(&self, token: &Secret, request: &EnrollRequest) -> Result<Issued, ClientError>;
    /// `POST /api/v1/renew` over mutual TLS with `identity`.
    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError>;
    /// `GET /api/v1/certificate` over mutual TLS with `identity`.
    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError>;
}

impl<T: CaApi + ?Sized> CaApi for std::sync::Arc<T> {
    fn metadata(&self) -> Result<Metadata, ClientError> {
        (**self).metadata()
    }
    fn enroll(&self, token: &Secret, request: &EnrollRequest) -> Result<Issued, ClientError> {
        (**self).enroll(token, request)
    }
    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError> {
        (**self).renew(identity, request)
    }
    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError> {
        (**self).certificate_status(identity)
    }
}

/// Which request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    /// Enrollment.
    Enroll,
    /// Renewal.
    Renew,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enroll => "enrollment",
            Self::Renew => "renewal",
        })
    }
}

/// Why an issued certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Rejection {
    /// It does not parse.
    #[error("it cannot be read: {0}")]
    Unreadable(String),
    /// It is for another key.
    #[error("it is not for the pending key")]
    WrongKey,
    /// It does not chain to the CA's certificates.
    #[error("it does not chain to the CA: {0}")]
    Untrusted(String),
    /// It names another device.
    #[error("it names device {found:?}, not {expected:?}")]
    WrongDevice {
        /// The UDID the certificate names.
        found: Option<String>,
        /// This device's UDID.
        expected: String,
    },
    /// The key could not sign, or its signature does not verify with the certificate's key.
    #[error("the key's test signature failed: {0}")]
    TestSignature(String),
}

/// Why an enrollment or renewal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LifecycleError {
    /// The identity store failed.
    #[error(transparent)]
    Store(#[from] PlatformError),
    /// The CA request failed.
    #[error("the {operation} request failed")]
    Ca {
        /// Which request.
        operation: Operation,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// No CSR could be made with the pending key.
    #[error("could not create the certificate request")]
    Csr(#[source] CsrError),
    /// The CA issued a certificate the agent does not accept; nothing was switched.
    #[error("the certificate from the CA was not accepted: {0}")]
    Rejected(#[source] Rejection),
    /// Renewal without a current identity.
    #[error("there is no identity to renew")]
    NotEnrolled,
    /// Enrollment while an identity is present (the agent never enrolls a second one).
    #[error("an identity is already present; uninstall it before enrolling again")]
    AlreadyEnrolled,
    /// An in-process test stopped the flow.
    #[error(transparent)]
    Crash(#[from] SimulatedCrash),
}

/// What the device says about itself in an enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enrollee {
    /// The device.
    pub device: DeviceInfo,
    /// The user the certificate is for.
    pub user: String,
}

/// A completed enrollment or renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completed {
    /// The identity now current.
    pub certificate: CertificateInfo,
    /// Whether a request was sent (false when a stored answer was only switched to).
    pub requested: bool,
    /// Whether the CA issued a new certificate (false for its idempotent repeat).
    pub created: bool,
    /// The serial of the identity it replaced, for a renewal.
    pub replaced: Option<String>,
}

/// Checks a stored identity before it becomes current.
pub(crate) fn check_identity(
    identity: &Identity,
    ca_certificates: &[String],
    udid: Option<&str>,
    now: DateTime<Utc>,
) -> Result<CertificateInfo, Rejection> {
    let info = CertificateInfo::from_pem(&identity.certificate_pem)
        .map_err(|e| Rejection::Unreadable(e.to_string()))?;
    if !info.matches_key(identity.key.as_ref()) {
        return Err(Rejection::WrongKey);
    }
    cert::verify_issued_by(info.der(), ca_certificates, now)
        .map_err(|e| Rejection::Untrusted(e.to_string()))?;
    if let Some(expected) = udid
        && !info.device_udid().is_some_and(|found| found.eq_ignore_ascii_case(expected))
    {
        return Err(Rejection::WrongDevice {
            found: info.device_udid().map(str::to_owned),
            expected: expected.to_owned(),
        });
    }
    test_signature(identity.key.as_ref(), info.serial_number())?;
    Ok(info)
}

/// Signs a message with `key` and verifies it with the public key the certificate carries
/// (equal to the key's, as checked before): proves the store can really use the key.
fn test_signature(key: &dyn KeySigner, serial: &str) -> Result<(), Rejection> {
    let message = format!("devicetrust identity check {serial}");
    let signature = key.sign(message.as_bytes()).map_err(|e| Rejection::TestSignature(e.to_string()))?;
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match key.algorithm() {
        KeyAlgorithm::EcdsaP256Sha256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcdsaP384Sha384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        other => return Err(Rejection::TestSignature(format!("unsupported key algorithm {}", other.name()))),
    };
    ring::signature::UnparsedPublicKey::new(algorithm, key.public_key_sec1())
        .verify(message.as_bytes(), &signature)
        .map_err(|_| Rejection::TestSignature("the signature does not verify".to_owned()))
}

/// What [`recover`] finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// A line per completed or undone step, for the log.
    pub actions: Vec<String>,
}

/// Completes what a crash interrupted, without any request: deletes an identity replaced by
/// a switch-over, and switches to a stored pending identity once it passes its checks (one
/// that fails them loses its certificate and keeps its key for the next request). Needs the
/// CA certificates for the chain check; without them a stored pending identity waits for
/// the next enrollment or renewal, which fetches them.
pub(crate) fn recover(
    store: &dyn IdentityStore,
    ca_certificates: Option<&[String]>,
    udid: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Recovery, LifecycleError> {
    let mut recovery = Recovery::default();
    let snapshot = store.snapshot()?;
    if snapshot.previous && store.delete_previous()? {
        recovery.actions.push("deleted the identity replaced by an interrupted renewal".to_owned());
    }
    if snapshot.pending_certificate
        && let Some(ca_certificates) = ca_certificates
        && let Some(pending) = store.pending_identity()?
    {
        match check_identity(&pending, ca_certificates, udid, now) {
            Ok(info) => {
                let replaced = store.current()?.is_some();
                store.promote()?;
                store.delete_previous()?;
                let verb = if replaced { "renewal" } else { "enrollment" };
                recovery
                    .actions
                    .push(format!("completed an interrupted {verb}: serial {}", info.serial_number()));
            }
            Err(rejection) => {
                store.discard_pending_certificate()?;
                recovery
                    .actions
                    .push(format!("discarded a stored certificate that failed its checks: {rejection}"));
            }
        }
    }
    Ok(recovery)
}

/// Enrolls: reuses or persists the pending key, asks the CA, stores, checks, switches.
pub(crate) fn enroll(
    store: &dyn IdentityStore,
    ca: &dyn CaApi,
    token: &Secret,
    enrollee: &Enrollee,
    metadata: &Metadata,
    now: DateTime<Utc>,
    checkpoints: &dyn Checkpoints,
) -> Result<Completed, LifecycleError> {
    if store.snapshot()?.current {
        return Err(LifecycleError::AlreadyEnrolled);
    }
    let (requested, created) = if store.pending_identity()?.is_some() {
        (false, false)
    } else {
        let key = pending_or_new_key(store, Operation::Enroll)?;
        checkpoints.reached(Step::EnrollAfterPendingKey)?;
        let csr = csr::create_csr(key.as_ref(), CSR_COMMON_NAME).map_err(LifecycleError::Csr)?;
        let request = EnrollRequest {
            client_version: CLIENT_VERSION.to_owned(),
            platform: Platform::current(),
            device: enrollee.device.clone(),
            user: enrollee.user.clone(),
            csr: csr.to_base64(),
        };
        let issued = ca
            .enroll(token, &request)
            .map_err(|source| LifecycleError::Ca { operation: Operation::Enroll, source })?;
        checkpoints.reached(Step::EnrollAfterRequest)?;
        store.store_pending_certificate(&issued.certificate.certificate, &issued.certificate.chain)?;
        checkpoints.reached(Step::EnrollAfterStoreCert)?;
        (true, issued.created)
    };
    let certificate = check_and_switch(store, metadata, Some(&enrollee.device.udid), now)?;
    Ok(Completed { certificate, requested, created, replaced: None })
}

/// Renews the current identity: a new pending key beside it (or the one an earlier attempt
/// left), a request over mutual TLS with the current identity, then store, check, switch,
/// delete the old identity.
pub(crate) fn renew(
    store: &dyn IdentityStore,
    ca: &dyn CaApi,
    metadata: &Metadata,
    now: DateTime<Utc>,
    checkpoints: &dyn Checkpoints,
) -> Result<Completed, LifecycleError> {
    let current = store.current()?.ok_or(LifecycleError::NotEnrolled)?;
    let current_info =
        CertificateInfo::from_pem(&current.certificate_pem).map_err(|e| PlatformError::Corrupt {
            what: "the current certificate",
            location: store.describe().location,
            reason: e.to_string(),
        })?;
    let udid = current_info.device_udid().map(str::to_owned);
    let (requested, created) = if store.pending_identity()?.is_some() {
        (false, false)
    } else {
        let key = pending_or_new_key(store, Operation::Renew)?;
        checkpoints.reached(Step::RenewAfterPendingKey)?;
        let csr = csr::create_csr(key.as_ref(), CSR_COMMON_NAME).map_err(LifecycleError::Csr)?;
        let request = RenewRequest { client_version: CLIENT_VERSION.to_owned(), csr: csr.to_base64() };
        let issued = ca
            .renew(&current, &request)
            .map_err(|source| LifecycleError::Ca { operation: Operation::Renew, source })?;
        checkpoints.reached(Step::RenewAfterRequest)?;
        store.store_pending_certificate(&issued.certificate.certificate, &issued.certificate.chain)?;
        checkpoints.reached(Step::RenewAfterStoreNew)?;
        (true, issued.created)
    };
    let certificate = check_and_switch(store, metadata, udid.as_deref(), now)?;
    checkpoints.reached(Step::RenewAfterSwitch)?;
    store.delete_previous()?;
    Ok(Completed { certificate, requested, created, replaced: Some(current_info.serial_number().to_owned()) })
}

/// The key a previous attempt persisted (so that the CA answers with the same certificate),
/// else a new one, persisted before it is returned. A pending key that cannot be read is
/// replaced: it would block every later attempt.
fn pending_or_new_key(
    store: &dyn IdentityStore,
    operation: Operation,
) -> Result<Arc<dyn KeySigner>, LifecycleError> {
    match store.pending_key() {
        Ok(Some(key)) => {
            tracing::info!("retrying the {operation} with the key persisted by an earlier attempt");
            Ok(key)
        }
        Ok(None) => Ok(store.create_pending_key()?),
        Err(e @ PlatformError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "replacing an unreadable pending key");
            Ok(store.create_pending_key()?)
        }
        Err(e) => Err(e.into()),
    }
}

fn check_and_switch(
    store: &dyn IdentityStore,
    metadata: &Metadata,
    udid: Option<&str>,
    now: DateTime<Utc>,
) -> Result<CertificateInfo, LifecycleError> {
    // Checked as reloaded from the store: what will be used is what is verified.
    let pending = store.pending_identity()?.ok_or(PlatformError::Missing("the stored pending identity"))?;
    match check_identity(&pending, &metadata.ca_certificates, udid, now) {
        Ok(info) => {
            store.promote()?;
            Ok(info)
        }
        Err(rejection) => {
            store.discard_pending_certificate()?;
            Err(LifecycleError::Rejected(rejection))
        }
    }
}

pub(crate) mod checkpoints;

#[cfg(test)]
mod tests;
