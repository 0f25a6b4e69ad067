//! `ca-loadgen`: a load generator for `devicetrust-ca`, for `bench/ca.sh`.
//!
//! Reads the one JSON line of `devicetrust-ca dev` on stdin (URL, CA bundle, enrollment
//! token: the token never goes on a command line), then:
//!
//! 1. setup (not timed): generates a P-256 key and a CSR for every simulated device, and a
//!    second key and CSR for its renewal;
//! 2. enroll phase: every device enrolls once, `--concurrency` requests in flight. With
//!    `--connections keep-alive` each worker reuses one HTTP/1.1 connection (what issuance
//!    itself costs); with `fresh` every request opens a new TCP and TLS connection without
//!    session resumption (what a fleet of distinct agents costs);
//! 3. renew phase: every device renews once over mutual TLS with its new certificate, each
//!    on its own fresh connection (a renewal is always a handshake with the device's own
//!    client certificate);
//! 4. check phase (`--checks N`, for `bench/forward-auth.sh`): N forward-auth checks
//!    (`GET /api/v1/relying-party/check`) as nginx `auth_request` sends them: the relying
//!    party's bearer secret (read from `--check-secret-file`) and an enrolled certificate as
//!    URL-escaped PEM in `X-DeviceTrust-Client-Cert`, cycling over `--check-devices`
//!    certificates, each worker on one kept-alive connection (as nginx with `keepalive` to
//!    the CA). Every answer must be 200.
//!
//! Prints a Markdown table: requests, errors, requests per second, p50, p99 and max latency,
//! and the CPU time the CA (`--ca-pid`) and the load generator itself spent per request
//! (from `/proc`, so Linux only; shown as `-` elsewhere). Latency is measured per request
//! from before connecting (fresh) or sending (keep-alive) until the whole response body
//! has arrived.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Connections {
    /// One HTTP/1.1 connection per worker, reused.
    KeepAlive,
    /// A new TCP and TLS connection per request, no session resumption.
    Fresh,
}

/// Load generator for devicetrust-ca; reads `devicetrust-ca dev`'s JSON line on stdin.
#[derive(Debug, Parser)]
#[command(name = "ca-loadgen")]
struct Args {
    /// Simulated devices (each enrolls once and renews once).
    #[arg(long, default_value_t = 5000)]
    devices: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Connection handling of the enroll phase.
    #[arg(long, value_enum, default_value_t = Connections::KeepAlive)]
    connections: Connections,
    /// Skip the renew phase.
    #[arg(long)]
    no_renew: bool,
    /// Forward-auth checks to send after enrolling (0: no check phase). The CA must run with
    /// a `--relying-parties` file naming an nginx relying party with this secret.
    #[arg(long, default_value_t = 0)]
    checks: usize,
    /// File holding that relying party's bearer secret (never on the command line).
    #[arg(long)]
    check_secret_file: Option<PathBuf>,
    /// Distinct certificates the checks cycle over (default: every enrolled device).
    #[arg(long)]
    check_devices: Option<usize>,
    /// Print the table header.
    #[arg(long)]
    header: bool,
    /// A CA process id, to report its CPU time per request (repeat for several replicas:
    /// each is reported on its own).
    #[arg(long)]
    ca_pid: Vec<u32>,
    /// Another replica's base URL (same host, same CA and tokens), repeatable: requests are
    /// spread over the dev line's URL and these, round robin.
    #[arg(long, value_name = "URL")]
    replica_url: Vec<url::Url>,
    /// The database server's process id (PostgreSQL's postmaster): its CPU time and that of
    /// its children (the backends) per request is reported too.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Enrollments per second to aim at in the enroll phase (open loop: each request has a
    /// scheduled time and its latency counts from then); default as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
}

struct Target {
    /// One port per replica.
    ports: Vec<u16>,
    host: String,
    token: String,
    roots: Arc<rustls::RootCertStore>,
}

