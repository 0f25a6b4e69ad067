//! The OCSP responder (RFC 6960): parsing a request, and encoding and signing the answer.
//!
//! ASN.1 is RustCrypto's `x509-ocsp` and `der`; nothing here writes DER by hand except the
//! fixed `AlgorithmIdentifier` the issuing key signs with ([`Authority::sign_raw`]). The
//! issuing CA signs the responses itself (RFC 6960 2.6: no delegated responder
//! certificate to issue, rotate or check). What each certificate's status is comes from
//! the store, through the caller: [`answer`] takes a lookup function, so this module does
//! no I/O and is tested with a table.
//!
//! The answers: `good`; `revoked` with its time and reason (an administrator's revocation
//! is `privilegeWithdrawn`; a renewal's predecessor past its grace period is `superseded`,
//! as in the CRL); `unknown` for a serial this CA never issued; and `unauthorized` for a
//! request about another issuer's certificates. A request's nonce is echoed.

use chrono::{DateTime, Utc};
use der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use der::{Decode as _, Encode as _};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

use super::{Authority, IssuerHashes, RevocationReason, SignError};

/// Most certificates one request may ask about; each is a store lookup.
pub const MAX_REQUESTS: usize = 16;
/// Largest request body accepted: a request for [`MAX_REQUESTS`] certificates is well under.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// `id-pkix-ocsp-nonce`.
const NONCE_OID: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// `id-pkix-ocsp-basic`.
const BASIC_OID: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const SHA1_OID: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256_OID: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// What the store says of one serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Issued here and not revoked.
    Good,
    /// Revoked at this time, for this reason.
    Revoked {
        /// When.
        at: DateTime<Utc>,
        /// Why.
        reason: RevocationReason,
    },
    /// Not issued here.
    Unknown,
}

/// The certificates a request asks about, by serial (lowercase hex), in order; `None` for
/// one that names another issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    request: OcspRequest,
    /// Per request entry: the serial if it names this issuer.
    pub serials: Vec<Option<String>>,
}

/// A request that gets no per-certificate answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a DER OCSP request, empty, or over [`MAX_REQUESTS`].
    Malformed,
    /// Every certificate it asks about is another issuer's.
    Unauthorized,
    /// The store or the issuing key failed.
    Internal,
}

impl Refusal {
    /// The DER `OCSPResponse` for this refusal (unsigned, as RFC 6960 prescribes).
    pub fn response(self) -> Vec<u8> {
        let status = match self {
            Self::Malformed => OcspResponseStatus::MalformedRequest,
            Self::Unauthorized => OcspResponseStatus::Unauthorized,
            Self::Internal => OcspResponseStatus::InternalError,
        };
        OcspResponse { response_status: status, response_bytes: None }.to_der().unwrap_or_default()
    }
}

/// Parses a DER request and finds which of its entries name this issuer.
pub fn parse(der: &[u8], issuer: &IssuerHashes) -> Result<Parsed, Refusal> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(Refusal::Malformed);
    }
    let request = OcspRequest::from_der(der).map_err(|_| Refusal::Malformed)?;
    let entries = &request.tbs_request.request_list;
    if entries.is_empty() || entries.len() > MAX_REQUESTS {
        return Err(Refusal::Malformed);
    }
    let serials: Vec<Option<String>> = entries
        .iter()
        .map(|entry| names_issuer(&entry.req_cert, issuer).then(|| serial_hex(&entry.req_cert)))
        .collect();
    if serials.iter().all(Option::is_none) {
        return Err(Refusal::Unauthorized);
    }
    Ok(Parsed { request, serials })
}

fn names_issuer(id: &CertId, issuer: &IssuerHashes) -> bool {
    let (name, key) = match id.hash_algorithm.oid {
        SHA1_OID => (&issuer.name_sha1, &issuer.key_sha1),
        SHA256_OID => (&issuer.name_sha256, &issuer.key_sha256),
        _ => return false,
    };
    id.issuer_name_hash.as_bytes() == name.as_slice() && id.issuer_key_hash.as_bytes() == key.as_slice()
}

/// The serial as the store keys it: lowercase hex of the INTEGER's content octets (what
/// x509-parser's `raw_serial` gives for the certificate itself).
fn serial_hex(id: &CertId) -> String {
    hex::encode(id.serial_number.as_bytes())
}

/// Why a response could not be built (the issuing key failed, or encoding did).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    /// Encoding the response failed.
    #[error("cannot encode an ocsp response")]
    Encode(#[source] der::Error),
    /// A time before 1970 (a clock gone wrong).
    #[error("cannot encode a time before 1970 in an ocsp response")]
    Time,
    /// The issuing key failed.
    #[error("cannot sign an ocsp response")]
    Sign(#[source] SignError),
}

fn der_error(e: der::Error) -> OcspError {
    OcspError::Encode(e)
}

fn time(t: DateTime<Utc>) -> Result<OcspGeneralizedTime, OcspError> {
    let secs = u64::try_from(t.timestamp()).map_err(|_| OcspError::Time)?;
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(OcspGeneralizedTime)
        .map_err(der_error)
}

/// The signed DER response: one `SingleResponse` per request entry, with `statuses[i]` the
/// status of entry `i` (ignored, and `unknown`, for entries naming another issuer).
pub fn answer(
    parsed: &Parsed,
    statuses: &[Status],
    authority: &Authority,
    now: DateTime<Utc>,
    next_update: DateTime<Utc>,
) -> Result<Vec<u8>, OcspError> {
    let this_update = time(now)?;
    let next_update = time(next_update)?;
    let mut responses = Vec::with_capacity(parsed.serials.len());
    for (i, entry) in parsed.request.tbs_request.request_list.iter().enumerate() {
        let status = match (parsed.serials[i].as_ref(), statuses.get(i)) {
            (Some(_), Some(status)) => *status,
            _ => Status::Unknown,
        };
        let cert_status = match status {
            Status::Good => CertStatus::Good(Null),
            Status::Unknown => CertStatus::Unknown(Null),
            Status::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
                revocation_time: time(at)?,
                revocation_reason: Some(match reason {
                    RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
                    RevocationReason::Superseded => CrlReason::Superseded,
                }),
            }),
        };
        responses.push(SingleResponse {
            cert_id: entry.req_cert.clone(),
            cert_status,
            this_update,
            next_update: Some(next_update),
            single_extensions: None,
        });
    }
    let nonce = parsed
        .request
        .tbs_request
        .request_extensions
        .iter()
        .flatten()
        .find(|ext| ext.extn_id == NONCE_OID)
        .map(|ext| Extension { extn_id: NONCE_OID, critical: false, extn_value: ext.extn_value.clone() });
    let data = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(authority.issuer_hashes().key_sha1.clone()).map_err(der_error)?,
        ),
        produced_at: this_update,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs = data.to_der().map_err(der_error)?;
    let (algorithm, signature) = authority.sign_raw(&tbs).map_err(OcspError::Sign)?;
    let basic = BasicOcspResponse {
        tbs_response_data: data,
        signature_algorithm: AlgorithmIdentifierOwned::from_der(&algorithm).map_err(der_error)?,
        signature: BitString::from_bytes(&signature).map_err(der_error)?,
        certs: None,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(x509_ocsp::ResponseBytes {
            response_type: BASIC_OID,
            response: OctetString::new(basic.to_der().map_err(der_error)?).map_err(der_error)?,
        }),
    }
    .to_der()
    .map_err(der_error)
}
