//! The relying-party kit end to end, with real proxies and a real browser: `devicetrust-ca
//! dev` with relying parties and its plain-HTTP listener, the agent enrolled in a temporary
//! home, nginx (`auth_request`) and Caddy (`forward_auth`) in front of the demo app, nginx
//! doing mutual TLS with `ssl_ocsp` itself, headless Chromium with the managed policy the
//! agent writes, `openssl ocsp`, and Node `jose` (a JOSE library other than the signer's).
//!
//! One CA, one enrollment and one set of proxies serve every scenario, in order: admitted
//! through each proxy; the demo app refuses assertions that do not verify; a forged
//! certificate header gets nothing through either proxy; the check endpoint refuses a
//! caller without the relying-party secret or from a disallowed address; the assertion
//! verifies with `jose`; OCSP says good; then the admin revokes the device and every path
//! refuses it, and OCSP says revoked.
//!
//! Needs root (the managed policy lives under `/etc`), `chromium`, `certutil`, `nginx`,
//! `caddy`, `openssl`, `node` and `tests/js/node_modules/jose`; `scripts/test.sh` installs
//! them.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use testkit::{Finished, HANG_LIMIT, run_bounded};
use tests::harness::agent::AgentHome;
use tests::harness::browser::{PageLoad, SystemPolicy, chromium_dump_dom, trust_tls_root};
use tests::harness::ca::DevCa;
use tests::harness::demo_app::{DemoApp, DemoAppOptions};
use tests::harness::proxy::{
    CheckEndpoint, Kind, PortTaken, Proxy, ProxySpec, REFUSAL_TITLE, ServerTls, Site, free_port,
};
use tests::harness::require_root;

const ISSUER_CN: &str = "MTLS Certificate Authority";
const UDID: &str = "E2E-RELYING-PARTY-0001";
/// Decisions are cached this long; a revocation must show within it (it drops the entry).
const DECISION_CACHE_SECS: u64 = 1;
/// How often a refused request is retried after the revocation, one second apart: well past
/// the cache lifetime, so that a slow machine is not mistaken for a stale cache.
const REFUSAL_ATTEMPTS: usize = 5;
const LEARN_MORE: &str = "https://127.0.0.1/device-trust-help";

