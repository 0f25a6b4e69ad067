//! One store suite, run against both stores: every case gets a fresh database (a SQLite
//! file in a temporary directory; a new database in one throwaway PostgreSQL cluster) and
//! may open it more than once, as two CA replicas would. A failing case names itself and
//! its store.
//!
//! The cases speak only the `Store` trait, so what they pin is the contract both stores
//! keep: idempotent enrollment, the unbound limit, renewal lineage, binding at first use,
//! revocation, the CRL's content, events paged by id, and OpenID Connect codes; and, with
//! two handles on one database, the same under concurrency across "replicas".

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use ca_client::protocol::{CertificateState, DeviceInfo, EventType, Outcome, Platform};
use ca_server::authority::Issued;
use ca_server::secret::SecretString;
use ca_server::store::postgres::{PostgresOptions, PostgresStore};
use ca_server::store::sqlite::SqliteStore;
use ca_server::store::{
    AuthOutcome, Authentication, CodeGrant, EnrollOutcome, Enrollment, NewCode, NewEvent, Redemption,
    RenewOutcome, Renewal, RevokeTarget, Store, StoreError,
};
use chrono::{DateTime, Duration, Utc};
use testkit::postgres::PgCluster;

/// A fresh database, which a case may open several times.
#[derive(Clone)]
enum Db {
    Sqlite(PathBuf),
    Postgres { url: String, password: &'static str },
}

impl Db {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Sqlite(path) => Arc::new(SqliteStore::open_path(path).await.expect("open sqlite")),
            Db::Postgres { url, password } => Arc::new(
                PostgresStore::open(&PostgresOptions {
                    url: url.clone(),
                    password: Some(SecretString::new(*password)),
                    max_connections: 8,
                    acquire_timeout: std::time::Duration::from_secs(10),
                    statement_timeout: std::time::Duration::from_secs(10),
                })
                .await
                .expect("open postgres"),
            ),
        }
    }
}

type Case = fn(Db) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! cases {
    ($($name:literal => $case:ident,)*) => {
        &[$(($name, (|db| Box::pin($case(db))) as Case),)*]
    };
}

