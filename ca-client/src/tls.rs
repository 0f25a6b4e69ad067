//! The rustls client configuration for talking to the CA: which roots to trust and which
//! client certificate to present.
//!
//! Cryptography is rustls's *ring* provider, never OpenSSL or aws-lc, so the agent is one
//! static binary with no C library to ship or patch beyond ring.
//!
//! Roots: a pinned PEM bundle when one is configured (then nothing else is trusted: the CA's
//! TLS certificate must chain to it), otherwise the platform's roots through
//! `rustls-native-certs`. That crate reads the macOS keychains' trust settings (system,
//! admin and user domains, so roots an MDM profile installs count) and the Linux system
//! bundle, and hands them to rustls's webpki verifier. We prefer it over
//! `rustls-platform-verifier` because it keeps one verifier, webpki, on every platform and
//! adds no network-dependent revocation checks to the agent's run; pinning the CA bundle,
//! which deployments are expected to do, makes the platform roots irrelevant anyway.
//!
//! Mutual TLS: [`SignerCertResolver`] presents a certificate chain whose private key is used
//! only through [`KeySigner`], so a keychain key that cannot be exported signs the
//! handshake itself.

use std::fmt;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::cert::{CertificateInfo, certificates_from_pem};
use crate::signer::{KeyAlgorithm, KeySigner};

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The pinned bundle holds no usable certificate.
    #[error("the pinned CA bundle is not usable: {reason}")]
    PinnedRoots {
        /// What is wrong.
        reason: String,
    },
    /// No pinned bundle was given and the platform offers no trust roots.
    #[error("no pinned CA bundle and no platform trust roots could be loaded: {reason}")]
    NoPlatformRoots {
        /// What the platform said.
        reason: String,
    },
    /// The client identity has no certificate.
    #[error("the client identity has no certificate")]
    EmptyChain,
    /// The client certificate cannot be read.
    #[error("the client certificate cannot be read: {reason}")]
    BadClientCertificate {
        /// What is wrong.
        reason: String,
    },
    /// The client certificate is for another key than the signer's.
    #[error("the client certificate (serial {serial}) is not for the signing key")]
    KeyMismatch {
        /// The certificate's serial.
        serial: String,
    },
    /// rustls refused the configuration.
    #[error("invalid tls configuration: {reason}")]
    Config {
        /// rustls's reason.
        reason: String,
    },
}

/// A client certificate chain and the key that signs for it.
#[derive(Clone)]
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn KeySigner>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &self.key)
            .finish()
    }
}

impl ClientIdentity {
    /// Pairs `chain` (leaf first, then any intermediates) with `key`, after checking that the
    /// leaf certifies `key`'s public key: presenting a certificate for another key would fail
    /// at the CA with a handshake error that says much less.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: Arc<dyn KeySigner>) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or(TlsError::EmptyChain)?;
        let info = CertificateInfo::from_der(leaf)
            .map_err(|e| TlsError::BadClientCertificate { reason: e.to_string() })?;
        if !info.matches_key(key.as_ref()) {
            return Err(TlsError::KeyMismatch { serial: info.serial_number().to_owned() });
        }
        Ok(Self { chain, key })
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The key.
    pub fn key(&self) -> &Arc<dyn KeySigner> {
        &self.key
    }
}

/// The TLS signature scheme for a key algorithm.
pub const fn signature_scheme(algorithm: KeyAlgorithm) -> SignatureScheme {
    match algorithm {
        KeyAlgorithm::EcdsaP256Sha256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        KeyAlgorithm::EcdsaP384Sha384 => SignatureScheme::ECDSA_NISTP384_SHA384,
    }
}

/// The roots to trust: only the pinned bundle when given, else the platform's.
pub fn root_store(pinned_roots_pem: Option<&[u8]>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match pinned_roots_pem {
        Some(pem) => {
            let certs =
                certificates_from_pem(pem).map_err(|e| TlsError::PinnedRoots { reason: e.to_string() })?;
            for cert in certs {
                roots.add(cert).map_err(|e| TlsError::PinnedRoots { reason: e.to_string() })?;
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let reason = match loaded.errors.first() {
                    Some(e) => e.to_string(),
                    None => "the platform store is empty".to_owned(),
                };
                return Err(TlsError::NoPlatformRoots { reason });
            }
            for error in &loaded.errors {
                tracing::warn!(%error, "some platform trust roots could not be loaded");
            }
        }
    }
    Ok(roots)
}

