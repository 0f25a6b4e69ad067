//! The attacks of the hardening review, reproduced against a CA on 127.0.0.1 with real TLS:
//! case variants of a UDID, unauthenticated writes, deceptive names, per-address budgets, a
//! flood of MDM lookups, files readable by others, the migration that merges stored case
//! variants, and where issued certificates say revocation is published. The attacks that
//! need a separate process (descriptor limits, memory, stalled bodies) are in
//! `limits.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ca_client::protocol::{CertificateState, EventType, IssuedCertificate, Outcome, RevokeResponse};
use ca_server::mdm::{ManagedDeviceCheck, MdmError, MdmVerdict};

use crate::harness::{Device, TestCa, events, expect_error, p256, run};

const SECOND_HOST: &str = "127.0.0.2";

fn second_host() -> IpAddr {
    SECOND_HOST.parse().expect("ip")
}

/// The attack: 20 enrollments with case variants of one UDID gave 20 certificates, and
/// revoking the real UDID left 15 of them active.
#[tokio::test]
async fn case_variants_of_a_udid_are_one_device() {
    let ca = TestCa::start().await;
    let device = Device::new(40);
    let variants = [device.udid.to_lowercase(), device.udid.clone(), swap_case(&device.udid)];
    let mut issued = Vec::new();
    let mut refused = 0;
    for n in 0..20 {
        let mut request = device.request(&p256());
        request.device.udid = variants[n % variants.len()].clone();
        let response = ca.enroll(&request).await;
        match response.status().as_u16() {
            201 => issued.push(response.json::<IssuedCertificate>().await.expect("json")),
            409 => refused += 1,
            other => panic!("enrollment {n}: {other} {:?}", response.text().await),
        }
    }
    assert_eq!((issued.len(), refused), (5, 15), "one device, one unbound limit");

    // The SAN carries the canonical UDID, whatever case the request used.
    let san = run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .arg("-in")
        .arg(write_temp(&issued[0].certificate).path()));
    assert!(san.contains(&format!("URI:urn:devicetrust:device:{}", device.udid)), "{san}");

    // Lookup and revocation take any case.
    let record = ca.device_record(&device.udid.to_lowercase()).await;
    assert_eq!(record.udid, device.udid);
    assert_eq!(record.certificates.len(), 5);
    let revoked: RevokeResponse = ca
        .admin_post(&format!("/api/v1/admin/devices/{}/revoke", swap_case(&device.udid)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(revoked.revoked, 5, "revoking the device revokes every certificate it got");
    let record = ca.device_record(&device.udid).await;
    assert!(record.certificates.iter().all(|c| c.state == CertificateState::Revoked));
}

/// The attack: revocation requests without a token were stored as events with an
/// attacker-chosen user or UDID, and 800 of them with 60 KB paths grew the database by 59 MB.
#[tokio::test]
async fn requests_without_a_token_write_nothing() {
    // Every request reaches the token check (the failure budget is not what is tested here).
    let ca = TestCa::start_with(|config| {
        config.limits.auth_failures_per_minute_per_address = 100_000;
        config.limits.requests_per_minute_per_address = 100_000;
    })
    .await;
    let before = ca.database_bytes().await;
    let long = "A".repeat(8_000);
    let names = [
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "alice%0Aroot",
        "alice%E2%80%AEnimda",
        "alice%E2%80%8B",
        long.as_str(),
    ];
    let client = ca.anonymous();
    for n in 0..400 {
        let name = names[n % names.len()];
        let path = if n % 2 == 0 {
            format!("/api/v1/admin/users/{name}/revoke")
        } else {
            format!("/api/v1/admin/devices/{name}/revoke")
        };
        let response = client.post(ca.url(&path)).send().await.expect("send");
        assert_eq!(response.status(), 401, "{path:.80}");
    }
    assert_eq!(events(&ca).await, [], "nothing unauthenticated is recorded");
    assert_eq!(ca.ca.metrics().snapshot().unauthenticated_refusals, 400, "but every refusal is counted");
    let grown = ca.database_bytes().await.saturating_sub(before);
    assert!(grown < 64 * 1024, "the database grew by {grown} bytes");

    // A path over the 16 KiB buffer is refused by the HTTP layer, before any handler.
    let huge = format!("/api/v1/admin/users/{}/revoke", "B".repeat(60_000));
    let (status, _) =
        ca.raw(format!("POST {huge} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
    assert!(matches!(status, 414 | 431), "{status}");
    assert_eq!(events(&ca).await, []);
}

/// With the token, a refused request is recorded, but only with values that passed
/// validation: a deceptive name is refused and not echoed into the log.
#[tokio::test]
async fn deceptive_names_are_refused_and_never_recorded() {
    let ca = TestCa::start().await;
    for name in ["alice%E2%80%AEnimda", "ali%E2%80%8Dce", "alice%E2%80%A8root", "%EF%BB%BFalice"] {
        let response = ca.admin_post(&format!("/api/v1/admin/users/{name}/revoke")).await;
        expect_error(response, 400, "invalid_request").await;
    }
    let mut request = Device::new(41).request(&p256());
    request.device.display_name = "Alice\u{202E}s MacBook".into();
    expect_error(ca.enroll(&request).await, 400, "invalid_request").await;
    let mut request = Device::new(41).request(&p256());
    request.user = "alice\u{2067}".into();
    expect_error(ca.enroll(&request).await, 400, "invalid_request").await;

    let failures = events(&ca).await;
    assert_eq!(failures.len(), 6);
    for event in failures {
        assert_eq!((event.outcome, event.reason.as_deref()), (Outcome::Failure, Some("invalid_request")));
        assert_eq!((event.user, event.device), (None, None), "an invalid value is not recorded");
    }
}

/// The attack: 150 enrollments of distinct UDIDs and 300 wrong tokens from one address all
/// went through.
#[tokio::test]
async fn one_address_has_a_request_budget() {
    let ca = TestCa::start_with(|config| config.limits.requests_per_minute_per_address = 20).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for n in 0..150 {
        statuses.push(ca.enroll(&Device::new(1000 + n).request(&p256())).await.status().as_u16());
    }
    let issued = statuses.iter().filter(|s| **s == 201).count();
    // The budget refills one request every 3 s while the burst runs.
    let refilled = usize::try_from(started.elapsed().as_secs() / 3).expect("small") + 1;
    assert!((20..=20 + refilled).contains(&issued), "{issued} issued");
    assert!(statuses.iter().all(|s| matches!(s, 201 | 429)), "{statuses:?}");
    let refusal = ca.enroll(&Device::new(2000).request(&p256())).await;
    assert!(refusal.headers().contains_key("retry-after"));
    expect_error(refusal, 429, "rate_limited").await;

    // Another client host is not affected.
    assert_eq!(enroll_from_second_host(&ca, 2001).await, 201);
}

#[tokio::test]
async fn wrong_tokens_block_their_address() {
    let ca = TestCa::start().await;
    let client = ca.anonymous();
    let mut statuses = Vec::new();
    for _ in 0..300 {
        let response = client
            .post(ca.url("/api/v1/enroll"))
            .bearer_auth("wrong-token-wrong-token-wrong")
            .json(&Device::new(42).request(&p256()))
            .send()
            .await
            .expect("send");
        statuses.push(response.status().as_u16());
    }
    let guessed = statuses.iter().filter(|s| **s == 401).count();
    assert!((10..=12).contains(&guessed), "{guessed} tokens were checked");
    assert_eq!(statuses.last(), Some(&429));
    // The blocked address is refused even with the right token...
    expect_error(ca.enroll(&Device::new(43).request(&p256())).await, 429, "rate_limited").await;
    // ...another address is not.
    assert_eq!(enroll_from_second_host(&ca, 43).await, 201);
    // Read the log in-process: the admin API would refuse this blocked address too.
    let recorded = ca.ca.events(0, None, 1000).await.expect("events");
    assert_eq!(recorded.iter().filter(|e| e.outcome == Outcome::Failure).count(), 0);
    // Every refusal, 401 or 429, is counted: 300 wrong tokens and the blocked right one.
    assert_eq!(ca.ca.metrics().snapshot().unauthenticated_refusals, 301);
}

/// An MDM that holds every lookup until the test opens its gate, counting how many are in
/// flight at once.
#[derive(Debug)]
struct GatedMdm {
    gate: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl ManagedDeviceCheck for GatedMdm {
    async fn check(&self, _serial_number: &str, _udid: &str) -> Result<MdmVerdict, MdmError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let permit = self.gate.acquire().await.map_err(|_| MdmError::unavailable("closed"))?;
        permit.forget();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(MdmVerdict::Managed)
    }
}

/// A flood at the CA must not become a flood at Jamf Pro.
#[tokio::test]
async fn mdm_lookups_in_flight_are_bounded() {
    let mdm = Arc::new(GatedMdm {
        gate: tokio::sync::Semaphore::new(0),
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let ca = Arc::new(
        TestCa::start_with_mdm(
            |config| {
                config.limits.mdm_concurrent_lookups = 2;
                config.limits.mdm_queue_wait_secs = 1;
            },
            mdm.clone(),
        )
        .await,
    );
    let mut requests = Vec::new();
    for n in 0..6 {
        let ca = ca.clone();
        requests.push(tokio::spawn(async move {
            ca.enroll(&Device::new(50 + n).request(&p256())).await.status().as_u16()
        }));
    }
    // The four that found no free slot are answered after the queue wait...
    let deadline = Instant::now() + Duration::from_secs(30);
    while ca.ca.metrics().snapshot().mdm_queue_full < 4 {
        assert!(Instant::now() < deadline, "the waiting requests were not answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mdm.in_flight.load(Ordering::SeqCst), 2);
    // ...and the two lookups in flight finish when the MDM answers.
    mdm.gate.add_permits(6);
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("join"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 503, 503, 503, 503]);
    assert_eq!(mdm.most.load(Ordering::SeqCst), 2, "never more than the configured lookups at once");
}

/// The attack: with a data directory that already existed with mode 0755, the database and
/// its WAL were 0644.
#[tokio::test]
async fn files_the_ca_writes_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let env = ca_server::dev::prepare(
        &ca_server::dev::DevOptions { data_dir: data.clone(), managed_devices: None },
        listener.local_addr().expect("addr"),
    )
    .expect("prepare");
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
    let set = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    set(&data, 0o755);
    let db = data.join("devicetrust-ca.sqlite3");
    std::fs::write(&db, b"").expect("an empty database file, as an earlier version left it");
    set(&db, 0o644);

    let ca = ca_server::Ca::builder(env.config.clone()).build().await.expect("build");
    assert_eq!(mode(&data), 0o700, "the data directory is tightened");
    assert_eq!(mode(&db), 0o600, "the database is private");
    let wal = data.join("devicetrust-ca.sqlite3-wal");
    assert_eq!(mode(&wal), 0o600, "and so is its WAL");
    ca.close().await;

    // Key files that other users can read are refused, naming the fix.
    for key in [data.join("tls.key"), data.join("ca.key")] {
        set(&key, 0o644);
        let error = ca_server::Ca::builder(env.config.clone()).build().await.expect_err("an open key");
        let text = format!("{error}: {}", error.source_chain());
        assert!(text.contains("chmod 600") && text.contains(&key.display().to_string()), "{text}");
        set(&key, 0o600);
    }
}

trait SourceChain {
    fn source_chain(&self) -> String;
}

impl<E: std::error::Error> SourceChain for E {
    fn source_chain(&self) -> String {
        let mut out = Vec::new();
        let mut source = self.source();
        while let Some(cause) = source {
            out.push(cause.to_string());
            source = cause.source();
        }
        out.join(": ")
    }
}

/// Rows stored before UDIDs were canonical: case variants of one device, and a lineage that
/// fanned out. The migration merges the devices and keeps one active certificate.
#[tokio::test]
async fn the_migration_merges_case_variants_and_fan_out() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite3");
    let only_first = dir.path().join("migrations");
    std::fs::create_dir(&only_first).expect("mkdir");
    let first = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0001_initial.sql");
    std::fs::copy(&first, only_first.join("0001_initial.sql")).expect("copy");
    let day = 86_400_000_i64;
    let now = chrono::Utc::now().timestamp_millis();
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
        sqlx::migrate::Migrator::new(only_first.as_path())
            .await
            .expect("migrator")
            .run(&mut conn)
            .await
            .expect("0001");
        sqlx::raw_sql(&format!(
            "INSERT INTO devices VALUES ('abcd-0001', 'C02OLD', 'old name', '13.0', 'macos', {t0}, {t0}); \
             INSERT INTO devices VALUES ('ABCD-0001', 'C02OLD', 'new name', '14.0', 'macos', {t1}, {t1}); \
             INSERT INTO certificates VALUES ('01', 'abcd-0001', 'alice', NULL, 's1', 'f1', 'unbound', {t0}, {end}, {t0}, NULL, NULL, NULL, 'pem1'); \
             INSERT INTO certificates VALUES ('02', 'ABCD-0001', 'alice', NULL, 's2', 'f2', 'superseded', {t0}, {end}, {t0}, NULL, NULL, NULL, 'pem2'); \
             INSERT INTO certificates VALUES ('03', 'ABCD-0001', 'alice', NULL, 's3', 'f3', 'unbound', {t1}, {end}, {t1}, NULL, '02', NULL, 'pem3'); \
             INSERT INTO certificates VALUES ('04', 'ABCD-0001', 'alice', NULL, 's4', 'f4', 'unbound', {t2}, {end}, {t2}, NULL, '02', NULL, 'pem4'); \
             UPDATE certificates SET superseded_by = '03' WHERE serial = '02'; \
             INSERT INTO events (published_ms, event_type, outcome, user_name, device_udid, serial, reason) \
               VALUES ({t0}, 'pki.cert.issue', 'SUCCESS', 'alice', 'abcd-0001', '01', NULL);",
            t0 = now - 3 * day,
            t1 = now - 2 * day,
            t2 = now - day,
            end = now + 300 * day,
        ))
        .execute(&mut conn)
        .await
        .expect("old rows");
        conn.close().await.expect("close");
    }

    use ca_server::store::Store as _;
    let store = ca_server::store::sqlite::SqliteStore::open_path(&path).await.expect("migrate");
    let device = store.device("ABCD-0001").await.expect("read").expect("one device");
    assert_eq!(device.display_name, "new name", "the most recently updated row keeps its details");
    let states: Vec<_> = device.certificates.iter().map(|c| (c.serial_number.as_str(), c.state)).collect();
    use CertificateState::*;
    assert_eq!(
        states,
        [("01", Unbound), ("02", Superseded), ("03", Superseded), ("04", Unbound)],
        "certificate 03 fanned out of 02 beside 04: only the newest stays active"
    );
    assert!(store.device("abcd-0001").await.expect("read").is_none(), "no lowercase row is left");
    let fanned = store.certificate_by_serial("03").await.expect("read").expect("kept");
    assert_eq!(fanned.superseded_by.as_deref(), Some("04"));
    let kept = store.certificate_by_serial("04").await.expect("read").expect("kept");
    assert_eq!(fanned.superseded_at, Some(kept.issued_at), "the grace period does not start again");
    assert_eq!(device.created_at.timestamp_millis(), now - 3 * day, "the earliest creation is kept");
    let events = store.events(0, None, 10).await.expect("events");
    assert_eq!(events[0].device.as_ref().map(|d| d.udid.as_str()), Some("ABCD-0001"));
    let revoked = store
        .revoke(ca_server::store::RevokeTarget::Device("ABCD-0001"), chrono::Utc::now())
        .await
        .expect("revoke");
    assert_eq!(revoked.len(), 4, "one revocation reaches every certificate of the merged device");
    store.close().await;
}

/// Issued certificates say where the CRL is, and it is there.
#[tokio::test]
async fn issued_certificates_carry_the_crl_distribution_point() {
    let ca = TestCa::start().await;
    let issued = ca.enroll_ok(&Device::new(44).request(&p256())).await;
    let text = run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "crlDistributionPoints"])
        .arg("-in")
        .arg(write_temp(&issued.certificate).path()));
    let url = format!("{}/crl", ca.env.config.server.cert_auth_domain);
    assert!(text.contains(&format!("URI:{url}")), "{text}");
    let crl = ca.anonymous().get(&url).send().await.expect("crl");
    assert_eq!(crl.status(), 200);
    assert_eq!(crl.headers()["content-type"], "application/pkix-crl");

    let configured =
        TestCa::start_with(|config| config.ca.crl_url = Some("http://crl.example.com/dt.crl".into())).await;
    let issued = configured.enroll_ok(&Device::new(45).request(&p256())).await;
    let text = run(std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "crlDistributionPoints"])
        .arg("-in")
        .arg(write_temp(&issued.certificate).path()));
    assert!(text.contains("URI:http://crl.example.com/dt.crl"), "{text}");
}

