//! The wire types of Device Trust CA protocol v1 (`docs/protocol.md`).
//!
//! Every request, response and error body of the contract, as serde types that parse from
//! bytes with no transport attached. Field names follow the contract exactly (camelCase on
//! the wire). Unknown fields are ignored, so that a newer CA can add fields without breaking
//! older agents; missing required fields are an error.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Paths of the contract's endpoints, relative to the CA's base URL.
pub mod paths {
    /// `GET`: the CA's public metadata.
    pub const METADATA: &str = "/api/v1/metadata";
    /// `POST`: enroll with a bearer enrollment token.
    pub const ENROLL: &str = "/api/v1/enroll";
    /// `POST`: renew over mutual TLS with the current certificate.
    pub const RENEW: &str = "/api/v1/renew";
    /// `GET`: the state of the presented certificate, over mutual TLS.
    pub const CERTIFICATE: &str = "/api/v1/certificate";
    /// `GET` at the cert-auth domain: what browsers hit.
    pub const VERIFY: &str = "/api/v1/device-trust/verify";
    /// `GET`: the DER CRL.
    pub const CRL: &str = "/crl";
    /// Prefix of the administration API.
    pub const ADMIN: &str = "/api/v1/admin";
}

/// The platform an agent runs on, as sent in `?platform=` and in enroll requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// macOS, the product's first platform.
    Macos,
    /// Linux, the second platform.
    Linux,
}

impl Platform {
    /// The platform this binary was built for (Linux for anything that is not macOS).
    pub const fn current() -> Self {
        if cfg!(target_os = "macos") { Self::Macos } else { Self::Linux }
    }

    /// The wire name (`macos`, `linux`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Macos => "macos",
            Self::Linux => "linux",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /api/v1/metadata` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Origin where browsers present the certificate, e.g. `https://ca.example.com:8443`.
    pub cert_auth_domain: String,
    /// Issuer CN that browser filters match (`{"ISSUER":{"CN":...}}`).
    pub issuer_common_name: String,
    /// PEM certificates of the issuing CA (and any intermediates).
    pub ca_certificates: Vec<String>,
    /// Lifetime of issued certificates.
    pub certificate_lifetime_days: u32,
    /// How long before expiry the CA expects renewal.
    pub renew_before_days: u32,
    /// The unbound-certificate limit per device.
    pub max_unbound_certificates: u32,
    /// Whether the CA refuses writes right now.
    pub read_only: bool,
    /// Origins of the organisation's protected apps (Chrome URL patterns such as
    /// `https://[*.]apps.example.com`), where browsers must present the certificate too. An
    /// addition to v1: absent from older CAs (read as empty) and ignored by older agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected_origins: Vec<String>,
}

/// The device as described in an enroll request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Hardware UUID (`IOPlatformUUID` on a Mac).
    pub udid: String,
    /// Hardware serial number; the MDM lookup key.
    pub serial_number: String,
    /// Human name of the device, e.g. "Alice's MacBook".
    pub display_name: String,
    /// Operating system version, e.g. "14.5".
    pub os_version: String,
}

/// `POST /api/v1/enroll` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollRequest {
    /// The agent's version.
    pub client_version: String,
    /// The agent's platform.
    pub platform: Platform,
    /// The device.
    pub device: DeviceInfo,
    /// The local user the certificate is for.
    pub user: String,
    /// Base64 (standard, padded) of the DER PKCS#10 request.
    pub csr: String,
}

/// `POST /api/v1/renew` body (the device and user come from the client certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewRequest {
    /// The agent's version.
    pub client_version: String,
    /// Base64 (standard, padded) of the DER PKCS#10 request; must carry a new key.
    pub csr: String,
}

/// The state of an issued certificate at the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateState {
    /// Issued, not yet used at the cert-auth domain; counts against the device's limit.
    Unbound,
    /// Used at least once at the cert-auth domain.
    Bound,
    /// Replaced by a renewal; still accepted at the cert-auth domain until its notAfter.
    Superseded,
    /// Revoked by an administrator.
    Revoked,
}

impl CertificateState {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unbound => "unbound",
            Self::Bound => "bound",
            Self::Superseded => "superseded",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for CertificateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CertificateState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unbound" => Ok(Self::Unbound),
            "bound" => Ok(Self::Bound),
            "superseded" => Ok(Self::Superseded),
            "revoked" => Ok(Self::Revoked),
            other => Err(UnknownValue(other.to_owned())),
        }
    }
}

/// A string that names no known variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

