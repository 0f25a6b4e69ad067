//! The relying-party kit against an in-process CA: the forward-auth check's answers, the
//! assertion checked against the published JWKS, the decision cache and revocation, the
//! MDM's last word, OCSP checked by `openssl ocsp`, and the PEM CRL read by `openssl crl`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ca_client::protocol::{EventsResponse, RenewRequest, paths};
use ca_server::api::{CHECK_PATH, CRL_PEM_PATH, JWKS_PATH, OCSP_PATH};
use ca_server::config::{Config, ProxyKind, RelyingPartyClient};
use ca_server::mdm::{MdmVerdict, NotManagedReason};
use ca_server::relying_party::header::nginx_escaped_pem;
use ca_server::secret::SecretSource;
use sha2::Digest as _;

use crate::harness::{Device, TestCa, csr, p256};

const NGINX: &str = "nginx-apps";
const CADDY: &str = "caddy-apps";
const RESTRICTED: &str = "restricted";

/// Relying parties with secrets in files of `dir`: one per proxy format, and one that may
/// call from 127.0.0.2 only.
struct Parties {
    dir: tempfile::TempDir,
}

impl Parties {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn secret(&self, name: &str) -> String {
        format!("{name}-secret-{}", "x".repeat(32))
    }

    fn file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        ca_server::fsutil::write_atomic(
            &path,
            self.secret(name).as_bytes(),
            ca_server::fsutil::Visibility::Private,
        )
        .expect("secret file");
        path
    }

    fn configure(&self, config: &mut Config, cache_secs: u32) {
        let rp = &mut config.relying_party;
        rp.decision_cache_secs = cache_secs;
        rp.protected_origins = vec!["https://[*.]apps.example.com".into()];
        for (name, proxy, sources) in [
            (NGINX, ProxyKind::Nginx, vec![]),
            (CADDY, ProxyKind::Caddy, vec![]),
            (RESTRICTED, ProxyKind::Nginx, vec!["127.0.0.2".to_owned()]),
        ] {
            rp.clients.push(RelyingPartyClient {
                name: name.into(),
                secret: SecretSource::file(self.file(name)),
                proxy,
                allowed_sources: sources,
            });
        }
        config.server.learn_more_url = Some("https://intranet.example.com/device-trust".into());
    }
}

/// An enrolled device: its certificate (PEM and DER) and key.
struct Enrolled {
    pem: String,
    der: Vec<u8>,
    key: rcgen::KeyPair,
    serial: String,
    device: Device,
}

async fn enroll(ca: &TestCa, n: u32) -> Enrolled {
    let device = Device::new(n);
    let key = p256();
    let issued = ca.enroll_ok(&device.request(&key)).await;
    let der = ca_server::authority::first_pem_certificate(&issued.certificate).expect("der");
    Enrolled { pem: issued.certificate, der, key, serial: issued.serial_number, device }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn check(client: &reqwest::Client, ca: &TestCa, headers: &[(&str, String)]) -> Answer {
    let mut request = client.get(ca.url(CHECK_PATH));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("check");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    Answer { status, headers, body }
}

fn bearer(parties: &Parties, name: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", parties.secret(name)))
}

fn nginx_cert(pem: &str) -> (&'static str, String) {
    ("x-devicetrust-client-cert", nginx_escaped_pem(pem))
}

/// Verifies an assertion with the keys the CA publishes.
async fn verify_assertion(ca: &TestCa, token: &str, audience: &str) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        ca.anonymous().get(ca.url(JWKS_PATH)).send().await.expect("jwks").json().await.expect("jwks json");
    let kid = jsonwebtoken::decode_header(token).expect("header").kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the signing key is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ca.env.config.server.cert_auth_domain.as_str()]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("the assertion verifies")
    .claims
}

