//! TLS for the CA's listeners: the server configuration and the client-certificate verifier.
//!
//! One listener serves every endpoint, so the handshake *asks* for a client certificate
//! but does not *require* one: enroll, metadata and the CRL are reached without one, and
//! the handlers of renew, status and verify refuse requests that came without one.
//!
//! The verifier accepts exactly the certificates that chain to the issuing CA with the
//! `clientAuth` EKU and a valid signature, and it accepts them **even when expired**. The
//! contract wants a precise answer for an expired certificate (403 `certificate_expired`
//! from renew, status and verify, so the agent knows to re-enroll and the browser gets the
//! explanatory page); a handshake failure would give the agent only a TLS error and the
//! browser an opaque error page. Expiry and revocation are therefore checked by the
//! handlers, against the store and the CA's clock. Accepting an expired certificate at
//! the TLS layer grants nothing by itself: the peer still proves possession of the key,
//! and every handler that acts on the certificate looks it up and checks its validity.
//!
//! A certificate that does not chain to the issuing CA fails the handshake (alert
//! `unknown_ca`/`bad_certificate`). The `certificate_authorities` hint names the issuing
//! CA, so browsers and agents only offer certificates that can pass.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject as _;

use crate::clock::Clock;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {path}")]
    Load {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong: the PEM parser's error, or a message (a key readable by others,
        /// a file without the block).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// rustls refused the configuration.
    #[error("invalid tls configuration")]
    Config(#[source] rustls::Error),
    /// The issuing CA cannot anchor the client-certificate verifier.
    #[error("the issuing CA is not a usable trust anchor for client certificates")]
    TrustAnchor(#[source] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("cannot build the client-certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// No listener's certificate is valid for the cert-auth domain's host, so browsers could
    /// never complete a handshake there.
    #[error(
        "no listener serves cert_auth_domain {domain}: {certificates} not valid for {host} (it names {names}); \
         set server.cert_auth_domain to a name a certificate covers, or give [cert_auth] a certificate for {host}"
    )]
    NotForDomain {
        /// The configured cert-auth domain.
        domain: String,
        /// Its host.
        host: String,
        /// The certificate files checked, for the message.
        certificates: String,
        /// The names those certificates cover, for the message.
        names: String,
    },
}

/// Checks that one of `leaves` (the certificate of each listener that serves the cert-auth
/// domain, with its file) is valid for `domain`'s host, as a browser would check it.
///
/// The port is not compared: behind a TCP load balancer the public port differs from the
/// listen port, and the certificate is what a browser checks.
pub fn check_serves_domain(
    domain: &url::Url,
    leaves: &[(&Path, &CertificateDer<'_>)],
) -> Result<(), TlsError> {
    let host = match domain.host() {
        Some(url::Host::Domain(name)) => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => String::new(),
    };
    let server_name = rustls_pki_types::ServerName::try_from(host.as_str()).ok();
    let valid = |leaf: &CertificateDer<'_>| {
        let Some(name) = &server_name else { return false };
        webpki::EndEntityCert::try_from(leaf)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    };
    if leaves.iter().any(|(_, leaf)| valid(leaf)) {
        return Ok(());
    }
    let mut names: Vec<String> = Vec::new();
    for (_, leaf) in leaves {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf)
            && let Ok(Some(san)) = cert.subject_alternative_name()
        {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => names.push((*dns).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                            names.push(std::net::Ipv4Addr::from(v4).to_string());
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                            names.push(std::net::Ipv6Addr::from(v6).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    names.dedup();
    let certificates: Vec<String> = leaves.iter().map(|(path, _)| path.display().to_string()).collect();
    Err(TlsError::NotForDomain {
        domain: domain.as_str().trim_end_matches('/').to_owned(),
        host,
        certificates: match certificates.as_slice() {
            [one] => format!("the certificate in {one} is"),
            many => format!("the certificates in {} are", many.join(" and ")),
        },
        names: if names.is_empty() { "no name".to_owned() } else { names.join(", ") },
    })
}

/// The crypto provider every TLS configuration of the CA uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::Load {
        what: "a certificate chain",
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| load(e.into()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load(e.into()))?;
    if chain.is_empty() {
        return Err(load("no CERTIFICATE block".into()));
    }
    Ok(chain)
}

/// Loads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    if let Some(reason) = crate::fsutil::key_file_problem(path) {
        return Err(TlsError::Load { what: "a private key", path: path.to_owned(), source: reason.into() });
    }
    // The error text of the PEM parser never contains key material.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "a private key",
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Builds a server configuration: TLS 1.2 and 1.3, HTTP/1.1 over ALPN, optional client
/// certificates checked by `verifier`, stateless session tickets so that returning clients
/// skip the full handshake.
///
/// The server picks the cipher suite, preferring AES-128-GCM with SHA-256: as strong as
/// the alternatives for this purpose, and its SHA-256 key schedule runs on the SHA
/// extensions of current CPUs while SHA-384 does not, which makes every handshake cheaper
/// for both sides (see BENCHMARKS.md).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| match suite.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 1,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 2,
        _ => 3,
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Agents make a handful of requests per run; one ticket is enough to resume.
    config.send_tls13_tickets = 1;
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}

/// Accepts anonymous clients and client certificates of the issuing CA, expired or not
/// (see the module documentation for why). Time is the CA's clock.
pub struct IssuedCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for IssuedCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertVerifier").finish_non_exhaustive()
    }
}

impl IssuedCertVerifier {
    /// A verifier trusting `issuer` for client certificates.
    pub fn new(issuer: CertificateDer<'static>, clock: Arc<dyn Clock>) -> Result<Arc<Self>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(issuer).map_err(TlsError::TrustAnchor)?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(TlsError::Verifier)?;
        Ok(Arc::new(Self { inner, clock }))
    }
}

impl ClientCertVerifier for IssuedCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let secs = u64::try_from(self.clock.now().timestamp()).unwrap_or(0);
        let now = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
            // Everything but the date checked out once the rest is verified as of the last
            // second of validity; the handlers answer `certificate_expired`.
            Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                not_after, ..
            })) => self.inner.verify_client_cert(end_entity, intermediates, not_after),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
