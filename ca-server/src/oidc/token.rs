//! The ID token (OpenID Connect Core §2) and the access token (a JWT, RFC 9068, good only
//! at this CA's userinfo endpoint), both ES256 with the provider's own keys.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ACR, USERINFO_PATH};
use crate::jwt::{KeySet, SignError, b64url};

/// The `device` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaim {
    /// The device's UDID.
    pub udid: String,
    /// The device's serial number.
    pub serial_number: String,
    /// The certificate's serial, lowercase hex.
    pub certificate_serial: String,
}

/// What a redeemed code vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<'a> {
    /// The client, the tokens' audience.
    pub client_id: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// The user the certificate is bound to.
    pub user: &'a str,
    /// The request's nonce.
    pub nonce: Option<&'a str>,
    /// When the browser proved the certificate.
    pub auth_time: DateTime<Utc>,
    /// The device.
    pub device: &'a DeviceClaim,
    /// The access token's `jti`: the code's hash, so that a replayed code can revoke it.
    pub grant_id: &'a str,
}

/// The token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// The access token (for userinfo).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: i64,
    /// The ID token.
    pub id_token: String,
    /// `openid`.
    pub scope: &'static str,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    acr: &'static str,
    amr: [&'static str; 1],
    at_hash: String,
    preferred_username: &'a str,
    device: &'a DeviceClaim,
}

/// What an access token says (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer.
    pub iss: String,
    /// The userinfo endpoint.
    pub aud: String,
    /// The ID token's `sub`.
    pub sub: String,
    /// The client.
    pub client_id: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// The grant: the hash of the code it was issued for.
    pub jti: String,
    /// When the browser proved the certificate.
    pub auth_time: i64,
    /// `openid`.
    pub scope: String,
}

/// Header `typ` of access tokens (RFC 9068 §2.1).
const ACCESS_TYPE: &str = "at+jwt";

pub(super) fn issue(
    keys: &KeySet,
    issuer: &str,
    lifetime_secs: i64,
    grant: &Grant<'_>,
    now: DateTime<Utc>,
) -> Result<Tokens, SignError> {
    let iat = now.timestamp();
    let exp = iat + lifetime_secs;
    let access = AccessClaims {
        iss: issuer.to_owned(),
        aud: format!("{issuer}{USERINFO_PATH}"),
        sub: grant.subject.to_owned(),
        client_id: grant.client_id.to_owned(),
        exp,
        iat,
        jti: grant.grant_id.to_owned(),
        auth_time: grant.auth_time.timestamp(),
        scope: "openid".to_owned(),
    };
    let access_token = keys.sign(ACCESS_TYPE, &access)?;
    // OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token.
    let digest = Sha256::digest(access_token.as_bytes());
    let id = IdClaims {
        iss: issuer,
        sub: grant.subject,
        aud: grant.client_id,
        exp,
        iat,
        auth_time: grant.auth_time.timestamp(),
        nonce: grant.nonce,
        acr: ACR,
        amr: ["mtls"],
        at_hash: b64url(&digest[..16]),
        preferred_username: grant.user,
        device: grant.device,
    };
    let id_token = keys.sign("JWT", &id)?;
    Ok(Tokens { access_token, token_type: "Bearer", expires_in: lifetime_secs, id_token, scope: "openid" })
}

pub(super) fn verify_access(
    keys: &KeySet,
    issuer: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Option<AccessClaims> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[format!("{issuer}{USERINFO_PATH}")]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    // The CA's clock, not the system's (they differ in tests): exp is checked below.
    validation.validate_exp = false;
    validation.leeway = 0;
    let claims: AccessClaims = keys.verify(token, ACCESS_TYPE, validation)?;
    (now.timestamp() < claims.exp).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_access_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = KeySet::load(&[], &dir.path().join("k.pem"), "test").expect("keys");
        let device =
            DeviceClaim { udid: "U".into(), serial_number: "C02".into(), certificate_serial: "0a".into() };
        let now = Utc::now();
        let grant = Grant {
            client_id: "okta",
            subject: "alice",
            user: "alice",
            nonce: Some("n-1"),
            auth_time: now,
            device: &device,
            grant_id: "g",
        };
        let issuer = "https://ca.example.com";
        let tokens = issue(&keys, issuer, 300, &grant, now).expect("issue");
        let access =
            verify_access(&keys, issuer, &tokens.access_token, now).expect("the access token verifies");
        assert_eq!(
            (access.sub.as_str(), access.client_id.as_str(), access.jti.as_str()),
            ("alice", "okta", "g")
        );
        assert!(
            verify_access(&keys, issuer, &tokens.access_token, now + chrono::Duration::seconds(300))
                .is_none()
        );
        assert!(
            verify_access(&keys, issuer, &tokens.id_token, now).is_none(),
            "an ID token is no access token"
        );
        assert!(verify_access(&keys, "https://other.example.com", &tokens.access_token, now).is_none());

        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["okta"]);
        validation.set_issuer(&[issuer]);
        let id: serde_json::Value =
            keys.verify(&tokens.id_token, "JWT", validation).expect("the id token verifies");
        assert_eq!(id["nonce"], "n-1");
        assert_eq!(id["amr"], serde_json::json!(["mtls"]));
        assert_eq!(id["device"]["certificate_serial"], "0a");
        let digest = Sha256::digest(tokens.access_token.as_bytes());
        assert_eq!(id["at_hash"], b64url(&digest[..16]));
    }
}
