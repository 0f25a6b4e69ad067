//! `devicetrust-ca dev` as a child process on 127.0.0.1, and clients of its API.
//!
//! [`DevCa`] starts the CA on a free port with a fresh data directory and parses the one JSON
//! line it prints once it accepts connections. [`Admin`] calls the admin API with the admin
//! token in the `Authorization` header, and calls the mutual-TLS endpoints (verify,
//! certificate status) with an identity taken from an agent's store, so that a test can
//! check what the CA thinks of any certificate the agent holds or held.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use ca_client::protocol::{DeviceRecord, Event, EventsResponse, RevokeResponse, VerifyResponse};
use ca_client::signer::SoftwareKey;
use ca_client::tls::ClientIdentity;
use tempfile::TempDir;
use url::Url;

use super::binaries::binaries;
use testkit::{DevCaCommand, DevCaProcess, HANG_LIMIT};

pub use testkit::DevInfo;

/// A running `devicetrust-ca dev`; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct DevCa {
    process: DevCaProcess,
    stderr: PathBuf,
    extra: Vec<String>,
    // Dropped after the guard (fields drop in order): the CA stops before its files go.
    dir: TempDir,
}

impl DevCa {
    /// Starts a CA in a new temporary data directory; every device counts as managed.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts a CA with extra `dev` arguments (e.g. `--managed-devices FILE`).
    pub fn start_with_args(extra: &[&str]) -> Self {
        let dir =
            tempfile::Builder::new().prefix("devicetrust-ca-").tempdir().expect("a temporary directory");
        let stderr = dir.path().join("ca.stderr");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let process = spawn(dir.path(), &stderr, &extra);
        Self { process, stderr, extra, dir }
    }

    /// Stops the CA and starts it again on the same data directory: the same issuing CA,
    /// tokens and database, on a new port (so `info().url` changes).
    pub fn restart(&mut self) {
        self.stop();
        self.process = spawn(self.dir.path(), &self.stderr, &self.extra);
    }

    /// What it printed when ready (after [`DevCa::restart`], the new process's line).
    pub fn info(&self) -> &DevInfo {
        &self.process.info
    }

    /// Everything the CA wrote on stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Stops the CA (SIGTERM, as an operator would) and returns how it ended.
    pub fn stop(&mut self) -> ExitStatus {
        self.process.stop(Duration::from_secs(15))
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// A client of the admin and mutual-TLS endpoints.
    pub fn admin(&self) -> Admin {
        Admin::new(self.info())
    }
}

/// Starts `devicetrust-ca dev` on `dir/data`, appending its stderr to `stderr`, and waits for
/// its ready line.
fn spawn(dir: &Path, stderr: &Path, extra: &[String]) -> DevCaProcess {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    DevCaCommand {
        binary: &binaries().ca,
        data_dir: &dir.join("data"),
        stderr,
        extra: &extra,
        fd_limit: None,
    }
    .spawn()
}

/// An identity as the agent stores it: certificate, chain and PKCS#8 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    /// The directory it was read from.
    pub dir: PathBuf,
    /// `cert.pem`.
    pub certificate_pem: String,
    /// `chain.pem` (may be empty).
    pub chain_pem: String,
    /// `key.pem`, decoded to PKCS#8 DER.
    pub key_pkcs8_der: Vec<u8>,
}

impl StoredIdentity {
    /// Reads `cert.pem`, `chain.pem` and `key.pem` from an identity directory of the store.
    pub fn read(dir: &Path) -> Self {
        use rustls_pki_types::pem::PemObject as _;
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join(name).display()))
        };
        let key_pem = read("key.pem");
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{} is not a PKCS#8 PEM key: {e}", dir.join("key.pem").display()));
        Self {
            dir: dir.to_owned(),
            certificate_pem: read("cert.pem"),
            chain_pem: std::fs::read_to_string(dir.join("chain.pem")).unwrap_or_default(),
            key_pkcs8_der: key.secret_pkcs8_der().to_vec(),
        }
    }

    /// The parsed certificate.
    pub fn info(&self) -> ca_client::cert::CertificateInfo {
        ca_client::cert::CertificateInfo::from_pem(&self.certificate_pem)
            .expect("the stored certificate parses")
    }

    /// The serial number, lowercase hex.
    pub fn serial(&self) -> String {
        self.info().serial_number().to_owned()
    }

    fn client_identity(&self) -> ClientIdentity {
        let key = SoftwareKey::from_pkcs8_der(&self.key_pkcs8_der).expect("the stored key loads");
        let mut chain = ca_client::cert::certificates_from_pem(self.certificate_pem.as_bytes())
            .expect("the stored certificate is PEM");
        if !self.chain_pem.trim().is_empty() {
            chain.extend(
                ca_client::cert::certificates_from_pem(self.chain_pem.as_bytes()).expect("the chain is PEM"),
            );
        }
        ClientIdentity::new(chain, Arc::new(key)).expect("the stored certificate matches the stored key")
    }
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics, showing it, when it is not.
    #[track_caller]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("answer {} is not the expected JSON ({e}): {}", self.status, self.body)
        })
    }
}

