//! Mutual-TLS endpoints: renew, certificate status and verify, with binding at first use,
//! superseded certificates, revocation and expiry (moved by the CA's manual clock).

use ca_client::protocol::{CertificateState, CertificateStatus, IssuedCertificate, VerifyResponse};
use chrono::Duration;
use rcgen::KeyPair;

use crate::harness::{Device, TestCa, csr, expect_error, p256};

async fn renew(ca: &TestCa, cert: &str, key: &KeyPair, new_key: &KeyPair) -> reqwest::Response {
    ca.with_identity(cert, key)
        .post(ca.url("/api/v1/renew"))
        .json(&serde_json::json!({"clientVersion": "1.0.0", "csr": csr(new_key)}))
        .send()
        .await
        .expect("renew")
}

async fn status(ca: &TestCa, cert: &str, key: &KeyPair) -> reqwest::Response {
    ca.with_identity(cert, key).get(ca.url("/api/v1/certificate")).send().await.expect("status")
}

async fn verify(ca: &TestCa, cert: &str, key: &KeyPair, user: Option<&str>) -> reqwest::Response {
    let mut url = ca.url("/api/v1/device-trust/verify");
    if let Some(user) = user {
        url.push_str(&format!("?user={user}"));
    }
    ca.with_identity(cert, key).get(url).send().await.expect("verify")
}

#[tokio::test]
async fn binding_happens_at_first_verify() {
    let ca = TestCa::start().await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(1).request(&key)).await;

    let before: CertificateStatus = status(&ca, &issued.certificate, &key).await.json().await.expect("json");
    assert_eq!(before.state, CertificateState::Unbound);
    assert_eq!(before.bound_user, None);
    assert_eq!(before.serial_number, issued.serial_number);
    assert_eq!(before.device.udid, Device::new(1).udid);
    assert_eq!(before.not_after, issued.not_after);

    let response = verify(&ca, &issued.certificate, &key, None).await;
    assert_eq!(response.status(), 200);
    let body: VerifyResponse = response.json().await.expect("json");
    assert!(body.trusted);
    assert_eq!(body.serial_number.as_deref(), Some(issued.serial_number.as_str()));
    assert_eq!(body.state, Some(CertificateState::Bound));

    let after: CertificateStatus = status(&ca, &issued.certificate, &key).await.json().await.expect("json");
    assert_eq!(after.state, CertificateState::Bound);
    assert_eq!(after.bound_user.as_deref(), Some("alice"), "without ?user, the enrolling user");

    // Binding happens once, and a certificate bound to alice is not trusted for anyone else.
    let response = verify(&ca, &issued.certificate, &key, Some("mallory")).await;
    assert_eq!(response.status(), 403);
    let body: VerifyResponse = response.json().await.expect("json");
    assert_eq!(body.error.expect("error").code.as_str(), "certificate_bound_to_other_user");
    assert_eq!(verify(&ca, &issued.certificate, &key, Some("alice")).await.status(), 200);
    let again: CertificateStatus = status(&ca, &issued.certificate, &key).await.json().await.expect("json");
    assert_eq!(again.bound_user.as_deref(), Some("alice"));
}

