//! Shared helpers: a test home with a configuration, the agent binary run inside it, and an
//! in-test CA over HTTPS (hyper over tokio-rustls) that issues real certificates with rcgen.
//!
//! The CA keeps to the contract's rules that the agent depends on: the enrollment token,
//! idempotent enrollment per key, renewal over mutual TLS that supersedes the presented
//! certificate, and `GET /api/v1/certificate` reporting revocation. It can be switched to
//! answer garbage.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::{Arc, Mutex};
use testkit::Finished;

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
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The enrollment token the CA accepts.
pub(crate) const TOKEN: &str = "cli-test-token-0123456789";
/// The issuer CN of the CA's certificates.
pub(crate) const ISSUER_CN: &str = "CLI Test Device CA";

/// A fixture file from `fixtures/tls`.
pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)
}

/// How the CA answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// By the contract.
    Normal,
    /// 200 with a body that is not JSON, for every request.
    Garbage,
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) serial: String,
    pub(crate) der: Vec<u8>,
    pub(crate) spki: Vec<u8>,
    pub(crate) state: &'static str,
}

struct CaState {
    issuer: Issuer<'static, KeyPair>,
    issuer_pem: String,
    certs: Mutex<Vec<Issued>>,
    mode: Mutex<Mode>,
    /// The `certAuthDomain` the metadata publishes (the CA's own origin unless changed).
    origin: Mutex<String>,
    /// The `protectedOrigins` the metadata publishes (none unless changed).
    protected_origins: Mutex<Vec<String>>,
    /// Requests of any kind, metadata included.
    requests: Mutex<usize>,
}

