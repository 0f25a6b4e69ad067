//! The Jamf Pro client: OAuth client credentials and the computer inventory lookup.
//!
//! It owns the access token (one token shared by every caller, fetched again shortly before
//! it expires and once more when Jamf rejects it), the RSQL filter built from the serial
//! number, and the decision from inventory records to an [`MdmVerdict`]. Whenever no answer
//! can be had (Jamf unreachable, a timeout, a 5xx, an unreadable body, refused credentials)
//! the result is an [`MdmError`], so the CA fails closed.
//!
//! Production Jamf Pro, Jamf Cloud included, is served over https. Plain `http://` is
//! accepted only for a loopback address (the test simulator), because the client secret
//! and the access token would otherwise cross the network in clear.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use reqwest::{StatusCode, header};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;
use url::{Host, Url};

use super::{
    ManagedDeviceCheck, MdmError, MdmSetupError, MdmVerdict, MonotonicClock, NotManagedReason,
    SystemMonotonicClock,
};

/// The inventory API version used when none is configured.
pub const DEFAULT_API_VERSION: &str = "v3";
/// The default limit for a whole request, from connecting to the end of the body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default limit for establishing a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A token is replaced this long before Jamf says it expires, so that a request never
/// leaves with a token that dies on the way (or on a server whose clock runs ahead).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Jamf's token lifetimes are minutes; a larger claim is capped rather than trusted.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_TOKEN_BODY: usize = 64 * 1024;
/// One or a few records with two sections are a few KiB; anything near this is not ours.
const MAX_INVENTORY_BODY: usize = 1024 * 1024;
const MAX_SERIAL_LEN: usize = 64;

/// The Jamf API client secret. It never appears in Debug output or in a message.
#[derive(Clone)]
pub struct ClientSecret(Arc<str>);

impl ClientSecret {
    /// Wraps a secret read from a file or the environment.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::from(secret.into()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// A bearer token from the token endpoint. Redacted like the secret.
#[derive(Clone, PartialEq, Eq)]
struct AccessToken(Arc<str>);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// What the client needs to talk to one Jamf Pro server.
#[derive(Debug, Clone)]
pub struct JamfConfig {
    /// The Jamf Pro base URL, e.g. `https://example.jamfcloud.com` (a path prefix is kept).
    pub url: String,
    /// The API client's ID (Settings > API Roles and Clients).
    pub client_id: String,
    /// The API client's secret.
    pub client_secret: ClientSecret,
    /// The inventory API version in the path, `v3` unless configured (`v1` is deprecated,
    /// newer Jamf Pro versions add `v4`).
    pub api_version: String,
    /// Limit for a whole request, from connecting to the end of the body.
    pub timeout: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// PEM file of the CAs trusted for Jamf's TLS certificate; `None` trusts the platform's
    /// roots.
    pub ca_bundle: Option<PathBuf>,
}

impl JamfConfig {
    /// A configuration with the default API version, timeouts and the platform's roots.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            client_secret,
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_bundle: None,
        }
    }
}

#[derive(Clone)]
struct CachedToken {
    value: AccessToken,
    refresh_at: Instant,
}