const CASES: &[(&str, Case)] = cases! {
    "ok/enroll-issues-once-per-key" => enroll_issues_once_per_key,
    "ok/enroll-stops-at-the-unbound-limit" => enroll_stops_at_the_unbound_limit,
    "ok/renew-supersedes-the-lineage-and-keeps-its-binding" => renew_supersedes_the_lineage,
    "fail/renew-of-unknown-revoked-expired-superseded" => renew_refusals,
    "ok/authenticate-binds-at-first-use-only" => authenticate_binds_at_first_use,
    "ok/revoke-by-user-and-device-fills-the-crl" => revoke_fills_the_crl,
    "ok/events-page-by-id-and-since" => events_page_by_id_and_since,
    "ok/codes-redeem-once-for-their-client" => codes_redeem_once,
    "ok/replicas-enrolling-one-device-issue-once" => replicas_enrolling_one_device_issue_once,
    "ok/replicas-racing-one-device-keep-the-limit" => replicas_racing_keep_the_limit,
    "ok/replicas-renewing-one-certificate-leave-one-successor" => replicas_renewing_leave_one_successor,
    "ok/events-read-while-written-skip-none" => events_read_while_written_skip_none,
    "ok/crl-numbers-increase-across-replicas" => crl_numbers_increase,
    "ok/a-closed-store-refuses-writes" => closed_store_refuses_writes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, (name, case)) in CASES.iter().enumerate() {
        let db = Db::Sqlite(dir.path().join(format!("case-{n}.sqlite3")));
        run_case("sqlite", name, case(db)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_suite() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    for (name, case) in CASES {
        let url = tokio::task::block_in_place(|| cluster.create_database());
        run_case("postgres", name, case(Db::Postgres { url, password: cluster.password() })).await;
    }
}

async fn run_case(store: &str, name: &str, case: Pin<Box<dyn Future<Output = ()> + Send>>) {
    if let Err(panic) = tokio::spawn(case).await {
        panic!("{store}: {name} failed: {panic}");
    }
}

fn now() -> DateTime<Utc> {
    // Whole milliseconds, as the stores keep them.
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now")
}

fn issued(serial: &str, key: &str, now: DateTime<Utc>) -> Issued {
    Issued {
        serial: serial.to_owned(),
        der: Vec::new(),
        pem: format!("pem of {serial}"),
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(30),
        spki_sha256: format!("spki-{key}"),
        fingerprint: format!("fingerprint-{serial}"),
    }
}

fn device(udid: &str) -> DeviceInfo {
    DeviceInfo {
        udid: udid.to_owned(),
        serial_number: format!("SN-{udid}"),
        display_name: "Mac".into(),
        os_version: "15.1".into(),
    }
}

async fn enroll(store: &dyn Store, udid: &str, serial: &str, key: &str, now: DateTime<Utc>) -> EnrollOutcome {
    let cert = issued(serial, key, now);
    let device = device(udid);
    store
        .enroll(Enrollment {
            device: &device,
            platform: Platform::Macos,
            user: "alice",
            certificate: &cert,
            max_unbound: 5,
            now,
        })
        .await
        .expect("enroll")
}

async fn renew(
    store: &dyn Store,
    presented: &str,
    serial: &str,
    key: &str,
    now: DateTime<Utc>,
) -> RenewOutcome {
    let cert = issued(serial, key, now);
    store
        .renew(Renewal {
            presented_serial: presented,
            certificate: &cert,
            max_unbound: 5,
            superseded_cutoff: now - Duration::days(7),
            now,
        })
        .await
        .expect("renew")
}

/// The serials of a stored device's certificates, oldest first; with `active_only`, only
/// the bound and unbound ones.
async fn device_serials(store: &dyn Store, udid: &str, active_only: bool) -> Vec<String> {
    let record = store.device(udid).await.expect("device").expect("stored");
    record
        .certificates
        .into_iter()
        .filter(|c| !active_only || matches!(c.state, CertificateState::Bound | CertificateState::Unbound))
        .map(|c| c.serial_number)
        .collect()
}

fn auth(serial: &str, now: DateTime<Utc>) -> Authentication<'_> {
    Authentication {
        serial,
        bind_user: None,
        required_user: None,
        bind: true,
        superseded_cutoff: now - Duration::days(7),
        client_id: None,
        now,
    }
}

async fn enroll_issues_once_per_key(db: Db) {
    let store = db.open().await;
    let t = now();
    assert!(
        matches!(enroll(&*store, "UDID-1", "0a", "k1", t).await, EnrollOutcome::Issued(row) if row.serial == "0a")
    );
    // The same key again: the stored certificate, not a new one.
    assert!(
        matches!(enroll(&*store, "UDID-1", "0b", "k1", t).await, EnrollOutcome::Existing(row) if row.serial == "0a")
    );
    assert!(store.certificate_by_serial("0b").await.expect("read").is_none());
    let record = store.device("UDID-1").await.expect("device").expect("stored");
    assert_eq!(record.serial_number, "SN-UDID-1");
    assert_eq!(record.certificates.len(), 1);
    assert!(store.device("UDID-2").await.expect("device").is_none());
    store.close().await;
}