/// Response of enroll (201, or 200 for an idempotent repeat) and of renew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// The issued certificate, PEM.
    pub certificate: String,
    /// The issuing chain, PEM, leaf's issuer first.
    pub chain: Vec<String>,
    /// Serial number, lowercase hex without separators.
    pub serial_number: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// State at the CA (`unbound` for a fresh enrollment; a renewal keeps the binding).
    pub state: CertificateState,
}

/// A device reference inside other bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    /// Hardware UUID.
    pub udid: String,
}

/// `GET /api/v1/certificate` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// Serial number, lowercase hex.
    pub serial_number: String,
    /// State at the CA; `revoked` means the agent must uninstall.
    pub state: CertificateState,
    /// The user the certificate was bound to at first use, if any.
    pub bound_user: Option<String>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// The device the certificate was issued to.
    pub device: DeviceRef,
}

/// `GET {certAuthDomain}/api/v1/device-trust/verify` response (200 and 403 share it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the presented certificate proves a trusted device.
    pub trusted: bool,
    /// The presented certificate's serial, when trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Its state after this call, when trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CertificateState>,
    /// Why not, when not trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /api/v1/admin/{users,devices}/{id}/revoke` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    /// How many certificates this call revoked.
    pub revoked: u64,
}

/// `POST /api/v1/admin/certificates/{serial}/bind` request: the user the admin vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindRequest {
    /// The user the certificate is bound to.
    pub user: String,
}

/// `POST /api/v1/admin/certificates/{serial}/bind` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindResponse {
    /// Serial number, lowercase hex.
    pub serial_number: String,
    /// State at the CA after the call (`bound`).
    pub state: CertificateState,
    /// The user it is bound to.
    pub bound_user: Option<String>,
}

/// One certificate in an admin device record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    /// Serial number, lowercase hex.
    pub serial_number: String,
    /// State at the CA.
    pub state: CertificateState,
    /// The enrolling user.
    pub user: String,
    /// The user bound at first use.
    pub bound_user: Option<String>,
    /// Lowercase hex SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// When the certificate was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/admin/devices/{udid}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    /// Hardware UUID.
    pub udid: String,
    /// Hardware serial number.
    pub serial_number: String,
    /// Last reported display name.
    pub display_name: String,
    /// Last reported OS version.
    pub os_version: String,
    /// Last reported platform.
    pub platform: Platform,
    /// First enrollment.
    pub created_at: DateTime<Utc>,
    /// Every certificate issued to the device, oldest first.
    pub certificates: Vec<CertificateRecord>,
}

/// The kinds of event in the CA's system log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// An enrollment request.
    #[serde(rename = "user.credential.enroll")]
    Enroll,
    /// A certificate issued (by enroll or renew).
    #[serde(rename = "pki.cert.issue")]
    Issue,
    /// A renewal request.
    #[serde(rename = "pki.cert.renew")]
    Renew,
    /// A revocation.
    #[serde(rename = "pki.cert.revoke")]
    Revoke,
    /// A verify call at the cert-auth domain.
    #[serde(rename = "user.authentication.authenticate")]
    Authenticate,
}

impl EventType {
    /// The wire name, e.g. `pki.cert.issue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "user.credential.enroll",
            Self::Issue => "pki.cert.issue",
            Self::Renew => "pki.cert.renew",
            Self::Revoke => "pki.cert.revoke",
            Self::Authenticate => "user.authentication.authenticate",
        }
    }

    /// The contract's display message for this event type.
    pub const fn display_message(self) -> &'static str {
        match self {
            Self::Enroll => "Device Trust certificate enrollment",
            Self::Issue => "Device Trust certificate issuance",
            Self::Renew => "Device Trust certificate renewal",
            Self::Revoke => "Device Trust certificate revocation",
            Self::Authenticate => "Authentication of device via certificate",
        }
    }

    /// Every event type.
    pub const ALL: [Self; 5] = [Self::Enroll, Self::Issue, Self::Renew, Self::Revoke, Self::Authenticate];
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// Whether an event's action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    /// It did.
    Success,
    /// It was refused; the event's `reason` carries the error code.
    Failure,
}

