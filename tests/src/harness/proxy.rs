//! Real reverse proxies in front of an app, consulting the CA: nginx and Caddy as child
//! processes on 127.0.0.1, each with a configuration generated into its own temporary
//! directory (pid file, logs and temp paths included, so nothing under `/etc` or
//! `/var` is read or written).
//!
//! Two kinds of site, as `docs/relying-parties.md` describes them:
//!
//! - [`Site::ForwardAuth`]: the proxy requests a client certificate without verifying it
//!   (nginx `ssl_verify_client optional_no_ca`, Caddy `client_auth { mode request }`), asks
//!   the CA's `/api/v1/relying-party/check` with its bearer secret and the certificate in
//!   its own header format (nginx `auth_request`, Caddy `forward_auth`), copies the
//!   `X-DeviceTrust-*` headers of a 200 to the app, and shows a "Security requirements"
//!   page with a "Learn more" link on 401 or 403.
//! - [`Site::MutualTls`] (nginx only): nginx verifies the certificate itself against the
//!   issuing CA (`ssl_verify_client on`) and asks the CA's OCSP responder at every
//!   handshake (`ssl_ocsp on`), answering with a page that names the certificate.
//!
//! Both proxies strip the `X-DeviceTrust-*` headers a browser sends before anything else,
//! so that a forged header never reaches the CA or the app.
//!
//! [`ServerTls`] makes the proxies' TLS server certificate (for `127.0.0.1` and
//! `localhost`) under a test root that the agent's NSS database then trusts. [`Proxy`]
//! stops the process group when dropped (see [`testkit::Guard`]).

use std::fmt;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

use testkit::{Guard, HANG_LIMIT};

/// The headers of the CA's 200 that the proxies copy to the app.
pub const COPIED_HEADERS: [&str; 5] = [
    "X-DeviceTrust-Device-Udid",
    "X-DeviceTrust-Device-Serial",
    "X-DeviceTrust-Certificate-Serial",
    "X-DeviceTrust-User",
    "X-DeviceTrust-Assertion",
];

/// What the refusal pages of both proxies say, for tests to look for.
pub const REFUSAL_TITLE: &str = "Security requirements";

/// How many fresh ports [`Proxy::start_on_free_port`] tries when another program takes the
/// one it picked between picking and binding.
const PORT_ATTEMPTS: usize = 5;

/// A TLS server certificate for `127.0.0.1` and `localhost` under a root of its own.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The root, PEM: what clients (the agent's NSS database, reqwest) trust.
    pub root: PathBuf,
    /// The server certificate, PEM.
    pub certificate: PathBuf,
    /// Its key, PKCS#8 PEM.
    pub key: PathBuf,
}

impl ServerTls {
    /// Generates the root and the server certificate into `dir`.
    pub fn generate(dir: &Path) -> Self {
        // rcgen's default validity (1975 to 4096) is fine: the root lives for one test run.
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a root key");
        let mut root = CertificateParams::default();
        root.distinguished_name = DistinguishedName::new();
        root.distinguished_name.push(DnType::CommonName, "DeviceTrust e2e proxy TLS root");
        root.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key).expect("the proxy TLS root");

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("server parameters");
        leaf.subject_alt_names.push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::from_params(&root, &root_key);
        let leaf_cert = leaf.signed_by(&key, &issuer).expect("the proxy TLS certificate");

        let tls = Self {
            root: dir.join("proxy-tls-root.pem"),
            certificate: dir.join("proxy-tls.pem"),
            key: dir.join("proxy-tls.key"),
        };
        std::fs::write(&tls.root, root_cert.pem()).expect("write the proxy TLS root");
        std::fs::write(&tls.certificate, leaf_cert.pem()).expect("write the proxy TLS certificate");
        std::fs::write(&tls.key, key.serialize_pem()).expect("write the proxy TLS key");
        tls
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bound, read, released). Another program
/// may take it before the proxy binds it: [`Proxy::start`] then says [`PortTaken`].
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("the bound address").port()
}

