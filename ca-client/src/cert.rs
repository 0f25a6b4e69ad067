//! Certificate inspection and chain checks.
//!
//! [`CertificateInfo`] reads what the agent decides on (serial, names, validity, key, EKU,
//! the device URI) with x509-parser, once, into owned values. [`verify_issued_by`] checks with
//! rustls-webpki that a certificate chains to the CA for client authentication, so that the
//! agent switches to a new certificate only after it is known to be good. The PEM helpers
//! read certificates through rustls-pki-types.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::protocol::DEVICE_URI_PREFIX;
use crate::signer::KeySigner;

/// Why a certificate could not be read or is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The text is not valid PEM.
    #[error("not valid pem: {reason}")]
    Pem {
        /// What is wrong.
        reason: String,
    },
    /// The PEM holds no certificate.
    #[error("no certificate found in the pem")]
    NoCertificate,
    /// Exactly one certificate was expected.
    #[error("expected one certificate, found {count}")]
    TooManyCertificates {
        /// How many there are.
        count: usize,
    },
    /// The DER is not an X.509 certificate.
    #[error("not an x509 certificate: {reason}")]
    Parse {
        /// What is wrong.
        reason: String,
    },
    /// The certificate's validity is outside the range this program can represent.
    #[error("the certificate's validity is out of range")]
    ValidityOutOfRange,
    /// The certificate is past its notAfter.
    #[error("the certificate expired at {not_after} (now {now})")]
    Expired {
        /// Its end of validity.
        not_after: DateTime<Utc>,
        /// The time it was checked at.
        now: DateTime<Utc>,
    },
    /// The certificate is before its notBefore.
    #[error("the certificate is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Its start of validity.
        not_before: DateTime<Utc>,
        /// The time it was checked at.
        now: DateTime<Utc>,
    },
    /// No given issuer certificate issued it.
    #[error("the certificate was not issued by any of the given CA certificates")]
    UnknownIssuer,
    /// Its extended key usage does not allow client authentication.
    #[error("the certificate is not valid for tls client authentication")]
    NotForClientAuth,
    /// Any other reason the chain does not verify.
    #[error("the certificate chain does not verify: {reason}")]
    Untrusted {
        /// webpki's reason.
        reason: String,
    },
}

/// What the agent needs to know about a certificate, read once into owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    der: Vec<u8>,
    serial_number: String,
    subject_cn: Option<String>,
    issuer_cn: Option<String>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    spki_der: Vec<u8>,
    spki_sha256: String,
    client_auth: bool,
    uris: Vec<String>,
}

impl CertificateInfo {
    /// Reads exactly one PEM certificate.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let der = certificate_from_pem(pem.as_bytes())?;
        Self::from_der(&der)
    }

    /// Reads one DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let parse = |reason: String| CertError::Parse { reason };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(parse(format!("{} bytes after the certificate", rest.len())));
        }
        let eku = cert.extended_key_usage().map_err(|e| parse(format!("extended key usage: {e}")))?;
        let san = cert.subject_alternative_name().map_err(|e| parse(format!("subject alt name: {e}")))?;
        let uris = san
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => Some((*uri).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let spki = cert.public_key();
        let time = |t: &x509_parser::time::ASN1Time| {
            DateTime::from_timestamp(t.timestamp(), 0).ok_or(CertError::ValidityOutOfRange)
        };
        Ok(Self {
            der: der.to_vec(),
            serial_number: serial_hex(cert.raw_serial()),
            subject_cn: first_common_name(cert.subject()),
            issuer_cn: first_common_name(cert.issuer()),
            not_before: time(&cert.validity().not_before)?,
            not_after: time(&cert.validity().not_after)?,
            spki_der: spki.raw.to_vec(),
            spki_sha256: hex::encode(Sha256::digest(spki.raw)),
            client_auth: eku.is_some_and(|eku| eku.value.client_auth),
            uris,
        })
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The PEM encoding.
    pub fn to_pem(&self) -> String {
        certificate_to_pem(&self.der)
    }

    /// Serial number: lowercase hex, no separators, no leading zero byte (see [`serial_hex`]).
    pub fn serial_number(&self) -> &str {
        &self.serial_number
    }

    /// The subject's first common name, when there is one in a readable string type.
    pub fn subject_cn(&self) -> Option<&str> {
        self.subject_cn.as_deref()
    }

    /// The issuer's first common name, when there is one in a readable string type.
    pub fn issuer_cn(&self) -> Option<&str> {
        self.issuer_cn.as_deref()
    }

    /// Start of validity.
    pub fn not_before(&self) -> DateTime<Utc> {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// Whether `now` is within notBefore..=notAfter.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Lowercase hex SHA-256 of [`Self::spki_der`] (the CA's `spkiSha256`).
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }

    /// Whether the certificate is for `key`'s public key.
    ///
    /// DER is canonical and every key here is a named-curve EC key, so equal keys have equal
    /// SubjectPublicKeyInfo bytes.
    pub fn matches_key(&self, key: &dyn KeySigner) -> bool {
        self.spki_der == key.subject_public_key_info()
    }

    /// Whether the extended key usage includes `clientAuth`.
    pub fn has_client_auth_eku(&self) -> bool {
        self.client_auth
    }

    /// The SAN URIs.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The first SAN URI that names a device (`urn:devicetrust:device:<udid>`).
    pub fn device_uri(&self) -> Option<&str> {
        self.uris.iter().map(String::as_str).find(|uri| uri.starts_with(DEVICE_URI_PREFIX))
    }

    /// The UDID in [`Self::device_uri`], when it is not empty.
    pub fn device_udid(&self) -> Option<&str> {
        self.device_uri().and_then(|uri| uri.strip_prefix(DEVICE_URI_PREFIX)).filter(|udid| !udid.is_empty())
    }
}

