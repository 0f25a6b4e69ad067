//! Refusals: every way a request can fail, the contract's code and status for each, and
//! the message the client is sent.
//!
//! The `Display` text of an [`ApiError`] (and its source chain) is for the CA's log; what
//! leaves the CA is [`ApiError::public_message`], which never includes an internal cause
//! (database errors, signing failures, MDM responses). Two answers are outside the
//! contract's table and documented as deviations in `docs/protocol.md`: 404 `not_found`
//! (unknown path, unknown device) and 405 `method_not_allowed`.

use ca_client::protocol::{ErrorBody, ErrorCode, enrollment_limit_message};
use chrono::{DateTime, Utc};

use crate::authority::{CsrError, SignError};
use crate::mdm::{MdmError, NotManagedReason};
use crate::relying_party::NotRelyingParty;
use crate::store::StoreError;

/// Why a request has no client certificate the CA can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingCertificate {
    /// The client presented none (a browser that is not enrolled, most often).
    None,
    /// A certificate that chains to this CA but that the store has no record of.
    Unknown,
    /// A certificate found a moment ago that is no longer in the store.
    Vanished,
    /// A certificate a proxy passed on that this CA did not issue (or that does not parse).
    /// Not an authentication failure of the proxy: it passes on what browsers present.
    Foreign,
}

impl std::fmt::Display for MissingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "no client certificate",
            Self::Unknown => "a certificate of this ca that it has no record of",
            Self::Vanished => "a certificate that vanished from the store",
            Self::Foreign => "a certificate this ca did not issue",
        })
    }
}