#[test]
fn proxies_admit_the_enrolled_device_and_refuse_it_once_revoked() {
    require_root("`install --system` writes Chromium's managed policy under /etc");
    let jose = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/jose");
    assert!(
        jose.is_dir(),
        "{} is missing: run scripts/test.sh (or `npm ci --prefix tests/js`)",
        jose.display()
    );
    let work = tempfile::Builder::new().prefix("devicetrust-rp-").tempdir().expect("a temporary directory");
    let tls = ServerTls::generate(work.path());
    let rig = Rig::start(work.path(), &tls);
    let ca = &rig.ca;
    let admin = ca.admin();
    let http_url = ca.info().http_url.clone().expect("the ready line has httpUrl with --http-listen");

    // The metadata lists the proxies' origins; the agent enrolls and writes one policy
    // entry per origin.
    let metadata: serde_json::Value = serde_json::from_str(&admin.metadata_text()).expect("metadata JSON");
    for proxy in rig.proxies() {
        assert!(
            metadata["protectedOrigins"].as_array().is_some_and(|o| o.iter().any(|v| v == &proxy.origin)),
            "the metadata lists {}: {metadata:#}",
            proxy.origin
        );
    }
    let agent = AgentHome::new(ca, UDID);
    agent.run_with_token(&["enroll", "--token-stdin"], &ca.info().enrollment_token).expect_code(0);
    let identity = agent.current_identity().expect("an identity after enroll");
    let serial = identity.serial();
    let policy = SystemPolicy::guard();
    policy.install(&agent).expect_code(0);
    let written = std::fs::read_to_string(policy.chromium_file()).expect("the agent wrote Chromium's policy");
    let policy_json: serde_json::Value = serde_json::from_str(&written).expect("the policy file is JSON");
    let entries: Vec<serde_json::Value> = policy_json["AutoSelectCertificateForUrls"]
        .as_array()
        .expect("a list of entries")
        .iter()
        .filter_map(|e| e.as_str())
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    for proxy in rig.proxies() {
        assert!(
            entries.iter().any(|e| e["pattern"] == proxy.origin && e["filter"]["ISSUER"]["CN"] == ISSUER_CN),
            "the agent's policy has an entry for {} with the issuer filter: {written}",
            proxy.origin
        );
    }
    trust_tls_root(&agent.nss_dir(), &ca.info().ca_bundle, "devicetrust-e2e-ca-tls-root");
    trust_tls_root(&agent.nss_dir(), &tls.root, "devicetrust-e2e-proxy-tls-root");
    let client = Client::new(&[&ca.info().ca_bundle, &tls.root]);

    // 1. Admitted: Chromium presents the certificate, the proxy asks the CA, the app shows
    // the device from the verified assertion.
    for proxy in [&rig.nginx, &rig.caddy] {
        let page = chromium(&agent, proxy, "/hello");
        let dom = page.dom();
        assert!(
            dom.contains(&format!("data-udid=\"{UDID}\"")) && dom.contains(&serial),
            "through {}, the app shows the device {UDID} and certificate {serial} from a verified \
             assertion\n{}\n{}\n--- demo app\n{}\n--- CA\n{}",
            proxy.kind,
            page.finished,
            proxy.describe(),
            rig.app.stderr(),
            ca.stderr()
        );
    }
    let page = chromium(&agent, &rig.mtls, "/");
    assert!(
        page.dom().contains("Admitted by nginx mutual TLS")
            && same_serial(&between(page.dom(), "<p id=\"serial\">", "</p>"), &serial),
        "nginx with ssl_verify_client on and ssl_ocsp admits the certificate {serial}\n{}\n{}",
        page.finished,
        rig.mtls.describe()
    );

    // 2. The app trusts only a verified assertion.
    let missing = client.get(&format!("{}/", rig.app.url), &[], None);
    assert_eq!(missing.status, 401, "no assertion: {missing:?}");
    assert!(missing.body.contains("no device assertion"), "{missing:?}");
    let garbage =
        client.get(&format!("{}/", rig.app.url), &[("X-DeviceTrust-Assertion", "e30.e30.AAAA")], None);
    assert_eq!(garbage.status, 401, "a token that is not the CA's: {garbage:?}");
    assert!(garbage.body.contains(REFUSAL_TITLE), "{garbage:?}");

    // 3. The check endpoint: the relying-party secret first, then the source address.
    let check = format!("{}/api/v1/relying-party/check", ca.info().cert_auth_domain.trim_end_matches('/'));
    let pem_header = escape_uri_component(&identity.certificate_pem);
    let cert_header = [("X-DeviceTrust-Client-Cert", pem_header.as_str())];
    let no_secret = client.get(&check, &cert_header, None);
    assert_refused(&no_secret, 401, "invalid_token", "no relying-party secret");
    let wrong = client.get(
        &check,
        &[cert_header[0], ("Authorization", "Bearer not-the-secret-of-anyone-0000000000")],
        None,
    );
    assert_refused(&wrong, 401, "invalid_token", "a wrong secret");
    let restricted_auth = format!("Bearer {}", rig.secrets.restricted);
    let restricted = [cert_header[0], ("Authorization", restricted_auth.as_str())];
    let elsewhere = client.get(&check, &restricted, None);
    assert_refused(
        &elsewhere,
        401,
        "invalid_token",
        "the secret of a relying party allowed from 127.0.0.2 only, from 127.0.0.1",
    );
    let allowed = client.get(&check, &restricted, Some([127, 0, 0, 2]));
    assert_eq!(allowed.status, 200, "the same request from 127.0.0.2 is admitted: {allowed:?}");
    let nginx_auth = format!("Bearer {}", rig.secrets.nginx);
    let admitted = client.get(&check, &[cert_header[0], ("Authorization", nginx_auth.as_str())], None);
    assert_eq!(admitted.status, 200, "{admitted:?}");
    assert_eq!(admitted.header("x-devicetrust-device-udid"), Some(UDID), "{admitted:?}");
    assert_eq!(admitted.header("x-devicetrust-certificate-serial"), Some(serial.as_str()), "{admitted:?}");
    let assertion = admitted.header("x-devicetrust-assertion").expect("an assertion").to_owned();

    // 4. A browser forging the proxy's certificate header (with the enrolled certificate,
    // which is public, and a genuine assertion captured earlier) gets nothing.
    let der = ca_client::cert::certificates_from_pem(identity.certificate_pem.as_bytes()).expect("PEM");
    let der_header = base64::engine::general_purpose::STANDARD.encode(der[0].as_ref());
    for (proxy, forged) in [(&rig.nginx, pem_header.as_str()), (&rig.caddy, der_header.as_str())] {
        let answer = client.get(
            &proxy.url("/hello"),
            &[("X-DeviceTrust-Client-Cert", forged), ("X-DeviceTrust-Assertion", assertion.as_str())],
            None,
        );
        assert_eq!(
            answer.status,
            401,
            "a forged header through {}: {answer:?}\n{}",
            proxy.kind,
            proxy.describe()
        );
        assert!(
            answer.body.contains(REFUSAL_TITLE)
                && answer.body.contains("client_certificate_required")
                && answer.body.contains("Learn more")
                && !answer.body.contains(UDID),
            "{} shows the refusal page, not the app: {answer:?}",
            proxy.kind
        );
    }

    // 5. The assertion verifies with Node `jose` against the CA's JWKS.
    let jwks = format!("{}/.well-known/jwks.json", http_url.trim_end_matches('/'));
    let verified = node_verify(&jwks, &assertion, &ca.info().cert_auth_domain, "nginx");
    verified.expect_code(0);
    let payload: serde_json::Value = serde_json::from_str(verified.stdout.trim()).expect("jose prints JSON");
    assert_eq!(payload["header"]["alg"], "ES256", "{payload:#}");
    assert!(payload["header"]["kid"].is_string(), "{payload:#}");
    assert_eq!(payload["payload"]["sub"], UDID, "{payload:#}");
    assert_eq!(payload["payload"]["cert_serial"], serial.as_str(), "{payload:#}");
    assert_eq!(payload["payload"]["device_serial"], agent.serial.as_str(), "{payload:#}");
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(der[0].as_ref()));
    assert_eq!(payload["payload"]["cnf"]["x5t#S256"], thumbprint, "{payload:#}");
    node_verify(&jwks, &assertion, &ca.info().cert_auth_domain, "caddy").expect_code(1);

    // 6. OCSP: good, and the response verifies against the issuer.
    let leaf = work.path().join("leaf.pem");
    std::fs::write(&leaf, &identity.certificate_pem).expect("write the leaf");
    let ocsp_url = format!("{}/ocsp", http_url.trim_end_matches('/'));
    let good = openssl_ocsp(&ca.info().issuer_certificate, &leaf, &ocsp_url);
    let text = format!("{}{}", good.stdout, good.stderr);
    assert!(
        text.contains("Response verify OK") && text.contains(&format!("{}: good", leaf.display())),
        "{good}"
    );

    // The admin revokes the device.
    assert!(admin.revoke_device(UDID) >= 1);

    // 7. Every path refuses it, within the cache lifetime.
    for proxy in [&rig.nginx, &rig.caddy] {
        let page = retry_until(|| chromium(&agent, proxy, "/hello"), |p| p.dom().contains(REFUSAL_TITLE));
        let dom = page.dom();
        assert!(
            dom.contains("certificate_revoked") && dom.contains("Learn more") && !dom.contains("data-udid"),
            "after the revocation {} refuses the device\n{}\n{}",
            proxy.kind,
            page.finished,
            proxy.describe()
        );
    }
    let page = retry_until(|| chromium(&agent, &rig.mtls, "/"), |p| p.dom().contains(REFUSAL_TITLE));
    assert!(
        page.dom().contains("revoked") && !page.dom().contains("Admitted"),
        "after the revocation nginx's OCSP check refuses the certificate\n{}\n{}",
        page.finished,
        rig.mtls.describe()
    );
    let refused = client.get(&check, &[cert_header[0], ("Authorization", nginx_auth.as_str())], None);
    assert_refused(&refused, 403, "certificate_revoked", "a revoked certificate");

    // 8. OCSP: revoked, with time and reason, and still a response that verifies. (The
    // reason of an admin revocation is privilegeWithdrawn, 9, which OpenSSL's reason table
    // does not name: it prints "Reason: (UNKNOWN)".)
    let revoked = openssl_ocsp(&ca.info().issuer_certificate, &leaf, &ocsp_url);
    let text = format!("{}{}", revoked.stdout, revoked.stderr);
    assert!(
        text.contains("Response verify OK")
            && text.contains(&format!("{}: revoked", leaf.display()))
            && text.contains("Revocation Time:")
            && text.contains("Reason:"),
        "{revoked}"
    );
}

