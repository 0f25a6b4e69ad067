//! Metadata and enrollment: the certificate profile, idempotency, the unbound limit, every
//! refusal, rate limiting, read-only mode, the body limit and concurrent enrollments.

use ca_client::protocol::{
    CertificateState, DeviceRecord, EventType, IssuedCertificate, Metadata, Outcome, enrollment_limit_message,
};
use ca_server::mdm::{MdmError, MdmVerdict, NotManagedReason};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::*;

use crate::harness::{Device, TestCa, csr, events, expect_error, openssl_csr, p256, run};

#[tokio::test]
async fn metadata_describes_the_ca() {
    let ca = TestCa::start().await;
    let response = ca.anonymous().get(ca.url("/api/v1/metadata?platform=macos")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json; charset=utf-8");
    let metadata: Metadata = response.json().await.expect("json");
    assert_eq!(metadata.cert_auth_domain, ca.env.url);
    assert_eq!(metadata.issuer_common_name, "MTLS Certificate Authority");
    assert_eq!(metadata.ca_certificates, [ca.issuer_pem()]);
    assert_eq!(metadata.certificate_lifetime_days, 365);
    assert_eq!(metadata.renew_before_days, 30);
    assert_eq!(metadata.max_unbound_certificates, 5);
    assert!(!metadata.read_only);

    let response = ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get");
    assert_eq!(response.status(), 200, "platform is optional");
    let response = ca.anonymous().get(ca.url("/api/v1/metadata?platform=windows")).send().await.expect("get");
    expect_error(response, 400, "invalid_request").await;
    let response = ca.anonymous().get(ca.url("/api/v1/nothing-here")).send().await.expect("get");
    expect_error(response, 404, "not_found").await;
    let response = ca.anonymous().delete(ca.url("/api/v1/metadata")).send().await.expect("delete");
    expect_error(response, 405, "method_not_allowed").await;

    // A clean stop drains the listener and closes the store.
    let url = ca.url("/api/v1/metadata");
    let client = ca.anonymous();
    ca.stop().await;
    assert!(client.get(url).send().await.is_err(), "nothing listens after the stop");
}

#[tokio::test]
async fn issued_certificates_follow_the_profile_and_pass_openssl_and_webpki() {
    let ca = TestCa::start().await;
    let device = Device::new(1);
    let key = p256();
    let issued = ca.enroll_ok(&device.request(&key)).await;
    assert_eq!(issued.state, CertificateState::Unbound);
    assert_eq!(issued.chain, [ca.issuer_pem()]);
    assert_eq!(issued.serial_number.len(), 32);
    assert!(issued.serial_number.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let lifetime = issued.not_after - issued.not_before;
    assert_eq!(
        lifetime,
        chrono::Duration::days(365) + chrono::Duration::minutes(5),
        "lifetime plus backdate"
    );

    // The profile, read back with x509-parser.
    let der = CertificateDer::from_pem_slice(issued.certificate.as_bytes()).expect("pem");
    let (_, cert) = X509Certificate::from_der(&der).expect("parse");
    assert_eq!(hex::encode(cert.raw_serial()), issued.serial_number);
    let subject: Vec<_> = cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
    assert_eq!(subject, ["Device Trust"], "the CSR's subject is ignored");
    let issuer: Vec<_> = cert.issuer().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
    assert_eq!(issuer, ["MTLS Certificate Authority"]);
    let eku = cert.extended_key_usage().expect("eku").expect("eku present").value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    let ku = cert.key_usage().expect("ku").expect("ku present").value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let bc = cert.basic_constraints().expect("bc").expect("bc present").value;
    assert!(!bc.ca);
    let san = cert.subject_alternative_name().expect("san").expect("san present").value;
    let uris: Vec<_> = san
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => *u,
            other => panic!("unexpected SAN {other:?}, the CSR's SANs must be ignored"),
        })
        .collect();
    assert_eq!(uris, [format!("urn:devicetrust:device:{}", device.udid)]);

    // OpenSSL: a client certificate of the issuer.
    let dir = tempfile::tempdir().expect("tempdir");
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &issued.certificate).expect("write");
    let out = run(std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca.env.issuer_certificate)
        .arg(&leaf));
    assert!(out.trim_end().ends_with(": OK"), "{out}");
    let text = run(std::process::Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&leaf));
    for needle in [
        "TLS Web Client Authentication",
        "CA:FALSE",
        "Digital Signature",
        &format!("URI:urn:devicetrust:device:{}", device.udid),
    ] {
        assert!(text.contains(needle), "openssl x509 -text lacks {needle}:\n{text}");
    }

    // webpki: client-auth path validation to the issuer.
    let issuer_der = ca.issuer_der();
    let anchor = webpki::anchor_from_trusted_cert(&issuer_der).expect("anchor");
    let ee = webpki::EndEntityCert::try_from(&der).expect("ee");
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(chrono::Utc::now().timestamp()).expect("time"),
    ));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        std::slice::from_ref(&anchor),
        &[],
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .expect("webpki accepts it for client auth");
    assert!(
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None
        )
        .is_err(),
        "and not for server auth"
    );
}

