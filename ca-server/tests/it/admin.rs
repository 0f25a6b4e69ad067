//! The admin API (revocation, device lookup, events) and the CRL.

use ca_client::protocol::{CertificateState, DeviceRecord, EventType, Outcome, Platform, RevokeResponse};
use x509_parser::prelude::*;

use crate::harness::{Device, TestCa, events, expect_error, p256, run};

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let ca = TestCa::start().await;
    let paths = [
        ("POST", "/api/v1/admin/users/alice/revoke"),
        ("POST", "/api/v1/admin/devices/X/revoke"),
        ("GET", "/api/v1/admin/devices/X"),
        ("GET", "/api/v1/admin/events"),
    ];
    for (method, path) in paths {
        for token in [None, Some(ca.enrollment_token().to_owned())] {
            let mut request = match method {
                "POST" => ca.anonymous().post(ca.url(path)),
                _ => ca.anonymous().get(ca.url(path)),
            };
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            expect_error(request.send().await.expect("send"), 401, "invalid_token").await;
        }
    }
    // A request that did not authenticate is counted, never written.
    assert_eq!(events(&ca).await, [], "unauthenticated refusals are not stored");
    assert_eq!(ca.ca.metrics().snapshot().unauthenticated_refusals, 8);
}

#[tokio::test]
async fn revocation_by_user_and_by_device() {
    let ca = TestCa::start().await;
    let mut alice_laptop = Device::new(1);
    let alice_desktop = Device::new(2);
    let mut bob_laptop = Device::new(3);
    bob_laptop.user = "bob".into();
    ca.enroll_ok(&alice_laptop.request(&p256())).await;
    ca.enroll_ok(&alice_laptop.request(&p256())).await;
    ca.enroll_ok(&alice_desktop.request(&p256())).await;
    let bob_cert = ca.enroll_ok(&bob_laptop.request(&p256())).await;

    let revoked: RevokeResponse =
        ca.admin_post("/api/v1/admin/users/alice/revoke").await.json().await.expect("json");
    assert_eq!(revoked.revoked, 3);
    let again: RevokeResponse =
        ca.admin_post("/api/v1/admin/users/alice/revoke").await.json().await.expect("json");
    assert_eq!(again.revoked, 0, "already revoked certificates are not counted again");
    let nobody: RevokeResponse =
        ca.admin_post("/api/v1/admin/users/nobody/revoke").await.json().await.expect("json");
    assert_eq!(nobody.revoked, 0);

    // Revoked certificates no longer count against the limit.
    alice_laptop.user = "alice".into();
    for _ in 0..5 {
        ca.enroll_ok(&alice_laptop.request(&p256())).await;
    }

    let record: DeviceRecord =
        ca.admin_get(&format!("/api/v1/admin/devices/{}", bob_laptop.udid)).await.json().await.expect("json");
    assert_eq!(record.certificates.len(), 1);
    assert_eq!(record.certificates[0].state, CertificateState::Unbound);
    assert_eq!(record.certificates[0].serial_number, bob_cert.serial_number);
    assert_eq!(record.certificates[0].user, "bob");
    assert_eq!(record.serial_number, bob_laptop.serial);
    assert_eq!(record.display_name, "Alice's MacBook");
    assert_eq!(record.os_version, "14.5");
    assert_eq!(record.platform, Platform::Macos);
    assert_eq!(record.certificates[0].spki_sha256.len(), 64);

    let revoked: RevokeResponse = ca
        .admin_post(&format!("/api/v1/admin/devices/{}/revoke", bob_laptop.udid))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(revoked.revoked, 1);
    let record: DeviceRecord =
        ca.admin_get(&format!("/api/v1/admin/devices/{}", bob_laptop.udid)).await.json().await.expect("json");
    assert_eq!(record.certificates[0].state, CertificateState::Revoked);
    assert!(record.certificates[0].revoked_at.is_some());

    let record: DeviceRecord = ca
        .admin_get(&format!("/api/v1/admin/devices/{}", alice_laptop.udid))
        .await
        .json()
        .await
        .expect("json");
    let states: Vec<_> = record.certificates.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [[CertificateState::Revoked; 2].as_slice(), [CertificateState::Unbound; 5].as_slice()].concat()
    );

    expect_error(ca.admin_get("/api/v1/admin/devices/unknown-device").await, 404, "not_found").await;
}

