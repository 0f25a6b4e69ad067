//! Signing keys for the JWTs the CA issues (the device assertion, OpenID Connect ID and
//! access tokens): loading or generating them, publishing them as a JWKS, signing, and
//! verifying the CA's own tokens when they come back (the userinfo endpoint's access token).
//!
//! Every key set is P-256 (ES256), never the issuing CA's key, and each use has a set of its
//! own: a token of one kind can never verify as another kind against the JWKS its verifier
//! fetched. The first key signs; every key is published, so a rotation lists the new key
//! first and keeps the old one until the last token it signed has expired. `kid` is the
//! key's RFC 7638 thumbprint, so it names the key and nothing else. Signing is
//! `jsonwebtoken` (ring, like the rest of the CA).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::KeyPair;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, Visibility};

/// Why a key set could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read the {what} key {path}")]
    Read {
        /// Which key set ("assertion", "openid connect").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not a PKCS#8 PEM P-256 key, or is readable by others.
    #[error("the {what} key {path} is unusable: {reason}")]
    BadKey {
        /// Which key set.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The generated key could not be written.
    #[error(transparent)]
    Write(#[from] fsutil::WriteError),
    /// Generating a key failed.
    #[error("cannot generate a {what} key")]
    Generate {
        /// Which key set.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

/// Signing failed (a broken key; never the caller's input).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a token")]
pub struct SignError(#[source] jsonwebtoken::errors::Error);

/// One public key of a JWKS (RFC 7517, EC P-256).
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

impl Jwk {
    /// The key id (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwks {
    /// The keys, the signing key first.
    pub keys: Vec<Jwk>,
}

struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

/// A set of P-256 keys: the first signs, all verify and are published.
pub(crate) struct KeySet {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("KeySet")
            .field("kids", &self.keys.iter().map(|k| k.jwk.kid()).collect::<Vec<_>>())
            .finish()
    }
}

/// Base64url without padding, the JOSE encoding.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl KeySet {
    /// Loads `paths` (the first signs), or without any, the key `generated` (created, mode
    /// 0600, at first start). `what` names the set in errors and logs.
    pub(crate) fn load(paths: &[PathBuf], generated: &Path, what: &'static str) -> Result<Self, KeyError> {
        let fallback;
        let paths = if paths.is_empty() {
            fallback = [generate_if_missing(generated, what)?];
            &fallback[..]
        } else {
            paths
        };
        let keys = paths.iter().map(|path| load_key(path, what)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// The public keys.
    pub(crate) fn jwks(&self) -> Jwks {
        Jwks { keys: self.keys.iter().map(|k| k.jwk.clone()).collect() }
    }

    /// Signs `claims` with the first key, with header `typ` (`JWT`, `at+jwt`).
    pub(crate) fn sign(&self, typ: &str, claims: &impl Serialize) -> Result<String, SignError> {
        let Some(key) = self.keys.first() else {
            // `load` always yields at least one key.
            return Err(SignError(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey.into()));
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(key.jwk.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(SignError)
    }

    /// Verifies a token this set signed: header `typ`, a known `kid`, the signature, and what
    /// `validation` asks (its algorithm is forced to ES256). `None` for anything else.
    pub(crate) fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        mut validation: Validation,
    ) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(typ) {
            return None;
        }
        let kid = header.kid?;
        let key = self.keys.iter().find(|k| k.jwk.kid == kid)?;
        validation.algorithms = vec![Algorithm::ES256];
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation).ok().map(|data| data.claims)
    }
}

fn generate_if_missing(path: &Path, what: &'static str) -> Result<PathBuf, KeyError> {
    if !path.exists() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| KeyError::Generate { what, source })?;
        fsutil::write_atomic(path, key.serialize_pem().as_bytes(), Visibility::Private)?;
        tracing::info!(path = %path.display(), "generated a {what} signing key");
    }
    Ok(path.to_owned())
}

fn load_key(path: &Path, what: &'static str) -> Result<SigningKey, KeyError> {
    let bad = |reason: String| KeyError::BadKey { what, path: path.to_owned(), reason };
    if let Some(reason) = fsutil::key_file_problem(path) {
        return Err(bad(reason));
    }
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let key = KeyPair::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
    if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(bad("not a P-256 key; the CA's tokens are ES256".into()));
    }
    let point = key.public_key_raw();
    // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
    if point.len() != 65 || point[0] != 4 {
        return Err(bad("unexpected public key encoding".into()));
    }
    let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
    let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(e.to_string()))?;
    // RFC 7638: the thumbprint hashes the required members in lexicographic order.
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64url(&Sha256::digest(thumbprint_input.as_bytes()));
    let encoding = EncodingKey::from_ec_der(&key.serialize_der());
    let jwk = Jwk { kty: "EC", crv: "P-256", x, y, kid, alg: "ES256", usage: "sig" };
    Ok(SigningKey { encoding, decoding, jwk })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Claims {
        iss: String,
        exp: i64,
    }

    #[test]
    fn signs_what_it_verifies_and_rotation_publishes_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let generated = dir.path().join("k.pem");
        let set = KeySet::load(&[], &generated, "test").expect("generate");
        let again = KeySet::load(&[], &generated, "test").expect("reload");
        assert_eq!(set.jwks(), again.jwks(), "the generated key is reused");

        let claims =
            Claims { iss: "https://ca.example.com".into(), exp: chrono::Utc::now().timestamp() + 60 };
        let token = set.sign("at+jwt", &claims).expect("sign");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&["https://ca.example.com"]);
        validation.validate_aud = false;
        assert_eq!(set.verify::<Claims>(&token, "at+jwt", validation.clone()), Some(claims));
        assert_eq!(set.verify::<Claims>(&token, "JWT", validation.clone()), None, "another typ");

        // Rotation: a new key first, the old one still published and still verifying.
        let new = dir.path().join("new.pem");
        generate_if_missing(&new, "test").expect("new key");
        let rotated = KeySet::load(&[new, generated], dir.path(), "test").expect("rotated");
        let kids: Vec<&str> = rotated.keys.iter().map(|k| k.jwk.kid()).collect();
        assert_eq!(kids.len(), 2);
        assert_eq!(kids[1], set.jwks().keys[0].kid());
        assert_ne!(kids[0], kids[1]);
        assert!(rotated.verify::<Claims>(&token, "at+jwt", validation.clone()).is_some());
        // A set that never held the key verifies nothing of it.
        let other = KeySet::load(&[], &dir.path().join("other.pem"), "test").expect("other");
        assert_eq!(other.verify::<Claims>(&token, "at+jwt", validation), None);
    }

    #[test]
    fn refuses_a_key_others_can_read_and_a_non_p256_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open.pem");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        std::fs::write(&open, key.serialize_pem()).expect("write");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_key(&open, "test"), Err(KeyError::BadKey { .. })));

        let p384 = dir.path().join("p384.pem");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        fsutil::write_atomic(&p384, key.serialize_pem().as_bytes(), Visibility::Private).expect("write");
        let err = load_key(&p384, "test").err().expect("refused");
        assert!(err.to_string().contains("P-256"), "{err}");
    }
}