/// The relying parties' secrets.
#[derive(Debug)]
struct Secrets {
    nginx: String,
    caddy: String,
    restricted: String,
}

/// The CA, the demo app and the three proxies, started together so that the CA's
/// `protected_origins` name the proxies' ports.
#[derive(Debug)]
struct Rig {
    // Fields drop in order: proxies first, then the app, then the CA.
    nginx: Proxy,
    caddy: Proxy,
    mtls: Proxy,
    app: DemoApp,
    ca: DevCa,
    secrets: Secrets,
}

impl Rig {
    fn proxies(&self) -> [&Proxy; 3] {
        [&self.nginx, &self.caddy, &self.mtls]
    }

    /// Picks three ports, writes the relying parties naming them, starts the CA, the app and
    /// the proxies; starts over (a bounded number of times) when another program took one of
    /// the ports meanwhile.
    fn start(dir: &Path, tls: &ServerTls) -> Self {
        let mut taken = Vec::new();
        for attempt in 0..3 {
            match Self::try_start(&dir.join(format!("rig-{attempt}")), tls) {
                Ok(rig) => return rig,
                Err(PortTaken(port)) => taken.push(port),
            }
        }
        panic!("the proxies' ports were taken by other programs every time: {taken:?}");
    }

    fn try_start(dir: &Path, tls: &ServerTls) -> Result<Self, PortTaken> {
        std::fs::create_dir_all(dir).expect("the rig directory");
        let ports = [free_port(), free_port(), free_port()];
        let secrets = Secrets { nginx: random_secret(), caddy: random_secret(), restricted: random_secret() };
        for (name, secret) in
            [("nginx", &secrets.nginx), ("caddy", &secrets.caddy), ("restricted", &secrets.restricted)]
        {
            let file = dir.join(format!("{name}.secret"));
            std::fs::write(&file, secret).expect("a secret file");
            // The CA refuses a secret file that others can read.
            std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod 600 the secret file");
        }
        let origins: Vec<String> = ports.iter().map(|p| format!("\"https://127.0.0.1:{p}\"")).collect();
        let relying_parties = dir.join("relying-parties.toml");
        std::fs::write(
            &relying_parties,
            format!(
                "# Written by tests/tests/relying_party.rs.\n\
                 protected_origins = [{origins}]\n\
                 decision_cache_secs = {DECISION_CACHE_SECS}\n\
                 assertion_lifetime_secs = 300\n\
                 \n\
                 [[clients]]\n\
                 name = \"nginx\"\n\
                 secret = {{ file = \"nginx.secret\" }}\n\
                 proxy = \"nginx\"\n\
                 allowed_sources = [\"127.0.0.1\"]\n\
                 \n\
                 [[clients]]\n\
                 name = \"caddy\"\n\
                 secret = {{ file = \"caddy.secret\" }}\n\
                 proxy = \"caddy\"\n\
                 \n\
                 # Allowed from an address the proxies never use: its secret alone is not enough.\n\
                 [[clients]]\n\
                 name = \"restricted\"\n\
                 secret = {{ file = \"restricted.secret\" }}\n\
                 proxy = \"nginx\"\n\
                 allowed_sources = [\"127.0.0.2\"]\n",
                origins = origins.join(", "),
            ),
        )
        .expect("the relying parties file");
        let ca = DevCa::start_with_args(&[
            "--relying-parties",
            &relying_parties.to_string_lossy(),
            "--http-listen",
            "127.0.0.1:0",
        ]);
        let http_url = ca.info().http_url.clone().expect("the ready line has httpUrl with --http-listen");
        let app = DemoApp::start(
            Path::new(env!("CARGO_BIN_EXE_devicetrust-demo-app")),
            &DemoAppOptions {
                jwks_url: format!(
                    "{}/.well-known/jwks.json",
                    ca.info().cert_auth_domain.trim_end_matches('/')
                ),
                ca_bundle: Some(ca.info().ca_bundle.clone()),
                issuer: ca.info().cert_auth_domain.clone(),
                audiences: vec!["nginx".to_owned(), "caddy".to_owned()],
            },
        );
        let ca_port = url::Url::parse(&ca.info().cert_auth_domain)
            .ok()
            .and_then(|u| u.port())
            .expect("the cert-auth domain has a port");
        let check = |secret: &str| CheckEndpoint {
            ca_port,
            ca_bundle: ca.info().ca_bundle.clone(),
            secret: secret.to_owned(),
        };
        let forward_auth = |kind, secret: &str| ProxySpec {
            kind,
            site: Site::ForwardAuth { check: check(secret), app: app.url.clone() },
            learn_more: LEARN_MORE.to_owned(),
        };
        let nginx = Proxy::start(&forward_auth(Kind::Nginx, &secrets.nginx), tls, ports[0])?;
        let caddy = Proxy::start(&forward_auth(Kind::Caddy, &secrets.caddy), tls, ports[1])?;
        let mtls_spec = ProxySpec {
            kind: Kind::Nginx,
            site: Site::MutualTls {
                issuer: ca.info().issuer_certificate.clone(),
                ocsp_responder: format!("{}/ocsp", http_url.trim_end_matches('/')),
            },
            learn_more: LEARN_MORE.to_owned(),
        };
        let mtls = Proxy::start(&mtls_spec, tls, ports[2])?;
        Ok(Self { nginx, caddy, mtls, app, ca, secrets })
    }
}

