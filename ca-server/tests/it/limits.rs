//! The resource attacks of the hardening review, against `devicetrust-ca dev` as a real
//! process (with a real descriptor limit where that is the point): idle connections, headers
//! that never end, a body that stalls, idle keep-alive connections, and a burst of distinct
//! UDIDs from one address. The attacker's connections come from 127.0.0.2, a second
//! loopback address, so that the legitimate client on 127.0.0.1 shows what a real client
//! elsewhere would see.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{Device, p256};
use testkit::DevCaProcess;

use crate::process::start_with_fd_limit;

const ATTACKER: &str = "127.0.0.2";

/// A dev CA with the `[limits]` keys of `limits` (TOML lines) and at most `fd_limit` open
/// descriptors.
fn start(dir: &Path, limits: &str, fd_limit: Option<u32>) -> DevCaProcess {
    let file = dir.join("limits.toml");
    std::fs::write(&file, limits).expect("write limits");
    start_with_fd_limit(dir, &["--limits", file.to_str().expect("utf-8 path")], fd_limit)
}

fn addr(dev: &DevCaProcess) -> SocketAddr {
    let url = dev.info.url.as_str();
    url.trim_start_matches("https://").parse().expect("host:port")
}

fn tls_config(dev: &DevCaProcess) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&dev.info.ca_bundle).expect("bundle") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A client on 127.0.0.1 that gives up after 10 s: the legitimate user.
fn client(dev: &DevCaProcess) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(dev))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn enroll(dev: &DevCaProcess, client: &reqwest::Client, n: u32) -> u16 {
    client
        .post(format!("{}/api/v1/enroll", dev.info.url))
        .bearer_auth(dev.info.enrollment_token.as_str())
        .json(&Device::new(n).request(&p256()))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn connect_from(local: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().expect("addr"))?;
    socket.connect(to).await
}

async fn tls_from(
    local: &str,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = connect_from(local, to).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The attack: 300 idle connections exhausted the CA's file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = "max_connections = 48\nmax_connections_per_address = 16\nhandshake_timeout_secs = 60\n";
    let mut dev = start(dir.path(), limits, Some(128));
    let to = addr(&dev);
    let mut held = Vec::new();
    for _ in 0..200 {
        // The CA closes what is over the caps; the attacker keeps its side open.
        if let Ok(stream) = connect_from(ATTACKER, to).await {
            held.push(stream);
        }
    }
    assert!(
        held.len() > 128,
        "the attacker holds {} connections, more than the descriptor limit",
        held.len()
    );
    let client = client(&dev);
    let metadata =
        client.get(format!("{}/api/v1/metadata", dev.info.url)).send().await.expect("the CA still answers");
    assert_eq!(metadata.status(), 200);
    assert_eq!(enroll(&dev, &client, 1).await, 201);
    assert!(dev.is_running(), "{}", dev.stderr());
    drop(held);
}

/// The attack: 1,500 connections with unfinished 371 KB headers took the CA from 58 MB to
/// 673 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_cannot_grow_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = "max_connections_per_address = 16\nheader_read_timeout_secs = 60\n";
    let dev = start(dir.path(), limits, None);
    let to = addr(&dev);
    let config = Arc::new(tls_config(&dev));
    assert_eq!(enroll(&dev, &client(&dev), 1).await, 201, "warm up");
    let before = rss_kib(dev.pid());

    let (release, released) = tokio::sync::watch::channel(false);
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let config = config.clone();
        let mut released = released.clone();
        let (sent, sent_rx) = tokio::sync::oneshot::channel::<()>();
        attackers.push((
            tokio::spawn(async move {
                let Ok(mut tls) = tls_from(ATTACKER, to, config).await else {
                    let _ = sent.send(());
                    return;
                };
                let mut header = b"POST /api/v1/enroll HTTP/1.1\r\nhost: x\r\nx-pad: ".to_vec();
                header.resize(371 * 1024, b'a');
                let _ = tokio::time::timeout(Duration::from_secs(10), tls.write_all(&header)).await;
                let _ = sent.send(());
                // Hold the connection, headers unfinished, until the measurement is done.
                let _ = tokio::time::timeout(Duration::from_secs(60), released.wait_for(|r| *r)).await;
                drop(tls);
            }),
            sent_rx,
        ));
    }
    let mut tasks = Vec::new();
    for (task, sent) in attackers {
        let _ = sent.await;
        tasks.push(task);
    }
    let after = rss_kib(dev.pid());
    let _ = release.send(true);
    for task in tasks {
        task.await.expect("join");
    }
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(grown_mib < 40, "the CA grew by {grown_mib} MiB ({before} KiB to {after} KiB)");
    assert_eq!(enroll(&dev, &client(&dev), 2).await, 201, "and still serves");
}

/// The attack: an enroll body with a valid token that stalls was held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path(), "body_read_timeout_secs = 1\n", None);
    let token = dev.info.enrollment_token.as_str();
    let mut tls = tls_from("127.0.0.1", addr(&dev), Arc::new(tls_config(&dev))).await.expect("connect");
    let head = format!(
        "POST /api/v1/enroll HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"clientVersion\""
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.flush().await.expect("flush");
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut answer))
        .await
        .expect("the CA answers a stalled body instead of waiting for it")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Idle keep-alive connections are closed after the header read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path(), "header_read_timeout_secs = 1\n", None);
    let mut tls = tls_from("127.0.0.1", addr(&dev), Arc::new(tls_config(&dev))).await.expect("connect");
    tls.write_all(b"GET /api/v1/metadata HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .expect("the CA closes an idle keep-alive connection")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "the request itself was answered: {text}");
}

/// The attack: 150 enrollments of distinct UDIDs from one address all went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_distinct_udids_from_one_address_is_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = start(dir.path(), "requests_per_minute_per_address = 20\n", None);
    let client = client(&dev);
    let started = Instant::now();
    let mut issued = 0;
    let mut limited = 0;
    for n in 0..150 {
        match enroll(&dev, &client, 100 + n).await {
            201 => issued += 1,
            429 => limited += 1,
            other => panic!("enrollment {n}: {other}"),
        }
    }
    let refilled = started.elapsed().as_secs() / 3 + 1;
    assert!((20..=20 + refilled).contains(&issued), "{issued} issued");
    assert_eq!(issued + limited, 150);
}
