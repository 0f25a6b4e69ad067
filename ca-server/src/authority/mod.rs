//! The issuing CA: its key and certificate, CSR checks, the certificate profile, the CRL,
//! and the OCSP responder ([`ocsp`]) that answers with its key.
//!
//! This module does the X.509 work and nothing else: no storage, no policy, no I/O beyond
//! loading or generating the CA's own files. Time comes in as an argument so that the
//! caller's [`crate::clock::Clock`] decides what "now" is.
//!
//! The profile of an issued certificate follows the contract: subject CN from the
//! configuration, issuer the CA, EKU `clientAuth`, keyUsage `digitalSignature`,
//! basicConstraints `CA:FALSE`, one SAN URI `urn:devicetrust:device:<udid>`, a random
//! positive 128-bit serial, and validity from `now - backdate` to `now + lifetime`. The short
//! backdate (five minutes by default) keeps a certificate usable on a device or relying party
//! whose clock runs a little behind the CA's.

use std::fmt;
use std::path::{Path, PathBuf};

pub mod ocsp;

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::FromDer as _;

use crate::fsutil::{self, Visibility};

/// File name of the generated CA certificate in the data directory.
pub const GENERATED_CERT_FILE: &str = "ca.pem";
/// File name of the generated CA key in the data directory (mode 0600).
pub const GENERATED_KEY_FILE: &str = "ca.key";
/// Issuer CN of a generated CA, as the contract's example and browser filters expect.
pub const DEFAULT_ISSUER_COMMON_NAME: &str = "MTLS Certificate Authority";

/// Smallest and largest RSA modulus accepted in a CSR, in bits.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// What issued certificates look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Subject CN of every issued certificate.
    pub subject_common_name: String,
    /// Validity, from issuance.
    pub lifetime: Duration,
    /// How far before issuance notBefore is set.
    pub backdate: Duration,
    /// CRL distribution points written into every certificate (`cRLDistributionPoints`), so
    /// that a relying party can find revocations without being told where.
    pub crl_urls: Vec<String>,
    /// The OCSP responder written into every certificate (Authority Information Access).
    pub ocsp_url: Option<String>,
}

/// Why the CA's own certificate and key could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A generated file could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// A file holds no usable PEM certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file is not a PKCS#8 PEM key rcgen can sign with.
    #[error("{path} is not a supported PKCS#8 PEM private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate is unusable as an issuer.
    #[error("the CA certificate {path} is unusable: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of the two generated files exists; regenerating would orphan the other.
    #[error("{present} exists but {missing} does not; restore it or remove both to generate a new CA")]
    HalfGenerated {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Generating the CA failed.
    #[error("cannot generate the CA")]
    Generate(#[source] rcgen::Error),
}

/// Why a CSR was refused. The messages are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not base64 with the standard alphabet and padding.
    #[error("the csr is not base64 (standard alphabet, padded)")]
    NotBase64,
    /// Not a DER PKCS#10 request.
    #[error("the csr is not a DER PKCS#10 certification request")]
    Malformed,
    /// The signature algorithm is not accepted (SHA-1, or something unknown).
    #[error("the csr signature algorithm {oid} is not accepted")]
    SignatureAlgorithm {
        /// Dotted OID.
        oid: String,
    },
    /// The self-signature does not verify: no proof of possession of the key.
    #[error("the csr self-signature does not verify")]
    BadSignature,
    /// A key type other than P-256, P-384 or RSA.
    #[error("the csr key type {kind} is not accepted; use P-256, P-384 or RSA 2048 to 4096 bits")]
    KeyType {
        /// What the key is.
        kind: String,
    },
    /// An RSA key outside 2048 to 4096 bits.
    #[error("the csr RSA key of {bits} bits is not accepted; use 2048 to 4096 bits")]
    RsaKeySize {
        /// The modulus size.
        bits: usize,
    },
    /// A renewal CSR carries the key of the certificate it renews.
    #[error("a renewal csr must carry a new key, not the key of the presented certificate")]
    KeyReused,
}

