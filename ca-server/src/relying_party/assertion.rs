//! The device assertion: a short-lived JWT (ES256) that tells an app which trusted device,
//! user and certificate stand behind a request, so that the app never parses a certificate.
//!
//! The signing keys are the assertion's own P-256 keys (`jwt::KeySet`), never the
//! issuing CA's nor the OpenID Connect provider's: an app that trusts assertions trusts
//! nothing else from this CA, and the keys rotate on their own schedule.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::jwt::Jwks;
use crate::jwt::{KeyError, KeySet, SignError, b64url};

/// File name of the generated assertion key in the data directory (mode 0600).
pub const GENERATED_KEY_FILE: &str = "assertion-key.pem";

/// What an assertion says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims<'a> {
    /// `aud`: the relying party's name.
    pub audience: &'a str,
    /// `sub`: the device UDID.
    pub udid: &'a str,
    /// `device_serial`: the device's serial number.
    pub device_serial: &'a str,
    /// `cert_serial`: the certificate's serial, lowercase hex.
    pub certificate_serial: &'a str,
    /// `user`: the bound user, if any.
    pub user: Option<&'a str>,
    /// SHA-256 of the certificate's DER, for `cnf.x5t#S256` (RFC 8705).
    pub certificate_sha256: &'a [u8],
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
    device_serial: &'a str,
    cert_serial: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    cnf: Confirmation,
}

#[derive(Serialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

/// The assertion signer: the keys, the issuer and the lifetime.
#[derive(Debug)]
pub struct AssertionSigner {
    keys: KeySet,
    issuer: String,
    lifetime_secs: i64,
}

impl AssertionSigner {
    /// Loads `paths` (the first signs), or without any, the key generated in `data_dir`
    /// (generating it at first start).
    pub fn load(
        paths: &[PathBuf],
        data_dir: &Path,
        issuer: &str,
        lifetime_secs: u32,
    ) -> Result<Self, KeyError> {
        let keys = KeySet::load(paths, &data_dir.join(GENERATED_KEY_FILE), "device assertion")?;
        Ok(Self { keys, issuer: issuer.to_owned(), lifetime_secs: i64::from(lifetime_secs) })
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Jwks {
        self.keys.jwks()
    }

    /// The assertion's lifetime in seconds.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Signs an assertion issued at `now`.
    pub fn sign(&self, claims: &AssertionClaims<'_>, now: DateTime<Utc>) -> Result<String, SignError> {
        let iat = now.timestamp();
        let body = Claims {
            iss: &self.issuer,
            aud: claims.audience,
            sub: claims.udid,
            iat,
            exp: iat + self.lifetime_secs,
            jti: b64url(&rand::random::<[u8; 16]>()),
            device_serial: claims.device_serial,
            cert_serial: claims.certificate_serial,
            user: claims.user,
            cnf: Confirmation { x5t_s256: b64url(claims.certificate_sha256) },
        };
        self.keys.sign("JWT", &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;

    #[test]
    fn signs_what_the_jwks_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = AssertionSigner::load(&[], dir.path(), "https://ca.example.com", 300).expect("generate");
        assert!(dir.path().join(GENERATED_KEY_FILE).exists());
        let now = Utc::now();
        let token = signer
            .sign(
                &AssertionClaims {
                    audience: "wiki",
                    udid: "UDID-1",
                    device_serial: "C02X",
                    certificate_serial: "0a",
                    user: Some("alice"),
                    certificate_sha256: &[7; 32],
                },
                now,
            )
            .expect("sign");
        let jwks: serde_json::Value = serde_json::to_value(signer.jwks()).expect("jwks");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).expect("jwk");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(jwks["keys"][0]["kid"].as_str().expect("kid")));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["wiki"]);
        validation.set_issuer(&["https://ca.example.com"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key"),
            &validation,
        )
        .expect("verifies");
        let claims = decoded.claims;
        assert_eq!(claims["sub"], "UDID-1");
        assert_eq!(claims["user"], "alice");
        assert_eq!(claims["exp"].as_i64(), Some(now.timestamp() + 300));
        assert_eq!(claims["cnf"]["x5t#S256"], b64url(&[7; 32]));
    }
}
