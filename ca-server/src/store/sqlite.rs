//! The embedded SQLite store (sqlx), in WAL mode in the data directory.
//!
//! **Writes** go to one task that owns the only write connection. It takes every write
//! waiting in its queue (up to [`MAX_BATCH`]), runs them one after the other inside a single
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. So:
//!
//! - writes are serialised: each sees the effects of the ones before it, which is what
//!   makes concurrent identical enrollments issue exactly once and keeps the unbound count
//!   from ever passing the limit (the count is read and the certificate inserted by the
//!   same writer, with nothing in between);
//! - `BEGIN IMMEDIATE` takes SQLite's write lock before the first read, so even another
//!   process writing to the file could not slip in between;
//! - under load, many writes share one commit (group commit), and an issuance, renewal or
//!   binding is two round trips to SQLite's connection thread (a probe, then one
//!   multi-statement write). Round trips, not SQL, are what a write costs here: each one
//!   hands work to sqlx's connection thread and back.
//!
//! A write that fails aborts its batch; the batch is then retried one write per
//! transaction, so one bad write cannot fail the others.
//!
//! **Reads** go through a pool of read-only connections, which WAL lets run alongside the
//! writer.
//!
//! **Checkpoints** (copying the WAL back into the database file) run on a connection of
//! their own every [`CHECKPOINT_INTERVAL`], in `PASSIVE` mode, so the writer does not stall
//! a batch to do one; the writer's own automatic checkpoint is only a backstop at a much
//! larger WAL size.
//!
//! `synchronous = NORMAL` in WAL mode means a commit survives a process crash but the last
//! transactions may be lost on power failure; that is the usual trade-off for WAL and keeps
//! issuance from waiting on an fsync per batch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use ca_client::protocol::{CertificateState, DeviceInfo, DeviceRecord, Event, EventType, Platform};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{mpsc, oneshot};

use super::rows::{
    CertDb, CodeDb, DeviceDb, EventDb, RenewProbe, authentication_event, count, device_record,
    judge_authentication, ms, new_row, outcome_str, query_error, renewal_refusal, revocation_events,
    revoked_entry, select_certificates, select_code, success,
};
use super::{
    AuthOutcome, Authentication, CertificateRow, CodeRow, EnrollOutcome, Enrollment, NewCode, NewEvent,
    Redemption, RenewOutcome, Renewal, RevokeTarget, Store, StoreError,
};
use crate::authority::{Issued, RevokedEntry};

/// Default number of read connections.
pub const DEFAULT_READ_CONNECTIONS: u32 = 4;
/// Most writes committed together.
pub const MAX_BATCH: usize = 64;
/// Writes waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 1024;
/// How often the WAL is checkpointed in the background.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// WAL pages after which the writer checkpoints itself (the background one fell behind).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "20000";

/// Options of the SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file.
    pub path: PathBuf,
    /// Size of the read pool.
    pub read_connections: u32,
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reader: SqlitePool,
    checkpointer: std::sync::Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

/// One write, with everything it needs owned, and where to send its result.
#[derive(Debug)]
struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

