//! The OpenID Connect device factor end to end: `devicetrust-ca dev --oidc-redirect-uri`, the
//! agent enrolled in a temporary home with the managed policy it writes, headless Chromium,
//! and a relying party built on panva's certified `openid-client` (Node). Chromium goes
//! through the whole chain: relying party → authorize on the CA (mutual TLS, no picker) →
//! callback → token exchange (both client authentication methods) → userinfo; the page
//! shows the device claim of the ID token the library verified, and `jose` verifies the same
//! token against the JWKS once more. Then the refusals a browser sees: a redirect URI the
//! client did not register (a page, never a redirect), a `login_hint` for another user than
//! the bound one, and, after the admin revokes the device, `access_denied`.
//!
//! Needs root (the managed policy lives under `/etc`), `chromium`, `certutil`, `node` and
//! `tests/js/node_modules` (`openid-client`, `jose`); `scripts/test.sh` installs them.

#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

use ca_client::protocol::{EventType, Outcome};
use testkit::{HANG_LIMIT, run_bounded};
use tests::harness::agent::AgentHome;
use tests::harness::browser::{PageLoad, SystemPolicy, chromium_dump_dom, trust_tls_root};
use tests::harness::ca::{Admin, DevCa};
use tests::harness::oidc_rp::{ClientAuth, OidcRp};
use tests::harness::require_root;

const UDID: &str = "E2E-OIDC-0001";

#[test]
fn a_browser_signs_in_through_an_oidc_client_and_is_refused_once_revoked() {
    require_root("`install --system` writes Chromium's managed policy under /etc");
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    for module in ["openid-client", "jose"] {
        assert!(
            js.join("node_modules").join(module).is_dir(),
            "tests/js/node_modules/{module} is missing: run scripts/test.sh (or `npm ci --prefix tests/js`)"
        );
    }
    let rp = OidcRp::start();
    let ca = DevCa::start_with_args(&["--oidc-redirect-uri", &rp.callback()]);
    let issuer = ca.info().oidc_issuer.clone().expect("the ready line has oidcIssuer");
    assert_eq!(issuer, ca.info().cert_auth_domain, "the issuer is the cert-auth domain");
    let client_id = ca.info().oidc_client_id.clone().expect("oidcClientId");
    let secret = ca.info().oidc_client_secret.clone().expect("oidcClientSecret");
    let secret_file = ca.info().oidc_client_secret_file.clone().expect("oidcClientSecretFile");
    assert_eq!(std::fs::read_to_string(&secret_file).expect("the secret file").trim(), secret);
    assert_eq!(mode(&secret_file), 0o600, "the secret file is private");
    rp.configure(&issuer, &client_id, &secret, &ca.info().ca_bundle, ClientAuth::Basic);

    let agent = AgentHome::new(&ca, UDID);
    agent.run_with_token(&["enroll", "--token-stdin"], &ca.info().enrollment_token).expect_code(0);
    let serial = agent.current_identity().expect("an identity after enroll").serial();
    let policy = SystemPolicy::guard();
    policy.install(&agent).expect_code(0);
    trust_tls_root(&agent.nss_dir(), &ca.info().ca_bundle, "devicetrust-e2e-ca-tls-root");
    let admin = ca.admin();
    let user = admin.device(UDID).expect("the device is known").certificates[0].user.clone();

    // 1. Signed in, with client_secret_basic, then client_secret_post.
    let page = sign_in(&agent, &rp, &ca, &format!("/login?login_hint={user}"));
    let dom = page.dom();
    assert!(
        dom.contains("<h1>Signed in</h1>")
            && dom.contains(&format!("data-udid=\"{UDID}\""))
            && dom.contains(&format!("data-certificate-serial=\"{serial}\""))
            && dom.contains(&format!("<p id=\"sub\">{user}</p>")),
        "the relying party shows the device {UDID}, certificate {serial} and user {user} from a verified \
         ID token\n{}\n--- relying party\n{}\n--- CA\n{}",
        page.finished,
        rp.stderr(),
        ca.stderr()
    );
    let id_token = between(dom, "<pre id=\"id-token\">", "</pre>");
    let payload = verify_with_jose(&admin, &id_token, &issuer, &client_id);
    assert_eq!(payload["device"]["udid"], UDID, "{payload}");
    assert_eq!(payload["amr"], serde_json::json!(["mtls"]), "{payload}");
    assert!(payload["nonce"].is_string(), "the relying party sent a nonce: {payload}");
    let userinfo = between(dom, "<pre id=\"userinfo\">", "</pre>");
    assert!(userinfo.contains(UDID), "userinfo has the device: {userinfo}");

    rp.configure(&issuer, &client_id, &secret, &ca.info().ca_bundle, ClientAuth::Post);
    let page = sign_in(&agent, &rp, &ca, &format!("/login?login_hint={user}"));
    assert!(
        page.dom().contains("<h1>Signed in</h1>"),
        "client_secret_post\n{}\n{}",
        page.finished,
        rp.stderr()
    );

    // 2. A redirect URI the client did not register: the CA's page, the browser stays.
    let page = sign_in(&agent, &rp, &ca, "/login?redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Felsewhere");
    assert!(
        page.dom().contains("Sign-in request refused") && page.dom().contains("redirect_uri"),
        "an unregistered redirect URI gets the CA's error page\n{}",
        page.finished
    );

    // 3. The certificate is bound to the user now: a login_hint for someone else is refused.
    let page = sign_in(&agent, &rp, &ca, "/login?login_hint=mallory");
    assert_refused(&page, "certificate_bound_to_other_user", &rp);

    // 4. Revoked: access_denied, naming the contract's code.
    assert_eq!(admin.revoke_device(UDID), 1);
    let page = sign_in(&agent, &rp, &ca, &format!("/login?login_hint={user}"));
    assert_refused(&page, "certificate_revoked", &rp);

    // Each sign-in and refusal is an event for the client.
    let events = admin.events();
    let for_client = |outcome: Outcome, reason: Option<&str>| {
        events.iter().any(|e| {
            e.event_type == EventType::Authenticate
                && e.outcome == outcome
                && e.client_id.as_deref() == Some(client_id.as_str())
                && e.reason.as_deref() == reason
        })
    };
    assert!(for_client(Outcome::Success, None), "a sign-in event for {client_id}: {events:#?}");
    assert!(for_client(Outcome::Failure, Some("certificate_revoked")), "a refusal event: {events:#?}");
    assert!(for_client(Outcome::Failure, Some("certificate_bound_to_other_user")), "{events:#?}");
    drop(policy);
}

