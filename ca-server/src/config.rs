//! The CA's configuration: the TOML file of `devicetrust-ca serve --config FILE`
//! (documented setting by setting in `ca-server/config.example.toml`).
//!
//! These types are the file's shape and its defaults, nothing more: loading keys, tokens
//! and certificates from the paths named here happens when the CA is built
//! ([`crate::service::CaBuilder`]). Unknown keys are refused, so a typo is an error at
//! startup rather than a silently ignored setting. Secrets never live in this file: tokens
//! name a file or an environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mdm::MdmSettings;
pub use crate::oidc::{OidcClientSettings, OidcSettings, SubjectType};
use crate::secret::SecretSource;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listener, TLS, data directory, the cert-auth domain.
    pub server: ServerSettings,
    /// `[cert_auth]`: an optional second listener for the cert-auth domain.
    #[serde(default)]
    pub cert_auth: Option<CertAuthListener>,
    /// `[ca]`: the issuing CA and the certificate profile.
    #[serde(default)]
    pub ca: CaSettings,
    /// `[tokens]`: where the enrollment and admin tokens come from.
    pub tokens: TokenSettings,
    /// `[limits]`: rate limits.
    #[serde(default)]
    pub limits: LimitSettings,
    /// `[store]`: the database.
    #[serde(default)]
    pub store: StoreSettings,
    /// `[mdm]`: which MDM is asked whether a device is managed.
    pub mdm: MdmSettings,
    /// `[relying_party]`: the protected apps, the proxies that ask the forward-auth check,
    /// and the device assertion.
    #[serde(default)]
    pub relying_party: RelyingPartySettings,
    /// `[http]`: an optional plain-HTTP listener for OCSP, the CRL and the JWKS.
    #[serde(default)]
    pub http: Option<HttpListener>,
    /// `[oidc]`: the OpenID Connect provider and its clients.
    #[serde(default)]
    pub oidc: OidcSettings,
    /// `[ops]`: an optional plain-HTTP listener for `/healthz`, `/readyz` and `/metrics`.
    #[serde(default)]
    pub ops: Option<OpsListener>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the right shape.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting, e.g. `ca.certificate_lifetime_days`.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a TOML file. Relative paths in it are taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::parse(&text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        if let Some(base) = path.parent() {
            config.resolve_relative_to(base);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no validation, no path resolution).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        fix(&mut self.server.tls.certificate);
        fix(&mut self.server.tls.private_key);
        if let Some(listener) = &mut self.cert_auth
            && let Some(tls) = &mut listener.tls
        {
            fix(&mut tls.certificate);
            fix(&mut tls.private_key);
        }
        for p in [&mut self.ca.certificate, &mut self.ca.private_key].into_iter().flatten() {
            fix(p);
        }
        self.ca.chain.iter_mut().for_each(fix);
        self.relying_party.resolve_relative_to(base);
        self.oidc.resolve_relative_to(base);
        for source in [&mut self.tokens.enrollment, &mut self.tokens.admin] {
            if let Some(p) = &mut source.file {
                fix(p);
            }
        }
        match &mut self.mdm {
            MdmSettings::StaticList { path } => fix(path),
            MdmSettings::Jamf(jamf) => {
                for p in [&mut jamf.client_secret_file, &mut jamf.ca_bundle].into_iter().flatten() {
                    fix(p);
                }
            }
            MdmSettings::AllowAll => {}
        }
        // The SQLite path is relative to the data directory, not to the file; the
        // PostgreSQL password file is relative to the file, like every other secret.
        if let StoreSettings::Postgres(postgres) = &mut self.store
            && let Some(path) = &mut postgres.password_file
        {
            fix(path);
        }
    }

    /// Checks ranges and combinations serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting, reason: &str| Err(ConfigError::Invalid { setting, reason: reason.to_owned() });
        let url = match url::Url::parse(&self.server.cert_auth_domain) {
            Ok(url) => url,
            Err(e) => return invalid("server.cert_auth_domain", &e.to_string()),
        };
        if url.scheme() != "https"
            || url.host().is_none()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
        {
            return invalid(
                "server.cert_auth_domain",
                "must be an https origin such as https://ca.example.com:8443",
            );
        }
        if !(1..=3650).contains(&self.ca.certificate_lifetime_days) {
            return invalid("ca.certificate_lifetime_days", "must be between 1 and 3650");
        }
        if self.ca.renew_before_days >= self.ca.certificate_lifetime_days {
            return invalid("ca.renew_before_days", "must be shorter than the certificate lifetime");
        }
        if self.ca.max_unbound_certificates == 0 {
            return invalid("ca.max_unbound_certificates", "must be at least 1");
        }
        if self.ca.backdate_secs > 86_400 {
            return invalid("ca.backdate_secs", "must be at most 86400 (a day)");
        }
        if self.ca.subject_common_name.trim().is_empty() {
            return invalid("ca.subject_common_name", "must not be empty");
        }
        if self.ca.certificate.is_some() != self.ca.private_key.is_some() {
            return invalid("ca.certificate", "set both ca.certificate and ca.private_key, or neither");
        }
        if self.ca.superseded_grace_days > self.ca.certificate_lifetime_days {
            return invalid("ca.superseded_grace_days", "must not exceed ca.certificate_lifetime_days");
        }
        if self.ca.crl_validity_hours == 0 {
            return invalid("ca.crl_validity_hours", "must be at least 1");
        }
        let limits = &self.limits;
        let at_least_one: [(&'static str, u64); 10] = [
            ("limits.enrollments_per_minute", limits.enrollments_per_minute.into()),
            ("limits.requests_per_minute_per_address", limits.requests_per_minute_per_address.into()),
            (
                "limits.auth_failures_per_minute_per_address",
                limits.auth_failures_per_minute_per_address.into(),
            ),
            ("limits.max_connections", limits.max_connections.into()),
            ("limits.max_connections_per_address", limits.max_connections_per_address.into()),
            ("limits.handshake_timeout_secs", limits.handshake_timeout_secs),
            ("limits.header_read_timeout_secs", limits.header_read_timeout_secs),
            ("limits.body_read_timeout_secs", limits.body_read_timeout_secs),
            ("limits.mdm_concurrent_lookups", limits.mdm_concurrent_lookups.into()),
            ("limits.mdm_queue_wait_secs", limits.mdm_queue_wait_secs),
        ];
        if let Some((setting, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return invalid(setting, "must be at least 1");
        }
        if limits.max_connections_per_address > limits.max_connections {
            return invalid("limits.max_connections_per_address", "must not exceed limits.max_connections");
        }
        if let Some(url) = &self.ca.crl_url
            && !matches!(url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(), Ok("https" | "http"))
        {
            return invalid("ca.crl_url", "must be an http(s) URL");
        }
        if let Some(url) = &self.ca.ocsp_url
            && !matches!(url::Url::parse(url).map(|u| u.scheme().to_owned()).as_deref(), Ok("https" | "http"))
        {
            return invalid("ca.ocsp_url", "must be an http(s) URL");
        }
        if self.ca.ocsp_validity_minutes == 0 {
            return invalid("ca.ocsp_validity_minutes", "must be at least 1");
        }
        self.relying_party.validate()?;
        self.oidc.validate()?;
        if let StoreSettings::Postgres(postgres) = &self.store {
            postgres.validate()?;
            // Replicas behind one load balancer must sign with the same keys: a key each
            // replica generated in its own data directory would make every other replica's
            // certificates, assertions and ID tokens unverifiable.
            let shared = "with a PostgreSQL store every replica must use the same key: set it to a file \
                          that each replica reads (docs/operations.md)";
            if self.ca.certificate.is_none() {
                return invalid("ca.certificate", shared);
            }
            if self.relying_party.assertion_keys.is_empty() {
                return invalid("relying_party.assertion_keys", shared);
            }
            if !self.oidc.clients.is_empty() && self.oidc.signing_keys.is_empty() {
                return invalid("oidc.signing_keys", shared);
            }
        }
        if let Some(learn_more) = &self.server.learn_more_url
            && !matches!(
                url::Url::parse(learn_more).map(|u| u.scheme().to_owned()).as_deref(),
                Ok("https" | "http")
            )
        {
            return invalid("server.learn_more_url", "must be an http(s) URL");
        }
        Ok(())
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `listen`: address of the main listener (every endpoint).
    pub listen: SocketAddr,
    /// `cert_auth_domain`: the https origin where browsers present certificates, as
    /// published in the metadata.
    pub cert_auth_domain: String,
    /// `data_dir`: where the database and a generated CA live. Created with mode 0700.
    pub data_dir: PathBuf,
    /// `[server.tls]`: the server certificate of the main listener.
    pub tls: TlsFiles,
    /// `read_only` (default false): refuse every write with 503 `read_only`.
    #[serde(default)]
    pub read_only: bool,
    /// `learn_more_url`: the "Learn more" link of the verify endpoint's HTML page.
    #[serde(default)]
    pub learn_more_url: Option<String>,
    /// `shutdown_grace_secs` (default 30): how long requests in flight may take to finish
    /// after SIGTERM.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

fn default_shutdown_grace_secs() -> u64 {
    30
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// `certificate`: the chain, leaf first.
    pub certificate: PathBuf,
    /// `private_key`: the key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub private_key: PathBuf,
}

/// `[cert_auth]`: a second listener serving the verify endpoint (and the CRL) only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertAuthListener {
    /// `listen`: its address.
    pub listen: SocketAddr,
    /// `[cert_auth.tls]`: its server certificate; defaults to `[server.tls]`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// `[http]`: a plain-HTTP listener serving only what is conventionally fetched over HTTP
/// and is signed or public anyway: OCSP, the CRL (DER and PEM) and the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListener {
    /// `listen`: its address.
    pub listen: SocketAddr,
}

/// `[ops]`: the operations listener. Plain HTTP, for the monitoring network only: bind it
/// to loopback or an internal address, never where clients reach the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsListener {
    /// `listen`: its address, such as `127.0.0.1:9100`.
    pub listen: SocketAddr,
}

