//! The OpenID Connect provider against an in-process CA: discovery and the ID token checked
//! against OpenID Connect Core and Discovery, the authorization endpoint's refusals (a page
//! or a redirect, as RFC 6749 §4.1.2.1 says), the token endpoint's (each with the error the
//! specifications name), binding at redemption, userinfo, and events for the client.

use std::collections::HashMap;

use base64::Engine as _;
use ca_client::protocol::{EventType, IssuedCertificate, Outcome};
use ca_server::clock::Clock as _;
use ca_server::config::{Config, OidcClientSettings, SubjectType};
use ca_server::mdm::{MdmError, MdmVerdict, NotManagedReason};
use ca_server::oidc::{ACR, AUTHORIZE_PATH, DISCOVERY_PATH, TOKEN_PATH, USERINFO_PATH};
use ca_server::secret::SecretSource;
use rcgen::KeyPair;
use sha2::Digest as _;

use crate::harness::{Device, TestCa, events, p256};

const IDP: &str = "okta";
const DEVICE_IDP: &str = "device-idp";
const PAGE_IDP: &str = "page-idp";
/// A client whose `login_hint` is checked, never bound to (`bind_login_hint = false`).
const HINT_ONLY_IDP: &str = "hint-only-idp";
const CALLBACK: &str = "https://idp.example.com/oauth2/v1/authorize/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn secret(id: &str) -> String {
    format!("{id}-secret-{}", "s".repeat(32))
}

/// A CA with four clients: `okta` (subject = user), `device-idp` (subject = the UDID),
/// `page-idp` (shows the refusal page) and `hint-only-idp` (does not bind to its hint),
/// their secrets in files of `dir`.
async fn start(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> TestCa {
    let mut clients = Vec::new();
    for (id, subject, refusal_page, bind_login_hint) in [
        (IDP, SubjectType::User, false, true),
        (DEVICE_IDP, SubjectType::Device, false, true),
        (PAGE_IDP, SubjectType::User, true, true),
        (HINT_ONLY_IDP, SubjectType::User, false, false),
    ] {
        let path = dir.join(id);
        ca_server::fsutil::write_atomic(&path, secret(id).as_bytes(), ca_server::fsutil::Visibility::Private)
            .expect("secret file");
        clients.push(OidcClientSettings {
            id: id.into(),
            name: Some(format!("{id} display")),
            secret: SecretSource::file(path),
            redirect_uris: vec![CALLBACK.into(), "https://idp.example.com/other".into()],
            subject,
            refusal_page,
            bind_login_hint,
        });
    }
    TestCa::start_with(move |config| {
        config.oidc.clients = clients;
        config.server.learn_more_url = Some("https://help.example.com/device".into());
        tweak(config);
    })
    .await
}

struct Enrolled {
    issued: IssuedCertificate,
    key: KeyPair,
    device: Device,
}

async fn enroll(ca: &TestCa, n: u32) -> Enrolled {
    let device = Device::new(n);
    let key = p256();
    let issued = ca.enroll_ok(&device.request(&key)).await;
    Enrolled { issued, key, device }
}

/// A browser: presents the certificate, follows no redirect.
fn browser(ca: &TestCa, enrolled: Option<&Enrolled>) -> reqwest::Client {
    let config = ca.tls_config(enrolled.map(|e| (e.issued.certificate.as_str(), &e.key)));
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn authorize_url(ca: &TestCa, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&ca.url(AUTHORIZE_PATH)).expect("url");
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

fn standard<'a>(client_id: &'a str, login_hint: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", CALLBACK),
        ("scope", "openid profile"),
        ("state", "state-1"),
        ("nonce", "nonce-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    if let Some(hint) = login_hint {
        params.push(("login_hint", hint));
    }
    params
}

/// What the authorization endpoint answered: the redirect's query, or a page.
#[derive(Debug)]
enum Answer {
    Redirect(String, HashMap<String, String>),
    Page(u16, String),
}

async fn authorize(ca: &TestCa, enrolled: Option<&Enrolled>, params: &[(&str, &str)]) -> Answer {
    let response = browser(ca, enrolled).get(authorize_url(ca, params)).send().await.expect("authorize");
    let status = response.status().as_u16();
    if status == 303 {
        let location = response.headers()[reqwest::header::LOCATION].to_str().expect("location").to_owned();
        let url = url::Url::parse(&location).expect("location url");
        let query = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let base = format!("{}{}", url.origin().ascii_serialization(), url.path());
        return Answer::Redirect(base, query);
    }
    Answer::Page(status, response.text().await.expect("page"))
}

async fn code(ca: &TestCa, enrolled: &Enrolled, client_id: &str, hint: Option<&str>) -> String {
    match authorize(ca, Some(enrolled), &standard(client_id, hint)).await {
        Answer::Redirect(base, query) => {
            assert_eq!(base, CALLBACK);
            assert_eq!(query.get("state").map(String::as_str), Some("state-1"));
            assert_eq!(query.get("iss"), Some(&ca.env.config.server.cert_auth_domain), "RFC 9207 iss");
            query.get("code").cloned().unwrap_or_else(|| panic!("a code: {query:?}"))
        }
        other => panic!("authorize: {other:?}"),
    }
}

enum Auth<'a> {
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
}