/// Why signing failed, with its cause. Internal: the client only sees `internal`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The issuing key or rcgen failed.
    #[error("the issuing key cannot sign")]
    Key(#[from] rcgen::Error),
    /// An extension rcgen has no field for could not be encoded.
    #[error("cannot encode the {what}")]
    Encode {
        /// Which extension or field.
        what: &'static str,
        /// The cause.
        #[source]
        source: der::Error,
    },
    /// A serial in the store is not hex.
    #[error("the stored serial {serial:?} is not hex")]
    StoredSerial {
        /// The serial as stored.
        serial: String,
        /// The cause.
        #[source]
        source: hex::FromHexError,
    },
    /// OCSP responses cannot be signed with the issuing key's algorithm.
    #[error("no ocsp signature algorithm for the issuing key's algorithm {algorithm}")]
    Algorithm {
        /// The algorithm.
        algorithm: String,
    },
}

/// The kinds of key accepted in a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
    /// RSA with this many modulus bits.
    Rsa(usize),
}

/// The public key of a checked CSR, in the form rcgen writes into a certificate.
#[derive(Clone, PartialEq, Eq)]
struct CsrPublicKey {
    /// The SubjectPublicKeyInfo's BIT STRING contents (EC point or RSAPublicKey DER).
    raw: Vec<u8>,
    /// rcgen's algorithm whose key OIDs match the key (the signature part is unused).
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// A CSR whose self-signature verified and whose key is acceptable.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    key: CsrPublicKey,
    kind: KeyKind,
    spki_sha256: String,
}

impl fmt::Debug for CheckedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is public, but a whole CSR never goes to logs; the digest identifies it.
        f.debug_struct("CheckedCsr")
            .field("kind", &self.kind)
            .field("spki_sha256", &self.spki_sha256)
            .finish()
    }
}

impl CheckedCsr {
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo exactly as it will appear in the
    /// issued certificate; the idempotency key together with the device.
    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }

    /// The key type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
}

/// Parses a CSR sent as base64 DER, verifies its self-signature and checks its key type.
///
/// The subject and every requested extension are ignored: the CA decides the profile.
pub fn check_csr(base64_der: &str) -> Result<CheckedCsr, CsrError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64_der.trim())
        .map_err(|_| CsrError::NotBase64)?;
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|_| CsrError::Malformed)?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed);
    }
    let spki = &csr.certification_request_info.subject_pki;
    let raw = spki.subject_public_key.data.to_vec();
    let (kind, alg) = if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 && raw.len() == 65 && raw[0] == 4 => {
                (KeyKind::P256, &rcgen::PKCS_ECDSA_P256_SHA256)
            }
            Some(c) if c == OID_NIST_EC_P384 && raw.len() == 97 && raw[0] == 4 => {
                (KeyKind::P384, &rcgen::PKCS_ECDSA_P384_SHA384)
            }
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => {
                return Err(CsrError::KeyType { kind: "EC with a compressed or malformed point".into() });
            }
            Some(c) => return Err(CsrError::KeyType { kind: format!("EC on curve {}", c.to_id_string()) }),
            None => return Err(CsrError::KeyType { kind: "EC without a named curve".into() }),
        }
    } else if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
            _ => return Err(CsrError::Malformed),
        };
        if !RSA_BITS.contains(&bits) {
            return Err(CsrError::RsaKeySize { bits });
        }
        (KeyKind::Rsa(bits), &rcgen::PKCS_RSA_SHA256)
    } else {
        return Err(CsrError::KeyType { kind: key_type_name(&spki.algorithm.algorithm.to_id_string()) });
    };

    // Checked after the key type, so that a refused key is reported as such rather than as
    // its signature algorithm (an Ed25519 key signs with Ed25519).
    let sig_alg = &csr.signature_algorithm.algorithm;
    let accepted_sig = [
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
    ];
    if !accepted_sig.contains(sig_alg) {
        return Err(CsrError::SignatureAlgorithm { oid: sig_alg.to_id_string() });
    }

    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let key = CsrPublicKey { raw, alg };
    let spki_sha256 = hex::encode(Sha256::digest(key.subject_public_key_info()));
    Ok(CheckedCsr { key, kind, spki_sha256 })
}

