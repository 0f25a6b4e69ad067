//! What the agent calls: metadata, enroll, renew, its certificate's status, and the CRL.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ca_client::protocol::{EventType, Platform};
use serde::Deserialize;

use super::{Client, address, bearer, json_response, read_json, refuse, truncate};
use crate::error::ApiError;
use crate::service::{Ca, IssueReply, PresentedCertificate, RefusalContext};

pub(super) fn issued_response(reply: IssueReply) -> Response {
    let status = if reply.created { StatusCode::CREATED } else { StatusCode::OK };
    json_response(status, &reply.body)
}

#[derive(Debug, Deserialize)]
pub(super) struct MetadataQuery {
    platform: Option<String>,
}

pub(super) async fn metadata(
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

pub(super) async fn enroll(
    State(ca): State<Arc<Ca>>,
    client: Client,
    headers: HeaderMap,
    body: Body,
) -> Response {
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

pub(super) async fn renew(
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

pub(super) async fn certificate_status(
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

pub(super) async fn crl(State(ca): State<Arc<Ca>>) -> Response {
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