/// `[relying_party]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelyingPartySettings {
    /// `protected_origins`: origins of the protected apps, as Chrome URL patterns
    /// (`https://[*.]apps.example.com`), published in the metadata; agents configure the
    /// browsers to present the certificate to each.
    pub protected_origins: Vec<String>,
    /// `decision_cache_secs` (default 5, 0 disables): how long a check's answer is reused
    /// for the same certificate, relying party and user. A revocation on this CA process
    /// drops every cached answer at once; on another replica it takes effect within this
    /// time.
    pub decision_cache_secs: u32,
    /// `assertion_lifetime_secs` (default 300): `exp - iat` of the device assertion.
    pub assertion_lifetime_secs: u32,
    /// `assertion_keys`: PKCS#8 PEM P-256 keys; the first signs, every one is published in
    /// the JWKS (a rotation lists the new key first and keeps the old one until its last
    /// assertion expired). Default: one key generated in the data directory.
    pub assertion_keys: Vec<PathBuf>,
    /// `[[relying_party.clients]]`: the proxies and apps allowed to ask the check.
    pub clients: Vec<RelyingPartyClient>,
    /// `listen`: an optional internal TLS listener (with `[server.tls]`) serving only the
    /// check, the JWKS, OCSP and the CRL, for proxies on a network the agents never reach.
    pub listen: Option<SocketAddr>,
}

