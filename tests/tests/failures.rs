//! When the CA is down or answers wrongly, the device's identity does not change.
//!
//! - The CA stopped: `run` and `renew --force` exit 5 and the identity (store files and NSS
//!   database) is byte for byte what it was; an enrollment exits 5 and leaves no identity.
//!   Once the CA is back, renewal works.
//! - A fake CA on 127.0.0.1 answers metadata, renew, certificate status and enroll with
//!   garbage: not JSON, wrong types, truncated, oversized, unknown codes, a certificate for
//!   another key, a look-alike issuer that signed the agent's own CSR, a "revoked" about
//!   another certificate. Every answer is refused (exit 5) and changes nothing; pointed back
//!   at the real CA, the same identity still renews.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use ca_client::cert::CertificateInfo;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer, KeyPair,
};
use testkit::fake_ca::{FakeCa, Reply};
use tests::harness::agent::AgentHome;
use tests::harness::ca::{DevCa, StoredIdentity};

const METADATA: &str = "/api/v1/metadata";
const ENROLL: &str = "/api/v1/enroll";
const RENEW: &str = "/api/v1/renew";
const CERTIFICATE: &str = "/api/v1/certificate";

/// The exit code for "CA unavailable (or answered wrongly), retry later".
const CA_UNAVAILABLE: i32 = 5;

/// The identity in use: the index's `current` entry, that identity's files, and the NSS
/// database. A pending key stored for the next attempt is allowed (it is how a retry reuses
/// the key); anything else changing is not.
fn current_identity_snapshot(agent: &AgentHome) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Some(index) = agent.store_index() {
        files.insert(PathBuf::from("identities.json#current"), index["current"].to_string().into_bytes());
    }
    if let Some(current) = agent.current_identity() {
        for name in ["cert.pem", "chain.pem", "key.pem"] {
            let path = current.dir.join(name);
            files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
        }
    }
    files.extend(agent.identity_snapshot().into_iter().filter(|(path, _)| path.starts_with(agent.nss_dir())));
    files
}

fn snapshot_diff(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, bytes) in before {
        match after.get(path) {
            None => diff.push(format!("removed {}", path.display())),
            Some(now) if now != bytes => diff.push(format!("changed {}", path.display())),
            Some(_) => {}
        }
    }
    diff.extend(after.keys().filter(|p| !before.contains_key(*p)).map(|p| format!("added {}", p.display())));
    diff
}

#[test]
fn ca_down_exits_5_and_leaves_the_identity_untouched() {
    let mut ca = DevCa::start();
    let agent = AgentHome::new(&ca, "E2E-CA-DOWN-0001");
    let token = ca.info().enrollment_token.clone();
    agent.run_with_token(&["enroll", "--token-stdin"], &token).expect_code(0);
    let serial = agent.current_identity().expect("enrolled").serial();
    let before = current_identity_snapshot(&agent);

    let stopped = ca.stop();
    assert!(stopped.success(), "the CA shuts down cleanly on SIGTERM: {stopped}\n{}", ca.stderr());

    // Its port could be anyone's now: the agent is pointed at one that refuses, held for the
    // test, so that no other test's server can answer in the CA's place.
    let refused = testkit::RefusedPort::new();
    let down = refused.https_url();
    for args in [&["run"][..], &["renew", "--force"], &["run"]] {
        let finished = agent.run(&[&["--ca-url", down.as_str()], args].concat());
        finished.expect_code(CA_UNAVAILABLE);
        let diff = snapshot_diff(&before, &current_identity_snapshot(&agent));
        assert!(
            diff.is_empty(),
            "`{}` with the CA down changed the identity: {diff:?}\n{finished}",
            args.join(" ")
        );
    }
    let status = agent.status_json();
    assert_eq!(status["state"], "enrolled", "{status:#}");
    assert_eq!(status["certificate"]["serialNumber"], serial, "{status:#}");
    assert!(status["renewal"]["lastError"].is_string(), "status reports the failure: {status:#}");
    assert!(status["renewal"]["nextAttempt"].is_string(), "status reports the backoff: {status:#}");

    // A device that never enrolled gets 5 too, and no identity.
    let fresh = AgentHome::new(&ca, "E2E-CA-DOWN-0002");
    fresh
        .run_with_token(&["--ca-url", down.as_str(), "enroll", "--token-stdin"], &token)
        .expect_code(CA_UNAVAILABLE);
    assert!(fresh.current_identity().is_none());
    assert_eq!(fresh.status_json()["state"], "not_enrolled");

    // The CA is back (same data, new port): the same identity renews.
    ca.restart();
    agent.point_at(&ca.info().url, &ca.info().ca_bundle);
    agent.run(&["renew", "--force"]).expect_code(0);
    let renewed = agent.current_identity().expect("renewed");
    assert_ne!(renewed.serial(), serial);
    // An explicit `enroll` is a person asking now: it does not wait for the backoff.
    fresh.point_at(&ca.info().url, &ca.info().ca_bundle);
    fresh.run_with_token(&["enroll", "--token-stdin"], &token).expect_code(0);
    assert!(fresh.current_identity().is_some());
}

