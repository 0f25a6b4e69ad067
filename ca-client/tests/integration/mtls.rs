//! Renewal and status over mutual TLS, with the client key reachable only through
//! `KeySigner`.

use std::sync::Arc;

use ca_client::protocol::{CertificateState, Platform, Reaction, RenewRequest};
use ca_client::signer::{KeyAlgorithm, KeySigner, SoftwareKey};
use ca_client::{CaClient, ClientError};

use crate::support::{
    CountingSigner, RefusingSigner, Reply, ServerTls, TestServer, fixture_cert, fixture_key, guarded,
    issued_json, options_for,
};

const MTLS: ServerTls = ServerTls { cert: "server", require_client_ca: Some("ca.pem") };

fn renew_request() -> RenewRequest {
    RenewRequest { client_version: "1.0.0".into(), csr: "MIIBNzCB3gIBADB8".into() }
}

fn mtls_client(server: &TestServer, key: Arc<dyn KeySigner>) -> CaClient {
    CaClient::with_identity(options_for(server.addr), vec![fixture_cert("client.pem")], key).expect("client")
}

#[tokio::test]
async fn ok_renew_presents_the_client_certificate_signed_through_the_trait() {
    let server = TestServer::start(MTLS, Reply::json(201, &issued_json())).await;
    let signer = Arc::new(CountingSigner::new(fixture_key("client.key.pem")));
    let client = mtls_client(&server, signer.clone());

    let issued = guarded(client.renew(&renew_request())).await.expect("renew");

    assert!(issued.created);
    assert_eq!(issued.certificate.serial_number, "8badf00d");
    let request = server.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/v1/renew");
    assert_eq!(request.json(), serde_json::to_value(renew_request()).expect("json"));
    assert_eq!(request.header("authorization"), None, "renewal is authenticated by the certificate only");
    assert_eq!(request.client_cert.as_deref(), Some(fixture_cert("client.pem").as_ref()));
    assert!(signer.count() >= 1, "the handshake was signed through KeySigner");
}

#[tokio::test]
async fn ok_certificate_status_over_mutual_tls() {
    let body = serde_json::json!({
        "serialNumber": "8badf00d", "state": "revoked", "boundUser": "alice",
        "notAfter": "2027-11-23T10:00:00Z", "device": {"udid": "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F"}
    });
    let server = TestServer::start(MTLS, Reply::json(200, &body)).await;
    let signer = Arc::new(CountingSigner::new(fixture_key("client.key.pem")));
    let status = guarded(mtls_client(&server, signer).certificate_status()).await.expect("status");
    assert_eq!(status.serial_number, "8badf00d");
    assert_eq!(status.state, CertificateState::Revoked);
    assert_eq!(status.bound_user.as_deref(), Some("alice"));
    let request = server.only_request();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/api/v1/certificate"));
    assert_eq!(request.client_cert.as_deref(), Some(fixture_cert("client.pem").as_ref()));
}

#[tokio::test]
async fn fail_mutual_tls_calls_without_an_identity_send_nothing() {
    let server = TestServer::start(MTLS, Reply::json(201, &issued_json())).await;
    let client = CaClient::new(options_for(server.addr)).expect("client");
    let renew = guarded(client.renew(&renew_request())).await.expect_err("renew");
    assert_eq!(renew, ClientError::NoClientIdentity { endpoint: "/api/v1/renew" });
    let status = guarded(client.certificate_status()).await.expect_err("status");
    assert_eq!(status, ClientError::NoClientIdentity { endpoint: "/api/v1/certificate" });
    assert!(server.recorded().is_empty());
}

#[tokio::test]
async fn fail_a_server_requiring_a_client_certificate_refuses_a_client_without_one() {
    let server = TestServer::start(MTLS, Reply::json(200, &issued_json())).await;
    let client = CaClient::new(options_for(server.addr)).expect("client");
    let error = guarded(client.metadata(Platform::Macos)).await.expect_err("refused");
    assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    assert!(server.recorded().is_empty());
}

#[tokio::test]
async fn fail_a_key_store_that_refuses_to_sign_fails_the_handshake() {
    let server = TestServer::start(MTLS, Reply::json(201, &issued_json())).await;
    let client = mtls_client(&server, Arc::new(RefusingSigner(fixture_key("client.key.pem"))));
    let error = guarded(client.renew(&renew_request())).await.expect_err("refused");
    assert!(
        matches!(&error, ClientError::Tls { reason, .. } if reason.contains("could not sign")),
        "{error:?}"
    );
    assert_eq!(error.reaction(), Reaction::RetryLater);
    assert!(server.recorded().is_empty());
}

#[tokio::test]
async fn fail_a_client_certificate_from_another_ca_is_refused_by_the_server() {
    let server = TestServer::start(
        ServerTls { cert: "server", require_client_ca: Some("other-ca.pem") },
        Reply::json(201, &issued_json()),
    )
    .await;
    let client = mtls_client(&server, Arc::new(CountingSigner::new(fixture_key("client.key.pem"))));
    let error = guarded(client.renew(&renew_request())).await.expect_err("refused");
    assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
    assert!(server.recorded().is_empty());
}

#[test]
fn fail_an_identity_whose_certificate_is_for_another_key_is_invalid_configuration() {
    let url = url::Url::parse("https://127.0.0.1:1/").expect("url");
    let options = ca_client::ClientOptions::new(url).with_pinned_roots(crate::support::fixture("ca.pem"));
    let other = Arc::new(SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256).expect("generate"));
    let error =
        CaClient::with_identity(options, vec![fixture_cert("client.pem")], other).expect_err("mismatch");
    assert!(
        matches!(&error, ClientError::InvalidConfiguration { reason } if reason.contains("8badf00d")),
        "{error:?}"
    );
}