async fn enroll_stops_at_the_unbound_limit(db: Db) {
    let store = db.open().await;
    let t = now();
    for n in 0..5 {
        let outcome = enroll(&*store, "UDID-1", &format!("1{n}"), &format!("k{n}"), t).await;
        assert!(matches!(outcome, EnrollOutcome::Issued(_)), "{n}: {outcome:?}");
    }
    assert_eq!(enroll(&*store, "UDID-1", "20", "k9", t).await, EnrollOutcome::LimitReached);
    // Binding one frees its slot.
    assert!(matches!(store.authenticate(auth("10", t)).await.expect("auth"), AuthOutcome::Trusted(_)));
    assert!(matches!(enroll(&*store, "UDID-1", "21", "k9", t).await, EnrollOutcome::Issued(_)));
    // Oldest first, in the order issued, even within one millisecond.
    let serials = device_serials(&*store, "UDID-1", false).await;
    assert_eq!(serials, ["10", "11", "12", "13", "14", "21"]);
    store.close().await;
}

async fn renew_supersedes_the_lineage(db: Db) {
    let store = db.open().await;
    let t = now();
    enroll(&*store, "UDID-1", "0a", "k1", t).await;
    assert!(
        matches!(store.authenticate(auth("0a", t)).await.expect("auth"), AuthOutcome::Trusted(row) if row.bound_user.as_deref() == Some("alice"))
    );
    let RenewOutcome::Issued(next) = renew(&*store, "0a", "0b", "k2", t).await else { panic!("renew") };
    assert_eq!((next.state, next.bound_user.as_deref()), (CertificateState::Bound, Some("alice")));
    let old = store.certificate_by_serial("0a").await.expect("read").expect("row");
    assert_eq!((old.state, old.superseded_by.as_deref()), (CertificateState::Superseded, Some("0b")));
    // The same new key again answers with the successor; renewing the old one again (within
    // its grace period) supersedes the first successor: one active certificate per lineage.
    assert!(
        matches!(renew(&*store, "0a", "0c", "k2", t).await, RenewOutcome::Existing(row) if row.serial == "0b")
    );
    assert!(matches!(renew(&*store, "0a", "0d", "k3", t).await, RenewOutcome::Issued(_)));
    let active = device_serials(&*store, "UDID-1", true).await;
    assert_eq!(active, ["0d"]);
    store.close().await;
}

async fn renew_refusals(db: Db) {
    let store = db.open().await;
    let t = now();
    assert_eq!(renew(&*store, "ff", "0b", "k2", t).await, RenewOutcome::Unknown);
    enroll(&*store, "UDID-1", "0a", "k1", t).await;
    let later = t + Duration::days(31);
    assert!(matches!(renew(&*store, "0a", "0b", "k2", later).await, RenewOutcome::Expired(_)));
    renew(&*store, "0a", "0c", "k3", t).await;
    let RenewOutcome::Superseded(_) = renew(&*store, "0a", "0d", "k4", t + Duration::days(8)).await else {
        panic!("a certificate superseded longer ago than the grace period renews nothing")
    };
    store.revoke(RevokeTarget::Device("UDID-1"), t).await.expect("revoke");
    assert!(matches!(renew(&*store, "0c", "0e", "k5", t).await, RenewOutcome::Revoked(_)));
    store.close().await;
}

async fn authenticate_binds_at_first_use(db: Db) {
    let store = db.open().await;
    let t = now();
    enroll(&*store, "UDID-1", "0a", "k1", t).await;
    let read_only = Authentication { bind: false, ..auth("0a", t) };
    assert!(
        matches!(store.authenticate(read_only).await.expect("auth"), AuthOutcome::Trusted(row) if row.bound_user.is_none())
    );
    let bob = Authentication { bind_user: Some("bob"), ..auth("0a", t) };
    assert!(
        matches!(store.authenticate(bob).await.expect("auth"), AuthOutcome::Trusted(row) if row.bound_user.as_deref() == Some("bob"))
    );
    let alice = Authentication { required_user: Some("alice"), ..auth("0a", t) };
    assert!(matches!(store.authenticate(alice).await.expect("auth"), AuthOutcome::OtherUser(_)));
    assert_eq!(store.authenticate(auth("ff", t)).await.expect("auth"), AuthOutcome::Unknown);
    let events = store.events(0, None, 100).await.expect("events");
    assert_eq!(events.iter().filter(|e| e.event_type == EventType::Authenticate).count(), 2);
    store.close().await;
}