/// A CA whose TLS certificate is outside the configured `ca_bundle` is configuration, not an
/// outage: exit 2 with a message that names `ca_bundle`, recorded for `status` without a
/// backoff, and the run after the fix enrolls at once.
#[test]
fn a_server_outside_ca_bundle_is_a_configuration_error_without_backoff() {
    let ca = DevCa::start();
    let agent = AgentHome::new(&ca, "E2E-UNTRUSTED-0001");
    let token = ca.info().enrollment_token.clone();
    let wrong_bundle = agent.home.join("other-ca.pem");
    std::fs::write(&wrong_bundle, LookAlike::new().pem).expect("a bundle of another CA");
    agent.point_at(&ca.info().url, &wrong_bundle);

    let refused = agent.run_with_token(&["run", "--token-stdin"], &token);
    refused.expect_code(2);
    assert!(refused.stderr.contains("ca_bundle"), "the message says what to set:\n{refused}");
    assert!(!refused.stderr.contains("Other("), "no debug output:\n{refused}");
    let status = agent.status_json();
    assert!(status["renewal"]["lastError"].is_string(), "recorded: {status:#}");
    assert!(status["renewal"]["nextAttempt"].is_null(), "no backoff: {status:#}");

    agent.point_at(&ca.info().url, &ca.info().ca_bundle);
    agent.run_with_token(&["run", "--token-stdin"], &token).expect_code(0);
    assert!(agent.current_identity().is_some(), "enrolled at the first run after the fix");
}

/// A look-alike issuing CA: same subject CN as the real one, another key.
struct LookAlike {
    key: KeyPair,
    params: CertificateParams,
    pem: String,
}

impl LookAlike {
    fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "MTLS Certificate Authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("the look-alike CA").pem();
        Self { key, params, pem }
    }

    /// Signs the CSR in an enroll or renew request body, as the contract's answer.
    fn answer(&self, body: &[u8]) -> Reply {
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Reply::json(400, "{}");
        };
        let Some(der) =
            request["csr"].as_str().and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        else {
            return Reply::json(400, "{}");
        };
        let csr = CertificateSigningRequestParams::from_der(&der.into()).expect("the agent's CSR parses");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = csr.signed_by(&issuer).expect("the look-alike signs");
        // The answer is consistent in itself; only the chain gives it away.
        let serial = CertificateInfo::from_der(cert.der()).expect("it parses").serial_number().to_owned();
        issued(&cert.pem(), &self.pem, &serial)
    }
}

/// A contract-shaped issue answer (201).
fn issued(certificate: &str, chain: &str, serial: &str) -> Reply {
    let body = serde_json::json!({
        "certificate": certificate,
        "chain": [chain],
        "serialNumber": serial,
        "notBefore": "2026-01-01T00:00:00Z",
        "notAfter": "2036-01-01T00:00:00Z",
        "state": "unbound",
    });
    Reply::json(201, body.to_string())
}