/// One entry of the CA's system log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Monotonic id; `?after=` pages on it.
    pub id: i64,
    /// When it happened.
    pub published: DateTime<Utc>,
    /// What happened.
    pub event_type: EventType,
    /// The contract's message for the event type.
    pub display_message: String,
    /// Success or failure.
    pub outcome: Outcome,
    /// The user concerned, when known.
    pub user: Option<String>,
    /// The device concerned, when known.
    pub device: Option<DeviceRef>,
    /// The certificate concerned, when known.
    pub serial_number: Option<String>,
    /// The error code of a refusal.
    pub reason: Option<String>,
    /// The OpenID Connect client an authentication was for (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `GET /api/v1/admin/events` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsResponse {
    /// Events, oldest first.
    pub events: Vec<Event>,
}

/// The machine-readable error codes of the contract.
///
/// `Unknown` keeps a code this agent does not know (a newer CA), so that the agent still
/// reports it and treats it like `internal`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: malformed JSON, missing field, bad value.
    InvalidRequest,
    /// 400: the CSR does not parse, has a bad self-signature or a weak key.
    InvalidCsr,
    /// 413: the body is over 64 KiB.
    PayloadTooLarge,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 401: missing or wrong enrollment bearer token.
    InvalidToken,
    /// 401: renew/status without a client certificate this CA issued.
    ClientCertificateRequired,
    /// 403: the MDM says the device is not managed, or does not know it.
    DeviceNotManaged,
    /// 403: the presented certificate is revoked.
    CertificateRevoked,
    /// 403: the presented certificate is past its notAfter.
    CertificateExpired,
    /// 403: the presented certificate was replaced by a renewal longer ago than the CA's
    /// grace period for superseded certificates.
    CertificateSuperseded,
    /// 403: the presented certificate is bound to another user than the one named.
    CertificateBoundToOtherUser,
    /// 409: the device already holds the maximum of unbound certificates.
    EnrollmentLimitReached,
    /// 429: too many requests; see `Retry-After`.
    RateLimited,
    /// 503: the CA is in read-only mode.
    ReadOnly,
    /// 503: the MDM could not be asked; the CA fails closed.
    MdmUnavailable,
    /// 500: anything else.
    Internal,
    /// A code this version does not know.
    Unknown(String),
}

/// What the agent should do about an error code (the contract table's last column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reaction {
    /// Give up; retrying the same request cannot help.
    Fail,
    /// Give up now; the next scheduled run may succeed (the MDM state can change).
    RetryNextRun,
    /// Transient: retry later, with backoff.
    RetryLater,
    /// The current certificate is unusable; a new enrollment is needed.
    Reenroll,
    /// The certificate is revoked: uninstall.
    Uninstall,
}

impl ErrorCode {
    /// Every known code, in the contract's order.
    pub const KNOWN: [Self; 16] = [
        Self::InvalidRequest,
        Self::InvalidCsr,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::InvalidToken,
        Self::ClientCertificateRequired,
        Self::DeviceNotManaged,
        Self::CertificateRevoked,
        Self::CertificateExpired,
        Self::CertificateSuperseded,
        Self::CertificateBoundToOtherUser,
        Self::EnrollmentLimitReached,
        Self::RateLimited,
        Self::ReadOnly,
        Self::MdmUnavailable,
        Self::Internal,
    ];

    /// The wire name, e.g. `enrollment_limit_reached`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidCsr => "invalid_csr",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::InvalidToken => "invalid_token",
            Self::ClientCertificateRequired => "client_certificate_required",
            Self::DeviceNotManaged => "device_not_managed",
            Self::CertificateRevoked => "certificate_revoked",
            Self::CertificateExpired => "certificate_expired",
            Self::CertificateSuperseded => "certificate_superseded",
            Self::CertificateBoundToOtherUser => "certificate_bound_to_other_user",
            Self::EnrollmentLimitReached => "enrollment_limit_reached",
            Self::RateLimited => "rate_limited",
            Self::ReadOnly => "read_only",
            Self::MdmUnavailable => "mdm_unavailable",
            Self::Internal => "internal",
            Self::Unknown(code) => code,
        }
    }

    /// The HTTP status the contract pairs with this code (500 for unknown codes).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidRequest | Self::InvalidCsr => 400,
            Self::PayloadTooLarge => 413,
            Self::RequestTimeout => 408,
            Self::InvalidToken | Self::ClientCertificateRequired => 401,
            Self::DeviceNotManaged
            | Self::CertificateRevoked
            | Self::CertificateExpired
            | Self::CertificateSuperseded
            | Self::CertificateBoundToOtherUser => 403,
            Self::EnrollmentLimitReached => 409,
            Self::RateLimited => 429,
            Self::ReadOnly | Self::MdmUnavailable => 503,
            Self::Internal | Self::Unknown(_) => 500,
        }
    }

    /// What the agent should do about it.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::InvalidRequest
            | Self::InvalidCsr
            | Self::PayloadTooLarge
            | Self::InvalidToken
            | Self::CertificateBoundToOtherUser
            | Self::EnrollmentLimitReached => Reaction::Fail,
            Self::ClientCertificateRequired | Self::CertificateExpired | Self::CertificateSuperseded => {
                Reaction::Reenroll
            }
            Self::DeviceNotManaged => Reaction::RetryNextRun,
            Self::CertificateRevoked => Reaction::Uninstall,
            Self::RequestTimeout
            | Self::RateLimited
            | Self::ReadOnly
            | Self::MdmUnavailable
            | Self::Internal
            | Self::Unknown(_) => Reaction::RetryLater,
        }
    }

    /// Whether sending the request again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.reaction(), Reaction::RetryLater | Reaction::RetryNextRun)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorCode {
    fn from(s: &str) -> Self {
        Self::KNOWN.into_iter().find(|c| c.as_str() == s).unwrap_or_else(|| Self::Unknown(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from(s.as_ref()))
    }
}