async fn redeem(
    ca: &TestCa,
    auth: Auth<'_>,
    code: &str,
    verifier: &str,
    redirect: &str,
) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ];
    let mut request = ca.anonymous().post(ca.url(TOKEN_PATH));
    match auth {
        Auth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
        Auth::Post(id, secret) => {
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
    }
    let response = request.form(&form).send().await.expect("token");
    let status = response.status().as_u16();
    // RFC 6749 §5.1: tokens and errors alike are never cached.
    assert_eq!(response.headers()[reqwest::header::CACHE_CONTROL], "no-store", "{status}");
    assert_eq!(response.headers()[reqwest::header::PRAGMA], "no-cache", "{status}");
    if status == 401 {
        assert!(response.headers().contains_key(reqwest::header::WWW_AUTHENTICATE), "401 names its scheme");
    }
    let body: serde_json::Value = response.json().await.expect("token json");
    (status, body)
}

fn assert_oauth_error(answer: &(u16, serde_json::Value), status: u16, error: &str, case: &str) {
    assert_eq!((answer.0, answer.1["error"].as_str()), (status, Some(error)), "{case}: {}", answer.1);
    assert!(answer.1["error_description"].is_string(), "{case}: a description");
}

fn assert_denied(answer: &Answer, contract_code: &str, case: &str) {
    assert_refused_as(answer, "access_denied", contract_code, case);
}

/// A refusal sent back with `error` whose description names the contract's `contract_code`.
fn assert_refused_as(answer: &Answer, error: &str, contract_code: &str, case: &str) {
    match answer {
        Answer::Redirect(base, query) => {
            assert_eq!(base, CALLBACK, "{case}");
            assert_eq!(query.get("error").map(String::as_str), Some(error), "{case}: {query:?}");
            assert!(query.get("iss").is_some_and(|iss| iss.starts_with("https://127.0.0.1:")), "{case}: iss");
            assert!(
                query.get("error_description").is_some_and(|d| d.starts_with(&format!("{contract_code}: "))),
                "{case}: the description names {contract_code}: {query:?}"
            );
            assert_eq!(query.get("state").map(String::as_str), Some("state-1"), "{case}");
            assert!(!query.contains_key("code"), "{case}");
        }
        other => panic!("{case}: expected a redirect with access_denied, got {other:?}"),
    }
}

/// Verifies an ID token against the published JWKS as any client would, and returns its
/// claims (OpenID Connect Core §3.1.3.7: signature, iss, aud, exp).
async fn verify_id_token(
    ca: &TestCa,
    discovery: &serde_json::Value,
    token: &str,
    aud: &str,
) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet = ca
        .anonymous()
        .get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the signing key is in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[discovery["issuer"].as_str().expect("issuer")]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("the id token verifies")
    .claims
}

