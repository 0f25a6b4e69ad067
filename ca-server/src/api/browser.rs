//! What browsers reach at the cert-auth domain: verify, and the CA's own pages (the
//! "Security requirements" refusal page, shared with the OpenID Connect endpoints).

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_client::protocol::{EventType, VerifyResponse};
use serde::Deserialize;

use super::{Client, address, json_response, truncate};
use crate::error::ApiError;
use crate::service::{Ca, PresentedCertificate, RefusalContext};

#[derive(Debug, Deserialize)]
pub(super) struct VerifyQuery {
    user: Option<String>,
}

pub(super) async fn verify(
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

pub(super) fn security_requirements_page(error: &ApiError, learn_more: Option<&str>) -> Response {
    refusal_page(error, learn_more, None)
}

/// The "Security requirements" page (403) for a refused device, with the "Learn more" link
/// and, when the browser has somewhere to go back to, a link there (`(label, url)`).
pub(super) fn refusal_page(
    error: &ApiError,
    learn_more: Option<&str>,
    back: Option<(&str, &str)>,
) -> Response {
    let mut body = format!(
        "<p>This resource is available only from a managed device with a valid device certificate.</p>\n<p>{}</p>\n",
        escape_html(&error.public_message())
    );
    if let Some(url) = learn_more {
        body.push_str(&learn_more_link(url));
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

/// The "Learn more" paragraph of the CA's pages.
pub(super) fn learn_more_link(url: &str) -> String {
    format!("<p><a href=\"{}\">Learn more</a></p>\n", escape_html(url))
}

/// A page of the CA's own: `body` is HTML the caller escaped. Nothing on it loads,
/// runs or frames.
pub(super) fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
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