impl Default for RelyingPartySettings {
    fn default() -> Self {
        Self {
            protected_origins: Vec::new(),
            decision_cache_secs: 5,
            assertion_lifetime_secs: 300,
            assertion_keys: Vec::new(),
            clients: Vec::new(),
            listen: None,
        }
    }
}

/// Longest relying-party name; it becomes the assertion's `aud`.
const MAX_RELYING_PARTY_NAME: usize = 64;

impl RelyingPartySettings {
    /// Makes relative key and secret paths relative to `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        for path in &mut self.assertion_keys {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for client in &mut self.clients {
            if let Some(path) = &mut client.secret.file
                && path.is_relative()
            {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks what serde cannot: origins, names, lifetimes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        for origin in &self.protected_origins {
            if let Err(reason) = check_origin_pattern(origin) {
                return invalid("relying_party.protected_origins", format!("{origin:?}: {reason}"));
            }
        }
        if !(30..=3600).contains(&self.assertion_lifetime_secs) {
            return invalid("relying_party.assertion_lifetime_secs", "must be between 30 and 3600".into());
        }
        if self.decision_cache_secs > 300 || self.decision_cache_secs > self.assertion_lifetime_secs / 2 {
            return invalid(
                "relying_party.decision_cache_secs",
                "must be at most 300 and at most half of assertion_lifetime_secs (a cached answer reuses its assertion)"
                    .into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for client in &self.clients {
            let name = &client.name;
            if name.is_empty()
                || name.len() > MAX_RELYING_PARTY_NAME
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
            {
                return invalid(
                    "relying_party.clients.name",
                    format!("{name:?}: 1 to {MAX_RELYING_PARTY_NAME} characters of A-Z a-z 0-9 - _ . : /"),
                );
            }
            if !names.insert(name.as_str()) {
                return invalid("relying_party.clients.name", format!("{name:?} is listed twice"));
            }
        }
        Ok(())
    }
}

/// Checks a protected-origin pattern: an https origin (no path, query or userinfo) whose
/// host may start with Chrome's `[*.]` wildcard label. Anything broader would make browsers
/// present the device's certificate to sites that are not the organisation's.
pub fn check_origin_pattern(pattern: &str) -> Result<(), String> {
    let Some(rest) = pattern.strip_prefix("https://") else {
        return Err("must start with https://".into());
    };
    let rest = rest.strip_prefix("[*.]").unwrap_or(rest);
    let url = url::Url::parse(&format!("https://{rest}")).map_err(|e| e.to_string())?;
    let Some(host) = url.host_str() else { return Err("has no host".into()) };
    if host.contains('*') || rest.contains('*') {
        return Err("a wildcard is allowed only as a leading [*.] label".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || rest.ends_with('/') {
        return Err("must be an origin: no path, query or trailing slash".into());
    }
    if !host.contains('.') && !host.starts_with('[') && host != "localhost" {
        return Err("the host must be a domain name or an address".into());
    }
    Ok(())
}

/// Which proxy sends the check, and so which header carries the client certificate and in
/// which format. Fixed per relying party: the CA reads that one header and no other, so a
/// header of another proxy's format that a browser slipped through is never looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyKind {
    /// nginx `auth_request`: `X-DeviceTrust-Client-Cert: $ssl_client_escaped_cert`
    /// (URL-escaped PEM).
    Nginx,
    /// Caddy `forward_auth`: `X-DeviceTrust-Client-Cert:
    /// {http.request.tls.client.certificate_der_base64}` (base64 DER).
    Caddy,
    /// Traefik `ForwardAuth` with `passTLSClientCert`: `X-Forwarded-Tls-Client-Cert`
    /// (base64 DER, possibly URL-escaped).
    Traefik,
    /// Envoy `ext_authz` (HTTP): `X-Forwarded-Client-Cert` (XFCC; its `Cert` key holds
    /// URL-escaped PEM).
    Envoy,
}

/// `[[relying_party.clients]]`: one proxy or app allowed to ask the check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelyingPartyClient {
    /// `name`: who it is; the assertion's `aud`, and the name in logs.
    pub name: String,
    /// `secret = { file = "..." }` or `{ env = "VAR" }`: its bearer secret.
    pub secret: SecretSource,
    /// `proxy`: `nginx`, `caddy`, `traefik` or `envoy`.
    pub proxy: ProxyKind,
    /// `allowed_sources`: addresses or CIDR blocks it may call from; empty allows any.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
}

/// `[ca]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaSettings {
    /// `certificate`: PEM of an existing issuing CA. With `private_key`; without both, a CA
    /// is generated in the data directory at first start.
    pub certificate: Option<PathBuf>,
    /// `private_key`: its PKCS#8 PEM key (mode 0600).
    pub private_key: Option<PathBuf>,
    /// `chain`: further PEM certificates sent after the issuer (if it is an intermediate).
    pub chain: Vec<PathBuf>,
    /// `issuer_common_name` (default `MTLS Certificate Authority`): CN of a generated CA.
    pub issuer_common_name: String,
    /// `generated_validity_days` (default 3650): validity of a generated CA.
    pub generated_validity_days: u32,
    /// `subject_common_name` (default `Device Trust`): subject CN of issued certificates.
    pub subject_common_name: String,
    /// `certificate_lifetime_days` (default 365).
    pub certificate_lifetime_days: u32,
    /// `renew_before_days` (default 30): published in the metadata.
    pub renew_before_days: u32,
    /// `max_unbound_certificates` (default 5).
    pub max_unbound_certificates: u32,
    /// `backdate_secs` (default 300): notBefore is this far before issuance.
    pub backdate_secs: u32,
    /// `crl_validity_hours` (default 1): the CRL's nextUpdate after its thisUpdate.
    pub crl_validity_hours: u32,
    /// `crl_url`: the CRL distribution point written into every issued certificate.
    /// Default: `<cert_auth_domain>/crl`, which every listener serves.
    pub crl_url: Option<String>,
    /// `superseded_grace_days` (default 7): how long a certificate replaced by a renewal
    /// stays acceptable (a browser may have cached it); after that it is refused with
    /// `certificate_superseded`.
    pub superseded_grace_days: u32,
    /// `ocsp_url`: the OCSP responder written into every issued certificate (Authority
    /// Information Access). Default: `<cert_auth_domain>/ocsp`, which every listener
    /// serves; point it at the `[http]` listener for relying parties (nginx `ssl_ocsp`)
    /// that fetch OCSP over plain HTTP only.
    pub ocsp_url: Option<String>,
    /// `ocsp_validity_minutes` (default 60): an OCSP response's nextUpdate after its
    /// thisUpdate, which is how long a relying party may cache it.
    pub ocsp_validity_minutes: u32,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            certificate: None,
            private_key: None,
            chain: Vec::new(),
            issuer_common_name: crate::authority::DEFAULT_ISSUER_COMMON_NAME.to_owned(),
            generated_validity_days: 3650,
            subject_common_name: "Device Trust".to_owned(),
            certificate_lifetime_days: 365,
            renew_before_days: 30,
            max_unbound_certificates: 5,
            backdate_secs: 300,
            crl_validity_hours: 1,
            crl_url: None,
            superseded_grace_days: 7,
            ocsp_url: None,
            ocsp_validity_minutes: 60,
        }
    }
}

