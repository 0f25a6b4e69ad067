//! The PostgreSQL store (sqlx), which several CA replicas share.
//!
//! Every operation is one transaction on a pooled connection, in PostgreSQL's default
//! READ COMMITTED isolation, where each statement sees everything committed before it
//! started. The invariants hold across replicas because the transactions that could break
//! them are serialised by the database, not by the process:
//!
//! - **Per device.** Enrollment, renewal, binding at first use and revocation first take a
//!   transaction-scoped advisory lock on the device's UDID (`lock_device`) and only then
//!   read what they decide on (the idempotency key, the unbound count, the lineage's active
//!   certificate, the presented certificate's state). Two replicas enrolling the same
//!   device therefore run one after the other: the second sees the first's certificate and
//!   answers with it, so 32 identical enrollments issue one certificate, the unbound limit
//!   is never passed, and a renewal never leaves two active successors. A transaction holds
//!   at most one device lock, except a user's revocation, which takes its devices' locks in
//!   sorted order: no two transactions can wait for each other in a cycle.
//! - **Authorization codes** are redeemed under a row lock (`SELECT ... FOR UPDATE`): the
//!   first redemption wins on every replica.
//! - **Event ids never skip.** A sequence would hand out ids in the order transactions
//!   *ask*, not the order they *commit*: a reader could see id 11 while the transaction
//!   holding 10 is still open, move its cursor past 10 and never see it. So an event's id
//!   is its transaction's id (`pg_current_xact_id()`, 64 bits, never reused) plus a base
//!   (0, raised at start after a restore into another cluster: migration 0003), times
//!   [`EVENTS_PER_TRANSACTION`], plus the event's ordinal in its transaction, and
//!   [`Store::events`] returns only events of transactions older than the oldest one still
//!   running (`pg_snapshot_xmin(pg_current_snapshot())`). Every transaction that can still
//!   commit has an id at or above that bound, so each of its events gets an id above every
//!   id a reader has been given. Ids are increasing but not dense. `docs/protocol.md` says
//!   the same to clients.
//!
//! **Round trips** are what a write costs here, on both sides (each is a wake-up of the
//! CA's task and of a database backend), so writes keep them few: an enrollment, the hot
//! path when a fleet enrolls at once, is one call of the `devicetrust_enroll` function
//! (migration 0003: the same lock-then-read steps, server side); a renewal or a binding is
//! the lock, one probe, and one statement whose data-modifying `WITH` queries write the
//! certificate, its lineage and its events together; pooled connections are not pinged
//! before use.
//!
//! Connection failures (the database restarting, failing over, or out of connections) are
//! [`StoreError::Unavailable`], which clients see as 503; the pool reconnects on its own, so
//! the CA recovers without a restart.

use std::time::Duration;

use async_trait::async_trait;
use ca_client::protocol::{CertificateState, DeviceRecord, Event, EventType, Outcome};
use chrono::{DateTime, Utc};
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::rows::{
    CertDb, CodeDb, DeviceDb, EventDb, RenewProbe, authentication_event, count, device_record,
    judge_authentication, ms, new_row, outcome_str, renewal_refusal, revocation_events, revoked_entry,
    select_certificates, select_code, success,
};
use super::{
    AuthOutcome, Authentication, CertificateRow, CodeRow, EnrollOutcome, Enrollment, NewCode, NewEvent,
    Redemption, RenewOutcome, Renewal, RevokeTarget, Store, StoreError,
};
use crate::authority::{Issued, RevokedEntry};
use crate::secret::SecretString;

/// Event ids per transaction: an event's id is its transaction id times this, plus its
/// ordinal. 2^20 keeps ids below 2^53 (exact in JSON numbers everywhere) for the first 2^33
/// transactions of the database: decades at thousands of transactions per second.
pub const EVENTS_PER_TRANSACTION: i64 = 1 << 20;

/// The first of the two keys of every device lock (`pg_advisory_xact_lock(int, int)`), so
/// that the CA's locks stay apart from any other application's on the same database.
const DEVICE_LOCK_CLASS: i32 = 0x4454_4456; // "DTDV"

