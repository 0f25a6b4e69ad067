//! A Jamf Pro simulator: an HTTP server on 127.0.0.1 serving the documented responses kept
//! in `fixtures/jamf/`.
//!
//! It implements the two endpoints the CA uses, `POST /api/oauth/token` (client
//! credentials) and `GET /api/{version}/computers-inventory` (RSQL filter on
//! `hardware.serialNumber`), checks the client credentials and the bearer token as Jamf
//! does, counts requests, and records what each lookup asked for. Knobs make it misbehave
//! the ways a real Jamf does: expired or revoked tokens, 500s, answers that never come,
//! unreadable bodies. It also provides [`ManualMonotonicClock`] for tests of token and cache expiry.
//!
//! The server stops when [`JamfSim::shutdown`] is awaited or the value is dropped; a request
//! hanging on purpose is released then.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ca_server::mdm::MonotonicClock;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// The client ID the simulator accepts.
pub(crate) const CLIENT_ID: &str = "6cabf059-21c9-44d6-bbde-02898f7430dd";
/// The client secret the simulator accepts.
pub(crate) const CLIENT_SECRET: &str = "sim-secret-dzmsPks-FwXpks80jhQGZZrAV3H2";

/// `inventory-managed.json`: a managed Mac.
pub(crate) const MANAGED_SERIAL: &str = "C02XK0AAJGH6";
/// The UDID of the managed Mac's record (and of the Mac itself).
pub(crate) const MANAGED_UDID: &str = "564D0C47-1A7E-4B8C-9D2F-0E5A6B7C8D9E";
/// `inventory-unmanaged.json`: a Mac whose MDM profile was removed.
pub(crate) const UNMANAGED_SERIAL: &str = "C02ZP1BBMD6N";
/// The UDID of the unmanaged Mac.
pub(crate) const UNMANAGED_UDID: &str = "9A3F2E1D-7C6B-4A59-8E7D-1F2A3B4C5D6E";
/// `inventory-udid-mismatch.json`: a managed record whose UDID is not the Mac's own.
pub(crate) const MISMATCH_SERIAL: &str = "FVFHX2CCQ05D";
/// The UDID the Jamf record carries.
pub(crate) const MISMATCH_RECORD_UDID: &str = "0D4E7A21-3B5C-4F6A-9E8D-7C2B1A0F9E8D";
/// The UDID the Mac reports (after a logic board replacement, say).
pub(crate) const MISMATCH_DEVICE_UDID: &str = "2B7C9E14-6A3D-4F5B-8C1E-9D0A7B6C5E4F";
/// `inventory-duplicate.json`: an old unmanaged record and the current managed one.
pub(crate) const DUPLICATE_SERIAL: &str = "C02DU9PLJG5H";
/// The UDID of the current (managed) record.
pub(crate) const DUPLICATE_CURRENT_UDID: &str = "B8C7D6E5-F4A3-4B2C-9D1E-0F9E8D7C6B5A";
/// The UDID of the stale (unmanaged) record.
pub(crate) const DUPLICATE_OLD_UDID: &str = "6F1A2B3C-4D5E-4F60-8172-93A4B5C6D7E8";
/// The fixture served for a serial no fixture carries.
pub(crate) const EMPTY_FIXTURE: &str = "inventory-empty.json";

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Behavior {
    /// As Jamf does.
    #[default]
    Normal,
    /// 500 with Jamf's error body.
    ServerError,
    /// Never answers (until the simulator stops).
    Hang,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 401 to every request (the inventory endpoint: a token Jamf no longer accepts).
    Unauthorized,
}

/// What one inventory request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedLookup {
    /// The `{version}` path segment.
    pub api_version: String,
    /// The decoded `filter` query parameter.
    pub filter: Option<String>,
    /// The decoded `section` query parameters, in order.
    pub sections: Vec<String>,
}

/// A running simulator. Stops on drop.
#[derive(Debug)]
pub(crate) struct JamfSim {
    addr: SocketAddr,
    https: bool,
    state: Arc<SimState>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct SimState {
    fixtures: HashMap<String, Value>,
    token_requests: AtomicUsize,
    inventory_requests: AtomicUsize,
    mutable: Mutex<Mutable>,
    stop: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Mutable {
    serial_to_fixture: HashMap<String, String>,
    tokens: HashMap<String, IssuedToken>,
    issued: u64,
    token_lifetime_secs: u64,
    token_behavior: Behavior,
    inventory_behavior: Behavior,
    lookups: Vec<RecordedLookup>,
}

#[derive(Debug, Clone, Copy)]
struct IssuedToken {
    issued_at: Instant,
    lifetime: Duration,
    revoked: bool,
}

/// `fixtures/jamf/` of this repository.
pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fixtures").join("jamf")
}

impl JamfSim {
    /// Loads `fixtures/jamf/` and listens on 127.0.0.1, port 0.
    pub(crate) async fn start() -> io::Result<Self> {
        Self::start_with_fixtures(&fixtures_dir()).await
    }