/// Headless Chromium loading `path` through `proxy`; fails the test when it hangs (no
/// certificate matched the policy).
#[track_caller]
fn chromium(agent: &AgentHome, proxy: &Proxy, path: &str) -> PageLoad {
    let page = chromium_dump_dom(&agent.home, &proxy.url(path));
    assert!(
        !page.hung(),
        "Chromium hung on {}: no certificate matched the policy (or it waited for a prompt)\n{}\n{}",
        proxy.origin,
        page.finished,
        proxy.describe()
    );
    page
}

/// Runs `attempt` until `done` holds, [`REFUSAL_ATTEMPTS`] times at most, a second apart;
/// returns the last result either way (the caller's assertion shows it).
fn retry_until<T>(mut attempt: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let mut result = attempt();
    for _ in 1..REFUSAL_ATTEMPTS {
        if done(&result) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        result = attempt();
    }
    result
}

/// `node tests/js/verify.mjs JWKS TOKEN ISS AUD`, bounded.
fn node_verify(jwks: &str, token: &str, issuer: &str, audience: &str) -> Finished {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/verify.mjs");
    run_bounded(
        Command::new("node").arg(script).args([jwks, token, issuer, audience]),
        None,
        HANG_LIMIT,
        &format!("node verify.mjs {jwks} <assertion> {issuer} {audience}"),
    )
}