#[tokio::test]
async fn ok_discovery_sign_in_binding_and_userinfo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = start(dir.path(), |_| {}).await;
    let issuer = ca.env.config.server.cert_auth_domain.clone();

    // Discovery 1.0 §3 and §4.3: required fields, the issuer exactly the URL's prefix.
    let discovery: serde_json::Value = ca
        .anonymous()
        .get(ca.url(DISCOVERY_PATH))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(ca.url(DISCOVERY_PATH), format!("{issuer}{DISCOVERY_PATH}"));
    for field in ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"] {
        assert!(
            discovery[field].as_str().is_some_and(|u| u.starts_with(&format!("{issuer}/"))),
            "{field}: {discovery}"
        );
    }
    for (field, want) in [
        ("response_types_supported", "code"),
        ("subject_types_supported", "public"),
        ("id_token_signing_alg_values_supported", "ES256"),
        ("code_challenge_methods_supported", "S256"),
        ("token_endpoint_auth_methods_supported", "client_secret_basic"),
        ("token_endpoint_auth_methods_supported", "client_secret_post"),
        ("claims_supported", "device"),
        ("acr_values_supported", ACR),
    ] {
        assert!(
            discovery[field].as_array().is_some_and(|a| a.iter().any(|v| v == want)),
            "{field} has {want}"
        );
    }
    assert_eq!(discovery["request_uri_parameter_supported"], false, "its default is true; we support none");
    assert_eq!(discovery["authorization_response_iss_parameter_supported"], true);

    // An unbound certificate: authorization writes nothing but the code; redemption binds
    // it to the login_hint user.
    let enrolled = enroll(&ca, 1).await;
    let code = code(&ca, &enrolled, IDP, Some("carol")).await;
    let record = ca.device_record(&enrolled.device.udid).await;
    assert_eq!(record.certificates[0].bound_user, None, "authorization does not bind");
    let before = ca.clock.now();
    ca.clock.advance(chrono::Duration::seconds(5));
    let (status, tokens) = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let record = ca.device_record(&enrolled.device.udid).await;
    assert_eq!(record.certificates[0].bound_user.as_deref(), Some("carol"), "bound at redemption");

    // Core §2 and §3.1.3.7.
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let claims = verify_id_token(&ca, &discovery, id_token, IDP).await;
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["amr"], serde_json::json!(["mtls"]));
    assert_eq!(claims["acr"], ACR);
    assert_eq!(
        claims["auth_time"].as_i64(),
        Some(before.timestamp()),
        "auth_time is the mTLS authentication"
    );
    assert!(claims["exp"].as_i64() > claims["iat"].as_i64());
    assert_eq!(
        tokens["expires_in"].as_i64(),
        claims["exp"].as_i64().zip(claims["iat"].as_i64()).map(|(exp, iat)| exp - iat)
    );
    assert_eq!(claims["device"]["udid"], enrolled.device.udid.as_str());
    assert_eq!(claims["device"]["serial_number"], enrolled.device.serial.as_str());
    assert_eq!(claims["device"]["certificate_serial"], enrolled.issued.serial_number.as_str());
    let access = tokens["access_token"].as_str().expect("access_token");
    let digest = sha2::Sha256::digest(access.as_bytes());
    assert_eq!(claims["at_hash"], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]));

    // Userinfo: the same claims for the access token; not for the ID token.
    let info: serde_json::Value = ca
        .anonymous()
        .get(ca.url(USERINFO_PATH))
        .bearer_auth(access)
        .send()
        .await
        .expect("userinfo")
        .json()
        .await
        .expect("userinfo json");
    assert_eq!(info["sub"], "carol");
    assert_eq!(info["device"], claims["device"]);
    let refused =
        ca.anonymous().get(ca.url(USERINFO_PATH)).bearer_auth(id_token).send().await.expect("userinfo");
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers()[reqwest::header::WWW_AUTHENTICATE].to_str().expect("h").contains("invalid_token")
    );

    // The client whose subject is the device, with client_secret_post.
    let code = self::code(&ca, &enrolled, DEVICE_IDP, Some("carol")).await;
    let (status, tokens) =
        redeem(&ca, Auth::Post(DEVICE_IDP, &secret(DEVICE_IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verify_id_token(&ca, &discovery, tokens["id_token"].as_str().expect("id"), DEVICE_IDP).await;
    assert_eq!(claims["sub"], enrolled.device.udid.as_str());
    assert_eq!(claims["preferred_username"], "carol");

    // Every sign-in is an event for its client.
    let signed_in: Vec<_> = events(&ca)
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::Authenticate && e.outcome == Outcome::Success)
        .collect();
    let clients: Vec<_> = signed_in.iter().map(|e| e.client_id.as_deref()).collect();
    assert_eq!(clients, [Some(IDP), Some(DEVICE_IDP)], "{signed_in:?}");
    assert_eq!(signed_in[0].user.as_deref(), Some("carol"));
}

#[tokio::test]
async fn fail_authorization_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = start(dir.path(), |_| {}).await;
    let enrolled = enroll(&ca, 2).await;

    // Never a redirect to an unregistered place.
    let with = |name: &'static str, value: &'static str| {
        let mut params: Vec<(&str, &str)> =
            standard(IDP, None).into_iter().filter(|(k, _)| *k != name).collect();
        if !value.is_empty() {
            params.push((name, value));
        }
        params
    };
    let pages = [
        ("fail/unknown-client", with("client_id", "nobody")),
        ("fail/no-client", with("client_id", "")),
        ("fail/unregistered-redirect", with("redirect_uri", "https://evil.example.com/callback")),
        (
            "fail/redirect-prefix",
            with("redirect_uri", "https://idp.example.com/oauth2/v1/authorize/callback/x"),
        ),
        ("fail/no-redirect", with("redirect_uri", "")),
    ];
    for (case, params) in pages {
        match authorize(&ca, Some(&enrolled), &params).await {
            Answer::Page(400, page) => assert!(
                page.contains("Sign-in request refused") && page.contains("https://help.example.com/device"),
                "{case}: the page, with the Learn more link: {page}"
            ),
            other => panic!("{case}: expected an error page, got {other:?}"),
        }
    }
    let mut repeated = standard(IDP, None);
    repeated.push(("redirect_uri", "https://evil.example.com/callback"));
    assert!(
        matches!(authorize(&ca, Some(&enrolled), &repeated).await, Answer::Page(400, _)),
        "a repeated redirect_uri"
    );

    // Everything else goes back to the client with the error the specifications name.
    let redirects = [
        ("fail/no-pkce", with("code_challenge", ""), "invalid_request"),
        ("fail/plain-pkce", with("code_challenge_method", "plain"), "invalid_request"),
        ("fail/no-pkce-method", with("code_challenge_method", ""), "invalid_request"),
        ("fail/bad-challenge", with("code_challenge", "short"), "invalid_request"),
        ("fail/no-openid", with("scope", "profile email"), "invalid_scope"),
        ("fail/implicit", with("response_type", "id_token"), "unsupported_response_type"),
        ("fail/no-response-type", with("response_type", ""), "invalid_request"),
        ("fail/form-post", with("response_mode", "form_post"), "invalid_request"),
        ("fail/request-object", with("request", "eyJhbGciOiJub25lIn0.e30."), "request_not_supported"),
        ("fail/request-uri", with("request_uri", "https://idp.example.com/r/1"), "request_uri_not_supported"),
        ("fail/bad-login-hint", with("login_hint", "al\nice"), "invalid_request"),
        ("fail/prompt-none-and-login", with("prompt", "none login"), "invalid_request"),
    ];
    for (case, params, error) in redirects {
        match authorize(&ca, Some(&enrolled), &params).await {
            Answer::Redirect(base, query) => {
                assert_eq!(base, CALLBACK, "{case}");
                assert_eq!(query.get("error").map(String::as_str), Some(error), "{case}: {query:?}");
                assert_eq!(query.get("state").map(String::as_str), Some("state-1"), "{case}");
                assert_eq!(
                    query.get("iss"),
                    Some(&ca.env.config.server.cert_auth_domain),
                    "{case}: RFC 9207"
                );
                assert!(!query.contains_key("code"), "{case}");
            }
            other => panic!("{case}: expected a redirect, got {other:?}"),
        }
    }

    // A browser with no certificate is refused at once, not left waiting, and writes nothing.
    let before = events(&ca).await.len();
    let answer = authorize(&ca, None, &standard(IDP, Some("mallory"))).await;
    assert_denied(&answer, "client_certificate_required", "fail/no-certificate");
    assert_eq!(events(&ca).await.len(), before, "a browser without a certificate writes no event");

    // What another site makes the browser send is no sign-in; nor is a HEAD probe.
    for (header, value) in
        [("sec-fetch-dest", "image"), ("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "iframe")]
    {
        let response = browser(&ca, Some(&enrolled))
            .get(authorize_url(&ca, &standard(IDP, None)))
            .header(header, value)
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), 400, "{header}: {value}");
    }
    let head = browser(&ca, Some(&enrolled)).head(authorize_url(&ca, &standard(IDP, None))).send().await;
    assert_eq!(head.expect("head").status(), 405);
    let navigation = browser(&ca, Some(&enrolled))
        .get(authorize_url(&ca, &standard(IDP, None)))
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .expect("authorize");
    assert_eq!(navigation.status(), 303, "a navigation is one");
    assert_eq!(events(&ca).await.len(), before, "an authorization writes no event, only its code");

    // POST works like GET (Core §3.1.2.1).
    let response = browser(&ca, Some(&enrolled))
        .post(ca.url(AUTHORIZE_PATH))
        .form(&standard(IDP, None))
        .send()
        .await
        .expect("post authorize");
    assert_eq!(response.status(), 303);
    assert!(response.headers()[reqwest::header::LOCATION].to_str().expect("l").contains("code="));
}