/// The `error` object of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message, safe to show (never an internal cause).
    pub message: String,
}

/// Every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error body for `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into() } }
    }
}

/// The exact message of `enrollment_limit_reached` for a limit of `max`.
pub fn enrollment_limit_message(max: u32) -> String {
    format!("Maximum enrollment limit of {max} certificates for a device is reached")
}

/// The SAN URI that names a device in its certificates: `urn:devicetrust:device:<udid>`.
pub fn device_uri(udid: &str) -> String {
    format!("{DEVICE_URI_PREFIX}{udid}")
}

/// Prefix of [`device_uri`].
pub const DEVICE_URI_PREFIX: &str = "urn:devicetrust:device:";

/// Largest request body the contract allows (64 KiB).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_match_the_contract_table() {
        let table: [(&str, u16, Reaction); 13] = [
            ("invalid_request", 400, Reaction::Fail),
            ("invalid_csr", 400, Reaction::Fail),
            ("payload_too_large", 413, Reaction::Fail),
            ("invalid_token", 401, Reaction::Fail),
            ("client_certificate_required", 401, Reaction::Reenroll),
            ("device_not_managed", 403, Reaction::RetryNextRun),
            ("certificate_revoked", 403, Reaction::Uninstall),
            ("certificate_expired", 403, Reaction::Reenroll),
            ("enrollment_limit_reached", 409, Reaction::Fail),
            ("rate_limited", 429, Reaction::RetryLater),
            ("read_only", 503, Reaction::RetryLater),
            ("mdm_unavailable", 503, Reaction::RetryLater),
            ("internal", 500, Reaction::RetryLater),
        ];
        for (name, status, reaction) in table {
            let code = ErrorCode::from(name);
            assert!(!matches!(code, ErrorCode::Unknown(_)), "{name} is known");
            assert_eq!(code.as_str(), name);
            assert_eq!(code.http_status(), status, "{name}");
            assert_eq!(code.reaction(), reaction, "{name}");
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{name}\""));
        }
        assert_eq!(ErrorCode::from("brand_new"), ErrorCode::Unknown("brand_new".into()));
        assert_eq!(ErrorCode::from("brand_new").reaction(), Reaction::RetryLater);
    }

    #[test]
    fn error_body_parses_the_contract_example() {
        let body = r#"{"error": {"code": "enrollment_limit_reached",
             "message": "Maximum enrollment limit of 5 certificates for a device is reached"}}"#;
        let parsed: ErrorBody = serde_json::from_str(body).expect("parse");
        assert_eq!(parsed.error.code, ErrorCode::EnrollmentLimitReached);
        assert_eq!(parsed.error.message, enrollment_limit_message(5));
    }

    #[test]
    fn event_types_use_the_contract_names() {
        for t in EventType::ALL {
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
    }

    #[test]
    fn metadata_parses_the_contract_example_and_ignores_new_fields() {
        let body = r#"{"certAuthDomain": "https://ca.example.com:8443",
            "issuerCommonName": "MTLS Certificate Authority",
            "caCertificates": ["-----BEGIN CERTIFICATE-----..."],
            "certificateLifetimeDays": 365, "renewBeforeDays": 30,
            "maxUnboundCertificates": 5, "readOnly": false, "someFutureField": 1}"#;
        let m: Metadata = serde_json::from_str(body).expect("parse");
        assert_eq!(m.cert_auth_domain, "https://ca.example.com:8443");
        assert_eq!(m.max_unbound_certificates, 5);
    }
}
