//! What both stores share: the rows as read back (`sqlx::FromRow` works for either
//! database), their conversion into the store's types, and the time encoding (integer
//! milliseconds since the Unix epoch, UTC, so that comparisons are numeric in both).

use std::ops::ControlFlow;
use std::str::FromStr as _;

use ca_client::protocol::{
    CertificateRecord, CertificateState, DeviceRecord, DeviceRef, Event, EventType, Outcome, Platform,
};
use chrono::{DateTime, Utc};

use super::{
    AuthOutcome, Authentication, CertificateRow, CodeGrant, CodeRow, NewEvent, Redemption, RenewOutcome,
    Standing, StoreError,
};
use crate::authority::{Issued, RevocationReason, RevokedEntry};

/// `SELECT <certificate columns> [, extra columns] FROM certificates c JOIN devices d <rest>`.
macro_rules! select_certificates {
    ($rest:literal) => {
        select_certificates!("", $rest)
    };
    ($extra:literal, $rest:literal) => {
        concat!(
            "SELECT c.serial, c.device_udid, d.serial_number AS device_serial_number, c.user_name, c.bound_user, ",
            "c.spki_sha256, c.fingerprint, c.state, c.not_before_ms, c.not_after_ms, c.issued_at_ms, c.revoked_at_ms, ",
            "c.superseded_by, c.superseded_at_ms, c.certificate_pem",
            $extra,
            " FROM certificates c JOIN devices d ON d.udid = c.device_udid ",
            $rest
        )
    };
}
pub(super) use select_certificates;

#[derive(sqlx::FromRow)]
pub(super) struct CertDb {
    pub(super) serial: String,
    pub(super) device_udid: String,
    pub(super) device_serial_number: String,
    pub(super) user_name: String,
    pub(super) bound_user: Option<String>,
    pub(super) spki_sha256: String,
    pub(super) fingerprint: String,
    pub(super) state: String,
    pub(super) not_before_ms: i64,
    pub(super) not_after_ms: i64,
    pub(super) issued_at_ms: i64,
    pub(super) revoked_at_ms: Option<i64>,
    pub(super) superseded_by: Option<String>,
    pub(super) superseded_at_ms: Option<i64>,
    pub(super) certificate_pem: String,
}

impl TryFrom<CertDb> for CertificateRow {
    type Error = StoreError;

    fn try_from(db: CertDb) -> Result<Self, StoreError> {
        Ok(Self {
            state: CertificateState::from_str(&db.state)
                .map_err(|_| StoreError::Corrupt { what: "certificate state", value: db.state.clone() })?,
            not_before: from_ms(db.not_before_ms)?,
            not_after: from_ms(db.not_after_ms)?,
            issued_at: from_ms(db.issued_at_ms)?,
            revoked_at: db.revoked_at_ms.map(from_ms).transpose()?,
            superseded_at: db.superseded_at_ms.map(from_ms).transpose()?,
            serial: db.serial,
            device_udid: db.device_udid,
            device_serial_number: db.device_serial_number,
            user: db.user_name,
            bound_user: db.bound_user,
            spki_sha256: db.spki_sha256,
            fingerprint: db.fingerprint,
            superseded_by: db.superseded_by,
            certificate_pem: db.certificate_pem,
        })
    }
}

/// What a renewal needs to know about the presented certificate, in one query.
#[derive(sqlx::FromRow)]
pub(super) struct RenewProbe {
    #[sqlx(flatten)]
    pub(super) old: CertDb,
    pub(super) existing_serial: Option<String>,
    pub(super) unbound: i64,
    pub(super) lineage: String,
    pub(super) tip_bound_user: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct EventDb {
    pub(super) id: i64,
    pub(super) published_ms: i64,
    pub(super) event_type: String,
    pub(super) outcome: String,
    pub(super) user_name: Option<String>,
    pub(super) device_udid: Option<String>,
    pub(super) serial: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) client_id: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(super) struct CodeDb {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) nonce: Option<String>,
    pub(super) login_hint: Option<String>,
    pub(super) serial: String,
    pub(super) auth_time_ms: i64,
    pub(super) expires_at_ms: i64,
    pub(super) redeemed_at_ms: Option<i64>,
    pub(super) replayed_at_ms: Option<i64>,
}

/// `SELECT <code columns, in [`CodeDb`]'s order> FROM oidc_codes <rest>`.
macro_rules! select_code {
    ($rest:literal) => {
        concat!(
            "SELECT client_id, redirect_uri, code_challenge, nonce, login_hint, serial, auth_time_ms, ",
            "expires_at_ms, redeemed_at_ms, replayed_at_ms FROM oidc_codes ",
            $rest
        )
    };
}
pub(super) use select_code;