async fn revoke_fills_the_crl(db: Db) {
    let store = db.open().await;
    let t = now();
    enroll(&*store, "UDID-1", "0a", "k1", t).await;
    enroll(&*store, "UDID-2", "0b", "k2", t).await;
    renew(&*store, "0b", "0c", "k3", t).await;
    let revoked = store.revoke(RevokeTarget::User("alice"), t).await.expect("revoke");
    // Every unrevoked, unexpired certificate of the user, superseded ones included.
    assert_eq!(revoked, ["0a", "0b", "0c"]);
    assert!(store.revoke(RevokeTarget::Device("UDID-1"), t).await.expect("revoke").is_empty());
    let crl = store.revoked_unexpired(t, t - Duration::days(7)).await.expect("crl");
    assert_eq!(crl.iter().map(|e| e.serial.as_str()).collect::<Vec<_>>(), ["0a", "0b", "0c"]);
    let revokes = store.events(0, None, 100).await.expect("events");
    assert_eq!(revokes.iter().filter(|e| e.event_type == EventType::Revoke).count(), 3);
    store.close().await;
}

/// An event that names no device: a refused enrollment, now, for `reason`.
fn failed_enrollment(reason: &str) -> NewEvent {
    NewEvent {
        published: now(),
        event_type: EventType::Enroll,
        outcome: Outcome::Failure,
        user: None,
        udid: None,
        serial: None,
        reason: Some(reason.into()),
        client_id: None,
    }
}

async fn events_page_by_id_and_since(db: Db) {
    let store = db.open().await;
    let t = now();
    for n in 0..5 {
        let event = NewEvent {
            published: t + Duration::seconds(n),
            udid: Some(format!("UDID-{n}")),
            ..failed_enrollment("invalid_token")
        };
        store.record(event).await.expect("record");
    }
    let all = store.events(0, None, 100).await.expect("events");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "increasing ids");
    let page = store.events(all[1].id, None, 2).await.expect("events");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id, all[3].id]);
    let since = store.events(0, Some(t + Duration::seconds(3)), 100).await.expect("events");
    assert_eq!(since.iter().map(|e| e.id).collect::<Vec<_>>(), [all[3].id, all[4].id]);
    assert!(store.events(0, Some(t + Duration::days(1)), 100).await.expect("events").is_empty());
    store.close().await;
}

async fn codes_redeem_once(db: Db) {
    let store = db.open().await;
    let t = now();
    let code = |hash: &str, purge_after: DateTime<Utc>| NewCode {
        code_sha256: hash.to_owned(),
        grant: CodeGrant {
            client_id: "okta".into(),
            redirect_uri: "https://idp.example.com/cb".into(),
            code_challenge: "c".into(),
            nonce: None,
            login_hint: None,
            serial: "0a".into(),
            auth_time: t,
            expires_at: t,
        },
        purge_after,
    };
    store.insert_code(code("kept", t + Duration::seconds(60)), t).await.expect("insert");
    store.insert_code(code("old", t - Duration::seconds(1)), t).await.expect("insert");
    assert!(matches!(store.redeem_code("kept", "other", t).await, Ok(Redemption::Unknown)));
    assert!(matches!(store.redeem_code("kept", "okta", t).await, Ok(Redemption::First(_))));
    assert!(matches!(store.redeem_code("kept", "okta", t).await, Ok(Redemption::Replayed(_))));
    assert!(store.code("kept").await.expect("read").is_some_and(|row| row.replayed));
    assert!(store.code("old").await.expect("read").is_some(), "only insertions purge");
    store.insert_code(code("new", t + Duration::seconds(60)), t).await.expect("insert");
    assert!(store.code("old").await.expect("read").is_none(), "purged");
    // Two replicas redeeming one code at once: one first, the other a replay.
    let other = db.open().await;
    store.insert_code(code("raced", t + Duration::seconds(60)), t).await.expect("insert");
    let (a, b) = tokio::join!(store.redeem_code("raced", "okta", t), other.redeem_code("raced", "okta", t));
    let firsts = [a, b].into_iter().filter(|r| matches!(r, Ok(Redemption::First(_)))).count();
    assert_eq!(firsts, 1);
    store.close().await;
    other.close().await;
}