/// The attack: a hostile page makes the victim's browser hit verify in a loop, and every
/// verify writes an event. A certificate has the device's budget of verifications.
#[tokio::test]
async fn a_page_cannot_make_a_browser_write_events_without_bound() {
    let ca = TestCa::start_with(|config| config.limits.enrollments_per_minute = 5).await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(47).request(&key)).await;
    let browser = ca.with_identity(&issued.certificate, &key);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = browser.get(ca.url("/api/v1/device-trust/verify")).send().await.expect("verify");
        statuses.push(response.status().as_u16());
    }
    let trusted = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=6).contains(&trusted), "{statuses:?}");
    let response = browser.get(ca.url("/api/v1/device-trust/verify")).send().await.expect("verify");
    let body: ca_client::protocol::VerifyResponse = response.json().await.expect("json");
    assert_eq!(body.error.expect("refused").code.as_str(), "rate_limited");
    // The refusals are counted, not written: the log holds the enrollment and the
    // verifications that went through.
    let recorded = events(&ca).await;
    assert_eq!(recorded.len(), 2 + trusted, "{recorded:?}");
    assert_eq!(ca.ca.metrics().snapshot().rate_limited_refusals, u64::try_from(21 - trusted).expect("small"));
}

/// The same page, with a `?user=` that fails validation: the budget is taken before anything
/// can fail, so refusals cannot be made to write rows either.
#[tokio::test]
async fn a_page_cannot_make_a_browser_write_refusals_without_bound() {
    let ca = TestCa::start_with(|config| config.limits.enrollments_per_minute = 5).await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(48).request(&key)).await;
    let browser = ca.with_identity(&issued.certificate, &key);
    for _ in 0..20 {
        let response = browser.get(ca.url("/api/v1/device-trust/verify?user=")).send().await.expect("verify");
        assert_eq!(response.status(), 403);
    }
    let failures = events(&ca).await.into_iter().filter(|e| e.outcome == Outcome::Failure).count();
    assert!((5..=6).contains(&failures), "{failures} refusals recorded");
}

