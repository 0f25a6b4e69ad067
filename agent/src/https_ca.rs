//! [`CaApi`] over HTTPS: the real CA, through `ca_client::CaClient`.
//!
//! The agent is a short-lived, sequential process, so each call runs on a current-thread
//! tokio runtime owned here; the rest of the agent stays synchronous. Mutual-TLS calls build
//! a client that presents the given identity, signing through its `KeySigner`.
//!
//! A call that takes longer than [`PROGRESS_AFTER`] says what it waits for on the progress
//! writer (standard error when that is a terminal, else none), so that a person at a
//! terminal is not left looking at nothing for up to the timeout.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_client::cert::certificates_from_pem;
use ca_client::protocol::{CertificateStatus, EnrollRequest, Metadata, Platform, RenewRequest};
use ca_client::response::Issued;
use ca_client::{CaClient, ClientError, ClientOptions};

use crate::lifecycle::CaApi;
use crate::platform::Identity;
use crate::token::Secret;

/// How long a call may take before the progress writer hears what it waits for.
pub(crate) const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Where a slow call says what it waits for.
pub(crate) type Progress = Option<Arc<Mutex<dyn Write + Send>>>;

/// The CA at the configured URL.
pub(crate) struct HttpsCa {
    options: ClientOptions,
    runtime: tokio::runtime::Runtime,
    progress: Progress,
}

impl std::fmt::Debug for HttpsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsCa")
            .field("options", &self.options)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpsCa {
    /// A client of the CA described by `options`, telling `progress` about slow calls.
    pub(crate) fn new(options: ClientOptions, progress: Progress) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            ClientError::InvalidConfiguration { reason: format!("could not start the async runtime: {e}") }
        })?;
        Ok(Self { options, runtime, progress })
    }

    /// Standard error when it is a terminal (the only place a person watches a call).
    pub(crate) fn terminal_progress() -> Progress {
        use std::io::IsTerminal as _;
        std::io::stderr()
            .is_terminal()
            .then(|| Arc::new(Mutex::new(std::io::stderr())) as Arc<Mutex<dyn Write + Send>>)
    }

    fn wait<T>(&self, what: &str, call: impl Future<Output = T>) -> T {
        let url = self.options.base_url.as_str().trim_end_matches('/');
        self.runtime.block_on(with_progress(&self.progress, &format!("{what} at {url}"), call))
    }

    fn with_identity(&self, identity: &Identity) -> Result<CaClient, ClientError> {
        let invalid = |e: ca_client::cert::CertError| ClientError::InvalidConfiguration {
            reason: format!("the stored certificate cannot be presented: {e}"),
        };
        let mut chain = certificates_from_pem(identity.certificate_pem.as_bytes()).map_err(invalid)?;
        for pem in &identity.chain_pem {
            chain.extend(certificates_from_pem(pem.as_bytes()).map_err(invalid)?);
        }
        CaClient::with_identity(self.options.clone(), chain, identity.key.clone())
    }
}

impl CaApi for HttpsCa {
    fn metadata(&self) -> Result<Metadata, ClientError> {
        let client = CaClient::new(self.options.clone())?;
        self.wait("the CA's metadata", client.metadata(Platform::current()))
    }

    fn enroll(&self, token: &Secret, request: &EnrollRequest) -> Result<Issued, ClientError> {
        let client = CaClient::new(self.options.clone())?;
        self.wait("the CA to issue the certificate", client.enroll(token.expose(), request))
    }

    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError> {
        let client = self.with_identity(identity)?;
        self.wait("the CA to renew the certificate", client.renew(request))
    }

    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError> {
        let client = self.with_identity(identity)?;
        self.wait("the CA's answer on the certificate's state", client.certificate_status())
    }
}

/// Runs `call`; once it has taken [`PROGRESS_AFTER`], writes `waiting for WHAT...` to
/// `progress`, and ` done` when it ends (how it ended is the command's to report).
async fn with_progress<T>(progress: &Progress, what: &str, call: impl Future<Output = T>) -> T {
    let Some(progress) = progress else { return call.await };
    let mut call = std::pin::pin!(call);
    tokio::select! {
        out = &mut call => return out,
        () = tokio::time::sleep(PROGRESS_AFTER) => {}
    }
    let say = |text: &str| {
        if let Ok(mut writer) = progress.lock() {
            // Progress is a courtesy: a failing terminal must not fail the call.
            let _ = writer.write_all(text.as_bytes()).and_then(|()| writer.flush());
        }
    };
    say(&format!("waiting for {what}..."));
    let out = call.await;
    say(" done\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        // Paused time: the sleeps below pass at once, in order, without waiting.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    #[test]
    fn progress_table() {
        let cases = [
            ("ok/quick-call-says-nothing", Duration::from_millis(900), ""),
            (
                "ok/slow-call-says-what-it-waits-for",
                Duration::from_secs(5),
                "waiting for the CA's metadata at https://ca.test... done\n",
            ),
        ];
        for (name, takes, expected) in cases {
            let written: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
            let progress: Progress = Some(written.clone());
            let value =
                runtime().block_on(with_progress(&progress, "the CA's metadata at https://ca.test", async {
                    tokio::time::sleep(takes).await;
                    7
                }));
            assert_eq!(value, 7, "{name}");
            assert_eq!(String::from_utf8(written.lock().unwrap().clone()).unwrap(), expected, "{name}");
        }
        // Without a terminal, nothing is written and the call still completes.
        let value = runtime().block_on(with_progress(&None, "x", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            1
        }));
        assert_eq!(value, 1, "ok/no-terminal");
    }
}