#[tokio::test]
async fn fail_token_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = start(dir.path(), |_| {}).await;
    let enrolled = enroll(&ca, 3).await;

    // A wrong secret: invalid_client, and the code is not spent.
    let code = code(&ca, &enrolled, IDP, None).await;
    let wrong =
        redeem(&ca, Auth::Basic(IDP, "not-the-secret-000000000000000000000"), &code, VERIFIER, CALLBACK)
            .await;
    assert_oauth_error(&wrong, 401, "invalid_client", "fail/wrong-secret");
    let wrong = redeem(&ca, Auth::Post("nobody", &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&wrong, 401, "invalid_client", "fail/unknown-client");
    let ok = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(ok.0, 200, "the code survives a failed client authentication: {}", ok.1);
    let access = ok.1["access_token"].as_str().expect("access").to_owned();
    let userinfo = |token: String| {
        let ca = &ca;
        async move {
            ca.anonymous().get(ca.url(USERINFO_PATH)).bearer_auth(token).send().await.expect("ui").status()
        }
    };
    assert_eq!(userinfo(access.clone()).await, 200);

    // Replayed: refused, and the tokens issued for the code stop working.
    let replay = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&replay, 400, "invalid_grant", "fail/replayed-code");
    assert_eq!(userinfo(access).await, 401, "a replay revokes the grant's access token");

    // Another client's code: unknown to it, and left to its client.
    let code = self::code(&ca, &enrolled, IDP, None).await;
    let other = redeem(&ca, Auth::Basic(DEVICE_IDP, &secret(DEVICE_IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&other, 400, "invalid_grant", "fail/other-client");
    let own = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(own.0, 200, "another client neither spends nor revokes a code: {}", own.1);

    // Each of these spends its code.
    let cases: [(&str, Auth<'_>, &str, &str); 3] = [
        (
            "fail/wrong-verifier",
            Auth::Basic(IDP, &secret(IDP)),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            CALLBACK,
        ),
        ("fail/other-redirect", Auth::Basic(IDP, &secret(IDP)), VERIFIER, "https://idp.example.com/other"),
        ("fail/unknown-code", Auth::Basic(IDP, &secret(IDP)), VERIFIER, CALLBACK),
    ];
    for (case, auth, verifier, redirect) in cases {
        let code = if case == "fail/unknown-code" {
            "x".repeat(43)
        } else {
            self::code(&ca, &enrolled, IDP, None).await
        };
        let answer = redeem(&ca, auth, &code, verifier, redirect).await;
        assert_oauth_error(&answer, 400, "invalid_grant", case);
        let again = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
        assert_oauth_error(&again, 400, "invalid_grant", &format!("{case} spent the code"));
    }

    // Expired: valid for less than 60 seconds.
    let code = self::code(&ca, &enrolled, IDP, None).await;
    ca.clock.advance(chrono::Duration::seconds(60));
    let expired = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&expired, 400, "invalid_grant", "fail/expired-code");
    assert!(expired.1["error_description"].as_str().is_some_and(|d| d.contains("expired")), "{}", expired.1);

    // Malformed requests spend nothing: the code redeems afterwards.
    let code = self::code(&ca, &enrolled, IDP, None).await;
    let response = ca
        .anonymous()
        .post(ca.url(TOKEN_PATH))
        .basic_auth(IDP, Some(secret(IDP)))
        .form(&[("grant_type", "refresh_token"), ("code", code.as_str()), ("refresh_token", "x")])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
    let response = ca
        .anonymous()
        .post(ca.url(TOKEN_PATH))
        .basic_auth(IDP, Some(secret(IDP)))
        .json(&serde_json::json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 400, "JSON is not a token request");
    let short = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, "short", CALLBACK).await;
    assert_oauth_error(&short, 400, "invalid_request", "fail/malformed-verifier");
    let ok = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(ok.0, 200, "malformed requests did not spend the code: {}", ok.1);

    // Read-only: no sign-in, and the clients are told to come back.
    ca.ca.set_read_only(true);
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, None)).await;
    assert_refused_as(&answer, "temporarily_unavailable", "read_only", "fail/read-only-authorize");
    ca.ca.set_read_only(false);
    let code = self::code(&ca, &enrolled, IDP, None).await;
    ca.ca.set_read_only(true);
    let answer = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&answer, 503, "temporarily_unavailable", "fail/read-only-token");
    ca.ca.set_read_only(false);
    let ok = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(ok.0, 200, "read-only mode spent no code: {}", ok.1);
}

