//! Shared helpers: the fixture files, a scriptable HTTPS server on 127.0.0.1 port 0 (hyper 1
//! over tokio-rustls), a TCP server that never speaks, and signers for the tests.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ca_client::cert::certificates_from_pem;
use ca_client::signer::{KeyAlgorithm, KeySigner, SignError, SoftwareKey};
use ca_client::{CaClient, ClientOptions};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long any test may wait for one client call before the test itself fails; far above
/// every timeout configured in the tests, so it only fires when something hangs.
pub(crate) const GUARD: Duration = Duration::from_secs(60);

/// Fails the test when `future` does not finish within [`GUARD`].
pub(crate) async fn guarded<T>(future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, future).await {
        Ok(value) => value,
        Err(_) => panic!("the call did not finish within {GUARD:?}"),
    }
}

/// The path of a file in `fixtures/tls`.
pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)
}

/// The bytes of a file in `fixtures/tls`.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (run fixtures/tls/generate.sh)", path.display()))
}

/// The text of a file in `fixtures/tls`.
pub(crate) fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("fixture is utf-8")
}

/// The single certificate in a fixture PEM file.
pub(crate) fn fixture_cert(name: &str) -> CertificateDer<'static> {
    let mut certs = certificates_from_pem(&fixture(name)).expect("fixture certificate");
    assert_eq!(certs.len(), 1, "{name} holds one certificate");
    certs.remove(0)
}

/// The PKCS#8 key of a fixture, as a [`SoftwareKey`].
pub(crate) fn fixture_key(name: &str) -> SoftwareKey {
    let der = PrivatePkcs8KeyDer::from_pem_slice(&fixture(name)).expect("fixture key is pkcs8 pem");
    SoftwareKey::from_pkcs8_der(der.secret_pkcs8_der()).expect("fixture key is p-256")
}

/// Client options for `server`, trusting only `ca.pem`, with short timeouts.
pub(crate) fn options_for(addr: std::net::SocketAddr) -> ClientOptions {
    let url = url::Url::parse(&format!("https://{addr}/")).expect("url");
    let mut options = ClientOptions::new(url).with_pinned_roots(fixture("ca.pem"));
    options.connect_timeout = Duration::from_secs(10);
    options.timeout = Duration::from_secs(10);
    options
}

/// A client without identity for `server`.
pub(crate) fn client_for(server: &TestServer) -> CaClient {
    CaClient::new(options_for(server.addr)).expect("client")
}

/// What the server sends as a body.
#[derive(Debug, Clone)]
pub(crate) enum ReplyBody {
    /// These bytes, with an exact `Content-Length`.
    Bytes(Vec<u8>),
    /// These chunks with no length known to hyper (chunked encoding unless the reply sets
    /// `Content-Length`), then the end, or nothing more ever when `then_hang`.
    Chunks { chunks: Vec<Vec<u8>>, then_hang: bool },
    /// No answer at all: the request is read and never answered.
    Hang,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: ReplyBody,
}

impl Reply {
    /// A JSON answer.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        let body = serde_json::to_vec(value).expect("json");
        Self::bytes(status, body).header("content-type", "application/json")
    }

    /// Any bytes.
    pub(crate) fn bytes(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: ReplyBody::Bytes(body.into()) }
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// The DER of the client certificate presented in the TLS handshake, if any.
    pub(crate) client_cert: Option<Vec<u8>>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is json")
    }
}

#[derive(Debug)]
struct State {
    reply: Mutex<Reply>,
    recorded: Mutex<Vec<Recorded>>,
}

/// Which certificates the server uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerTls {
    /// Fixture base name of the server certificate (`server` or `other-server`).
    pub(crate) cert: &'static str,
    /// Fixture file of the CA whose client certificates are required, if any.
    pub(crate) require_client_ca: Option<&'static str>,
}

impl ServerTls {
    pub(crate) const PLAIN: Self = Self { cert: "server", require_client_ca: None };
}

/// An HTTPS server on 127.0.0.1 port 0 that answers every request with the current
/// [`Reply`] and records what it saw. Dropping it stops it and every connection.
#[derive(Debug)]
pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet, which aborts them when dropped.
        self.task.abort();
    }
}