/// The bad answers for issuance (enroll and renew alike), named `fail/...`.
fn bad_issue_answers(foreign: &StoredIdentity, issuer_pem: &str) -> Vec<(&'static str, Reply)> {
    let valid_shape = issued(&foreign.certificate_pem, issuer_pem, &foreign.serial());
    let text = String::from_utf8(valid_shape.body.clone()).expect("utf-8");
    vec![
        ("fail/not-json", Reply::raw(201, "text/html", "<html><body>Welcome to nginx!</body></html>")),
        ("fail/truncated", Reply::json(201, text[..text.len() / 2].to_owned())),
        ("fail/wrong-types", Reply::json(201, r#"{"certificate": 42, "chain": "x", "serialNumber": []}"#)),
        (
            "fail/certificate-not-pem",
            Reply::json(201, text.replace("-----BEGIN CERTIFICATE-----", "garbage")),
        ),
        ("fail/certificate-for-another-key", valid_shape),
        ("fail/empty-object", Reply::json(201, "{}")),
        ("fail/oversized", Reply::json(201, format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024)))),
        ("fail/500-not-the-contract", Reply::raw(500, "text/plain", "Internal Server Error")),
        ("fail/unknown-error-code", Reply::json(400, r#"{"error":{"code":"flux_capacitor","message":"?"}}"#)),
        ("fail/redirect", Reply { status: 302, content_type: "text/plain".to_owned(), body: Vec::new() }),
    ]
}

#[test]
fn malformed_answers_change_nothing() {
    let ca = DevCa::start();
    let admin = ca.admin();
    let token = ca.info().enrollment_token.clone();
    let issuer_pem = std::fs::read_to_string(&ca.info().issuer_certificate).expect("the issuer certificate");
    let agent = AgentHome::new(&ca, "E2E-MALFORMED-0001");
    agent.run_with_token(&["enroll", "--token-stdin"], &token).expect_code(0);
    let identity = agent.current_identity().expect("enrolled");
    let other = AgentHome::new(&ca, "E2E-MALFORMED-0002");
    other.run_with_token(&["enroll", "--token-stdin"], &token).expect_code(0);
    let foreign = other.current_identity().expect("the other device's identity");
    let before = current_identity_snapshot(&agent);

    let fake = FakeCa::start_canned();
    let metadata = admin.metadata_text();
    agent.point_at(fake.url(), fake.bundle());
    let mut failures = Vec::new();
    let mut check = |case: &str, args: &[&str], path: &str| {
        let hits = fake.hits(path);
        let finished = agent.run(args);
        let diff = snapshot_diff(&before, &current_identity_snapshot(&agent));
        if finished.code() != Some(CA_UNAVAILABLE) || !diff.is_empty() || fake.hits(path) <= hits {
            failures.push(format!(
                "{case}: `{}`: expected exit {CA_UNAVAILABLE}, a request to {path} and no change; \
                 changes: {diff:?}; requests to {path}: {}\n{finished}",
                args.join(" "),
                fake.hits(path) - hits
            ));
        }
    };

    // Metadata (fetched before every renewal).
    let bad_metadata = [
        ("fail/metadata-not-json", Reply::raw(200, "text/html", "<html>maintenance</html>")),
        ("fail/metadata-wrong-types", Reply::json(200, r#"{"certAuthDomain": 42, "caCertificates": "x"}"#)),
        (
            "fail/metadata-no-ca-certificates",
            Reply::json(200, metadata.replace("\"caCertificates\":[", "\"caCertificates\":[\"not a pem\",")),
        ),
        ("fail/metadata-empty-ca-certificates", {
            let mut value: serde_json::Value = serde_json::from_str(&metadata).expect("metadata is JSON");
            value["caCertificates"] = serde_json::json!([]);
            Reply::json(200, value.to_string())
        }),
        ("fail/metadata-500", Reply::raw(500, "text/plain", "Internal Server Error")),
    ];
    for (case, reply) in bad_metadata {
        fake.set(METADATA, reply);
        check(case, &["renew", "--force"], METADATA);
    }

    // Renewal, with good metadata.
    fake.set(METADATA, Reply::json(200, metadata.clone()));
    for (case, reply) in bad_issue_answers(&foreign, &issuer_pem) {
        fake.set(RENEW, reply);
        check(&format!("renew {case}"), &["renew", "--force"], RENEW);
    }
    let look_alike = Arc::new(LookAlike::new());
    let signer = look_alike.clone();
    fake.set_responder(RENEW, Arc::new(move |body: &[u8]| signer.answer(body)));
    check("renew fail/look-alike-issuer-signed-our-csr", &["renew", "--force"], RENEW);

    // Certificate status (asked by every `run`).
    let serial = identity.serial();
    let status_of = |serial: &str, state: &str| {
        serde_json::json!({"serialNumber": serial, "state": state, "boundUser": null,
                           "notAfter": "2036-01-01T00:00:00Z", "device": {"udid": agent.udid}})
        .to_string()
    };
    let bad_status = [
        ("fail/status-not-json", Reply::raw(200, "text/html", "<html>hello</html>")),
        ("fail/status-unknown-state", Reply::json(200, status_of(&serial, "exploded"))),
        ("fail/status-revoked-but-another-certificate", Reply::json(200, status_of("0badc0de", "revoked"))),
        ("fail/status-wrong-types", Reply::json(200, r#"{"serialNumber": 1, "state": true}"#)),
        ("fail/status-500", Reply::raw(500, "text/plain", "Internal Server Error")),
    ];
    for (case, reply) in bad_status {
        fake.set(CERTIFICATE, reply);
        check(case, &["run"], CERTIFICATE);
    }
    assert!(
        failures.is_empty(),
        "{} malformed answers were not refused cleanly:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The identity is intact: pointed back at the real CA, it still renews.
    let status = agent.status_json();
    assert_eq!(status["state"], "enrolled", "{status:#}");
    assert_eq!(status["certificate"]["serialNumber"], serial, "{status:#}");
    agent.point_at(&ca.info().url, &ca.info().ca_bundle);
    agent.run(&["renew", "--force"]).expect_code(0);

    // Enrollment: a device with no identity gets none from a bad answer.
    let fresh = AgentHome::new(&ca, "E2E-MALFORMED-0003");
    fresh.point_at(fake.url(), fake.bundle());
    let mut enroll_failures = Vec::new();
    let mut cases: Vec<(&str, Option<Reply>)> = bad_issue_answers(&foreign, &issuer_pem)
        .into_iter()
        .map(|(case, reply)| (case, Some(reply)))
        .collect();
    cases.push(("fail/look-alike-issuer-signed-our-csr", None));
    for (case, reply) in cases {
        match reply {
            Some(reply) => fake.set(ENROLL, reply),
            None => {
                let signer = look_alike.clone();
                fake.set_responder(ENROLL, Arc::new(move |body: &[u8]| signer.answer(body)));
            }
        }
        let hits = fake.hits(ENROLL);
        let finished = fresh.run_with_token(&["enroll", "--token-stdin"], &token);
        if finished.code() != Some(CA_UNAVAILABLE)
            || fresh.current_identity().is_some()
            || fake.hits(ENROLL) <= hits
        {
            enroll_failures
                .push(format!("enroll {case}: expected exit {CA_UNAVAILABLE} and no identity\n{finished}"));
        }
    }
    assert!(enroll_failures.is_empty(), "{}", enroll_failures.join("\n"));
    assert_eq!(fresh.status_json()["state"], "not_enrolled");

    // The real CA then enrolls it, with one certificate.
    fresh.point_at(&ca.info().url, &ca.info().ca_bundle);
    fresh.run_with_token(&["enroll", "--token-stdin"], &token).expect_code(0);
    let device = admin.device(&fresh.udid).expect("the CA knows the device");
    assert_eq!(device.certificates.len(), 1, "{device:#?}");
}