struct Device {
    udid: String,
    enroll_body: Bytes,
    renew_body: Bytes,
    key: rcgen::KeyPair,
}

struct Phase {
    name: String,
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
    ca_cpu: Vec<Option<Duration>>,
    db_cpu: Option<Duration>,
    own_cpu: Option<Duration>,
}

/// CPU time of a process and its children now, from `/proc` (the database's backends are
/// its children and live as long as the CA's pooled connections).
fn tree_cpu_time(pid: u32) -> Option<Duration> {
    let mut total = cpu_time(&pid.to_string())?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(child) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += cpu_time(child).unwrap_or_default();
        }
    }
    Some(total)
}

/// CPU time (user + system, all threads, finished ones included) of a process, from
/// `/proc/<pid>/stat`. Clock ticks are 1/100 s on Linux.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What a phase cost in CPU: each CA process, the database, and this process.
struct Cpu {
    ca: Vec<Option<Duration>>,
    db: Option<Duration>,
    own: Option<Duration>,
}

/// Measures the CPU time of the CAs, the database and this process across `phase`.
async fn measured<T>(args: &Args, phase: impl std::future::Future<Output = T>) -> (T, Cpu) {
    let pids: Vec<String> = args.ca_pid.iter().map(u32::to_string).collect();
    let ca_before: Vec<_> = pids.iter().map(|p| cpu_time(p)).collect();
    let db_before = args.db_pid.and_then(tree_cpu_time);
    let own_before = cpu_time("self");
    let out = phase.await;
    let since = |after: Option<Duration>, before: Option<Duration>| {
        after.zip(before).map(|(a, b)| a.saturating_sub(b))
    };
    let ca = pids.iter().zip(ca_before).map(|(p, before)| since(cpu_time(p), before)).collect();
    let db = since(args.db_pid.and_then(tree_cpu_time), db_before);
    let own = since(cpu_time("self"), own_before);
    (out, Cpu { ca, db, own })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("read the dev JSON line on stdin")?;
    let info: serde_json::Value = serde_json::from_str(&line).context("parse the dev JSON line")?;
    let url = url::Url::parse(info["url"].as_str().context("url")?)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(info["caBundle"].as_str().context("caBundle")?)? {
        roots.add(cert?)?;
    }
    let mut ports = vec![url.port().context("port")?];
    for replica in &args.replica_url {
        ports.push(replica.port().context("replica port")?);
    }
    let target = Arc::new(Target {
        ports,
        host: url.host_str().context("host")?.to_owned(),
        token: info["enrollmentToken"].as_str().context("enrollmentToken")?.to_owned(),
        roots: Arc::new(roots),
    });

    eprintln!("setup: {} devices", args.devices);
    let run_id: u32 = rand_id();
    let devices = make_devices(args.devices, run_id).await?;
    let devices = Arc::new(devices);

    let mode = match args.connections {
        Connections::KeepAlive => "keep-alive",
        Connections::Fresh => "new TLS connection each",
    };
    let (enroll, cpu) = measured(&args, enroll_phase(&target, &devices, &args, mode)).await;
    let (mut enroll, certs) = enroll?;
    (enroll.ca_cpu, enroll.db_cpu, enroll.own_cpu) = (cpu.ca, cpu.db, cpu.own);
    let mut phases = vec![enroll];
    if !args.no_renew {
        let configs = renew_configs(&target, &devices, &certs)?;
        let (renew, cpu) = measured(&args, renew_phase(&target, &devices, configs, &args)).await;
        let mut renew = renew?;
        (renew.ca_cpu, renew.db_cpu, renew.own_cpu) = (cpu.ca, cpu.db, cpu.own);
        phases.push(renew);
    }
    if args.checks > 0 {
        let path = args.check_secret_file.as_deref().context("--checks needs --check-secret-file")?;
        let secret = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let headers = Arc::new(check_headers(&certs, args.check_devices)?);
        let (check, cpu) = measured(&args, check_phase(&target, secret.trim(), headers, &args)).await;
        let mut check = check?;
        (check.ca_cpu, check.db_cpu, check.own_cpu) = (cpu.ca, cpu.db, cpu.own);
        phases.push(check);
    }
    if args.header {
        println!(
            "| phase | requests | errors | requests/s | p50 ms | p99 ms | max ms | CA CPU ms/req | {}load generator CPU ms/req |",
            if args.db_pid.is_some() { "database CPU ms/req | " } else { "" }
        );
        println!(
            "|---|---:|---:|---:|---:|---:|---:|---:|{}---:|",
            if args.db_pid.is_some() { "---:|" } else { "" }
        );
    }
    for phase in &phases {
        let mut sorted = phase.latencies.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i].as_secs_f64() * 1000.0
        };
        let rate = phase.latencies.len() as f64 / phase.elapsed.as_secs_f64();
        let requests = phase.latencies.len() + phase.errors;
        let per_request = |cpu: Option<Duration>| {
            cpu.map_or_else(
                || "-".to_owned(),
                |cpu| format!("{:.2}", cpu.as_secs_f64() * 1000.0 / requests.max(1) as f64),
            )
        };
        // Per CA process (replicas each their own, as "a + b"), per request of the phase.
        let ca = if phase.ca_cpu.is_empty() {
            "-".to_owned()
        } else {
            phase.ca_cpu.iter().map(|cpu| per_request(*cpu)).collect::<Vec<_>>().join(" + ")
        };
        let db =
            if args.db_pid.is_some() { format!("{} | ", per_request(phase.db_cpu)) } else { String::new() };
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {ca} | {db}{} |",
            phase.name,
            requests,
            phase.errors,
            rate,
            pct(0.50),
            pct(0.99),
            pct(1.0),
            per_request(phase.own_cpu),
        );
    }
    let errors: usize = phases.iter().map(|p| p.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed (see above)");
    }
    Ok(())
}