impl TestServer {
    pub(crate) async fn start(tls: ServerTls, reply: Reply) -> Self {
        let config = server_config(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State { reply: Mutex::new(reply), recorded: Mutex::new(Vec::new()) });
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let task_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let state = Arc::clone(&task_state);
                connections.spawn(serve_connection(acceptor, tcp, state));
            }
        });
        Self { addr, state, task }
    }

    pub(crate) fn set_reply(&self, reply: Reply) {
        *self.state.reply.lock().expect("lock") = reply;
    }

    pub(crate) fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().expect("lock").clone()
    }

    /// The only request recorded so far.
    pub(crate) fn only_request(&self) -> Recorded {
        let recorded = self.recorded();
        assert_eq!(recorded.len(), 1, "exactly one request: {recorded:?}");
        recorded.into_iter().next().expect("one")
    }

    pub(crate) fn clear(&self) {
        self.state.recorded.lock().expect("lock").clear();
    }
}

async fn serve_connection(acceptor: TlsAcceptor, tcp: TcpStream, state: Arc<State>) {
    let Ok(tls) = acceptor.accept(tcp).await else { return };
    let client_cert = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first()).map(|c| c.to_vec());
    let service = service_fn(move |request| handle(request, Arc::clone(&state), client_cert.clone()));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    client_cert: Option<Vec<u8>>,
) -> Result<Response<ScriptedBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    state.recorded.lock().expect("lock").push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        client_cert,
    });
    let reply = state.reply.lock().expect("lock").clone();
    let body = match reply.body {
        ReplyBody::Hang => std::future::pending().await,
        ReplyBody::Bytes(bytes) => {
            ScriptedBody { chunks: vec![Bytes::from(bytes)], exact: true, then_hang: false }
        }
        ReplyBody::Chunks { chunks, then_hang } => {
            ScriptedBody { chunks: chunks.into_iter().map(Bytes::from).collect(), exact: false, then_hang }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("status");
    for (name, value) in reply.headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    Ok(response)
}

/// A response body that sends its chunks one by one, then ends or never ends.
struct ScriptedBody {
    chunks: Vec<Bytes>,
    exact: bool,
    then_hang: bool,
}

impl Body for ScriptedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.chunks.is_empty() {
            let chunk = self.chunks.remove(0);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.then_hang { Poll::Pending } else { Poll::Ready(None) }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.then_hang
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
        } else {
            SizeHint::default()
        }
    }
}

fn server_config(tls: ServerTls) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![fixture_cert(&format!("{}.pem", tls.cert))];
    let key = PrivateKeyDer::from_pem_slice(&fixture(&format!("{}.key.pem", tls.cert))).expect("server key");
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match tls.require_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(fixture_cert(ca)).expect("client ca");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).expect("server cert")
}

/// A TCP server on 127.0.0.1 port 0 that accepts connections and never sends a byte.
#[derive(Debug)]
pub(crate) struct SilentServer {
    pub(crate) addr: std::net::SocketAddr,
    task: JoinHandle<()>,
}

impl SilentServer {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { addr, task }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A signer that delegates to a software key and counts its signatures, standing in for a
/// keychain key that can only be asked to sign.
#[derive(Debug)]
pub(crate) struct CountingSigner {
    key: SoftwareKey,
    pub(crate) signatures: AtomicUsize,
}

impl CountingSigner {
    pub(crate) fn new(key: SoftwareKey) -> Self {
        Self { key, signatures: AtomicUsize::new(0) }
    }

    pub(crate) fn count(&self) -> usize {
        self.signatures.load(Ordering::SeqCst)
    }
}

impl KeySigner for CountingSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }

    fn public_key_sec1(&self) -> &[u8] {
        self.key.public_key_sec1()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signatures.fetch_add(1, Ordering::SeqCst);
        self.key.sign(message)
    }
}

/// A signer whose key store always refuses.
#[derive(Debug)]
pub(crate) struct RefusingSigner(pub SoftwareKey);

impl KeySigner for RefusingSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.0.algorithm()
    }

    fn public_key_sec1(&self) -> &[u8] {
        self.0.public_key_sec1()
    }

    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Store("user interaction is not allowed".into()))
    }
}

/// The contract's issued-certificate answer for the `client.pem` fixture.
pub(crate) fn issued_json() -> serde_json::Value {
    serde_json::json!({
        "certificate": fixture_text("client.pem"),
        "chain": [fixture_text("ca.pem")],
        "serialNumber": "8badf00d",
        "notBefore": "2026-11-23T10:00:00Z",
        "notAfter": "2027-11-23T10:00:00Z",
        "state": "unbound"
    })
}

/// The contract's metadata example.
pub(crate) fn metadata_json() -> serde_json::Value {
    serde_json::json!({
        "certAuthDomain": "https://ca.example.com:8443",
        "issuerCommonName": "MTLS Certificate Authority",
        "caCertificates": [fixture_text("ca.pem")],
        "certificateLifetimeDays": 365,
        "renewBeforeDays": 30,
        "maxUnboundCertificates": 5,
        "readOnly": false
    })
}
