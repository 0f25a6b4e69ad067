//! `tests/js/oidc-rp.mjs` as a child process on 127.0.0.1: an OpenID Connect relying party
//! built on panva's certified `openid-client`, so that the CA's provider is tried by a
//! client library that is not ours. It listens before it knows its provider (the CA is
//! started with the relying party's callback URL), and is then told the issuer, the client
//! credentials and the CA's TLS root with `POST /configure`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use tempfile::TempDir;

use testkit::{Guard, HANG_LIMIT};

/// A running relying party; stopped when dropped.
#[derive(Debug)]
pub struct OidcRp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stderr: PathBuf,
    _guard: Guard,
    // Dropped after the guard: the process stops before its log goes.
    _dir: TempDir,
}

#[derive(Debug, Deserialize)]
struct Ready {
    url: String,
}

/// How the relying party authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post`.
    Post,
}

impl OidcRp {
    /// Starts the relying party on a free port and waits for its ready line.
    pub fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/oidc-rp.mjs");
        let dir = tempfile::Builder::new().prefix("devicetrust-oidc-rp-").tempdir().expect("a dir");
        let stderr = dir.path().join("stderr.log");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("the relying party's stderr file"));
        let mut guard = Guard::spawn(&mut command, "node oidc-rp.mjs");
        let line = guard.ready_line(&stderr);
        let ready: Ready = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the ready line {line:?} is not JSON: {e}"));
        Self { url: ready.url, stderr, _guard: guard, _dir: dir }
    }

    /// Its callback URL, to register at the CA.
    pub fn callback(&self) -> String {
        format!("{}/callback", self.url)
    }

    /// Points it at `issuer` (it runs discovery now), trusting `ca_bundle` for TLS; panics
    /// with its log if discovery fails.
    pub fn configure(&self, issuer: &str, client_id: &str, secret: &str, ca_bundle: &Path, auth: ClientAuth) {
        let pem = std::fs::read_to_string(ca_bundle).expect("the CA's TLS root");
        let body = serde_json::json!({
            "issuer": issuer,
            "clientId": client_id,
            "clientSecret": secret,
            "caBundlePem": pem,
            "auth": match auth { ClientAuth::Basic => "basic", ClientAuth::Post => "post" },
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let (status, text) = runtime.block_on(async {
            // Plain HTTP to the relying party; reqwest still wants a TLS configuration.
            let tls = ca_client::tls::client_config(Some(pem.as_bytes()), None).expect("a TLS configuration");
            let response = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(HANG_LIMIT)
                .build()
                .expect("an HTTP client")
                .post(format!("{}/configure", self.url))
                .json(&body)
                .send()
                .await
                .expect("POST /configure");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        });
        assert_eq!(
            status,
            200,
            "the relying party's discovery of {issuer}: {text}\n--- its log\n{}",
            self.stderr()
        );
    }

    /// What it wrote on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}
