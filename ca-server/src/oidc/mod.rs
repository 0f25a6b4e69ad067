//! The OpenID Connect device factor: the CA as an OpenID Connect provider whose only claim
//! is "this browser is on a managed, trusted device", so that an identity provider (Okta,
//! Keycloak, authentik) or any OpenID Connect client (oauth2-proxy) can require it.
//!
//! This module owns what is pure: the clients of `[[oidc.clients]]` and their secrets
//! ([`Provider`]), the discovery document, the parameters of the authorization and token
//! requests and every check on them that needs no store ([`request`]), PKCE, and the ID and
//! access tokens ([`token`]). What a request does with the certificate, the MDM and the
//! store is [`crate::service::Ca::oidc_authorize`] and its siblings; the HTTP part is
//! `api/oidc.rs`.
//!
//! Flow: the client sends the browser to [`AUTHORIZE_PATH`] on the cert-auth domain, where
//! the browser presents its certificate over mutual TLS; the CA checks it, stores a code
//! (single use, [`CODE_LIFETIME_SECS`], bound to client, redirect URI and PKCE challenge)
//! and sends the browser back; the client redeems the code at [`TOKEN_PATH`] with its
//! secret, which is when an unbound certificate is bound to the `login_hint` user, and gets
//! an ID token (ES256, keys of its own, [`JWKS_PATH`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::jwt::{Jwks, KeyError, KeySet};
use crate::secret::{SecretError, Token};

pub mod request;
pub mod settings;
pub mod token;

pub use request::{Authorization, ClientCredentials, Params, Redirect, Refusal, TokenRequest, pkce_matches};
pub use settings::{MAX_TOKEN_LIFETIME_SECS, OidcClientSettings, OidcSettings, SubjectType};

/// `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The authorization endpoint (mutual TLS).
pub const AUTHORIZE_PATH: &str = "/oidc/authorize";
/// The token endpoint.
pub const TOKEN_PATH: &str = "/oidc/token";
/// The userinfo endpoint.
pub const USERINFO_PATH: &str = "/oidc/userinfo";
/// The ID-token keys (not the device assertion's).
pub const JWKS_PATH: &str = "/oidc/jwks.json";
/// The `acr` of every ID token: the browser is on a managed device holding this CA's
/// certificate.
pub const ACR: &str = "urn:devicetrust:acr:managed-device";
/// How long an authorization code can be redeemed (RFC 6749 §4.1.2 recommends at most ten
/// minutes; a browser redirect and a server-to-server call need seconds).
pub const CODE_LIFETIME_SECS: i64 = 60;
/// File name of the generated ID-token key in the data directory (mode 0600).
pub const GENERATED_KEY_FILE: &str = "oidc-key.pem";
/// Shortest client secret.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest `sub` (OpenID Connect Core §2: 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;

/// An OAuth 2.0 / OpenID Connect error code (RFC 6749 §4.1.2.1 and §5.2, OpenID Connect
/// Core §3.1.2.6, RFC 6750 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A parameter is missing, repeated or malformed.
    InvalidRequest,
    /// The client is unknown or its secret is wrong.
    InvalidClient,
    /// The code is unknown, used, expired, or not this client's, redirect URI's or verifier's.
    InvalidGrant,
    /// Not `authorization_code`.
    UnsupportedGrantType,
    /// No `openid` scope.
    InvalidScope,
    /// Not `code`.
    UnsupportedResponseType,
    /// The device is not trusted (the description names the contract's code).
    AccessDenied,
    /// `request` was sent.
    RequestNotSupported,
    /// `request_uri` was sent.
    RequestUriNotSupported,
    /// The access token is missing, unknown or no longer good.
    InvalidToken,
    /// The CA failed.
    ServerError,
    /// An outage (the MDM, read-only mode) or a spent budget: try again later.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::AccessDenied => "access_denied",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::InvalidToken => "invalid_token",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth error with its human-readable `error_description`, which never holds an