/// Loads a relying-party page in Chromium as the agent's user; it must not hang (a hang is
/// a certificate picker waiting for someone).
fn sign_in(agent: &AgentHome, rp: &OidcRp, ca: &DevCa, path: &str) -> PageLoad {
    let page = chromium_dump_dom(&agent.home, &format!("{}{path}", rp.url));
    assert!(
        !page.hung(),
        "Chromium hung on {path}: no certificate matched the policy for the cert-auth domain\n{}\n--- CA\n{}",
        page.finished,
        ca.stderr()
    );
    page
}

fn assert_refused(page: &PageLoad, code: &str, rp: &OidcRp) {
    let dom = page.dom();
    assert!(
        dom.contains("<h1>Refused</h1>")
            && dom.contains("data-error=\"access_denied\"")
            && dom.contains(&format!("{code}: ")),
        "the relying party was sent back with access_denied naming {code}\n{}\n--- relying party\n{}",
        page.finished,
        rp.stderr()
    );
}

/// Verifies the ID token with `jose` (a second JOSE library) against the JWKS the discovery
/// document names, fetched here and handed over as a file.
fn verify_with_jose(admin: &Admin, token: &str, issuer: &str, audience: &str) -> serde_json::Value {
    let discovery = admin.get(&format!("{issuer}/.well-known/openid-configuration"));
    assert_eq!(discovery.status, 200, "discovery: {}", discovery.body);
    let discovery: serde_json::Value = discovery.json();
    let jwks = admin.get(discovery["jwks_uri"].as_str().expect("jwks_uri"));
    assert_eq!(jwks.status, 200, "jwks: {}", jwks.body);
    let jwks = jwks.body;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks).expect("write the jwks");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/verify.mjs");
    let finished = run_bounded(
        Command::new("node").arg(script).arg(&file).arg(token).arg(issuer).arg(audience),
        None,
        HANG_LIMIT,
        "node verify.mjs",
    );
    finished.expect_code(0);
    let line: serde_json::Value =
        serde_json::from_str(finished.stdout.trim()).expect("verify.mjs prints JSON");
    line["payload"].clone()
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text.find(start).map(|i| i + start.len()).unwrap_or_else(|| panic!("{start} in {text}"));
    let to = text[from..].find(end).map(|i| from + i).unwrap_or_else(|| panic!("{end} after {start}"));
    // The page escapes what it shows; JWTs and JSON need only these back.
    text[from..to]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}
