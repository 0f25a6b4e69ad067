//! [`CaClient`]: the async HTTPS client of protocol v1, on reqwest with rustls.
//!
//! It owns the transport concerns only: TLS (from [`crate::tls`]), connect and total
//! timeouts, the response size cap (enforced while the body streams in), the `User-Agent`,
//! and the bearer token. What an answer means is decided by the pure functions in
//! [`crate::response`].
//!
//! Redirects are not followed: the contract has none, and following one could carry a
//! request (and its token) somewhere the operator did not configure. Proxies from the
//! environment (`HTTPS_PROXY`, `NO_PROXY`) are honoured, as reqwest does by default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder};
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use url::Url;

use crate::error::ClientError;
use crate::protocol::{CertificateStatus, EnrollRequest, Metadata, Platform, RenewRequest, paths};
use crate::response::{self, Issued};
use crate::signer::KeySigner;
use crate::tls::{self, ClientIdentity};

/// Default time allowed to establish a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed for a whole exchange, from connecting to the last body byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body accepted (1 MiB). A certificate answer is a few KiB.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// The `User-Agent` the agent sends: `devicetrust-agent/<version> (<platform>; <os version>)`.
///
/// Characters that cannot appear in a header value (controls, non-ASCII) in `version` or
/// `os_version` become `?`, so any OS string yields a valid header.
pub fn user_agent(version: &str, platform: Platform, os_version: &str) -> String {
    fn clean(s: &str) -> String {
        s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
    }
    format!("devicetrust-agent/{} ({}; {})", clean(version), platform, clean(os_version))
}

/// How to reach the CA.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// The CA's base URL (`https://`; a path prefix is kept, e.g. `https://host/ca/`).
    pub base_url: Url,
    /// When set, the CA's TLS certificate must chain to these PEM certificates and nothing
    /// else is trusted; otherwise the platform's roots are used.
    pub pinned_roots_pem: Option<Vec<u8>>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for a whole exchange.
    pub timeout: Duration,
    /// The `User-Agent` header (see [`user_agent`]).
    pub user_agent: String,
    /// How the caller's user sets the trusted roots (`ca_bundle` in the agent's
    /// configuration, `--ca-bundle` for a command line), named in the message of a refused
    /// server certificate.
    pub trust_setting: &'static str,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("base_url", &self.base_url.as_str())
            .field(
                "pinned_roots_pem",
                &self.pinned_roots_pem.as_ref().map(|pem| format!("{} bytes", pem.len())),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("user_agent", &self.user_agent)
            .field("trust_setting", &self.trust_setting)
            .finish()
    }
}

impl ClientOptions {
    /// Options for `base_url` with the default timeouts, platform roots and a `User-Agent`
    /// for this build on this platform with an unknown OS version (set
    /// [`Self::user_agent`] from [`user_agent`] when the OS version is known).
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            pinned_roots_pem: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            user_agent: user_agent(env!("CARGO_PKG_VERSION"), Platform::current(), "unknown"),
            trust_setting: "ca_bundle",
        }
    }

    /// Trusts only the CA certificates in `pem` for the CA's TLS.
    pub fn with_pinned_roots(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.pinned_roots_pem = Some(pem.into());
        self
    }
}

/// The client of one CA.
pub struct CaClient {
    pub(crate) http: reqwest::Client,
    base_url: Url,
    has_identity: bool,
    trust_setting: &'static str,
}

impl fmt::Debug for CaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaClient")
            .field("base_url", &self.base_url.as_str())
            .field("has_identity", &self.has_identity)
            .finish_non_exhaustive()
    }
}

