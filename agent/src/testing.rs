//! Test support: an in-memory CA that issues real certificates, for the lifecycle and
//! command tests, and [`CrashAt`], the checkpoints that simulate a crash at one step.
//!
//! The CA is `testkit`'s issuing core, the one every fake CA of the tests shares, behind the
//! agent's [`CaApi`] instead of HTTPS: enrollment is idempotent per key, renewal supersedes
//! the presented certificate, revocation is reported, and knobs make it go down or issue
//! for the wrong key or device.

use std::fmt;
use std::sync::Mutex;

use ca_client::ClientError;
use ca_client::cert::CertificateInfo;
use ca_client::protocol::{
    CertificateState, CertificateStatus, DeviceRef, EnrollRequest, ErrorCode, IssuedCertificate, Metadata,
    RenewRequest,
};
use ca_client::response::Issued;
use chrono::{DateTime, TimeZone as _, Utc};
use testkit::fake_ca::{CertState, Issuance, Twist};

use crate::lifecycle::CaApi;
use crate::lifecycle::checkpoints::{Checkpoints, SimulatedCrash, Step};
use crate::platform::Identity;
use crate::token::Secret;

/// The issuer CN of the fake CA.
pub(crate) const ISSUER_CN: &str = "Fake Device Trust CA";
/// The enrollment token the fake CA accepts.
pub(crate) const TOKEN: &str = "good-token";

/// Start of validity of every certificate the fake issues.
pub(crate) fn not_before() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid date")
}

/// End of validity of every certificate the fake issues.
pub(crate) fn not_after() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().expect("valid date")
}

/// A time inside the validity, well before renewal is due.
pub(crate) fn early() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().expect("valid date")
}

#[derive(Debug, Default)]
pub(crate) struct Knobs {
    /// Every call fails to connect.
    pub down: bool,
    /// Issue certificates for a key other than the CSR's (a broken or hostile CA).
    pub wrong_key: bool,
    /// Issue certificates naming another device.
    pub wrong_device: bool,
    /// Publish this `certAuthDomain` instead of the CA's own origin.
    pub cert_auth_domain: Option<String>,
    /// Publish these `protectedOrigins`.
    pub protected_origins: Vec<String>,
}

/// The in-memory CA: `testkit`'s issuing core (the one every fake CA shares) behind
/// [`CaApi`], with a fixed validity for the fixed clocks of these tests.
pub(crate) struct FakeCa {
    issuance: Mutex<Issuance>,
    pub ca_pem: String,
    pub knobs: Mutex<Knobs>,
    pub requests: Mutex<u32>,
}

impl fmt::Debug for FakeCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCa").finish_non_exhaustive()
    }
}

fn refused(status: u16, code: ErrorCode) -> ClientError {
    ClientError::Ca { status, message: code.as_str().to_owned(), code, retry_after: None }
}

fn state_of(state: CertState) -> CertificateState {
    match state {
        CertState::Unbound => CertificateState::Unbound,
        CertState::Superseded => CertificateState::Superseded,
        CertState::Revoked => CertificateState::Revoked,
    }
}

impl FakeCa {
    pub(crate) fn new() -> Self {
        let issuance = Issuance::new(ISSUER_CN)
            .with_validity(rcgen::date_time_ymd(2026, 1, 1), rcgen::date_time_ymd(2027, 1, 1))
            .with_first_serial(0x1000);
        Self {
            ca_pem: issuance.issuer_pem().to_owned(),
            issuance: Mutex::new(issuance),
            knobs: Mutex::new(Knobs::default()),
            requests: Mutex::new(0),
        }
    }

    pub(crate) fn metadata_value(&self) -> Metadata {
        // One guard: the knobs' mutex is not reentrant.
        let knobs = self.knobs();
        Metadata {
            cert_auth_domain: knobs
                .cert_auth_domain
                .clone()
                .unwrap_or_else(|| "https://127.0.0.1:9".to_owned()),
            issuer_common_name: ISSUER_CN.to_owned(),
            ca_certificates: vec![self.ca_pem.clone()],
            certificate_lifetime_days: 365,
            renew_before_days: 30,
            max_unbound_certificates: 5,
            read_only: false,
            protected_origins: knobs.protected_origins.clone(),
        }
    }