/// The CA, listening on 127.0.0.1 port 0 until dropped.
pub(crate) struct TestCa {
    pub(crate) addr: std::net::SocketAddr,
    state: Arc<CaState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestCa {
    fn drop(&mut self) {
        // Stops the accept loop and every connection.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl TestCa {
    pub(crate) fn start() -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, ISSUER_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer_cert = params.self_signed(&key).expect("ca cert");
        let issuer_pem = issuer_cert.pem();
        let state = Arc::new(CaState {
            issuer: Issuer::new(params, key),
            issuer_pem,
            certs: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Normal),
            origin: Mutex::new(String::new()),
            protected_origins: Mutex::new(Vec::new()),
            requests: Mutex::new(0),
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let config = server_config(issuer_cert.der().clone());
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        *state.origin.lock().expect("origin") = format!("https://{addr}");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let task_state = Arc::clone(&state);
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = Arc::clone(&task_state);
                tokio::spawn(async move {
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
        Self { addr, state, runtime: Some(runtime) }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Makes the metadata publish `value` as the `certAuthDomain`.
    pub(crate) fn publish_cert_auth_domain(&self, value: &str) {
        value.clone_into(&mut self.state.origin.lock().expect("origin"));
    }

    /// Makes the metadata publish `origins` as the `protectedOrigins`.
    pub(crate) fn publish_protected_origins(&self, origins: &[&str]) {
        *self.state.protected_origins.lock().expect("protected origins") =
            origins.iter().map(|o| (*o).to_owned()).collect();
    }

    /// How many requests the CA has answered.
    pub(crate) fn requests(&self) -> usize {
        *self.state.requests.lock().expect("requests")
    }

    pub(crate) fn certs(&self) -> Vec<Issued> {
        self.state.certs.lock().expect("certs").clone()
    }

    pub(crate) fn unbound(&self) -> usize {
        self.certs().iter().filter(|c| c.state == "unbound").count()
    }

    pub(crate) fn revoke_all(&self) {
        for cert in self.state.certs.lock().expect("certs").iter_mut() {
            cert.state = "revoked";
        }
    }
}

fn server_config(client_root: CertificateDer<'static>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_file_iter(fixture_path("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server chain");
    let key = PrivateKeyDer::from_pem_file(fixture_path("server.key.pem")).expect("server key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_root).expect("client root");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .expect("verifier");
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config")
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn refuse(status: u16, code: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": {"code": code, "message": code}}))
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<CaState>,
    client_cert: Option<Vec<u8>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    *state.requests.lock().expect("requests") += 1;
    if *state.mode.lock().expect("mode") == Mode::Garbage {
        return Ok(Response::new(Full::new(Bytes::from_static(b"{\"certificate\": <html>"))));
    }
    let bearer = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/api/v1/metadata") => reply(
            200,
            json!({
                "certAuthDomain": state.origin.lock().expect("origin").clone(),
                "issuerCommonName": ISSUER_CN,
                "caCertificates": [state.issuer_pem],
                "certificateLifetimeDays": 365,
                "renewBeforeDays": 30,
                "maxUnboundCertificates": 5,
                "readOnly": false,
                "protectedOrigins": state.protected_origins.lock().expect("protected origins").clone()
            }),
        ),
        ("POST", "/api/v1/enroll") => {
            if bearer.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                refuse(401, "invalid_token")
            } else {
                let udid = request["device"]["udid"].as_str().unwrap_or_default().to_owned();
                issue(&state, request["csr"].as_str().unwrap_or_default(), &udid, None)
            }
        }
        ("POST", "/api/v1/renew") => match presented(&state, client_cert.as_deref()) {
            None => refuse(401, "client_certificate_required"),
            Some(cert) if cert.state == "revoked" => refuse(403, "certificate_revoked"),
            Some(cert) => {
                let udid = rcgen_udid(&cert.der);
                issue(&state, request["csr"].as_str().unwrap_or_default(), &udid, Some(&cert.serial))
            }
        },
        ("GET", "/api/v1/certificate") => match presented(&state, client_cert.as_deref()) {
            None => refuse(401, "client_certificate_required"),
            Some(cert) => reply(
                200,
                json!({"serialNumber": cert.serial, "state": cert.state, "boundUser": null,
                       "notAfter": "2099-01-01T00:00:00Z", "device": {"udid": rcgen_udid(&cert.der)}}),
            ),
        },
        _ => refuse(404, "invalid_request"),
    })
}

fn presented(state: &CaState, der: Option<&[u8]>) -> Option<Issued> {
    let der = der?;
    state.certs.lock().expect("certs").iter().find(|c| c.der == der).cloned()
}

fn rcgen_udid(der: &[u8]) -> String {
    let info = ca_client::cert::CertificateInfo::from_der(der).expect("issued cert");
    info.device_udid().unwrap_or_default().to_owned()
}

fn issue(state: &CaState, csr_b64: &str, udid: &str, supersedes: Option<&str>) -> Response<Full<Bytes>> {
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(csr_b64) else {
        return refuse(400, "invalid_csr");
    };
    let Ok(csr) = CertificateSigningRequestParams::from_der(&der.into()) else {
        return refuse(400, "invalid_csr");
    };
    let spki = csr.public_key.subject_public_key_info();
    let mut certs = state.certs.lock().expect("certs");
    let (cert, status) = match certs.iter().find(|c| c.spki == spki && c.state != "revoked") {
        Some(existing) => (existing.clone(), 200),
        None => {
            let serial = 0x2000 + certs.len() as u64;
            let now = time::OffsetDateTime::now_utc();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, "Device Trust");
            params.subject_alt_names =
                vec![SanType::URI(format!("urn:devicetrust:device:{udid}").try_into().expect("uri"))];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.is_ca = IsCa::ExplicitNoCa;
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(365);
            params.serial_number = Some(serial.into());
            let issued = params.signed_by(&csr.public_key, &state.issuer).expect("sign");
            let cert =
                Issued { serial: format!("{serial:x}"), der: issued.der().to_vec(), spki, state: "unbound" };
            certs.push(cert.clone());
            if let Some(old) = supersedes {
                for c in certs.iter_mut().filter(|c| c.serial == old) {
                    c.state = "superseded";
                }
            }
            (cert, 201)
        }
    };
    let info = ca_client::cert::CertificateInfo::from_der(&cert.der).expect("issued cert");
    reply(
        status,
        json!({
            "certificate": info.to_pem(),
            "chain": [state.issuer_pem],
            "serialNumber": cert.serial,
            "notBefore": info.not_before().to_rfc3339(),
            "notAfter": info.not_after().to_rfc3339(),
            "state": "unbound"
        }),
    )
}

/// A home directory with a configuration file, for one test.
pub(crate) struct Home {
    pub(crate) temp: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

impl Home {
    /// A home whose configuration points at `ca_url`.
    pub(crate) fn new(ca_url: &str) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        for dir in ["home", "data", "config", "run"] {
            std::fs::create_dir_all(temp.path().join(dir)).expect("dir");
        }
        std::fs::set_permissions(temp.path().join("run"), std::fs::Permissions::from_mode(0o700))
            .expect("run");
        let config = temp.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "ca_url = \"{ca_url}\"\nca_bundle = \"{}\"\ndevice_udid = \"UDID-CLI-1\"\n\
                 device_serial = \"SERIAL-CLI-1\"\nca_timeout_seconds = 20\n",
                fixture_path("ca.pem").display()
            ),
        )
        .expect("config");
        Self { temp, config }
    }

    /// A home for `ca`.
    pub(crate) fn for_ca(ca: &TestCa) -> Self {
        Self::new(&format!("https://{}", ca.addr))
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.temp.path().join("data/devicetrust")
    }

