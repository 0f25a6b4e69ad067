//! The HTTP layer: routes, request parsing and response bodies (axum).
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
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use ca_client::protocol::{
    EventType, EventsResponse, MAX_REQUEST_BODY, Platform, RevokeResponse, VerifyResponse, paths,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::{self, Ca, IssueReply, PresentedCertificate, RefusalContext};
use crate::store::RevokeTarget;

mod oidc;
mod relying_party;

pub use relying_party::{CHECK_PATH, CRL_PEM_PATH, JWKS_PATH, OCSP_PATH, USER_HEADER};

/// The TCP peer's address of the connection a request came on, set by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The client address of a request, if the server recorded one.
type Client = Option<Extension<ClientAddress>>;

fn address(client: &Client) -> Option<std::net::IpAddr> {
    client.as_ref().map(|Extension(ClientAddress(ip))| *ip)
}

/// Default and largest page of `GET /api/v1/admin/events`.
const EVENTS_DEFAULT_LIMIT: u32 = 100;
const EVENTS_MAX_LIMIT: u32 = 1000;
/// Longest detail of an `invalid_request` message; keeps echoed input (a whole CSR in the
/// wrong field, say) out of responses and logs.
const MAX_DETAIL: usize = 160;

const JSON: &str = "application/json; charset=utf-8";

/// Every endpoint, for the main listener.
pub fn router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::METADATA, get(metadata))
        .route(paths::ENROLL, post(enroll))
        .route(paths::RENEW, post(renew))
        .route(paths::CERTIFICATE, get(certificate_status))
        .route(paths::VERIFY, get(verify))
        .route(paths::CRL, get(crl))
        .merge(relying_party_routes())
        .merge(oidc::routes())
        .route("/api/v1/admin/users/{user}/revoke", post(revoke_user))
        .route("/api/v1/admin/devices/{udid}/revoke", post(revoke_device))
        .route("/api/v1/admin/devices/{udid}", get(device))
        .route("/api/v1/admin/certificates/{serial}/bind", post(bind))
        .route("/api/v1/admin/events", get(events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ca)
}

/// The verify endpoint, the relying-party check, the JWKS, OCSP, the CRL and the OpenID
/// Connect provider, for a separate cert-auth listener.
pub fn cert_auth_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::VERIFY, get(verify))
        .route(paths::CRL, get(crl))
        .merge(relying_party_routes())
        .merge(oidc::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ca)
}

/// What is conventionally fetched over plain HTTP and is signed or public anyway: OCSP, the
/// CRL and the JWKS (both). Nothing that takes a secret.
pub fn http_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::CRL, get(crl))
        .route(CRL_PEM_PATH, get(relying_party::crl_pem))
        .route(JWKS_PATH, get(relying_party::jwks))
        .route(crate::oidc::JWKS_PATH, get(oidc::jwks))
        .route(OCSP_PATH, post(relying_party::ocsp_post))
        .route(&format!("{OCSP_PATH}/{{*request}}"), get(relying_party::ocsp_get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ca)
}

/// The relying parties' own listener: the check, the JWKS, OCSP and the CRL.
pub fn relying_party_router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route(paths::CRL, get(crl))
        .merge(relying_party_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
                ca.metrics().body_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ApiError::RequestTimeout { secs }
            })?;
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large),
        Err(_) => return Err(ApiError::InvalidRequest("the request body could not be read".into())),
    };
    Ok(bytes.to_vec())
}

fn issued_response(reply: IssueReply) -> Response {
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    json_response(status, &reply.body)
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    platform: Option<String>,
}

async fn metadata(
    State(ca): State<Arc<Ca>>,
    client: Client,
    query: Result<Query<MetadataQuery>, QueryRejection>,
) -> Response {
    let context = RefusalContext::unrecorded(address(&client));
    let platform = match query {
        Ok(Query(q)) => q.platform,
        Err(e) => {
            return refuse(&ca, &context, ApiError::InvalidRequest(truncate(e.body_text()))).await;
        }
    };
    if let Some(p) = platform
        && serde_json::from_value::<Platform>(serde_json::Value::String(p)).is_err()
    {
        let error = ApiError::InvalidRequest("`platform` must be `macos` or `linux`".into());
        return refuse(&ca, &context, error).await;
    }
    json_response(StatusCode::OK, &ca.metadata())
}

