//! The device assertion: a short-lived JWT (ES256) that tells an app which trusted device,
//! user and certificate stand behind a request, so that the app never parses a certificate.
//!
//! The signing keys are the assertion's own P-256 keys, never the issuing CA's: an app that
//! trusts assertions trusts nothing else from this CA, and the keys rotate on their own
//! schedule. The first configured key signs; every key is published in the JWKS, so a
//! rotation lists the new key first and keeps the old one until the last assertion it
//! signed has expired. Signing is `jsonwebtoken` (ring, like the rest of the CA); `kid` is
//! the key's RFC 7638 thumbprint, so it names the key and nothing else.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, Visibility};

/// File name of the generated assertion key in the data directory (mode 0600).
pub const GENERATED_KEY_FILE: &str = "assertion-key.pem";

/// Why the assertion keys could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionKeyError {
    /// A key file could not be read.
    #[error("cannot read the assertion key {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not a PKCS#8 PEM P-256 key, or is readable by others.
    #[error("the assertion key {path} is unusable: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The generated key could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// Generating a key failed.
    #[error("cannot generate an assertion key: {0}")]
    Generate(String),
}

/// Signing an assertion failed (a broken key; never the caller's input).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a device assertion")]
pub struct AssertionError(#[source] jsonwebtoken::errors::Error);

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

/// One public key of the JWKS (RFC 7517, EC P-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
    kid: String,
    alg: &'static str,
    #[serde(rename = "use")]
    usage: &'static str,
}

/// `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    /// The keys, the signing key first.
    pub keys: Vec<Jwk>,
}

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
pub struct AssertionSigner {
    keys: Vec<SigningKey>,
    issuer: String,
    lifetime_secs: i64,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("AssertionSigner")
            .field("kids", &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl AssertionSigner {
    /// Loads `paths` (the first signs), or without any, the key generated in `data_dir`
    /// (generating it at first start).
    pub fn load(
        paths: &[PathBuf],
        data_dir: &Path,
        issuer: &str,
        lifetime_secs: u32,
    ) -> Result<Self, AssertionKeyError> {
        let generated;
        let paths = if paths.is_empty() {
            generated = [generate_if_missing(&data_dir.join(GENERATED_KEY_FILE))?];
            &generated[..]
        } else {
            paths
        };
        let keys = paths.iter().map(|path| load_key(path)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys, issuer: issuer.to_owned(), lifetime_secs: i64::from(lifetime_secs) })
    }

    /// The public keys, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Jwks {
        Jwks { keys: self.keys.iter().map(|k| k.jwk.clone()).collect() }
    }

    /// The assertion's lifetime in seconds.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Signs an assertion issued at `now`.
    pub fn sign(&self, claims: &AssertionClaims<'_>, now: DateTime<Utc>) -> Result<String, AssertionError> {
        let Some(key) = self.keys.first() else {
            // `load` always yields at least one key.
            return Err(AssertionError(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey.into()));
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
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
        jsonwebtoken::encode(&header, &body, &key.encoding).map_err(AssertionError)
    }
}

fn generate_if_missing(path: &Path) -> Result<PathBuf, AssertionKeyError> {
    if !path.exists() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AssertionKeyError::Generate(e.to_string()))?;
        fsutil::write_atomic(path, key.serialize_pem().as_bytes(), Visibility::Private)?;
        tracing::info!(path = %path.display(), "generated a device assertion signing key");
    }
    Ok(path.to_owned())
}

fn load_key(path: &Path) -> Result<SigningKey, AssertionKeyError> {
    let bad = |reason: String| AssertionKeyError::BadKey { path: path.to_owned(), reason };
    if let Some(reason) = fsutil::key_file_problem(path) {
        return Err(bad(reason));
    }
    let pem = std::fs::read_to_string(path)
        .map_err(|source| AssertionKeyError::Read { path: path.to_owned(), source })?;
    let key = KeyPair::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(bad("not a P-256 key; assertions are ES256".into()));
    }
    let point = key.public_key_raw();
    // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
    if point.len() != 65 || point[0] != 4 {
        return Err(bad("unexpected public key encoding".into()));
    }
    let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
    // RFC 7638: the thumbprint hashes the required members in lexicographic order.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64url(&Sha256::digest(thumbprint_input.as_bytes()));
    let encoding = EncodingKey::from_ec_der(&key.serialize_der());
    let jwk = Jwk { kty: "EC", crv: "P-256", x, y, kid: kid.clone(), alg: "ES256", usage: "sig" };
    Ok(SigningKey { kid, encoding, jwk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_what_the_jwks_verifies_and_rotation_publishes_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = AssertionSigner::load(&[], dir.path(), "https://ca.example.com", 300).expect("generate");
        let again = AssertionSigner::load(&[], dir.path(), "https://ca.example.com", 300).expect("reload");
        assert_eq!(signer.jwks(), again.jwks(), "the generated key is reused");

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

        // Rotation: a new key first, the old one still published.
        let new = dir.path().join("new.pem");
        generate_if_missing(&new).expect("new key");
        let rotated = AssertionSigner::load(
            &[new, dir.path().join(GENERATED_KEY_FILE)],
            dir.path(),
            "https://ca.example.com",
            300,
        )
        .expect("rotated");
        let kids: Vec<String> = rotated.jwks().keys.iter().map(|k| k.kid.clone()).collect();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[1], signer.jwks().keys[0].kid);
        assert_ne!(kids[0], kids[1]);
    }

    #[test]
    fn refuses_a_key_others_can_read_and_a_non_p256_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open.pem");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        std::fs::write(&open, key.serialize_pem()).expect("write");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_key(&open), Err(AssertionKeyError::BadKey { .. })));

        let p384 = dir.path().join("p384.pem");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        fsutil::write_atomic(&p384, key.serialize_pem().as_bytes(), Visibility::Private).expect("write");
        let err = load_key(&p384).err().expect("refused");
        assert!(err.to_string().contains("P-256"), "{err}");
    }
}