fn first_common_name(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
}

/// Formats a DER INTEGER's content bytes as the protocol's serial number: lowercase hex, no
/// separators, with leading zero bytes (the DER sign byte) removed; zero is `"00"`.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex::encode(&raw[start.min(raw.len())..])
}

/// Whether two serial numbers in hex name the same number: case and leading zeros are
/// ignored, anything that is not hex never matches.
pub fn serials_equal(a: &str, b: &str) -> bool {
    fn normal(s: &str) -> Option<String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let trimmed = s.trim_start_matches('0');
        Some(trimmed.to_ascii_lowercase())
    }
    matches!((normal(a), normal(b)), (Some(x), Some(y)) if x == y)
}

/// Reads every certificate in a PEM text (other sections, such as keys, are skipped).
/// At least one is required.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem { reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(certs)
}

/// Reads exactly one certificate from a PEM text.
pub fn certificate_from_pem(pem: &[u8]) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = certificates_from_pem(pem)?;
    match certs.len() {
        1 => certs.pop().ok_or(CertError::NoCertificate),
        count => Err(CertError::TooManyCertificates { count }),
    }
}

/// Encodes a DER certificate as PEM (64-character lines, trailing newline).
pub fn certificate_to_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    // Base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Checks that `leaf_der` chains, at `now`, to one of `issuer_certs_pem` (each string may
/// hold several PEM certificates) for TLS client authentication.
///
/// Every given certificate is both a trust anchor and an available intermediate, since
/// `caCertificates` lists the issuing CA and any intermediates without saying which is the
/// root. A leaf with no extended key usage passes (RFC 5280); use
/// [`CertificateInfo::has_client_auth_eku`] to require one. Revocation is not checked here:
/// the CA reports it through `GET /api/v1/certificate`.
pub fn verify_issued_by(
    leaf_der: &[u8],
    issuer_certs_pem: &[impl AsRef<str>],
    now: DateTime<Utc>,
) -> Result<(), CertError> {
    let mut issuers = Vec::new();
    for pem in issuer_certs_pem {
        issuers.extend(certificates_from_pem(pem.as_ref().as_bytes())?);
    }
    if issuers.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let anchors = issuers
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(der)
                .map(|anchor| anchor.to_owned())
                .map_err(|e| CertError::Parse { reason: format!("CA certificate: {e}") })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let leaf = CertificateDer::from(leaf_der);
    let end_entity =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| CertError::Parse { reason: e.to_string() })?;
    let seconds = u64::try_from(now.timestamp()).map_err(|_| CertError::ValidityOutOfRange)?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(seconds));

    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &issuers,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| match e {
            webpki::Error::CertExpired { not_after, .. } => {
                CertError::Expired { not_after: from_unix(not_after), now }
            }
            webpki::Error::CertNotValidYet { not_before, .. } => {
                CertError::NotYetValid { not_before: from_unix(not_before), now }
            }
            webpki::Error::UnknownIssuer => CertError::UnknownIssuer,
            webpki::Error::RequiredEkuNotFoundContext(_) => CertError::NotForClientAuth,
            other => CertError::Untrusted { reason: other.to_string() },
        })
}

fn from_unix(time: UnixTime) -> DateTime<Utc> {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_table() {
        let cases: [(&str, &[u8], &str); 5] = [
            ("ok/sign-byte-removed", &[0x00, 0x8b, 0xad], "8bad"),
            ("ok/plain", &[0x01, 0x02], "0102"),
            ("ok/zero", &[0x00], "00"),
            ("ok/empty", &[], ""),
            ("ok/several-zero-bytes", &[0, 0, 0x7f], "7f"),
        ];
        for (name, raw, want) in cases {
            assert_eq!(serial_hex(raw), want, "{name}");
        }
    }

    #[test]
    fn serials_equal_table() {
        let cases = [
            ("ok/same", "8badf00d", "8badf00d", true),
            ("ok/case", "8BADF00D", "8badf00d", true),
            ("ok/leading-zero", "008badf00d", "8badf00d", true),
            ("fail/different", "8badf00d", "8badf00e", false),
            ("fail/not-hex", "xyz", "xyz", false),
            ("fail/empty", "", "", false),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(serials_equal(a, b), want, "{name}");
        }
    }

    #[test]
    fn pem_round_trips() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let pem = certificate_to_pem(&der);
        assert_eq!(certificate_from_pem(pem.as_bytes()).expect("parse").as_ref(), der.as_slice());
        let two = format!("{pem}{pem}");
        assert_eq!(certificate_from_pem(two.as_bytes()), Err(CertError::TooManyCertificates { count: 2 }));
        assert_eq!(certificates_from_pem(two.as_bytes()).expect("two").len(), 2);
        assert_eq!(certificates_from_pem(b"no pem here"), Err(CertError::NoCertificate));
    }
}
