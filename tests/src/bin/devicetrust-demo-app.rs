//! `devicetrust-demo-app`: a tiny application behind a reverse proxy that consults the
//! DeviceTrust CA (nginx `auth_request`, Caddy `forward_auth`, ...).
//!
//! It trusts nothing the proxy says except the signed device assertion: it reads the
//! `X-DeviceTrust-Assertion` header, verifies the JWT (ES256) against the CA's JWKS, checks
//! `iss` and `aud`, and shows the device it names (`sub`, the UDID), the bound user and the
//! certificate serial. An assertion that is missing or does not verify gets a 401 page that
//! says why. It never parses a certificate: that is the point of the assertion.
//!
//! It listens on plain HTTP (the proxy in front terminates TLS), prints one JSON line
//! `{"url":"http://127.0.0.1:PORT"}` once it accepts connections, and runs until killed.
//! The end-to-end tests and the quick start use it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use ca_server::api::escape_html;
use clap::Parser;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

/// The header the proxy copies from the CA's answer.
const ASSERTION_HEADER: &str = "x-devicetrust-assertion";

/// An unknown `kid` refetches the JWKS (a key rotation), but not more often than this, so
/// that a stream of forged `kid`s cannot turn the app into a load generator against the CA.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// A demo application that admits requests carrying a valid DeviceTrust device assertion.
///
/// Put it behind a proxy that asks the CA's `/api/v1/relying-party/check` and copies the
/// `X-DeviceTrust-Assertion` header of the CA's answer into the request. It prints
/// `{"url":"http://127.0.0.1:PORT"}` once it listens, and runs until stopped.
#[derive(Debug, Parser)]
#[command(name = "devicetrust-demo-app", version, after_help = EXAMPLE)]
struct Args {
    /// Address to listen on (plain HTTP); port 0 picks a free port, printed in the ready line.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The CA's JWKS, e.g. `https://ca.example.com/.well-known/jwks.json` (or the CA's
    /// plain-HTTP listener). Fetched on the first request and again when a token names a key
    /// it does not hold.
    #[arg(long)]
    jwks_url: String,
    /// PEM roots trusted for an https JWKS URL (e.g. the dev CA's `caBundle`); without it,
    /// the system's roots.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// The expected `iss`: the CA's cert-auth domain, e.g. `https://certauth.example.com`.
    #[arg(long)]
    issuer: String,
    /// An accepted `aud`: the relying party's name in the CA's configuration. Repeat it to
    /// sit behind several relying parties.
    #[arg(long = "audience", required = true)]
    audiences: Vec<String>,
    /// Where the refusal page's "Learn more" link points.
    #[arg(long)]
    learn_more: Option<String>,
}

const EXAMPLE: &str = "Example (behind nginx, for the relying party named wiki):
  devicetrust-demo-app --listen 127.0.0.1:8080 \\
    --jwks-url https://127.0.0.1:8443/.well-known/jwks.json --ca-bundle data/tls-ca.pem \\
    --issuer https://127.0.0.1:8443 --audience wiki

Exit codes: 1 when it cannot start (bad flags exit 2).";