/// The attack: any web page can make a victim's browser request
/// `<img src="https://ca/.../verify?user=mallory">`. The browser-facing GET never binds to a
/// name from the query.
#[tokio::test]
async fn a_web_page_cannot_bind_a_fresh_certificate_to_another_user() {
    let ca = TestCa::start().await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(6).request(&key)).await;

    let response = verify(&ca, &issued.certificate, &key, Some("mallory")).await;
    assert_eq!(response.status(), 403);
    let body: VerifyResponse = response.json().await.expect("json");
    assert_eq!(body.error.expect("error").code.as_str(), "certificate_bound_to_other_user");
    let after: CertificateStatus = status(&ca, &issued.certificate, &key).await.json().await.expect("json");
    assert_eq!((after.state, after.bound_user), (CertificateState::Unbound, None), "a refusal binds nothing");

    // The enrolling user's own app binds it to them.
    assert_eq!(verify(&ca, &issued.certificate, &key, Some("alice")).await.status(), 200);
    let after: CertificateStatus = status(&ca, &issued.certificate, &key).await.json().await.expect("json");
    assert_eq!(after.bound_user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn only_an_authenticated_caller_binds_to_another_name() {
    let ca = TestCa::start().await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(7).request(&key)).await;
    let path = format!("/api/v1/admin/certificates/{}/bind", issued.serial_number);

    // Without the admin token: refused, and nothing recorded.
    let response = ca
        .anonymous()
        .post(ca.url(&path))
        .json(&serde_json::json!({"user": "bob"}))
        .send()
        .await
        .expect("bind");
    expect_error(response, 401, "invalid_token").await;

    let bind = |user: &'static str| {
        ca.anonymous()
            .post(ca.url(&path))
            .bearer_auth(ca.admin_token())
            .json(&serde_json::json!({"user": user}))
            .send()
    };
    let response = bind("bob").await.expect("bind");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!((body["state"].as_str(), body["boundUser"].as_str()), (Some("bound"), Some("bob")));
    expect_error(bind("carol").await.expect("bind"), 403, "certificate_bound_to_other_user").await;
    expect_error(bind("bob\u{202e}").await.expect("bind"), 400, "invalid_request").await;

    assert_eq!(verify(&ca, &issued.certificate, &key, Some("bob")).await.status(), 200);
    assert_eq!(verify(&ca, &issued.certificate, &key, Some("alice")).await.status(), 403);
    let unknown = "/api/v1/admin/certificates/00ff/bind";
    let response = ca
        .anonymous()
        .post(ca.url(unknown))
        .bearer_auth(ca.admin_token())
        .json(&serde_json::json!({"user": "bob"}))
        .send()
        .await
        .expect("bind");
    expect_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn renew_keeps_the_binding_and_the_superseded_certificate_verifies_for_the_grace_period() {
    let ca = TestCa::start().await;
    let (key_a, key_b) = (p256(), p256());
    let a = ca.enroll_ok(&Device::new(2).request(&key_a)).await;
    let bind = ca
        .anonymous()
        .post(ca.url(&format!("/api/v1/admin/certificates/{}/bind", a.serial_number)))
        .bearer_auth(ca.admin_token())
        .json(&serde_json::json!({"user": "bob"}))
        .send()
        .await
        .expect("bind");
    assert_eq!(bind.status(), 200);

    let response = renew(&ca, &a.certificate, &key_a, &key_b).await;
    assert_eq!(response.status(), 201);
    let b: IssuedCertificate = response.json().await.expect("json");
    assert_ne!(b.serial_number, a.serial_number);
    assert_eq!(b.state, CertificateState::Bound, "the binding carries over");
    assert_eq!(b.chain, [ca.issuer_pem()]);

    let b_status: CertificateStatus = status(&ca, &b.certificate, &key_b).await.json().await.expect("json");
    assert_eq!((b_status.state, b_status.bound_user.as_deref()), (CertificateState::Bound, Some("bob")));
    assert_eq!(b_status.device.udid, Device::new(2).udid);
    let a_status: CertificateStatus = status(&ca, &a.certificate, &key_a).await.json().await.expect("json");
    assert_eq!(a_status.state, CertificateState::Superseded);

    // A browser that cached the old certificate keeps working...
    let response = verify(&ca, &a.certificate, &key_a, None).await;
    assert_eq!(response.status(), 200);
    let body: VerifyResponse = response.json().await.expect("json");
    assert_eq!(body.state, Some(CertificateState::Superseded));

    // ...a repeat of the renewal (same new key) is idempotent...
    let repeat = renew(&ca, &a.certificate, &key_a, &key_b).await;
    assert_eq!(repeat.status(), 200);
    let repeat: IssuedCertificate = repeat.json().await.expect("json");
    assert_eq!(repeat.serial_number, b.serial_number);

    // ...for the grace period (7 days by default), not until its own notAfter.
    ca.clock.advance(Duration::days(7) - Duration::seconds(1));
    assert_eq!(verify(&ca, &a.certificate, &key_a, None).await.status(), 200, "within the grace period");
    ca.clock.advance(Duration::seconds(1));
    let response = verify(&ca, &a.certificate, &key_a, None).await;
    assert_eq!(response.status(), 403);
    let body: VerifyResponse = response.json().await.expect("json");
    assert!(!body.trusted);
    assert_eq!(body.error.expect("error").code.as_str(), "certificate_superseded");
    expect_error(renew(&ca, &a.certificate, &key_a, &p256()).await, 403, "certificate_superseded").await;
    expect_error(status(&ca, &a.certificate, &key_a).await, 403, "certificate_superseded").await;
    // The successor is unaffected.
    assert_eq!(verify(&ca, &b.certificate, &key_b, Some("bob")).await.status(), 200);
}

