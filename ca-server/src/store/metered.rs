//! [`Metered`]: any store, with each operation timed into
//! `devicetrust_store_operation_seconds{operation}` (failures included: a slow failure is
//! what an operator looks for).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ca_client::protocol::{DeviceRecord, Event};
use chrono::{DateTime, Utc};

use super::{
    AuthOutcome, Authentication, CertificateRow, CodeRow, EnrollOutcome, Enrollment, NewCode, NewEvent,
    Redemption, RenewOutcome, Renewal, RevokeTarget, Store, StoreError,
};
use crate::authority::RevokedEntry;
use crate::ops::Telemetry;

/// A store whose operations are timed.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn Store>,
    telemetry: Arc<Telemetry>,
}

impl Metered {
    pub(crate) fn new(inner: Arc<dyn Store>, telemetry: Arc<Telemetry>) -> Self {
        Self { inner, telemetry }
    }
}

/// Runs `call` on the inner store and times it as `operation`.
macro_rules! timed {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.telemetry.time_store($operation, started);
        result
    }};
}

#[async_trait]
impl Store for Metered {
    async fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertificateRow>, StoreError> {
        timed!(self, "certificate_by_serial", self.inner.certificate_by_serial(serial))
    }

    async fn enroll(&self, enrollment: Enrollment<'_>) -> Result<EnrollOutcome, StoreError> {
        timed!(self, "enroll", self.inner.enroll(enrollment))
    }

    async fn renew(&self, renewal: Renewal<'_>) -> Result<RenewOutcome, StoreError> {
        timed!(self, "renew", self.inner.renew(renewal))
    }

    async fn authenticate(&self, authentication: Authentication<'_>) -> Result<AuthOutcome, StoreError> {
        timed!(self, "authenticate", self.inner.authenticate(authentication))
    }

    async fn revoke(&self, target: RevokeTarget<'_>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        timed!(self, "revoke", self.inner.revoke(target, now))
    }

    async fn device(&self, udid: &str) -> Result<Option<DeviceRecord>, StoreError> {
        timed!(self, "device", self.inner.device(udid))
    }

    async fn events(
        &self,
        after: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        timed!(self, "events", self.inner.events(after, since, limit))
    }

    async fn record(&self, event: NewEvent) -> Result<(), StoreError> {
        timed!(self, "record", self.inner.record(event))
    }

    async fn revoked_unexpired(
        &self,
        now: DateTime<Utc>,
        superseded_cutoff: DateTime<Utc>,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        timed!(self, "revoked_unexpired", self.inner.revoked_unexpired(now, superseded_cutoff))
    }

    async fn insert_code(&self, code: NewCode, now: DateTime<Utc>) -> Result<(), StoreError> {
        timed!(self, "insert_code", self.inner.insert_code(code, now))
    }

    async fn redeem_code(
        &self,
        code_sha256: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        timed!(self, "redeem_code", self.inner.redeem_code(code_sha256, client_id, now))
    }

    async fn code(&self, code_sha256: &str) -> Result<Option<CodeRow>, StoreError> {
        timed!(self, "code", self.inner.code(code_sha256))
    }

    async fn next_crl_number(&self, issuer: &str, at_least: i64) -> Result<i64, StoreError> {
        timed!(self, "next_crl_number", self.inner.next_crl_number(issuer, at_least))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, "ping", self.inner.ping())
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
