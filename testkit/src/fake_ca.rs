//! The one fake CA of the tests: HTTPS on 127.0.0.1 with real certificates (rcgen), for the
//! agent's command-line tests and the end-to-end proof that malformed answers change
//! nothing on the device.
//!
//! By default ([`FakeCa::start`]) it keeps to the contract's rules the agent depends on:
//! the enrollment token ([`TOKEN`]), enrollment idempotent per key, renewal over mutual TLS
//! that supersedes the presented certificate, and `GET /api/v1/certificate` reporting
//! revocation; [`FakeCa::set_mode`] makes it answer garbage to everything. A test can also
//! give any path a canned [`Reply`] or a [`Responder`] of its own ([`FakeCa::set`]);
//! [`FakeCa::start_canned`] answers nothing but those (404 elsewhere). Requests are counted
//! per path, so that a test knows the agent really asked.
//!
//! Each instance has its own throwaway TLS root, written to [`FakeCa::bundle`] for the
//! agent's `ca_bundle`: a client of one fake never trusts another.
//!
//! The issuing itself is [`Issuance`], which the agent's in-memory fake (its unit tests reach
//! the CA through a trait, not HTTPS) uses too, so that "what a fake CA issues" is one piece
//! of code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The enrollment token the fake accepts.
pub const TOKEN: &str = "fake-ca-enrollment-token-0123456789";
/// The issuer CN of the certificates it issues.
pub const ISSUER_CN: &str = "Fake Device Trust CA";

/// How the fake answers the protocol's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// By the contract.
    Normal,
    /// 200 with a body that is not JSON, for every request.
    Garbage,
}

/// A canned answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with `status`, JSON content type and `body`.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, content_type: "application/json; charset=utf-8".to_owned(), body: body.into() }
    }

    /// A reply with `status`, content type `content_type` and `body`.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self { status, content_type: content_type.to_owned(), body: body.into() }
    }
}

/// Builds a reply from the request body (e.g. signs the CSR it carries).
pub type Responder = Arc<dyn Fn(&[u8]) -> Reply + Send + Sync>;

#[derive(Clone)]
enum Answer {
    Canned(Reply),
    Computed(Responder),
}

/// Where a certificate the fake issued stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertState {
    /// Issued, not yet superseded or revoked: counts against the device's limit.
    Unbound,
    /// Replaced by a renewal.
    Superseded,
    /// Revoked by the test.
    Revoked,
}

impl CertState {
    /// The contract's name, e.g. `unbound`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unbound => "unbound",
            Self::Superseded => "superseded",
            Self::Revoked => "revoked",
        }
    }
}

/// A certificate the fake issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// Its DER.
    pub der: Vec<u8>,
    /// Its PEM.
    pub pem: String,
    /// The subject public key info it certifies.
    pub spki: Vec<u8>,
    /// The device UDID it names.
    pub udid: String,
    /// The start of its validity.
    pub not_before: time::OffsetDateTime,
    /// The end of its validity.
    pub not_after: time::OffsetDateTime,
    /// Where it stands.
    pub state: CertState,
}

/// How a fake CA misbehaves when it issues, for the agent's checks of what comes back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Twist {
    /// Certify a key other than the CSR's (a broken or hostile CA).
    pub wrong_key: bool,
    /// Name another device.
    pub wrong_device: bool,
}

/// The CSR is not base64 DER of a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCsr;

/// The issuing core every fake CA shares: a throwaway issuing CA (rcgen) and the certificates
/// it issued, with the contract's rules the agent relies on: one certificate per key
/// (asking again with the same key gives the same certificate back), renewal supersedes.
pub struct Issuance {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    issuer_pem: String,
    certs: Vec<Issued>,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    first_serial: u64,
}

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuance").field("certs", &self.certs.len()).finish_non_exhaustive()
    }
}