    /// Like [`JamfSim::start`], over https with `cert_chain_pem` (leaf first) and `key_pem`,
    /// as a production Jamf Pro is served.
    pub(crate) async fn start_tls(cert_chain_pem: &str, key_pem: &str) -> io::Result<Self> {
        let invalid = |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid(&e))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(&e))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| invalid(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self::start_inner(&fixtures_dir(), Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    /// Like [`JamfSim::start`] with another fixture directory. Every `inventory-*.json`
    /// there is served for the serial numbers its records carry.
    pub(crate) async fn start_with_fixtures(dir: &Path) -> io::Result<Self> {
        Self::start_inner(dir, None).await
    }

    async fn start_inner(dir: &Path, tls: Option<TlsAcceptor>) -> io::Result<Self> {
        let fixtures = load_fixtures(dir)?;
        let token_lifetime_secs = fixtures
            .get("token.json")
            .and_then(|t| t.get("expires_in"))
            .and_then(Value::as_u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "token.json lacks expires_in"))?;
        let mut serial_to_fixture = HashMap::new();
        for (name, body) in &fixtures {
            if !name.starts_with("inventory-") {
                continue;
            }
            let results = body.get("results").and_then(Value::as_array).into_iter().flatten();
            for record in results {
                if let Some(serial) = record.pointer("/hardware/serialNumber").and_then(Value::as_str) {
                    serial_to_fixture.insert(serial.to_owned(), name.clone());
                }
            }
        }

        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(SimState {
            fixtures,
            token_requests: AtomicUsize::new(0),
            inventory_requests: AtomicUsize::new(0),
            mutable: Mutex::new(Mutable {
                serial_to_fixture,
                tokens: HashMap::new(),
                issued: 0,
                token_lifetime_secs,
                token_behavior: Behavior::Normal,
                inventory_behavior: Behavior::Normal,
                lookups: Vec::new(),
            }),
            stop: stop_rx.clone(),
        });
        let router = Router::new()
            .route("/api/oauth/token", post(token))
            .route("/api/{version}/computers-inventory", get(inventory))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut shutdown = stop_rx;
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let https = tls.is_some();
        let task = match tls {
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                    tracing::warn!("jamf simulator stopped with an error: {e}");
                }
            }),
            Some(acceptor) => tokio::spawn(async move {
                let listener = TlsListener { tcp: listener, acceptor };
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                    tracing::warn!("jamf simulator stopped with an error: {e}");
                }
            }),
        };
        Ok(Self { addr, https, state, stop, task: Some(task) })
    }

    /// The base URL, `http://127.0.0.1:<port>` (`https://` when started with TLS).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The `expires_in` of tokens issued from now on (the fixture says 1199). The simulator
    /// rejects a token once that many real seconds have passed.
    pub(crate) fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().token_lifetime_secs = secs;
    }

    /// Every token issued so far gets 401 from now on, as after an expiry the client did
    /// not foresee, or a revocation.
    pub(crate) fn revoke_tokens(&self) {
        for token in self.state.lock().tokens.values_mut() {
            token.revoked = true;
        }
    }

    /// How the token endpoint answers.
    pub(crate) fn set_token_behavior(&self, behavior: Behavior) {
        self.state.lock().token_behavior = behavior;
    }

    /// How the inventory endpoint answers.
    pub(crate) fn set_inventory_behavior(&self, behavior: Behavior) {
        self.state.lock().inventory_behavior = behavior;
    }

    /// Requests to the token endpoint so far, refused ones included.
    pub(crate) fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Requests to the inventory endpoint so far, refused ones included.
    pub(crate) fn inventory_requests(&self) -> usize {
        self.state.inventory_requests.load(Ordering::SeqCst)
    }

    /// What each inventory request asked for, oldest first.
    pub(crate) fn lookups(&self) -> Vec<RecordedLookup> {
        self.state.lock().lookups.clone()
    }

    /// Every access token issued so far (to check that none leaks into output).
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.state.lock().tokens.keys().cloned().collect()
    }

    /// Stops accepting, releases hanging requests and waits for the server to finish.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for JamfSim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            // Without an await the task is ended rather than waited for.
            task.abort();
        }
    }
}

impl SimState {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fixture(&self, name: &str) -> Value {
        self.fixtures.get(name).cloned().unwrap_or(Value::Null)
    }

