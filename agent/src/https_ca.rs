//! [`CaApi`] over HTTPS: the real CA, through `ca_client::CaClient`.
//!
//! The agent is a short-lived, sequential process, so each call runs on a current-thread
//! tokio runtime owned here; the rest of the agent stays synchronous. Mutual-TLS calls build
//! a client that presents the given identity, signing through its `KeySigner`.

use ca_client::cert::certificates_from_pem;
use ca_client::protocol::{CertificateStatus, EnrollRequest, Metadata, Platform, RenewRequest};
use ca_client::response::Issued;
use ca_client::{CaClient, ClientError, ClientOptions};

use crate::lifecycle::CaApi;
use crate::platform::Identity;
use crate::token::Secret;

/// The CA at the configured URL.
#[derive(Debug)]
pub(crate) struct HttpsCa {
    options: ClientOptions,
    runtime: tokio::runtime::Runtime,
}

impl HttpsCa {
    /// A client of the CA described by `options`.
    pub(crate) fn new(options: ClientOptions) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
            ClientError::InvalidConfiguration { reason: format!("could not start the async runtime: {e}") }
        })?;
        Ok(Self { options, runtime })
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
        self.runtime.block_on(client.metadata(Platform::current()))
    }

    fn enroll(&self, token: &Secret, request: &EnrollRequest) -> Result<Issued, ClientError> {
        let client = CaClient::new(self.options.clone())?;
        self.runtime.block_on(client.enroll(token.expose(), request))
    }

    fn renew(&self, identity: &Identity, request: &RenewRequest) -> Result<Issued, ClientError> {
        let client = self.with_identity(identity)?;
        self.runtime.block_on(client.renew(request))
    }

    fn certificate_status(&self, identity: &Identity) -> Result<CertificateStatus, ClientError> {
        let client = self.with_identity(identity)?;
        self.runtime.block_on(client.certificate_status())
    }
}
