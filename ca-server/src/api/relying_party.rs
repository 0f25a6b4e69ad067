//! The HTTP side of the relying-party kit: the forward-auth check, the JWKS, OCSP and the
//! PEM CRL.
//!
//! The check answers the subrequest of nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `ForwardAuth` and Envoy `ext_authz`: 200 with the device's identity in `X-DeviceTrust-*`
//! headers for the app, 401 without a usable certificate, 403 when refused. Every refusal
//! carries the contract's code in `X-DeviceTrust-Error` (and the "Learn more" link, when
//! configured, in `X-DeviceTrust-Learn-More`) so that the proxy can show its own page. The
//! caller proves it is a relying party before any other header is read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use super::{Client, address, bearer, error_response, read_bytes};
use crate::error::{ApiError, MissingCertificate};
use crate::relying_party::header as cert_header;
use crate::service::{Ca, RefusalContext};

/// The forward-auth check.
pub const CHECK_PATH: &str = "/api/v1/relying-party/check";
/// The assertion keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// OCSP: `POST` a DER request, or `GET` it base64-encoded after a `/`.
pub const OCSP_PATH: &str = "/ocsp";
/// The CRL in PEM, for nginx `ssl_crl` and HAProxy `crl-file`.
pub const CRL_PEM_PATH: &str = "/crl.pem";

/// The signed-in user a relying party may name.
pub const USER_HEADER: &str = "x-devicetrust-user";
const ERROR_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-error");
const LEARN_MORE_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-learn-more");
const UDID_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-device-udid");
const DEVICE_SERIAL_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-device-serial");
const CERT_SERIAL_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-certificate-serial");
const USER_RESPONSE_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-user");
const ASSERTION_HEADER: HeaderName = HeaderName::from_static("x-devicetrust-assertion");

/// The 200 body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Trusted<'a> {
    trusted: bool,
    udid: &'a str,
    device_serial_number: &'a str,
    certificate_serial: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    assertion: &'a str,
}

/// A refusal of the check: logged and counted, never an event (a browser behind a proxy
/// could otherwise write rows at will), with the code and the link in headers.
async fn refuse_check(ca: &Ca, context: &RefusalContext, error: ApiError) -> Response {
    ca.record_refusal(context, &error).await;
    let mut response = error_response(&error);
    let headers = response.headers_mut();
    if let Ok(code) = HeaderValue::from_str(error.code_str()) {
        headers.insert(ERROR_HEADER, code);
    }
    if let Some(link) = ca.learn_more_url().and_then(|l| HeaderValue::from_str(l).ok()) {
        headers.insert(LEARN_MORE_HEADER, link);
    }
    if matches!(error, ApiError::InvalidRelyingParty(_)) {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"devicetrust\""));
    }
    response
}