    /// The agent with `args`, `--config` and a clean environment pointing into this home.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command_without_config(env!("CARGO_BIN_EXE_devicetrust-agent"), args);
        cmd.arg("--config").arg(&self.config);
        cmd
    }

    /// `program` (an agent binary) with `args` and the clean environment of
    /// [`Home::command`], but no `--config`: the agent looks for its configuration itself.
    pub(crate) fn command_without_config(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.temp.path().join("home"))
            .env("XDG_DATA_HOME", self.temp.path().join("data"))
            .env("XDG_CONFIG_HOME", self.temp.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.temp.path().join("run"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the agent, feeding `stdin`, and kills it if it hangs ([`testkit::HANG_LIMIT`]).
    pub(crate) fn run_with(&self, mut cmd: Command, stdin: Option<&str>) -> Finished {
        testkit::run_bounded(&mut cmd, stdin.map(str::as_bytes), testkit::HANG_LIMIT, "devicetrust-agent")
    }

    /// Runs the agent with `args`.
    pub(crate) fn run(&self, args: &[&str]) -> Finished {
        self.run_with(self.command(args), None)
    }

    /// Enrolls with the token on standard input; asserts success.
    pub(crate) fn enroll(&self) -> Finished {
        let out = self.run_with(self.command(&["enroll", "--token-stdin"]), Some(&format!("{TOKEN}\n")));
        assert_eq!(code(&out), 0, "enroll: {}", text(&out));
        out
    }

    /// `status --json`, parsed.
    pub(crate) fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert_eq!(code(&out), 0, "status: {}", text(&out));
        serde_json::from_str(&out.stdout).expect("status json")
    }

    /// The current certificate's serial, from `status --json`.
    pub(crate) fn serial(&self) -> Option<String> {
        self.status()["certificate"]["serialNumber"].as_str().map(str::to_owned)
    }

    /// Every file under `dir` with its mode.
    pub(crate) fn tree(dir: &Path) -> Vec<(PathBuf, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries {
                let e = e.expect("entry");
                let meta = e.metadata().expect("metadata");
                if meta.is_dir() {
                    stack.push(e.path());
                }
                out.push((e.path(), meta.permissions().mode() & 0o777));
            }
        }
        out
    }

    /// Identity directories in the store.
    pub(crate) fn identity_dirs(&self) -> usize {
        std::fs::read_dir(self.data_dir().join("identities")).map(|d| d.count()).unwrap_or(0)
    }
}

/// The exit code (panics on a signal).
pub(crate) fn code(out: &Finished) -> i32 {
    out.code().unwrap_or_else(|| panic!("no exit code: {out}"))
}

/// The command, how it ended, its standard output and error, for assertion messages.
pub(crate) fn text(out: &Finished) -> String {
    out.to_string()
}

/// Fails the test, saying what to do, unless it runs as root: the tests of what the agent
/// does as root never skip silently (the convention of `tests::harness::require_root`).
pub(crate) fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root: {why}. Run it as root (in CI the container is root), \
         e.g. `sudo -E cargo test -p agent --test cli root::`"
    );
}

/// A uid that is not root's, for files "a user" owns.
pub(crate) const NOBODY: u32 = 65534;

/// Hands `path` to [`NOBODY`] (owner and group), as if a user had made it.
pub(crate) fn give_to_nobody(path: &Path) {
    let id = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(NOBODY)))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub(crate) fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// The browsers' managed policy files that `install --system` writes, as they were when this
/// guard was made. [`PolicyFiles::assert_unchanged`] fails a test whose agent wrote them;
/// `Drop` puts back what was there (and removes directories the agent created), whatever
/// happened. It holds the lock the end-to-end tests hold while they install the policy
/// (`tests/src/harness/browser.rs`), so that their writes and these checks never overlap.
pub(crate) struct PolicyFiles {
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
    created_dirs: Vec<PathBuf>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The managed policy directories of Chromium and Chrome on Linux, and the agent's file there.
const MANAGED_DIRS: [&str; 2] = ["/etc/chromium/policies/managed", "/etc/opt/chrome/policies/managed"];
const POLICY_FILE: &str = "zz-devicetrust.json";
const POLICY_LOCK: &str = "/run/lock/devicetrust-e2e-browser-policy.lock";

impl PolicyFiles {
    pub(crate) fn guard() -> Self {
        std::fs::create_dir_all("/run/lock").expect("/run/lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(POLICY_LOCK)
            .unwrap_or_else(|e| panic!("cannot open {POLICY_LOCK}: {e}"));
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("cannot lock {POLICY_LOCK}: {e}"));
        let mut saved = Vec::new();
        let mut created_dirs = Vec::new();
        for dir in MANAGED_DIRS {
            let file = Path::new(dir).join(POLICY_FILE);
            saved.push((file.clone(), std::fs::read(&file).ok()));
            for ancestor in Path::new(dir).ancestors().take_while(|a| *a != Path::new("/etc")) {
                if !ancestor.exists() {
                    created_dirs.push(ancestor.to_path_buf());
                }
            }
        }
        created_dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        created_dirs.dedup();
        Self { saved, created_dirs, _lock: lock }
    }

    /// Fails with `what` when a policy file or directory differs from what was there.
    #[track_caller]
    pub(crate) fn assert_unchanged(&self, what: &str) {
        for (file, before) in &self.saved {
            let now = std::fs::read(file).ok();
            assert!(
                now == *before,
                "{what}: {} was written: {}",
                file.display(),
                String::from_utf8_lossy(now.as_deref().unwrap_or_default())
            );
        }
        for dir in &self.created_dirs {
            assert!(!dir.exists(), "{what}: {} was created", dir.display());
        }
    }
}

impl Drop for PolicyFiles {
    fn drop(&mut self) {
        for (file, before) in &self.saved {
            let _ = match before {
                Some(bytes) => std::fs::write(file, bytes),
                None => std::fs::remove_file(file)
                    .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }),
            };
        }
        for dir in &self.created_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