impl Issuance {
    /// A new issuing CA named `issuer_cn`, valid 2025 to 2099, issuing for a year from an hour
    /// ago, serials from 0x2000.
    pub fn new(issuer_cn: &str) -> Self {
        let key = KeyPair::generate().expect("the issuing key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, issuer_cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).expect("the issuing certificate");
        Self {
            issuer_der: cert.der().to_vec(),
            issuer_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            certs: Vec::new(),
            validity: None,
            first_serial: 0x2000,
        }
    }

    /// Issues every certificate for exactly this validity (for tests on a fixed clock).
    pub fn with_validity(
        mut self,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Self {
        self.validity = Some((not_before, not_after));
        self
    }

    /// Numbers serials from `first`.
    pub fn with_first_serial(mut self, first: u64) -> Self {
        self.first_serial = first;
        self
    }

    /// The issuing CA's certificate, PEM.
    pub fn issuer_pem(&self) -> &str {
        &self.issuer_pem
    }

    /// The issuing CA's certificate, DER.
    pub fn issuer_der(&self) -> &[u8] {
        &self.issuer_der
    }

    /// Every certificate issued, in order.
    pub fn certs(&self) -> &[Issued] {
        &self.certs
    }

    /// The certificate with this DER (a presented client certificate), if issued here.
    pub fn find_der(&self, der: &[u8]) -> Option<&Issued> {
        self.certs.iter().find(|c| c.der == der)
    }

    /// The certificate with this serial, if issued here.
    pub fn find_serial(&self, serial: &str) -> Option<&Issued> {
        self.certs.iter().find(|c| c.serial == serial)
    }

    /// How many are unbound (neither superseded nor revoked).
    pub fn unbound(&self) -> usize {
        self.certs.iter().filter(|c| c.state == CertState::Unbound).count()
    }

    /// Revokes every certificate.
    pub fn revoke_all(&mut self) {
        for cert in &mut self.certs {
            cert.state = CertState::Revoked;
        }
    }

    /// Marks the certificate with `serial` superseded.
    pub fn supersede(&mut self, serial: &str) {
        for cert in self.certs.iter_mut().filter(|c| c.serial == serial) {
            cert.state = CertState::Superseded;
        }
    }

    /// Signs the CSR (base64 DER) for `udid`, or gives back the certificate already issued for
    /// its key (not revoked); `true` when it is new.
    pub fn issue(&mut self, csr_b64: &str, udid: &str, twist: Twist) -> Result<(Issued, bool), InvalidCsr> {
        let der = base64::engine::general_purpose::STANDARD.decode(csr_b64).map_err(|_| InvalidCsr)?;
        let csr = CertificateSigningRequestParams::from_der(&der.into()).map_err(|_| InvalidCsr)?;
        let mut spki = csr.public_key.subject_public_key_info();
        if let Some(existing) = self.certs.iter().find(|c| c.spki == spki && c.state != CertState::Revoked) {
            return Ok((existing.clone(), false));
        }
        let other_key;
        let public_key: &dyn rcgen::PublicKeyData = if twist.wrong_key {
            other_key = KeyPair::generate().expect("another key");
            spki = other_key.subject_public_key_info();
            &other_key
        } else {
            &csr.public_key
        };
        let udid = if twist.wrong_device { "SOMEONE-ELSE" } else { udid };
        let serial = self.first_serial + self.certs.len() as u64;
        let (not_before, not_after) = self.validity.unwrap_or_else(|| {
            let now = time::OffsetDateTime::now_utc();
            (now - time::Duration::hours(1), now + time::Duration::days(365))
        });
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "Device Trust");
        params.subject_alt_names =
            vec![SanType::URI(format!("urn:devicetrust:device:{udid}").try_into().expect("a uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial.into());
        let issued = params.signed_by(&DynKey(public_key), &self.issuer).expect("sign");
        let cert = Issued {
            serial: format!("{serial:x}"),
            der: issued.der().to_vec(),
            pem: issued.pem(),
            spki,
            udid: udid.to_owned(),
            not_before,
            not_after,
            state: CertState::Unbound,
        };
        self.certs.push(cert.clone());
        Ok((cert, true))
    }
}

/// Lets one call site sign for either kind of public key.
struct DynKey<'a>(&'a dyn rcgen::PublicKeyData);

impl rcgen::PublicKeyData for DynKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

struct State {
    protocol: bool,
    issuance: Issuance,
    mode: Mode,
    cert_auth_domain: String,
    protected_origins: Vec<String>,
    answers: HashMap<String, Answer>,
    hits: HashMap<String, usize>,
    requests: usize,
}

/// A running fake CA on 127.0.0.1; stops when dropped.
pub struct FakeCa {
    url: String,
    bundle: PathBuf,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: TempDir,
}

impl std::fmt::Debug for FakeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCa").field("url", &self.url).field("bundle", &self.bundle).finish_non_exhaustive()
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        // Stops the accept loop and every connection.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl FakeCa {
    /// A fake that answers by the contract.
    pub fn start() -> Self {
        Self::start_inner(true)
    }

    /// A fake that answers only what the test sets ([`FakeCa::set`]), 404 elsewhere.
    pub fn start_canned() -> Self {
        Self::start_inner(false)
    }

    fn start_inner(protocol: bool) -> Self {
        let dir =
            tempfile::Builder::new().prefix("devicetrust-fake-ca-").tempdir().expect("a temporary directory");
        let issuance = Issuance::new(ISSUER_CN);
        // Only the contract's fake asks for the client certificates it issued; the canned one
        // serves clients whose certificates come from elsewhere (the real CA).
        let (tls, tls_root_pem) =
            tls_config(protocol.then(|| CertificateDer::from(issuance.issuer_der().to_vec())));
        let bundle = dir.path().join("fake-ca-tls-root.pem");
        std::fs::write(&bundle, tls_root_pem).expect("the fake's bundle");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
        let url = format!("https://{}", listener.local_addr().expect("the bound address"));
        let state = Arc::new(Mutex::new(State {
            protocol,
            issuance,
            mode: Mode::Normal,
            cert_auth_domain: url.clone(),
            protected_origins: Vec::new(),
            answers: HashMap::new(),
            hits: HashMap::new(),
            requests: 0,
        }));
        let acceptor = TlsAcceptor::from(tls);
        let serving = Arc::clone(&state);
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&serving);
                tokio::spawn(async move {
                    // A client that gives up mid-handshake is none of the test's business.
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let client =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                    let service =
                        service_fn(move |request| handle(request, Arc::clone(&state), client.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { url, bundle, state, runtime: Some(runtime), _dir: dir }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PEM file of the root its TLS certificate chains to.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    /// How it answers the protocol's paths from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Makes the metadata publish `value` as the `certAuthDomain` (its own URL by default).
    pub fn publish_cert_auth_domain(&self, value: &str) {
        value.clone_into(&mut self.lock().cert_auth_domain);
    }

    /// Makes the metadata publish `origins` as the `protectedOrigins` (none by default).
    pub fn publish_protected_origins(&self, origins: &[&str]) {
        self.lock().protected_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    }

    /// Answers requests for `path` (without the query) with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.lock().answers.insert(path.to_owned(), Answer::Canned(reply));
    }

    /// Answers requests for `path` with what `responder` makes of the request body.
    pub fn set_responder(&self, path: &str, responder: Responder) {
        self.lock().answers.insert(path.to_owned(), Answer::Computed(responder));
    }

    /// How many requests reached `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.lock().hits.get(path).copied().unwrap_or(0)
    }

    /// How many requests it has answered, on every path.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Every certificate it issued, in order.
    pub fn certs(&self) -> Vec<Issued> {
        self.lock().issuance.certs().to_vec()
    }

    /// How many of them are unbound (neither superseded nor revoked).
    pub fn unbound(&self) -> usize {
        self.lock().issuance.unbound()
    }

    /// Revokes every certificate it issued.
    pub fn revoke_all(&self) {
        self.lock().issuance.revoke_all();
    }
}

/// The server's TLS configuration, for `127.0.0.1` under a throwaway root (whose PEM comes
/// back), asking for (but not requiring) a client certificate issued by `client_root`, if
/// given.
fn tls_config(client_root: Option<CertificateDer<'static>>) -> (Arc<rustls::ServerConfig>, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a root key");
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "DeviceTrust fake CA TLS root");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let root_cert = root.self_signed(&root_key).expect("the fake root");
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf parameters");
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let leaf_cert = leaf.signed_by(&leaf_key, &Issuer::from_params(&root, &root_key)).expect("the leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_root {
        Some(client_root) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_root).expect("the client root");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .expect("the client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config =
        builder.with_single_cert(vec![leaf_cert.der().clone()], key).expect("the fake's TLS configuration");
    (Arc::new(config), root_cert.pem())
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status).expect("an http status");
    if let Ok(value) = hyper::header::HeaderValue::from_str(&reply.content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn reply(status: u16, body: &Value) -> Reply {
    Reply::json(status, body.to_string())
}

fn refuse(status: u16, code: &str) -> Reply {
    reply(status, &json!({"error": {"code": code, "message": code}}))
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client_cert: Option<Vec<u8>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.requests += 1;
    *state.hits.entry(path.clone()).or_default() += 1;
    if let Some(answer) = state.answers.get(&path).cloned() {
        // A responder may take its time (it signs); the state is not needed for it.
        drop(state);
        return Ok(respond(match answer {
            Answer::Canned(reply) => reply,
            Answer::Computed(responder) => responder(&body),
        }));
    }
    if !state.protocol {
        return Ok(respond(Reply::raw(404, "text/plain", "no canned reply for this path")));
    }
    if state.mode == Mode::Garbage {
        return Ok(respond(Reply::json(200, "{\"certificate\": <html>")));
    }
    let bearer = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let presented = client_cert.and_then(|der| state.issuance.find_der(&der).cloned());
    let answer = match (parts.method.as_str(), path.as_str()) {
        ("GET", "/api/v1/metadata") => reply(
            200,
            &json!({
                "certAuthDomain": state.cert_auth_domain,
                "issuerCommonName": ISSUER_CN,
                "caCertificates": [state.issuance.issuer_pem()],
                "certificateLifetimeDays": 365,
                "renewBeforeDays": 30,
                "maxUnboundCertificates": 5,
                "readOnly": false,
                "protectedOrigins": state.protected_origins,
            }),
        ),
        ("POST", "/api/v1/enroll") if bearer.as_deref() != Some(&format!("Bearer {TOKEN}")) => {
            refuse(401, "invalid_token")
        }
        ("POST", "/api/v1/enroll") => {
            let udid = request["device"]["udid"].as_str().unwrap_or_default().to_owned();
            issue(&mut state, request["csr"].as_str().unwrap_or_default(), &udid, None)
        }
        ("POST", "/api/v1/renew") => match presented {
            None => refuse(401, "client_certificate_required"),
            Some(cert) if cert.state == CertState::Revoked => refuse(403, "certificate_revoked"),
            Some(cert) => {
                issue(&mut state, request["csr"].as_str().unwrap_or_default(), &cert.udid, Some(&cert.serial))
            }
        },
        ("GET", "/api/v1/certificate") => match presented {
            None => refuse(401, "client_certificate_required"),
            Some(cert) => reply(
                200,
                &json!({"serialNumber": cert.serial, "state": cert.state.as_str(), "boundUser": null,
                        "notAfter": "2099-01-01T00:00:00Z", "device": {"udid": cert.udid}}),
            ),
        },
        _ => refuse(404, "invalid_request"),
    };
    Ok(respond(answer))
}

/// Issues for `udid` (superseding `supersedes` when the certificate is new) and answers as
/// the contract does: 201 for a new certificate, 200 for the one the key already has.
fn issue(state: &mut State, csr_b64: &str, udid: &str, supersedes: Option<&str>) -> Reply {
    let Ok((cert, created)) = state.issuance.issue(csr_b64, udid, Twist::default()) else {
        return refuse(400, "invalid_csr");
    };
    if let (true, Some(old)) = (created, supersedes) {
        state.issuance.supersede(old);
    }
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339).expect("an rfc 3339 time")
    };
    reply(
        if created { 201 } else { 200 },
        &json!({
            "certificate": cert.pem,
            "chain": [state.issuance.issuer_pem()],
            "serialNumber": cert.serial,
            "notBefore": rfc3339(cert.not_before),
            "notAfter": rfc3339(cert.not_after),
            "state": "unbound"
        }),
    )
}