#[tokio::test]
async fn sixth_unbound_certificate_is_refused_and_repeats_use_no_slot() {
    let ca = TestCa::start().await;
    let device = Device::new(2);
    let keys: Vec<_> = (0..6).map(|_| p256()).collect();
    let mut serials = Vec::new();
    for key in &keys[..5] {
        serials.push(ca.enroll_ok(&device.request(key)).await.serial_number);
    }

    // A repeat with the first key: same certificate, 200, no slot used.
    let response = ca.enroll(&device.request(&keys[0])).await;
    assert_eq!(response.status(), 200);
    let repeat: IssuedCertificate = response.json().await.expect("json");
    assert_eq!(repeat.serial_number, serials[0]);

    let message =
        expect_error(ca.enroll(&device.request(&keys[5])).await, 409, "enrollment_limit_reached").await;
    assert_eq!(message, "Maximum enrollment limit of 5 certificates for a device is reached");
    assert_eq!(message, enrollment_limit_message(5));

    let record: DeviceRecord =
        ca.admin_get(&format!("/api/v1/admin/devices/{}", device.udid)).await.json().await.expect("json");
    assert_eq!(record.certificates.len(), 5);

    // Binding one at first use frees its slot.
    let first_pem = repeat.certificate;
    let verify = ca
        .with_identity(&first_pem, &keys[0])
        .get(ca.url("/api/v1/device-trust/verify"))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 200);
    ca.enroll_ok(&device.request(&keys[5])).await;

    // Another device is not affected by this one's limit.
    ca.enroll_ok(&Device::new(3).request(&p256())).await;

    let limit_failures = events(&ca)
        .await
        .into_iter()
        .filter(|e| e.outcome == Outcome::Failure && e.reason.as_deref() == Some("enrollment_limit_reached"))
        .count();
    assert_eq!(limit_failures, 1);
}