/// A rustls client configuration with the ring provider, the given roots and, when
/// `identity` is given, a client certificate for mutual TLS. ALPN offers HTTP/2 and 1.1.
pub fn client_config(
    pinned_roots_pem: Option<&[u8]>,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, TlsError> {
    let roots = root_store(pinned_roots_pem)?;
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config { reason: e.to_string() })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(SignerCertResolver::new(identity))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Presents one client certificate whose key signs through [`KeySigner`].
#[derive(Debug)]
pub struct SignerCertResolver {
    certified: Arc<CertifiedKey>,
    scheme: SignatureScheme,
}

impl SignerCertResolver {
    /// A resolver that always offers `identity`.
    pub fn new(identity: ClientIdentity) -> Self {
        let scheme = signature_scheme(identity.key.algorithm());
        let signing_key = Arc::new(SignerSigningKey::new(identity.key));
        Self { certified: Arc::new(CertifiedKey::new(identity.chain, signing_key)), scheme }
    }
}

impl ResolvesClientCert for SignerCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        if sigschemes.contains(&self.scheme) {
            Some(Arc::clone(&self.certified))
        } else {
            // Without a certificate the CA answers `client_certificate_required`, which
            // says more than a handshake failure would.
            tracing::warn!(scheme = ?self.scheme, "the server accepts no signature scheme our key can make");
            None
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls's view of a [`KeySigner`].
#[derive(Debug)]
pub struct SignerSigningKey {
    key: Arc<dyn KeySigner>,
    spki: Vec<u8>,
    scheme: SignatureScheme,
}

impl SignerSigningKey {
    /// Wraps `key`.
    pub fn new(key: Arc<dyn KeySigner>) -> Self {
        let spki = key.subject_public_key_info();
        let scheme = signature_scheme(key.algorithm());
        Self { key, spki, scheme }
    }
}

impl SigningKey for SignerSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&self.scheme).then(|| {
            Box::new(KeySignerHandle { key: Arc::clone(&self.key), scheme: self.scheme }) as Box<dyn Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct KeySignerHandle {
    key: Arc<dyn KeySigner>,
    scheme: SignatureScheme,
}

impl Signer for KeySignerHandle {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign(message)
            .map_err(|e| rustls::Error::General(format!("the client key could not sign: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SoftwareKey;

    #[test]
    fn schemes_follow_the_key_algorithm() {
        assert_eq!(signature_scheme(KeyAlgorithm::EcdsaP256Sha256), SignatureScheme::ECDSA_NISTP256_SHA256);
        assert_eq!(signature_scheme(KeyAlgorithm::EcdsaP384Sha384), SignatureScheme::ECDSA_NISTP384_SHA384);
    }

    #[test]
    fn signing_key_offers_only_its_own_scheme() {
        let key: Arc<dyn KeySigner> =
            Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP384Sha384).expect("generate"));
        let signing = SignerSigningKey::new(Arc::clone(&key));
        assert!(signing.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256]).is_none());
        let signer = signing
            .choose_scheme(&[SignatureScheme::ED25519, SignatureScheme::ECDSA_NISTP384_SHA384])
            .expect("p384 offered");
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP384_SHA384);
        assert!(!signer.sign(b"handshake").expect("sign").is_empty());
        assert_eq!(signing.public_key().map(|k| k.to_vec()), Some(key.subject_public_key_info()));
    }

    #[test]
    fn identity_refuses_an_empty_chain_and_garbage() {
        let key: Arc<dyn KeySigner> =
            Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"));
        assert_eq!(ClientIdentity::new(Vec::new(), Arc::clone(&key)).err(), Some(TlsError::EmptyChain));
        let garbage = vec![CertificateDer::from(vec![1, 2, 3])];
        assert!(matches!(
            ClientIdentity::new(garbage, key).err(),
            Some(TlsError::BadClientCertificate { .. })
        ));
    }

    #[test]
    fn pinned_bundle_without_certificates_is_refused() {
        assert!(matches!(root_store(Some(b"nothing")), Err(TlsError::PinnedRoots { .. })));
    }
}
