//! [`ClientError`]: every way a call to the CA can fail, and what the agent should do about
//! it.
//!
//! The reaction of a refusal comes from its contract error code. Anything that is not a
//! contract answer (transport failures, timeouts, TLS failures, oversized or malformed
//! answers, non-contract error pages) is [`Reaction::RetryLater`] unless it says otherwise
//! below: the CA or the path to it is not working as the contract says right now, which is
//! a condition that passes, and backing off costs the device nothing.

use std::time::Duration;

use crate::protocol::{ErrorCode, Reaction};

/// Why a call to the CA failed.
///
/// Messages never contain the enrollment token, a private key or a whole response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The CA refused with a contract error body.
    #[error("the CA refused the request with HTTP {status} {code}: {message}")]
    Ca {
        /// The HTTP status.
        status: u16,
        /// The machine-readable code.
        code: ErrorCode,
        /// The CA's message (cut to a bounded length).
        message: String,
        /// From `Retry-After` (delta-seconds), when present.
        retry_after: Option<Duration>,
    },
    /// The connection or the whole exchange took longer than the configured timeout.
    #[error("the request to {url} timed out")]
    Timeout {
        /// The endpoint.
        url: String,
    },
    /// No connection could be made (DNS, refused, unreachable).
    #[error("could not connect to {url}: {reason}")]
    Connect {
        /// The endpoint.
        url: String,
        /// What the network stack said.
        reason: String,
    },
    /// The TLS handshake or session failed, including a server certificate that does not
    /// chain to the trusted (pinned) roots and a client certificate the server refused.
    #[error("tls with {url} failed: {reason}")]
    Tls {
        /// The endpoint.
        url: String,
        /// rustls's reason.
        reason: String,
    },
    /// The server's certificate was refused: it does not chain to the trusted roots (the
    /// pinned bundle, else the system's), is self-signed, is for another name, or is out of
    /// its validity. A configuration matter, so not retried: waiting does not change which
    /// certificate the server presents or which roots the client trusts.
    #[error("the server at {url} is not trusted: {reason}")]
    UntrustedServer {
        /// The endpoint.
        url: String,
        /// Why, in words that say what to change.
        reason: String,
    },
    /// The connection failed after it was made (reset, closed early, protocol error).
    #[error("the exchange with {url} failed: {reason}")]
    Transport {
        /// The endpoint.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The answer's body is larger than the client accepts.
    #[error("the answer from {url} is larger than {limit} bytes")]
    BodyTooLarge {
        /// The endpoint.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A success status with a body that is not the contract's answer. Retried later: the
    /// answer came from something that does not follow the contract right now (a proxy, a
    /// half-deployed CA), and a retry with the same key is safe because enrollment is
    /// idempotent per key.
    #[error("malformed answer with HTTP {status}: {reason}")]
    Malformed {
        /// The HTTP status.
        status: u16,
        /// What is wrong (never the whole body).
        reason: String,
    },
    /// An error status whose body is not a contract error (an HTML page from a proxy, a 404
    /// from a wrong base URL). 408, 429 and 5xx are retried later; anything else on the next
    /// run, since a misconfigured URL or proxy is fixed by people, not by backoff.
    #[error("unexpected http {status} without a contract error body")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// From `Retry-After` (delta-seconds), when present.
        retry_after: Option<Duration>,
    },
    /// The client cannot be built or the request cannot be formed from what was given.
    #[error("invalid client configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong (never a secret's value).
        reason: String,
    },
    /// A mutual-TLS call on a client built without an identity (see `CaClient::with_identity`).
    #[error("{endpoint} needs mutual tls, but the client has no client certificate")]
    NoClientIdentity {
        /// The endpoint path.
        endpoint: &'static str,
    },
}

impl ClientError {
    /// What the agent should do about it.
    pub fn reaction(&self) -> Reaction {
        match self {
            Self::Ca { code, .. } => code.reaction(),
            Self::UnexpectedStatus { status, .. } => {
                if *status == 408 || *status == 429 || (500..600).contains(status) {
                    Reaction::RetryLater
                } else {
                    Reaction::RetryNextRun
                }
            }
            Self::Timeout { .. }
            | Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Transport { .. }
            | Self::BodyTooLarge { .. }
            | Self::Malformed { .. } => Reaction::RetryLater,
            // Mistakes in how the client is set up or built the call; repeating it cannot help.
            Self::InvalidConfiguration { .. }
            | Self::NoClientIdentity { .. }
            | Self::UntrustedServer { .. } => Reaction::Fail,
        }
    }

    /// Whether sending the request again (later or on the next run) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.reaction(), Reaction::RetryLater | Reaction::RetryNextRun)
    }

    /// The wait the server asked for, when it sent `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Ca { retry_after, .. } | Self::UnexpectedStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The contract error code, for a CA refusal.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Ca { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_table() {
        let url = || "https://ca.test/api/v1/enroll".to_owned();
        let cases = [
            ("ok/timeout", ClientError::Timeout { url: url() }, Reaction::RetryLater),
            (
                "ok/connect",
                ClientError::Connect { url: url(), reason: "refused".into() },
                Reaction::RetryLater,
            ),
            (
                "ok/tls",
                ClientError::Tls { url: url(), reason: "unknown issuer".into() },
                Reaction::RetryLater,
            ),
            ("ok/too-large", ClientError::BodyTooLarge { url: url(), limit: 1 }, Reaction::RetryLater),
            (
                "ok/malformed",
                ClientError::Malformed { status: 200, reason: "x".into() },
                Reaction::RetryLater,
            ),
            (
                "ok/502-page",
                ClientError::UnexpectedStatus { status: 502, retry_after: None },
                Reaction::RetryLater,
            ),
            (
                "ok/429-page",
                ClientError::UnexpectedStatus { status: 429, retry_after: None },
                Reaction::RetryLater,
            ),
            (
                "ok/404-page",
                ClientError::UnexpectedStatus { status: 404, retry_after: None },
                Reaction::RetryNextRun,
            ),
            (
                "ok/302",
                ClientError::UnexpectedStatus { status: 302, retry_after: None },
                Reaction::RetryNextRun,
            ),
            ("ok/config", ClientError::InvalidConfiguration { reason: "x".into() }, Reaction::Fail),
            ("ok/no-identity", ClientError::NoClientIdentity { endpoint: "/api/v1/renew" }, Reaction::Fail),
        ];
        for (name, error, reaction) in cases {
            assert_eq!(error.reaction(), reaction, "{name}");
            assert_eq!(error.is_retryable(), reaction != Reaction::Fail, "{name}");
        }
    }
}
