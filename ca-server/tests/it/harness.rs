//! Shared helpers: an in-process CA on 127.0.0.1 port 0 with a manual clock and a
//! scripted MDM, HTTPS clients with and without a client certificate, raw TLS requests for
//! what a well-behaved client would never send, and device keys with their CSRs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use ca_client::protocol::{DeviceInfo, EnrollRequest, IssuedCertificate, Platform};
use ca_server::Ca;
use ca_server::clock::ManualClock;
use ca_server::config::Config;
use ca_server::dev::{DevEnvironment, DevOptions, prepare};
use ca_server::mdm::{ManagedDeviceCheck, MdmError, MdmVerdict};
use ca_server::server::{Listeners, ServeError};
use ca_server::store::Store;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An MDM whose answers the test sets per serial number; unknown serials are managed.
#[derive(Debug, Default)]
pub(crate) struct ScriptedMdm {
    answers: Mutex<HashMap<String, Result<MdmVerdict, MdmError>>>,
}

impl ScriptedMdm {
    pub(crate) fn answer(&self, serial: &str, answer: Result<MdmVerdict, MdmError>) {
        self.answers.lock().expect("lock").insert(serial.to_owned(), answer);
    }
}

#[async_trait]
impl ManagedDeviceCheck for ScriptedMdm {
    async fn check(&self, serial_number: &str, _udid: &str) -> Result<MdmVerdict, MdmError> {
        self.answers.lock().expect("lock").get(serial_number).cloned().unwrap_or(Ok(MdmVerdict::Managed))
    }
}

/// A CA served in-process until dropped.
pub(crate) struct TestCa {
    pub(crate) env: DevEnvironment,
    pub(crate) ca: Arc<Ca>,
    pub(crate) clock: ManualClock,
    pub(crate) mdm: Arc<ScriptedMdm>,
    pub(crate) cert_auth_url: Option<String>,
    /// The relying parties' own listener, when the configuration asked for one.
    pub(crate) relying_party_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a CA whose dev config `tweak` may change first.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_full(tweak, false, None, None).await
    }

    /// Starts a CA with a second listener for the cert-auth domain.
    pub(crate) async fn start_with_cert_auth_listener() -> Self {
        Self::start_full(|_| {}, true, None, None).await
    }

    /// Starts a CA on another store.
    pub(crate) async fn start_with_store(store: Arc<dyn Store>) -> Self {
        Self::start_full(|_| {}, false, Some(store), None).await
    }

    /// Starts a CA that asks `mdm` instead of the scripted one.
    pub(crate) async fn start_with_mdm(
        tweak: impl FnOnce(&mut Config),
        mdm: Arc<dyn ManagedDeviceCheck>,
    ) -> Self {
        Self::start_full(tweak, false, None, Some(mdm)).await
    }

    async fn start_full(
        tweak: impl FnOnce(&mut Config),
        cert_auth: bool,
        store: Option<Arc<dyn Store>>,
        other_mdm: Option<Arc<dyn ManagedDeviceCheck>>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let options = DevOptions { data_dir: dir.path().join("data"), managed_devices: None };
        let mut env = prepare(&options, listener.local_addr().expect("addr")).expect("prepare");
        let second =
            if cert_auth { Some(TcpListener::bind("127.0.0.1:0").await.expect("bind")) } else { None };
        let cert_auth_url =
            second.as_ref().map(|l| format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port()));
        if let Some(url) = &cert_auth_url {
            env.config.server.cert_auth_domain = url.clone();
        }
        tweak(&mut env.config);
        // A relying-party listener when the tweak asked for one.
        let rp_listener = match env.config.relying_party.listen {
            Some(addr) => Some(TcpListener::bind(addr).await.expect("bind the relying-party listener")),
            None => None,
        };
        let relying_party_url = rp_listener
            .as_ref()
            .map(|l| format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port()));
        let clock = ManualClock::starting_now();
        let mdm = Arc::new(ScriptedMdm::default());
        let asked: Arc<dyn ManagedDeviceCheck> = other_mdm.unwrap_or_else(|| mdm.clone());
        let mut builder = Ca::builder(env.config.clone()).clock(Arc::new(clock.clone())).mdm(asked);
        if let Some(store) = store {
            builder = builder.store(store);
        }
        let ca = builder.build().await.expect("build the CA");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ca_server::serve_listeners(
            Listeners {
                main: listener,
                cert_auth: second,
                http: None,
                relying_party: rp_listener,
                ops: None,
            },
            ca.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            env,
            ca,
            clock,
            mdm,
            cert_auth_url,
            relying_party_url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.env.url)
    }

    pub(crate) fn enrollment_token(&self) -> &str {
        self.env.enrollment_token.expose()
    }

    pub(crate) fn admin_token(&self) -> &str {
        self.env.admin_token.expose()
    }

    pub(crate) fn issuer_pem(&self) -> String {
        std::fs::read_to_string(&self.env.issuer_certificate).expect("issuer pem")
    }

    pub(crate) fn issuer_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&self.env.issuer_certificate).expect("issuer der")
    }

    fn tls_roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.env.ca_bundle).expect("bundle") {
            roots.add(cert.expect("cert")).expect("root");
        }
        roots
    }

    /// A rustls client config trusting the dev TLS root, optionally with a client identity.
    pub(crate) fn tls_config(&self, identity: Option<(&str, &KeyPair)>) -> rustls::ClientConfig {
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(self.tls_roots());
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key)) => {
                let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert pem")];
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
                builder.with_client_auth_cert(chain, key).expect("client auth")
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// An HTTPS client without a client certificate.
    pub(crate) fn anonymous(&self) -> reqwest::Client {
        reqwest::Client::builder().use_preconfigured_tls(self.tls_config(None)).build().expect("client")
    }

    /// An HTTPS client without a client certificate whose connections come from `local`
    /// (another loopback address, such as 127.0.0.2: a second client host).
    pub(crate) fn anonymous_from(&self, local: std::net::IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.tls_config(None))
            .local_address(local)
            .build()
            .expect("client")
    }

    /// The SQLite database and its WAL, in bytes, after the WAL was checkpointed into the
    /// database and truncated: otherwise the CA's own background checkpoint, copying pages
    /// the migrations left in the WAL, would count them twice and look like growth.
    pub(crate) async fn database_bytes(&self) -> u64 {
        use sqlx::Connection as _;
        let db = self.env.data_dir.join("devicetrust-ca.sqlite3");
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("open the database");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.expect("checkpoint");
        conn.close().await.expect("close");
        ["", "-wal"]
            .iter()
            .map(|suffix| {
                let mut path = db.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).map_or(0, |m| m.len())
            })
            .sum()
    }

    /// An HTTPS client presenting `cert_pem` with `key`.
    pub(crate) fn with_identity(&self, cert_pem: &str, key: &KeyPair) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.tls_config(Some((cert_pem, key))))
            .build()
            .expect("client")
    }

    /// Sends raw bytes over TLS and returns the status and body of the answer.
    pub(crate) async fn raw(&self, request: &[u8]) -> (u16, String) {
        let port = self.env.config.server.listen.port();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config(None)));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        // The server may answer and close before reading everything; that is the point.
        let _ = tls.write_all(request).await;
        let _ = tls.flush().await;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    pub(crate) async fn enroll(&self, request: &EnrollRequest) -> reqwest::Response {
        self.anonymous()
            .post(self.url("/api/v1/enroll"))
            .bearer_auth(self.enrollment_token())
            .json(request)
            .send()
            .await
            .expect("enroll")
    }

    /// Enrolls and expects 201.
    pub(crate) async fn enroll_ok(&self, request: &EnrollRequest) -> IssuedCertificate {
        let response = self.enroll(request).await;
        assert_eq!(response.status(), 201, "enroll: {:?}", response.text().await);
        response.json().await.expect("issued")
    }

    pub(crate) async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.anonymous().get(self.url(path)).bearer_auth(self.admin_token()).send().await.expect("admin get")
    }

    pub(crate) async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.anonymous()
            .post(self.url(path))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("admin post")
    }

    /// The admin view of a device.
    pub(crate) async fn device_record(&self, udid: &str) -> ca_client::protocol::DeviceRecord {
        let response = self.admin_get(&format!("/api/v1/admin/devices/{udid}")).await;
        assert_eq!(response.status(), 200, "device {udid}");
        response.json().await.expect("device record")
    }

    /// Stops the server and waits until it has drained and closed the store.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A device: its identity and one key.
