//! `devicetrust-ca serve` as processes: two replicas on one PostgreSQL database (a
//! throwaway cluster), one replica on SQLite, with the operations listener, and what an SRE
//! does to them: kill -9 under load, a database restart, a database migrated by a newer
//! version.
//!
//! The replicas share what a real deployment shares: the issuing CA, the assertion key, the
//! TLS files and the tokens, made once by `devicetrust-ca dev` in a directory of their own;
//! each replica has its own data directory. Each binds port 0 and says where it listens in
//! its JSON log (`--log-format json`), which the test reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_client::protocol::IssuedCertificate;
use testkit::postgres::PgCluster;
use testkit::{DevCaCommand, Guard, HANG_LIMIT};

use crate::harness::{Device, p256};

/// The files every replica shares.
struct Shared {
    dir: tempfile::TempDir,
    enrollment_token: String,
    admin_token: String,
}

impl Shared {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("shared");
        let mut dev = DevCaCommand {
            binary: Path::new(env!("CARGO_BIN_EXE_devicetrust-ca")),
            data_dir: &data,
            stderr: &dir.path().join("dev.log"),
            extra: &[],
            fd_limit: None,
        }
        .spawn();
        let info = dev.info.clone();
        dev.stop(Duration::from_secs(30));
        Self { dir, enrollment_token: info.enrollment_token, admin_token: info.admin_token }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("shared").join(name)
    }

    /// The configuration of replica `name` with `store` as its `[store]` table.
    fn config(&self, name: &str, store: &str) -> PathBuf {
        let data = self.dir.path().join(name);
        let f = |n: &str| self.file(n).display().to_string();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
cert_auth_domain = "https://127.0.0.1:8443"
data_dir = "{data}"
tls = {{ certificate = "{tls}", private_key = "{tls_key}" }}
shutdown_grace_secs = 5

[ca]
certificate = "{ca}"
private_key = "{ca_key}"

[tokens]
enrollment = {{ file = "{enrollment}" }}
admin = {{ file = "{admin}" }}

[limits]
enrollments_per_minute = 100000
requests_per_minute_per_address = 1000000
auth_failures_per_minute_per_address = 1000

[store]
{store}

[mdm]
kind = "allow_all"

[relying_party]
assertion_keys = ["{assertion}"]

[ops]
listen = "127.0.0.1:0"
"#,
            data = data.display(),
            tls = f("tls.pem"),
            tls_key = f("tls.key"),
            ca = f("ca.pem"),
            ca_key = f("ca.key"),
            enrollment = f("enrollment-token"),
            admin = f("admin-token"),
            assertion = f("assertion-key.pem"),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write the config");
        path
    }

    fn client(&self) -> reqwest::Client {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.file("tls-ca.pem")).expect("tls ca") {
            roots.add(cert.expect("cert")).expect("root");
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client")
    }
}

/// A running `devicetrust-ca serve`.
struct Replica {
    guard: Guard,
    url: String,
    ops_url: String,
    log: PathBuf,
}

impl Replica {
    fn start(config: &Path) -> Self {
        let log = config.with_extension("log");
        let mut command = serve(config, &log);
        let mut guard = Guard::spawn(&mut command, "devicetrust-ca serve");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = |message: &str| {
                text.lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .find(|v| v["fields"]["message"] == message)
                    .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
            };
            if let (Some(main), Some(ops)) = (addr("serving"), addr("serving /healthz, /readyz and /metrics"))
            {
                return Self { guard, url: format!("https://{main}"), ops_url: format!("http://{ops}"), log };
            }
            if !guard.is_running() || started.elapsed() > HANG_LIMIT {
                guard.kill();
                panic!("the replica did not start; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn serve(config: &Path, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devicetrust-ca"));
    command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .env("RUST_LOG", "info");
    command
}

fn postgres_store(cluster: &mut PgCluster) -> String {
    let url = cluster.create_database();
    format!("url = \"{url}\"\npassword_file = \"{}\"", cluster.password_file().display())
}

/// Enrolls `device` with `key` at `url`: the status and, on success, the certificate.
async fn enroll(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    device: &Device,
    key: &rcgen::KeyPair,
) -> (u16, Option<IssuedCertificate>, String) {
    let response = client
        .post(format!("{url}/api/v1/enroll"))
        .bearer_auth(token)
        .json(&device.request(key))
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let issued = if (200..300).contains(&status) { serde_json::from_str(&text).ok() } else { None };
            (status, issued, text)
        }
        Err(e) => (0, None, e.to_string()),
    }
}

