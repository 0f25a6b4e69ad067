//! The enrollment token: where it may come from, and a type that never shows it.
//!
//! The token is accepted only from standard input (`--token-stdin`, one line), a file
//! (`--token-file PATH`) or the environment (`DEVICETRUST_ENROLLMENT_TOKEN`), never from an
//! argument, which any local user can read in the process list. [`Secret`] has no
//! `Display`, and its `Debug` prints a placeholder, so a token cannot reach a log line or
//! an error message by accident.

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The environment variable that may carry the token.
pub(crate) const TOKEN_ENV: &str = "DEVICETRUST_ENROLLMENT_TOKEN";

/// Longest token accepted; far above any real bearer token, far below a mistaken file.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// A secret string; shows only a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that must send it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the command line said to read the token from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// One line of standard input.
    Stdin,
    /// A file.
    File(PathBuf),
    /// Only the environment, if set.
    Environment,
}

/// Why no usable token could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenError {
    /// Standard input or the file could not be read.
    #[error("could not read the enrollment token from {from}")]
    Read {
        /// `standard input` or the path.
        from: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The source was given but held no token.
    #[error("the enrollment token from {from} is empty")]
    Empty {
        /// Where it came from.
        from: String,
    },
    /// The token has characters no bearer token has, or is absurdly long.
    #[error("the enrollment token from {from} is not a valid token ({reason})")]
    Invalid {
        /// Where it came from.
        from: String,
        /// What is wrong, without the value.
        reason: &'static str,
    },
}

/// Reads the token from `source`; `Ok(None)` when only the environment was allowed and it
/// holds nothing.
pub(crate) fn read_token(
    source: &TokenSource,
    stdin: &mut dyn BufRead,
    env: Option<String>,
) -> Result<Option<Secret>, TokenError> {
    let (from, raw) = match source {
        TokenSource::Stdin => {
            let mut line = String::new();
            // Read at most one token's worth, so a stray pipe cannot fill memory.
            std::io::Read::take(&mut *stdin, MAX_TOKEN_LEN as u64 + 2)
                .read_line(&mut line)
                .map_err(|source| TokenError::Read { from: "standard input".into(), source })?;
            ("standard input".to_owned(), line)
        }
        TokenSource::File(path) => (path.display().to_string(), read_file(path)?),
        TokenSource::Environment => match env {
            None => return Ok(None),
            Some(value) if value.trim().is_empty() => return Ok(None),
            Some(value) => (TOKEN_ENV.to_owned(), value),
        },
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty { from });
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Invalid { from, reason: "too long" });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid { from, reason: "only printable ascii without spaces is allowed" });
    }
    Ok(Some(Secret::new(token.to_owned())))
}

fn read_file(path: &Path) -> Result<String, TokenError> {
    let from = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TokenError::Read { from: from(), source })?;
    if bytes.len() > MAX_TOKEN_LEN + 2 {
        return Err(TokenError::Invalid { from: from(), reason: "too long" });
    }
    String::from_utf8(bytes).map_err(|_| TokenError::Invalid { from: from(), reason: "not utf-8 text" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(source: &TokenSource, stdin: &str, env: Option<&str>) -> Result<Option<Secret>, TokenError> {
        read_token(source, &mut stdin.as_bytes(), env.map(str::to_owned))
    }

    #[test]
    fn sources_table() {
        let temp = tempfile::tempdir().expect("tempdir");
        let file = temp.path().join("token");
        std::fs::write(&file, "file-token\n").expect("write");
        let ok = [
            ("ok/stdin-one-line", TokenSource::Stdin, "tok-1\nignored second line\n", None, Some("tok-1")),
            ("ok/stdin-crlf", TokenSource::Stdin, "tok-2\r\n", None, Some("tok-2")),
            ("ok/file", TokenSource::File(file.clone()), "", None, Some("file-token")),
            ("ok/env", TokenSource::Environment, "", Some("env-token"), Some("env-token")),
            ("ok/no-env", TokenSource::Environment, "", None, None),
            ("ok/blank-env", TokenSource::Environment, "", Some("  "), None),
            ("ok/stdin-wins-over-env", TokenSource::Stdin, "tok-3\n", Some("env"), Some("tok-3")),
        ];
        for (name, source, stdin, env, want) in ok {
            let got = read(&source, stdin, env).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.as_ref().map(Secret::expose), want, "{name}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let fail = [
            ("fail/stdin-empty", TokenSource::Stdin, "", "empty"),
            ("fail/stdin-blank-line", TokenSource::Stdin, "\n", "empty"),
            ("fail/inner-space", TokenSource::Stdin, "a b\n", "invalid"),
            ("fail/control", TokenSource::Stdin, "a\u{7}b\n", "invalid"),
            ("fail/too-long", TokenSource::Stdin, long.as_str(), "invalid"),
            ("fail/missing-file", TokenSource::File(temp.path().join("nope")), "", "read"),
        ];
        for (name, source, stdin, want) in fail {
            let got = match read(&source, stdin, None) {
                Err(TokenError::Empty { .. }) => "empty",
                Err(TokenError::Invalid { .. }) => "invalid",
                Err(TokenError::Read { .. }) => "read",
                Ok(token) => panic!("{name}: read {:?}", token.is_some()),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let secret = Secret::new("s3cr3t-token".into());
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let err = read(&TokenSource::Stdin, "s3cr3t token\n", None).expect_err("space");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
