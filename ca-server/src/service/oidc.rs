//! The OpenID Connect device factor on the service side: judging the browser at the
//! authorization endpoint, redeeming a code at the token endpoint (where binding happens),
//! and userinfo. The requests arrive checked by [`crate::oidc`]; what is decided here needs
//! the certificate, the MDM or the store.

use chrono::Duration;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{Ca, ErrorChain, PresentedCertificate, RefusalContext};
use crate::error::ApiError;
use crate::oidc::token::{DeviceClaim, Grant, Tokens};
use crate::oidc::{
    ACR, Authorization, CODE_LIFETIME_SECS, Client, ErrorCode, MAX_SUBJECT_LEN, MAX_TOKEN_LIFETIME_SECS,
    OAuthError, Provider, SubjectType, TokenRequest, pkce_matches,
};
use crate::store::{CertificateRow, CodeGrant, NewCode, Redemption};

/// The userinfo endpoint's answer: the ID token's claims about the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// As in the ID token.
    pub sub: String,
    /// The user the certificate is bound to.
    pub preferred_username: String,
    /// The device.
    pub device: DeviceClaim,
    /// [`ACR`].
    pub acr: &'static str,
    /// `["mtls"]`.
    pub amr: [&'static str; 1],
    /// When the browser proved the certificate.
    pub auth_time: i64,
}

fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, description)
}

fn server_error() -> OAuthError {
    OAuthError::new(ErrorCode::ServerError, "the device trust service failed; try again")
}

/// Whom a certificate belongs to for a grant: its bound user, or (unbound, in read-only
/// mode) the user it would be bound to: `bind_user`, or its enrolling user.
fn owner(row: &CertificateRow, bind_user: Option<&str>) -> String {
    row.bound_user.clone().or_else(|| bind_user.map(str::to_owned)).unwrap_or_else(|| row.user.clone())
}

fn subject(client: &Client, owner: &str, row: &CertificateRow) -> String {
    match client.subject() {
        SubjectType::User => owner.to_owned(),
        SubjectType::Device => row.device_udid.clone(),
    }
}

fn device_claim(row: &CertificateRow) -> DeviceClaim {
    DeviceClaim {
        udid: row.device_udid.clone(),
        serial_number: row.device_serial_number.clone(),
        certificate_serial: row.serial.clone(),
    }
}

impl Ca {
    /// The OpenID Connect provider, when clients are configured.
    pub fn oidc(&self) -> Option<&Provider> {
        self.oidc.as_ref()
    }

    /// The authorization endpoint, once [`Provider::authorization`] accepted the request:
    /// is the browser's certificate this CA's, current, of a device still managed, and
    /// (when the client named the user) that user's or unbound? Then a code is stored and
    /// returned. Writes nothing else: binding waits for the client to redeem the code.
    pub async fn oidc_authorize(
        &self,
        provider: &Provider,
        request: &Authorization<'_>,
        presented: Option<&PresentedCertificate>,
        context: &mut RefusalContext,
    ) -> Result<String, ApiError> {
        context.client_id = Some(request.client.id().to_owned());
        if let Some(hint) = &request.login_hint {
            context.user = Some(hint.clone());
        }
        let row = self.identify(presented, context).await?;
        // Each authorization is a store write and may be an MDM lookup: the certificate's
        // own budget bounds what one browser can make the CA do.
        self.rate_limit(&format!("authorize:{}", row.serial))?;
        self.ensure_writable()?;
        let now = self.clock.now();
        let hint = request.login_hint.as_deref();
        self.judge(&row, request.client.bind_user(hint), hint, now)?;
        if provider.asks_mdm() {
            self.ask_mdm(&row.device_serial_number, &row.device_udid).await?;
        } else {
            self.still_managed(&row)?;
        }
        let code = crate::secret::generate_token();
        let expires_at = now + Duration::seconds(CODE_LIFETIME_SECS);
        self.store
            .insert_code(
                NewCode {
                    code_sha256: sha256_hex(code.expose()),
                    grant: CodeGrant {
                        client_id: request.client.id().to_owned(),
                        redirect_uri: request.redirect_uri.clone(),
                        code_challenge: request.code_challenge.clone(),
                        nonce: request.nonce.clone(),
                        login_hint: request.login_hint.clone(),
                        serial: row.serial.clone(),
                        auth_time: now,
                        expires_at,
                    },
                    // The longest token lifetime, not today's: a restart with a longer one
                    // must not purge a row whose access token is still good.
                    purge_after: expires_at + Duration::seconds(i64::from(MAX_TOKEN_LIFETIME_SECS)),
                },
                now,
            )
            .await?;
        tracing::info!(client = request.client.id(), serial = %row.serial, udid = %row.device_udid, "authorized a sign-in");
        Ok(code.expose().to_owned())
    }

