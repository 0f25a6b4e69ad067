//! The TLS layer: anonymous clients, foreign client certificates, the second listener for
//! the cert-auth domain, and the agent's own client (`ca_client::CaClient`) end to end.

use std::sync::Arc;

use ca_client::protocol::{CertificateState, Metadata, Platform, RenewRequest};
use ca_client::signer::{KeyAlgorithm, SoftwareKey};
use ca_client::{CaClient, ClientOptions};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::harness::{Device, TestCa, csr, p256};

#[tokio::test]
async fn a_certificate_of_another_ca_fails_the_handshake() {
    let ca = TestCa::start().await;
    let key = p256();
    let foreign = rcgen::CertificateParams::new(vec!["device".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let result = ca.with_identity(&foreign.pem(), &key).get(ca.url("/api/v1/certificate")).send().await;
    assert!(result.is_err(), "the handshake must fail: {result:?}");
    // The listener is unaffected.
    let response = ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_cert_auth_listener_serves_verify_only() {
    let ca = TestCa::start_with_cert_auth_listener().await;
    let cert_auth = ca.cert_auth_url.clone().expect("second listener");
    let metadata: Metadata =
        ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get").json().await.expect("json");
    assert_eq!(metadata.cert_auth_domain, cert_auth);

    let key = p256();
    let issued = ca.enroll_ok(&Device::new(1).request(&key)).await;
    let client = ca.with_identity(&issued.certificate, &key);
    let verify = client.get(format!("{cert_auth}/api/v1/device-trust/verify")).send().await.expect("verify");
    assert_eq!(verify.status(), 200);
    let crl = client.get(format!("{cert_auth}/crl")).send().await.expect("crl");
    assert_eq!(crl.status(), 200);
    let enroll = client.post(format!("{cert_auth}/api/v1/enroll")).body("{}").send().await.expect("enroll");
    assert_eq!(enroll.status(), 404);
}

#[tokio::test]
async fn the_agents_client_enrolls_renews_and_reads_status() {
    let ca = TestCa::start().await;
    let roots = std::fs::read(&ca.env.ca_bundle).expect("bundle");
    let options = ClientOptions::new(ca.env.url.parse().expect("url")).with_pinned_roots(roots);
    let client = CaClient::new(options.clone()).expect("client");
    let metadata = client.metadata(Platform::Macos).await.expect("metadata");
    assert_eq!(metadata.issuer_common_name, "MTLS Certificate Authority");

    let key = Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("key"));
    let mut request = Device::new(1).request(&p256());
    request.csr = ca_client::csr::create_csr(key.as_ref(), "agent").expect("csr").to_base64();
    let first = client.enroll(ca.enrollment_token(), &request).await.expect("enroll");
    assert!(first.created);
    let repeat = client.enroll(ca.enrollment_token(), &request).await.expect("repeat");
    assert!(!repeat.created);
    assert_eq!(repeat.certificate.serial_number, first.certificate.serial_number);

    let chain = vec![CertificateDer::from_pem_slice(first.certificate.certificate.as_bytes()).expect("pem")];
    let mtls = CaClient::with_identity(options, chain, key).expect("identity");
    let status = mtls.certificate_status().await.expect("status");
    assert_eq!(status.state, CertificateState::Unbound);
    let renewed =
        mtls.renew(&RenewRequest { client_version: "1.0.0".into(), csr: csr(&p256()) }).await.expect("renew");
    assert!(renewed.created);
    assert_ne!(renewed.certificate.serial_number, first.certificate.serial_number);
}