/// A refused request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Malformed JSON, a missing field, a bad value.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The CSR does not parse, its signature does not verify or its key is not accepted.
    #[error(transparent)]
    InvalidCsr(#[from] CsrError),
    /// The body is over the limit.
    #[error("request body over {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("request body not received within {secs} s")]
    RequestTimeout {
        /// The body read timeout.
        secs: u64,
    },
    /// Missing or wrong enrollment token.
    #[error("missing or wrong enrollment token")]
    InvalidToken,
    /// Missing or wrong admin token.
    #[error("missing or wrong admin token")]
    InvalidAdminToken,
    /// The caller of the relying-party check is not a configured relying party.
    #[error("not a relying party: {}", match .0 {
        NotRelyingParty::Secret => "missing or wrong secret",
        NotRelyingParty::Source => "a relying party's secret from an address it may not call from",
    })]
    InvalidRelyingParty(NotRelyingParty),
    /// No client certificate, or one this CA does not know.
    #[error("no client certificate issued by this ca ({0})")]
    ClientCertificateRequired(MissingCertificate),
    /// The MDM says the device is not managed.
    #[error("device not managed: {}", .0.as_str())]
    DeviceNotManaged(NotManagedReason),
    /// The presented certificate is revoked.
    #[error("certificate {serial} is revoked")]
    CertificateRevoked {
        /// Its serial.
        serial: String,
    },
    /// The presented certificate is past its notAfter.
    #[error("certificate {serial} expired at {not_after}")]
    CertificateExpired {
        /// Its serial.
        serial: String,
        /// Its end of validity.
        not_after: DateTime<Utc>,
    },
    /// The presented certificate was replaced by a renewal longer ago than the grace period.
    #[error("certificate {serial} was superseded at {superseded_at:?}, over {grace_days} days ago")]
    CertificateSuperseded {
        /// Its serial.
        serial: String,
        /// When its successor was issued.
        superseded_at: Option<DateTime<Utc>>,
        /// The grace period.
        grace_days: i64,
    },
    /// The certificate is bound to another user than the one the caller named.
    #[error("certificate {serial} is bound to another user")]
    CertificateBoundToOtherUser {
        /// Its serial.
        serial: String,
    },
    /// The device is at its unbound limit.
    #[error("device holds {max} unbound certificates")]
    EnrollmentLimitReached {
        /// The limit.
        max: u32,
    },
    /// Too many requests for this device.
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next request is allowed.
        retry_after_secs: u64,
    },
    /// The CA is in read-only mode.
    #[error("the ca is read-only")]
    ReadOnly,
    /// The MDM could not be asked.
    #[error("mdm unavailable")]
    MdmUnavailable(#[source] MdmError),
    /// The store failed.
    #[error("store failure")]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error("signing failure")]
    Sign(#[from] SignError),
    /// Signing a token (a device assertion) failed.
    #[error("token signing failure")]
    Token(#[from] crate::jwt::SignError),
    /// No such path or resource.
    #[error("not found")]
    NotFound,
    /// The path exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// The contract's code; `None` for the two answers outside the contract.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::InvalidCsr(_) => ErrorCode::InvalidCsr,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            Self::InvalidToken | Self::InvalidAdminToken | Self::InvalidRelyingParty(_) => {
                ErrorCode::InvalidToken
            }
            Self::ClientCertificateRequired(_) => ErrorCode::ClientCertificateRequired,
            Self::DeviceNotManaged(_) => ErrorCode::DeviceNotManaged,
            Self::CertificateRevoked { .. } => ErrorCode::CertificateRevoked,
            Self::CertificateExpired { .. } => ErrorCode::CertificateExpired,
            Self::CertificateSuperseded { .. } => ErrorCode::CertificateSuperseded,
            Self::CertificateBoundToOtherUser { .. } => ErrorCode::CertificateBoundToOtherUser,
            Self::EnrollmentLimitReached { .. } => ErrorCode::EnrollmentLimitReached,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::ReadOnly => ErrorCode::ReadOnly,
            Self::MdmUnavailable(_) => ErrorCode::MdmUnavailable,
            Self::Store(_) | Self::Sign(_) | Self::Token(_) => ErrorCode::Internal,
            Self::NotFound | Self::MethodNotAllowed => return None,
        })
    }

    /// The code as sent on the wire and recorded as an event's reason.
    pub fn code_str(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            other => match other.code() {
                Some(ErrorCode::InvalidRequest) => "invalid_request",
                Some(ErrorCode::InvalidCsr) => "invalid_csr",
                Some(ErrorCode::PayloadTooLarge) => "payload_too_large",
                Some(ErrorCode::RequestTimeout) => "request_timeout",
                Some(ErrorCode::InvalidToken) => "invalid_token",
                Some(ErrorCode::ClientCertificateRequired) => "client_certificate_required",
                Some(ErrorCode::DeviceNotManaged) => "device_not_managed",
                Some(ErrorCode::CertificateRevoked) => "certificate_revoked",
                Some(ErrorCode::CertificateExpired) => "certificate_expired",
                Some(ErrorCode::CertificateSuperseded) => "certificate_superseded",
                Some(ErrorCode::CertificateBoundToOtherUser) => "certificate_bound_to_other_user",
                Some(ErrorCode::EnrollmentLimitReached) => "enrollment_limit_reached",
                Some(ErrorCode::RateLimited) => "rate_limited",
                Some(ErrorCode::ReadOnly) => "read_only",
                Some(ErrorCode::MdmUnavailable) => "mdm_unavailable",
                _ => "internal",
            },
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            // The database is away (restarting, failing over): worth trying again.
            Self::Store(e) if e.is_unavailable() => 503,
            other => other.code().map_or(500, |c| c.http_status()),
        }
    }

    /// Whether this is the CA's fault (logged as an error, not as a refusal).
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Sign(_) | Self::Token(_))
    }

    /// Whether the client tried to prove who it is and failed: a wrong token, or a
    /// certificate that chains to this CA but is unknown to it. These spend the client
    /// address's failure budget. A request with no certificate at all does not: browsers of
    /// unenrolled devices (or a hostile page) would otherwise lock a shared address out.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            Self::InvalidToken
                | Self::InvalidAdminToken
                | Self::InvalidRelyingParty(_)
                | Self::ClientCertificateRequired(MissingCertificate::Unknown)
        )
    }

    /// The message sent to the client: safe to show, never an internal cause.
    pub fn public_message(&self) -> String {
        match self {
            Self::InvalidRequest(detail) => format!("Invalid request: {detail}"),
            Self::InvalidCsr(reason) => format!("Invalid CSR: {reason}"),
            Self::PayloadTooLarge { limit } => format!("The request body is over {limit} bytes"),
            Self::RequestTimeout { secs } => format!("The request body did not arrive within {secs} seconds"),
            Self::InvalidToken => "Missing or invalid enrollment token".into(),
            Self::InvalidAdminToken => "Missing or invalid admin token".into(),
            // The same message for both causes: a caller that has a secret learns nothing
            // about which addresses are allowed.
            Self::InvalidRelyingParty(_) => "Missing or invalid relying-party secret".into(),
            Self::ClientCertificateRequired(_) => "A client certificate issued by this CA is required".into(),
            Self::DeviceNotManaged(_) => "The device is not managed by the MDM".into(),
            Self::CertificateRevoked { .. } => "The certificate is revoked".into(),
            Self::CertificateExpired { not_after, .. } => {
                format!(
                    "The certificate expired at {}",
                    not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            }
            Self::CertificateSuperseded { grace_days, .. } => format!(
                "The certificate was replaced by a renewal more than {grace_days} days ago; the device must use its new certificate"
            ),
            Self::CertificateBoundToOtherUser { .. } => "The certificate belongs to another user".into(),
            Self::EnrollmentLimitReached { max } => enrollment_limit_message(*max),
            Self::RateLimited { retry_after_secs } => {
                format!("Too many requests; retry after {retry_after_secs} seconds")
            }
            Self::ReadOnly => "The CA is in read-only mode; try again later".into(),
            Self::MdmUnavailable(_) => "The MDM could not be asked; try again later".into(),
            Self::Store(_) | Self::Sign(_) | Self::Token(_) => "Internal error".into(),
            Self::NotFound => "Not found".into(),
            Self::MethodNotAllowed => "Method not allowed".into(),
        }
    }

    /// The contract's error body.
    pub fn body(&self) -> ErrorBody {
        let code = self.code().unwrap_or_else(|| ErrorCode::from(self.code_str()));
        ErrorBody::new(code, self.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_code_has_its_status_and_internal_causes_stay_inside() {
        let cases: Vec<(ApiError, &str, u16)> = vec![
            (ApiError::InvalidRequest("x".into()), "invalid_request", 400),
            (ApiError::InvalidCsr(CsrError::Malformed), "invalid_csr", 400),
            (ApiError::PayloadTooLarge { limit: 1 }, "payload_too_large", 413),
            (ApiError::RequestTimeout { secs: 10 }, "request_timeout", 408),
            (
                ApiError::CertificateSuperseded { serial: "01".into(), superseded_at: None, grace_days: 7 },
                "certificate_superseded",
                403,
            ),
            (
                ApiError::CertificateBoundToOtherUser { serial: "01".into() },
                "certificate_bound_to_other_user",
                403,
            ),
            (ApiError::InvalidToken, "invalid_token", 401),
            (ApiError::InvalidAdminToken, "invalid_token", 401),
            (ApiError::InvalidRelyingParty(NotRelyingParty::Source), "invalid_token", 401),
            (
                ApiError::ClientCertificateRequired(MissingCertificate::None),
                "client_certificate_required",
                401,
            ),
            (ApiError::DeviceNotManaged(NotManagedReason::Unmanaged), "device_not_managed", 403),
            (ApiError::CertificateRevoked { serial: "01".into() }, "certificate_revoked", 403),
            (
                ApiError::CertificateExpired { serial: "01".into(), not_after: DateTime::UNIX_EPOCH },
                "certificate_expired",
                403,
            ),
            (ApiError::EnrollmentLimitReached { max: 5 }, "enrollment_limit_reached", 409),
            (ApiError::RateLimited { retry_after_secs: 1 }, "rate_limited", 429),
            (ApiError::ReadOnly, "read_only", 503),
            (ApiError::MdmUnavailable(MdmError::unavailable("secret detail")), "mdm_unavailable", 503),
            (ApiError::Sign(SignError::from(rcgen::Error::CouldNotParseCertificate)), "internal", 500),
            (ApiError::NotFound, "not_found", 404),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code_str(), code, "{err}");
            assert_eq!(err.status(), status, "{err}");
            assert_eq!(err.body().error.code.as_str(), code);
            assert!(!err.public_message().contains("secret detail"));
        }
        assert_eq!(
            ApiError::EnrollmentLimitReached { max: 5 }.public_message(),
            "Maximum enrollment limit of 5 certificates for a device is reached"
        );
    }
}