/// Options of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://USER@HOST[:PORT]/DATABASE[?...]`, without a password.
    pub url: String,
    /// The role's password, if it has one.
    pub password: Option<SecretString>,
    /// The pool of this replica.
    pub max_connections: u32,
    /// How long an operation waits for a connection before it is [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// The server ends a statement that runs longer.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, applies the migrations this version has (replicas starting together take
    /// turns: sqlx holds an advisory lock while it migrates) and refuses a database migrated
    /// by a newer version.
    pub async fn open(options: &PostgresOptions) -> Result<Self, StoreError> {
        let location = options.url.clone();
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: location.clone().into(),
            source,
        };
        let mut connect: PgConnectOptions =
            options.url.parse().map_err(|e: sqlx::Error| open_err(Box::new(e)))?;
        if let Some(password) = &options.password {
            connect = connect.password(password.expose());
        }
        let statement_timeout = format!("{}ms", options.statement_timeout.as_millis());
        connect = connect
            .application_name("devicetrust-ca")
            // A session that stops in the middle of a transaction (a replica's host gone)
            // would hold its device locks and the event log's horizon until TCP noticed.
            .options([
                ("statement_timeout", statement_timeout.as_str()),
                ("idle_in_transaction_session_timeout", statement_timeout.as_str()),
            ])
            // A statement per request is logged at debug only: the pool's own log of slow
            // statements is enough at info.
            .log_statements(tracing::log::LevelFilter::Debug)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // A quarter of the pool is kept open, so that the first requests after a start
            // (or a database restart) do not each wait for a new connection.
            .min_connections((options.max_connections / 4).max(1))
            .acquire_timeout(options.acquire_timeout)
            // No ping before each use (a round trip per operation): a connection the
            // database closed (a restart) fails its next statement, which is answered 503,
            // and the pool replaces it.
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        migrate(&pool, &location).await?;
        // After a restore into another cluster, its transaction ids start below the stored
        // events' ids: raise the base so that new ids land above every stored one (and the
        // stored events stay listed). Unchanged in the cluster that wrote them.
        sqlx::query(
            "UPDATE event_id_base SET base = GREATEST(base, \
             (SELECT COALESCE(MAX(id), 0) FROM events) / $1 + 1 - pg_current_xact_id()::text::bigint)",
        )
        .bind(EVENTS_PER_TRANSACTION)
        .execute(&pool)
        .await
        .map_err(|e| StoreError::Open { path: location.clone().into(), source: Box::new(e) })?;
        Ok(Self { pool })
    }

    async fn begin(
        &self,
        operation: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(query_error(operation))
    }
}

async fn migrate(pool: &PgPool, location: &str) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("./migrations/postgres");
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::VersionMissing(version)) => {
            Err(StoreError::SchemaTooNew { location: location.to_owned(), version })
        }
        Err(e) => Err(StoreError::Open { path: location.into(), source: Box::new(e) }),
    }
}

/// A query error, or [`StoreError::Unavailable`] when the database could not be reached or
/// is going away (connection errors, pool timeouts, SQLSTATE class 08, shutdown and
/// recovery 57P0x, too many connections 53300, serialization and deadlock 40001/40P01, a
/// statement timeout 57014, a read-only standby 25006).
fn query_error(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P0")
                    // too many connections, serialization failure, deadlock, statement timeout
                    // (a lock wait included), read-only transaction (a standby after failover)
                    || matches!(&*code, "53300" | "40001" | "40P01" | "57014" | "25006")
            }),
            sqlx::Error::Protocol(_) => true,
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable { operation, source: Box::new(e) }
        } else {
            StoreError::Query { operation, source: Box::new(e) }
        }
    }
}

/// Takes the device's lock until the transaction ends. Everything that decides on a
/// device's certificates reads after this, so it sees what the previous holder committed.
async fn lock_device(conn: &mut PgConnection, udid: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(DEVICE_LOCK_CLASS)
        .bind(udid)
        .execute(conn)
        .await
        .map_err(query_error("lock a device"))?;
    Ok(())
}

/// Takes the lock of the device that certificate `serial` belongs to, in one statement (a
/// certificate never moves to another device); false when there is no such certificate.
async fn lock_device_of(conn: &mut PgConnection, serial: &str) -> Result<bool, StoreError> {
    let locked: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM (SELECT pg_advisory_xact_lock($1, hashtext(device_udid)) FROM certificates \
         WHERE serial = $2) AS locked",
    )
    .bind(DEVICE_LOCK_CLASS)
    .bind(serial)
    .fetch_optional(conn)
    .await
    .map_err(query_error("lock a certificate's device"))?;
    Ok(locked.is_some())
}

