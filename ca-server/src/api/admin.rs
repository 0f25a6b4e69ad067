//! The admin API (the admin token): revocation, a device's record, binding, the events.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ca_client::protocol::{BindRequest, BindResponse, EventType, EventsResponse, RevokeResponse};
use serde::Deserialize;

use super::{Client, address, bearer, json_response, read_json, refuse, truncate};
use crate::error::ApiError;
use crate::service::{self, Ca, RefusalContext};
use crate::store::RevokeTarget;

/// Default and largest page of `GET /api/v1/admin/events`.
const EVENTS_DEFAULT_LIMIT: u32 = 100;
const EVENTS_MAX_LIMIT: u32 = 1000;

pub(super) fn path_param(param: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    param.map(|Path(p)| p).map_err(|e| ApiError::InvalidRequest(truncate(e.body_text())))
}

/// The admin API's first steps, in this order: the client address's budget, the token
/// (nothing about the request is looked at, let alone recorded, before it matched), then
/// the path parameter.
pub(super) fn admin_request(
    ca: &Ca,
    headers: &HeaderMap,
    param: Result<Path<String>, PathRejection>,
    context: &mut RefusalContext,
) -> Result<String, ApiError> {
    ca.admit(context.client)?;
    ca.check_admin_token(bearer(headers), context)?;
    path_param(param)
}

pub(super) async fn revoke_user(
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

pub(super) async fn revoke_device(
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

pub(super) async fn device(
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

/// `POST /api/v1/admin/certificates/{serial}/bind`: the admin vouches that a certificate
/// belongs to `user`. Browsers cannot bind to anyone but the enrolling user.
pub(super) async fn bind(
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

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    /// RFC 3339, e.g. `2026-12-01T09:00:00Z`.
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<u32>,
}

pub(super) async fn events(
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
        ca.events(after, query.since, limit).await
    }
    .await;
    match result {
        Ok(events) => json_response(StatusCode::OK, &EventsResponse { events }),
        Err(error) => refuse(&ca, &context, error).await,
    }
}
