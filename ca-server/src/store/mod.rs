//! Persistence: devices, certificates and the system log, behind the [`Store`] trait.
//!
//! Each operation that changes state is one transaction that re-checks everything it relies
//! on (the idempotency key, the unbound count, the state of a presented certificate) while
//! holding the write lock. Checks the service did earlier are only a fast path; the
//! store's answer is the one that counts. Success events are written in the same
//! transaction as the change they describe, so the log never disagrees with the data.
//!
//! [`sqlite::SqliteStore`] is the embedded default; [`postgres::PostgresStore`] is what
//! several replicas share. The trait speaks in protocol types and plain values (no SQL
//! types); the rows both read back and their conversions live in one private module.

mod metered;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use ca_client::protocol::{CertificateState, DeviceInfo, DeviceRecord, Event, EventType, Outcome, Platform};
use chrono::{DateTime, Utc};

use crate::authority::{Issued, RevokedEntry};
pub(crate) use metered::Metered;

/// Why the store failed. Internal: clients see `internal`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open the database at {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database was migrated by a newer version of the CA: this one does not know
    /// every migration applied to it, so it refuses to run against it.
    #[error(
        "the database at {location} has migration {version}, which this devicetrust-ca does not know: \
         a newer version migrated it; run that version (or newer) here too"
    )]
    SchemaTooNew {
        /// The database (a path, or a URL without its password).
        location: String,
        /// The unknown migration.
        version: i64,
    },
    /// The database cannot be reached right now (connection refused or lost, no pooled
    /// connection free in time, the server shutting down or in recovery). Clients see 503:
    /// trying again later can work.
    #[error("the database is unavailable while trying to {operation}")]
    Unavailable {
        /// What the store was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// A query failed.
    #[error("database error while trying to {operation}")]
    Query {
        /// What the store was doing.
        operation: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored value cannot be read back.
    #[error("the database holds an unreadable {what}: {value:?}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value.
        value: String,
    },
}

impl StoreError {
    /// Whether the database is unreachable for now (503) rather than failing (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A certificate as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRow {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The device's UDID.
    pub device_udid: String,
    /// The device's serial number (the MDM lookup key), as last enrolled.
    pub device_serial_number: String,
    /// The enrolling user.
    pub user: String,
    /// The user bound at first use.
    pub bound_user: Option<String>,
    /// Lowercase hex SHA-256 of the SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// Lowercase hex SHA-256 of the DER certificate.
    pub fingerprint: String,
    /// State.
    pub state: CertificateState,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The certificate that replaced it at renewal.
    pub superseded_by: Option<String>,
    /// When a renewal replaced it.
    pub superseded_at: Option<DateTime<Utc>>,
    /// The certificate, PEM.
    pub certificate_pem: String,
}

impl fmt::Debug for CertificateRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRow")
            .field("serial", &self.serial)
            .field("device_udid", &self.device_udid)
            .field("state", &self.state)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateRow {
    /// Whether `now` is past its notAfter.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.not_after
    }

    /// Whether it is superseded and was replaced at or before `cutoff` (now minus the grace
    /// period): then it is no longer accepted anywhere.
    pub fn is_superseded_before(&self, cutoff: DateTime<Utc>) -> bool {
        self.state == CertificateState::Superseded && self.superseded_at.is_none_or(|at| at <= cutoff)
    }

    /// Whether and since when the certificate counts as revoked in the CRL and OCSP: an
    /// administrator's revocation, or a renewal's predecessor once its grace period (which
    /// ended `grace` after it was superseded) is over, at or before `superseded_cutoff`.
    pub fn revocation(
        &self,
        superseded_cutoff: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> Option<(DateTime<Utc>, crate::authority::RevocationReason)> {
        use crate::authority::RevocationReason;
        if self.state == CertificateState::Revoked {
            return Some((self.revoked_at.unwrap_or(self.issued_at), RevocationReason::PrivilegeWithdrawn));
        }
        self.is_superseded_before(superseded_cutoff).then(|| {
            (self.superseded_at.map_or(superseded_cutoff, |at| at + grace), RevocationReason::Superseded)
        })
    }

    /// What the certificate is worth to a caller at `now`, in the contract's order: revoked,
    /// expired, superseded past its grace period (replaced at or before `superseded_cutoff`),
    /// then whom it belongs to. One rule for every store and for the relying-party check,
    /// which reads without writing.
    pub fn standing(
        &self,
        bind_user: Option<&str>,
        required_user: Option<&str>,
        superseded_cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Standing {
        if self.state == CertificateState::Revoked {
            return Standing::Revoked;
        }
        if self.is_expired(now) {
            return Standing::Expired;
        }
        if self.is_superseded_before(superseded_cutoff) {
            return Standing::Superseded;
        }
        // Whom it belongs to once the caller is done: its bound user, or whom a first use
        // binds it to (the enrolling user, unless an authenticated caller named someone).
        let owner = self.bound_user.clone().unwrap_or_else(|| bind_user.unwrap_or(&self.user).to_owned());
        if required_user.is_some_and(|required| required != owner) {
            return Standing::OtherUser;
        }
        Standing::Trusted { unbound: self.bound_user.is_none(), owner }
    }
}

/// See [`CertificateRow::standing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Revoked.
    Revoked,
    /// Past its notAfter.
    Expired,
    /// Replaced by a renewal longer ago than the grace period.
    Superseded,
    /// Bound (or about to be bound) to another user than the required one.
    OtherUser,
    /// Acceptable.
    Trusted {
        /// Whom it belongs to (or will, once bound).
        owner: String,
        /// Whether no user is bound yet.
        unbound: bool,
    },
}