/// An expired certificate still passes the handshake (so the agent learns it must
/// re-enroll), and each status refusal is a row: the certificate's budget bounds them.
#[tokio::test]
async fn an_expired_certificate_cannot_write_refusals_without_bound() {
    let ca = TestCa::start_with(|config| config.limits.enrollments_per_minute = 5).await;
    let key = p256();
    let issued = ca.enroll_ok(&Device::new(49).request(&key)).await;
    ca.clock.advance(chrono::Duration::days(400));
    let client = ca.with_identity(&issued.certificate, &key);
    let mut codes = Vec::new();
    for _ in 0..20 {
        let response = client.get(ca.url("/api/v1/certificate")).send().await.expect("status");
        let body: ca_client::protocol::ErrorBody = response.json().await.expect("error body");
        codes.push(body.error.code.as_str().to_owned());
    }
    assert_eq!(codes[0], "certificate_expired");
    assert_eq!(codes.last().map(String::as_str), Some("rate_limited"));
    let failures = events(&ca).await.into_iter().filter(|e| e.outcome == Outcome::Failure).count();
    assert!((5..=6).contains(&failures), "{failures} refusals recorded");
}

/// Browsers without a certificate (unenrolled devices behind one NAT, or a hostile page)
/// do not spend the address's authentication-failure budget: no secret is being guessed.
#[tokio::test]
async fn browsers_without_a_certificate_do_not_lock_their_address_out() {
    let ca = TestCa::start().await;
    let browser = ca.anonymous();
    for _ in 0..30 {
        let response = browser.get(ca.url("/api/v1/device-trust/verify")).send().await.expect("verify");
        assert_eq!(response.status(), 403);
    }
    ca.enroll_ok(&Device::new(60).request(&p256())).await;
}