fn key_type_name(oid: &str) -> String {
    match oid {
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => format!("with algorithm {other}"),
    }
}

/// Bits in a big-endian unsigned modulus, ignoring leading zero bytes.
fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// A freshly signed certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// Serial, lowercase hex.
    pub serial: String,
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub fingerprint: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A revoked certificate, for the CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Serial, lowercase hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
    /// Why.
    pub reason: RevocationReason,
}

/// Why a certificate is listed as revoked (in the CRL and in OCSP answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    /// An administrator revoked the user's or device's certificates (RFC 5280
    /// `privilegeWithdrawn`: the device is no longer trusted; the key is not known to be
    /// compromised).
    PrivilegeWithdrawn,
    /// A renewal replaced it and its grace period is over (`superseded`).
    Superseded,
}

impl RevocationReason {
    fn crl_reason(self) -> rcgen::RevocationReason {
        match self {
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            Self::Superseded => rcgen::RevocationReason::Superseded,
        }
    }

    /// The RFC 5280 `CRLReason` code.
    pub fn code(self) -> u8 {
        match self {
            Self::PrivilegeWithdrawn => 9,
            Self::Superseded => 4,
        }
    }
}

/// The hashes an OCSP `CertID` names the issuer by (RFC 6960 4.1.1): of the issuer's
/// subject name (DER) and of its public key (the BIT STRING's value), in SHA-1 (what
/// OpenSSL and most clients send) and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerHashes {
    /// SHA-1 of the subject name.
    pub name_sha1: Vec<u8>,
    /// SHA-1 of the public key; also the OCSP `ResponderID` by key.
    pub key_sha1: Vec<u8>,
    /// SHA-256 of the subject name.
    pub name_sha256: Vec<u8>,
    /// SHA-256 of the public key.
    pub key_sha256: Vec<u8>,
}

/// The Authority Information Access extension naming `url` as the OCSP responder, encoded
/// with `x509-cert` (rcgen has no field for it).
fn authority_info_access(url: &str) -> Result<rcgen::CustomExtension, SignError> {
    use der::Encode as _;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let location =
        der::asn1::Ia5String::new(url).map_err(|source| SignError::Encode { what: "ocsp url", source })?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let content = aia
        .to_der()
        .map_err(|source| SignError::Encode { what: "authority information access extension", source })?;
    // id-pe-authorityInfoAccess, 1.3.6.1.5.5.7.1.1.
    Ok(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content))
}

