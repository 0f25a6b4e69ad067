//! The HTTP layer: routes, request parsing and response bodies (axum), one file per
//! protocol area: `agent` (what the agent calls), `browser` (verify and the CA's pages),
//! `admin`, `relying_party` (forward auth, JWKS, OCSP, the PEM CRL) and `oidc` (the
//! OpenID Connect provider). This file holds the routers and what every area shares.
//!
//! Handlers do the HTTP part only: read the bearer token, the peer certificate and the
//! body, call [`Ca`], and turn the result into the contract's response. Every refusal is
//! recorded by [`Ca::record_refusal`] before its response is built (`refuse` does both;
//! verify builds its own 403 body), so no refusal can skip the log. Bodies are read here, never by an axum extractor, so that an
//! oversized body gets the contract's 413 `payload_too_large` (checked against
//! `Content-Length` before anything is read, then enforced while reading) and malformed
//! JSON the contract's 400 `invalid_request`.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use ca_client::protocol::{MAX_REQUEST_BODY, paths};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::{self, Ca, RefusalContext};

mod admin;
mod agent;
mod browser;
mod oidc;
mod relying_party;

pub use browser::escape_html;
use browser::{html_page, refusal_page};

pub use relying_party::{CHECK_PATH, CRL_PEM_PATH, JWKS_PATH, OCSP_PATH, USER_HEADER};

/// The TCP peer's address of the connection a request came on, set by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The client address of a request, if the server recorded one.
type Client = Option<Extension<ClientAddress>>;

fn address(client: &Client) -> Option<std::net::IpAddr> {
    client.as_ref().map(|Extension(ClientAddress(ip))| *ip)
}

/// Longest detail of an `invalid_request` message; keeps echoed input (a whole CSR in the
/// wrong field, say) out of responses and logs.
const MAX_DETAIL: usize = 160;

const JSON: &str = "application/json; charset=utf-8";

/// Every endpoint, for the main listener.
pub fn router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::METADATA, get(agent::metadata))
        .route(paths::ENROLL, post(agent::enroll))
        .route(paths::RENEW, post(agent::renew))
        .route(paths::CERTIFICATE, get(agent::certificate_status))
        .route(paths::VERIFY, get(browser::verify))
        .route(paths::CRL, get(agent::crl))
        .merge(relying_party_routes())
        .merge(oidc::routes())
        .route("/api/v1/admin/users/{user}/revoke", post(admin::revoke_user))
        .route("/api/v1/admin/devices/{udid}/revoke", post(admin::revoke_device))
        .route("/api/v1/admin/devices/{udid}", get(admin::device))
        .route("/api/v1/admin/certificates/{serial}/bind", post(admin::bind))
        .route("/api/v1/admin/events", get(admin::events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ca.clone(), crate::ops::count_requests))
        .with_state(ca)
}

/// The verify endpoint, the relying-party check, the JWKS, OCSP, the CRL and the OpenID
/// Connect provider, for a separate cert-auth listener.
pub fn cert_auth_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::VERIFY, get(browser::verify))
        .route(paths::CRL, get(agent::crl))
        .merge(relying_party_routes())
        .merge(oidc::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ca.clone(), crate::ops::count_requests))
        .with_state(ca)
}

/// What is conventionally fetched over plain HTTP and is signed or public anyway: OCSP, the
/// CRL and the JWKS (both). Nothing that takes a secret.
pub fn http_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::CRL, get(agent::crl))
        .route(CRL_PEM_PATH, get(relying_party::crl_pem))
        .route(JWKS_PATH, get(relying_party::jwks))
        .route(crate::oidc::JWKS_PATH, get(oidc::jwks))
        .route(OCSP_PATH, post(relying_party::ocsp_post))
        .route(&format!("{OCSP_PATH}/{{*request}}"), get(relying_party::ocsp_get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ca.clone(), crate::ops::count_requests))
        .with_state(ca)
}

/// The relying parties' own listener: the check, the JWKS, OCSP and the CRL.
pub fn relying_party_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::CRL, get(agent::crl))
        .merge(relying_party_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(ca.clone(), crate::ops::count_requests))
        .with_state(ca)
}

fn relying_party_routes() -> Router<Arc<Ca>> {
    Router::new()
        .route(CHECK_PATH, any(relying_party::check))
        .route(CRL_PEM_PATH, get(relying_party::crl_pem))
        .route(JWKS_PATH, get(relying_party::jwks))
        .route(OCSP_PATH, post(relying_party::ocsp_post))
        .route(&format!("{OCSP_PATH}/{{*request}}"), get(relying_party::ocsp_get))
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    json_response_cached(status, body, "no-store")
}