/// Percent-encodes what a header value cannot carry as is (and `%` itself), so any user
/// name the CA accepted reaches the app unchanged once decoded.
fn header_text(value: &str) -> HeaderValue {
    let encoded: String =
        value
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && b != b'%' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `/api/v1/relying-party/check`, with any method: nginx and Caddy send a GET subrequest,
/// while Traefik and Envoy pass on the browser's method.
pub(super) async fn check(State(ca): State<Arc<Ca>>, client: Client, headers: HeaderMap) -> Response {
    let context = RefusalContext::unrecorded(address(&client));
    if let Err(error) = ca.admit_relying_party(address(&client)) {
        return refuse_check(&ca, &context, error).await;
    }
    let (index, party) = match ca.relying_parties().identify(bearer(&headers), address(&client)) {
        Ok(found) => found,
        Err(why) => return refuse_check(&ca, &context, ApiError::InvalidRelyingParty(why)).await,
    };
    // Only now, and only the one header this relying party's proxy writes.
    let values: Vec<&[u8]> =
        headers.get_all(cert_header::header_name(party.proxy())).iter().map(HeaderValue::as_bytes).collect();
    let der = match cert_header::certificate_der(party.proxy(), &values) {
        Ok(der) => der,
        Err(e) => {
            tracing::info!(relying_party = party.name(), error = %e, "unusable certificate header");
            let error = ApiError::ClientCertificateRequired(MissingCertificate::Foreign);
            return refuse_check(&ca, &context, error).await;
        }
    };
    let user = match headers.get(USER_HEADER).map(|v| v.to_str().map(str::trim)) {
        None => None,
        Some(Ok("")) => None,
        Some(Ok(user)) => Some(user),
        Some(Err(_)) => {
            let error = ApiError::InvalidRequest("the x-devicetrust-user header is not visible ascii".into());
            return refuse_check(&ca, &context, error).await;
        }
    };
    let (device, assertion) = match ca.check_relying_party(index, party, der.as_deref(), user).await {
        Ok(answer) => answer,
        Err(error) => return refuse_check(&ca, &context, error).await,
    };
    let body = Trusted {
        trusted: true,
        udid: &device.udid,
        device_serial_number: &device.device_serial,
        certificate_serial: &device.certificate_serial,
        user: device.user.as_deref(),
        assertion: &assertion,
    };
    let mut response = super::json_response(StatusCode::OK, &body);
    let out = response.headers_mut();
    out.insert(UDID_HEADER, header_text(&device.udid));
    out.insert(DEVICE_SERIAL_HEADER, header_text(&device.device_serial));
    out.insert(CERT_SERIAL_HEADER, header_text(&device.certificate_serial));
    if let Some(user) = &device.user {
        out.insert(USER_RESPONSE_HEADER, header_text(user));
    }
    if let Ok(value) = HeaderValue::from_str(&assertion) {
        out.insert(ASSERTION_HEADER, value);
    }
    response
}

/// `GET /.well-known/jwks.json`: public, and cacheable for a few minutes (a rotation
/// publishes the new key well before it signs).
pub(super) async fn jwks(State(ca): State<Arc<Ca>>) -> Response {
    super::json_response_cached(StatusCode::OK, &ca.jwks(), "public, max-age=300")
}

fn ocsp_response(der: Vec<u8>, cacheable: bool) -> Response {
    // A GET answer may sit in an HTTP cache for a minute; a POST answer is not cached.
    let cache = if cacheable { "public, max-age=60" } else { "no-store" };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/ocsp-response")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        der,
    )
        .into_response()
}

/// `POST /ocsp` with a DER `OCSPRequest`.
pub(super) async fn ocsp_post(State(ca): State<Arc<Ca>>, headers: HeaderMap, body: Body) -> Response {
    match read_bytes(&ca, &headers, body, crate::authority::ocsp::MAX_REQUEST_BYTES).await {
        Ok(der) => ocsp_response(ca.ocsp(&der).await, false),
        Err(ApiError::PayloadTooLarge { .. }) | Err(ApiError::InvalidRequest(_)) => {
            ocsp_response(crate::authority::ocsp::Refusal::Malformed.response(), false)
        }
        Err(error) => error_response(&error),
    }
}

/// `GET /ocsp/{base64}` (RFC 6960 A.1; the path is already percent-decoded).
pub(super) async fn ocsp_get(State(ca): State<Arc<Ca>>, Path(encoded): Path<String>) -> Response {
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(der) => ocsp_response(ca.ocsp(&der).await, true),
        Err(_) => ocsp_response(crate::authority::ocsp::Refusal::Malformed.response(), false),
    }
}

/// `GET /crl.pem`.
pub(super) async fn crl_pem(State(ca): State<Arc<Ca>>) -> Response {
    match ca.crl().await {
        Ok(der) => {
            let pem = crate::authority::pem_block("X509 CRL", der.as_ref());
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file")),
                    (header::CACHE_CONTROL, HeaderValue::from_static("max-age=60")),
                ],
                pem,
            )
                .into_response()
        }
        Err(error) => refuse_check(&ca, &RefusalContext::unrecorded(None), error).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_keeps_plain_names_and_escapes_the_rest() {
        assert_eq!(header_text("alice@example.com"), "alice@example.com");
        assert_eq!(header_text("Zoë 100%"), "Zo%C3%AB%20100%25");
    }
}