#[derive(Debug)]
enum Work {
    Enroll {
        device: DeviceInfo,
        platform: Platform,
        user: String,
        certificate: Issued,
        max_unbound: u32,
        now: DateTime<Utc>,
    },
    Renew {
        presented_serial: String,
        certificate: Issued,
        max_unbound: u32,
        superseded_cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Authenticate {
        serial: String,
        bind_user: Option<String>,
        required_user: Option<String>,
        bind: bool,
        superseded_cutoff: DateTime<Utc>,
        client_id: Option<String>,
        now: DateTime<Utc>,
    },
    Revoke {
        user: Option<String>,
        udid: Option<String>,
        now: DateTime<Utc>,
    },
    Record(NewEvent),
    CrlNumber {
        issuer: String,
        at_least: i64,
    },
    InsertCode(NewCode, DateTime<Utc>),
    RedeemCode {
        code_sha256: String,
        client_id: String,
        now: DateTime<Utc>,
    },
    /// Finish what is queued, close the connection, then answer.
    Shutdown,
}

#[derive(Debug)]
enum Done {
    Enroll(EnrollOutcome),
    Renew(RenewOutcome),
    Authenticate(AuthOutcome),
    Revoke(Vec<String>),
    Record,
    CrlNumber(i64),
    InsertCode,
    RedeemCode(Redemption),
    Shutdown,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database, and starts the writer.
    pub async fn open(options: &SqliteOptions) -> Result<Self, StoreError> {
        let open_err =
            |source: sqlx::Error| StoreError::Open { path: options.path.clone(), source: Box::new(source) };
        // The database holds every device and user name: private, whatever the umask, and
        // also when an earlier version or a restore left it (or its WAL) readable by others.
        // SQLite gives the WAL and shared-memory files the database file's mode.
        create_private_file(&options.path)
            .map_err(|e| StoreError::Open { path: options.path.clone(), source: Box::new(e) })?;
        let connect = SqliteConnectOptions::new()
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("temp_store", "memory");
        let mut writer = connect
            .clone()
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .connect()
            .await
            .map_err(open_err)?;
        match sqlx::migrate!("./migrations/sqlite").run_direct(&mut writer).await {
            Ok(()) => {}
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) => {
                return Err(StoreError::SchemaTooNew {
                    location: options.path.display().to_string(),
                    version,
                });
            }
            Err(e) => return Err(StoreError::Open { path: options.path.clone(), source: Box::new(e) }),
        }
        let checkpoint_conn = connect.clone().connect().await.map_err(open_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .min_connections(0)
            .connect_with(connect.read_only(true))
            .await
            .map_err(open_err)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(writer, queue));
        let (stop, stopped) = oneshot::channel();
        let checkpointer = tokio::spawn(checkpoint_loop(checkpoint_conn, stopped));
        Ok(Self { jobs, reader, checkpointer: std::sync::Mutex::new(Some((stop, checkpointer))) })
    }

    /// Opens the store at `path` with default options.
    pub async fn open_path(path: &Path) -> Result<Self, StoreError> {
        Self::open(&SqliteOptions { path: path.to_owned(), read_connections: DEFAULT_READ_CONNECTIONS }).await
    }

    async fn write(&self, work: Work) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { work, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Creates the database file with mode 0600 if it is missing, and makes it and its WAL and
/// shared-memory files 0600 if they exist with a wider mode.
fn create_private_file(path: &Path) -> Result<(), crate::fsutil::WriteError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    open.open(path).map_err(|source| crate::fsutil::WriteError { path: path.to_owned(), source })?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        crate::fsutil::tighten_file(Path::new(&file))?;
    }
    Ok(())
}

/// Unexpected answer kinds cannot happen (each request gets the answer of its own work);
/// report them as corruption rather than panicking.
fn mismatch() -> StoreError {
    StoreError::Corrupt { what: "writer answer", value: "an answer of another kind".into() }
}

async fn write_loop(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Job>) {
    let mut shutdown = None;
    while let Some(first) = queue.recv().await {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if matches!(job.work, Work::Shutdown) {
                // Refuse new writes; those already queued are still done.
                queue.close();
                shutdown = Some(job.reply);
            } else {
                batch.push(job);
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        run_batch(&mut conn, batch).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the database");
    }
    if let Some(reply) = shutdown {
        let _ = reply.send(Ok(Done::Shutdown));
    }
}

async fn checkpoint_loop(mut conn: SqliteConnection, mut stop: oneshot::Receiver<()>) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = interval.tick() => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
                    tracing::warn!(error = %e, "background checkpoint failed");
                }
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the checkpoint connection");
    }
}

async fn run_batch(conn: &mut SqliteConnection, batch: Vec<Job>) {
    if batch.is_empty() {
        return;
    }
    match transaction(conn, batch.iter().map(|job| &job.work)).await {
        Ok(done) => {
            for (job, done) in batch.into_iter().zip(done) {
                let _ = job.reply.send(Ok(done));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, size = batch.len(), "a batched write failed; retrying one at a time");
            for job in batch {
                let result =
                    transaction(conn, std::iter::once(&job.work)).await.map(|mut done| done.remove(0));
                let _ = job.reply.send(result);
            }
        }
    }
}