#[tokio::test]
async fn fail_devices_that_are_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = start(dir.path(), |_| {}).await;
    let enrolled = enroll(&ca, 4).await;

    // Bound to alice at a first sign-in; a login_hint for bob is refused at authorization.
    let code = code(&ca, &enrolled, IDP, Some("alice")).await;
    assert_eq!(redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await.0, 200);
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, Some("bob"))).await;
    assert_denied(&answer, "certificate_bound_to_other_user", "fail/login-hint-of-another-user");

    // A client that does not vouch for its hints: the first use binds to the enrolling user,
    // so a hint for anyone else is refused, and the enrolling user's is welcome.
    let fresh = enroll(&ca, 6).await;
    let answer = authorize(&ca, Some(&fresh), &standard(HINT_ONLY_IDP, Some("mallory"))).await;
    assert_denied(&answer, "certificate_bound_to_other_user", "fail/unverified-hint");
    let code = self::code(&ca, &fresh, HINT_ONLY_IDP, Some(&fresh.device.user)).await;
    let answer =
        redeem(&ca, Auth::Basic(HINT_ONLY_IDP, &secret(HINT_ONLY_IDP)), &code, VERIFIER, CALLBACK).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    let record = ca.device_record(&fresh.device.udid).await;
    assert_eq!(record.certificates[0].bound_user.as_deref(), Some(fresh.device.user.as_str()));

    // An unbound certificate whose code names carol, bound to dave in between (by the admin):
    // refused at redemption.
    let other = enroll(&ca, 5).await;
    let code = self::code(&ca, &other, IDP, Some("carol")).await;
    let bind = ca
        .anonymous()
        .post(ca.url(&format!("/api/v1/admin/certificates/{}/bind", other.issued.serial_number)))
        .bearer_auth(ca.admin_token())
        .json(&serde_json::json!({"user": "dave"}))
        .send()
        .await
        .expect("bind");
    assert_eq!(bind.status(), 200);
    let answer = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "fail/bound-before-redemption");
    assert!(
        answer.1["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("certificate_bound_to_other_user"))
    );

    // The MDM: no longer managed, or not reachable.
    ca.mdm.answer(&enrolled.device.serial, Ok(MdmVerdict::NotManaged(NotManagedReason::Unmanaged)));
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, Some("alice"))).await;
    assert_denied(&answer, "device_not_managed", "fail/unmanaged");
    ca.mdm.answer(&enrolled.device.serial, Err(MdmError::unavailable("down")));
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, Some("alice"))).await;
    assert_refused_as(&answer, "temporarily_unavailable", "mdm_unavailable", "fail/mdm-down");
    ca.mdm.answer(&enrolled.device.serial, Ok(MdmVerdict::Managed));

    // Revoked: refused, with the page for the client that asks for it; a token issued before
    // stops working at userinfo.
    let code = self::code(&ca, &enrolled, IDP, Some("alice")).await;
    let (_, tokens) = redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await;
    let revoked = ca.admin_post(&format!("/api/v1/admin/devices/{}/revoke", enrolled.device.udid)).await;
    assert_eq!(revoked.status(), 200);
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, Some("alice"))).await;
    assert_denied(&answer, "certificate_revoked", "fail/revoked");
    match authorize(&ca, Some(&enrolled), &standard(PAGE_IDP, Some("alice"))).await {
        Answer::Page(403, page) => {
            assert!(
                page.contains("Security requirements") && page.contains("https://help.example.com/device"),
                "{page}"
            );
            assert!(page.contains("id=\"continue\"") && page.contains("error=access_denied"), "{page}");
            assert!(page.contains("Back to page-idp display"), "{page}");
        }
        other => panic!("the client that asks for the page gets it: {other:?}"),
    }
    let mut quiet = standard(PAGE_IDP, Some("alice"));
    quiet.push(("prompt", "none"));
    assert_denied(
        &authorize(&ca, Some(&enrolled), &quiet).await,
        "certificate_revoked",
        "ok/prompt-none-no-page",
    );
    let info = ca
        .anonymous()
        .get(ca.url(USERINFO_PATH))
        .bearer_auth(tokens["access_token"].as_str().expect("access"))
        .send()
        .await
        .expect("userinfo");
    assert_eq!(info.status(), 401, "userinfo is live");

    // Each refusal of a known certificate is a failed authentication for its client.
    let failures: Vec<_> = events(&ca)
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::Authenticate && e.outcome == Outcome::Failure)
        .map(|e| (e.reason.unwrap_or_default(), e.client_id.unwrap_or_default()))
        .collect();
    for want in
        ["certificate_bound_to_other_user", "device_not_managed", "mdm_unavailable", "certificate_revoked"]
    {
        assert!(
            failures.iter().any(|(r, c)| r == want && c == IDP),
            "a {want} event for {IDP}: {failures:?}"
        );
    }
}

