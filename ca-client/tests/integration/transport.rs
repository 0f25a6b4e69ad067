//! Transport behaviour: the body cap, timeouts, refused connections and pinned roots.

use std::time::Duration;

use ca_client::client::MAX_RESPONSE_BODY;
use ca_client::protocol::{Metadata, Platform, Reaction};
use ca_client::{CaClient, ClientError, ClientOptions};

use crate::support::{
    Reply, ReplyBody, ServerTls, SilentServer, TestServer, client_for, fixture, guarded, metadata_json,
    options_for,
};

fn too_large(error: &ClientError) -> bool {
    matches!(error, ClientError::BodyTooLarge { limit, .. } if *limit == MAX_RESPONSE_BODY)
}

/// The metadata example padded with an unknown field to exactly `len` bytes of JSON.
fn metadata_of_len(len: usize) -> Vec<u8> {
    let mut value = metadata_json();
    value["padding"] = "".into();
    let base = serde_json::to_vec(&value).expect("json").len();
    value["padding"] = "x".repeat(len - base).into();
    let body = serde_json::to_vec(&value).expect("json");
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn ok_a_body_of_exactly_the_cap_is_read_whole_or_chunked() {
    let body = metadata_of_len(MAX_RESPONSE_BODY);
    let server = TestServer::start(ServerTls::PLAIN, Reply::bytes(200, body.clone())).await;
    let client = client_for(&server);
    let expected: Metadata = serde_json::from_value(metadata_json()).expect("example");
    assert_eq!(guarded(client.metadata(Platform::Macos)).await.expect("with length"), expected);

    let chunks = body.chunks(100_000).map(<[u8]>::to_vec).collect();
    server.set_reply(Reply {
        status: 200,
        headers: Vec::new(),
        body: ReplyBody::Chunks { chunks, then_hang: false },
    });
    assert_eq!(guarded(client.metadata(Platform::Macos)).await.expect("chunked"), expected);
}

#[tokio::test]
async fn fail_one_byte_over_the_cap_with_content_length() {
    let server =
        TestServer::start(ServerTls::PLAIN, Reply::bytes(200, metadata_of_len(MAX_RESPONSE_BODY + 1))).await;
    let error = guarded(client_for(&server).metadata(Platform::Macos)).await.expect_err("too large");
    assert!(too_large(&error), "{error:?}");
    assert_eq!(error.reaction(), Reaction::RetryLater);
}

/// The declared length alone refuses the answer: the server sends one byte of a 2 MiB body
/// and then nothing, so a client that waited for the body would time out instead.
#[tokio::test]
async fn fail_a_declared_length_over_the_cap_is_refused_before_reading() {
    let reply = Reply {
        status: 200,
        headers: vec![("content-length".into(), (2 * MAX_RESPONSE_BODY).to_string())],
        body: ReplyBody::Chunks { chunks: vec![b"{".to_vec()], then_hang: true },
    };
    let server = TestServer::start(ServerTls::PLAIN, reply).await;
    let error = guarded(client_for(&server).metadata(Platform::Macos)).await.expect_err("too large");
    assert!(too_large(&error), "{error:?}");
}

/// A chunked body with no length is cut off while it streams: the server sends just over
/// 1 MiB and then never ends the body, so a client that buffered everything first would time
/// out instead.
#[tokio::test]
async fn fail_a_chunked_body_over_the_cap_is_refused_while_streaming() {
    let chunks = vec![vec![b' '; 64 * 1024]; MAX_RESPONSE_BODY / (64 * 1024) + 1];
    let reply =
        Reply { status: 200, headers: Vec::new(), body: ReplyBody::Chunks { chunks, then_hang: true } };
    let server = TestServer::start(ServerTls::PLAIN, reply).await;
    let error = guarded(client_for(&server).metadata(Platform::Macos)).await.expect_err("too large");
    assert!(too_large(&error), "{error:?}");
}

#[tokio::test]
async fn fail_a_server_that_never_answers_times_out() {
    let server = TestServer::start(
        ServerTls::PLAIN,
        Reply { status: 200, headers: Vec::new(), body: ReplyBody::Hang },
    )
    .await;
    let mut options = options_for(server.addr);
    options.timeout = Duration::from_secs(2);
    let client = CaClient::new(options).expect("client");
    let error = guarded(client.metadata(Platform::Macos)).await.expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert_eq!(error.reaction(), Reaction::RetryLater);
    assert_eq!(server.recorded().len(), 1, "the request arrived; only the answer is missing");
}

#[tokio::test]
async fn fail_a_body_that_stops_midway_times_out() {
    let reply = Reply {
        status: 200,
        headers: Vec::new(),
        body: ReplyBody::Chunks { chunks: vec![b"{\"certAuthDomain\"".to_vec()], then_hang: true },
    };
    let server = TestServer::start(ServerTls::PLAIN, reply).await;
    let mut options = options_for(server.addr);
    options.timeout = Duration::from_secs(1);
    let error = guarded(CaClient::new(options).expect("client").metadata(Platform::Macos))
        .await
        .expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn fail_a_server_that_accepts_and_never_speaks_tls_times_out() {
    let server = SilentServer::start().await;
    let mut options = options_for(server.addr);
    options.connect_timeout = Duration::from_millis(300);
    options.timeout = Duration::from_millis(600);
    let error = guarded(CaClient::new(options).expect("client").metadata(Platform::Macos))
        .await
        .expect_err("timeout");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn fail_a_refused_connection_is_a_connect_error() {
    // Held for the test: no parallel server can take the port and answer.
    let refused = testkit::RefusedPort::new();
    let error =
        guarded(CaClient::new(options_for(refused.addr())).expect("client").metadata(Platform::Macos))
            .await
            .expect_err("refused");
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    assert_eq!(error.reaction(), Reaction::RetryLater);
}

#[tokio::test]
async fn fail_a_server_outside_the_pinned_bundle_is_refused() {
    // other-server.pem is issued by other-ca.pem; the client pins ca.pem.
    let server = TestServer::start(
        ServerTls { cert: "other-server", require_client_ca: None },
        Reply::json(200, &metadata_json()),
    )
    .await;
    let error = guarded(client_for(&server).metadata(Platform::Macos)).await.expect_err("refused");
    assert!(
        matches!(&error, ClientError::UntrustedServer { reason, .. } if reason.contains("ca_bundle")),
        "{error:?}"
    );
    assert_eq!(error.reaction(), Reaction::Fail, "a configuration matter: no backoff");
    assert!(server.recorded().is_empty(), "no request crossed the refused handshake");

    // The control: pinning the server's own CA works.
    let options = options_for(server.addr).with_pinned_roots(fixture("other-ca.pem"));
    guarded(CaClient::new(options).expect("client").metadata(Platform::Macos))
        .await
        .expect("pinned other-ca");
}

#[tokio::test]
async fn fail_without_a_pin_the_test_ca_is_not_trusted() {
    let server = TestServer::start(ServerTls::PLAIN, Reply::json(200, &metadata_json())).await;
    let mut options = options_for(server.addr);
    options.pinned_roots_pem = None;
    match CaClient::new(options) {
        Ok(client) => {
            let error = guarded(client.metadata(Platform::Macos)).await.expect_err("platform roots");
            assert!(matches!(error, ClientError::UntrustedServer { .. }), "{error:?}");
        }
        // A machine with no platform roots at all refuses to build a client that trusts nothing.
        Err(error) => assert!(matches!(error, ClientError::InvalidConfiguration { .. }), "{error:?}"),
    }
    assert!(server.recorded().is_empty());
}

#[test]
fn fail_a_pinned_bundle_without_certificates_is_invalid_configuration() {
    let url = url::Url::parse("https://127.0.0.1:1/").expect("url");
    for (name, pem) in [
        ("fail/empty", Vec::new()),
        ("fail/key-only", fixture("ca.key.pem")),
        ("fail/text", b"hello".to_vec()),
    ] {
        let error = CaClient::new(ClientOptions::new(url.clone()).with_pinned_roots(pem)).expect_err(name);
        assert!(matches!(error, ClientError::InvalidConfiguration { .. }), "{name}: {error:?}");
    }
}