async fn transaction<'a>(
    conn: &mut SqliteConnection,
    works: impl Iterator<Item = &'a Work>,
) -> Result<Vec<Done>, StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(query_error("begin a transaction"))?;
    let mut done = Vec::new();
    for work in works {
        done.push(match work {
            Work::Enroll { device, platform, user, certificate, max_unbound, now } => {
                Done::Enroll(enroll(&mut tx, device, *platform, user, certificate, *max_unbound, *now).await?)
            }
            Work::Renew { presented_serial, certificate, max_unbound, superseded_cutoff, now } => {
                Done::Renew(
                    renew(&mut tx, presented_serial, certificate, *max_unbound, *superseded_cutoff, *now)
                        .await?,
                )
            }
            Work::Authenticate {
                serial,
                bind_user,
                required_user,
                bind,
                superseded_cutoff,
                client_id,
                now,
            } => {
                let authentication = Authentication {
                    serial,
                    bind_user: bind_user.as_deref(),
                    required_user: required_user.as_deref(),
                    bind: *bind,
                    superseded_cutoff: *superseded_cutoff,
                    client_id: client_id.as_deref(),
                    now: *now,
                };
                Done::Authenticate(authenticate(&mut tx, &authentication).await?)
            }
            Work::Revoke { user, udid, now } => {
                Done::Revoke(revoke(&mut tx, user.as_deref(), udid.as_deref(), *now).await?)
            }
            Work::Record(event) => {
                insert_events(&mut tx, std::slice::from_ref(event)).await?;
                Done::Record
            }
            Work::CrlNumber { issuer, at_least } => {
                let number = sqlx::query_scalar(
                    "INSERT INTO crl_numbers (issuer_key_sha256, last_number) VALUES (?1, ?2) \
                     ON CONFLICT (issuer_key_sha256) DO UPDATE \
                     SET last_number = MAX(last_number + 1, excluded.last_number) RETURNING last_number",
                )
                .bind(issuer)
                .bind(at_least)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_error("take a CRL number"))?;
                Done::CrlNumber(number)
            }
            Work::InsertCode(code, now) => {
                insert_code(&mut tx, code, *now).await?;
                Done::InsertCode
            }
            Work::RedeemCode { code_sha256, client_id, now } => {
                Done::RedeemCode(redeem_code(&mut tx, code_sha256, client_id, *now).await?)
            }
            Work::Shutdown => Done::Shutdown,
        });
    }
    tx.commit().await.map_err(query_error("commit"))?;
    Ok(done)
}

async fn certificate_by_serial(
    conn: &mut SqliteConnection,
    serial: &str,
) -> Result<Option<CertificateRow>, StoreError> {
    sqlx::query_as::<_, CertDb>(select_certificates!("WHERE c.serial = ?1"))
        .bind(serial)
        .fetch_optional(conn)
        .await
        .map_err(query_error("read a certificate"))?
        .map(CertificateRow::try_from)
        .transpose()
}