/// A JSON response with its own `Cache-Control`.
fn json_response_cached(status: StatusCode, body: &impl serde::Serialize, cache: &'static str) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(JSON)),
                (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &error.body());
    response.extensions_mut().insert(crate::ops::RefusalCode(error.code_str()));
    if let ApiError::RateLimited { retry_after_secs } = error {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

/// Records and answers a refusal.
async fn refuse(ca: &Ca, context: &RefusalContext, error: ApiError) -> Response {
    ca.record_refusal(context, &error).await;
    error_response(&error)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Makes a parser's message safe to send and log: input it echoes (a JSON parser quotes the
/// value it refused) gets its control and deceptive characters escaped, so it cannot start a
/// fake log line or reorder one, and it is cut to [`MAX_DETAIL`] bytes.
fn truncate(detail: String) -> String {
    let mut detail = if detail.chars().any(|c| c.is_control() || service::is_deceptive(c)) {
        detail
            .chars()
            .map(|c| {
                if c.is_control() || service::is_deceptive(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        detail
    };
    if detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
        detail.push('…');
    }
    detail
}

/// Reads a JSON body of at most [`MAX_REQUEST_BODY`] bytes, within the body read timeout:
/// a client that stalls its body holds a connection and a task for that long at most.
async fn read_json<T: DeserializeOwned>(ca: &Ca, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = read_bytes(ca, headers, body, MAX_REQUEST_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidRequest(truncate(e.to_string())))
}

/// Reads a body of at most `limit` bytes within the body read timeout.
async fn read_bytes(ca: &Ca, headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = ApiError::PayloadTooLarge { limit };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large);
    }
    let secs = ca.limits().body_read_timeout_secs;
    let collected =
        tokio::time::timeout(std::time::Duration::from_secs(secs), Limited::new(body, limit).collect())
            .await
            .map_err(|_| {
                ca.metrics().body_timeouts.inc();
                ApiError::RequestTimeout { secs }
            })?;
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large),
        Err(_) => return Err(ApiError::InvalidRequest("the request body could not be read".into())),
    };
    Ok(bytes.to_vec())
}

async fn not_found() -> Response {
    error_response(&ApiError::NotFound)
}

async fn method_not_allowed() -> Response {
    error_response(&ApiError::MethodNotAllowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let cases = [
            ("ok/bearer", Some("Bearer abc"), Some("abc")),
            ("ok/lowercase-scheme", Some("bearer abc"), Some("abc")),
            ("fail/basic", Some("Basic abc"), None),
            ("fail/no-token", Some("Bearer"), None),
            ("fail/missing", None, None),
        ];
        for (name, value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            }
            assert_eq!(bearer(&headers), want, "{name}");
        }
    }

    #[test]
    fn the_openapi_document_names_every_route_and_code() {
        let openapi = include_str!("../../../docs/openapi.yaml");
        let routes = [
            paths::METADATA,
            paths::ENROLL,
            paths::RENEW,
            paths::CERTIFICATE,
            paths::VERIFY,
            paths::CRL,
            "/api/v1/admin/users/{user}/revoke",
            "/api/v1/admin/devices/{udid}/revoke",
            "/api/v1/admin/devices/{udid}",
            "/api/v1/admin/certificates/{serial}/bind",
            "/api/v1/admin/events",
            CHECK_PATH,
            JWKS_PATH,
            OCSP_PATH,
            "/ocsp/{request}",
            CRL_PEM_PATH,
            crate::oidc::DISCOVERY_PATH,
            crate::oidc::JWKS_PATH,
            crate::oidc::AUTHORIZE_PATH,
            crate::oidc::TOKEN_PATH,
            crate::oidc::USERINFO_PATH,
        ];
        for route in routes {
            assert!(openapi.contains(&format!("\n  {route}:\n")), "docs/openapi.yaml lacks {route}");
        }
        for code in ca_client::protocol::ErrorCode::KNOWN {
            assert!(openapi.contains(&format!("- {}\n", code.as_str())), "docs/openapi.yaml lacks {code}");
        }
        let protocol = include_str!("../../../docs/protocol.md");
        for code in ca_client::protocol::ErrorCode::KNOWN {
            assert!(protocol.contains(&format!("| `{}` |", code.as_str())), "docs/protocol.md lacks {code}");
        }
    }

    #[test]
    fn html_is_escaped_and_details_are_short() {
        assert_eq!(escape_html("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let long = "é".repeat(200);
        let cut = truncate(long);
        assert!(cut.len() <= MAX_DETAIL + '…'.len_utf8());
        let echoed = truncate("unknown variant `mac\nos\u{202e}`".to_owned());
        assert_eq!(echoed, "unknown variant `mac\\u{a}os\\u{202e}`");
    }
}