/// The issuing CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    certificate_der: CertificateDer<'static>,
    certificate_pem: String,
    chain_pem: Vec<String>,
    issuer_common_name: String,
    not_after: DateTime<Utc>,
    crl_key_id: KeyIdMethod,
    issuer_hashes: IssuerHashes,
    profile: Profile,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Authority")
            .field("issuer_common_name", &self.issuer_common_name)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Loads the CA certificate and PKCS#8 key from PEM files; `chain` lists further PEM
    /// certificates sent after the issuer (when the issuer is an intermediate).
    pub fn load(
        certificate: &Path,
        private_key: &Path,
        chain: &[PathBuf],
        profile: Profile,
    ) -> Result<Self, AuthorityError> {
        if let Some(reason) = crate::fsutil::key_file_problem(private_key) {
            return Err(AuthorityError::BadKey { path: private_key.to_owned(), reason });
        }
        let cert_pem = read(certificate)?;
        let key_pem = read(private_key)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| AuthorityError::BadKey { path: private_key.to_owned(), reason: e.to_string() })?;
        let mut extra = Vec::new();
        for path in chain {
            let pem = read(path)?;
            let der = first_pem_certificate(&pem)
                .ok_or_else(|| AuthorityError::NoCertificate { path: path.clone() })?;
            extra.push(pem_encode(&der));
        }
        Self::from_parts(&cert_pem, certificate, key, extra, profile)
    }

    /// Loads the CA generated earlier in `dir`, or generates one (a P-256 key and a
    /// self-signed certificate with CN `common_name`, valid `validity` from `now`).
    pub fn load_or_generate(
        dir: &Path,
        common_name: &str,
        validity: Duration,
        now: DateTime<Utc>,
        profile: Profile,
    ) -> Result<Self, AuthorityError> {
        let cert_path = dir.join(GENERATED_CERT_FILE);
        let key_path = dir.join(GENERATED_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Self::load(&cert_path, &key_path, &[], profile),
            (true, false) => {
                return Err(AuthorityError::HalfGenerated { present: cert_path, missing: key_path });
            }
            (false, true) => {
                return Err(AuthorityError::HalfGenerated { present: key_path, missing: cert_path });
            }
            (false, false) => {}
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(AuthorityError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.not_before = to_offset(now - profile.backdate);
        params.not_after = to_offset(now + validity);
        let cert = params.self_signed(&key).map_err(AuthorityError::Generate)?;
        // Key first: a crash in between leaves a key without a certificate, which the next
        // start reports instead of silently making a second CA.
        fsutil::write_atomic(&key_path, key.serialize_pem().as_bytes(), Visibility::Private)?;
        fsutil::write_atomic(&cert_path, cert.pem().as_bytes(), Visibility::Public)?;
        tracing::info!(path = %cert_path.display(), "generated a new issuing CA");
        Self::from_parts(&cert.pem(), &cert_path, key, Vec::new(), profile)
    }

    fn from_parts(
        cert_pem: &str,
        cert_path: &Path,
        key: KeyPair,
        extra_chain: Vec<String>,
        profile: Profile,
    ) -> Result<Self, AuthorityError> {
        let bad = |reason: &str| AuthorityError::BadCertificate {
            path: cert_path.to_owned(),
            reason: reason.to_owned(),
        };
        let der = first_pem_certificate(cert_pem)
            .ok_or_else(|| AuthorityError::NoCertificate { path: cert_path.to_owned() })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&der).map_err(|_| bad("not a DER X.509 certificate"))?;
        if x509.tbs_certificate.subject_pki.subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad("the private key does not belong to this certificate"));
        }
        if !x509.is_ca() {
            return Err(bad("it is not a CA certificate (basicConstraints CA:TRUE)"));
        }
        let issuer_common_name = x509
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| bad("its subject has no common name"))?;
        let not_after = DateTime::from_timestamp(x509.validity().not_after.timestamp(), 0)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let crl_key_id = x509
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let name = x509.subject().as_raw();
        let public_key = x509.public_key().subject_public_key.data.as_ref();
        let sha1 = |data: &[u8]| {
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref().to_vec()
        };
        let issuer_hashes = IssuerHashes {
            name_sha1: sha1(name),
            key_sha1: sha1(public_key),
            name_sha256: Sha256::digest(name).to_vec(),
            key_sha256: Sha256::digest(public_key).to_vec(),
        };
        let certificate_der = CertificateDer::from(der.clone());
        let issuer = Issuer::from_ca_cert_der(&certificate_der, key).map_err(|e| bad(&e.to_string()))?;
        let certificate_pem = pem_encode(&der);
        let mut chain_pem = vec![certificate_pem.clone()];
        chain_pem.extend(extra_chain);
        Ok(Self {
            issuer,
            certificate_der,
            certificate_pem,
            chain_pem,
            issuer_common_name,
            not_after,
            crl_key_id,
            issuer_hashes,
            profile,
        })
    }

    /// How OCSP requests name this issuer.
    pub fn issuer_hashes(&self) -> &IssuerHashes {
        &self.issuer_hashes
    }

    /// Signs `message` with the issuing key (an OCSP response's `tbsResponseData`); returns
    /// the DER `AlgorithmIdentifier` of the signature and the signature.
    pub fn sign_raw(&self, message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SignError> {
        use rcgen::SigningKey as _;
        let key = self.issuer.key();
        let algorithm = key.algorithm();
        // DER AlgorithmIdentifiers: ecdsa-with-SHA256/384 take no parameters; RSA PKCS#1 v1.5
        // takes NULL.
        let identifier: &[u8] = if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
            &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
        } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
            &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]
        } else if algorithm == &rcgen::PKCS_RSA_SHA256 {
            &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00]
        } else if algorithm == &rcgen::PKCS_ED25519 {
            &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]
        } else {
            return Err(SignError::Algorithm { algorithm: format!("{algorithm:?}") });
        };
        Ok((identifier.to_vec(), key.sign(message)?))
    }

    /// The issuer's CN, which browser filters match.
    pub fn issuer_common_name(&self) -> &str {
        &self.issuer_common_name
    }

    /// The issuing certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    /// The issuing certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The chain sent with every issued certificate: the issuer, then any configured chain.
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// When the issuing certificate expires.
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// The issuance profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Signs a certificate for `udid` over the CSR's key, valid from `now`.
    pub fn issue(&self, csr: &CheckedCsr, udid: &str, now: DateTime<Utc>) -> Result<Issued, SignError> {
        let serial = random_serial();
        let not_before = now - self.profile.backdate;
        let not_after = now + self.profile.lifetime;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, self.profile.subject_common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = Ia5String::try_from(ca_client::protocol::device_uri(udid))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.use_authority_key_identifier_extension = true;
        if !self.profile.crl_urls.is_empty() {
            params.crl_distribution_points =
                vec![rcgen::CrlDistributionPoint { uris: self.profile.crl_urls.clone() }];
        }
        if let Some(url) = &self.profile.ocsp_url {
            params.custom_extensions.push(authority_info_access(url)?);
        }
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&csr.key, &self.issuer)?;
        let der = cert.der().to_vec();
        Ok(Issued {
            serial: hex::encode(serial.as_ref()),
            pem: cert.pem(),
            fingerprint: hex::encode(Sha256::digest(&der)),
            der,
            // Certificate times have whole seconds; report what the certificate says.
            not_before: truncate(not_before),
            not_after: truncate(not_after),
            spki_sha256: csr.spki_sha256.clone(),
        })
    }

    /// Signs a DER CRL listing `revoked`.
    pub fn crl(
        &self,
        revoked: &[RevokedEntry],
        this_update: DateTime<Utc>,
        next_update: DateTime<Utc>,
        number: u64,
    ) -> Result<Vec<u8>, SignError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for entry in revoked {
            let bytes = hex::decode(&entry.serial)
                .map_err(|source| SignError::StoredSerial { serial: entry.serial.clone(), source })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from(bytes),
                revocation_time: to_offset(entry.revoked_at),
                reason_code: Some(entry.reason.crl_reason()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: to_offset(this_update),
            next_update: to_offset(next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.crl_key_id.clone(),
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

fn read(path: &Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(|source| AuthorityError::Read { path: path.to_owned(), source })
}

/// The first `CERTIFICATE` block of a PEM text, as DER.
pub fn first_pem_certificate(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok().map(|c| c.to_vec())
}

/// PEM-encodes a DER certificate.
pub fn pem_encode(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// PEM-encodes DER under `label` (`CERTIFICATE`, `X509 CRL`).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 32);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A random positive serial of exactly 16 bytes: the top bit is clear so that DER needs no
/// leading zero, and the first byte is non-zero so that DER strips nothing. The hex form is
/// therefore always 32 characters and matches what parsers print.
fn random_serial() -> SerialNumber {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

fn to_offset(t: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_b64(key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "ignored");
        let csr = params.serialize_request(key).expect("csr");
        base64::engine::general_purpose::STANDARD.encode(csr.der())
    }

    fn profile() -> Profile {
        Profile {
            subject_common_name: "Device Trust".into(),
            lifetime: Duration::days(365),
            backdate: Duration::minutes(5),
            crl_urls: vec!["https://ca.example.com/crl".into()],
            ocsp_url: Some("http://ca.example.com/ocsp".into()),
        }
    }

    #[test]
    fn csr_checks() {
        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let good = csr_b64(&p256);
        let mut tampered = base64::engine::general_purpose::STANDARD.decode(&good).expect("b64");
        let n = tampered.len();
        tampered[n - 3] ^= 0x01;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);

        let cases: Vec<(&str, String, Result<KeyKind, CsrError>)> = vec![
            ("ok/p256", good.clone(), Ok(KeyKind::P256)),
            ("ok/p384", csr_b64(&p384), Ok(KeyKind::P384)),
            ("fail/not-base64", "%%%".into(), Err(CsrError::NotBase64)),
            ("fail/not-der", "AAAA".into(), Err(CsrError::Malformed)),
            ("fail/bad-signature", tampered, Err(CsrError::BadSignature)),
            ("fail/ed25519", csr_b64(&ed), Err(CsrError::KeyType { kind: "Ed25519".into() })),
        ];
        for (name, input, want) in cases {
            let got = check_csr(&input).map(|c| c.kind());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn modulus_bits_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0x00]), 15);
        assert_eq!(modulus_bits(&[0x00]), 0);
    }

    #[test]
    fn generated_ca_issues_the_contract_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let ca = Authority::load_or_generate(
            dir.path(),
            DEFAULT_ISSUER_COMMON_NAME,
            Duration::days(3650),
            now,
            profile(),
        )
        .expect("generate");
        assert_eq!(ca.issuer_common_name(), DEFAULT_ISSUER_COMMON_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode =
                std::fs::metadata(dir.path().join(GENERATED_KEY_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Authority::load_or_generate(dir.path(), "other", Duration::days(1), now, profile())
            .expect("load");
        assert_eq!(again.certificate_der(), ca.certificate_der(), "a second start loads, not regenerates");

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = check_csr(&csr_b64(&key)).expect("csr");
        let issued = ca.issue(&csr, "UDID-1", now).expect("issue");
        assert_eq!(issued.serial.len(), 32);
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("parse");
        assert_eq!(hex::encode(cert.raw_serial()), issued.serial);
        assert_eq!(hex::encode(Sha256::digest(cert.public_key().raw)), issued.spki_sha256);
        assert_eq!(cert.validity().not_after.timestamp(), issued.not_after.timestamp());
        assert!(!cert.is_ca());
        let cn: Vec<_> = cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
        assert_eq!(cn, ["Device Trust"]);
        let eku = cert.extended_key_usage().expect("eku").expect("present").value;
        assert!(eku.client_auth && !eku.server_auth);
        let san = cert.subject_alternative_name().expect("san").expect("present").value;
        assert_eq!(
            format!("{:?}", san.general_names),
            format!("{:?}", [x509_parser::extensions::GeneralName::URI("urn:devicetrust:device:UDID-1")])
        );
        let crl_dp = cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::CRLDistributionPoints(points) => Some(points),
                _ => None,
            })
            .expect("a CRL distribution point");
        assert_eq!(format!("{crl_dp:?}").matches("https://ca.example.com/crl").count(), 1, "{crl_dp:?}");

        let crl = ca
            .crl(
                &[RevokedEntry {
                    serial: issued.serial.clone(),
                    revoked_at: now,
                    reason: RevocationReason::PrivilegeWithdrawn,
                }],
                now,
                now + Duration::hours(24),
                7,
            )
            .expect("crl");
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).expect("parse crl");
        let serials: Vec<_> =
            parsed.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
        assert_eq!(serials, [issued.serial]);
    }

    #[test]
    fn half_generated_ca_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(GENERATED_KEY_FILE), "x").expect("write");
        let err = Authority::load_or_generate(dir.path(), "x", Duration::days(1), Utc::now(), profile())
            .expect_err("must refuse");
        assert!(matches!(err, AuthorityError::HalfGenerated { .. }), "{err}");
    }
}