/// internal cause (those are logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    /// The code.
    pub code: ErrorCode,
    /// The description: printable ASCII only (RFC 6749 §5.2).
    pub description: String,
}

impl OAuthError {
    /// An error with a description (non-ASCII is replaced, so the description is valid on
    /// the wire whatever it quotes).
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        let description = description
            .into()
            .chars()
            .map(|c| if (' '..='~').contains(&c) && c != '"' && c != '\\' { c } else { '?' })
            .collect();
        Self { code, description }
    }

    /// An error whose description names the contract's refusal, as `<code>: <message>`.
    pub fn naming(code: ErrorCode, error: &crate::error::ApiError) -> Self {
        Self::new(code, format!("{}: {}", error.code_str(), error.public_message()))
    }
}

/// Why the OpenID Connect provider could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcSetupError {
    /// A client secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The signing keys could not be loaded or generated.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Two clients share a secret.
    #[error("the openid connect client {0:?} shares its secret with another client")]
    SharedSecret(String),
}

/// One configured client.
#[derive(Debug)]
pub struct Client {
    id: String,
    name: String,
    secret: Token,
    redirect_uris: Vec<String>,
    subject: SubjectType,
    refusal_page: bool,
    bind_login_hint: bool,
}

impl Client {
    /// Whom a first use binds a certificate to for this client: its `login_hint` when the
    /// client vouches for it (`bind_login_hint`), else the enrolling user (`None`).
    pub fn bind_user<'a>(&self, login_hint: Option<&'a str>) -> Option<&'a str> {
        login_hint.filter(|_| self.bind_login_hint)
    }

    /// Its `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What pages and logs call it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What its ID tokens' `sub` is.
    pub fn subject(&self) -> SubjectType {
        self.subject
    }

    /// Whether a refused browser sees the "Security requirements" page first.
    pub fn wants_refusal_page(&self) -> bool {
        self.refusal_page
    }

    /// Whether `uri` is one of its redirect URIs, byte for byte (RFC 6749 §3.1.2.3, OpenID
    /// Connect Core §3.1.2.1: simple string comparison).
    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|registered| registered == uri)
    }
}

/// The provider: the issuer, the clients, the token keys and lifetimes.
#[derive(Debug)]
pub struct Provider {
    issuer: String,
    clients: Vec<Client>,
    keys: KeySet,
    token_lifetime_secs: i64,
    ask_mdm: bool,
}

impl Provider {
    /// Loads every client's secret and the signing keys; `None` when no client is
    /// configured (the endpoints then answer 404, and no key is generated).
    pub fn load(
        settings: &OidcSettings,
        issuer: &str,
        data_dir: &std::path::Path,
    ) -> Result<Option<Self>, OidcSetupError> {
        if settings.clients.is_empty() {
            return Ok(None);
        }
        let mut clients = Vec::with_capacity(settings.clients.len());
        for client in &settings.clients {
            let secret = client.secret.load_at_least("openid connect client secret", MIN_SECRET_LEN)?;
            if clients.iter().any(|c: &Client| c.secret.same_as(&secret)) {
                return Err(OidcSetupError::SharedSecret(client.id.clone()));
            }
            clients.push(Client {
                id: client.id.clone(),
                name: client.name.clone().unwrap_or_else(|| client.id.clone()),
                secret,
                redirect_uris: client.redirect_uris.clone(),
                subject: client.subject,
                refusal_page: client.refusal_page,
                bind_login_hint: client.bind_login_hint,
            });
        }
        let keys =
            KeySet::load(&settings.signing_keys, &data_dir.join(GENERATED_KEY_FILE), "openid connect")?;
        Ok(Some(Self {
            issuer: issuer.to_owned(),
            clients,
            keys,
            token_lifetime_secs: i64::from(settings.id_token_lifetime_secs),
            ask_mdm: settings.ask_mdm,
        }))
    }