async fn certificate_by_serial(
    conn: &mut PgConnection,
    serial: &str,
) -> Result<Option<CertificateRow>, StoreError> {
    sqlx::query_as::<_, CertDb>(select_certificates!("WHERE c.serial = $1"))
        .bind(serial)
        .fetch_optional(conn)
        .await
        .map_err(query_error("read a certificate"))?
        .map(CertificateRow::try_from)
        .transpose()
}

async fn existing(conn: &mut PgConnection, serial: &str) -> Result<CertificateRow, StoreError> {
    certificate_by_serial(conn, serial).await?.ok_or_else(|| StoreError::Corrupt {
        what: "certificate found by key but not by serial",
        value: serial.to_owned(),
    })
}

/// The statement that appends events with ids from the transaction's id (see the module
/// documentation), its nine parameters numbered from `$first` on. A transaction appends
/// events once at most, so ordinals start at 0. Writes put their other changes before it
/// as data-modifying `WITH` queries: one round trip for the whole write.
fn events_sql(first: usize) -> String {
    let p: Vec<String> = (first..first + 9).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO events (id, published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id) \
         SELECT (pg_current_xact_id()::text::bigint + (SELECT base FROM event_id_base)) * {} + t.ordinal - 1, \
                t.published_ms, t.event_type, t.outcome, t.user_name, t.device_udid, t.serial, t.reason, t.client_id \
         FROM UNNEST({}::bigint[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[]) \
           WITH ORDINALITY AS t(published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id, ordinal)",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the parameters of [`events_sql`].
fn bind_events<'q>(query: PgQuery<'q>, events: &'q [NewEvent]) -> Result<PgQuery<'q>, StoreError> {
    if i64::try_from(events.len()).map_or(true, |n| n > EVENTS_PER_TRANSACTION) {
        return Err(StoreError::Corrupt {
            what: "events in one transaction",
            value: events.len().to_string(),
        });
    }
    let column = |f: fn(&NewEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    Ok(query
        .bind(EVENTS_PER_TRANSACTION)
        .bind(events.iter().map(|e| ms(e.published)).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| outcome_str(e.outcome)).collect::<Vec<_>>())
        .bind(column(|e| e.user.as_deref()))
        .bind(column(|e| e.udid.as_deref()))
        .bind(column(|e| e.serial.as_deref()))
        .bind(column(|e| e.reason.as_deref()))
        .bind(column(|e| e.client_id.as_deref())))
}

/// Appends `events` (a write that changes nothing else).
async fn insert_events(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = events_sql(1);
    bind_events(sqlx::query(&sql), events)?.execute(conn).await.map_err(query_error("record an event"))?;
    Ok(())
}

/// `WITH cert AS (INSERT INTO certificates ... VALUES ($1 .. $13))`: a new certificate,
/// bound by [`bind_certificate`].
const INSERT_CERTIFICATE: &str = "cert AS (INSERT INTO certificates (serial, device_udid, user_name, bound_user, \
     spki_sha256, fingerprint, state, not_before_ms, not_after_ms, issued_at_ms, renewed_from, lineage, certificate_pem) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING 1)";

/// A certificate to insert, in [`INSERT_CERTIFICATE`]'s order.
struct NewCertificate<'a> {
    cert: &'a Issued,
    udid: &'a str,
    user: &'a str,
    bound_user: Option<&'a str>,
    state: CertificateState,
    renewed_from: Option<&'a str>,
    lineage: &'a str,
    now: DateTime<Utc>,
}

fn bind_certificate<'q>(query: PgQuery<'q>, c: &NewCertificate<'q>) -> PgQuery<'q> {
    query
        .bind(&c.cert.serial)
        .bind(c.udid)
        .bind(c.user)
        .bind(c.bound_user)
        .bind(&c.cert.spki_sha256)
        .bind(&c.cert.fingerprint)
        .bind(c.state.as_str())
        .bind(ms(c.cert.not_before))
        .bind(ms(c.cert.not_after))
        .bind(ms(c.now))
        .bind(c.renewed_from)
        .bind(c.lineage)
        .bind(&c.cert.pem)
}

fn issue_events(kind: EventType, cert: &Issued, udid: &str, user: &str, now: DateTime<Utc>) -> [NewEvent; 2] {
    let event = |event_type| NewEvent {
        published: now,
        event_type,
        outcome: Outcome::Success,
        user: Some(user.to_owned()),
        udid: Some(udid.to_owned()),
        serial: Some(cert.serial.clone()),
        reason: None,
        client_id: None,
    };
    [event(kind), event(EventType::Issue)]
}

/// An enrollment, in one call of `devicetrust_enroll` (migration 0003: the same steps as
/// the other writes, lock first, in one round trip); the stored row is read back only when
/// an earlier enrollment answers this one.
async fn enroll(pool: &PgPool, e: &Enrollment<'_>) -> Result<EnrollOutcome, StoreError> {
    let (device, cert, user, now) = (e.device, e.certificate, e.user, e.now);
    let (outcome, serial): (String, Option<String>) = sqlx::query_as(
        "SELECT outcome, serial FROM devicetrust_enroll($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16)",
    )
    .bind(DEVICE_LOCK_CLASS)
    .bind(EVENTS_PER_TRANSACTION)
    .bind(i64::from(e.max_unbound))
    .bind(ms(now))
    .bind(&device.udid)
    .bind(&device.serial_number)
    .bind(&device.display_name)
    .bind(&device.os_version)
    .bind(e.platform.as_str())
    .bind(user)
    .bind(&cert.serial)
    .bind(&cert.spki_sha256)
    .bind(&cert.fingerprint)
    .bind(ms(cert.not_before))
    .bind(ms(cert.not_after))
    .bind(&cert.pem)
    .fetch_one(pool)
    .await
    .map_err(query_error("store a certificate"))?;
    match (outcome.as_str(), serial) {
        ("issued", _) => Ok(EnrollOutcome::Issued(new_row(
            cert,
            &device.udid,
            &device.serial_number,
            user,
            None,
            CertificateState::Unbound,
            now,
        ))),
        ("existing", Some(serial)) => {
            let mut conn = pool.acquire().await.map_err(query_error("open a connection"))?;
            Ok(EnrollOutcome::Existing(existing(&mut conn, &serial).await?))
        }
        ("limit_reached", _) => Ok(EnrollOutcome::LimitReached),
        (other, _) => Err(StoreError::Corrupt { what: "enrollment outcome", value: other.to_owned() }),
    }
}

async fn renew(conn: &mut PgConnection, r: &Renewal<'_>) -> Result<RenewOutcome, StoreError> {
    let (cert, now) = (r.certificate, r.now);
    if !lock_device_of(conn, r.presented_serial).await? {
        return Ok(RenewOutcome::Unknown);
    }
    // The same probe as SQLite's: the presented certificate, an active certificate of the
    // device for the new key, the unbound count outside this lineage, and the binding of the
    // lineage's active certificate. Read under the lock, so it is the latest.
    let probe = sqlx::query_as::<_, RenewProbe>(select_certificates!(
        ", (SELECT x.serial FROM certificates x WHERE x.device_udid = c.device_udid AND x.spki_sha256 = $2 \
              AND x.state IN ('unbound', 'bound') AND x.not_after_ms > $3 \
              ORDER BY x.issued_at_ms DESC, x.seq DESC LIMIT 1) AS existing_serial, \
            (SELECT COUNT(*) FROM certificates y WHERE y.device_udid = c.device_udid AND y.state = 'unbound' \
              AND y.not_after_ms > $3 AND y.lineage != c.lineage) AS unbound, \
            c.lineage AS lineage, \
            (SELECT t.bound_user FROM certificates t WHERE t.device_udid = c.device_udid \
              AND t.lineage = c.lineage AND t.state = 'bound' ORDER BY t.issued_at_ms DESC, t.seq DESC LIMIT 1) \
              AS tip_bound_user",
        "WHERE c.serial = $1"
    ))
    .bind(r.presented_serial)
    .bind(&cert.spki_sha256)
    .bind(ms(now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_error("read a presented certificate"))?;
    let Some(probe) = probe else {
        return Ok(RenewOutcome::Unknown);
    };
    let old = match renewal_refusal(CertificateRow::try_from(probe.old)?, r.superseded_cutoff, now) {
        std::ops::ControlFlow::Continue(old) => old,
        std::ops::ControlFlow::Break(refused) => return Ok(refused),
    };
    if let Some(serial) = probe.existing_serial {
        let row = existing(conn, &serial).await?;
        insert_events(conn, &[success(EventType::Renew, &row, &old.user, now)]).await?;
        return Ok(RenewOutcome::Existing(row));
    }
    // As in SQLite: the successor keeps the lineage's current binding and takes the
    // lineage's slot.
    let bound_user = probe.tip_bound_user.or_else(|| old.bound_user.clone());
    let state = if bound_user.is_some() { CertificateState::Bound } else { CertificateState::Unbound };
    if state == CertificateState::Unbound && count(probe.unbound) >= r.max_unbound {
        return Ok(RenewOutcome::LimitReached);
    }
    // One statement: the successor, the lineage's other active certificates superseded
    // (the successor is not among them: the UPDATE sees the rows from before the
    // statement), and both events.
    let sql = format!(
        "WITH {INSERT_CERTIFICATE}, superseded AS (UPDATE certificates SET state = 'superseded', \
         superseded_by = $1, superseded_at_ms = $10 WHERE device_udid = $2 AND lineage = $12 \
         AND state IN ('unbound', 'bound') AND serial != $1 RETURNING 1) {}",
        events_sql(14)
    );
    let new = NewCertificate {
        cert,
        udid: &old.device_udid,
        user: &old.user,
        bound_user: bound_user.as_deref(),
        state,
        renewed_from: Some(&old.serial),
        lineage: &probe.lineage,
        now,
    };
    let events = issue_events(EventType::Renew, cert, &old.device_udid, &old.user, now);
    bind_events(bind_certificate(sqlx::query(&sql), &new), &events)?
        .execute(&mut *conn)
        .await
        .map_err(query_error("store a renewal"))?;
    Ok(RenewOutcome::Issued(new_row(
        cert,
        &old.device_udid,
        &old.device_serial_number,
        &old.user,
        bound_user.as_deref(),
        state,
        now,
    )))
}

async fn authenticate(conn: &mut PgConnection, a: &Authentication<'_>) -> Result<AuthOutcome, StoreError> {
    // Binding changes what a renewal of the device copies, so it takes the device's lock.
    // A read-only check (no binding possible) does not need it.
    if a.bind && !lock_device_of(conn, a.serial).await? {
        return Ok(AuthOutcome::Unknown);
    }
    // Without the device lock, the row is read FOR SHARE: a revocation waits for this
    // authentication's event, so the log never shows a success after the revocation.
    let row = if a.bind {
        certificate_by_serial(conn, a.serial).await?
    } else {
        sqlx::query_as::<_, CertDb>(select_certificates!("WHERE c.serial = $1 FOR SHARE OF c"))
            .bind(a.serial)
            .fetch_optional(&mut *conn)
            .await
            .map_err(query_error("read a certificate"))?
            .map(CertificateRow::try_from)
            .transpose()?
    };
    let Some(row) = row else {
        return Ok(AuthOutcome::Unknown);
    };
    let judged = match judge_authentication(row, a) {
        std::ops::ControlFlow::Continue(judged) => judged,
        std::ops::ControlFlow::Break(refused) => return Ok(refused),
    };
    let events = [authentication_event(&judged, a)];
    let row = judged.row;
    if judged.binds {
        let sql = format!(
            "WITH bound AS (UPDATE certificates SET state = $1, bound_user = $2 WHERE serial = $3 RETURNING 1) {}",
            events_sql(4)
        );
        let query = sqlx::query(&sql).bind(row.state.as_str()).bind(&row.bound_user).bind(&row.serial);
        bind_events(query, &events)?.execute(&mut *conn).await.map_err(query_error("bind a certificate"))?;
    } else {
        insert_events(conn, &events).await?;
    }
    Ok(AuthOutcome::Trusted(row))
}

async fn revoke(
    conn: &mut PgConnection,
    target: RevokeTarget<'_>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let (user, udid) = match target {
        RevokeTarget::User(user) => (Some(user), None),
        RevokeTarget::Device(udid) => (None, Some(udid)),
    };
    // Lock every device concerned first (sorted, so that two revocations cannot deadlock),
    // so that a renewal in flight on another replica either finishes before (and its
    // successor is revoked here) or starts after (and sees the revocation). A user's device
    // enrolled between the lookup and the locks is not locked, and a renewal on it could
    // slip a successor past the revocation: so look again after revoking, and lock and
    // revoke whatever is still active (bounded; each round only finds devices enrolled
    // during the one before).
    let mut locked = std::collections::BTreeSet::new();
    let mut revoked: Vec<(String, String, String)> = Vec::new();
    for round in 0..REVOKE_ROUNDS {
        let devices: Vec<String> = match udid {
            Some(udid) => vec![udid.to_owned()],
            None => sqlx::query_scalar(
                "SELECT DISTINCT device_udid FROM certificates WHERE (user_name = $1 OR bound_user = $1) \
                 AND state != 'revoked' AND not_after_ms > $2 ORDER BY device_udid",
            )
            .bind(user)
            .bind(ms(now))
            .fetch_all(&mut *conn)
            .await
            .map_err(query_error("find a user's devices"))?,
        };
        let new: Vec<String> = devices.into_iter().filter(|device| !locked.contains(device)).collect();
        if new.is_empty() && round > 0 {
            break;
        }
        for device in new {
            lock_device(conn, &device).await?;
            locked.insert(device);
        }
        let round: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE certificates SET state = 'revoked', revoked_at_ms = $1 \
             WHERE (user_name = $2 OR bound_user = $2 OR device_udid = $3) AND state != 'revoked' AND not_after_ms > $1 \
             RETURNING serial, device_udid, user_name",
        )
        .bind(ms(now))
        .bind(user)
        .bind(udid)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_error("revoke certificates"))?;
        revoked.extend(round);
        if udid.is_some() {
            break;
        }
    }
    revoked.sort();
    insert_events(conn, &revocation_events(&revoked, now)).await?;
    Ok(revoked.into_iter().map(|(serial, _, _)| serial).collect())
}