#[derive(Debug)]
struct App {
    http: reqwest::Client,
    jwks_url: String,
    validation: Validation,
    learn_more: Option<String>,
    jwks: Mutex<Option<(JwkSet, Instant)>>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("devicetrust-demo-app: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let bundle = match &args.ca_bundle {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    let tls = ca_client::tls::client_config(bundle.as_deref(), None).context("cannot configure tls")?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the http client")?;
    if args.audiences.iter().any(|a| a.is_empty()) {
        bail!("an --audience must not be empty");
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[args.issuer.as_str()]);
    validation.set_audience(&args.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let app = Arc::new(App {
        http,
        jwks_url: args.jwks_url,
        validation,
        learn_more: args.learn_more,
        jwks: Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr().context("cannot read the bound address")?);
    println!("{}", serde_json::json!({ "url": url }));
    let router = axum::Router::new().fallback(page).with_state(app);
    axum::serve(listener, router).await.context("the server stopped")
}

/// Every path: the verified device, or a 401 saying why not.
async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(token) = headers.get(ASSERTION_HEADER).and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty())
    else {
        return refused(&app, "the request carries no device assertion (X-DeviceTrust-Assertion)");
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    match app.verify(token).await {
        Ok(claims) if wants_json => admitted_json(&claims),
        Ok(claims) => admitted(&claims),
        Err(reason) => refused(&app, &reason),
    }
}

/// The verified claims as JSON (`Accept: application/json`), for scripts such as the quick
/// start.
fn admitted_json(claims: &serde_json::Value) -> Response {
    let body = serde_json::json!({
        "admitted": true,
        "assertionVerified": true,
        "udid": claims.get("sub"),
        "user": claims.get("user"),
        "certificateSerial": claims.get("cert_serial"),
        "deviceSerial": claims.get("device_serial"),
        "audience": claims.get("aud"),
        "expires": claims.get("exp"),
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

impl App {
    /// The verified claims, or why the token is not acceptable.
    async fn verify(&self, token: &str) -> Result<serde_json::Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let kid = header.kid.ok_or("the assertion names no key (kid)")?;
        let key = self.key(&kid).await?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.validation)
            .map_err(|e| format!("the assertion does not verify: {e}"))?;
        Ok(data.claims)
    }

    /// The JWKS key `kid`, fetching the set when it is not cached or does not hold `kid`.
    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        let mut cached = self.jwks.lock().await;
        let stale = match cached.as_ref() {
            None => true,
            Some((set, fetched)) => set.find(kid).is_none() && fetched.elapsed() >= JWKS_REFETCH_INTERVAL,
        };
        if stale {
            let set = self.fetch_jwks().await?;
            *cached = Some((set, Instant::now()));
        }
        let (set, _) = cached.as_ref().ok_or("no key set")?;
        let jwk = set.find(kid).ok_or_else(|| format!("the CA's key set holds no key {kid:?}"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| format!("the CA's key {kid:?} is unusable: {e}"))
    }

    async fn fetch_jwks(&self) -> Result<JwkSet, String> {
        let fail = |e: reqwest::Error| format!("cannot fetch the CA's key set from {}: {e}", self.jwks_url);
        let response = self.http.get(&self.jwks_url).send().await.map_err(fail)?;
        let response = response.error_for_status().map_err(fail)?;
        response.json::<JwkSet>().await.map_err(fail)
    }
}

fn admitted(claims: &serde_json::Value) -> Response {
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(escape_html);
    let udid = text("sub").unwrap_or_default();
    let user = text("user").unwrap_or_else(|| "(none: the certificate is not bound to a user)".to_owned());
    let rows = [
        ("Device UDID", udid.clone()),
        ("User", user),
        ("Certificate serial", text("cert_serial").unwrap_or_default()),
        ("Device serial", text("device_serial").unwrap_or_default()),
        ("Audience", claims.get("aud").map(|v| escape_html(&v.to_string())).unwrap_or_default()),
        ("Assertion expires (Unix time)", claims.get("exp").map(|v| v.to_string()).unwrap_or_default()),
    ];
    let rows: String =
        rows.iter().map(|(k, v)| format!("<tr><th>{k}</th><td>{v}</td></tr>\n")).collect::<String>();
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>DeviceTrust demo: admitted</title>\
         {STYLE}</head><body>\n<h1>Admitted: a managed device</h1>\n\
         <p id=\"verified-udid\" data-udid=\"{udid}\">Verified device assertion for <b>{udid}</b>.</p>\n\
         <table>\n{rows}</table>\n\
         <p class=\"note\">The signature, issuer, audience and lifetime were checked against the CA's \
         published keys; nothing else the proxy sent was trusted.</p>\n</body></html>\n"
    );
    let mut response = Html(body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn refused(app: &App, reason: &str) -> Response {
    let learn_more = app
        .learn_more
        .as_deref()
        .map(|url| format!("<p><a href=\"{}\">Learn more</a></p>\n", escape_html(url)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>DeviceTrust demo: refused</title>\
         {STYLE}</head><body>\n<h1>Security requirements</h1>\n\
         <p>This app is only for managed devices, and this request did not prove it is one.</p>\n\
         <p id=\"reason\">{}</p>\n{learn_more}</body></html>\n",
        escape_html(reason)
    );
    let mut response = (StatusCode::UNAUTHORIZED, Html(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

const STYLE: &str = "<style>body{font-family:system-ui,sans-serif;margin:3em auto;max-width:44em;color:#222}\
th{text-align:left;padding-right:1.5em;font-weight:600}td{font-family:ui-monospace,monospace}\
.note{color:#666;font-size:90%}</style>";
