//! The contract's answers over a real HTTPS exchange: every success shape, every error code,
//! and answers that are not the contract's.

use std::time::Duration;

use ca_client::protocol::{
    DeviceInfo, EnrollRequest, ErrorBody, ErrorCode, Metadata, Platform, Reaction, enrollment_limit_message,
};
use ca_client::{ClientError, user_agent};

use crate::support::{
    Reply, ServerTls, TestServer, client_for, guarded, issued_json, metadata_json, options_for,
};

const TOKEN: &str = "enr-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn enroll_request() -> EnrollRequest {
    EnrollRequest {
        client_version: "1.0.0".into(),
        platform: Platform::Macos,
        device: DeviceInfo {
            udid: "564D7F2A-0C3B-4E1A-9D7E-5A1B2C3D4E5F".into(),
            serial_number: "C02XK0AAJGH6".into(),
            display_name: "Alice's MacBook".into(),
            os_version: "14.5".into(),
        },
        user: "alice".into(),
        csr: "MIIBNzCB3gIBADB8".into(),
    }
}

#[tokio::test]
async fn ok_metadata_parses_and_sends_platform_user_agent_and_accept() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(200, &metadata_json())).await;
    let mut options = options_for(server.addr);
    options.user_agent = user_agent("1.2.3", Platform::Macos, "14.5");
    let client = ca_client::CaClient::new(options).expect("client");

    let metadata = guarded(client.metadata(Platform::Macos)).await.expect("metadata");

    let expected: Metadata = serde_json::from_value(metadata_json()).expect("example");
    assert_eq!(metadata, expected);
    let request = server.only_request();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/api/v1/metadata");
    assert_eq!(request.query.as_deref(), Some("platform=macos"));
    assert_eq!(request.header("user-agent"), Some("devicetrust-agent/1.2.3 (macos; 14.5)"));
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.header("authorization"), None);
}

#[tokio::test]
async fn ok_default_user_agent_names_this_version_and_platform() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(200, &metadata_json())).await;
    guarded(client_for(&server).metadata(Platform::Linux)).await.expect("metadata");
    let expected =
        format!("devicetrust-agent/{} ({}; unknown)", env!("CARGO_PKG_VERSION"), Platform::current());
    assert_eq!(server.only_request().header("user-agent"), Some(expected.as_str()));
}

#[tokio::test]
async fn ok_enroll_201_is_created_and_200_is_the_idempotent_repeat() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(201, &issued_json())).await;
    let client = client_for(&server);
    let request = enroll_request();

    let created = guarded(client.enroll(TOKEN, &request)).await.expect("201");
    assert!(created.created);
    assert_eq!(created.certificate.serial_number, "8badf00d");
    assert_eq!(created.certificate.chain.len(), 1);

    let recorded = server.only_request();
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/api/v1/enroll");
    assert_eq!(recorded.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(recorded.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(recorded.json(), serde_json::to_value(&request).expect("json"));
    assert_eq!(recorded.json()["device"]["serialNumber"], "C02XK0AAJGH6");

    server.set_reply(Reply::json(200, &issued_json()));
    let repeated = guarded(client.enroll(TOKEN, &request)).await.expect("200");
    assert!(!repeated.created);
    assert_eq!(repeated.certificate, created.certificate);
}

/// The contract table, restated here so that a change to the mapping fails this test.
const ERROR_TABLE: [(&str, u16, Reaction); 13] = [
    ("invalid_request", 400, Reaction::Fail),
    ("invalid_csr", 400, Reaction::Fail),
    ("payload_too_large", 413, Reaction::Fail),
    ("invalid_token", 401, Reaction::Fail),
    ("client_certificate_required", 401, Reaction::Reenroll),
    ("device_not_managed", 403, Reaction::RetryNextRun),
    ("certificate_revoked", 403, Reaction::Uninstall),
    ("certificate_expired", 403, Reaction::Reenroll),
    ("enrollment_limit_reached", 409, Reaction::Fail),
    ("rate_limited", 429, Reaction::RetryLater),
    ("read_only", 503, Reaction::RetryLater),
    ("mdm_unavailable", 503, Reaction::RetryLater),
    ("internal", 500, Reaction::RetryLater),
];

#[tokio::test]
async fn fail_every_error_code_becomes_a_typed_error_with_its_reaction() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::bytes(500, "")).await;
    let client = client_for(&server);
    for (name, status, reaction) in ERROR_TABLE {
        let message = if name == "enrollment_limit_reached" {
            enrollment_limit_message(5)
        } else {
            format!("refused: {name}")
        };
        let body = ErrorBody::new(ErrorCode::from(name), message.clone());
        let mut reply = Reply::json(status, &serde_json::to_value(&body).expect("json"));
        let retry_after = (name == "rate_limited").then(|| Duration::from_secs(42));
        if retry_after.is_some() {
            reply = reply.header("retry-after", "42");
        }
        server.set_reply(reply);

        let error = guarded(client.enroll(TOKEN, &enroll_request())).await.expect_err(name);

        assert_eq!(
            error,
            ClientError::Ca { status, code: ErrorCode::from(name), message: message.clone(), retry_after },
            "fail/{name}"
        );
        assert!(!matches!(error.code(), Some(ErrorCode::Unknown(_))), "fail/{name} is a known code");
        assert_eq!(error.reaction(), reaction, "fail/{name}");
        assert_eq!(error.is_retryable(), matches!(reaction, Reaction::RetryLater | Reaction::RetryNextRun));
        assert_eq!(error.retry_after(), retry_after, "fail/{name}");
        assert!(error.to_string().contains(name), "fail/{name}: {error}");
        assert!(!format!("{error} {error:?}").contains(TOKEN), "fail/{name} leaks the token");
    }
    assert_eq!(server.recorded().len(), ERROR_TABLE.len());
}