/// An enrollment to carry out.
#[derive(Debug, Clone, Copy)]
pub struct Enrollment<'a> {
    /// The device as the request describes it.
    pub device: &'a DeviceInfo,
    /// The agent's platform.
    pub platform: Platform,
    /// The enrolling user.
    pub user: &'a str,
    /// The signed certificate to store if nothing stands in the way.
    pub certificate: &'a Issued,
    /// The unbound limit.
    pub max_unbound: u32,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What an enrollment did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrollOutcome {
    /// The certificate was stored.
    Issued(CertificateRow),
    /// The device already holds an active certificate for this key; nothing was stored.
    Existing(CertificateRow),
    /// The device holds `max_unbound` unbound certificates; nothing was stored.
    LimitReached,
}

/// A renewal to carry out.
#[derive(Debug, Clone, Copy)]
pub struct Renewal<'a> {
    /// The serial of the certificate presented over mutual TLS.
    pub presented_serial: &'a str,
    /// The signed successor to store if nothing stands in the way.
    pub certificate: &'a Issued,
    /// The unbound limit.
    pub max_unbound: u32,
    /// A presented certificate superseded at or before this moment may not renew.
    pub superseded_cutoff: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What a renewal did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenewOutcome {
    /// The successor was stored; every other active certificate of the presented one's
    /// lineage (the presented one, or an earlier successor of it) is now superseded.
    Issued(CertificateRow),
    /// The device already holds an active certificate for the new key; nothing changed.
    Existing(CertificateRow),
    /// The successor would be unbound and the device is at its limit.
    LimitReached,
    /// The presented certificate was revoked (possibly a moment ago).
    Revoked(CertificateRow),
    /// The presented certificate is past its notAfter.
    Expired(CertificateRow),
    /// The presented certificate was superseded longer ago than the grace period.
    Superseded(CertificateRow),
    /// The presented certificate is not in the store.
    Unknown,
}

/// A certificate presented at the cert-auth domain, or named by an authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Authentication<'a> {
    /// Its serial.
    pub serial: &'a str,
    /// Whom to bind it to at first use: `None` is the enrolling user (what the
    /// browser-facing verify does; a browser request can never name anyone else). Only an
    /// authenticated server-to-server caller passes a name.
    pub bind_user: Option<&'a str>,
    /// The user the caller requires: a certificate bound (or about to be bound) to anyone
    /// else is refused with [`AuthOutcome::OtherUser`], and nothing is changed.
    pub required_user: Option<&'a str>,
    /// Whether to bind an unbound certificate (false in read-only mode).
    pub bind: bool,
    /// A certificate superseded at or before this moment is refused.
    pub superseded_cutoff: DateTime<Utc>,
    /// The OpenID Connect client the authentication is for, recorded in its event.
    pub client_id: Option<&'a str>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What an authentication found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthOutcome {
    /// Valid; the row after binding.
    Trusted(CertificateRow),
    /// Revoked.
    Revoked(CertificateRow),
    /// Past its notAfter.
    Expired(CertificateRow),
    /// Superseded longer ago than the grace period.
    Superseded(CertificateRow),
    /// Bound (or about to be bound) to another user than the required one.
    OtherUser(CertificateRow),
    /// Not in the store.
    Unknown,
}