async fn enroll(State(ca): State<Arc<Ca>>, client: Client, headers: HeaderMap, body: Body) -> Response {
    let mut context = RefusalContext::new(EventType::Enroll, address(&client));
    let result = async {
        ca.admit(context.client)?;
        ca.check_enrollment_token(bearer(&headers), &mut context)?;
        ca.ensure_writable()?;
        let request = read_json(&ca, &headers, body).await?;
        ca.enroll(&request, &mut context).await
    }
    .await;
    match result {
        Ok(reply) => issued_response(reply),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

async fn renew(
    State(ca): State<Arc<Ca>>,
    client: Client,
    peer: Option<Extension<PresentedCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut context = RefusalContext::new(EventType::Renew, address(&client));
    let result = async {
        ca.admit(context.client)?;
        let old = ca.identify(peer.as_ref().map(|p| &p.0), &mut context).await?;
        ca.admit_renewal(&old)?;
        ca.ensure_writable()?;
        let request = read_json(&ca, &headers, body).await?;
        ca.renew(&old, &request).await
    }
    .await;
    match result {
        Ok(reply) => issued_response(reply),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

async fn certificate_status(
    State(ca): State<Arc<Ca>>,
    client: Client,
    peer: Option<Extension<PresentedCertificate>>,
) -> Response {
    // The contract has no event type for status; a refused status request is an
    // authentication by certificate that failed.
    let mut context = RefusalContext::new(EventType::Authenticate, address(&client));
    let result = async {
        let row = ca.identify(peer.as_ref().map(|p| &p.0), &mut context).await?;
        ca.status(&row)
    }
    .await;
    match result {
        Ok(status) => json_response(StatusCode::OK, &status),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

#[derive(Debug, Deserialize)]
struct VerifyQuery {
    user: Option<String>,
}

async fn verify(
    State(ca): State<Arc<Ca>>,
    client: Client,
    peer: Option<Extension<PresentedCertificate>>,
    headers: HeaderMap,
    query: Result<Query<VerifyQuery>, QueryRejection>,
) -> Response {
    let mut context = RefusalContext::new(EventType::Authenticate, address(&client));
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::InvalidRequest(truncate(e.body_text())))?;
        let row = ca.identify(peer.as_ref().map(|p| &p.0), &mut context).await?;
        ca.verify(&row, query.user.as_deref(), &mut context).await
    }
    .await;
    match result {
        Ok(row) => json_response(
            StatusCode::OK,
            &VerifyResponse {
                trusted: true,
                serial_number: Some(row.serial),
                state: Some(row.state),
                error: None,
            },
        ),
        Err(error) => {
            ca.record_refusal(&context, &error).await;
            // Browsers land here: every refusal is 403, with a page for humans.
            let wants_html = headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("text/html"));
            if wants_html {
                return security_requirements_page(&error, ca.learn_more_url());
            }
            let body = VerifyResponse {
                trusted: false,
                serial_number: None,
                state: None,
                error: Some(error.body().error),
            };
            json_response(StatusCode::FORBIDDEN, &body)
        }
    }
}

fn security_requirements_page(error: &ApiError, learn_more: Option<&str>) -> Response {
    refusal_page(error, learn_more, None)
}

/// The "Security requirements" page (403) for a refused device, with the "Learn more" link
/// and, when the browser has somewhere to go back to, a link there (`(label, url)`).
fn refusal_page(error: &ApiError, learn_more: Option<&str>, back: Option<(&str, &str)>) -> Response {
    let mut body = format!(
        "<p>This resource is available only from a managed device with a valid device certificate.</p>\n<p>{}</p>\n",
        escape_html(&error.public_message())
    );
    if let Some(url) = learn_more {
        body.push_str(&format!("<p><a href=\"{}\">Learn more</a></p>\n", escape_html(url)));
    }
    if let Some((label, url)) = back {
        body.push_str(&format!(
            "<p><a id=\"continue\" href=\"{}\">{}</a></p>\n",
            escape_html(url),
            escape_html(label)
        ));
    }
    html_page(StatusCode::FORBIDDEN, "Security requirements", &body)
}

/// A page of the CA's own: `body` is HTML the caller escaped. Nothing on it loads,
/// runs or frames.
fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape_html(title);
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        page,
    )
        .into_response()
}

/// `s` safe inside HTML text and attribute values (the CA's refusal page, and any other
/// page that shows what a client sent).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn crl(State(ca): State<Arc<Ca>>) -> Response {
    match ca.crl().await {
        Ok(der) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/pkix-crl")),
                (header::CACHE_CONTROL, HeaderValue::from_static("max-age=60")),
            ],
            der.as_ref().clone(),
        )
            .into_response(),
        Err(error) => refuse(&ca, &RefusalContext::unrecorded(None), error).await,
    }
}