/// Two handles on one database, as two replicas; `n` tasks alternate between them.
async fn on_two_replicas<T: Send + 'static, F>(
    db: &Db,
    n: usize,
    task: impl Fn(Arc<dyn Store>, usize) -> F,
) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
{
    let replicas = [db.open().await, db.open().await];
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(task(replicas[i % 2].clone(), i))).collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.expect("join"));
    }
    for replica in replicas {
        replica.close().await;
    }
    results
}

async fn replicas_enrolling_one_device_issue_once(db: Db) {
    let t = now();
    // 32 identical enrollments (one key), each with the serial its replica signed.
    let outcomes = on_two_replicas(&db, 32, |store, i| async move {
        enroll(&*store, "UDID-1", &format!("a{i:02}"), "k1", t).await
    })
    .await;
    let issued = outcomes.iter().filter(|o| matches!(o, EnrollOutcome::Issued(_))).count();
    assert_eq!(issued, 1, "{outcomes:?}");
    let store = db.open().await;
    assert_eq!(store.device("UDID-1").await.expect("device").expect("stored").certificates.len(), 1);
    store.close().await;
}

async fn replicas_racing_keep_the_limit(db: Db) {
    let t = now();
    // 16 enrollments of one device with 16 different keys: five fit.
    let outcomes = on_two_replicas(&db, 16, |store, i| async move {
        enroll(&*store, "UDID-1", &format!("b{i:02}"), &format!("k{i}"), t).await
    })
    .await;
    let issued = outcomes.iter().filter(|o| matches!(o, EnrollOutcome::Issued(_))).count();
    let refused = outcomes.iter().filter(|o| **o == EnrollOutcome::LimitReached).count();
    assert_eq!((issued, refused), (5, 11), "{outcomes:?}");
}

async fn replicas_renewing_leave_one_successor(db: Db) {
    let t = now();
    let store = db.open().await;
    enroll(&*store, "UDID-1", "0a", "k0", t).await;
    store.close().await;
    // 16 renewals of one certificate with different new keys, on two replicas.
    let outcomes = on_two_replicas(&db, 16, |store, i| async move {
        renew(&*store, "0a", &format!("c{i:02}"), &format!("n{i}"), t).await
    })
    .await;
    assert!(outcomes.iter().all(|o| matches!(o, RenewOutcome::Issued(_))), "{outcomes:?}");
    let store = db.open().await;
    let active = device_serials(&*store, "UDID-1", true).await;
    assert_eq!(active.len(), 1, "one active certificate per lineage: {active:?}");
    store.close().await;
}

