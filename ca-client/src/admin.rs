//! [`AdminClient`]: the administration API of a CA (`/api/v1/admin/...`) with the admin
//! token, over the same transport as [`CaClient`] (pinned roots, timeouts, size cap, no
//! redirects), for `devicetrust-ca admin` and for scripts written in Rust.
//!
//! The token is held as a sensitive header value: it is in no `Debug` output, no error and
//! no log line.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::client::{CaClient, ClientOptions};
use crate::error::ClientError;
use crate::protocol::{
    BindRequest, BindResponse, DeviceRecord, Event, EventsResponse, RevokeResponse, paths,
};
use crate::response;

/// Which events to read: those after an id, from a point in time, and how many at most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsQuery {
    /// Only events with an id above this one (`?after=`).
    pub after: Option<i64>,
    /// Only events from the first one published at or after this time on (`?since=`).
    pub since: Option<DateTime<Utc>>,
    /// At most this many (`?limit=`; the CA's default is 100, its maximum 1000).
    pub limit: Option<u32>,
}

/// A client of one CA's administration API.
pub struct AdminClient {
    client: CaClient,
    authorization: HeaderValue,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("base_url", &self.client.base_url().as_str())
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client that sends `token` as the bearer token of every call.
    pub fn new(options: ClientOptions, token: &str) -> Result<Self, ClientError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::InvalidConfiguration { reason: "the admin token is empty".to_owned() });
        }
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            ClientError::InvalidConfiguration {
                reason: "the admin token has characters not allowed in an HTTP header".to_owned(),
            }
        })?;
        authorization.set_sensitive(true);
        Ok(Self { client: CaClient::new(options)?, authorization })
    }

    /// `GET /api/v1/admin/devices/{udid}`: the device and every certificate issued to it.
    pub async fn device(&self, udid: &str) -> Result<DeviceRecord, ClientError> {
        self.call(Method::GET, self.url(&["devices", udid])).await
    }

    /// `POST /api/v1/admin/devices/{udid}/revoke`: revokes every unexpired certificate of the
    /// device and returns how many that was.
    pub async fn revoke_device(&self, udid: &str) -> Result<u64, ClientError> {
        Ok(self.call::<RevokeResponse>(Method::POST, self.url(&["devices", udid, "revoke"])).await?.revoked)
    }

    /// `POST /api/v1/admin/users/{user}/revoke`: revokes every unexpired certificate of the
    /// user and returns how many that was.
    pub async fn revoke_user(&self, user: &str) -> Result<u64, ClientError> {
        Ok(self.call::<RevokeResponse>(Method::POST, self.url(&["users", user, "revoke"])).await?.revoked)
    }

    /// `POST /api/v1/admin/certificates/{serial}/bind`: vouches that the certificate belongs
    /// to `user`, binding it to them at once.
    pub async fn bind(&self, serial: &str, user: &str) -> Result<BindResponse, ClientError> {
        let url = self.url(&["certificates", serial, "bind"]);
        let builder = self.client.post_json(&url, &BindRequest { user: user.to_owned() })?;
        self.send(builder, &url).await
    }

    /// `GET /api/v1/admin/events`: one page of the system log, oldest first.
    pub async fn events(&self, query: EventsQuery) -> Result<Vec<Event>, ClientError> {
        let mut url = self.url(&["events"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(after) = query.after {
                pairs.append_pair("after", &after.to_string());
            }
            if let Some(since) = query.since {
                pairs.append_pair("since", &since.to_rfc3339_opts(SecondsFormat::Millis, true));
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
        }
        Ok(self.call::<EventsResponse>(Method::GET, url).await?.events)
    }

    /// The admin endpoint at `segments` under [`paths::ADMIN`], each segment percent-encoded
    /// (a user name or UDID cannot reach another path).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.client.endpoint(paths::ADMIN);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A call without a body.
    async fn call<T: serde::de::DeserializeOwned>(&self, method: Method, url: Url) -> Result<T, ClientError> {
        self.send(self.client.http.request(method, url.clone()), &url).await
    }

    /// Sends `builder` with the token; a 200 with `T` is the only success.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T, ClientError> {
        let builder = builder.header(AUTHORIZATION, self.authorization.clone());
        let (status, headers, body) = self.client.send(builder, url).await?;
        response::interpret_json(status, &headers, &body, &[StatusCode::OK])
    }
}