fn rand_id() -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id()
}

fn csr_b64(key: &rcgen::KeyPair) -> anyhow::Result<String> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "loadgen");
    let csr = params.serialize_request(key)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(csr.der()))
}

async fn make_devices(count: usize, run_id: u32) -> anyhow::Result<Vec<Device>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let per = count.div_ceil(threads);
    let mut tasks = Vec::new();
    for t in 0..threads {
        let range = (t * per)..((t + 1) * per).min(count);
        tasks.push(tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Device>> {
            range
                .map(|i| {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                    let renew_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                    let udid = format!("LOADGEN-{run_id:08X}-{i:012}");
                    let enroll = serde_json::json!({
                        "clientVersion": "1.0.0",
                        "platform": "macos",
                        "device": {"udid": udid, "serialNumber": format!("LG{i:010}"),
                                   "displayName": "loadgen", "osVersion": "14.5"},
                        "user": format!("user{i}"),
                        "csr": csr_b64(&key)?,
                    });
                    let renew = serde_json::json!({"clientVersion": "1.0.0", "csr": csr_b64(&renew_key)?});
                    Ok(Device {
                        udid,
                        enroll_body: Bytes::from(serde_json::to_vec(&enroll)?),
                        renew_body: Bytes::from(serde_json::to_vec(&renew)?),
                        key,
                    })
                })
                .collect()
        }));
    }
    let mut devices = Vec::with_capacity(count);
    for task in tasks {
        devices.extend(task.await??);
    }
    Ok(devices)
}