#[tokio::test]
async fn the_check_answers_each_case_and_the_assertion_verifies() {
    let parties = Parties::new();
    let ca = TestCa::start_with(|config| parties.configure(config, 150)).await;
    let enrolled = enroll(&ca, 1).await;
    let other = enroll(&ca, 2).await;
    let anonymous = ca.anonymous();
    let foreign = {
        let key = p256();
        rcgen::CertificateParams::new(vec!["x".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .pem()
    };
    let b64_der = base64::engine::general_purpose::STANDARD.encode(&enrolled.der);

    let metadata: serde_json::Value =
        anonymous.get(ca.url(paths::METADATA)).send().await.expect("metadata").json().await.expect("json");
    assert_eq!(metadata["protectedOrigins"], serde_json::json!(["https://[*.]apps.example.com"]));

    // (name, headers, status, code)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("ok/nginx-escaped-pem", vec![bearer(&parties, NGINX), nginx_cert(&enrolled.pem)], 200, ""),
        (
            "ok/caddy-base64-der",
            vec![bearer(&parties, CADDY), ("x-devicetrust-client-cert", b64_der.clone())],
            200,
            "",
        ),
        ("fail/no-secret", vec![nginx_cert(&enrolled.pem)], 401, "invalid_token"),
        (
            "fail/wrong-secret",
            vec![("authorization", "Bearer guess".into()), nginx_cert(&enrolled.pem)],
            401,
            "invalid_token",
        ),
        (
            "fail/admin-token-is-not-a-secret",
            vec![("authorization", format!("Bearer {}", ca.admin_token())), nginx_cert(&enrolled.pem)],
            401,
            "invalid_token",
        ),
        (
            "fail/disallowed-source",
            vec![bearer(&parties, RESTRICTED), nginx_cert(&enrolled.pem)],
            401,
            "invalid_token",
        ),
        ("fail/no-certificate", vec![bearer(&parties, NGINX)], 401, "client_certificate_required"),
        (
            "fail/empty-certificate-header",
            vec![bearer(&parties, NGINX), ("x-devicetrust-client-cert", String::new())],
            401,
            "client_certificate_required",
        ),
        (
            "fail/another-proxy-format",
            vec![bearer(&parties, NGINX), ("x-devicetrust-client-cert", b64_der.clone())],
            401,
            "client_certificate_required",
        ),
        (
            "fail/another-proxy-header",
            vec![
                bearer(&parties, NGINX),
                ("x-forwarded-client-cert", format!("Cert=\"{}\"", nginx_escaped_pem(&enrolled.pem))),
            ],
            401,
            "client_certificate_required",
        ),
        (
            "fail/foreign-certificate",
            vec![bearer(&parties, NGINX), nginx_cert(&foreign)],
            401,
            "client_certificate_required",
        ),
    ];
    for (name, headers, status, code) in cases {
        let answer = check(&anonymous, &ca, &headers).await;
        assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
        if status != 200 {
            assert_eq!(answer.code(), code, "{name}");
            assert_eq!(answer.header("x-devicetrust-error"), Some(code), "{name}");
            assert_eq!(
                answer.header("x-devicetrust-learn-more"),
                Some("https://intranet.example.com/device-trust"),
                "{name}"
            );
            assert!(answer.header("x-devicetrust-assertion").is_none(), "{name}");
        }
    }

    // From its one allowed address, the restricted relying party is answered.
    let answer = check(
        &ca.anonymous_from("127.0.0.2".parse().expect("ip")),
        &ca,
        &[bearer(&parties, RESTRICTED), nginx_cert(&enrolled.pem)],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    // A trusted answer: the headers for the app, and an assertion any JOSE library verifies.
    let answer = check(&anonymous, &ca, &[bearer(&parties, NGINX), nginx_cert(&enrolled.pem)]).await;
    assert_eq!(
        answer.header("x-devicetrust-device-udid"),
        Some(enrolled.device.udid.to_uppercase().as_str())
    );
    assert_eq!(answer.header("x-devicetrust-device-serial"), Some(enrolled.device.serial.as_str()));
    assert_eq!(answer.header("x-devicetrust-certificate-serial"), Some(enrolled.serial.as_str()));
    assert_eq!(answer.header("x-devicetrust-user"), None, "not bound yet");
    let token = answer.header("x-devicetrust-assertion").expect("assertion").to_owned();
    assert_eq!(answer.body["assertion"], token.as_str());
    let claims = verify_assertion(&ca, &token, NGINX).await;
    assert_eq!(claims["sub"], enrolled.device.udid.to_uppercase());
    assert_eq!(claims["device_serial"], enrolled.device.serial);
    assert_eq!(claims["cert_serial"], enrolled.serial);
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&enrolled.der))
    );
    assert_eq!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"), 300);
    assert!(claims.get("user").is_none());

    // Checks write no events; the one binding does.
    let events = |ca: &TestCa| {
        let client = ca.anonymous();
        let url = ca.url("/api/v1/admin/events?limit=1000");
        let token = ca.admin_token().to_owned();
        async move {
            let page: EventsResponse =
                client.get(url).bearer_auth(token).send().await.expect("events").json().await.expect("json");
            page.events.len()
        }
    };
    let before = events(&ca).await;
    for _ in 0..20 {
        assert_eq!(
            check(
                &anonymous,
                &ca,
                &[bearer(&parties, CADDY), ("x-devicetrust-client-cert", b64_der.clone())]
            )
            .await
            .status,
            200
        );
        assert_eq!(
            check(
                &anonymous,
                &ca,
                &[
                    bearer(&parties, NGINX),
                    nginx_cert(&other.pem),
                    ("x-devicetrust-user", "mallory".into()),
                    ("x-devicetrust-client-cert", String::new())
                ]
            )
            .await
            .status,
            401
        );
    }
    assert_eq!(events(&ca).await, before, "checks recorded events");

    // The relying party names the signed-in user: an unbound certificate is bound to them.
    let user = enrolled.device.user.clone();
    let answer = check(
        &anonymous,
        &ca,
        &[bearer(&parties, NGINX), nginx_cert(&enrolled.pem), ("x-devicetrust-user", user.clone())],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.header("x-devicetrust-user"), Some(user.as_str()));
    assert_eq!(
        verify_assertion(&ca, answer.header("x-devicetrust-assertion").expect("assertion"), NGINX).await["user"],
        user
    );
    assert_eq!(events(&ca).await, before + 1, "the binding is an event");
    // ... and refused for anyone else, through every relying party.
    let answer = check(
        &anonymous,
        &ca,
        &[
            bearer(&parties, CADDY),
            ("x-devicetrust-client-cert", b64_der.clone()),
            ("x-devicetrust-user", "mallory".into()),
        ],
    )
    .await;
    assert_eq!((answer.status, answer.code()), (403, "certificate_bound_to_other_user"));

    // A revocation drops the cached answer at once, however long the cache keeps answers.
    assert_eq!(
        check(&anonymous, &ca, &[bearer(&parties, NGINX), nginx_cert(&enrolled.pem)]).await.status,
        200
    );
    let revoked = ca.admin_post(&format!("/api/v1/admin/devices/{}/revoke", enrolled.device.udid)).await;
    assert_eq!(revoked.status(), 200);
    let answer = check(&anonymous, &ca, &[bearer(&parties, NGINX), nginx_cert(&enrolled.pem)]).await;
    assert_eq!((answer.status, answer.code()), (403, "certificate_revoked"));
    let metrics = ca.ca.metrics().snapshot();
    assert!(metrics.relying_party_cache_hits > 0, "{metrics:?}");
    assert!(metrics.relying_party_refusals > 0, "{metrics:?}");
    assert!(
        metrics.relying_party_checks >= metrics.relying_party_cache_hits + metrics.relying_party_refusals
    );
}

