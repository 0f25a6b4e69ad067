//! A fake CA on 127.0.0.1 that answers whatever the test sets: the way to prove that
//! malformed answers change nothing on the device.
//!
//! It speaks HTTPS (HTTP/1.1, one request per connection) with a certificate for
//! `127.0.0.1` issued by its own throwaway root, written to [`FakeCa::bundle`] for the
//! agent's `ca_bundle`. It does not ask for a client certificate: what is under test is
//! the agent's handling of the answer, not the handshake. Each path has a canned
//! [`Reply`] (404 by default) or a [`Responder`] computing one from the request body,
//! and the fake counts the requests per path so that a test
//! knows the agent really asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Largest request head and body the fake reads.
const MAX_REQUEST: usize = 256 * 1024;

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

#[derive(Default)]
struct Shared {
    replies: HashMap<String, Answer>,
    hits: HashMap<String, usize>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("paths", &self.replies.keys()).field("hits", &self.hits).finish()
    }
}

/// A running fake CA; stops when dropped.
#[derive(Debug)]
pub struct FakeCa {
    /// Its base URL, `https://127.0.0.1:<port>`.
    pub url: String,
    /// PEM file of the root its TLS certificate chains to.
    pub bundle: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl FakeCa {
    /// Starts the fake on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let dir =
            tempfile::Builder::new().prefix("devicetrust-fake-ca-").tempdir().expect("a temporary directory");
        let (tls, root_pem) = tls_config();
        let bundle = dir.path().join("fake-root.pem");
        std::fs::write(&bundle, root_pem).expect("the fake's bundle");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let serving = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(serve(tls, serving, stop_rx, addr_tx));
        });
        let addr = addr_rx.recv().expect("the fake CA listens");
        Self {
            url: format!("https://{addr}"),
            bundle,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers requests for `path` (without the query) with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.lock().replies.insert(path.to_owned(), Answer::Canned(reply));
    }

    /// Answers requests for `path` with what `responder` makes of the request body.
    pub fn set_responder(&self, path: &str, responder: Responder) {
        self.lock().replies.insert(path.to_owned(), Answer::Computed(responder));
    }

    /// How many requests reached `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.lock().hits.get(path).copied().unwrap_or(0)
    }

    /// The bundle's path.
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TLS configuration for `127.0.0.1` and the PEM of its root.
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a root key");
    let mut root = CertificateParams::default();
    root.distinguished_name.push(DnType::CommonName, "DeviceTrust fake CA TLS root");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let root_cert = root.self_signed(&root_key).expect("the fake root");
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf parameters");
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let issuer = Issuer::from_params(&root, &root_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("the fake's certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the fake's TLS configuration");
    (Arc::new(config), root_cert.pem())
}

async fn serve(
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Mutex<Shared>>,
    mut stop: oneshot::Receiver<()>,
    addr_tx: std::sync::mpsc::Sender<std::net::SocketAddr>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("the fake CA binds 127.0.0.1");
    let _ = addr_tx.send(listener.local_addr().expect("a local address"));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A client that gives up mid-handshake is none of the test's business.
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = answer(stream, &shared).await;
                    }
                });
            }
        }
    }
}

/// Reads one request and writes the canned reply for its path.
async fn answer<S>(mut stream: S, shared: &Mutex<Shared>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let content_length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    while buf.len() < head_end + content_length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let answer = {
        let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
        *shared.hits.entry(path.clone()).or_default() += 1;
        shared.replies.get(&path).cloned()
    };
    let body = &buf[head_end.min(buf.len())..];
    let reply = match answer {
        Some(Answer::Canned(reply)) => reply,
        Some(Answer::Computed(responder)) => responder(body),
        None => Reply::raw(404, "text/plain", "no canned reply for this path"),
    };
    let mut response = format!(
        "HTTP/1.1 {} Canned\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    response.extend_from_slice(&reply.body);
    stream.write_all(&response).await?;
    stream.shutdown().await
}