fn client_config(
    target: &Target,
    identity: Option<(&str, &rcgen::KeyPair)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(target.roots.clone());
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((pem, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pem.as_bytes())?],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every simulated device is a distinct agent: no shared TLS sessions.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Connects to the replica of request (or worker) `n`, round robin.
async fn connect(
    target: &Target,
    n: usize,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let port = target.ports[n % target.ports.len()];
    let tcp = TcpStream::connect((target.host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.host.clone())?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    path: &str,
    body: Bytes,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let mut request = Request::post(path)
        .header(header::HOST, target.host.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender.send_request(request.body(Full::new(body))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn enroll_phase(
    target: &Arc<Target>,
    devices: &Arc<Vec<Device>>,
    args: &Args,
    mode: &str,
) -> anyhow::Result<(Phase, Vec<Option<String>>)> {
    eprintln!("enroll: {} requests, concurrency {}, {mode}", devices.len(), args.concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let anonymous = client_config(target, None)?;
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (target, devices, next, config) =
            (target.clone(), devices.clone(), next.clone(), anonymous.clone());
        let (connections, rate) = (args.connections, args.rate);
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut sender = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= devices.len() {
                    break;
                }
                // Open loop at --rate: request i is due at start + i / rate, and its latency
                // counts from then, so that a CA falling behind shows in the figures.
                let began = match rate {
                    Some(rate) => {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let result = async {
                    if connections == Connections::Fresh || sender.is_none() {
                        // Keep-alive workers stay on one replica; fresh connections go round.
                        let n = if connections == Connections::Fresh { i } else { worker };
                        sender = Some(connect(&target, n, config.clone()).await?);
                    }
                    let Some(s) = sender.as_mut() else { bail!("no connection") };
                    post(s, &target, "/api/v1/enroll", devices[i].enroll_body.clone(), Some(&target.token))
                        .await
                }
                .await;
                let took = began.elapsed();
                let cert = match result {
                    Ok((201, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["certificate"].as_str().map(str::to_owned)),
                    Ok((status, body)) => {
                        eprintln!("enroll {}: {status} {}", devices[i].udid, String::from_utf8_lossy(&body));
                        None
                    }
                    Err(e) => {
                        eprintln!("enroll {}: {e:#}", devices[i].udid);
                        sender = None;
                        None
                    }
                };
                out.push((i, took, cert));
            }
            out
        }));
    }
    let mut latencies = Vec::with_capacity(devices.len());
    let mut certs = vec![None; devices.len()];
    let mut errors = 0;
    for worker in workers {
        for (i, took, cert) in worker.await? {
            match cert {
                Some(cert) => {
                    latencies.push(took);
                    certs[i] = Some(cert);
                }
                None => errors += 1,
            }
        }
    }
    let elapsed = start.elapsed();
    let name = format!("enroll ({mode})");
    Ok((Phase { name, latencies, errors, elapsed, ca_cpu: Vec::new(), db_cpu: None, own_cpu: None }, certs))
}

type Configs = Arc<Vec<Option<Arc<rustls::ClientConfig>>>>;

/// Each device's TLS configuration (its own certificate), built before timing starts.
fn renew_configs(target: &Target, devices: &[Device], certs: &[Option<String>]) -> anyhow::Result<Configs> {
    let mut configs = Vec::with_capacity(devices.len());
    for (device, cert) in devices.iter().zip(certs) {
        configs.push(match cert {
            Some(pem) => Some(client_config(target, Some((pem, &device.key)))?),
            None => None,
        });
    }
    Ok(Arc::new(configs))
}

async fn renew_phase(
    target: &Arc<Target>,
    devices: &Arc<Vec<Device>>,
    configs: Configs,
    args: &Args,
) -> anyhow::Result<Phase> {
    eprintln!("renew: {} requests over mutual TLS, concurrency {}", devices.len(), args.concurrency);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (target, devices, next, configs) =
            (target.clone(), devices.clone(), next.clone(), configs.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= devices.len() {
                    break;
                }
                let Some(config) = configs[i].clone() else {
                    out.push(None);
                    continue;
                };
                let began = Instant::now();
                let result = async {
                    let mut sender = connect(&target, i, config).await?;
                    post(&mut sender, &target, "/api/v1/renew", devices[i].renew_body.clone(), None).await
                }
                .await;
                let took = began.elapsed();
                match result {
                    Ok((201, _)) => out.push(Some(took)),
                    Ok((status, body)) => {
                        eprintln!("renew {}: {status} {}", devices[i].udid, String::from_utf8_lossy(&body));
                        out.push(None);
                    }
                    Err(e) => {
                        eprintln!("renew {}: {e:#}", devices[i].udid);
                        out.push(None);
                    }
                }
            }
            out
        }));
    }
    let (latencies, errors) = gather(workers).await?;
    Ok(Phase {
        name: "renew (mutual TLS, new connection each)".into(),
        latencies,
        errors,
        elapsed: start.elapsed(),
        ca_cpu: Vec::new(),
        db_cpu: None,
        own_cpu: None,
    })
}