#[tokio::test]
async fn events_carry_the_contract_types_and_page_by_id() {
    let ca = TestCa::start().await;
    let device = Device::new(7);
    let (key, new_key) = (p256(), p256());
    let issued = ca.enroll_ok(&device.request(&key)).await;
    let client = ca.with_identity(&issued.certificate, &key);
    assert_eq!(
        client.get(ca.url("/api/v1/device-trust/verify?user=alice")).send().await.expect("verify").status(),
        200
    );
    let renewed = client
        .post(ca.url("/api/v1/renew"))
        .json(&serde_json::json!({"clientVersion": "1.0.0", "csr": crate::harness::csr(&new_key)}))
        .send()
        .await
        .expect("renew");
    assert_eq!(renewed.status(), 201);
    assert_eq!(ca.admin_post("/api/v1/admin/users/alice/revoke").await.status(), 200);
    // A wrong token is not recorded (nothing unauthenticated is); a refusal after the
    // token matched is.
    let response = ca
        .anonymous()
        .post(ca.url("/api/v1/enroll"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&device.request(&p256()))
        .send()
        .await
        .expect("enroll");
    assert_eq!(response.status(), 401);
    let mut bad = device.request(&p256());
    bad.device.udid = "not a udid".into();
    let response = ca
        .anonymous()
        .post(ca.url("/api/v1/enroll"))
        .bearer_auth(ca.enrollment_token())
        .json(&bad)
        .send()
        .await
        .expect("enroll");
    assert_eq!(response.status(), 400);

    let all = events(&ca).await;
    let summary: Vec<_> = all.iter().map(|e| (e.event_type, e.outcome)).collect();
    use EventType::*;
    use Outcome::*;
    assert_eq!(
        summary,
        [
            (Enroll, Success),
            (Issue, Success),
            (Authenticate, Success),
            (Renew, Success),
            (Issue, Success),
            (Revoke, Success),
            (Revoke, Success),
            (Enroll, Failure),
        ]
    );
    for event in &all {
        assert_eq!(event.display_message, event.event_type.display_message());
    }
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let issue = &all[1];
    assert_eq!(issue.serial_number.as_deref(), Some(issued.serial_number.as_str()));
    assert_eq!(issue.user.as_deref(), Some("alice"));
    assert_eq!(issue.device.as_ref().map(|d| d.udid.as_str()), Some(device.udid.as_str()));
    assert_eq!(issue.reason, None);
    assert_eq!(all[7].reason.as_deref(), Some("invalid_request"));
    assert_eq!(
        (all[7].user.as_deref(), all[7].device.as_ref()),
        (None, None),
        "only validated values are recorded"
    );

    // Raw JSON uses the contract's names.
    let raw: serde_json::Value =
        ca.admin_get("/api/v1/admin/events?limit=1").await.json().await.expect("json");
    let first = &raw["events"][0];
    assert_eq!(first["eventType"], "user.credential.enroll");
    assert_eq!(first["displayMessage"], "Device Trust certificate enrollment");
    assert_eq!(first["outcome"], "SUCCESS");
    assert!(first["published"].as_str().expect("published").ends_with('Z'));
    assert_eq!(raw["events"].as_array().expect("array").len(), 1);

    let page: ca_client::protocol::EventsResponse = ca
        .admin_get(&format!("/api/v1/admin/events?after={}&limit=2", all[2].id))
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<_> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [all[3].id, all[4].id]);

    // `since` starts at the first event published at or after it, and pages by id from there.
    let since = |time: &str, after: i64| {
        let ca = &ca;
        let path = format!("/api/v1/admin/events?since={time}&after={after}");
        async move {
            let page: ca_client::protocol::EventsResponse =
                ca.admin_get(&path).await.json().await.expect("json");
            page.events.iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    let every: Vec<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(since("2000-01-01T00:00:00Z", 0).await, every, "ok/since-the-past");
    assert_eq!(since("2000-01-01T00:00:00Z", all[2].id).await, every[3..], "ok/since-and-after");
    assert_eq!(since("2999-01-01T00:00:00Z", 0).await, Vec::<i64>::new(), "ok/since-the-future");

    for bad in ["limit=0", "limit=1001", "after=-1", "limit=x", "since=yesterday"] {
        expect_error(ca.admin_get(&format!("/api/v1/admin/events?{bad}")).await, 400, "invalid_request")
            .await;
    }
}

#[tokio::test]
async fn the_crl_lists_revoked_serials_and_parses_with_openssl() {
    let ca = TestCa::start().await;
    let empty = ca.anonymous().get(ca.url("/crl")).send().await.expect("crl");
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.headers()["content-type"], "application/pkix-crl");
    let empty = empty.bytes().await.expect("bytes");
    let (_, parsed) = CertificateRevocationList::from_der(&empty).expect("crl");
    assert_eq!(parsed.iter_revoked_certificates().count(), 0);

    let keep = ca.enroll_ok(&Device::new(8).request(&p256())).await;
    let mut gone = vec![
        ca.enroll_ok(&Device::new(9).request(&p256())).await.serial_number,
        ca.enroll_ok(&Device::new(9).request(&p256())).await.serial_number,
    ];
    assert_eq!(
        ca.admin_post(&format!("/api/v1/admin/devices/{}/revoke", Device::new(9).udid)).await.status(),
        200
    );

    let der = ca.anonymous().get(ca.url("/crl")).send().await.expect("crl").bytes().await.expect("bytes");
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("crl");
    let issuer_der = ca.issuer_der();
    let (_, issuer) = X509Certificate::from_der(&issuer_der).expect("issuer");
    crl.verify_signature(issuer.public_key()).expect("signed by the issuing CA");
    let mut listed: Vec<_> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
    listed.sort();
    gone.sort();
    assert_eq!(listed, gone);
    assert!(!listed.contains(&keep.serial_number));
    assert!(crl.next_update().is_some());
    assert!(crl.crl_number().is_some());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.crl");
    std::fs::write(&path, &der).expect("write");
    let text = run(std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&path));
    for serial in &gone {
        assert!(text.contains(&serial.to_uppercase()), "openssl crl lacks {serial}:\n{text}");
    }
    assert!(text.contains("MTLS Certificate Authority"), "{text}");
    let verified = testkit::run(
        std::process::Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(&path)
            .arg("-CAfile")
            .arg(&ca.env.issuer_certificate),
    );
    verified.expect_success();
    assert!(verified.stderr.contains("verify OK"), "{verified}");
}