/// Asks Jamf Pro whether a computer is managed. Cheap to share behind an `Arc`; all callers
/// share one access token.
pub struct JamfClient {
    http: reqwest::Client,
    token_url: Url,
    inventory_url: Url,
    client_id: String,
    client_secret: ClientSecret,
    clock: Arc<dyn MonotonicClock>,
    /// Held across a token fetch so that concurrent callers wait for one refresh instead of
    /// each asking for a token.
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for JamfClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JamfClient")
            .field("inventory_url", &self.inventory_url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl JamfClient {
    /// Builds a client on the system clock. Fails on an invalid URL or API version, an
    /// unreadable CA bundle, or (for https without a bundle) no platform roots.
    pub fn new(config: JamfConfig) -> Result<Self, MdmSetupError> {
        Self::with_clock(config, Arc::new(SystemMonotonicClock))
    }

    /// Builds a client whose token lifetimes follow `clock`.
    pub fn with_clock(config: JamfConfig, clock: Arc<dyn MonotonicClock>) -> Result<Self, MdmSetupError> {
        let base = parse_base_url(&config.url)?;
        if !is_api_version(&config.api_version) {
            return Err(MdmSetupError::InvalidSetting {
                setting: "api_version",
                reason: "expected `v` and a number, like `v3`".to_owned(),
            });
        }
        if config.client_id.trim().is_empty() {
            return Err(MdmSetupError::InvalidSetting { setting: "client_id", reason: "empty".to_owned() });
        }
        if config.client_secret.expose().is_empty() {
            return Err(MdmSetupError::MissingClientSecret);
        }
        if config.timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(MdmSetupError::InvalidSetting {
                setting: "timeout",
                reason: "timeouts must be greater than zero".to_owned(),
            });
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| MdmSetupError::InvalidSetting { setting: "url", reason: e.to_string() })
        };
        let token_url = join("api/oauth/token")?;
        let inventory_url = join(&format!("api/{}/computers-inventory", config.api_version))?;

        let tls = tls_config(&base, config.ca_bundle.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A redirect is not part of either endpoint; following one could carry the
            // credentials somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("devicetrust-ca/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MdmSetupError::HttpClient(e.to_string()))?;

        Ok(Self {
            http,
            token_url,
            inventory_url,
            client_id: config.client_id,
            client_secret: config.client_secret,
            clock,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A usable token: the cached one unless it is due for refresh or is `rejected` (the
    /// token Jamf just answered 401 to), else a new one.
    async fn access_token(&self, rejected: Option<&AccessToken>) -> Result<AccessToken, MdmError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            let fresh = self.clock.now() < token.refresh_at;
            // Another caller may already have replaced the rejected token while we waited.
            let was_rejected = rejected.is_some_and(|r| *r == token.value);
            if fresh && !was_rejected {
                return Ok(token.value.clone());
            }
        }
        *cached = None;
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<CachedToken, MdmError> {
        const WHAT: &str = "the token request";
        let started = self.clock.now();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
        ];
        let response = self
            .http
            .post(self.token_url.clone())
            .header(header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(WHAT, e))?;
        let status = response.status();
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(MdmError::Unauthorized(format!(
                "the token endpoint refused the client credentials (http {})",
                status.as_u16()
            )));
        }
        check_status(WHAT, status)?;
        let body = read_limited(response, MAX_TOKEN_BODY, WHAT).await?;
        // serde_json's messages can quote the input; the input holds a token, so only the
        // position is reported.
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            MdmError::malformed(format!(
                "the token response is not the expected json (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if parsed.access_token.is_empty() {
            return Err(MdmError::malformed("the token response has an empty access_token".to_owned()));
        }
        if parsed.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(MdmError::malformed("the token response is not a bearer token".to_owned()));
        }
        // Without `expires_in` the token is used for this one lookup only.
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(0)).min(MAX_TOKEN_LIFETIME);
        // Short lifetimes (Jamf allows a minute) still get half their life of reuse.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let refresh_at = started.checked_add(lifetime - margin).unwrap_or(started);
        tracing::debug!(lifetime_secs = lifetime.as_secs(), "fetched a jamf pro access token");
        Ok(CachedToken { value: AccessToken(Arc::from(parsed.access_token)), refresh_at })
    }

    async fn lookup(&self, token: &AccessToken, serial: &str) -> Result<Lookup, MdmError> {
        const WHAT: &str = "the inventory lookup";
        let mut url = self.inventory_url.clone();
        url.query_pairs_mut()
            .append_pair("section", "GENERAL")
            .append_pair("section", "HARDWARE")
            .append_pair("filter", &serial_filter(serial));
        let response = self
            .http
            .get(url)
            .bearer_auth(&token.0)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(WHAT, e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok(Lookup::TokenRejected);
        }
        if status == StatusCode::FORBIDDEN {
            return Err(MdmError::Unauthorized(
                "the api client may not read computers (http 403); its role needs Read Computers".to_owned(),
            ));
        }
        check_status(WHAT, status)?;
        let body = read_limited(response, MAX_INVENTORY_BODY, WHAT).await?;
        let page: InventoryPage = serde_json::from_slice(&body).map_err(|e| MdmError::Malformed {
            reason: "the inventory response is not the expected json".to_owned(),
            source: Some(Arc::new(e)),
        })?;
        Ok(Lookup::Page(page))
    }
}

#[async_trait]
impl ManagedDeviceCheck for JamfClient {
    async fn check(&self, serial_number: &str, udid: &str) -> Result<MdmVerdict, MdmError> {
        if !is_plausible_serial(serial_number) {
            // No Jamf record can carry it, and it must never reach the RSQL filter
            // (a `*` would be a wildcard).
            return Ok(MdmVerdict::NotManaged(NotManagedReason::UnknownDevice));
        }
        let token = self.access_token(None).await?;
        let page = match self.lookup(&token, serial_number).await? {
            Lookup::Page(page) => page,
            // Expired early or revoked: one new token, one more try.
            Lookup::TokenRejected => {
                let token = self.access_token(Some(&token)).await?;
                match self.lookup(&token, serial_number).await? {
                    Lookup::Page(page) => page,
                    Lookup::TokenRejected => {
                        return Err(MdmError::Unauthorized(
                            "jamf pro rejected a freshly issued access token (http 401)".to_owned(),
                        ));
                    }
                }
            }
        };
        Ok(decide(&page.results, serial_number, udid))
    }
}

enum Lookup {
    Page(InventoryPage),
    TokenRejected,
}

/// `POST /api/oauth/token` answer (RFC 6749 section 5.1, as Jamf documents it).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// `GET /api/{version}/computers-inventory`: only the fields the decision reads.
#[derive(Debug, Deserialize)]
struct InventoryPage {
    results: Vec<InventoryRecord>,
}

#[derive(Debug, Default, Deserialize)]
struct InventoryRecord {
    #[serde(default)]
    udid: Option<String>,
    #[serde(default)]
    general: Option<General>,
    #[serde(default)]
    hardware: Option<Hardware>,
}

#[derive(Debug, Default, Deserialize)]
struct General {
    #[serde(default, rename = "remoteManagement")]
    remote_management: Option<RemoteManagement>,
}

#[derive(Debug, Default, Deserialize)]
struct RemoteManagement {
    #[serde(default)]
    managed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Hardware {
    #[serde(default, rename = "serialNumber")]
    serial_number: Option<String>,
}

/// The verdict from the records Jamf returned for `serial`.
///
/// Jamf can hold several records for one serial (a Mac re-enrolled after a wipe keeps its
/// old record until someone deletes it), so the best record wins: managed with this UDID,
/// then this UDID but unmanaged, then another UDID on a managed record (mismatch), then
/// unmanaged. For a single record that is exactly "managed must be true, then the UDID must
/// match". Records whose serial is not `serial` are ignored rather than trusted.
fn decide(records: &[InventoryRecord], serial: &str, udid: &str) -> MdmVerdict {
    let mut best: Option<(u8, NotManagedReason)> = None;
    for record in records {
        let record_serial = record.hardware.as_ref().and_then(|h| h.serial_number.as_deref());
        if !record_serial.is_some_and(|s| s.eq_ignore_ascii_case(serial)) {
            continue;
        }
        let managed = record
            .general
            .as_ref()
            .and_then(|g| g.remote_management.as_ref())
            .and_then(|r| r.managed)
            .unwrap_or(false);
        let same_udid =
            !udid.is_empty() && record.udid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(udid));
        let candidate = match (managed, same_udid) {
            (true, true) => return MdmVerdict::Managed,
            (false, true) => (3, NotManagedReason::Unmanaged),
            (true, false) => (2, NotManagedReason::UdidMismatch),
            (false, false) => (1, NotManagedReason::Unmanaged),
        };
        if best.is_none_or(|(rank, _)| candidate.0 > rank) {
            best = Some(candidate);
        }
    }
    MdmVerdict::NotManaged(best.map_or(NotManagedReason::UnknownDevice, |(_, reason)| reason))
}

/// Apple serial numbers are alphanumeric; virtual Macs add a few symbols. Anything else
/// (quotes, `*`, spaces, control characters) cannot be in Jamf and is refused before RSQL.
fn is_plausible_serial(serial: &str) -> bool {
    !serial.is_empty()
        && serial.len() <= MAX_SERIAL_LEN
        && serial.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/'))
}

/// `hardware.serialNumber=="<serial>"`, with the RSQL quoted-string escapes applied even
/// though [`is_plausible_serial`] already keeps `"` and `\` out.
fn serial_filter(serial: &str) -> String {
    let mut quoted = String::with_capacity(serial.len());
    for c in serial.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("hardware.serialNumber==\"{quoted}\"")
}

fn is_api_version(version: &str) -> bool {
    version.len() <= 4
        && version.strip_prefix('v').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_base_url(raw: &str) -> Result<Url, MdmSetupError> {
    let invalid = |reason: &str| MdmSetupError::InvalidSetting { setting: "url", reason: reason.to_owned() };
    // The URL is never echoed: a mistaken `https://user:secret@host` must not reach a log.
    let mut url = Url::parse(raw.trim()).map_err(|e| invalid(&format!("not a url ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "plain http is accepted only for a loopback address; jamf pro is served over https",
            ));
        }
        _ => return Err(invalid("expected an https url")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or a fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn tls_config(base: &Url, ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, MdmSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_bundle {
        let bundle_error = |reason: String| MdmSetupError::CaBundle { path: path.to_path_buf(), reason };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bundle_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bundle_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(bundle_error("no certificate in the file".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bundle_error(e.to_string()))?;
        }
    } else if base.scheme() == "https" {
        let found = rustls_native_certs::load_native_certs();
        let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let reasons: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(MdmSetupError::NoTrustRoots(if reasons.is_empty() {
                "none found".to_owned()
            } else {
                reasons.join("; ")
            }));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MdmSetupError::HttpClient(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A preconfigured rustls config is used as is by reqwest, ALPN included.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn check_status(what: &str, status: StatusCode) -> Result<(), MdmError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() {
        Err(MdmError::unavailable(format!("{what} got http {}", status.as_u16())))
    } else {
        Err(MdmError::unavailable(format!("{what} got an unexpected http {}", status.as_u16())))
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, MdmError> {
    let too_large = || MdmError::malformed(format!("{what} answered more than {limit} bytes"));
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(what, e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure: what failed and how, with reqwest's error (whose chain ends in the
/// innermost cause, for example "connection refused") as the source. The URL is dropped;
/// requests carry credentials only in headers and bodies, which reqwest never prints.
fn transport_error(what: &str, err: reqwest::Error) -> MdmError {
    let err = err.without_url();
    let how = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    MdmError::Unavailable { reason: format!("{what} {how}"), source: Some(Arc::new(err)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: &str, udid: Option<&str>, managed: Option<bool>) -> InventoryRecord {
        InventoryRecord {
            udid: udid.map(str::to_owned),
            general: Some(General { remote_management: Some(RemoteManagement { managed }) }),
            hardware: Some(Hardware { serial_number: Some(serial.to_owned()) }),
        }
    }

    const SERIAL: &str = "C02XK0AAJGH6";
    const UDID: &str = "564D0C47-1A7E-4B8C-9D2F-0E5A6B7C8D9E";
    const OTHER: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn decide_table() {
        use MdmVerdict::{Managed, NotManaged};
        use NotManagedReason::{UdidMismatch, UnknownDevice, Unmanaged};
        let cases: Vec<(&str, Vec<InventoryRecord>, &str, MdmVerdict)> = vec![
            ("ok/managed", vec![record(SERIAL, Some(UDID), Some(true))], UDID, Managed),
            (
                "ok/udid-case-insensitive",
                vec![record(SERIAL, Some(UDID), Some(true))],
                "564d0c47-1a7e-4b8c-9d2f-0e5a6b7c8d9e",
                Managed,
            ),
            (
                "ok/duplicate-record-managed-wins",
                vec![record(SERIAL, Some(OTHER), Some(false)), record(SERIAL, Some(UDID), Some(true))],
                UDID,
                Managed,
            ),
            ("fail/no-records", vec![], UDID, NotManaged(UnknownDevice)),
            (
                "fail/other-serial-ignored",
                vec![record("C02OTHER0001", Some(UDID), Some(true))],
                UDID,
                NotManaged(UnknownDevice),
            ),
            ("fail/unmanaged", vec![record(SERIAL, Some(UDID), Some(false))], UDID, NotManaged(Unmanaged)),
            ("fail/managed-missing", vec![record(SERIAL, Some(UDID), None)], UDID, NotManaged(Unmanaged)),
            (
                "fail/unmanaged-before-udid",
                vec![record(SERIAL, Some(OTHER), Some(false))],
                UDID,
                NotManaged(Unmanaged),
            ),
            (
                "fail/udid-mismatch",
                vec![record(SERIAL, Some(OTHER), Some(true))],
                UDID,
                NotManaged(UdidMismatch),
            ),
            ("fail/udid-missing", vec![record(SERIAL, None, Some(true))], UDID, NotManaged(UdidMismatch)),
            (
                "fail/empty-request-udid",
                vec![record(SERIAL, Some(""), Some(true))],
                "",
                NotManaged(UdidMismatch),
            ),
            (
                "fail/own-record-unmanaged-beats-mismatch",
                vec![record(SERIAL, Some(OTHER), Some(true)), record(SERIAL, Some(UDID), Some(false))],
                UDID,
                NotManaged(Unmanaged),
            ),
            (
                "fail/no-hardware-section",
                vec![InventoryRecord { udid: Some(UDID.to_owned()), ..Default::default() }],
                UDID,
                NotManaged(UnknownDevice),
            ),
        ];
        for (name, records, udid, want) in cases {
            assert_eq!(decide(&records, SERIAL, udid), want, "{name}");
        }
    }

    #[test]
    fn serial_validation_table() {
        let cases = [
            ("ok/classic", "C02XK0AAJGH6", true),
            ("ok/random-10", "H4K7Q2M9XP", true),
            ("ok/virtual", "VMq+Tq/6Xm-e", true),
            ("fail/empty", "", false),
            ("fail/quote", "C02\"||1==1", false),
            ("fail/wildcard", "C02*", false),
            ("fail/space", "C02 XK", false),
            ("fail/backslash", "C02\\", false),
            ("fail/semicolon", "C02;general.name==x", false),
            ("fail/too-long", &"A".repeat(65), false),
        ];
        for (name, serial, want) in cases {
            assert_eq!(is_plausible_serial(serial), want, "{name}");
        }
    }

    #[test]
    fn filter_escapes_quotes() {
        assert_eq!(serial_filter("C02XK0AAJGH6"), "hardware.serialNumber==\"C02XK0AAJGH6\"");
        assert_eq!(serial_filter("a\"b\\"), "hardware.serialNumber==\"a\\\"b\\\\\"");
    }

    #[test]
    fn api_version_table() {
        for (name, version, want) in [
            ("ok/v3", "v3", true),
            ("ok/v4", "v4", true),
            ("fail/empty", "", false),
            ("fail/no-number", "v", false),
            ("fail/path", "v3/../x", false),
            ("fail/upper", "V3", false),
        ] {
            assert_eq!(is_api_version(version), want, "{name}");
        }
    }

    #[test]
    fn base_url_table() {
        for (name, url, ok) in [
            ("ok/https", "https://example.jamfcloud.com", true),
            ("ok/https-prefix", "https://jamf.example.com:8443/jamf", true),
            ("ok/http-loopback", "http://127.0.0.1:8080", true),
            ("ok/http-localhost", "http://localhost:8080/", true),
            ("ok/http-ipv6-loopback", "http://[::1]:8080/", true),
            ("fail/http-remote", "http://jamf.example.com", false),
            ("fail/userinfo", "https://user:pw@jamf.example.com", false),
            ("fail/query", "https://jamf.example.com/?a=b", false),
            ("fail/scheme", "ftp://jamf.example.com", false),
            ("fail/not-a-url", "jamf.example.com", false),
        ] {
            assert_eq!(parse_base_url(url).is_ok(), ok, "{name}");
        }
        let with_prefix = parse_base_url("https://jamf.example.com:8443/jamf").map(|u| u.to_string());
        assert_eq!(with_prefix.as_deref(), Ok("https://jamf.example.com:8443/jamf/"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let secret = ClientSecret::new("s3cr3t-value");
        let config = JamfConfig::new("https://example.jamfcloud.com", "client", secret.clone());
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        assert!(!format!("{:?}", AccessToken(Arc::from("tok-value"))).contains("tok-value"));
    }

    #[test]
    fn userinfo_is_not_echoed() {
        let err = parse_base_url("https://user:hunter2@jamf.example.com").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| !e.contains("hunter2")));
    }
}