/// `[tokens]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// `enrollment = { file = "..." }` or `{ env = "VAR" }`: the bearer token of enroll.
    pub enrollment: SecretSource,
    /// `admin = { file = "..." }` or `{ env = "VAR" }`: the bearer token of the admin API.
    pub admin: SecretSource,
}

/// `[limits]`: what one device, one client address and everyone together may consume.
///
/// Every resource an outsider can use is bounded here; `docs/security.md` explains each
/// setting and what it protects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// `enrollments_per_minute` (default 60): enroll and renew requests per device, and
    /// verifications and status requests per certificate.
    pub enrollments_per_minute: u32,
    /// `requests_per_minute_per_address` (default 120): enroll, renew and admin requests per
    /// client address (IPv6 by /64). Raise it for many Macs behind one NAT address.
    pub requests_per_minute_per_address: u32,
    /// `auth_failures_per_minute_per_address` (default 10): refused tokens and unknown
    /// client certificates per client address; past it, that address gets 429 until the
    /// budget refills.
    pub auth_failures_per_minute_per_address: u32,
    /// `max_connections` (default 1024): open connections in all; a connection over the
    /// cap is closed at once, and idle keep-alive connections are shed from 3/4 of it.
    pub max_connections: u32,
    /// `max_connections_per_address` (default 64): open connections per client address.
    pub max_connections_per_address: u32,
    /// `handshake_timeout_secs` (default 10): longest TLS handshake.
    pub handshake_timeout_secs: u64,
    /// `header_read_timeout_secs` (default 10): longest wait for a request's headers, which
    /// is also how long an idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// `body_read_timeout_secs` (default 10): longest wait for a whole request body.
    pub body_read_timeout_secs: u64,
    /// `mdm_concurrent_lookups` (default 16): MDM lookups in flight at once; more wait.
    pub mdm_concurrent_lookups: u32,
    /// `mdm_queue_wait_secs` (default 10): how long a request waits for an MDM lookup slot
    /// before it is answered 503 `mdm_unavailable`.
    pub mdm_queue_wait_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enrollments_per_minute: 60,
            requests_per_minute_per_address: 120,
            auth_failures_per_minute_per_address: 10,
            max_connections: 1024,
            max_connections_per_address: 64,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            mdm_concurrent_lookups: 16,
            mdm_queue_wait_secs: 10,
        }
    }
}