/// How a forward-auth proxy reaches the CA's check endpoint.
#[derive(Debug, Clone)]
pub struct CheckEndpoint {
    /// The CA's port on 127.0.0.1 (its cert-auth listener, where the check lives).
    pub ca_port: u16,
    /// PEM roots the proxy trusts for the CA's TLS (the dev CA's `caBundle`).
    pub ca_bundle: PathBuf,
    /// This relying party's bearer secret.
    pub secret: String,
}

/// What the proxy does with a request.
#[derive(Debug, Clone)]
pub enum Site {
    /// Ask the CA's check endpoint, then pass the request to `app` (`http://127.0.0.1:PORT`).
    ForwardAuth {
        /// The CA.
        check: CheckEndpoint,
        /// The app's base URL, plain HTTP on 127.0.0.1.
        app: String,
    },
    /// nginx verifies the certificate itself and asks the OCSP responder (nginx only).
    MutualTls {
        /// The issuing CA's certificate, PEM.
        issuer: PathBuf,
        /// The OCSP responder, e.g. `http://127.0.0.1:PORT/ocsp`.
        ocsp_responder: String,
    },
}

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nginx (Debian package `nginx`).
    Nginx,
    /// Caddy (Debian package `caddy`).
    Caddy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nginx => "nginx",
            Self::Caddy => "caddy",
        })
    }
}

/// A proxy to start.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// nginx or Caddy.
    pub kind: Kind,
    /// What it does.
    pub site: Site,
    /// The refusal page's "Learn more" link when the CA's answer carries none.
    pub learn_more: String,
}

/// The port was taken by someone else between [`free_port`] and the proxy's bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTaken(pub u16);

/// A running proxy; its process group is stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Which proxy.
    pub kind: Kind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `https://127.0.0.1:PORT`, as a Chrome URL pattern and as a base URL.
    pub origin: String,
    /// The configuration it runs with, for failure messages.
    pub config: String,
    guard: Guard,
    log: PathBuf,
    // Dropped after the guard: the process stops before its files go.
    dir: TempDir,
}