pub(crate) struct Device {
    pub(crate) udid: String,
    pub(crate) serial: String,
    pub(crate) user: String,
}

impl Device {
    pub(crate) fn new(n: u32) -> Self {
        Self {
            udid: format!("564D2C3F-0B5A-4F6B-9C1D-{n:012X}"),
            serial: format!("C02TEST{n:05}"),
            user: "alice".to_owned(),
        }
    }

    pub(crate) fn request(&self, key: &KeyPair) -> EnrollRequest {
        EnrollRequest {
            client_version: "1.0.0".into(),
            platform: Platform::Macos,
            device: DeviceInfo {
                udid: self.udid.clone(),
                serial_number: self.serial.clone(),
                display_name: "Alice's MacBook".into(),
                os_version: "14.5".into(),
            },
            user: self.user.clone(),
            csr: csr(key),
        }
    }
}

pub(crate) fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key")
}

/// Base64 DER CSR for `key`, with a subject and an extension the CA must ignore.
pub(crate) fn csr(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(vec!["ignored.example.com".to_owned()]).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, "ignored");
    let csr = params.serialize_request(key).expect("csr");
    base64::engine::general_purpose::STANDARD.encode(csr.der())
}

/// Runs a command that must succeed (bounded; a failure shows the command, how it ended,
/// its stdout and stderr); its stdout.
pub(crate) fn run(cmd: &mut std::process::Command) -> String {
    testkit::run(cmd).expect_success().stdout.clone()
}

/// An openssl-made CSR (base64 DER) for a key of `genpkey` algorithm options.
pub(crate) fn openssl_csr(dir: &Path, name: &str, genpkey: &[&str]) -> String {
    let key = dir.join(format!("{name}.key"));
    let der = dir.join(format!("{name}.csr"));
    run(std::process::Command::new("openssl").arg("genpkey").args(genpkey).arg("-out").arg(&key));
    run(std::process::Command::new("openssl")
        .args(["req", "-new", "-subj", "/CN=ignored", "-outform", "DER", "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&der));
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(der).expect("csr"))
}

/// Asserts an error answer of the contract and returns its message.
pub(crate) async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "want {status} {code}, got {got}: {text}");
    let body: ca_client::protocol::ErrorBody = serde_json::from_str(&text).expect("error body");
    assert_eq!(body.error.code.as_str(), code, "{text}");
    body.error.message
}

/// Events of the CA's log, oldest first.
pub(crate) async fn events(ca: &TestCa) -> Vec<ca_client::protocol::Event> {
    let response = ca.admin_get("/api/v1/admin/events?limit=1000").await;
    assert_eq!(response.status(), 200);
    response.json::<ca_client::protocol::EventsResponse>().await.expect("events").events
}