/// Rounds of a user's revocation at most (see [`revoke`]); a round finds only devices
/// enrolled during the one before, so the second is almost always the last.
const REVOKE_ROUNDS: usize = 4;

/// Codes deleted per insertion at most (as in SQLite).
const PURGE_BATCH: i64 = 64;

#[async_trait]
impl Store for PostgresStore {
    async fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertificateRow>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(query_error("open a connection"))?;
        certificate_by_serial(&mut conn, serial).await
    }

    async fn enroll(&self, enrollment: Enrollment<'_>) -> Result<EnrollOutcome, StoreError> {
        enroll(&self.pool, &enrollment).await
    }

    async fn renew(&self, renewal: Renewal<'_>) -> Result<RenewOutcome, StoreError> {
        let mut tx = self.begin("begin a renewal").await?;
        let outcome = renew(&mut tx, &renewal).await?;
        tx.commit().await.map_err(query_error("commit a renewal"))?;
        Ok(outcome)
    }

    async fn authenticate(&self, authentication: Authentication<'_>) -> Result<AuthOutcome, StoreError> {
        let mut tx = self.begin("begin an authentication").await?;
        let outcome = authenticate(&mut tx, &authentication).await?;
        tx.commit().await.map_err(query_error("commit an authentication"))?;
        Ok(outcome)
    }

    async fn revoke(&self, target: RevokeTarget<'_>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin("begin a revocation").await?;
        let revoked = revoke(&mut tx, target, now).await?;
        tx.commit().await.map_err(query_error("commit a revocation"))?;
        Ok(revoked)
    }

    async fn device(&self, udid: &str) -> Result<Option<DeviceRecord>, StoreError> {
        // One snapshot for the device and its certificates.
        let mut tx = self.begin("read a device").await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(query_error("read a device"))?;
        let Some(device) = sqlx::query_as::<_, DeviceDb>(
            "SELECT udid, serial_number, display_name, os_version, platform, created_at_ms FROM devices WHERE udid = $1",
        )
        .bind(udid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_error("read a device"))?
        else {
            return Ok(None);
        };
        let rows = sqlx::query_as::<_, CertDb>(select_certificates!(
            "WHERE c.device_udid = $1 ORDER BY c.issued_at_ms, c.seq"
        ))
        .bind(udid)
        .fetch_all(&mut *tx)
        .await
        .map_err(query_error("read a device's certificates"))?;
        tx.commit().await.map_err(query_error("read a device"))?;
        device_record(device, rows).map(Some)
    }

    async fn events(
        &self,
        after: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        // Only events of transactions older than every running one (see the module
        // documentation): nothing that can still commit gets an id at or below those.
        let rows = sqlx::query_as::<_, EventDb>(
            "SELECT id, published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id \
             FROM events WHERE id > $1 \
             AND id < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint + (SELECT base FROM event_id_base)) * $4 \
             AND ($3::bigint IS NULL OR id >= (SELECT COALESCE(MIN(id), 9223372036854775807) FROM events \
                                               WHERE published_ms >= $3)) \
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .bind(since.map(ms))
        .bind(EVENTS_PER_TRANSACTION)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read events"))?;
        rows.into_iter().map(Event::try_from).collect()
    }

    async fn record(&self, event: NewEvent) -> Result<(), StoreError> {
        let mut tx = self.begin("record an event").await?;
        insert_events(&mut tx, std::slice::from_ref(&event)).await?;
        tx.commit().await.map_err(query_error("record an event"))
    }

    async fn revoked_unexpired(
        &self,
        now: DateTime<Utc>,
        superseded_cutoff: DateTime<Utc>,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT serial, state, revoked_at_ms, superseded_at_ms FROM certificates \
             WHERE not_after_ms > $1 AND (state = 'revoked' \
               OR (state = 'superseded' AND (superseded_at_ms IS NULL OR superseded_at_ms <= $2))) \
             ORDER BY serial",
        )
        .bind(ms(now))
        .bind(ms(superseded_cutoff))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("list revoked certificates"))?;
        let grace = now - superseded_cutoff;
        rows.into_iter().map(|row| revoked_entry(row, superseded_cutoff, grace)).collect()
    }

    async fn insert_code(&self, code: NewCode, now: DateTime<Utc>) -> Result<(), StoreError> {
        let g = &code.grant;
        let mut tx = self.begin("store an authorization code").await?;
        // Another replica purging at the same moment skips the rows this one holds.
        sqlx::query(
            "DELETE FROM oidc_codes WHERE code_sha256 IN (SELECT code_sha256 FROM oidc_codes \
             WHERE purge_after_ms <= $1 ORDER BY purge_after_ms LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(ms(now))
        .bind(PURGE_BATCH)
        .execute(&mut *tx)
        .await
        .map_err(query_error("purge authorization codes"))?;
        sqlx::query(
            "INSERT INTO oidc_codes (code_sha256, client_id, redirect_uri, code_challenge, nonce, login_hint, serial, \
             auth_time_ms, expires_at_ms, purge_after_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&code.code_sha256)
        .bind(&g.client_id)
        .bind(&g.redirect_uri)
        .bind(&g.code_challenge)
        .bind(&g.nonce)
        .bind(&g.login_hint)
        .bind(&g.serial)
        .bind(ms(g.auth_time))
        .bind(ms(g.expires_at))
        .bind(ms(code.purge_after))
        .execute(&mut *tx)
        .await
        .map_err(query_error("store an authorization code"))?;
        tx.commit().await.map_err(query_error("store an authorization code"))
    }

    async fn redeem_code(
        &self,
        code_sha256: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        let mut tx = self.begin("redeem an authorization code").await?;
        let row = sqlx::query_as::<_, CodeDb>(select_code!("WHERE code_sha256 = $1 FOR UPDATE"))
            .bind(code_sha256)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query_error("read an authorization code"))?;
        let Some(row) = row.filter(|row| row.client_id == client_id) else {
            return Ok(Redemption::Unknown);
        };
        let first = row.redeemed_at_ms.is_none();
        let sql = if first {
            "UPDATE oidc_codes SET redeemed_at_ms = $1 WHERE code_sha256 = $2"
        } else {
            "UPDATE oidc_codes SET replayed_at_ms = COALESCE(replayed_at_ms, $1) WHERE code_sha256 = $2"
        };
        sqlx::query(sql)
            .bind(ms(now))
            .bind(code_sha256)
            .execute(&mut *tx)
            .await
            .map_err(query_error("redeem an authorization code"))?;
        tx.commit().await.map_err(query_error("redeem an authorization code"))?;
        row.redemption()
    }

    async fn code(&self, code_sha256: &str) -> Result<Option<CodeRow>, StoreError> {
        let row = sqlx::query_as::<_, CodeDb>(select_code!("WHERE code_sha256 = $1"))
            .bind(code_sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error("read an authorization code"))?;
        row.map(CodeDb::into_code_row).transpose()
    }

    async fn next_crl_number(&self, issuer: &str, at_least: i64) -> Result<i64, StoreError> {
        // One statement: the row lock serialises replicas asking at the same moment.
        sqlx::query_scalar(
            "INSERT INTO crl_numbers (issuer_key_sha256, last_number) VALUES ($1, $2) \
             ON CONFLICT (issuer_key_sha256) DO UPDATE \
             SET last_number = GREATEST(crl_numbers.last_number + 1, excluded.last_number) RETURNING last_number",
        )
        .bind(issuer)
        .bind(at_least)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error("take a CRL number"))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(query_error("answer a ping"))?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