async fn device_certificates(client: &reqwest::Client, url: &str, admin: &str, udid: &str) -> Vec<String> {
    let record: ca_client::protocol::DeviceRecord = client
        .get(format!("{url}/api/v1/admin/devices/{udid}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("record");
    record.certificates.into_iter().map(|c| c.serial_number).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_issue_one_certificate_for_32_identical_enrollments() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let shared = Shared::make();
    let store = postgres_store(&mut cluster);
    let replicas = [
        Replica::start(&shared.config("replica-a", &store)),
        Replica::start(&shared.config("replica-b", &store)),
    ];
    let client = shared.client();
    for replica in &replicas {
        let ready = client.get(format!("{}/readyz", replica.ops_url)).send().await.expect("readyz");
        assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap_or_default());
        // The operations listener is not the API, and the API has no /metrics.
        let api = client.get(format!("{}/metrics", replica.url)).send().await.expect("api");
        assert_eq!(api.status(), 404);
    }
    let device = Arc::new(Device::new(1));
    let key = Arc::new(p256());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (client, url, token) =
            (client.clone(), replicas[i % 2].url.clone(), shared.enrollment_token.clone());
        let (device, key) = (device.clone(), key.clone());
        tasks.push(tokio::spawn(async move { enroll(&client, &url, &token, &device, &key).await }));
    }
    let mut serials = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, issued, text) = task.await.expect("join");
        assert!(matches!(status, 200 | 201), "{status}: {text}");
        serials.insert(issued.expect("certificate").serial_number);
    }
    assert_eq!(serials.len(), 1, "one certificate for 32 identical enrollments: {serials:?}");
    let stored = device_certificates(&client, &replicas[1].url, &shared.admin_token, &device.udid).await;
    assert_eq!(stored.into_iter().collect::<std::collections::BTreeSet<_>>(), serials);
    // Exactly one replica issued it, and its /metrics says so.
    let mut issued = 0;
    for replica in &replicas {
        let text = client
            .get(format!("{}/metrics", replica.ops_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        issued += metric(&text, "devicetrust_certificates_issued_total{kind=\"enroll\"}");
        assert!(text.contains("devicetrust_store_operation_seconds_count{operation=\"enroll\"}"), "{text}");
        assert!(text.contains("devicetrust_requests_total{endpoint=\"/api/v1/enroll\""), "{text}");
    }
    assert_eq!(issued, 1);
}

/// A counter's value in OpenMetrics text, 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0)
}

/// Enrollments of new devices from 8 tasks until `stop`; every 2xx's serial.
async fn load(
    client: reqwest::Client,
    urls: Vec<String>,
    token: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let (client, urls, token, stop) = (client.clone(), urls.clone(), token.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let key = p256();
            // Bounded: at most 5000 enrollments per worker.
            for n in 0..5000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let device = Device::new(worker * 100_000 + n);
                let url = &urls[n as usize % urls.len()];
                if let (200 | 201, Some(issued), _) = enroll(&client, url, &token, &device, &key).await {
                    acknowledged.push(issued.serial_number);
                }
            }
            acknowledged
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    all
}

