//! The OpenID Connect provider's HTTP side: discovery, the ID-token JWKS, the
//! authorization endpoint (GET and POST, OpenID Connect Core §3.1.2.1), the token endpoint
//! and userinfo. Errors here are OAuth's (`error`, `error_description`), not the contract's
//! JSON: these endpoints are called by OpenID Connect libraries. Without a configured
//! client every path answers 404.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ca_client::protocol::EventType;

use super::{
    Client, address, bearer, error_response, html_page, json_response, json_response_cached, read_bytes,
    refusal_page,
};
use crate::error::ApiError;
use crate::oidc::request::BadParams;
use crate::oidc::{
    AUTHORIZE_PATH, DISCOVERY_PATH, ErrorCode, JWKS_PATH, OAuthError, Params, Refusal, TOKEN_PATH,
    TokenRequest, USERINFO_PATH,
};
use crate::service::{Ca, PresentedCertificate, RefusalContext, authorization_refusal};

/// Largest form body (token requests, authorization by POST): a code, a verifier, a
/// redirect URI and client credentials, or the authorization parameters.
const FORM_BODY_LIMIT: usize = 16 * 1024;

/// The provider's routes, for every listener that serves the cert-auth domain.
pub(super) fn routes() -> Router<Arc<Ca>> {
    Router::new()
        .route(DISCOVERY_PATH, get(discovery))
        .route(JWKS_PATH, get(jwks))
        .route(AUTHORIZE_PATH, get(authorize_get).post(authorize_post))
        .route(TOKEN_PATH, axum::routing::post(token))
        .route(USERINFO_PATH, get(userinfo).post(userinfo))
}

fn not_found() -> Response {
    error_response(&ApiError::NotFound)
}

async fn discovery(State(ca): State<Arc<Ca>>) -> Response {
    match ca.oidc() {
        Some(provider) => json_response_cached(StatusCode::OK, &provider.discovery(), "public, max-age=300"),
        None => not_found(),
    }
}

pub(super) async fn jwks(State(ca): State<Arc<Ca>>) -> Response {
    match ca.oidc() {
        Some(provider) => json_response_cached(StatusCode::OK, &provider.jwks(), "public, max-age=300"),
        None => not_found(),
    }
}

async fn authorize_get(
    State(ca): State<Arc<Ca>>,
    client: Client,
    peer: Option<Extension<PresentedCertificate>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if method == Method::HEAD {
        // axum answers HEAD with the GET handler; a probe must not authorize anything.
        return error_response(&ApiError::MethodNotAllowed);
    }
    if let Some(refused) = not_a_navigation(&ca, &headers) {
        return refused;
    }
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    authorize(&ca, &client, peer.as_ref().map(|p| &p.0), params).await
}

/// A sign-in is a top-level navigation. A browser says what a request is for
/// (`Sec-Fetch-Mode`, `Sec-Fetch-Dest`; every current browser sends them): an image, a
/// script, a fetch or a frame that another site made the browser send, presenting the
/// certificate on its own, is refused before anything is looked at, so that a page cannot
/// spend the certificate's budget or fill the store. Clients that send neither header are
/// not browsers and get the full answer.
fn not_a_navigation(ca: &Ca, headers: &HeaderMap) -> Option<Response> {
    ca.oidc()?;
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mode_ok = value("sec-fetch-mode").is_none_or(|mode| mode == "navigate");
    let dest_ok = value("sec-fetch-dest").is_none_or(|dest| dest == "document");
    if mode_ok && dest_ok {
        return None;
    }
    tracing::info!("refused an openid connect authorization that is not a top-level navigation");
    Some(request_page(ca, &invalid("a sign-in must be a top-level navigation")))
}

