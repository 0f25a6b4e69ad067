//! Bearer tokens: where they come from and how they are compared.
//!
//! Tokens are read from a file or an environment variable, never from the command line or
//! the config file itself, so they do not show up in `ps`, shell history or a config
//! checked into a repository. Once loaded, only the SHA-256 digest of a token stays in
//! memory; a presented token is hashed and compared in constant time, so neither its
//! content nor its length leaks through timing. [`Token`] and [`SecretString`] never print
//! their value in `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted at startup; shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Where a token is read from: exactly one of `file` or `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the token (surrounding whitespace is ignored). Should be mode 0600.
    pub file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub env: Option<String>,
}

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Neither or both of `file` and `env` are set.
    #[error("set exactly one of `file` or `env` for the {what}")]
    Source {
        /// Which token.
        what: &'static str,
    },
    /// The file could not be read.
    #[error("cannot read the {what} from {path}")]
    Read {
        /// Which token.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is unset or not UTF-8.
    #[error("the environment variable {var} for the {what} is not set")]
    Env {
        /// Which token.
        what: &'static str,
        /// The variable.
        var: String,
    },
    /// The token is too short.
    #[error("the {what} is shorter than {min_len} characters")]
    TooShort {
        /// Which token.
        what: &'static str,
        /// The shortest accepted.
        min_len: usize,
    },
}

impl SecretSource {
    /// A source reading `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self { file: Some(path.into()), env: None }
    }

    /// Loads the token; `what` names it in errors ("enrollment token").
    pub fn load(&self, what: &'static str) -> Result<Token, SecretError> {
        self.load_at_least(what, MIN_TOKEN_LEN)
    }

    /// Like [`SecretSource::load`], refusing a token shorter than `min_len` characters.
    pub fn load_at_least(&self, what: &'static str, min_len: usize) -> Result<Token, SecretError> {
        let raw = match (&self.file, &self.env) {
            (Some(path), None) => {
                warn_if_readable_by_others(path, what);
                std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                    what,
                    path: path.clone(),
                    source,
                })?
            }
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| SecretError::Env { what, var: var.clone() })?
            }
            _ => return Err(SecretError::Source { what }),
        };
        let value = raw.trim();
        if value.chars().count() < min_len.max(MIN_TOKEN_LEN) {
            return Err(SecretError::TooShort { what, min_len: min_len.max(MIN_TOKEN_LEN) });
        }
        Ok(Token::new(value))
    }
}

/// Reads a password (any length, surrounding whitespace removed) from a file that should
/// be mode 0600; `what` names it in errors ("PostgreSQL password").
pub fn read_password_file(path: &Path, what: &'static str) -> Result<SecretString, SecretError> {
    warn_if_readable_by_others(path, what);
    let raw = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    Ok(SecretString::new(raw.trim()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, what: &'static str) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the {what} file is readable by other users; make it mode 0600");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _what: &'static str) {}

/// An expected bearer token, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// Keeps the digest of `value`.
    pub fn new(value: &str) -> Self {
        Self { digest: Sha256::digest(value.as_bytes()).into() }
    }

    /// Whether `presented` is this token, in time independent of both values.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.digest.ct_eq(&presented))
    }

    /// Whether two tokens are the same (used to refuse an admin token equal to the
    /// enrollment token).
    pub fn same_as(&self, other: &Token) -> bool {
        bool::from(self.digest.ct_eq(&other.digest))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A secret string that must be handed to someone (the dev command prints its tokens), but
/// must never end up in `Debug` output by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Every call site is a place where the secret leaves on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// A new random token: 32 bytes from the thread-local CSPRNG, base64url without padding.
pub fn generate_token() -> SecretString {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves_and_never_print() {
        let token = Token::new("correct horse battery staple");
        assert!(token.matches("correct horse battery staple"));
        assert!(!token.matches("correct horse battery stapl"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let secret = generate_token();
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert_eq!(secret.expose().len(), 43);
    }

    #[test]
    fn sources_load_from_files_and_refuse_bad_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  0123456789abcdef0123\n").expect("write");
        let token = SecretSource::file(&path).load("enrollment token").expect("load");
        assert!(token.matches("0123456789abcdef0123"));

        std::fs::write(&path, "short").expect("write");
        assert!(matches!(
            SecretSource::file(&path).load("enrollment token"),
            Err(SecretError::TooShort { .. })
        ));
        assert!(matches!(
            SecretSource::default().load("admin token"),
            Err(SecretError::Source { what: "admin token" })
        ));
        let both = SecretSource { file: Some(path), env: Some("X".into()) };
        assert!(matches!(both.load("admin token"), Err(SecretError::Source { .. })));
        let missing = SecretSource { file: None, env: Some("DEVICETRUST_TEST_UNSET_VARIABLE".into()) };
        assert!(matches!(missing.load("admin token"), Err(SecretError::Env { .. })));
    }
}