/// Kills a replica with SIGKILL while it is under load, and checks that every certificate a
/// client got a 2xx for is in the store, once; `reader_config` is the replica that reads
/// the store afterwards.
async fn kill_under_load(shared: &Shared, victim: Replica, others: &[&Replica], reader_config: &Path) {
    let client = shared.client();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut urls = vec![victim.url.clone()];
    urls.extend(others.iter().map(|r| r.url.clone()));
    let load = tokio::spawn(load(client.clone(), urls, shared.enrollment_token.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut victim = victim;
    victim.guard.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = load.await.expect("load");
    assert!(acknowledged.len() > 20, "the load ran: {}", acknowledged.len());
    let unique: std::collections::BTreeSet<_> = acknowledged.iter().cloned().collect();
    assert_eq!(unique.len(), acknowledged.len(), "no serial acknowledged twice");
    // Every acknowledged certificate is in the store (read through a replica started now).
    let reader = Replica::start(reader_config);
    let mut stored = std::collections::BTreeSet::new();
    let mut after = 0;
    // Bounded: pages of 1000 events, far more pages than the load can have written.
    for _ in 0..1000 {
        let page: ca_client::protocol::EventsResponse = client
            .get(format!("{}/api/v1/admin/events?after={after}&limit=1000", reader.url))
            .bearer_auth(&shared.admin_token)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("events");
        let Some(last) = page.events.last() else { break };
        after = last.id;
        stored.extend(
            page.events
                .iter()
                .filter(|e| e.event_type == ca_client::protocol::EventType::Issue)
                .filter_map(|e| e.serial_number.clone()),
        );
    }
    let missing: Vec<_> = unique.iter().filter(|serial| !stored.contains(*serial)).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}\nvictim log:\n{}", victim.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_under_load_loses_no_acknowledged_certificate_on_postgres() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let shared = Shared::make();
    let store = postgres_store(&mut cluster);
    let victim = Replica::start(&shared.config("victim", &store));
    let survivor = Replica::start(&shared.config("survivor", &store));
    kill_under_load(&shared, victim, &[&survivor], &shared.config("reader", &store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_certificate_on_sqlite() {
    let shared = Shared::make();
    let store = "kind = \"sqlite\"";
    // SQLite is one process: the replica started after the kill reads the victim's data.
    let config = shared.config("victim", store);
    let victim = Replica::start(&config);
    kill_under_load(&shared, victim, &[], &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_gives_503_and_the_replica_recovers_without_a_restart() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let shared = Shared::make();
    let store = postgres_store(&mut cluster);
    let replica = Replica::start(&shared.config("replica", &store));
    let client = shared.client();
    let key = p256();
    let (status, _, text) =
        enroll(&client, &replica.url, &shared.enrollment_token, &Device::new(1), &key).await;
    assert_eq!(status, 201, "{text}");

    tokio::task::block_in_place(|| cluster.stop());
    let (status, _, text) =
        enroll(&client, &replica.url, &shared.enrollment_token, &Device::new(2), &key).await;
    assert_eq!(status, 503, "{text}");
    let body: ca_client::protocol::ErrorBody = serde_json::from_str(&text).expect("error body");
    assert_eq!(body.error.code.as_str(), "internal", "{text}");
    assert!(!text.contains("postgres") && !text.contains("connect"), "no internal detail: {text}");
    let ready = client.get(format!("{}/readyz", replica.ops_url)).send().await.expect("readyz");
    assert_eq!(ready.status(), 503, "not ready while the database is away");
    let health = client.get(format!("{}/healthz", replica.ops_url)).send().await.expect("healthz");
    assert_eq!(health.status(), 200, "alive all the same");

    tokio::task::block_in_place(|| cluster.start_again());
    // The pool reconnects on its own; the first request may still meet a dead connection.
    let mut last = (0, String::new());
    for attempt in 0..50 {
        let (status, _, text) =
            enroll(&client, &replica.url, &shared.enrollment_token, &Device::new(2), &key).await;
        if status == 201 {
            let ready = client.get(format!("{}/readyz", replica.ops_url)).send().await.expect("readyz");
            assert_eq!(ready.status(), 200);
            return;
        }
        last = (status, text);
        tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
    }
    panic!("the replica did not recover: {last:?}\n{}", replica.log());
}

/// `serve` exits 1, saying the database is newer than it.
fn expect_refused(config: &Path) {
    let mut command = serve(config, &config.with_extension("refused.log"));
    // testkit::run collects stderr itself: the error is there.
    let finished = testkit::run(command.stderr(Stdio::piped()));
    assert_eq!(finished.code(), Some(1), "{finished}");
    assert!(
        finished.stderr.contains("migration 9999") && finished.stderr.contains("newer version"),
        "{finished}"
    );
}

/// Marks the database as migrated by a version with a migration this one lacks.
fn add_future_migration(insert: impl FnOnce(&str)) {
    insert(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, X'00', 0)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_database_with_newer_migrations() {
    let mut cluster = tokio::task::block_in_place(PgCluster::start);
    let shared = Shared::make();
    let store = postgres_store(&mut cluster);
    let config = shared.config("replica", &store);
    // Migrated by this version first.
    drop(Replica::start(&config));
    let database = format!("devicetrust_{}", 1);
    add_future_migration(|sql| {
        cluster.psql_in(&database, &sql.replace("X'00'", "'\\x00'::bytea"));
    });
    expect_refused(&config);

    // The same for SQLite.
    let config = shared.config("sqlite", "kind = \"sqlite\"");
    drop(Replica::start(&config));
    let file = shared.dir.path().join("sqlite").join("devicetrust-ca.sqlite3");
    add_future_migration(|sql| {
        let mut python = Command::new("python3");
        python.args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()",
        ]);
        python.arg(&file).arg(sql);
        testkit::run(&mut python).expect_success();
    });
    expect_refused(&config);
}

#[test]
fn an_unreachable_database_stops_the_start_and_creates_nothing() {
    let shared = Shared::make();
    let empty = tempfile::tempdir().expect("tempdir");
    let store =
        format!("url = \"postgres://devicetrust@localhost/devicetrust?host={}\"", empty.path().display());
    let config = shared.config("replica", &store);
    let mut command = serve(&config, &config.with_extension("log"));
    let finished = testkit::run(command.stderr(Stdio::piped()));
    assert_eq!(finished.code(), Some(1), "{finished}");
    assert!(
        finished.stderr.contains("cannot open the database at postgres://devicetrust@localhost/devicetrust"),
        "{finished}"
    );
    assert!(!shared.dir.path().join("replica").exists(), "no data directory was created");
}