async fn authorize_post(
    State(ca): State<Arc<Ca>>,
    client: Client,
    peer: Option<Extension<PresentedCertificate>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if ca.oidc().is_none() {
        return not_found();
    }
    if let Some(refused) = not_a_navigation(&ca, &headers) {
        return refused;
    }
    let params = match read_bytes(&ca, &headers, body, FORM_BODY_LIMIT).await {
        Ok(bytes) if is_form(&headers) => Params::parse(&bytes),
        // Neither the client nor its redirect URI can be read: a page, never a redirect.
        Ok(_) => return request_page(&ca, &invalid("the body must be application/x-www-form-urlencoded")),
        Err(error) => return request_page(&ca, &invalid(error.public_message())),
    };
    authorize(&ca, &client, peer.as_ref().map(|p| &p.0), params).await
}

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, description)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Checks the request, judges the browser, and sends it back to the client with a code or
/// an error; a request whose client or redirect URI cannot be trusted gets a page.
async fn authorize(
    ca: &Ca,
    client: &Client,
    presented: Option<&PresentedCertificate>,
    params: Result<Params, BadParams>,
) -> Response {
    let Some(provider) = ca.oidc() else { return not_found() };
    let request = match provider.authorization(params) {
        Ok(request) => request,
        Err(Refusal::Page(error)) => {
            tracing::info!(reason = %error, "refused an openid connect authorization request");
            return request_page(ca, &error);
        }
        Err(Refusal::Redirect(back)) => {
            tracing::info!(reason = %back.error, "refused an openid connect authorization request");
            return see_other(&back.location(provider.issuer()));
        }
    };
    let mut context = RefusalContext::new(EventType::Authenticate, address(client));
    match ca.oidc_authorize(provider, &request, presented, &mut context).await {
        Ok(code) => see_other(&request.granted(&code, provider.issuer())),
        Err(error) => {
            ca.record_refusal(&context, &error).await;
            let back = request.refusal(authorization_refusal(&error)).location(provider.issuer());
            if request.client.wants_refusal_page() && !request.prompt_none {
                let label = format!("Back to {}", request.client.name());
                refusal_page(&error, ca.learn_more_url(), Some((&label, &back)))
            } else {
                see_other(&back)
            }
        }
    }
}

/// 303: the browser follows with a GET, whatever method brought it here.
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            ],
        )
            .into_response(),
        // Registered URIs and encoded parameters are always valid header values.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The page for a request that cannot be sent back (RFC 6749 §4.1.2.1).
/// It has the refusal page's "Learn more" link: the person who lands here was sent to the
/// device check and cannot be sent back.
fn request_page(ca: &Ca, error: &OAuthError) -> Response {
    let mut body = format!(
        "<p>The application that sent you here made a request this service cannot answer.</p>\n\
         <p><code>{}</code>: {}</p>\n",
        error.code.as_str(),
        super::escape_html(&error.description)
    );
    if let Some(url) = ca.learn_more_url() {
        body.push_str(&super::browser::learn_more_link(url));
    }
    html_page(StatusCode::BAD_REQUEST, "Sign-in request refused", &body)
}

/// An OAuth error answer of the token endpoint (RFC 6749 §5.2).
fn oauth_error(error: &OAuthError) -> Response {
    let status = match error.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = serde_json::json!({"error": error.code.as_str(), "error_description": error.description});
    let mut response = json_response(status, &body);
    let headers = response.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if error.code == ErrorCode::InvalidClient {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"devicetrust\""));
    }
    response
}

async fn token(State(ca): State<Arc<Ca>>, client: Client, headers: HeaderMap, body: Body) -> Response {
    let Some(provider) = ca.oidc() else { return not_found() };
    // An identity provider calls at its users' rate: no request budget, but an address
    // blocked for failed authentications elsewhere stays blocked here.
    if let Err(ApiError::RateLimited { retry_after_secs }) = ca.admit_relying_party(address(&client)) {
        let mut response = oauth_error(&OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "too many failed authentications from this address",
        ));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        return response;
    }
    if !is_form(&headers) {
        return oauth_error(&invalid("the body must be application/x-www-form-urlencoded"));
    }
    let bytes = match read_bytes(&ca, &headers, body, FORM_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(error) => return oauth_error(&invalid(error.public_message())),
    };
    let params = match Params::parse(&bytes) {
        Ok(params) => params,
        Err(BadParams { repeated: Some(name) }) => {
            return oauth_error(&invalid(format!("the parameter {name} is repeated")));
        }
        Err(BadParams { repeated: None }) => return oauth_error(&invalid("too many parameters")),
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request = match TokenRequest::parse(authorization, &params) {
        Ok(request) => request,
        Err(error) => return oauth_error(&error),
    };
    let mut context = RefusalContext::new(EventType::Authenticate, address(&client));
    match ca.oidc_token(provider, &request, &mut context).await {
        Ok(tokens) => {
            let mut response = json_response(StatusCode::OK, &tokens);
            response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => oauth_error(&error),
    }
}

async fn userinfo(State(ca): State<Arc<Ca>>, headers: HeaderMap) -> Response {
    let Some(provider) = ca.oidc() else { return not_found() };
    let token = bearer(&headers);
    match ca.oidc_userinfo(provider, token).await {
        Ok(info) => json_response(StatusCode::OK, &info),
        Err(error) if error.code == ErrorCode::ServerError => oauth_error(&error),
        Err(error) => {
            // RFC 6750 §3: the error in the challenge (the description holds no quote), but
            // none for a request that carried no token at all (§3.1).
            let challenge = match token {
                None => "Bearer realm=\"devicetrust\"".to_owned(),
                Some(_) => format!(
                    "Bearer realm=\"devicetrust\", error=\"{}\", error_description=\"{}\"",
                    error.code.as_str(),
                    error.description
                ),
            };
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}