#[tokio::test]
async fn enrollment_refusals_have_the_contract_codes_and_are_logged() {
    let ca = TestCa::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa1024 =
        openssl_csr(dir.path(), "rsa1024", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]);
    let rsa2048 =
        openssl_csr(dir.path(), "rsa2048", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    let p384 = openssl_csr(dir.path(), "p384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
    let p521 = openssl_csr(dir.path(), "p521", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"]);
    let ed25519 = openssl_csr(dir.path(), "ed25519", &["-algorithm", "ED25519"]);
    let tampered = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut der = b64.decode(csr(&p256())).expect("b64");
        let n = der.len();
        der[n - 5] ^= 0x40;
        b64.encode(der)
    };
    ca.mdm.answer("C02TEST00020", Ok(MdmVerdict::NotManaged(NotManagedReason::Unmanaged)));
    ca.mdm.answer("C02TEST00021", Ok(MdmVerdict::NotManaged(NotManagedReason::UdidMismatch)));
    ca.mdm.answer("C02TEST00022", Err(MdmError::unavailable("jamf answered 500")));

    enum Body {
        Json(serde_json::Value),
        Raw(&'static str),
    }
    let good = |n: u32, csr: &str| {
        let mut request = serde_json::to_value(Device::new(n).request(&p256())).expect("json");
        request["csr"] = csr.into();
        request
    };
    let cases: Vec<(&str, Option<&str>, Body, u16, &str)> = vec![
        ("ok/rsa-2048", None, Body::Json(good(10, &rsa2048)), 201, ""),
        ("ok/p384", None, Body::Json(good(11, &p384)), 201, ""),
        ("fail/no-token", Some(""), Body::Json(good(12, &csr(&p256()))), 401, "invalid_token"),
        (
            "fail/wrong-token",
            Some("0123456789abcdef0123"),
            Body::Json(good(12, &csr(&p256()))),
            401,
            "invalid_token",
        ),
        ("fail/not-json", None, Body::Raw("{not json"), 400, "invalid_request"),
        ("fail/missing-field", None, Body::Raw(r#"{"clientVersion": "1.0.0"}"#), 400, "invalid_request"),
        (
            "fail/bad-platform",
            None,
            Body::Json({
                let mut r = good(13, &csr(&p256()));
                r["platform"] = "windows".into();
                r
            }),
            400,
            "invalid_request",
        ),
        (
            "fail/udid-with-slash",
            None,
            Body::Json({
                let mut r = good(13, &csr(&p256()));
                r["device"]["udid"] = "a/b".into();
                r
            }),
            400,
            "invalid_request",
        ),
        ("fail/csr-not-base64", None, Body::Json(good(14, "not base64!")), 400, "invalid_csr"),
        ("fail/csr-not-der", None, Body::Json(good(14, "AAAA")), 400, "invalid_csr"),
        ("fail/csr-bad-signature", None, Body::Json(good(14, &tampered)), 400, "invalid_csr"),
        ("fail/csr-rsa-1024", None, Body::Json(good(14, &rsa1024)), 400, "invalid_csr"),
        ("fail/csr-p521", None, Body::Json(good(14, &p521)), 400, "invalid_csr"),
        ("fail/csr-ed25519", None, Body::Json(good(14, &ed25519)), 400, "invalid_csr"),
        ("fail/not-managed", None, Body::Json(good(20, &csr(&p256()))), 403, "device_not_managed"),
        ("fail/udid-mismatch", None, Body::Json(good(21, &csr(&p256()))), 403, "device_not_managed"),
        ("fail/mdm-down", None, Body::Json(good(22, &csr(&p256()))), 503, "mdm_unavailable"),
    ];
    for (name, token, body, status, code) in cases {
        let mut request = ca.anonymous().post(ca.url("/api/v1/enroll"));
        match token {
            None => request = request.bearer_auth(ca.enrollment_token()),
            Some("") => {}
            Some(other) => request = request.bearer_auth(other),
        }
        request = match body {
            Body::Json(value) => request.json(&value),
            Body::Raw(text) => request.header("content-type", "application/json").body(text),
        };
        let response = request.send().await.expect("send");
        if status == 201 {
            assert_eq!(response.status(), 201, "{name}: {:?}", response.text().await);
            continue;
        }
        let message = expect_error(response, status, code).await;
        assert!(!message.contains("jamf answered 500"), "{name}: internal cause leaked: {message}");
    }

    let failures: Vec<_> = events(&ca)
        .await
        .into_iter()
        .filter(|e| e.outcome == Outcome::Failure)
        .map(|e| {
            assert_eq!(e.event_type, EventType::Enroll);
            assert_eq!(e.display_message, "Device Trust certificate enrollment");
            e.reason.expect("reason")
        })
        .collect();
    // The two wrong tokens are counted, not recorded: nothing unauthenticated is written.
    assert_eq!(ca.ca.metrics().snapshot().unauthenticated_refusals, 2);
    assert_eq!(
        failures,
        [
            "invalid_request",
            "invalid_request",
            "invalid_request",
            "invalid_request",
            "invalid_csr",
            "invalid_csr",
            "invalid_csr",
            "invalid_csr",
            "invalid_csr",
            "invalid_csr",
            "device_not_managed",
            "device_not_managed",
            "mdm_unavailable",
        ]
    );
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_before_parsing() {
    let ca = TestCa::start().await;
    let big = format!("{{\"csr\": \"{}\"}}", "A".repeat(70 * 1024));
    let response = ca
        .anonymous()
        .post(ca.url("/api/v1/enroll"))
        .bearer_auth(ca.enrollment_token())
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("send");
    expect_error(response, 413, "payload_too_large").await;

    // Without Content-Length (chunked), the limit holds while reading.
    let mut request = format!(
        "POST /api/v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        ca.enrollment_token()
    )
    .into_bytes();
    for chunk in big.as_bytes().chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = ca.raw(&request).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
}

#[tokio::test]
async fn enrollment_is_rate_limited_per_device() {
    let ca = TestCa::start_with(|config| config.limits.enrollments_per_minute = 2).await;
    let device = Device::new(30);
    ca.enroll_ok(&device.request(&p256())).await;
    ca.enroll_ok(&device.request(&p256())).await;
    let response = ca.enroll(&device.request(&p256())).await;
    let retry_after: u64 =
        response.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_error(response, 429, "rate_limited").await;
    // Another device is not limited.
    ca.enroll_ok(&Device::new(31).request(&p256())).await;
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_says_so() {
    let ca = TestCa::start().await;
    let device = Device::new(40);
    let key = p256();
    let issued = ca.enroll_ok(&device.request(&key)).await;
    ca.ca.set_read_only(true);

    let metadata: Metadata =
        ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get").json().await.expect("json");
    assert!(metadata.read_only);
    expect_error(ca.enroll(&device.request(&p256())).await, 503, "read_only").await;
    let client = ca.with_identity(&issued.certificate, &key);
    let renew = client
        .post(ca.url("/api/v1/renew"))
        .json(&serde_json::json!({"clientVersion": "1.0.0", "csr": csr(&p256())}))
        .send()
        .await
        .expect("renew");
    expect_error(renew, 503, "read_only").await;
    expect_error(ca.admin_post("/api/v1/admin/users/alice/revoke").await, 503, "read_only").await;

    // Reads keep working; verify answers without binding.
    let status = client.get(ca.url("/api/v1/certificate")).send().await.expect("status");
    assert_eq!(status.status(), 200);
    let verify: serde_json::Value = client
        .get(ca.url("/api/v1/device-trust/verify"))
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("json");
    assert_eq!(verify["trusted"], true);
    assert_eq!(verify["state"], "unbound");

    ca.ca.set_read_only(false);
    ca.enroll_ok(&device.request(&p256())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_enrollments_issue_exactly_one_certificate() {
    let ca = std::sync::Arc::new(TestCa::start().await);
    let device = Device::new(50);
    let request = device.request(&p256());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let ca = ca.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let response = ca.enroll(&request).await;
            let status = response.status().as_u16();
            let issued: IssuedCertificate = response.json().await.expect("json");
            (status, issued.serial_number)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("join"));
    }
    let created = results.iter().filter(|(status, _)| *status == 201).count();
    let repeated = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!((created, repeated), (1, 31), "{results:?}");
    assert!(results.iter().all(|(_, serial)| *serial == results[0].1));
    let record: DeviceRecord =
        ca.admin_get(&format!("/api/v1/admin/devices/{}", device.udid)).await.json().await.expect("json");
    assert_eq!(record.certificates.len(), 1);
    let issues = events(&ca).await.into_iter().filter(|e| e.event_type == EventType::Issue).count();
    assert_eq!(issues, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enrollments_with_new_keys_never_pass_the_limit() {
    let ca = std::sync::Arc::new(TestCa::start().await);
    let device = Device::new(51);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let ca = ca.clone();
        let request = device.request(&p256());
        tasks.push(tokio::spawn(async move { ca.enroll(&request).await.status().as_u16() }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("join"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [[201; 5].as_slice(), [409; 11].as_slice()].concat());
}