#[tokio::test]
async fn ok_no_clients_no_provider() {
    let ca = TestCa::start().await;
    let response = ca.anonymous().get(ca.url(DISCOVERY_PATH)).send().await.expect("discovery");
    assert_eq!(response.status(), 404);
    assert!(!ca.env.data_dir.join(ca_server::oidc::GENERATED_KEY_FILE).exists(), "no key without clients");
}

#[tokio::test]
async fn ok_without_asking_the_mdm_the_last_answer_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = start(dir.path(), |config| config.oidc.ask_mdm = false).await;
    let enrolled = enroll(&ca, 7).await;

    // Jamf Pro has given up on the device, but nobody asked since the enrollment: sign-in
    // goes on (what `ask_mdm = false` buys: sign-ins that survive an MDM outage).
    ca.mdm.answer(&enrolled.device.serial, Ok(MdmVerdict::NotManaged(NotManagedReason::Unmanaged)));
    let code = code(&ca, &enrolled, IDP, None).await;
    assert_eq!(redeem(&ca, Auth::Basic(IDP, &secret(IDP)), &code, VERIFIER, CALLBACK).await.0, 200);

    // Its next renewal asks, and from then on sign-in is refused.
    let renew = ca
        .with_identity(&enrolled.issued.certificate, &enrolled.key)
        .post(ca.url(ca_client::protocol::paths::RENEW))
        .json(&ca_client::protocol::RenewRequest {
            client_version: "test".into(),
            csr: crate::harness::csr(&p256()),
        })
        .send()
        .await
        .expect("renew");
    assert_eq!(renew.status(), 403);
    let answer = authorize(&ca, Some(&enrolled), &standard(IDP, None)).await;
    assert_denied(&answer, "device_not_managed", "fail/last-answer-unmanaged");
}