#[tokio::test]
async fn the_grace_period_is_configurable() {
    let ca = TestCa::start_with(|config| config.ca.superseded_grace_days = 1).await;
    let (key_a, key_b) = (p256(), p256());
    let a = ca.enroll_ok(&Device::new(8).request(&key_a)).await;
    assert_eq!(renew(&ca, &a.certificate, &key_a, &key_b).await.status(), 201);
    ca.clock.advance(Duration::days(1));
    let response = verify(&ca, &a.certificate, &key_a, None).await;
    assert_eq!(response.status(), 403);
}

/// The attack: renewing 12 times from the same superseded certificate, with a new key each
/// time, gave 12 active, trusted certificates. Each renewal now supersedes the earlier
/// successor: one lineage, one active certificate.
#[tokio::test]
async fn renewal_from_a_superseded_certificate_cannot_fan_out() {
    let ca = TestCa::start().await;
    let device = Device::new(9);
    let key = p256();
    let old = ca.enroll_ok(&device.request(&key)).await;
    let mut successors = Vec::new();
    for _ in 0..12 {
        let new_key = p256();
        let response = renew(&ca, &old.certificate, &key, &new_key).await;
        assert_eq!(response.status(), 201);
        let issued: IssuedCertificate = response.json().await.expect("json");
        successors.push((issued, new_key));
    }
    let record = ca.device_record(&device.udid).await;
    let active: Vec<_> = record
        .certificates
        .iter()
        .filter(|c| matches!(c.state, CertificateState::Unbound | CertificateState::Bound))
        .map(|c| c.serial_number.clone())
        .collect();
    let (last, last_key) = successors.last().expect("renewed");
    assert_eq!(active, std::slice::from_ref(&last.serial_number), "one active certificate per lineage");
    // An earlier successor is superseded, and the last one is what the device uses.
    let (first, first_key) = &successors[0];
    let first_status: CertificateStatus =
        status(&ca, &first.certificate, first_key).await.json().await.expect("json");
    assert_eq!(first_status.state, CertificateState::Superseded);
    assert_eq!(verify(&ca, &last.certificate, last_key, None).await.status(), 200);
    // A renewal from the newest successor supersedes it in turn.
    let response = renew(&ca, &last.certificate, last_key, &p256()).await;
    assert_eq!(response.status(), 201);
    let record = ca.device_record(&device.udid).await;
    let active = record
        .certificates
        .iter()
        .filter(|c| matches!(c.state, CertificateState::Unbound | CertificateState::Bound))
        .count();
    assert_eq!(active, 1);
}

#[tokio::test]
async fn renewing_an_unbound_certificate_moves_its_slot() {
    let ca = TestCa::start().await;
    let device = Device::new(3);
    let keys: Vec<_> = (0..5).map(|_| p256()).collect();
    let mut certs = Vec::new();
    for key in &keys {
        certs.push(ca.enroll_ok(&device.request(key)).await);
    }
    let response = renew(&ca, &certs[0].certificate, &keys[0], &p256()).await;
    assert_eq!(response.status(), 201, "the successor takes the old certificate's slot");
    let successor: IssuedCertificate = response.json().await.expect("json");
    assert_eq!(successor.state, CertificateState::Unbound);
    // Renewing the superseded one again with yet another key replaces that successor: it
    // takes the same slot, so the device still holds five unbound certificates.
    let again = renew(&ca, &certs[0].certificate, &keys[0], &p256()).await;
    assert_eq!(again.status(), 201);
    let record = ca.device_record(&device.udid).await;
    let unbound = record.certificates.iter().filter(|c| c.state == CertificateState::Unbound).count();
    assert_eq!(unbound, 5);
    let first =
        record.certificates.iter().find(|c| c.serial_number == successor.serial_number).expect("kept");
    assert_eq!(first.state, CertificateState::Superseded);
    expect_error(ca.enroll(&device.request(&p256())).await, 409, "enrollment_limit_reached").await;
}