/// `openssl ocsp` asking `url` about `leaf`, verifying the response against `issuer`.
fn openssl_ocsp(issuer: &Path, leaf: &Path, url: &str) -> Finished {
    let finished = run_bounded(
        Command::new("openssl")
            .arg("ocsp")
            .arg("-issuer")
            .arg(issuer)
            .arg("-cert")
            .arg(leaf)
            .args(["-url", url, "-CAfile"])
            .arg(issuer)
            .arg("-resp_text"),
        None,
        HANG_LIMIT,
        &format!("openssl ocsp -url {url}"),
    );
    finished.expect_code(0);
    finished
}

#[track_caller]
fn assert_refused(answer: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    assert_eq!(answer.header("x-devicetrust-error"), Some(code), "{what}: {answer:?}");
    assert!(answer.body.contains(code), "{what}: the contract's JSON error body: {answer:?}");
    assert!(answer.header("x-devicetrust-assertion").is_none(), "{what}: {answer:?}");
}

/// Whether two certificate serials in hex are the same number (nginx prints uppercase).
fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches('0').to_ascii_lowercase();
    !a.trim().is_empty() && norm(a) == norm(b)
}

fn between(text: &str, start: &str, end: &str) -> String {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_default()
}

/// What nginx's `$ssl_client_escaped_cert` does to a PEM: every byte but unreserved ones
/// percent-encoded.
fn escape_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn random_secret() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 without a new dependency: `openssl dgst -sha256`.
fn sha256(bytes: &[u8]) -> Vec<u8> {
    let finished = run_bounded(
        Command::new("openssl").args(["dgst", "-sha256", "-hex"]),
        Some(bytes),
        HANG_LIMIT,
        "openssl dgst -sha256",
    );
    finished.expect_code(0);
    let hex = finished.stdout.rsplit(' ').next().unwrap_or_default().trim().to_owned();
    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digest")).collect()
}

/// An HTTP answer with its headers.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// reqwest without a client certificate (a browser without the device's identity, or a
/// caller pretending to be a proxy), trusting the given PEM roots.
#[derive(Debug)]
struct Client {
    runtime: tokio::runtime::Runtime,
    roots: Vec<u8>,
}

impl Client {
    fn new(roots: &[&PathBuf]) -> Self {
        let mut pem = Vec::new();
        for root in roots {
            pem.extend(std::fs::read(root).expect("a PEM root"));
            pem.push(b'\n');
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        Self { runtime, roots: pem }
    }

    /// `GET url` with `headers`, from `source` (an address of 127.0.0.0/8) when given.
    fn get(&self, url: &str, headers: &[(&str, &str)], source: Option<[u8; 4]>) -> Response {
        let tls = ca_client::tls::client_config(Some(&self.roots), None).expect("a TLS configuration");
        let mut builder = reqwest::Client::builder().use_preconfigured_tls(tls).timeout(HANG_LIMIT);
        if let Some(source) = source {
            builder = builder.local_address(std::net::IpAddr::from(source));
        }
        let http = builder.build().expect("an HTTP client");
        let mut request = http.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.runtime.block_on(async {
            let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = response.text().await.unwrap_or_else(|e| panic!("GET {url}: the body: {e}"));
            Response { status, headers, body }
        })
    }
}