impl CaClient {
    /// A client without a client certificate: metadata and enrollment.
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        Self::build(options, None)
    }

    /// A client that presents `chain` (leaf first), signing with `key` through
    /// [`KeySigner`]: renewal and status, and everything [`Self::new`] can do.
    pub fn with_identity(
        options: ClientOptions,
        chain: Vec<CertificateDer<'static>>,
        key: Arc<dyn KeySigner>,
    ) -> Result<Self, ClientError> {
        let identity = ClientIdentity::new(chain, key)
            .map_err(|e| ClientError::InvalidConfiguration { reason: e.to_string() })?;
        Self::build(options, Some(identity))
    }

    fn build(options: ClientOptions, identity: Option<ClientIdentity>) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidConfiguration { reason };
        let base_url = options.base_url;
        if base_url.scheme() != "https" {
            return Err(invalid(format!("the CA url must use https, not {}", base_url.scheme())));
        }
        if base_url.cannot_be_a_base() || base_url.host().is_none() {
            return Err(invalid("the CA url has no host".to_owned()));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            // Credentials in a URL end up in logs and error messages.
            return Err(invalid("the CA url must not contain credentials".to_owned()));
        }
        let has_identity = identity.is_some();
        let tls = tls::client_config(options.pinned_roots_pem.as_deref(), identity)
            .map_err(|e| invalid(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| invalid(format!("could not build the http client: {}", error_chain(&e))))?;
        Ok(Self { http, base_url, has_identity, trust_setting: options.trust_setting })
    }

    /// The CA's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Whether the client presents a client certificate.
    pub fn has_identity(&self) -> bool {
        self.has_identity
    }

    /// `GET /api/v1/metadata?platform=...`.
    pub async fn metadata(&self, platform: Platform) -> Result<Metadata, ClientError> {
        let mut url = self.endpoint(paths::METADATA);
        url.query_pairs_mut().append_pair("platform", platform.as_str());
        let (status, headers, body) = self.send(self.http.request(Method::GET, url.clone()), &url).await?;
        response::interpret_metadata(status, &headers, &body)
    }

    /// `POST /api/v1/enroll` with the enrollment token as a bearer token.
    ///
    /// The token travels only in the `Authorization` header, marked sensitive; it appears in
    /// no error and no log.
    pub async fn enroll(&self, token: &str, request: &EnrollRequest) -> Result<Issued, ClientError> {
        if token.is_empty() {
            return Err(ClientError::InvalidConfiguration {
                reason: "the enrollment token is empty".to_owned(),
            });
        }
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            ClientError::InvalidConfiguration {
                reason: "the enrollment token has characters not allowed in an http header".to_owned(),
            }
        })?;
        authorization.set_sensitive(true);
        let url = self.endpoint(paths::ENROLL);
        let builder = self.post_json(&url, request)?.header(AUTHORIZATION, authorization);
        let (status, headers, body) = self.send(builder, &url).await?;
        response::interpret_issued(status, &headers, &body)
    }

    /// `POST /api/v1/renew` over mutual TLS with the current certificate.
    pub async fn renew(&self, request: &RenewRequest) -> Result<Issued, ClientError> {
        self.require_identity(paths::RENEW)?;
        let url = self.endpoint(paths::RENEW);
        let (status, headers, body) = self.send(self.post_json(&url, request)?, &url).await?;
        response::interpret_issued(status, &headers, &body)
    }

    /// `GET /api/v1/certificate` over mutual TLS: the CA's view of the presented certificate.
    pub async fn certificate_status(&self) -> Result<CertificateStatus, ClientError> {
        self.require_identity(paths::CERTIFICATE)?;
        let url = self.endpoint(paths::CERTIFICATE);
        let (status, headers, body) = self.send(self.http.request(Method::GET, url.clone()), &url).await?;
        response::interpret_certificate_status(status, &headers, &body)
    }

    fn require_identity(&self, endpoint: &'static str) -> Result<(), ClientError> {
        if self.has_identity { Ok(()) } else { Err(ClientError::NoClientIdentity { endpoint }) }
    }

    pub(crate) fn endpoint(&self, path: &str) -> Url {
        endpoint(&self.base_url, path)
    }

    pub(crate) fn post_json(&self, url: &Url, body: &impl Serialize) -> Result<RequestBuilder, ClientError> {
        // Serialized here rather than by reqwest so that a failure is ours to describe.
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::InvalidConfiguration {
            reason: format!("the request cannot be encoded: {e}"),
        })?;
        Ok(self
            .http
            .request(Method::POST, url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(bytes))
    }

    pub(crate) async fn send(
        &self,
        builder: RequestBuilder,
        url: &Url,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let started = std::time::Instant::now();
        let mut response = builder
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = self.read_capped(&mut response, url).await;
        tracing::debug!(
            url = %url,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            body_bytes = body.as_ref().map(Vec::len).ok(),
            "ca answered"
        );
        Ok((status, headers, body?))
    }
}

/// `path` (absolute, from [`paths`]) under `base`, keeping any path prefix of `base`.
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.set_query(None);
    url.set_fragment(None);
    url
}

