//! Test support: an in-memory CA that issues real certificates, for the lifecycle and
//! command tests, and [`CrashAt`], the checkpoints that simulate a crash at one step. It follows the contract's rules that matter to the agent: enrollment is
//! idempotent per key, renewal supersedes the presented certificate, revocation is reported.

use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use ca_client::ClientError;
use ca_client::cert::CertificateInfo;
use ca_client::protocol::{
    CertificateState, CertificateStatus, DeviceRef, EnrollRequest, ErrorCode, IssuedCertificate, Metadata,
    RenewRequest,
};
use ca_client::response::Issued;
use chrono::{DateTime, TimeZone as _, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};

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

#[derive(Debug, Clone)]
pub(crate) struct FakeCert {
    pub serial: String,
    pub spki: Vec<u8>,
    pub pem: String,
    pub udid: String,
    pub state: CertificateState,
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

pub(crate) struct FakeCa {
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    pub certs: Mutex<Vec<FakeCert>>,
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

impl FakeCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, ISSUER_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let ca_pem = params.self_signed(&key).expect("ca cert").pem();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem,
            certs: Mutex::new(Vec::new()),
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

    pub(crate) fn certs(&self) -> Vec<FakeCert> {
        self.certs.lock().expect("certs").clone()
    }

    /// Certificates the CA would count against the device's unbound limit.
    pub(crate) fn unbound(&self) -> usize {
        self.certs().iter().filter(|c| c.state == CertificateState::Unbound).count()
    }

    pub(crate) fn revoke_all(&self) {
        for cert in self.certs.lock().expect("certs").iter_mut() {
            cert.state = CertificateState::Revoked;
        }
    }

    fn check_up(&self) -> Result<(), ClientError> {
        *self.requests.lock().expect("requests") += 1;
        if self.knobs().down {
            return Err(ClientError::Connect { url: "https://127.0.0.1:9".into(), reason: "refused".into() });
        }
        Ok(())
    }

    fn issue(&self, csr_b64: &str, udid: &str) -> Result<Issued, ClientError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(csr_b64)
            .map_err(|_| refused(400, ErrorCode::InvalidCsr))?;
        let csr = CertificateSigningRequestParams::from_der(&der.into())
            .map_err(|_| refused(400, ErrorCode::InvalidCsr))?;
        let mut spki = csr.public_key.subject_public_key_info();
        let mut certs = self.certs.lock().expect("certs");
        if let Some(existing) = certs.iter().find(|c| c.spki == spki && c.state != CertificateState::Revoked)
        {
            return Ok(self.answer(existing, false));
        }
        let (wrong_key, wrong_device) = {
            let knobs = self.knobs();
            (knobs.wrong_key, knobs.wrong_device)
        };
        let other_key;
        let public_key: &dyn rcgen::PublicKeyData = if wrong_key {
            other_key = KeyPair::generate().expect("other key");
            spki = other_key.subject_public_key_info();
            &other_key
        } else {
            &csr.public_key
        };
        let udid = if wrong_device { "SOMEONE-ELSE" } else { udid };
        let serial = certs.len() as u64 + 0x1000;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "Device Trust");
        params.subject_alt_names =
            vec![SanType::URI(format!("urn:devicetrust:device:{udid}").try_into().expect("uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        params.serial_number = Some(serial.into());
        let pem = params.signed_by(&DynKey(public_key), &self.issuer).expect("sign").pem();
        let cert = FakeCert {
            serial: format!("{serial:x}"),
            spki,
            pem,
            udid: udid.to_owned(),
            state: CertificateState::Unbound,
        };
        let answer = self.answer(&cert, true);
        certs.push(cert);
        Ok(answer)
    }

    fn answer(&self, cert: &FakeCert, created: bool) -> Issued {
        Issued {
            certificate: IssuedCertificate {
                certificate: cert.pem.clone(),
                chain: vec![self.ca_pem.clone()],
                serial_number: cert.serial.clone(),
                not_before: not_before(),
                not_after: not_after(),
                state: cert.state,
            },
            created,
        }
    }

    fn presented(&self, identity: &Identity) -> Result<FakeCert, ClientError> {
        let info = CertificateInfo::from_pem(&identity.certificate_pem).expect("presented cert");
        let cert = self
            .certs()
            .into_iter()
            .find(|c| c.serial == info.serial_number())
            .ok_or_else(|| refused(401, ErrorCode::ClientCertificateRequired))?;
        Ok(cert)
    }
}

/// Lets one call site sign for either kind of public key.
struct DynKey<'a>(&'a dyn rcgen::PublicKeyData);

impl rcgen::PublicKeyData for DynKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
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
        self.issue(&request.csr, &request.device.udid)
    }

    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError> {
        self.check_up()?;
        let presented = self.presented(identity)?;
        if presented.state == CertificateState::Revoked {
            return Err(refused(403, ErrorCode::CertificateRevoked));
        }
        let issued = self.issue(&request.csr, &presented.udid)?;
        if issued.certificate.serial_number != presented.serial {
            for cert in self.certs.lock().expect("certs").iter_mut() {
                if cert.serial == presented.serial {
                    cert.state = CertificateState::Superseded;
                }
            }
        }
        Ok(issued)
    }

    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError> {
        self.check_up()?;
        let cert = self.presented(identity)?;
        Ok(CertificateStatus {
            serial_number: cert.serial.clone(),
            state: cert.state,
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
