//! The signing trait through which every private key is used, and a software key.
//!
//! A key in the macOS keychain cannot be exported; it can only be asked to sign. So CSR
//! creation ([`crate::csr`]) and the mutual-TLS client certificate ([`crate::tls`]) reach
//! keys only through [`KeySigner`], never through private key bytes. [`SoftwareKey`] is the
//! implementation for platforms whose store holds the key as a PKCS#8 file (Linux) and for
//! tests.

use std::fmt;

use rcgen::KeyPair;

/// The key algorithms the agent creates and the CA accepts from agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256; the default.
    #[default]
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
}

impl KeyAlgorithm {
    /// A short name for logs and `status`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::EcdsaP384Sha384 => "ecdsa-p384-sha384",
        }
    }
}

/// Why a key could not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key store refused or failed (locked keychain, missing key, denied access).
    #[error("the key store could not sign: {0}")]
    Store(String),
}

/// A private key that can sign but need not reveal itself.
///
/// Signatures are over the whole message (the implementation hashes it with the
/// algorithm's hash) and are DER-encoded ECDSA-Sig-Value structures, which is what X.509,
/// PKCS#10 and TLS all expect. Implementations must be usable from several threads: the TLS
/// stack may sign on a runtime worker.
pub trait KeySigner: Send + Sync + fmt::Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> KeyAlgorithm;

    /// The public key as an uncompressed SEC1 point (`04 || X || Y`).
    fn public_key_sec1(&self) -> &[u8];

    /// Signs `message` with the key's algorithm; returns a DER ECDSA signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;

    /// The DER SubjectPublicKeyInfo of the public key.
    fn subject_public_key_info(&self) -> Vec<u8> {
        spki_der(self.algorithm(), self.public_key_sec1())
    }
}

/// Builds the DER SubjectPublicKeyInfo of an EC public key.
pub fn spki_der(algorithm: KeyAlgorithm, sec1_point: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, namedCurve } as fixed DER, then BIT STRING.
    const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let curve = match algorithm {
        KeyAlgorithm::EcdsaP256Sha256 => P256_OID,
        KeyAlgorithm::EcdsaP384Sha384 => P384_OID,
    };
    let mut alg = Vec::with_capacity(2 + EC_PUBLIC_KEY_OID.len() + curve.len());
    alg.push(0x30);
    alg.push((EC_PUBLIC_KEY_OID.len() + curve.len()) as u8);
    alg.extend_from_slice(EC_PUBLIC_KEY_OID);
    alg.extend_from_slice(curve);

    let mut bits = Vec::with_capacity(sec1_point.len() + 3);
    bits.push(0x03);
    push_der_len(&mut bits, sec1_point.len() + 1);
    bits.push(0x00);
    bits.extend_from_slice(sec1_point);

    let mut out = Vec::with_capacity(alg.len() + bits.len() + 4);
    out.push(0x30);
    push_der_len(&mut out, alg.len() + bits.len());
    out.extend_from_slice(&alg);
    out.extend_from_slice(&bits);
    out
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// A key held in memory, loaded from or saved as PKCS#8.
///
/// Used by the Linux store (the key lives in a 0600 file) and by tests. The PKCS#8 bytes
/// are reachable only through [`SoftwareKey::pkcs8_der`], which the store calls to persist
/// the key; nothing else needs them.
pub struct SoftwareKey {
    key_pair: KeyPair,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SoftwareKey").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Why a software key could not be made or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key generation failed.
    #[error("could not generate a key: {0}")]
    Generate(String),
    /// The PKCS#8 bytes are not a supported key.
    #[error("not a supported PKCS#8 ECDSA key: {0}")]
    Parse(String),
}

impl SoftwareKey {
    /// Generates a new key.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let key_pair = KeyPair::generate_for(rcgen_algorithm(algorithm))
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Self { key_pair, algorithm })
    }

    /// Loads a PKCS#8 DER key (P-256 or P-384 ECDSA).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
        for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384] {
            if let Ok(key_pair) = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, rcgen_algorithm(algorithm)) {
                return Ok(Self { key_pair, algorithm });
            }
        }
        Err(KeyError::Parse("neither a P-256 nor a P-384 ECDSA PKCS#8 key".into()))
    }

    /// The PKCS#8 DER encoding, for a store that persists the key. Handle as a secret.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key_pair.serialize_der()
    }
}

fn rcgen_algorithm(algorithm: KeyAlgorithm) -> &'static rcgen::SignatureAlgorithm {
    match algorithm {
        KeyAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
    }
}

impl KeySigner for SoftwareKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_sec1(&self) -> &[u8] {
        self.key_pair.public_key_raw()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        use rcgen::SigningKey as _;
        self.key_pair.sign(message).map_err(|e| SignError::Store(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_matches_rcgen_for_both_curves() {
        for algorithm in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384] {
            let key = SoftwareKey::generate(algorithm).expect("generate");
            use rcgen::PublicKeyData as _;
            assert_eq!(
                key.subject_public_key_info(),
                key.key_pair.subject_public_key_info(),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn pkcs8_round_trips() {
        let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate");
        let again = SoftwareKey::from_pkcs8_der(&key.pkcs8_der()).expect("load");
        assert_eq!(key.public_key_sec1(), again.public_key_sec1());
        assert_eq!(again.algorithm(), KeyAlgorithm::EcdsaP256Sha256);
        assert!(matches!(SoftwareKey::from_pkcs8_der(b"not a key"), Err(KeyError::Parse(_))));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&format!("{:?}", key.pkcs8_der())));
        assert!(shown.starts_with("SoftwareKey"));
    }
}