/// Events of a refusal carry the canonical UDID too.
#[tokio::test]
async fn refusals_record_the_canonical_udid() {
    let ca = TestCa::start().await;
    let device = Device::new(46);
    ca.mdm.answer(&device.serial, Err(MdmError::unavailable("down")));
    let mut request = device.request(&p256());
    request.device.udid = device.udid.to_lowercase();
    expect_error(ca.enroll(&request).await, 503, "mdm_unavailable").await;
    let recorded = events(&ca).await;
    let refusal = recorded.iter().find(|e| e.event_type == EventType::Enroll).expect("recorded");
    assert_eq!(refusal.device.as_ref().map(|d| d.udid.as_str()), Some(device.udid.as_str()));
}

/// Enrolls device `n` from 127.0.0.2, a second client host; returns the status.
async fn enroll_from_second_host(ca: &TestCa, n: u32) -> u16 {
    ca.anonymous_from(second_host())
        .post(ca.url("/api/v1/enroll"))
        .bearer_auth(ca.enrollment_token())
        .json(&Device::new(n).request(&p256()))
        .send()
        .await
        .expect("enroll")
        .status()
        .as_u16()
}

fn swap_case(s: &str) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
        .collect()
}

/// Writes a PEM to a temporary file (for `openssl -in`), removed when dropped.
fn write_temp(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), pem).expect("write");
    file
}