/// A client of the CA: admin API (bearer admin token) and mutual-TLS calls.
#[derive(Debug)]
pub struct Admin {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: Url,
    cert_auth_domain: Url,
    token: String,
    bundle: Vec<u8>,
}

impl Admin {
    /// A client of the CA `info` describes.
    pub fn new(info: &DevInfo) -> Self {
        let bundle = std::fs::read(&info.ca_bundle).expect("the CA bundle is readable");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let http = Self::client(&bundle, None);
        Self {
            runtime,
            http,
            base: Url::parse(&info.url).expect("the CA url parses"),
            cert_auth_domain: Url::parse(&info.cert_auth_domain).expect("the cert-auth domain parses"),
            token: info.admin_token.clone(),
            bundle,
        }
    }

    fn client(bundle: &[u8], identity: Option<ClientIdentity>) -> reqwest::Client {
        let tls = ca_client::tls::client_config(Some(bundle), identity).expect("a TLS configuration");
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(HANG_LIMIT)
            .build()
            .expect("an HTTP client")
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.runtime.block_on(async {
            let response = request.send().await.expect("the CA answers");
            let status = response.status().as_u16();
            let body = response.text().await.expect("the CA's answer has a body");
            Answer { status, body }
        })
    }

    /// `GET url` of this CA (any listener), without credentials, trusting its TLS root.
    pub fn get(&self, url: &str) -> Answer {
        self.send(self.http.get(url))
    }

    fn admin_get(&self, path: &str) -> Answer {
        let url = self.base.join(path).expect("a valid path");
        self.send(self.http.get(url).bearer_auth(&self.token))
    }

    fn admin_post(&self, path: &str) -> Answer {
        let url = self.base.join(path).expect("a valid path");
        self.send(self.http.post(url).bearer_auth(&self.token))
    }

    /// `GET /api/v1/admin/devices/{udid}`; `None` for 404.
    pub fn device(&self, udid: &str) -> Option<DeviceRecord> {
        let answer = self.admin_get(&format!("/api/v1/admin/devices/{udid}"));
        match answer.status {
            404 => None,
            200 => Some(answer.json()),
            _ => panic!("device lookup of {udid}: unexpected answer {}: {}", answer.status, answer.body),
        }
    }

    /// `POST /api/v1/admin/users/{user}/revoke`: how many certificates were revoked.
    pub fn revoke_user(&self, user: &str) -> u64 {
        let answer = self.admin_post(&format!("/api/v1/admin/users/{user}/revoke"));
        assert_eq!(answer.status, 200, "revoking {user}: {}", answer.body);
        answer.json::<RevokeResponse>().revoked
    }

    /// `POST /api/v1/admin/devices/{udid}/revoke`: how many certificates were revoked.
    pub fn revoke_device(&self, udid: &str) -> u64 {
        let answer = self.admin_post(&format!("/api/v1/admin/devices/{udid}/revoke"));
        assert_eq!(answer.status, 200, "revoking device {udid}: {}", answer.body);
        answer.json::<RevokeResponse>().revoked
    }

    /// Every event of the system log, oldest first (paged with `after`).
    pub fn events(&self) -> Vec<Event> {
        let mut all: Vec<Event> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e.id);
            let answer = self.admin_get(&format!("/api/v1/admin/events?after={after}&limit=100"));
            assert_eq!(answer.status, 200, "events: {}", answer.body);
            let page = answer.json::<EventsResponse>().events;
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// `GET /api/v1/metadata?platform=linux` as raw text.
    pub fn metadata_text(&self) -> String {
        let url = self.base.join("/api/v1/metadata?platform=linux").expect("a valid path");
        let answer = self.send(self.http.get(url));
        assert_eq!(answer.status, 200, "metadata: {}", answer.body);
        answer.body
    }

    /// `GET {certAuthDomain}/api/v1/device-trust/verify` presenting `identity`, as an
    /// application would ask (JSON).
    pub fn verify_with(&self, identity: &StoredIdentity) -> (u16, VerifyResponse) {
        let http = Self::client(&self.bundle, Some(identity.client_identity()));
        let url = self.cert_auth_domain.join("/api/v1/device-trust/verify").expect("a valid path");
        let answer = self.send(http.get(url).header("accept", "application/json"));
        (answer.status, answer.json())
    }

    /// `GET /api/v1/certificate` presenting `identity`: the CA's view of it.
    pub fn certificate_status_with(&self, identity: &StoredIdentity) -> Answer {
        let http = Self::client(&self.bundle, Some(identity.client_identity()));
        let url = self.base.join("/api/v1/certificate").expect("a valid path");
        self.send(http.get(url).header("accept", "application/json"))
    }
}
