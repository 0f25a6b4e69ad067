//! Which roots the client trusts: the platform's when no bundle is pinned, and only the
//! pinned bundle when one is.
//!
//! rustls-native-certs reads `SSL_CERT_FILE` instead of the platform store when it is set,
//! on every platform. Setting it in a running test process is not sound (other threads read
//! the environment), so this harness-less test runs itself again as a child with
//! `SSL_CERT_FILE` set to `other-ca.pem`, and the child does the checks.

use std::process::{Command, ExitCode};

use ca_client::protocol::Platform;
use ca_client::{CaClient, ClientError};

#[allow(dead_code, reason = "shared helpers; this test uses some of them")]
#[path = "integration/support.rs"]
mod support;

use support::{Reply, ServerTls, TestServer, fixture, fixture_path, guarded, metadata_json, options_for};

const CHILD: &str = "DEVICETRUST_PLATFORM_ROOTS_CHILD";

fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("platform_roots: cannot find this test binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new(exe)
        .env(CHILD, "1")
        .env("SSL_CERT_FILE", fixture_path("other-ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("platform_roots: the child failed: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("platform_roots: cannot run the child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn child() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(checks());
    println!("platform_roots: 3 passed, 0 failed");
    ExitCode::SUCCESS
}

async fn checks() {
    // The "platform" trusts other-ca only.
    let other = TestServer::start(
        ServerTls { cert: "other-server", require_client_ca: None },
        Reply::json(200, &metadata_json()),
    )
    .await;
    let ours = TestServer::start(ServerTls::PLAIN, Reply::json(200, &metadata_json())).await;

    let mut unpinned = options_for(other.addr);
    unpinned.pinned_roots_pem = None;
    guarded(CaClient::new(unpinned).expect("client").metadata(Platform::Macos))
        .await
        .expect("ok/unpinned-uses-platform-roots");

    let mut unpinned = options_for(ours.addr);
    unpinned.pinned_roots_pem = None;
    let error = guarded(CaClient::new(unpinned).expect("client").metadata(Platform::Macos))
        .await
        .expect_err("fail/unpinned-unknown-ca");
    assert!(matches!(error, ClientError::UntrustedServer { .. }), "fail/unpinned-unknown-ca: {error:?}");

    // Pinned to ca.pem: the platform's other-ca no longer counts.
    let pinned = options_for(other.addr).with_pinned_roots(fixture("ca.pem"));
    let error = guarded(CaClient::new(pinned).expect("client").metadata(Platform::Macos))
        .await
        .expect_err("fail/pinned-ignores-platform-roots");
    assert!(
        matches!(error, ClientError::UntrustedServer { .. }),
        "fail/pinned-ignores-platform-roots: {error:?}"
    );
}