#[tokio::test]
async fn mutual_tls_refusals() {
    let ca = TestCa::start().await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(4).request(&key)).await;

    // No client certificate.
    let anonymous = ca.anonymous();
    let response = anonymous
        .post(ca.url("/api/v1/renew"))
        .json(&serde_json::json!({"clientVersion": "1.0.0", "csr": csr(&p256())}))
        .send()
        .await
        .expect("renew");
    expect_error(response, 401, "client_certificate_required").await;
    let response = anonymous.get(ca.url("/api/v1/certificate")).send().await.expect("status");
    expect_error(response, 401, "client_certificate_required").await;
    let response = anonymous.get(ca.url("/api/v1/device-trust/verify")).send().await.expect("verify");
    assert_eq!(response.status(), 403, "verify answers 403 to everything it refuses");
    let body: VerifyResponse = response.json().await.expect("json");
    assert!(!body.trusted);
    assert_eq!(body.error.expect("error").code.as_str(), "client_certificate_required");

    // The same key again.
    expect_error(renew(&ca, &issued.certificate, &key, &key).await, 400, "invalid_csr").await;
    // A broken body.
    let response = ca
        .with_identity(&issued.certificate, &key)
        .post(ca.url("/api/v1/renew"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("renew");
    expect_error(response, 400, "invalid_request").await;
    // The MDM changed its mind.
    ca.mdm.answer(
        &Device::new(4).serial,
        Ok(ca_server::mdm::MdmVerdict::NotManaged(ca_server::mdm::NotManagedReason::Unmanaged)),
    );
    expect_error(renew(&ca, &issued.certificate, &key, &p256()).await, 403, "device_not_managed").await;
}

#[tokio::test]
async fn a_revoked_certificate_is_told_so() {
    let ca = TestCa::start().await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(5).request(&key)).await;
    let response = ca.admin_post(&format!("/api/v1/admin/devices/{}/revoke", Device::new(5).udid)).await;
    assert_eq!(response.status(), 200);

    expect_error(renew(&ca, &issued.certificate, &key, &p256()).await, 403, "certificate_revoked").await;
    let response = status(&ca, &issued.certificate, &key).await;
    assert_eq!(response.status(), 200, "status still answers, so the agent can uninstall");
    let body: CertificateStatus = response.json().await.expect("json");
    assert_eq!(body.state, CertificateState::Revoked);
    let response = verify(&ca, &issued.certificate, &key, None).await;
    assert_eq!(response.status(), 403);
    let body: VerifyResponse = response.json().await.expect("json");
    assert_eq!(body.error.expect("error").code.as_str(), "certificate_revoked");

    // Browsers get a page.
    let page = ca
        .with_identity(&issued.certificate, &key)
        .get(ca.url("/api/v1/device-trust/verify"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("verify");
    assert_eq!(page.status(), 403);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.expect("html");
    assert!(html.contains("Security requirements"), "{html}");
}

#[tokio::test]
async fn the_verify_page_links_to_learn_more() {
    let ca = TestCa::start_with(|config| {
        config.server.learn_more_url = Some("https://intranet.example.com/device-trust?a=1&b=2".into());
    })
    .await;
    let page = ca
        .anonymous()
        .get(ca.url("/api/v1/device-trust/verify"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("verify");
    assert_eq!(page.status(), 403);
    let html = page.text().await.expect("html");
    assert!(
        html.contains("href=\"https://intranet.example.com/device-trust?a=1&amp;b=2\">Learn more</a>"),
        "{html}"
    );
}