impl Proxy {
    /// Starts `spec` on `port` (chosen by the caller, e.g. because the CA's configuration
    /// already names the origin); `Err(PortTaken)` when another program holds the port.
    /// Panics, with the proxy's log and configuration, on any other failure to start.
    pub fn start(spec: &ProxySpec, tls: &ServerTls, port: u16) -> Result<Self, PortTaken> {
        let dir =
            tempfile::Builder::new().prefix(&format!("devicetrust-{}-", spec.kind)).tempdir().expect("a dir");
        // nginx's workers run as `nobody` when the master is root; they must be able to reach
        // the temp paths inside this directory.
        set_mode(dir.path(), 0o755);
        let origin = format!("https://127.0.0.1:{port}");
        let (config, config_file, log, mut command) = match spec.kind {
            Kind::Nginx => {
                let config = nginx_config(dir.path(), spec, tls, port);
                let file = dir.path().join("nginx.conf");
                let log = dir.path().join("error.log");
                let mut command = Command::new("nginx");
                command
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&file)
                    .arg("-e")
                    .arg(&log)
                    .args(["-g", "daemon off;"])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("a stderr file"));
                (config, file, log, command)
            }
            Kind::Caddy => {
                let config = caddy_config(dir.path(), spec, tls, port);
                let file = dir.path().join("Caddyfile");
                let log = dir.path().join("caddy.log");
                let mut command = Command::new("caddy");
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path().join("config"))
                    .env("XDG_DATA_HOME", dir.path().join("data"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).expect("a log file"));
                (config, file, log, command)
            }
        };
        std::fs::write(&config_file, &config).expect("write the proxy configuration");
        command.stdin(Stdio::null()).current_dir(dir.path());
        let guard = Guard::spawn(&mut command, format!("{} on {origin}", spec.kind));
        let mut proxy = Self { kind: spec.kind, port, origin, config, guard, log, dir };
        proxy.wait_ready()?;
        Ok(proxy)
    }

    /// Starts `spec` on a free port, trying a few fresh ports when one is taken meanwhile.
    pub fn start_on_free_port(spec: &ProxySpec, tls: &ServerTls) -> Self {
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            match Self::start(spec, tls, free_port()) {
                Ok(proxy) => return proxy,
                Err(PortTaken(port)) => taken.push(port),
            }
        }
        panic!("{}: every port tried was taken by another program: {taken:?}", spec.kind);
    }

    /// Waits until the proxy has bound its port: nginx writes its pid file after binding,
    /// Caddy logs "serving initial configuration" once its servers run.
    fn wait_ready(&mut self) -> Result<(), PortTaken> {
        let deadline = Instant::now() + HANG_LIMIT;
        loop {
            if !self.guard.is_running() {
                let log = self.log();
                if log.contains("already in use") {
                    return Err(PortTaken(self.port));
                }
                panic!("{} exited at start\n{}", self.guard.what(), self.describe());
            }
            let ready = match self.kind {
                Kind::Nginx => std::fs::read_to_string(self.dir.path().join("nginx.pid"))
                    .ok()
                    .is_some_and(|pid| pid.trim() == self.guard_pid().to_string()),
                Kind::Caddy => self.log().contains("serving initial configuration"),
            };
            if ready && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not get ready within {HANG_LIMIT:?}\n{}",
                self.guard.what(),
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn guard_pid(&mut self) -> u32 {
        self.guard.child_mut().id()
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The proxy's log so far (nginx's `error_log`, Caddy's stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The configuration and the log, for failure messages.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "--- {} configuration\n{}\n--- {} log\n{}",
            self.kind,
            self.config,
            self.kind,
            self.log()
        );
        if self.kind == Kind::Nginx {
            let stderr = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
            text.push_str(&format!("\n--- nginx stderr\n{stderr}"));
            let access = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
            text.push_str(&format!("\n--- nginx access log\n{access}"));
        }
        text.push_str("\n---");
        text
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// nginx's configuration: one server on `port`, every path inside `dir`.
fn nginx_config(dir: &Path, spec: &ProxySpec, tls: &ServerTls, port: u16) -> String {
    let d = dir.display();
    let mut text = format!(
        "# Generated by the DeviceTrust end-to-end tests.\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         \x20 access_log {d}/access.log;\n\
         \x20 client_body_temp_path {d}/client_body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         {map}\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port} ssl;\n\
         \x20   ssl_certificate {cert};\n\
         \x20   ssl_certificate_key {key};\n",
        cert = tls.certificate.display(),
        key = tls.key.display(),
        map = match spec.site {
            // Evaluated when the page is rendered, after the check has set $dt_learn_more.
            Site::ForwardAuth { .. } => format!(
                "  # The CA's Learn-More header when it sends one, else this site's own link.\n  \
                 map $dt_learn_more $dt_learn_more_link {{ \"\" \"{}\"; default $dt_learn_more; }}\n",
                spec.learn_more
            ),
            Site::MutualTls { .. } => String::new(),
        },
    );
    match &spec.site {
        Site::ForwardAuth { check, app } => {
            let mut set_vars = String::new();
            let mut pass_headers = String::new();
            for (i, header) in COPIED_HEADERS.iter().enumerate() {
                let upstream = header.to_ascii_lowercase().replace('-', "_");
                set_vars.push_str(&format!("      auth_request_set $dt_{i} $upstream_http_{upstream};\n"));
                // Always set, so that whatever the browser sent under that name is replaced
                // (an empty value removes the header).
                pass_headers.push_str(&format!("      proxy_set_header {header} $dt_{i};\n"));
            }
            text.push_str(&format!(
                "    # Ask for a certificate, verify nothing: the CA decides.\n\
                 \x20   ssl_verify_client optional_no_ca;\n\
                 \x20   location / {{\n\
                 \x20     auth_request /_devicetrust/check;\n\
                 {set_vars}\
                 \x20     auth_request_set $dt_error $upstream_http_x_devicetrust_error;\n\
                 \x20     auth_request_set $dt_learn_more $upstream_http_x_devicetrust_learn_more;\n\
                 {pass_headers}\
                 \x20     proxy_set_header X-DeviceTrust-Client-Cert \"\";\n\
                 \x20     proxy_pass {app};\n\
                 \x20     error_page 401 = @refused_401;\n\
                 \x20     error_page 403 = @refused_403;\n\
                 \x20   }}\n\
                 \x20   location = /_devicetrust/check {{\n\
                 \x20     internal;\n\
                 \x20     proxy_pass https://127.0.0.1:{ca_port}/api/v1/relying-party/check;\n\
                 \x20     proxy_pass_request_body off;\n\
                 \x20     proxy_set_header Content-Length \"\";\n\
                 \x20     # Replaces whatever the browser sent under these names.\n\
                 \x20     proxy_set_header X-DeviceTrust-Client-Cert $ssl_client_escaped_cert;\n\
                 \x20     proxy_set_header X-DeviceTrust-User \"\";\n\
                 \x20     proxy_set_header Authorization \"Bearer {secret}\";\n\
                 \x20     proxy_ssl_trusted_certificate {bundle};\n\
                 \x20     proxy_ssl_verify on;\n\
                 \x20     # nginx matches this against DNS names only (not IP SANs); the dev CA's\n\
                 \x20     # certificate names localhost.\n\
                 \x20     proxy_ssl_name localhost;\n\
                 \x20   }}\n\
                 {refused_401}{refused_403}",
                ca_port = check.ca_port,
                secret = check.secret,
                bundle = check.ca_bundle.display(),
                refused_401 = nginx_refusal("@refused_401", 401, "$dt_error", "$dt_learn_more_link"),
                refused_403 = nginx_refusal("@refused_403", 403, "$dt_error", "$dt_learn_more_link"),
            ));
        }
        Site::MutualTls { issuer, ocsp_responder } => {
            text.push_str(&format!(
                "    # nginx verifies the certificate and asks the OCSP responder at every\n\
                 \x20   # handshake (no ssl_ocsp_cache: a revocation shows at once).\n\
                 \x20   ssl_verify_client on;\n\
                 \x20   ssl_client_certificate {issuer};\n\
                 \x20   ssl_verify_depth 1;\n\
                 \x20   ssl_ocsp on;\n\
                 \x20   ssl_ocsp_responder {ocsp_responder};\n\
                 \x20   error_page 495 = @refused_495;\n\
                 \x20   error_page 496 = @refused_496;\n\
                 \x20   location / {{\n\
                 \x20     default_type \"text/html; charset=utf-8\";\n\
                 \x20     add_header Cache-Control no-store always;\n\
                 \x20     return 200 '<!doctype html><title>Admitted</title><h1>Admitted by nginx mutual TLS</h1>\
                 <p id=\"serial\">$ssl_client_serial</p><p id=\"verify\">$ssl_client_verify</p>\\n';\n\
                 \x20   }}\n\
                 {refused_495}{refused_496}",
                issuer = issuer.display(),
                refused_495 = nginx_refusal("@refused_495", 403, "$ssl_client_verify", &spec.learn_more),
                refused_496 = nginx_refusal("@refused_496", 401, "no client certificate", &spec.learn_more),
            ));
        }
    }
    text.push_str("  }\n}\n");
    text
}

/// A named location answering `status` with the refusal page; `code` and `link` may be
/// variables.
fn nginx_refusal(name: &str, status: u16, code: &str, link: &str) -> String {
    format!(
        "    location {name} {{\n\
         \x20     default_type \"text/html; charset=utf-8\";\n\
         \x20     add_header Cache-Control no-store always;\n\
         \x20     return {status} '<!doctype html><title>{REFUSAL_TITLE}</title><h1>{REFUSAL_TITLE}</h1>\
         <p>This app is only for managed devices.</p><p id=\"code\">{code}</p>\
         <p><a href=\"{link}\">Learn more</a></p>\\n';\n\
         \x20   }}\n"
    )
}

/// Caddy's configuration: one site on `port`, storage and state inside `dir`.
fn caddy_config(dir: &Path, spec: &ProxySpec, tls: &ServerTls, port: u16) -> String {
    let Site::ForwardAuth { check, app } = &spec.site else {
        panic!("the mutual-TLS site is an nginx recipe; Caddy runs forward_auth only")
    };
    let app = app.trim_start_matches("http://");
    let strip: String = COPIED_HEADERS
        .iter()
        .chain(["X-DeviceTrust-Client-Cert"].iter())
        .map(|h| format!("\t\trequest_header -{h}\n"))
        .collect();
    format!(
        "# Generated by the DeviceTrust end-to-end tests.\n\
         {{\n\
         \tadmin off\n\
         \tauto_https off\n\
         \tstorage file_system {storage}\n\
         \t# Browsers send no SNI for an IP address: use this site's TLS policy (client_auth) anyway.\n\
         \tdefault_sni 127.0.0.1\n\
         \tservers {{\n\
         \t\tprotocols h1 h2\n\
         \t\t# The host check compares Host with SNI, which is empty for an IP address.\n\
         \t\tstrict_sni_host insecure_off\n\
         \t}}\n\
         }}\n\
         https://127.0.0.1:{port} {{\n\
         \tbind 127.0.0.1\n\
         \ttls {cert} {key} {{\n\
         \t\t# Ask for a certificate, verify nothing: the CA decides.\n\
         \t\tclient_auth {{\n\
         \t\t\tmode request\n\
         \t\t}}\n\
         \t}}\n\
         \troute {{\n\
         \t\t# Whatever the browser sent under these names never reaches the CA or the app.\n\
         {strip}\
         \t\tforward_auth 127.0.0.1:{ca_port} {{\n\
         \t\t\turi /api/v1/relying-party/check\n\
         \t\t\theader_up X-DeviceTrust-Client-Cert {{http.request.tls.client.certificate_der_base64}}\n\
         \t\t\theader_up Authorization \"Bearer {secret}\"\n\
         \t\t\tcopy_headers {copied}\n\
         \t\t\ttransport http {{\n\
         \t\t\t\ttls\n\
         \t\t\t\ttls_trusted_ca_certs {bundle}\n\
         \t\t\t\ttls_server_name 127.0.0.1\n\
         \t\t\t}}\n\
         \t\t\t@refused status 401 403\n\
         \t\t\thandle_response @refused {{\n\
         \t\t\t\theader Content-Type \"text/html; charset=utf-8\"\n\
         \t\t\t\theader Cache-Control no-store\n\
         \t\t\t\t# Placeholders of response headers use Go's canonical case.\n\
         \t\t\t\trespond `<!doctype html><title>{REFUSAL_TITLE}</title><h1>{REFUSAL_TITLE}</h1>\
         <p>This app is only for managed devices.</p><p id=\"code\">{{rp.header.X-Devicetrust-Error}}</p>\
         <p><a href=\"{learn_more}\">Learn more</a></p>` {{rp.status_code}}\n\
         \t\t\t}}\n\
         \t\t}}\n\
         \t\treverse_proxy {app}\n\
         \t}}\n\
         }}\n",
        storage = dir.join("storage").display(),
        cert = tls.certificate.display(),
        key = tls.key.display(),
        ca_port = check.ca_port,
        secret = check.secret,
        copied = COPIED_HEADERS.join(" "),
        bundle = check.ca_bundle.display(),
        learn_more = spec.learn_more,
    )
}