/// Whose certificates to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeTarget<'a> {
    /// Every certificate issued to or bound to this user.
    User(&'a str),
    /// Every certificate of this device (canonical, uppercase UDID).
    Device(&'a str),
}

/// An event to append to the system log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// When.
    pub published: DateTime<Utc>,
    /// What.
    pub event_type: EventType,
    /// Success or failure.
    pub outcome: Outcome,
    /// The user concerned.
    pub user: Option<String>,
    /// The device concerned.
    pub udid: Option<String>,
    /// The certificate concerned.
    pub serial: Option<String>,
    /// The error code of a refusal.
    pub reason: Option<String>,
    /// The OpenID Connect client concerned.
    pub client_id: Option<String>,
}

/// An OpenID Connect authorization code to store. Only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCode {
    /// Lowercase hex SHA-256 of the code.
    pub code_sha256: String,
    /// Everything the code is bound to and vouches for.
    pub grant: CodeGrant,
    /// From when the row may be deleted: past the code's expiry and the lifetime of any
    /// access token issued for it.
    pub purge_after: DateTime<Utc>,
}

/// What an authorization code is bound to and vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrant {
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI it was issued for.
    pub redirect_uri: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The request's nonce.
    pub nonce: Option<String>,
    /// The user the client named.
    pub login_hint: Option<String>,
    /// The certificate the browser presented.
    pub serial: String,
    /// When it presented it.
    pub auth_time: DateTime<Utc>,
    /// Until when the code can be redeemed.
    pub expires_at: DateTime<Utc>,
}

/// What redeeming a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// Redeemed now, for the first time.
    First(CodeGrant),
    /// Redeemed before: it is now marked replayed, which revokes the tokens issued for it.
    Replayed(CodeGrant),
    /// No such code of this client (or purged).
    Unknown,
}

/// A stored code, as the userinfo endpoint checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    /// What it vouches for.
    pub grant: CodeGrant,
    /// Whether it was redeemed more than once.
    pub replayed: bool,
}

/// Devices, certificates and events.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The certificate with this serial, in any state.
    async fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertificateRow>, StoreError>;

    /// Stores a new certificate unless the idempotency key or the limit says otherwise;
    /// records `user.credential.enroll` (and `pki.cert.issue`) on success.
    async fn enroll(&self, enrollment: Enrollment<'_>) -> Result<EnrollOutcome, StoreError>;

    /// Stores a successor and supersedes the presented certificate; records
    /// `pki.cert.renew` (and `pki.cert.issue`) on success.
    async fn renew(&self, renewal: Renewal<'_>) -> Result<RenewOutcome, StoreError>;

    /// Checks a presented certificate, binds it at first use, records
    /// `user.authentication.authenticate` on success.
    async fn authenticate(&self, authentication: Authentication<'_>) -> Result<AuthOutcome, StoreError>;

    /// Revokes every unexpired, unrevoked certificate of the target; records one
    /// `pki.cert.revoke` per certificate. Returns the revoked serials.
    async fn revoke(&self, target: RevokeTarget<'_>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError>;

    /// The device and all its certificates, oldest first.
    async fn device(&self, udid: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Events with an id above `after`, oldest first, at most `limit`; with `since`, only
    /// from the first event published at or after it on (by id: an event committed a little
    /// out of clock order next to that one is still listed, none is skipped).
    async fn events(
        &self,
        after: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// Appends one event (refusals).
    async fn record(&self, event: NewEvent) -> Result<(), StoreError>;

    /// Certificates that have not expired yet and are revoked, or superseded at or before
    /// `superseded_cutoff` (past their grace period): the CRL's content.
    async fn revoked_unexpired(
        &self,
        now: DateTime<Utc>,
        superseded_cutoff: DateTime<Utc>,
    ) -> Result<Vec<RevokedEntry>, StoreError>;

    /// Stores an OpenID Connect authorization code, and deletes a bounded number of codes
    /// past their `purge_after`.
    async fn insert_code(&self, code: NewCode, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Redeems a code of `client_id` atomically: the first redemption wins on every replica;
    /// any later one by the same client marks the code replayed. A code of another client is
    /// [`Redemption::Unknown`] and left as it is, so one client can neither spend nor revoke
    /// another's.
    async fn redeem_code(
        &self,
        code_sha256: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError>;

    /// A stored code by its hash (the access token's `jti`).
    async fn code(&self, code_sha256: &str) -> Result<Option<CodeRow>, StoreError>;

    /// A CRL number for `issuer` (the hex SHA-256 of its key) above every one given out
    /// before, on any replica, and at least `at_least` (the CA passes the time, so numbers
    /// also keep increasing across a restore from an older backup).
    async fn next_crl_number(&self, issuer: &str, at_least: i64) -> Result<i64, StoreError>;

    /// Whether the database answers a trivial query (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Finishes pending work and closes the database.
    async fn close(&self);
}