    pub(crate) fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.knobs.lock().expect("knobs")
    }

    fn issuance(&self) -> std::sync::MutexGuard<'_, Issuance> {
        self.issuance.lock().expect("issuance")
    }

    pub(crate) fn certs(&self) -> Vec<testkit::fake_ca::Issued> {
        self.issuance().certs().to_vec()
    }

    /// Certificates the CA would count against the device's unbound limit.
    pub(crate) fn unbound(&self) -> usize {
        self.issuance().unbound()
    }

    pub(crate) fn revoke_all(&self) {
        self.issuance().revoke_all();
    }

    fn check_up(&self) -> Result<(), ClientError> {
        *self.requests.lock().expect("requests") += 1;
        if self.knobs().down {
            return Err(ClientError::Connect { url: "https://127.0.0.1:9".into(), reason: "refused".into() });
        }
        Ok(())
    }

    fn issue(&self, csr_b64: &str, udid: &str) -> Result<(Issued, bool), ClientError> {
        let twist = {
            let knobs = self.knobs();
            Twist { wrong_key: knobs.wrong_key, wrong_device: knobs.wrong_device }
        };
        let (cert, created) =
            self.issuance().issue(csr_b64, udid, twist).map_err(|_| refused(400, ErrorCode::InvalidCsr))?;
        let issued = Issued {
            certificate: IssuedCertificate {
                certificate: cert.pem,
                chain: vec![self.ca_pem.clone()],
                serial_number: cert.serial,
                not_before: not_before(),
                not_after: not_after(),
                state: state_of(cert.state),
            },
            created,
        };
        Ok((issued, created))
    }

    fn presented(&self, identity: &Identity) -> Result<testkit::fake_ca::Issued, ClientError> {
        let info = CertificateInfo::from_pem(&identity.certificate_pem).expect("presented cert");
        self.issuance()
            .find_serial(info.serial_number())
            .cloned()
            .ok_or_else(|| refused(401, ErrorCode::ClientCertificateRequired))
    }
}

impl CaApi for FakeCa {
    fn metadata(&self) -> Result<Metadata, ClientError> {
        self.check_up()?;
        Ok(self.metadata_value())
    }

    fn enroll(&self, token: &Secret, request: &EnrollRequest) -> Result<Issued, ClientError> {
        self.check_up()?;
        if token.expose() != TOKEN {
            return Err(refused(401, ErrorCode::InvalidToken));
        }
        self.issue(&request.csr, &request.device.udid).map(|(issued, _)| issued)
    }

    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError> {
        self.check_up()?;
        let presented = self.presented(identity)?;
        if presented.state == CertState::Revoked {
            return Err(refused(403, ErrorCode::CertificateRevoked));
        }
        let (issued, created) = self.issue(&request.csr, &presented.udid)?;
        if created {
            self.issuance().supersede(&presented.serial);
        }
        Ok(issued)
    }

    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError> {
        self.check_up()?;
        let cert = self.presented(identity)?;
        Ok(CertificateStatus {
            serial_number: cert.serial.clone(),
            state: state_of(cert.state),
            bound_user: None,
            not_after: not_after(),
            device: DeviceRef { udid: cert.udid },
        })
    }
}

/// Checkpoints that simulate a crash at one step (or nowhere), for the in-process crash tests.
#[derive(Debug)]
pub(crate) struct CrashAt(pub(crate) Option<Step>);

impl Checkpoints for CrashAt {
    fn reached(&self, step: Step) -> Result<(), SimulatedCrash> {
        if self.0 == Some(step) { Err(SimulatedCrash(step)) } else { Ok(()) }
    }
}

/// Checkpoints that never crash.
pub(crate) const NO_CRASH: CrashAt = CrashAt(None);