    /// The issuer: the cert-auth domain's origin.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client with this id.
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.id == id)
    }

    /// Whether an authorization asks the MDM.
    pub fn asks_mdm(&self) -> bool {
        self.ask_mdm
    }

    /// The ID and access tokens' lifetime.
    pub fn token_lifetime_secs(&self) -> i64 {
        self.token_lifetime_secs
    }

    /// The ID-token keys.
    pub fn jwks(&self) -> Jwks {
        self.keys.jwks()
    }

    /// The client `credentials` name, if its secret is right. The secret is compared in
    /// constant time; an unknown client and a wrong secret get the same answer.
    pub fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<&Client, OAuthError> {
        let refused = || OAuthError::new(ErrorCode::InvalidClient, "client authentication failed");
        let client = self.client(&credentials.id).ok_or_else(refused)?;
        let raw = client.secret.matches(&credentials.secret);
        // A client that sent its secret without form-encoding it (RFC 6749 §2.3.1) is
        // common; both readings are what the caller sent, so accepting either grants
        // nothing more.
        let decoded = credentials.decoded_secret.as_deref().is_some_and(|s| client.secret.matches(s));
        if raw | decoded { Ok(client) } else { Err(refused()) }
    }

    /// The discovery document (OpenID Connect Discovery 1.0 §3).
    pub fn discovery(&self) -> Discovery<'_> {
        let url = |path: &str| format!("{}{path}", self.issuer);
        Discovery {
            issuer: &self.issuer,
            authorization_endpoint: url(AUTHORIZE_PATH),
            token_endpoint: url(TOKEN_PATH),
            userinfo_endpoint: url(USERINFO_PATH),
            jwks_uri: url(JWKS_PATH),
            scopes_supported: &["openid"],
            response_types_supported: &["code"],
            response_modes_supported: &["query"],
            grant_types_supported: &["authorization_code"],
            subject_types_supported: &["public"],
            id_token_signing_alg_values_supported: &["ES256"],
            token_endpoint_auth_methods_supported: &["client_secret_basic", "client_secret_post"],
            code_challenge_methods_supported: &["S256"],
            acr_values_supported: &[ACR],
            claims_supported: &[
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "acr",
                "amr",
                "at_hash",
                "preferred_username",
                "device",
            ],
            claims_parameter_supported: false,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
            authorization_response_iss_parameter_supported: true,
        }
    }

    /// Signs the ID and access tokens of a redeemed code.
    pub fn tokens(
        &self,
        grant: &token::Grant<'_>,
        now: DateTime<Utc>,
    ) -> Result<token::Tokens, crate::jwt::SignError> {
        token::issue(&self.keys, &self.issuer, self.token_lifetime_secs, grant, now)
    }

    /// The claims of an access token this provider issued and that has not expired.
    pub fn access_token(&self, presented: &str, now: DateTime<Utc>) -> Option<token::AccessClaims> {
        token::verify_access(&self.keys, &self.issuer, presented, now)
    }
}

/// The discovery document.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct Discovery<'a> {
    pub issuer: &'a str,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: String,
    pub jwks_uri: String,
    pub scopes_supported: &'static [&'static str],
    pub response_types_supported: &'static [&'static str],
    pub response_modes_supported: &'static [&'static str],
    pub grant_types_supported: &'static [&'static str],
    pub subject_types_supported: &'static [&'static str],
    pub id_token_signing_alg_values_supported: &'static [&'static str],
    pub token_endpoint_auth_methods_supported: &'static [&'static str],
    pub code_challenge_methods_supported: &'static [&'static str],
    pub acr_values_supported: &'static [&'static str],
    pub claims_supported: &'static [&'static str],
    pub claims_parameter_supported: bool,
    pub request_parameter_supported: bool,
    pub request_uri_parameter_supported: bool,
    pub authorization_response_iss_parameter_supported: bool,
}
