//! The CA's own failures: a broken store answers 500 `internal` without telling why.

use std::sync::Arc;

use async_trait::async_trait;
use ca_client::protocol::{DeviceRecord, Event};
use ca_server::authority::RevokedEntry;
use ca_server::store::{
    AuthOutcome, Authentication, CertificateRow, CodeRow, EnrollOutcome, Enrollment, NewCode, NewEvent,
    Redemption, RenewOutcome, Renewal, RevokeTarget, Store, StoreError,
};
use chrono::{DateTime, Utc};

use crate::harness::{Device, TestCa, expect_error, p256};

/// A store whose every operation fails, with a cause that must not reach clients.
#[derive(Debug)]
struct BrokenStore;

fn broken() -> StoreError {
    StoreError::Query { operation: "anything", source: "disk on fire at /var/lib/secret-path".into() }
}

#[async_trait]
impl Store for BrokenStore {
    async fn certificate_by_serial(&self, _: &str) -> Result<Option<CertificateRow>, StoreError> {
        Err(broken())
    }
    async fn enroll(&self, _: Enrollment<'_>) -> Result<EnrollOutcome, StoreError> {
        Err(broken())
    }
    async fn renew(&self, _: Renewal<'_>) -> Result<RenewOutcome, StoreError> {
        Err(broken())
    }
    async fn authenticate(&self, _: Authentication<'_>) -> Result<AuthOutcome, StoreError> {
        Err(broken())
    }
    async fn revoke(&self, _: RevokeTarget<'_>, _: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        Err(broken())
    }
    async fn device(&self, _: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Err(broken())
    }
    async fn events(
        &self,
        _: i64,
        _: Option<chrono::DateTime<chrono::Utc>>,
        _: u32,
    ) -> Result<Vec<Event>, StoreError> {
        Err(broken())
    }
    async fn record(&self, _: NewEvent) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn next_crl_number(&self, _: &str, _: i64) -> Result<i64, StoreError> {
        Err(broken())
    }
    async fn revoked_unexpired(
        &self,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        Err(broken())
    }
    async fn insert_code(&self, _: NewCode, _: DateTime<Utc>) -> Result<(), StoreError> {
        Err(broken())
    }
    async fn redeem_code(&self, _: &str, _: &str, _: DateTime<Utc>) -> Result<Redemption, StoreError> {
        Err(broken())
    }
    async fn code(&self, _: &str) -> Result<Option<CodeRow>, StoreError> {
        Err(broken())
    }
    async fn close(&self) {}
}

#[tokio::test]
async fn a_broken_store_is_an_internal_error_without_details() {
    let ca = TestCa::start_with_store(Arc::new(BrokenStore)).await;
    let responses = [
        ca.enroll(&Device::new(1).request(&p256())).await,
        ca.admin_post("/api/v1/admin/users/alice/revoke").await,
        ca.admin_get("/api/v1/admin/events").await,
        ca.anonymous().get(ca.url("/crl")).send().await.expect("crl"),
    ];
    for response in responses {
        let message = expect_error(response, 500, "internal").await;
        assert_eq!(message, "Internal error");
    }
    // Metadata needs no store.
    assert_eq!(ca.anonymous().get(ca.url("/api/v1/metadata")).send().await.expect("get").status(), 200);
}
