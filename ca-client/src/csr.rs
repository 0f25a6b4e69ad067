//! CSR creation: a PKCS#10 request signed by a key that is reached only through
//! [`KeySigner`].
//!
//! rcgen builds and encodes the request; the signature comes from the trait, so a
//! non-exportable keychain key signs its own CSR. The CA ignores the CSR's subject and
//! extensions (it takes only the public key, after checking the self-signature), so the
//! request carries just a common name.

use std::cell::Cell;
use std::fmt;

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, PublicKeyData, SignatureAlgorithm, SigningKey};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer as _;

use crate::signer::{KeyAlgorithm, KeySigner, SignError};

/// A DER PKCS#10 certificate signing request.
#[derive(Clone, PartialEq, Eq)]
pub struct Csr {
    der: Vec<u8>,
}

impl fmt::Debug for Csr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csr").field("der_len", &self.der.len()).finish()
    }
}

impl Csr {
    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The DER encoding, by value.
    pub fn into_der(self) -> Vec<u8> {
        self.der
    }

    /// Base64 (standard alphabet, padded) of the DER: the wire `csr` field.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.der)
    }
}

/// Why a CSR could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The key store refused to sign.
    #[error("the key could not sign the csr")]
    Sign(#[source] SignError),
    /// The key returned a signature that does not verify against its own public key
    /// (for example a raw `r || s` pair instead of a DER ECDSA-Sig-Value).
    #[error("the key's {algorithm} signature over the csr does not verify")]
    BadSignature {
        /// The key's algorithm name.
        algorithm: &'static str,
    },
    /// rcgen could not encode the request.
    #[error("could not encode the csr: {reason}")]
    Encode {
        /// What went wrong.
        reason: String,
    },
}

/// Creates a CSR for `key` with subject `CN=<common_name>`, signed by `key`.
///
/// The new request is parsed back and its self-signature verified before it is returned, so
/// that a key store that signs in the wrong format fails here, not at the CA.
pub fn create_csr(key: &dyn KeySigner, common_name: &str) -> Result<Csr, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);

    let adapter = RcgenKey::new(key);
    let request = params.serialize_request(&adapter).map_err(|e| match adapter.take_error() {
        Some(sign_error) => CsrError::Sign(sign_error),
        None => CsrError::Encode { reason: e.to_string() },
    })?;
    let der = request.der().to_vec();

    let bad_signature = || CsrError::BadSignature { algorithm: key.algorithm().name() };
    let (_, parsed) = X509CertificationRequest::from_der(&der).map_err(|_| bad_signature())?;
    parsed.verify_signature().map_err(|_| bad_signature())?;
    Ok(Csr { der })
}

/// rcgen's view of a [`KeySigner`]. rcgen's error type cannot carry our [`SignError`], so the
/// adapter keeps the first one for [`create_csr`] to report.
struct RcgenKey<'a> {
    key: &'a dyn KeySigner,
    error: Cell<Option<SignError>>,
}

impl<'a> RcgenKey<'a> {
    fn new(key: &'a dyn KeySigner) -> Self {
        Self { key, error: Cell::new(None) }
    }

    fn take_error(&self) -> Option<SignError> {
        self.error.take()
    }
}

impl PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key_sec1()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.key.algorithm() {
            KeyAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl SigningKey for RcgenKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(msg).map_err(|e| {
            self.error.set(Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SoftwareKey;

    #[derive(Debug)]
    struct Refusing(SoftwareKey);

    impl KeySigner for Refusing {
        fn algorithm(&self) -> KeyAlgorithm {
            self.0.algorithm()
        }
        fn public_key_sec1(&self) -> &[u8] {
            self.0.public_key_sec1()
        }
        fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, SignError> {
            Err(SignError::Store("keychain is locked".into()))
        }
    }

    /// Signs with one key but claims another's public key.
    #[derive(Debug)]
    struct Impostor {
        claimed: SoftwareKey,
        signing: SoftwareKey,
    }

    impl KeySigner for Impostor {
        fn algorithm(&self) -> KeyAlgorithm {
            self.claimed.algorithm()
        }
        fn public_key_sec1(&self) -> &[u8] {
            self.claimed.public_key_sec1()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
            self.signing.sign(message)
        }
    }

    #[test]
    fn csr_carries_the_key_and_the_common_name() {
        for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384] {
            let key = SoftwareKey::generate(algorithm).expect("generate");
            let csr = create_csr(&key, "Device Trust").expect("csr");
            let (rest, parsed) = X509CertificationRequest::from_der(csr.der()).expect("parse");
            assert!(rest.is_empty());
            let info = &parsed.certification_request_info;
            assert_eq!(info.subject_pki.raw, key.subject_public_key_info().as_slice(), "{algorithm:?}");
            let cn = info.subject.iter_common_name().next().and_then(|cn| cn.as_str().ok());
            assert_eq!(cn, Some("Device Trust"));
            let decoded = base64::engine::general_purpose::STANDARD.decode(csr.to_base64()).expect("base64");
            assert_eq!(decoded, csr.der());
        }
    }

    #[test]
    fn a_refusing_key_store_is_reported_as_sign_error() {
        let key = Refusing(SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"));
        assert_eq!(create_csr(&key, "x"), Err(CsrError::Sign(SignError::Store("keychain is locked".into()))));
    }

    #[test]
    fn a_signature_by_another_key_is_caught() {
        let key = Impostor {
            claimed: SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"),
            signing: SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"),
        };
        assert_eq!(create_csr(&key, "x"), Err(CsrError::BadSignature { algorithm: "ecdsa-p256-sha256" }));
    }

    #[test]
    fn debug_shows_only_the_length() {
        let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate");
        let csr = create_csr(&key, "x").expect("csr");
        assert_eq!(format!("{csr:?}"), format!("Csr {{ der_len: {} }}", csr.der().len()));
    }
}