/// Inserts events (one statement for up to two, the usual case; more are rare).
async fn insert_events(conn: &mut SqliteConnection, events: &[NewEvent]) -> Result<(), StoreError> {
    for pair in events.chunks(2) {
        let sql = if pair.len() == 2 {
            "INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8), (?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        } else {
            "INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        };
        let mut query = sqlx::query(sql);
        for event in pair {
            query = query
                .bind(ms(event.published))
                .bind(event.event_type.as_str())
                .bind(outcome_str(event.outcome))
                .bind(&event.user)
                .bind(&event.udid)
                .bind(&event.serial)
                .bind(&event.reason)
                .bind(&event.client_id);
        }
        query.execute(&mut *conn).await.map_err(query_error("record an event"))?;
    }
    Ok(())
}

async fn existing(conn: &mut SqliteConnection, serial: &str) -> Result<CertificateRow, StoreError> {
    certificate_by_serial(conn, serial).await?.ok_or_else(|| StoreError::Corrupt {
        what: "certificate found by key but not by serial",
        value: serial.to_owned(),
    })
}

async fn enroll(
    conn: &mut SqliteConnection,
    device: &DeviceInfo,
    platform: Platform,
    user: &str,
    cert: &Issued,
    max_unbound: u32,
    now: DateTime<Utc>,
) -> Result<EnrollOutcome, StoreError> {
    let (existing_serial, unbound): (Option<String>, i64) = sqlx::query_as(
        "SELECT \
           (SELECT serial FROM certificates WHERE device_udid = ?1 AND spki_sha256 = ?2 \
              AND state IN ('unbound', 'bound') AND not_after_ms > ?3 ORDER BY issued_at_ms DESC LIMIT 1), \
           (SELECT COUNT(*) FROM certificates WHERE device_udid = ?1 AND state = 'unbound' AND not_after_ms > ?3)",
    )
    .bind(&device.udid)
    .bind(&cert.spki_sha256)
    .bind(ms(now))
    .fetch_one(&mut *conn)
    .await
    .map_err(query_error("check idempotency and the unbound count"))?;

    if let Some(serial) = existing_serial {
        let row = existing(conn, &serial).await?;
        insert_events(conn, &[success(EventType::Enroll, &row, user, now)]).await?;
        return Ok(EnrollOutcome::Existing(row));
    }
    if count(unbound) >= max_unbound {
        return Ok(EnrollOutcome::LimitReached);
    }
    // One round trip: the device, the certificate and both events. Multi-statement
    // queries take anonymous parameters in order (sqlx binds `?NNN` only within the
    // statement that names it), so repeated values are bound again.
    let now_ms = ms(now);
    sqlx::query(
        "INSERT INTO devices (udid, serial_number, display_name, os_version, platform, created_at_ms, updated_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (udid) DO UPDATE SET serial_number = excluded.serial_number, \
         display_name = excluded.display_name, os_version = excluded.os_version, \
         platform = excluded.platform, updated_at_ms = excluded.updated_at_ms; \
         INSERT INTO certificates (serial, device_udid, user_name, bound_user, spki_sha256, fingerprint, state, \
         not_before_ms, not_after_ms, issued_at_ms, renewed_from, lineage, certificate_pem) \
         VALUES (?, ?, ?, NULL, ?, ?, 'unbound', ?, ?, ?, NULL, ?, ?); \
         INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason) \
         VALUES (?, 'user.credential.enroll', 'SUCCESS', ?, ?, ?, NULL), \
                (?, 'pki.cert.issue', 'SUCCESS', ?, ?, ?, NULL);",
    )
    // devices
    .bind(&device.udid)
    .bind(&device.serial_number)
    .bind(&device.display_name)
    .bind(&device.os_version)
    .bind(platform.as_str())
    .bind(now_ms)
    .bind(now_ms)
    // certificates
    .bind(&cert.serial)
    .bind(&device.udid)
    .bind(user)
    .bind(&cert.spki_sha256)
    .bind(&cert.fingerprint)
    .bind(ms(cert.not_before))
    .bind(ms(cert.not_after))
    .bind(now_ms)
    .bind(&cert.serial)
    .bind(&cert.pem)
    // events
    .bind(now_ms)
    .bind(user)
    .bind(&device.udid)
    .bind(&cert.serial)
    .bind(now_ms)
    .bind(user)
    .bind(&device.udid)
    .bind(&cert.serial)
    .execute(&mut *conn)
    .await
    .map_err(query_error("store a certificate"))?;
    Ok(EnrollOutcome::Issued(new_row(
        cert,
        &device.udid,
        &device.serial_number,
        user,
        None,
        CertificateState::Unbound,
        now,
    )))
}

async fn renew(
    conn: &mut SqliteConnection,
    presented: &str,
    cert: &Issued,
    max_unbound: u32,
    superseded_cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<RenewOutcome, StoreError> {
    // One probe: the presented certificate, an active certificate of the device for the new
    // key (idempotency), the device's unbound count outside this lineage, and the binding
    // of the lineage's active certificate (an earlier successor may have been bound since).
    let probe = sqlx::query_as::<_, RenewProbe>(select_certificates!(
        ", (SELECT x.serial FROM certificates x WHERE x.device_udid = c.device_udid AND x.spki_sha256 = ?2 \
              AND x.state IN ('unbound', 'bound') AND x.not_after_ms > ?3 ORDER BY x.issued_at_ms DESC LIMIT 1) \
              AS existing_serial, \
            (SELECT COUNT(*) FROM certificates y WHERE y.device_udid = c.device_udid AND y.state = 'unbound' \
              AND y.not_after_ms > ?3 AND y.lineage != c.lineage) AS unbound, \
            c.lineage AS lineage, \
            (SELECT t.bound_user FROM certificates t WHERE t.device_udid = c.device_udid \
              AND t.lineage = c.lineage AND t.state = 'bound' ORDER BY t.issued_at_ms DESC LIMIT 1) \
              AS tip_bound_user",
        "WHERE c.serial = ?1"
    ))
    .bind(presented)
    .bind(&cert.spki_sha256)
    .bind(ms(now))
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_error("read a presented certificate"))?;
    let Some(probe) = probe else {
        return Ok(RenewOutcome::Unknown);
    };
    let old = match renewal_refusal(CertificateRow::try_from(probe.old)?, superseded_cutoff, now) {
        std::ops::ControlFlow::Continue(old) => old,
        std::ops::ControlFlow::Break(refused) => return Ok(refused),
    };
    if let Some(serial) = probe.existing_serial {
        let row = existing(conn, &serial).await?;
        insert_events(conn, &[success(EventType::Renew, &row, &old.user, now)]).await?;
        return Ok(RenewOutcome::Existing(row));
    }
    // The successor keeps the binding, the lineage's current one first (an admin may have
    // bound the current certificate since the presented one was replaced), and takes its
    // lineage's slot: the lineage's active certificate (the presented one, or an earlier
    // successor of it) is superseded below, so it is left out of the count. A lineage with no
    // active certificate held no slot, and the limit applies as at enrollment.
    let bound_user = probe.tip_bound_user.or_else(|| old.bound_user.clone());
    let state = if bound_user.is_some() { CertificateState::Bound } else { CertificateState::Unbound };
    if state == CertificateState::Unbound && count(probe.unbound) >= max_unbound {
        return Ok(RenewOutcome::LimitReached);
    }
    let now_ms = ms(now);
    sqlx::query(
        "INSERT INTO certificates (serial, device_udid, user_name, bound_user, spki_sha256, fingerprint, state, \
         not_before_ms, not_after_ms, issued_at_ms, renewed_from, lineage, certificate_pem) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?); \
         UPDATE certificates SET state = 'superseded', superseded_by = ?, superseded_at_ms = ? \
         WHERE device_udid = ? AND lineage = ? AND state IN ('unbound', 'bound') AND serial != ?; \
         INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason) \
         VALUES (?, 'pki.cert.renew', 'SUCCESS', ?, ?, ?, NULL), \
                (?, 'pki.cert.issue', 'SUCCESS', ?, ?, ?, NULL);",
    )
    // certificates
    .bind(&cert.serial)
    .bind(&old.device_udid)
    .bind(&old.user)
    .bind(&bound_user)
    .bind(&cert.spki_sha256)
    .bind(&cert.fingerprint)
    .bind(state.as_str())
    .bind(ms(cert.not_before))
    .bind(ms(cert.not_after))
    .bind(now_ms)
    .bind(&old.serial)
    .bind(&probe.lineage)
    .bind(&cert.pem)
    // supersede the lineage's other active certificates
    .bind(&cert.serial)
    .bind(now_ms)
    .bind(&old.device_udid)
    .bind(&probe.lineage)
    .bind(&cert.serial)
    // events
    .bind(now_ms)
    .bind(&old.user)
    .bind(&old.device_udid)
    .bind(&cert.serial)
    .bind(now_ms)
    .bind(&old.user)
    .bind(&old.device_udid)
    .bind(&cert.serial)
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

async fn authenticate(
    conn: &mut SqliteConnection,
    a: &Authentication<'_>,
) -> Result<AuthOutcome, StoreError> {
    let Some(row) = certificate_by_serial(conn, a.serial).await? else {
        return Ok(AuthOutcome::Unknown);
    };
    let judged = match judge_authentication(row, a) {
        std::ops::ControlFlow::Continue(judged) => judged,
        std::ops::ControlFlow::Break(refused) => return Ok(refused),
    };
    if judged.binds {
        // One round trip: the binding and its event.
        let row = &judged.row;
        sqlx::query(
            "UPDATE certificates SET state = ?, bound_user = ? WHERE serial = ?; \
             INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id) \
             VALUES (?, 'user.authentication.authenticate', 'SUCCESS', ?, ?, ?, NULL, ?);",
        )
        .bind(row.state.as_str())
        .bind(&row.bound_user)
        .bind(&row.serial)
        .bind(ms(a.now))
        .bind(&judged.owner)
        .bind(&row.device_udid)
        .bind(&row.serial)
        .bind(a.client_id)
        .execute(&mut *conn)
        .await
        .map_err(query_error("bind a certificate"))?;
    } else {
        insert_events(conn, &[authentication_event(&judged, a)]).await?;
    }
    Ok(AuthOutcome::Trusted(judged.row))
}

/// Codes deleted per insertion at most: insertions outnumber the codes that fall due, so
/// the table stays bounded by the codes of the last few minutes.
const PURGE_BATCH: i64 = 64;

async fn insert_code(
    conn: &mut SqliteConnection,
    code: &NewCode,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let g = &code.grant;
    sqlx::query(
        "DELETE FROM oidc_codes WHERE rowid IN \
           (SELECT rowid FROM oidc_codes WHERE purge_after_ms <= ?1 ORDER BY purge_after_ms LIMIT ?2); \
         INSERT INTO oidc_codes (code_sha256, client_id, redirect_uri, code_challenge, nonce, login_hint, serial, \
           auth_time_ms, expires_at_ms, purge_after_ms) VALUES (?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12);",
    )
    .bind(ms(now))
    .bind(PURGE_BATCH)
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
    .execute(&mut *conn)
    .await
    .map_err(query_error("store an authorization code"))?;
    Ok(())
}

async fn redeem_code(
    conn: &mut SqliteConnection,
    code_sha256: &str,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<Redemption, StoreError> {
    let row = sqlx::query_as::<_, CodeDb>(select_code!("WHERE code_sha256 = ?1"))
        .bind(code_sha256)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_error("read an authorization code"))?;
    let Some(row) = row.filter(|row| row.client_id == client_id) else {
        return Ok(Redemption::Unknown);
    };
    let first = row.redeemed_at_ms.is_none();
    let sql = if first {
        "UPDATE oidc_codes SET redeemed_at_ms = ?1 WHERE code_sha256 = ?2"
    } else {
        "UPDATE oidc_codes SET replayed_at_ms = COALESCE(replayed_at_ms, ?1) WHERE code_sha256 = ?2"
    };
    sqlx::query(sql)
        .bind(ms(now))
        .bind(code_sha256)
        .execute(&mut *conn)
        .await
        .map_err(query_error("redeem an authorization code"))?;
    row.redemption()
}

async fn revoke(
    conn: &mut SqliteConnection,
    user: Option<&str>,
    udid: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let mut revoked: Vec<(String, String, String)> = sqlx::query_as(
        "UPDATE certificates SET state = 'revoked', revoked_at_ms = ?1 \
         WHERE (user_name = ?2 OR bound_user = ?2 OR device_udid = ?3) AND state != 'revoked' AND not_after_ms > ?1 \
         RETURNING serial, device_udid, user_name",
    )
    .bind(ms(now))
    .bind(user)
    .bind(udid)
    .fetch_all(&mut *conn)
    .await
    .map_err(query_error("revoke certificates"))?;
    revoked.sort();
    insert_events(conn, &revocation_events(&revoked, now)).await?;
    Ok(revoked.into_iter().map(|(serial, _, _)| serial).collect())
}

#[async_trait]
impl Store for SqliteStore {
    async fn certificate_by_serial(&self, serial: &str) -> Result<Option<CertificateRow>, StoreError> {
        sqlx::query_as::<_, CertDb>(select_certificates!("WHERE c.serial = ?1"))
            .bind(serial)
            .fetch_optional(&self.reader)
            .await
            .map_err(query_error("look up a presented certificate"))?
            .map(CertificateRow::try_from)
            .transpose()
    }

    async fn enroll(&self, e: Enrollment<'_>) -> Result<EnrollOutcome, StoreError> {
        let work = Work::Enroll {
            device: e.device.clone(),
            platform: e.platform,
            user: e.user.to_owned(),
            certificate: e.certificate.clone(),
            max_unbound: e.max_unbound,
            now: e.now,
        };
        match self.write(work).await? {
            Done::Enroll(outcome) => Ok(outcome),
            _ => Err(mismatch()),
        }
    }

    async fn renew(&self, r: Renewal<'_>) -> Result<RenewOutcome, StoreError> {
        let work = Work::Renew {
            presented_serial: r.presented_serial.to_owned(),
            certificate: r.certificate.clone(),
            max_unbound: r.max_unbound,
            superseded_cutoff: r.superseded_cutoff,
            now: r.now,
        };
        match self.write(work).await? {
            Done::Renew(outcome) => Ok(outcome),
            _ => Err(mismatch()),
        }
    }

    async fn authenticate(&self, a: Authentication<'_>) -> Result<AuthOutcome, StoreError> {
        let work = Work::Authenticate {
            serial: a.serial.to_owned(),
            bind_user: a.bind_user.map(str::to_owned),
            required_user: a.required_user.map(str::to_owned),
            bind: a.bind,
            superseded_cutoff: a.superseded_cutoff,
            client_id: a.client_id.map(str::to_owned),
            now: a.now,
        };
        match self.write(work).await? {
            Done::Authenticate(outcome) => Ok(outcome),
            _ => Err(mismatch()),
        }
    }

    async fn revoke(&self, target: RevokeTarget<'_>, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let work = match target {
            RevokeTarget::User(user) => Work::Revoke { user: Some(user.to_owned()), udid: None, now },
            RevokeTarget::Device(udid) => Work::Revoke { user: None, udid: Some(udid.to_owned()), now },
        };
        match self.write(work).await? {
            Done::Revoke(serials) => Ok(serials),
            _ => Err(mismatch()),
        }
    }

    async fn device(&self, udid: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let mut conn = self.reader.acquire().await.map_err(query_error("open a read connection"))?;
        let Some(device) = sqlx::query_as::<_, DeviceDb>(
            "SELECT udid, serial_number, display_name, os_version, platform, created_at_ms FROM devices WHERE udid = ?1",
        )
        .bind(udid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_error("read a device"))?
        else {
            return Ok(None);
        };
        let rows = sqlx::query_as::<_, CertDb>(select_certificates!(
            "WHERE c.device_udid = ?1 ORDER BY c.issued_at_ms, c.rowid"
        ))
        .bind(udid)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_error("read a device's certificates"))?;
        device_record(device, rows).map(Some)
    }

    async fn events(
        &self,
        after: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        // `since` becomes a lower bound on the id through the `events_published` index, so
        // that paging stays by id alone.
        let rows = sqlx::query_as::<_, EventDb>(
            "SELECT id, published_ms, event_type, outcome, user_name, device_udid, serial, reason, client_id \
             FROM events WHERE id > ?1 \
             AND (?3 IS NULL OR id >= (SELECT COALESCE(MIN(id), 9223372036854775807) FROM events WHERE published_ms >= ?3)) \
             ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .bind(since.map(ms))
        .fetch_all(&self.reader)
        .await
        .map_err(query_error("read events"))?;
        rows.into_iter().map(Event::try_from).collect()
    }

    async fn record(&self, event: NewEvent) -> Result<(), StoreError> {
        match self.write(Work::Record(event)).await? {
            Done::Record => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn insert_code(&self, code: NewCode, now: DateTime<Utc>) -> Result<(), StoreError> {
        match self.write(Work::InsertCode(code, now)).await? {
            Done::InsertCode => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn redeem_code(
        &self,
        code_sha256: &str,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Redemption, StoreError> {
        let work =
            Work::RedeemCode { code_sha256: code_sha256.to_owned(), client_id: client_id.to_owned(), now };
        match self.write(work).await? {
            Done::RedeemCode(redemption) => Ok(redemption),
            _ => Err(mismatch()),
        }
    }

    async fn code(&self, code_sha256: &str) -> Result<Option<CodeRow>, StoreError> {
        let row = sqlx::query_as::<_, CodeDb>(select_code!("WHERE code_sha256 = ?1"))
            .bind(code_sha256)
            .fetch_optional(&self.reader)
            .await
            .map_err(query_error("read an authorization code"))?;
        row.map(CodeDb::into_code_row).transpose()
    }

    async fn revoked_unexpired(
        &self,
        now: DateTime<Utc>,
        superseded_cutoff: DateTime<Utc>,
    ) -> Result<Vec<RevokedEntry>, StoreError> {
        let rows: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT serial, state, revoked_at_ms, superseded_at_ms FROM certificates \
             WHERE not_after_ms > ?1 AND (state = 'revoked' \
               OR (state = 'superseded' AND (superseded_at_ms IS NULL OR superseded_at_ms <= ?2))) \
             ORDER BY serial",
        )
        .bind(ms(now))
        .bind(ms(superseded_cutoff))
        .fetch_all(&self.reader)
        .await
        .map_err(query_error("list revoked certificates"))?;
        let grace = now - superseded_cutoff;
        rows.into_iter().map(|row| revoked_entry(row, superseded_cutoff, grace)).collect()
    }

    async fn next_crl_number(&self, issuer: &str, at_least: i64) -> Result<i64, StoreError> {
        match self.write(Work::CrlNumber { issuer: issuer.to_owned(), at_least }).await? {
            Done::CrlNumber(number) => Ok(number),
            _ => Err(mismatch()),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(query_error("answer a ping"))?;
        Ok(())
    }

    async fn close(&self) {
        let checkpointer = self.checkpointer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some((stop, task)) = checkpointer {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Err(e) = self.write(Work::Shutdown).await {
            tracing::warn!(error = %e, "closing the store");
        }
        self.reader.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(n: usize, serial: &str) -> Issued {
        let now = Utc::now();
        Issued {
            serial: serial.to_owned(),
            der: Vec::new(),
            pem: format!("pem {n}"),
            not_before: now,
            not_after: now + chrono::Duration::days(1),
            spki_sha256: format!("spki-{n}"),
            fingerprint: format!("fingerprint-{n}"),
        }
    }

    fn device(n: usize) -> DeviceInfo {
        DeviceInfo {
            udid: format!("UDID-{n}"),
            serial_number: format!("SERIAL-{n}"),
            display_name: String::new(),
            os_version: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_does_not_fail_the_others_in_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            std::sync::Arc::new(SqliteStore::open_path(&dir.path().join("db.sqlite3")).await.expect("open"));
        let first = issued(0, "01");
        let outcome = store
            .enroll(Enrollment {
                device: &device(0),
                platform: Platform::Macos,
                user: "alice",
                certificate: &first,
                max_unbound: 5,
                now: Utc::now(),
            })
            .await
            .expect("enroll");
        assert!(matches!(outcome, EnrollOutcome::Issued(_)));

        let mut tasks = Vec::new();
        for n in 1..=40 {
            let store = store.clone();
            // Number 20 reuses the first certificate's serial: a primary key violation.
            let cert = issued(n, &if n == 20 { "01".to_owned() } else { format!("{n:02x}ff") });
            tasks.push(tokio::spawn(async move {
                let device = device(n);
                let e = Enrollment {
                    device: &device,
                    platform: Platform::Linux,
                    user: "bob",
                    certificate: &cert,
                    max_unbound: 5,
                    now: Utc::now(),
                };
                (n, store.enroll(e).await)
            }));
        }
        for task in tasks {
            let (n, result) = task.await.expect("join");
            match result {
                Err(StoreError::Query { .. }) => assert_eq!(n, 20),
                Ok(EnrollOutcome::Issued(row)) => assert_ne!(n, 20, "{row:?}"),
                other => panic!("{n}: {other:?}"),
            }
        }
        let issues = store.events(0, None, 1000).await.expect("events");
        assert_eq!(issues.iter().filter(|e| e.event_type == EventType::Issue).count(), 40);
        store.close().await;
    }
}