/// `[store]`: SQLite in the data directory (the default), or PostgreSQL when `url` is set
/// (what several replicas share).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStore")]
#[non_exhaustive]
pub enum StoreSettings {
    /// `kind = "sqlite"`.
    Sqlite {
        /// `path` (default `devicetrust-ca.sqlite3`): relative to the data directory.
        path: PathBuf,
        /// `read_connections` (default 4).
        read_connections: u32,
    },
    /// `kind = "postgres"`, or just `url = "postgres://..."`.
    Postgres(PostgresSettings),
}

/// `[store]` with `url`: a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresSettings {
    /// `url`: `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=...]`, without a password.
    pub url: String,
    /// `password_file`: the role's password (mode 0600); none for peer, trust or
    /// certificate authentication.
    pub password_file: Option<PathBuf>,
    /// `max_connections` (default 8): the pool of this replica. The database does best with
    /// a few connections per core in all (`docs/operations.md` section 6).
    pub max_connections: u32,
    /// `acquire_timeout_secs` (default 5): how long a request waits for a pooled
    /// connection (or for the database to come back) before it is answered 503.
    pub acquire_timeout_secs: u64,
    /// `statement_timeout_secs` (default 10): the database ends a statement that runs
    /// longer, so that a stuck query cannot hold a connection and its locks.
    pub statement_timeout_secs: u64,
}