#[tokio::test]
async fn the_relying_parties_own_listener_serves_only_them() {
    let parties = Parties::new();
    let ca = TestCa::start_with(|config| {
        parties.configure(config, 5);
        config.relying_party.listen = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let enrolled = enroll(&ca, 5).await;
    let base = ca.relying_party_url.clone().expect("a relying-party listener");
    let client = ca.anonymous();
    let answer = client
        .get(format!("{base}{CHECK_PATH}"))
        .header("authorization", format!("Bearer {}", parties.secret(NGINX)))
        .header("x-devicetrust-client-cert", nginx_escaped_pem(&enrolled.pem))
        .send()
        .await
        .expect("check");
    assert_eq!(answer.status(), 200);
    for path in [JWKS_PATH, CRL_PEM_PATH, paths::CRL] {
        let status = client.get(format!("{base}{path}")).send().await.expect(path).status();
        assert_eq!(status, 200, "{path}");
    }
    // Nothing for agents or administrators there.
    for path in [paths::METADATA, "/api/v1/admin/events"] {
        let status = client.get(format!("{base}{path}")).send().await.expect(path).status();
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_device_the_mdm_gave_up_on_is_refused_and_admitted_again_once_managed() {
    let parties = Parties::new();
    let ca = TestCa::start_with(|config| parties.configure(config, 0)).await;
    let enrolled = enroll(&ca, 3).await;
    let anonymous = ca.anonymous();
    let headers = [bearer(&parties, NGINX), nginx_cert(&enrolled.pem)];
    assert_eq!(check(&anonymous, &ca, &headers).await.status, 200);

    // The device left Jamf: its next renewal is refused, and from then on so is the check.
    ca.mdm.answer(&enrolled.device.serial, Ok(MdmVerdict::NotManaged(NotManagedReason::Unmanaged)));
    let renew = |ca: &TestCa| {
        ca.with_identity(&enrolled.pem, &enrolled.key)
            .post(ca.url(paths::RENEW))
            .json(&RenewRequest { client_version: "test".into(), csr: csr(&p256()) })
            .send()
    };
    assert_eq!(renew(&ca).await.expect("renew").status(), 403);
    let answer = check(&anonymous, &ca, &headers).await;
    assert_eq!((answer.status, answer.code()), (403, "device_not_managed"));

    // Managed again: the next lookup says so, and the check admits it.
    ca.mdm.answer(&enrolled.device.serial, Ok(MdmVerdict::Managed));
    assert!(renew(&ca).await.expect("renew").status().is_success());
    assert_eq!(check(&anonymous, &ca, &headers).await.status, 200);
}

/// Runs a command that must succeed (bounded; a failure shows the command, how it ended,
/// its stdout and stderr); its stdout and stderr together (openssl reports a verified
/// signature on stderr).
fn run(cmd: &mut std::process::Command) -> String {
    let finished = testkit::run(cmd);
    finished.expect_success();
    format!("{}{}", finished.stdout, finished.stderr)
}

/// Runs a command (bounded); whether it succeeded, and its stdout and stderr together.
fn run_any(cmd: &mut std::process::Command) -> (bool, String) {
    let finished = testkit::run(cmd);
    (finished.code() == Some(0), format!("{}{}", finished.stdout, finished.stderr))
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

/// `openssl ocsp` against the CA's responder, verifying the response against the issuer.
fn openssl_ocsp(ca: &TestCa, dir: &Path, leaf: &Path, extra: &[&str]) -> String {
    let issuer = write(dir, "issuer.pem", ca.issuer_pem().as_bytes());
    let mut command = std::process::Command::new("openssl");
    command
        .args(["ocsp", "-issuer"])
        .arg(&issuer)
        .arg("-cert")
        .arg(leaf)
        .args(["-url", &ca.url(OCSP_PATH), "-CAfile"])
        .arg(&ca.env.ca_bundle)
        .arg("-VAfile")
        .arg(&issuer)
        .args(extra);
    run(&mut command)
}

// openssl runs as a blocking child process: the server needs threads of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_ocsp_reports_good_then_revoked_and_the_pem_crl_lists_it() {
    let parties = Parties::new();
    let ca = TestCa::start_with(|config| parties.configure(config, 5)).await;
    let enrolled = enroll(&ca, 4).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = write(dir.path(), "leaf.pem", enrolled.pem.as_bytes());

    let aia = run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "authorityInfoAccess", "-in"])
        .arg(&leaf));
    assert!(aia.contains(&format!("OCSP - URI:{}", ca.url(OCSP_PATH))), "{aia}");

    // openssl verifies the responder's signature (-VAfile: the issuing CA) and says so on
    // stderr, which `run` folds into its output.
    let good = openssl_ocsp(&ca, dir.path(), &leaf, &["-resp_text"]);
    assert!(good.contains("leaf.pem: good"), "{good}");
    assert!(good.contains("Response verify OK"), "{good}");
    assert!(good.contains("OCSP Nonce"), "the nonce is echoed: {good}");
    assert!(good.contains("Next Update"), "{good}");

    let revoked = ca.admin_post(&format!("/api/v1/admin/devices/{}/revoke", enrolled.device.udid)).await;
    assert_eq!(revoked.status(), 200);
    let answer = openssl_ocsp(&ca, dir.path(), &leaf, &[]);
    assert!(answer.contains("leaf.pem: revoked"), "{answer}");
    assert!(answer.contains("Revocation Time"), "{answer}");
    assert!(answer.contains("Response verify OK"), "{answer}");

    // GET with the request in the path answers the same.
    let request = write(dir.path(), "req.der", b"");
    let issuer = write(dir.path(), "issuer.pem", ca.issuer_pem().as_bytes());
    run(std::process::Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-issuer"])
        .arg(&issuer)
        .arg("-cert")
        .arg(&leaf)
        .arg("-reqout")
        .arg(&request));
    let encoded = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&request).expect("request"));
    let url = format!(
        "{}/{}",
        ca.url(OCSP_PATH),
        encoded.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D")
    );
    let response = ca.anonymous().get(url).send().await.expect("get ocsp");
    assert_eq!(response.headers()["content-type"], "application/ocsp-response");
    let der = response.bytes().await.expect("body");
    let response_file = write(dir.path(), "resp.der", &der);
    let text = run(std::process::Command::new("openssl")
        .args(["ocsp", "-respin"])
        .arg(&response_file)
        .args(["-resp_text", "-noverify"]));
    assert!(text.contains("Cert Status: revoked"), "{text}");

    // A certificate of another issuer: the responder is not authoritative.
    let other_key = p256();
    let mut other_ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = other_ca.self_signed(&other_key).expect("other ca");
    let other_issuer = write(dir.path(), "other-ca.pem", other_ca.pem().as_bytes());
    let (_, text) = run_any(
        std::process::Command::new("openssl")
            .args(["ocsp", "-issuer"])
            .arg(&other_issuer)
            .arg("-cert")
            .arg(&leaf)
            .args(["-url", &ca.url(OCSP_PATH), "-CAfile"])
            .arg(&ca.env.ca_bundle),
    );
    assert!(text.contains("unauthorized"), "{text}");

    // Garbage is a malformedRequest answer, not an HTTP error.
    let response =
        ca.anonymous().post(ca.url(OCSP_PATH)).body(vec![0x30, 0x03, 0x02, 0x01]).send().await.expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body").as_ref(), [0x30, 0x03, 0x0a, 0x01, 0x01]);

    // The PEM CRL lists the revoked certificate with its reason; openssl verifies it.
    let pem = ca.anonymous().get(ca.url(CRL_PEM_PATH)).send().await.expect("crl").text().await.expect("text");
    assert!(pem.starts_with("-----BEGIN X509 CRL-----\n"), "{pem}");
    let crl = write(dir.path(), "crl.pem", pem.as_bytes());
    let text = run(std::process::Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(&issuer));
    assert!(text.to_uppercase().contains(&enrolled.serial.to_uppercase()), "{text}");
    assert!(text.contains("Privilege Withdrawn"), "{text}");
    assert!(text.contains("verify OK"), "{text}");
}