#[tokio::test]
async fn fail_an_unknown_code_is_kept_and_retried_later() {
    let body = serde_json::json!({"error": {"code": "quantum_flux", "message": "new in v2"}});
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(418, &body)).await;
    let error = guarded(client_for(&server).metadata(Platform::Macos)).await.expect_err("418");
    assert_eq!(error.code(), Some(&ErrorCode::Unknown("quantum_flux".into())));
    assert_eq!(error.reaction(), Reaction::RetryLater);
}

/// Whether an error is the one a case expects.
type Check = fn(&ClientError) -> bool;

#[tokio::test]
async fn fail_answers_that_are_not_the_contract() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::bytes(200, "")).await;
    let client = client_for(&server);
    let cases: Vec<(&str, Reply, Check, Reaction)> = vec![
        (
            "fail/garbage-json",
            Reply::bytes(200, "{\"certAuthDomain\": 12, \"issuerCommonName\"")
                .header("content-type", "application/json"),
            |e| matches!(e, ClientError::Malformed { status: 200, .. }),
            Reaction::RetryLater,
        ),
        (
            "fail/not-json",
            Reply::bytes(200, "<html>hello</html>"),
            |e| matches!(e, ClientError::Malformed { status: 200, .. }),
            Reaction::RetryLater,
        ),
        (
            "fail/empty",
            Reply::bytes(200, ""),
            |e| matches!(e, ClientError::Malformed { status: 200, .. }),
            Reaction::RetryLater,
        ),
        (
            "fail/wrong-types",
            Reply::json(200, &serde_json::json!({"certAuthDomain": ["x"]})),
            |e| matches!(e, ClientError::Malformed { status: 200, .. }),
            Reaction::RetryLater,
        ),
        (
            "fail/204",
            Reply::bytes(204, ""),
            |e| matches!(e, ClientError::Malformed { status: 204, .. }),
            Reaction::RetryLater,
        ),
        (
            "fail/proxy-502-page",
            Reply::bytes(502, "<html>Bad Gateway</html>"),
            |e| *e == ClientError::UnexpectedStatus { status: 502, retry_after: None },
            Reaction::RetryLater,
        ),
        (
            "fail/404-page",
            Reply::bytes(404, "not found"),
            |e| *e == ClientError::UnexpectedStatus { status: 404, retry_after: None },
            Reaction::RetryNextRun,
        ),
        (
            "fail/redirect-not-followed",
            Reply::bytes(302, "").header("location", "https://127.0.0.1:1/elsewhere"),
            |e| *e == ClientError::UnexpectedStatus { status: 302, retry_after: None },
            Reaction::RetryNextRun,
        ),
        (
            "fail/error-body-missing-message",
            Reply::json(400, &serde_json::json!({"error": {"code": "invalid_request"}})),
            |e| matches!(e, ClientError::UnexpectedStatus { status: 400, .. }),
            Reaction::RetryNextRun,
        ),
    ];
    for (name, reply, check, reaction) in cases {
        server.set_reply(reply);
        server.clear();
        let error = guarded(client.metadata(Platform::Macos)).await.expect_err(name);
        assert!(check(&error), "{name}: {error:?}");
        assert_eq!(error.reaction(), reaction, "{name}");
        assert_eq!(server.recorded().len(), 1, "{name}: one request, no redirect followed");
    }
}

#[tokio::test]
async fn fail_an_issued_answer_that_lies_is_an_error_not_data() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::bytes(200, "")).await;
    let client = client_for(&server);
    let with = |field: &str, value: serde_json::Value| {
        let mut body = issued_json();
        body[field] = value;
        body
    };
    let cases = [
        ("fail/serial-differs", with("serialNumber", "8badf00e".into())),
        ("fail/serial-not-hex", with("serialNumber", "zz".into())),
        ("fail/certificate-not-pem", with("certificate", "MIIB...".into())),
        (
            "fail/certificate-two-pems",
            with("certificate", format!("{0}{0}", crate::support::fixture_text("client.pem")).into()),
        ),
        (
            "fail/certificate-pem-of-garbage",
            with("certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into()),
        ),
        ("fail/chain-garbage", with("chain", serde_json::json!(["not a pem"]))),
        ("fail/state-unknown", with("state", "sideways".into())),
        ("fail/not-after-not-a-time", with("notAfter", "next year".into())),
    ];
    for (name, body) in cases {
        server.set_reply(Reply::json(201, &body));
        let error = guarded(client.enroll(TOKEN, &enroll_request())).await.expect_err(name);
        assert!(matches!(error, ClientError::Malformed { status: 201, .. }), "{name}: {error:?}");
        assert_eq!(error.reaction(), Reaction::RetryLater, "{name}");
    }
    // The control: the same answer, unmodified, is accepted.
    server.set_reply(Reply::json(201, &issued_json()));
    guarded(client.enroll(TOKEN, &enroll_request())).await.expect("ok/unmodified");
}

#[tokio::test]
async fn fail_a_bad_token_is_refused_before_any_request_and_never_echoed() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(201, &issued_json())).await;
    let client = client_for(&server);
    let cases =
        [("fail/empty", ""), ("fail/newline", "abc\ndef-secret-part"), ("fail/nul", "abc\0secret-part")];
    for (name, token) in cases {
        let error = guarded(client.enroll(token, &enroll_request())).await.expect_err(name);
        assert!(matches!(error, ClientError::InvalidConfiguration { .. }), "{name}: {error:?}");
        assert!(!format!("{error} {error:?}").contains("secret-part"), "{name} leaks the token");
        assert_eq!(error.reaction(), Reaction::Fail, "{name}");
    }
    assert!(server.recorded().is_empty());
}