/// `[store]` as written, before `kind` is settled.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    path: Option<PathBuf>,
    read_connections: Option<u32>,
    url: Option<String>,
    password_file: Option<PathBuf>,
    max_connections: Option<u32>,
    acquire_timeout_secs: Option<u64>,
    statement_timeout_secs: Option<u64>,
}

impl TryFrom<RawStore> for StoreSettings {
    type Error = String;

    fn try_from(raw: RawStore) -> Result<Self, String> {
        let kind = raw.kind.as_deref().unwrap_or(if raw.url.is_some() { "postgres" } else { "sqlite" });
        match kind {
            "sqlite" => {
                if raw.url.is_some()
                    || raw.password_file.is_some()
                    || raw.max_connections.is_some()
                    || raw.acquire_timeout_secs.is_some()
                    || raw.statement_timeout_secs.is_some()
                {
                    return Err("url, password_file, max_connections, acquire_timeout_secs and \
                                statement_timeout_secs are PostgreSQL settings; kind is \"sqlite\""
                        .into());
                }
                Ok(Self::Sqlite {
                    path: raw.path.unwrap_or_else(default_sqlite_path),
                    read_connections: raw.read_connections.unwrap_or_else(default_read_connections),
                })
            }
            "postgres" => {
                if raw.path.is_some() || raw.read_connections.is_some() {
                    return Err("path and read_connections are SQLite settings; PostgreSQL takes url".into());
                }
                let url = raw.url.ok_or("kind \"postgres\" needs url = \"postgres://USER@HOST/DATABASE\"")?;
                Ok(Self::Postgres(PostgresSettings {
                    url,
                    password_file: raw.password_file,
                    max_connections: raw.max_connections.unwrap_or(8),
                    acquire_timeout_secs: raw.acquire_timeout_secs.unwrap_or(5),
                    statement_timeout_secs: raw.statement_timeout_secs.unwrap_or(10),
                }))
            }
            other => Err(format!("unknown kind {other:?}: \"sqlite\" or \"postgres\"")),
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self::Sqlite { path: default_sqlite_path(), read_connections: default_read_connections() }
    }
}

impl PostgresSettings {
    /// Checks the URL: a PostgreSQL URL with a database and no password in it (a password
    /// belongs in `password_file`, not in a file that is copied around and shown).
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid =
            |reason: &str| Err(ConfigError::Invalid { setting: "store.url", reason: reason.to_owned() });
        let url = match url::Url::parse(&self.url) {
            Ok(url) => url,
            Err(e) => return invalid(&e.to_string()),
        };
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return invalid("must be a postgres:// URL");
        }
        if url.password().is_some() || url.query_pairs().any(|(k, _)| k == "password") {
            return invalid("must not hold the password; put it in store.password_file (mode 0600)");
        }
        if url.path().trim_start_matches('/').is_empty() {
            return invalid("must name the database: postgres://USER@HOST/DATABASE");
        }
        let positive = [
            ("store.max_connections", u64::from(self.max_connections)),
            ("store.acquire_timeout_secs", self.acquire_timeout_secs),
            ("store.statement_timeout_secs", self.statement_timeout_secs),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid { setting, reason: "must be at least 1".into() });
            }
        }
        Ok(())
    }
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("devicetrust-ca.sqlite3")
}