impl CaClient {
    /// Reads the body, refusing it as soon as it is known to exceed [`MAX_RESPONSE_BODY`]: from
    /// `Content-Length` before reading anything, else while chunks stream in.
    async fn read_capped(&self, response: &mut reqwest::Response, url: &Url) -> Result<Vec<u8>, ClientError> {
        let too_large = || ClientError::BodyTooLarge { url: url.to_string(), limit: MAX_RESPONSE_BODY };
        if response.content_length().is_some_and(|len| len > MAX_RESPONSE_BODY as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(&e, url))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Classifies a reqwest failure. TLS is checked first: a refused certificate surfaces as a
    /// connect error too, and "tls" says more.
    fn transport_error(&self, error: &reqwest::Error, url: &Url) -> ClientError {
        let url_text = url.to_string();
        if let Some(tls) = find_rustls_error(error) {
            if let Some(reason) = untrusted_server_reason(tls, self.trust_setting) {
                return ClientError::UntrustedServer { url: url_text, reason };
            }
            return ClientError::Tls { url: url_text, reason: tls.to_string() };
        }
        if error.is_timeout() {
            return ClientError::Timeout { url: url_text };
        }
        if error.is_connect() {
            return ClientError::Connect { url: url_text, reason: error_chain(error) };
        }
        if error.is_builder() {
            return ClientError::InvalidConfiguration { reason: error_chain(error) };
        }
        ClientError::Transport { url: url_text, reason: error_chain(error) }
    }
}

/// Why the server's certificate was refused, in words that say what to change; `None` for a
/// TLS failure that is not about the server's certificate.
pub(crate) fn untrusted_server_reason(error: &rustls::Error, setting: &str) -> Option<String> {
    use rustls::CertificateError as Cert;
    let rustls::Error::InvalidCertificate(cert) = error else { return None };
    Some(match cert {
        Cert::UnknownIssuer => format!(
            "its certificate is not issued by a CA the client trusts: set {setting} to the PEM of the CA \
             that issued the server certificate (without {setting}, the system's roots)"
        ),
        Cert::Other(other)
            if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity)) =>
        {
            format!(
                "it presents a CA certificate as its own (a self-signed server certificate); the client accepts \
                 a server certificate issued by a CA in {setting}, not that CA itself"
            )
        }
        Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
            format!("{cert}: use the host name the server certificate names in the url")
        }
        Cert::Expired | Cert::ExpiredContext { .. } => {
            format!("{cert}: the server needs a current certificate")
        }
        Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
            format!("{cert}: check this machine's clock")
        }
        other => format!("its certificate was refused: {other}"),
    })
}

/// The first rustls error in the chain. tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips the wrapped error, so `io::Error::get_ref` is looked into as well.
fn find_rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = find_rustls_error(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// The causes of `error`, without reqwest's top line (which repeats the URL).
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut current = std::error::Error::source(error);
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    if parts.is_empty() { error.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_path_prefix() {
        let cases = [
            ("ok/root", "https://ca.test", "https://ca.test/api/v1/enroll"),
            ("ok/root-slash", "https://ca.test/", "https://ca.test/api/v1/enroll"),
            ("ok/prefix", "https://ca.test/dt", "https://ca.test/dt/api/v1/enroll"),
            ("ok/prefix-slash", "https://ca.test:8443/dt/?x=1#f", "https://ca.test:8443/dt/api/v1/enroll"),
        ];
        for (name, base, want) in cases {
            assert_eq!(endpoint(&Url::parse(base).expect("url"), paths::ENROLL).as_str(), want, "{name}");
        }
    }

    #[test]
    fn user_agent_format() {
        assert_eq!(user_agent("1.2.3", Platform::Macos, "14.5"), "devicetrust-agent/1.2.3 (macos; 14.5)");
        assert_eq!(user_agent("1.0", Platform::Linux, "6.1\n\u{e9}"), "devicetrust-agent/1.0 (linux; 6.1??)");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        let cases = [
            ("fail/http", "http://ca.test/"),
            ("fail/credentials", "https://user:secret@ca.test/"),
            ("fail/no-host", "data:text/plain,x"),
        ];
        for (name, url) in cases {
            let options = ClientOptions::new(Url::parse(url).expect("url")).with_pinned_roots(Vec::new());
            let error = CaClient::new(options).expect_err(name);
            assert!(matches!(error, ClientError::InvalidConfiguration { .. }), "{name}: {error:?}");
            assert!(!error.to_string().contains("secret"), "{name}");
        }
    }

    /// Each server-certificate refusal says what to change; other TLS failures stay TLS
    /// failures (a refused client certificate, an alert).
    #[test]
    fn untrusted_server_reason_table() {
        use rustls::{CertificateError, Error, OtherError};
        let ca_as_leaf = Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            webpki::Error::CaUsedAsEndEntity,
        ))));
        let cases: Vec<(&str, Error, Option<&str>)> = vec![
            (
                "ok/unknown-issuer",
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Some("set ca_bundle"),
            ),
            ("ok/self-signed", ca_as_leaf, Some("self-signed server certificate")),
            (
                "ok/wrong-name",
                Error::InvalidCertificate(CertificateError::NotValidForName),
                Some("host name"),
            ),
            ("ok/expired", Error::InvalidCertificate(CertificateError::Expired), Some("current certificate")),
            ("ok/not-yet", Error::InvalidCertificate(CertificateError::NotValidYet), Some("clock")),
            (
                "fail/an-alert-is-not-about-the-server",
                Error::AlertReceived(rustls::AlertDescription::BadCertificate),
                None,
            ),
            ("fail/a-signing-failure", Error::General("could not sign".into()), None),
        ];
        for (name, error, want) in cases {
            let got = untrusted_server_reason(&error, "ca_bundle");
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(part) => {
                    let got = got.unwrap_or_else(|| panic!("{name}: not classified"));
                    assert!(got.contains(part), "{name}: {got}");
                    assert!(
                        !got.contains("Other(") && !got.contains("OtherError"),
                        "{name}: debug output: {got}"
                    );
                }
            }
        }
    }
}