/// Writers on two replicas while a reader follows the log by id, as `admin events --follow`
/// does: at the end the reader has seen every event exactly once.
async fn events_read_while_written_skip_none(db: Db) {
    let t = now();
    // Opened (and migrated) first: SQLite's migrations are not meant to race each other.
    let reader = db.open().await;
    let writers = {
        let db = db.clone();
        tokio::spawn(async move {
            on_two_replicas(&db, 200, |store, i| async move {
                let outcome = enroll(&*store, &format!("UDID-{i}"), &format!("d{i:03}"), "k", t).await;
                assert!(matches!(outcome, EnrollOutcome::Issued(_)));
            })
            .await
        })
    };
    let mut seen = Vec::new();
    let mut after = 0;
    // Bounded: 400 events are written; a reader that stopped seeing them fails at the end.
    for _ in 0..10_000 {
        let page = reader.events(after, None, 50).await.expect("events");
        if let Some(last) = page.last() {
            after = last.id;
        }
        seen.extend(page.into_iter().map(|e| e.id));
        if writers.is_finished() && seen.len() >= 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    writers.await.expect("writers");
    seen.extend(reader.events(after, None, 1000).await.expect("events").into_iter().map(|e| e.id));
    let all: Vec<_> = reader.events(0, None, 1000).await.expect("events").into_iter().map(|e| e.id).collect();
    assert_eq!(all.len(), 400, "two events per enrollment");
    assert_eq!(seen, all, "the follower saw every event once, in order");
    reader.close().await;
}

async fn crl_numbers_increase(db: Db) {
    let store = db.open().await;
    assert_eq!(store.next_crl_number("issuer-a", 100).await.expect("number"), 100);
    assert_eq!(store.next_crl_number("issuer-a", 50).await.expect("number"), 101, "never lower");
    assert_eq!(store.next_crl_number("issuer-a", 500).await.expect("number"), 500, "at least what was asked");
    assert_eq!(store.next_crl_number("issuer-b", 7).await.expect("number"), 7, "per issuer");
    store.close().await;
    // 40 numbers taken at once on two replicas: all different.
    let mut numbers = on_two_replicas(&db, 40, |store, _| async move {
        store.next_crl_number("issuer-a", 0).await.expect("number")
    })
    .await;
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!((numbers.len(), numbers.first().copied()), (40, Some(501)));
}

async fn closed_store_refuses_writes(db: Db) {
    let store = db.open().await;
    store.close().await;
    let error = store.record(failed_enrollment("invalid_token")).await.expect_err("closed");
    assert!(matches!(error, StoreError::Closed | StoreError::Unavailable { .. }), "{error:?}");
}

/// What only PostgreSQL has to get right, step by step rather than by chance: an event is
/// held back while an older transaction is still open (a follower could otherwise move
/// past an id that commits later), and after a restore into a cluster whose transaction ids
/// are lower, the stored events stay listed and new ones come after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_wait_for_older_transactions_and_survive_a_restore() {
    use sqlx::{Connection as _, Executor as _};
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let url = tokio::task::block_in_place(|| cluster.create_database());
    let db = Db::Postgres { url: url.clone(), password: cluster.password() };
    let store = db.open().await;
    let options = url.parse::<sqlx::postgres::PgConnectOptions>().expect("url").password(cluster.password());
    let mut older = sqlx::PgConnection::connect_with(&options).await.expect("connect");
    older.execute("BEGIN").await.expect("begin");
    older.execute("SELECT pg_current_xact_id()").await.expect("take a transaction id");
    store.record(failed_enrollment("first")).await.expect("record");
    assert!(
        store.events(0, None, 100).await.expect("events").is_empty(),
        "held back behind the open transaction"
    );
    older.execute("COMMIT").await.expect("commit");
    let listed = store.events(0, None, 100).await.expect("events");
    assert_eq!(listed.len(), 1, "listed once the older transaction ended");

    // A restore into another cluster: stored ids far above this cluster's transaction ids.
    older
        .execute(
            "INSERT INTO events (id, published_ms, event_type, outcome, reason) \
             VALUES ((pg_current_xact_id()::text::bigint + 1000000) * 1048576, 0, 'user.credential.enroll', \
             'FAILURE', 'restored')",
        )
        .await
        .expect("insert a restored event");
    store.close().await;
    let store = db.open().await;
    store.record(failed_enrollment("after the restore")).await.expect("record");
    let listed = store.events(0, None, 100).await.expect("events");
    let reasons: Vec<_> = listed.iter().map(|e| e.reason.as_deref().unwrap_or("")).collect();
    assert_eq!(reasons, ["first", "restored", "after the restore"], "{listed:?}");
    store.close().await;
    older.close().await.expect("close");
}