fn default_read_connections() -> u32 {
    crate::store::sqlite::DEFAULT_READ_CONNECTIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:8443"
        cert_auth_domain = "https://ca.example.com:8443"
        data_dir = "data"
        tls = { certificate = "tls.pem", private_key = "tls.key" }

        [tokens]
        enrollment = { file = "enrollment-token" }
        admin = { env = "DEVICETRUST_ADMIN_TOKEN" }

        [mdm]
        kind = "allow_all"
    "#;

    #[test]
    fn minimal_file_gets_the_defaults() {
        let config = Config::parse(MINIMAL).expect("parse");
        config.validate().expect("valid");
        assert_eq!(config.ca, CaSettings::default());
        assert_eq!(config.limits.enrollments_per_minute, 60);
        assert_eq!(config.mdm, MdmSettings::AllowAll);
        assert!(config.cert_auth.is_none());
    }

    #[test]
    fn store_tables() {
        const SHARED: &str = "[ca]\ncertificate = 'ca.pem'\nprivate_key = 'ca.key'\n\
                              [relying_party]\nassertion_keys = ['assertion.pem']\n";
        // (name, [store] keys, shared keys, the setting refused, or a parse error's text)
        let cases: [(&str, &str, bool, Option<&str>); 9] = [
            ("ok/default-is-sqlite", "", false, None),
            ("ok/url-implies-postgres", "url = 'postgres://ca@db/devicetrust'", true, None),
            (
                "ok/postgresql-scheme-and-kind",
                "kind = 'postgres'\nurl = 'postgresql://ca@db:5433/dt?sslmode=require'",
                true,
                None,
            ),
            ("fail/password-in-url", "url = 'postgres://ca:secret@db/devicetrust'", true, Some("store.url")),
            (
                "fail/password-parameter",
                "url = 'postgres://ca@db/devicetrust?password=secret'",
                true,
                Some("store.url"),
            ),
            ("fail/no-database", "url = 'postgres://ca@db'", true, Some("store.url")),
            (
                "fail/replicas-need-a-shared-ca",
                "url = 'postgres://ca@db/devicetrust'",
                false,
                Some("ca.certificate"),
            ),
            (
                "fail/sqlite-with-url",
                "kind = 'sqlite'\nurl = 'postgres://ca@db/dt'",
                true,
                Some("PostgreSQL settings"),
            ),
            (
                "fail/postgres-with-path",
                "url = 'postgres://ca@db/dt'\npath = 'x.sqlite3'",
                true,
                Some("SQLite settings"),
            ),
        ];
        for (name, store, shared, refused) in cases {
            let text = format!("{MINIMAL}\n{}\n[store]\n{store}\n", if shared { SHARED } else { "" });
            let result = Config::parse(&text).map_err(|e| e.to_string()).and_then(|c| {
                c.validate().map_err(|e| match e {
                    ConfigError::Invalid { setting, .. } => setting.to_owned(),
                    other => other.to_string(),
                })?;
                Ok(c)
            });
            match (refused, result) {
                (None, Ok(config)) => {
                    let postgres = matches!(config.store, StoreSettings::Postgres(_));
                    assert_eq!(postgres, store.contains("url"), "{name}");
                }
                (Some(want), Err(got)) => assert!(got.contains(want), "{name}: {got}"),
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text).expect("config.example.toml parses");
        config.validate().expect("config.example.toml validates");
    }

    #[test]
    fn validation() {
        let cases: [(&str, &str, Option<&str>); 16] = [
            ("ok/minimal", "", None),
            ("fail/http-domain", "server.cert_auth_domain = 'http://x'", Some("server.cert_auth_domain")),
            (
                "fail/domain-with-path",
                "server.cert_auth_domain = 'https://x/p'",
                Some("server.cert_auth_domain"),
            ),
            ("fail/zero-limit", "ca.max_unbound_certificates = 0", Some("ca.max_unbound_certificates")),
            ("fail/renew-window", "ca.renew_before_days = 400", Some("ca.renew_before_days")),
            ("fail/half-ca", "ca.certificate = 'ca.pem'", Some("ca.certificate")),
            ("fail/grace-over-lifetime", "ca.superseded_grace_days = 400", Some("ca.superseded_grace_days")),
            ("fail/crl-url", "ca.crl_url = 'ldap://x'", Some("ca.crl_url")),
            ("fail/no-connections", "limits.max_connections = 0", Some("limits.max_connections")),
            ("fail/ocsp-url", "ca.ocsp_url = 'ldap://x'", Some("ca.ocsp_url")),
            ("ok/origin-wildcard", "relying_party.protected_origins = 'https://[*.]apps.example.com'", None),
            ("ok/origin-port", "relying_party.protected_origins = 'https://wiki.example.com:8443'", None),
            (
                "fail/origin-http",
                "relying_party.protected_origins = 'http://apps.example.com'",
                Some("relying_party.protected_origins"),
            ),
            (
                "fail/origin-star",
                "relying_party.protected_origins = 'https://*'",
                Some("relying_party.protected_origins"),
            ),
            (
                "fail/origin-path",
                "relying_party.protected_origins = 'https://apps.example.com/x'",
                Some("relying_party.protected_origins"),
            ),
            (
                "fail/cache-over-half-assertion",
                "relying_party.decision_cache_secs = 200",
                Some("relying_party.decision_cache_secs"),
            ),
        ];
        for (name, tweak, want) in cases {
            let mut config = Config::parse(MINIMAL).expect("parse");
            if let Some((key, value)) = tweak.split_once(" = ") {
                let value = value.trim_matches('\'');
                match key {
                    "server.cert_auth_domain" => config.server.cert_auth_domain = value.into(),
                    "ca.max_unbound_certificates" => {
                        config.ca.max_unbound_certificates = value.parse().expect("n")
                    }
                    "ca.renew_before_days" => config.ca.renew_before_days = value.parse().expect("n"),
                    "ca.certificate" => config.ca.certificate = Some(value.into()),
                    "ca.superseded_grace_days" => config.ca.superseded_grace_days = value.parse().expect("n"),
                    "ca.crl_url" => config.ca.crl_url = Some(value.into()),
                    "limits.max_connections" => config.limits.max_connections = value.parse().expect("n"),
                    "ca.ocsp_url" => config.ca.ocsp_url = Some(value.into()),
                    "relying_party.protected_origins" => {
                        config.relying_party.protected_origins = vec![value.into()]
                    }
                    "relying_party.decision_cache_secs" => {
                        config.relying_party.decision_cache_secs = value.parse().expect("n")
                    }
                    other => panic!("{name}: unknown key {other}"),
                }
            }
            match (config.validate(), want) {
                (Ok(()), None) => {}
                (Err(ConfigError::Invalid { setting, .. }), Some(want)) => {
                    assert_eq!(setting, want, "{name}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = MINIMAL.replace("[tokens]", "[tokens]\nenrollment_token = 'x'");
        let err = Config::parse(&text).expect_err("refused");
        assert!(err.to_string().contains("enrollment_token"), "the error names the key: {err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let mut config = Config::parse(MINIMAL).expect("parse");
        config.resolve_relative_to(Path::new("/etc/devicetrust-ca"));
        assert_eq!(config.server.data_dir, Path::new("/etc/devicetrust-ca/data"));
        assert_eq!(
            config.tokens.enrollment.file.as_deref(),
            Some(Path::new("/etc/devicetrust-ca/enrollment-token"))
        );
    }
}
