//! Interpretation of the CA's answers: status, headers and body bytes in, a typed value or a
//! [`ClientError`] out.
//!
//! Pure and transport-free, so that every answer shape (and any garbage) can be tested and
//! property-tested without a server. The transport ([`crate::client`]) only moves bytes and
//! enforces the size cap and timeouts.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;

use crate::cert::{CertificateInfo, certificates_from_pem, serials_equal};
use crate::error::ClientError;
use crate::protocol::{CertificateStatus, ErrorBody, IssuedCertificate, Metadata};

/// Longest text taken from an answer into an error (a CA message or a parser's complaint),
/// so a hostile or broken answer cannot flood the logs.
pub const MAX_ERROR_TEXT: usize = 512;

/// A certificate issued by enroll or renew, checked to be what it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The answer.
    pub certificate: IssuedCertificate,
    /// `true` for 201 (newly issued), `false` for the idempotent 200 (the same certificate
    /// again, for a key the CA already issued to).
    pub created: bool,
}

/// Interprets an answer of `GET /api/v1/metadata` (200).
pub fn interpret_metadata(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Metadata, ClientError> {
    parse_success(status, headers, body, &[StatusCode::OK])
}

/// Interprets an answer of `POST /api/v1/enroll` or `POST /api/v1/renew` (201, or 200 for an
/// idempotent repeat).
///
/// The certificate must be one PEM certificate whose serial equals `serialNumber`, and every
/// chain entry must be PEM certificates; otherwise the answer is
/// [`ClientError::Malformed`], never data.
pub fn interpret_issued(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Issued, ClientError> {
    let certificate: IssuedCertificate =
        parse_success(status, headers, body, &[StatusCode::CREATED, StatusCode::OK])?;
    let malformed = |reason: String| ClientError::Malformed { status: status.as_u16(), reason: cut(&reason) };
    let info = CertificateInfo::from_pem(&certificate.certificate)
        .map_err(|e| malformed(format!("the certificate field is not one pem certificate: {e}")))?;
    if !serials_equal(info.serial_number(), &certificate.serial_number) {
        return Err(malformed(format!(
            "the certificate's serial {} differs from serialNumber {:?}",
            info.serial_number(),
            certificate.serial_number
        )));
    }
    for (index, pem) in certificate.chain.iter().enumerate() {
        certificates_from_pem(pem.as_bytes())
            .map_err(|e| malformed(format!("chain entry {index} is not a pem certificate: {e}")))?;
    }
    Ok(Issued { certificate, created: status == StatusCode::CREATED })
}

/// Interprets an answer of `GET /api/v1/certificate` (200; a revoked certificate is a 200
/// with `"state": "revoked"`).
pub fn interpret_certificate_status(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<CertificateStatus, ClientError> {
    parse_success(status, headers, body, &[StatusCode::OK])
}

/// Interprets an answer whose success is JSON of type `T` with one of the `expected`
/// statuses (the admin API's answers): any other success status is
/// [`ClientError::Malformed`], an error status [`interpret_error`]'s error.
pub fn interpret_json<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expected: &[StatusCode],
) -> Result<T, ClientError> {
    parse_success(status, headers, body, expected)
}

/// The error for an answer that is not a success: the CA's contract error when the body is
/// one, else [`ClientError::UnexpectedStatus`].
pub fn interpret_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let retry_after = retry_after(headers);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Ca {
            status: status.as_u16(),
            code: error.code,
            message: cut(&error.message),
            retry_after,
        },
        Err(_) => ClientError::UnexpectedStatus { status: status.as_u16(), retry_after },
    }
}

/// `Retry-After` as delta-seconds. The HTTP-date form is ignored: the contract's CA sends
/// seconds, and a date would tie this pure function to a clock.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

fn parse_success<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    expected: &[StatusCode],
) -> Result<T, ClientError> {
    if expected.contains(&status) {
        serde_json::from_slice(body).map_err(|e| ClientError::Malformed {
            status: status.as_u16(),
            reason: cut(&format!("the body is not the expected json: {e}")),
        })
    } else if status.is_success() {
        Err(ClientError::Malformed {
            status: status.as_u16(),
            reason: format!("http {} is not an answer of this endpoint", status.as_u16()),
        })
    } else {
        Err(interpret_error(status, headers, body))
    }
}

/// `text` cut to [`MAX_ERROR_TEXT`] bytes at a character boundary, control characters
/// replaced, so it is safe for a one-line log.
fn cut(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_TEXT + 3));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_ERROR_TEXT {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_table() {
        let cases = [
            ("ok/seconds", Some("30"), Some(Duration::from_secs(30))),
            ("ok/spaces", Some(" 7 "), Some(Duration::from_secs(7))),
            ("ok/absent", None, None),
            ("fail/http-date", Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            ("fail/negative", Some("-1"), None),
            ("fail/garbage", Some("soon"), None),
        ];
        for (name, value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            }
            assert_eq!(retry_after(&headers), want, "{name}");
        }
    }

    #[test]
    fn cut_bounds_length_and_strips_control_characters() {
        assert_eq!(cut("a\nb"), "a b");
        let long = "é".repeat(MAX_ERROR_TEXT);
        let short = cut(&long);
        assert!(short.len() <= MAX_ERROR_TEXT + 3);
        assert!(short.ends_with("..."));
    }

    #[test]
    fn unexpected_success_status_is_malformed() {
        let got = interpret_metadata(StatusCode::NO_CONTENT, &HeaderMap::new(), b"");
        assert!(matches!(got, Err(ClientError::Malformed { status: 204, .. })), "{got:?}");
    }

    #[test]
    fn non_contract_error_body_is_unexpected_status() {
        let got = interpret_metadata(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert_eq!(got, Err(ClientError::UnexpectedStatus { status: 502, retry_after: None }));
    }
}