    /// Answers once the simulator stops; what a hanging Jamf looks like to a client.
    async fn hang(&self) -> Response {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stop| *stop).await;
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }

    fn misbehave(&self, behavior: Behavior) -> Option<Response> {
        match behavior {
            Behavior::Normal | Behavior::Hang => None,
            Behavior::ServerError => {
                Some(json(StatusCode::INTERNAL_SERVER_ERROR, self.fixture("error-500.json")))
            }
            Behavior::Garbage => Some((StatusCode::OK, "<html>Jamf Pro is starting</html>").into_response()),
            Behavior::Unauthorized => Some(json(StatusCode::UNAUTHORIZED, self.fixture("error-401.json"))),
        }
    }
}

fn json(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn token(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let behavior = state.lock().token_behavior;
    if behavior == Behavior::Hang {
        return state.hang().await;
    }
    if let Some(response) = state.misbehave(behavior) {
        return response;
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    if field("grant_type") != Some("client_credentials") {
        return json(StatusCode::BAD_REQUEST, serde_json::json!({"error": "unsupported_grant_type"}));
    }
    if field("client_id") != Some(CLIENT_ID) || field("client_secret") != Some(CLIENT_SECRET) {
        return json(StatusCode::UNAUTHORIZED, state.fixture("token-invalid-client.json"));
    }

    let mut mutable = state.lock();
    mutable.issued += 1;
    let access_token = format!("sim-access-token-{}-{}", mutable.issued, std::process::id());
    let lifetime = mutable.token_lifetime_secs;
    mutable.tokens.insert(
        access_token.clone(),
        IssuedToken { issued_at: Instant::now(), lifetime: Duration::from_secs(lifetime), revoked: false },
    );
    drop(mutable);
    let mut answer = state.fixture("token.json");
    answer["access_token"] = Value::from(access_token);
    answer["expires_in"] = Value::from(lifetime);
    json(StatusCode::OK, answer)
}

async fn inventory(
    State(state): State<Arc<SimState>>,
    UrlPath(version): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    state.inventory_requests.fetch_add(1, Ordering::SeqCst);
    let query = query.unwrap_or_default();
    let mut filter = None;
    let mut sections = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "filter" => filter = Some(value.into_owned()),
            "section" => sections.push(value.into_owned()),
            _ => {}
        }
    }
    let behavior = {
        let mut mutable = state.lock();
        mutable.lookups.push(RecordedLookup {
            api_version: version.clone(),
            filter: filter.clone(),
            sections: sections.clone(),
        });
        mutable.inventory_behavior
    };
    if behavior == Behavior::Hang {
        return state.hang().await;
    }
    if let Some(response) = state.misbehave(behavior) {
        return response;
    }

    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = bearer.is_some_and(|token| {
        state.lock().tokens.get(token).is_some_and(|t| !t.revoked && t.issued_at.elapsed() < t.lifetime)
    });
    if !token_ok {
        return json(StatusCode::UNAUTHORIZED, state.fixture("error-401.json"));
    }
    // Jamf Pro has served this endpoint as v1 (deprecated), v2, v3 and v4.
    if !matches!(version.as_str(), "v1" | "v2" | "v3" | "v4") {
        return StatusCode::NOT_FOUND.into_response();
    }
    // Only the exact form the CA sends is understood; anything else is an invalid filter.
    let serial = filter
        .as_deref()
        .and_then(|f| f.strip_prefix("hardware.serialNumber==\""))
        .and_then(|f| f.strip_suffix('"'))
        .filter(|s| !s.contains(['"', '\\', '*']));
    let Some(serial) = serial else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"httpStatus": 400, "errors": [{"code": "INVALID_RSQL_FILTER",
                "description": "Invalid filter", "id": "0", "field": "filter"}]}),
        );
    };
    let fixture =
        state.lock().serial_to_fixture.get(serial).cloned().unwrap_or_else(|| EMPTY_FIXTURE.to_owned());
    json(StatusCode::OK, state.fixture(&fixture))
}

fn load_fixtures(dir: &Path) -> io::Result<HashMap<String, Value>> {
    let mut fixtures = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(".json") {
            continue;
        }
        let body: Value = serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}")))?;
        fixtures.insert(name, body);
    }
    for required in
        ["token.json", "token-invalid-client.json", "error-401.json", "error-500.json", EMPTY_FIXTURE]
    {
        if !fixtures.contains_key(required) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{required} missing in {}", dir.display()),
            ));
        }
    }
    Ok(fixtures)
}

/// TLS in front of the TCP listener. A failed handshake drops that connection only.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = axum::serve::Listener::accept(&mut self.tcp).await;
            // Handshakes run one at a time; a stalled client must not stop the others for long.
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!("jamf simulator: tls handshake failed: {e}"),
                Err(_) => tracing::debug!("jamf simulator: tls handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A clock that moves only when told, for token lifetimes and cache TTLs.
#[derive(Debug)]
pub(crate) struct ManualMonotonicClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualMonotonicClock {
    /// A clock at the current instant.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { start: Instant::now(), offset: Mutex::new(Duration::ZERO) })
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl MonotonicClock for ManualMonotonicClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