impl CodeDb {
    pub(super) fn grant(self) -> Result<CodeGrant, StoreError> {
        Ok(CodeGrant {
            client_id: self.client_id,
            redirect_uri: self.redirect_uri,
            code_challenge: self.code_challenge,
            nonce: self.nonce,
            login_hint: self.login_hint,
            serial: self.serial,
            auth_time: from_ms(self.auth_time_ms)?,
            expires_at: from_ms(self.expires_at_ms)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DeviceDb {
    pub(super) udid: String,
    pub(super) serial_number: String,
    pub(super) display_name: String,
    pub(super) os_version: String,
    pub(super) platform: String,
    pub(super) created_at_ms: i64,
}

pub(super) fn from_ms(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or(StoreError::Corrupt { what: "timestamp", value: ms.to_string() })
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn query_error(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Query { operation, source: Box::new(e) }
}

pub(super) fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "SUCCESS",
        Outcome::Failure => "FAILURE",
    }
}

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn success(
    event_type: EventType,
    row: &CertificateRow,
    user: &str,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        published: now,
        event_type,
        outcome: Outcome::Success,
        user: Some(user.to_owned()),
        udid: Some(row.device_udid.clone()),
        serial: Some(row.serial.clone()),
        reason: None,
        client_id: None,
    }
}

/// The row a just-inserted certificate has, without reading it back.
#[allow(clippy::too_many_arguments)]
pub(super) fn new_row(
    cert: &Issued,
    udid: &str,
    device_serial_number: &str,
    user: &str,
    bound_user: Option<&str>,
    state: CertificateState,
    now: DateTime<Utc>,
) -> CertificateRow {
    CertificateRow {
        serial: cert.serial.clone(),
        device_udid: udid.to_owned(),
        device_serial_number: device_serial_number.to_owned(),
        user: user.to_owned(),
        bound_user: bound_user.map(str::to_owned),
        spki_sha256: cert.spki_sha256.clone(),
        fingerprint: cert.fingerprint.clone(),
        state,
        not_before: cert.not_before,
        not_after: cert.not_after,
        issued_at: now,
        revoked_at: None,
        superseded_by: None,
        superseded_at: None,
        certificate_pem: cert.pem.clone(),
    }
}

impl TryFrom<EventDb> for Event {
    type Error = StoreError;

    fn try_from(row: EventDb) -> Result<Self, StoreError> {
        let event_type = EventType::from_str(&row.event_type)
            .map_err(|_| StoreError::Corrupt { what: "event type", value: row.event_type.clone() })?;
        let outcome = match row.outcome.as_str() {
            "SUCCESS" => Outcome::Success,
            "FAILURE" => Outcome::Failure,
            other => return Err(StoreError::Corrupt { what: "event outcome", value: other.to_owned() }),
        };
        Ok(Event {
            id: row.id,
            published: from_ms(row.published_ms)?,
            event_type,
            display_message: event_type.display_message().to_owned(),
            outcome,
            user: row.user_name,
            device: row.device_udid.map(|udid| DeviceRef { udid }),
            serial_number: row.serial,
            reason: row.reason,
            client_id: row.client_id,
        })
    }
}

/// A device and its certificates (oldest first) as the admin API shows them.
pub(super) fn device_record(device: DeviceDb, rows: Vec<CertDb>) -> Result<DeviceRecord, StoreError> {
    let mut certificates = Vec::with_capacity(rows.len());
    for row in rows {
        let row = CertificateRow::try_from(row)?;
        certificates.push(CertificateRecord {
            serial_number: row.serial,
            state: row.state,
            user: row.user,
            bound_user: row.bound_user,
            spki_sha256: row.spki_sha256,
            not_before: row.not_before,
            not_after: row.not_after,
            revoked_at: row.revoked_at,
        });
    }
    let platform = match device.platform.as_str() {
        "macos" => Platform::Macos,
        "linux" => Platform::Linux,
        other => return Err(StoreError::Corrupt { what: "platform", value: other.to_owned() }),
    };
    Ok(DeviceRecord {
        udid: device.udid,
        serial_number: device.serial_number,
        display_name: device.display_name,
        os_version: device.os_version,
        platform,
        created_at: from_ms(device.created_at_ms)?,
        certificates,
    })
}

/// A CRL entry from a row of `serial, state, revoked_at_ms, superseded_at_ms`: a
/// superseded certificate stopped being acceptable one grace period after its successor
/// was issued, and that is its revocation time.
pub(super) fn revoked_entry(
    (serial, state, revoked_at, superseded_at): (String, String, Option<i64>, Option<i64>),
    superseded_cutoff: DateTime<Utc>,
    grace: chrono::Duration,
) -> Result<RevokedEntry, StoreError> {
    Ok(if state == "revoked" {
        RevokedEntry {
            serial,
            revoked_at: from_ms(revoked_at.unwrap_or_default())?,
            reason: RevocationReason::PrivilegeWithdrawn,
        }
    } else {
        RevokedEntry {
            serial,
            revoked_at: superseded_at.map(from_ms).transpose()?.map_or(superseded_cutoff, |at| at + grace),
            reason: RevocationReason::Superseded,
        }
    })
}

/// A renewal's refusals by the presented certificate's own state, in the contract's order
/// (revoked, expired, superseded past its grace period): `Break` with the refusal, or
/// `Continue` with the certificate when none applies.
pub(super) fn renewal_refusal(
    old: CertificateRow,
    superseded_cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ControlFlow<RenewOutcome, CertificateRow> {
    if old.state == CertificateState::Revoked {
        return ControlFlow::Break(RenewOutcome::Revoked(old));
    }
    if old.is_expired(now) {
        return ControlFlow::Break(RenewOutcome::Expired(old));
    }
    if old.is_superseded_before(superseded_cutoff) {
        return ControlFlow::Break(RenewOutcome::Superseded(old));
    }
    ControlFlow::Continue(old)
}

/// What an authentication decided before it writes anything.
pub(super) struct Judged {
    /// The row, bound in memory when `binds`.
    pub(super) row: CertificateRow,
    /// Whom the certificate belongs to.
    pub(super) owner: String,
    /// Whether this authentication binds it (the caller writes that).
    pub(super) binds: bool,
}

/// Judges a presented certificate by [`CertificateRow::standing`]: `Break` with the refusal
/// to return at once, or `Continue` with the row as it is to be stored. First use binds (when `bind`); a superseded
/// certificate records the user but stays superseded.
pub(super) fn judge_authentication(
    mut row: CertificateRow,
    a: &Authentication<'_>,
) -> ControlFlow<AuthOutcome, Judged> {
    let (owner, unbound) = match row.standing(a.bind_user, a.required_user, a.superseded_cutoff, a.now) {
        Standing::Revoked => return ControlFlow::Break(AuthOutcome::Revoked(row)),
        Standing::Expired => return ControlFlow::Break(AuthOutcome::Expired(row)),
        Standing::Superseded => return ControlFlow::Break(AuthOutcome::Superseded(row)),
        Standing::OtherUser => return ControlFlow::Break(AuthOutcome::OtherUser(row)),
        Standing::Trusted { owner, unbound } => (owner, unbound),
    };
    let binds = a.bind && unbound;
    if binds {
        if row.state == CertificateState::Unbound {
            row.state = CertificateState::Bound;
        }
        row.bound_user = Some(owner.clone());
    }
    ControlFlow::Continue(Judged { row, owner, binds })
}

/// The success event of an authentication.
pub(super) fn authentication_event(judged: &Judged, a: &Authentication<'_>) -> NewEvent {
    NewEvent {
        client_id: a.client_id.map(str::to_owned),
        ..success(EventType::Authenticate, &judged.row, &judged.owner, a.now)
    }
}

/// One `pki.cert.revoke` event per revoked `(serial, udid, user)`.
pub(super) fn revocation_events(revoked: &[(String, String, String)], now: DateTime<Utc>) -> Vec<NewEvent> {
    revoked
        .iter()
        .map(|(serial, udid, user)| NewEvent {
            published: now,
            event_type: EventType::Revoke,
            outcome: Outcome::Success,
            user: Some(user.clone()),
            udid: Some(udid.clone()),
            serial: Some(serial.clone()),
            reason: None,
            client_id: None,
        })
        .collect()
}

impl CodeDb {
    /// The code as the userinfo endpoint checks it.
    pub(super) fn into_code_row(self) -> Result<CodeRow, StoreError> {
        let replayed = self.replayed_at_ms.is_some();
        Ok(CodeRow { grant: self.grant()?, replayed })
    }

    /// What redeeming it now means: the first redemption, or a replay.
    pub(super) fn redemption(self) -> Result<Redemption, StoreError> {
        let first = self.redeemed_at_ms.is_none();
        let grant = self.grant()?;
        Ok(if first { Redemption::First(grant) } else { Redemption::Replayed(grant) })
    }
}