fn path_param(param: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    param.map(|Path(p)| p).map_err(|e| ApiError::InvalidRequest(truncate(e.body_text())))
}

/// The admin API's first steps, in this order: the client address's budget, the token
/// (nothing about the request is looked at, let alone recorded, before it matched), then
/// the path parameter.
fn admin_request(
    ca: &Ca,
    headers: &HeaderMap,
    param: Result<Path<String>, PathRejection>,
    context: &mut RefusalContext,
) -> Result<String, ApiError> {
    ca.admit(context.client)?;
    ca.check_admin_token(bearer(headers), context)?;
    path_param(param)
}

async fn revoke_user(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
) -> Response {
    let mut context = RefusalContext::new(EventType::Revoke, address(&client));
    let result = async {
        let user = admin_request(&ca, &headers, user, &mut context)?;
        service::check_user(&user)?;
        context.user = Some(user.clone());
        ca.ensure_writable()?;
        ca.revoke(RevokeTarget::User(&user)).await
    }
    .await;
    match result {
        Ok(revoked) => json_response(StatusCode::OK, &RevokeResponse { revoked }),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

async fn revoke_device(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    udid: Result<Path<String>, PathRejection>,
) -> Response {
    let mut context = RefusalContext::new(EventType::Revoke, address(&client));
    let result = async {
        let udid = service::canonical_device(&admin_request(&ca, &headers, udid, &mut context)?)?;
        context.udid = Some(udid.clone());
        ca.ensure_writable()?;
        ca.revoke(RevokeTarget::Device(&udid)).await
    }
    .await;
    match result {
        Ok(revoked) => json_response(StatusCode::OK, &RevokeResponse { revoked }),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

async fn device(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    udid: Result<Path<String>, PathRejection>,
) -> Response {
    // Reading the log or a device is not an event the contract knows; refusals are logged
    // by the CA, not recorded as events.
    let mut context = RefusalContext::unrecorded(address(&client));
    let result = async {
        let udid = admin_request(&ca, &headers, udid, &mut context)?;
        ca.device(&udid).await
    }
    .await;
    match result {
        Ok(record) => json_response(StatusCode::OK, &record),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

#[derive(Debug, Deserialize)]
struct BindRequest {
    user: String,
}

/// `POST /api/v1/admin/certificates/{serial}/bind`: the admin vouches that a certificate
/// belongs to `user`. Browsers cannot bind to anyone but the enrolling user.
async fn bind(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    serial: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let mut context = RefusalContext::new(EventType::Authenticate, address(&client));
    let result = async {
        let serial = admin_request(&ca, &headers, serial, &mut context)?;
        let request: BindRequest = read_json(&ca, &headers, body).await?;
        ca.bind(&serial, &request.user, &mut context).await
    }
    .await;
    match result {
        Ok(row) => json_response(
            StatusCode::OK,
            &BindResponse { serial_number: row.serial, state: row.state, bound_user: row.bound_user },
        ),
        Err(error) => refuse(&ca, &context, error).await,
    }
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BindResponse {
    serial_number: String,
    state: ca_client::protocol::CertificateState,
    bound_user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn events(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let mut context = RefusalContext::unrecorded(address(&client));
    let result = async {
        ca.admit(context.client)?;
        ca.check_admin_token(bearer(&headers), &mut context)?;
        let Query(query) = query.map_err(|e| ApiError::InvalidRequest(truncate(e.body_text())))?;
        let after = query.after.unwrap_or(0);
        let limit = query.limit.unwrap_or(EVENTS_DEFAULT_LIMIT);
        if after < 0 {
            return Err(ApiError::InvalidRequest("`after` must not be negative".into()));
        }
        if !(1..=EVENTS_MAX_LIMIT).contains(&limit) {
            return Err(ApiError::InvalidRequest(format!("`limit` must be 1 to {EVENTS_MAX_LIMIT}")));
        }
        ca.events(after, limit).await
    }
    .await;
    match result {
        Ok(events) => json_response(StatusCode::OK, &EventsResponse { events }),
        Err(error) => refuse(&ca, &context, error).await,
    }
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
        let openapi = include_str!("../../docs/openapi.yaml");
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
        let protocol = include_str!("../../docs/protocol.md");
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