    /// The token endpoint: authenticates the client, redeems the code (once, on any
    /// replica), checks it against the client, the redirect URI, its expiry and the PKCE
    /// verifier, then binds the certificate to the `login_hint` user (or refuses one bound to
    /// someone else) and signs the tokens. Refusals about the device are recorded as
    /// failed authentications for the client.
    pub async fn oidc_token(
        &self,
        provider: &Provider,
        request: &TokenRequest,
        context: &mut RefusalContext,
    ) -> Result<Tokens, OAuthError> {
        let client = match provider.authenticate_client(&request.credentials) {
            Ok(client) => client,
            Err(error) => {
                // Not counted against the address: identity providers call from addresses
                // shared by many tenants, and one tenant's wrong secret must not lock out
                // the others. Secrets of 32 characters and more are not guessed anyway.
                // The id is the caller's input: escaped and cut for the log.
                let id: String = request.credentials.id.chars().take(64).collect();
                tracing::info!(client = ?id, "refused: openid connect client authentication failed");
                return Err(error);
            }
        };
        context.client_id = Some(client.id().to_owned());
        if self.is_read_only() {
            return Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the device trust service is read-only; try again later",
            ));
        }
        let now = self.clock.now();
        let internal = |e: &(dyn std::error::Error + 'static)| {
            tracing::error!(error = %ErrorChain(e), "openid connect: cannot redeem a code");
            server_error()
        };
        let refused = |why: &str| {
            tracing::info!(client = client.id(), why, "refused: openid connect code");
            invalid_grant(why)
        };
        // The code's hash is its key in the store and, once redeemed, its grant's id.
        let grant_id = sha256_hex(&request.code);
        let grant = match self.store.redeem_code(&grant_id, client.id(), now).await {
            Ok(Redemption::First(grant)) => grant,
            Ok(Redemption::Replayed(grant)) => {
                // RFC 6749 §10.5: a code used twice was stolen or replayed; the access tokens
                // issued for it stop working at userinfo.
                tracing::warn!(client = client.id(), serial = %grant.serial, "an authorization code was redeemed twice; its tokens are revoked");
                return Err(refused("the code has already been used"));
            }
            // Another client's code is unknown to this one (and left alone).
            Ok(Redemption::Unknown) => return Err(refused("unknown code")),
            Err(e) => return Err(internal(&e)),
        };
        if grant.redirect_uri != request.redirect_uri {
            return Err(refused("redirect_uri differs from the authorization request's"));
        }
        if now >= grant.expires_at {
            return Err(refused("the code has expired"));
        }
        if !pkce_matches(&request.code_verifier, &grant.code_challenge) {
            return Err(refused("PKCE verification failed"));
        }
        let row = match self.store.certificate_by_serial(&grant.serial).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(refused("the certificate is no longer known")),
            Err(e) => return Err(internal(&e)),
        };
        context.certificate(&row);
        let hint = grant.login_hint.as_deref();
        if let Some(hint) = hint {
            context.user = Some(hint.to_owned());
        }
        let judged = match self.still_managed(&row) {
            Ok(()) => self.authenticate(&row, client.bind_user(hint), hint, Some(client.id())).await,
            Err(error) => Err(error),
        };
        let row = match judged {
            Ok(row) => row,
            Err(error) => {
                self.record_refusal(context, &error).await;
                if error.is_internal() {
                    return Err(server_error());
                }
                return Err(OAuthError::naming(ErrorCode::InvalidGrant, &error));
            }
        };
        let owner = owner(&row, client.bind_user(hint));
        let device = device_claim(&row);
        let subject = subject(client, &owner, &row);
        if subject.len() > MAX_SUBJECT_LEN {
            // OpenID Connect Core §2: at most 255 ASCII characters.
            return Err(refused("the user name is too long to be a subject"));
        }
        let tokens = provider
            .tokens(
                &Grant {
                    client_id: client.id(),
                    subject: &subject,
                    user: &owner,
                    nonce: grant.nonce.as_deref(),
                    auth_time: grant.auth_time,
                    device: &device,
                    grant_id: &grant_id,
                },
                now,
            )
            .map_err(|e| internal(&e))?;
        self.metrics.oidc_sign_ins.inc();
        tracing::info!(client = client.id(), user = %owner, udid = %row.device_udid, serial = %row.serial, "signed in a trusted device");
        Ok(tokens)
    }

    /// The userinfo endpoint: the access token must be this provider's, unexpired, of a code
    /// redeemed only once, for a configured client, and its certificate still good (the
    /// answer is live: a revocation ends it at once).
    pub async fn oidc_userinfo(
        &self,
        provider: &Provider,
        presented: Option<&str>,
    ) -> Result<UserInfo, OAuthError> {
        let invalid = |description: &str| OAuthError::new(ErrorCode::InvalidToken, description);
        let now = self.clock.now();
        let claims = presented
            .and_then(|token| provider.access_token(token, now))
            .ok_or_else(|| invalid("the access token is missing, expired or not this provider's"))?;
        let client = provider
            .client(&claims.client_id)
            .ok_or_else(|| invalid("the client is no longer configured"))?;
        let internal = |e: &(dyn std::error::Error + 'static)| {
            tracing::error!(error = %ErrorChain(e), "openid connect: userinfo failed");
            server_error()
        };
        let code = match self.store.code(&claims.jti).await {
            Ok(Some(code)) if !code.replayed => code,
            Ok(_) => return Err(invalid("the grant was revoked")),
            Err(e) => return Err(internal(&e)),
        };
        let row = match self.store.certificate_by_serial(&code.grant.serial).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(invalid("the certificate is no longer known")),
            Err(e) => return Err(internal(&e)),
        };
        let hint = code.grant.login_hint.as_deref();
        let judged =
            self.judge(&row, client.bind_user(hint), hint, now).and_then(|_| self.still_managed(&row));
        if let Err(error) = judged {
            return Err(OAuthError::naming(ErrorCode::InvalidToken, &error));
        }
        let owner = owner(&row, client.bind_user(hint));
        Ok(UserInfo {
            sub: subject(client, &owner, &row),
            preferred_username: owner,
            device: device_claim(&row),
            acr: ACR,
            amr: ["mtls"],
            auth_time: code.grant.auth_time.timestamp(),
        })
    }
}

/// What a refused authorization says about the certificate, for the client: `access_denied`
/// naming the contract's code, or `server_error` for an internal failure (whose cause is
/// logged, never sent).
pub(crate) fn authorization_refusal(error: &ApiError) -> OAuthError {
    if error.is_internal() {
        return server_error();
    }
    match error {
        // Not the device's fault: the client may try again (RFC 6749 §4.1.2.1).
        ApiError::MdmUnavailable(_) | ApiError::ReadOnly | ApiError::RateLimited { .. } => {
            OAuthError::naming(ErrorCode::TemporarilyUnavailable, error)
        }
        _ => OAuthError::naming(ErrorCode::AccessDenied, error),
    }
}