/// `X-DeviceTrust-Client-Cert` values: each enrolled certificate as nginx's
/// `$ssl_client_escaped_cert` writes it (URL-escaped PEM), the first `limit` of them.
fn check_headers(certs: &[Option<String>], limit: Option<usize>) -> anyhow::Result<Vec<String>> {
    let escaped: Vec<String> = certs
        .iter()
        .flatten()
        .take(limit.unwrap_or(usize::MAX))
        .map(|pem| ca_server::relying_party::header::nginx_escaped_pem(pem))
        .collect();
    if escaped.is_empty() {
        bail!("no enrolled certificate to check");
    }
    Ok(escaped)
}

async fn check_phase(
    target: &Arc<Target>,
    secret: &str,
    headers: Arc<Vec<String>>,
    args: &Args,
) -> anyhow::Result<Phase> {
    eprintln!(
        "check: {} requests over {} certificates, concurrency {}, keep-alive",
        args.checks,
        headers.len(),
        args.concurrency
    );
    let bearer = Arc::new(format!("Bearer {secret}"));
    let total = args.checks;
    let next = Arc::new(AtomicUsize::new(0));
    let anonymous = client_config(target, None)?;
    let start = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (target, headers, next, config, bearer) =
            (target.clone(), headers.clone(), next.clone(), anonymous.clone(), bearer.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut sender = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let began = Instant::now();
                let result = async {
                    if sender.is_none() {
                        sender = Some(connect(&target, worker, config.clone()).await?);
                    }
                    let Some(s) = sender.as_mut() else { bail!("no connection") };
                    s.ready().await?;
                    let request = Request::get("/api/v1/relying-party/check")
                        .header(header::HOST, target.host.as_str())
                        .header(header::AUTHORIZATION, bearer.as_str())
                        .header("x-devicetrust-client-cert", headers[i % headers.len()].as_str())
                        .body(Full::new(Bytes::new()))?;
                    let response = s.send_request(request).await?;
                    let status = response.status().as_u16();
                    let body = response.into_body().collect().await?.to_bytes();
                    Ok((status, body))
                }
                .await;
                let took = began.elapsed();
                match result {
                    Ok((200, _)) => out.push(Some(took)),
                    Ok((status, body)) => {
                        eprintln!("check {i}: {status} {}", String::from_utf8_lossy(&body));
                        out.push(None);
                    }
                    Err(e) => {
                        eprintln!("check {i}: {e:#}");
                        sender = None;
                        out.push(None);
                    }
                }
            }
            out
        }));
    }
    let (latencies, errors) = gather(workers).await?;
    Ok(Phase {
        name: format!("forward-auth check ({} certificates, keep-alive)", headers.len()),
        latencies,
        errors,
        elapsed: start.elapsed(),
        ca_cpu: Vec::new(),
        db_cpu: None,
        own_cpu: None,
    })
}

/// The latencies of the requests that succeeded, and how many failed, from every worker.
async fn gather(
    workers: Vec<tokio::task::JoinHandle<Vec<Option<Duration>>>>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        for took in worker.await? {
            match took {
                Some(took) => latencies.push(took),
                None => errors += 1,
            }
        }
    }
    Ok((latencies, errors))
}
