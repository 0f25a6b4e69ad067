//! The authorization and token requests: their parameters, and every check that needs
//! neither the certificate nor the store, in the order the specifications give.

use std::collections::BTreeMap;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Client, ErrorCode, OAuthError, Provider};

/// Most parameters a request may carry; the body limit bounds their size.
const MAX_PARAMS: usize = 32;
/// Longest `state` and `nonce`: they travel in URLs and are stored with the code.
const MAX_STATE: usize = 1024;

/// Form-encoded parameters (a query string or an `application/x-www-form-urlencoded`
/// body). Empty values count as absent (RFC 6749 §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

/// A parameter that was sent twice, or too many parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParams {
    /// The repeated parameter, its first 64 characters (`None`: too many).
    pub repeated: Option<String>,
}

impl Params {
    /// Parses form-encoded bytes; a repeated parameter is an error (RFC 6749 §3.1, §3.2).
    pub fn parse(bytes: &[u8]) -> Result<Self, BadParams> {
        let mut map = BTreeMap::new();
        for (key, value) in url::form_urlencoded::parse(bytes) {
            if value.is_empty() {
                continue;
            }
            if map.len() >= MAX_PARAMS {
                return Err(BadParams { repeated: None });
            }
            if map.insert(key.clone().into_owned(), value.into_owned()).is_some() {
                // Named in answers and logs: cut, whatever length the caller sent.
                return Err(BadParams { repeated: Some(key.chars().take(64).collect()) });
            }
        }
        Ok(Self(map))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A checked authorization request: the browser may now be judged.
#[derive(Debug)]
pub struct Authorization<'p> {
    /// The client.
    pub client: &'p Client,
    /// Its registered redirect URI, as sent.
    pub redirect_uri: String,
    /// `state`, echoed back.
    pub state: Option<String>,
    /// `nonce`, put in the ID token.
    pub nonce: Option<String>,
    /// The S256 `code_challenge`.
    pub code_challenge: String,
    /// `login_hint`: the user the client already identified.
    pub login_hint: Option<String>,
    /// `prompt=none`: no page may be shown.
    pub prompt_none: bool,
}

impl Authorization<'_> {
    /// Where the browser goes with the `code` for this request.
    pub fn granted(&self, code: &str, issuer: &str) -> String {
        answer_url(&self.redirect_uri, &[("code", code)], self.state.as_deref(), issuer)
    }

    /// Where a refusal of this request goes.
    pub fn refusal(&self, error: OAuthError) -> Redirect {
        Redirect { uri: self.redirect_uri.clone(), state: self.state.clone(), error }
    }
}

/// An authorization request refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client or redirect URI cannot be trusted: an error page, never a redirect
    /// (RFC 6749 §4.1.2.1).
    Page(OAuthError),
    /// Sent back to the client.
    Redirect(Redirect),
}

/// A refusal sent back to the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The registered redirect URI.
    pub uri: String,
    /// The request's `state`.
    pub state: Option<String>,
    /// The error.
    pub error: OAuthError,
}

impl Redirect {
    /// The URL to send the browser to, with `error`, `error_description`, `state` and `iss`
    /// (RFC 9207).
    pub fn location(&self, issuer: &str) -> String {
        let error =
            [("error", self.error.code.as_str()), ("error_description", self.error.description.as_str())];
        answer_url(&self.uri, &error, self.state.as_deref(), issuer)
    }
}

/// Every answer sent back to the client: the redirect URI with `pairs`, the request's
/// `state` when it sent one, and `iss` (RFC 9207).
fn answer_url(uri: &str, pairs: &[(&str, &str)], state: Option<&str>, issuer: &str) -> String {
    let mut all = pairs.to_vec();
    if let Some(state) = state {
        all.push(("state", state));
    }
    all.push(("iss", issuer));
    append_query(uri, &all)
}

/// `uri` with `pairs` added to its query (form-encoded), keeping the query it has.
fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        encoded.append_pair(key, value);
    }
    let encoded = encoded.finish();
    // Registered URIs have no fragment (checked at startup).
    let separator = if !uri.contains('?') {
        "?"
    } else if uri.ends_with('?') || uri.ends_with('&') {
        ""
    } else {
        "&"
    };
    format!("{uri}{separator}{encoded}")
}

fn invalid(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, description)
}

impl Provider {
    /// Checks an authorization request (OpenID Connect Core §3.1.2.2): first the client and
    /// its redirect URI (refused with a page), then everything else (refused back to the
    /// client).
    pub fn authorization(&self, params: Result<Params, BadParams>) -> Result<Authorization<'_>, Refusal> {
        let params = match params {
            Ok(params) => params,
            Err(BadParams { repeated }) => {
                return Err(Refusal::Page(invalid(match repeated {
                    Some(name) => format!("the parameter {name} is repeated"),
                    None => "too many parameters".to_owned(),
                })));
            }
        };
        let client_id =
            params.get("client_id").ok_or_else(|| Refusal::Page(invalid("client_id is missing")))?;
        let client = self.client(client_id).ok_or_else(|| Refusal::Page(invalid("unknown client_id")))?;
        // OpenID Connect requires redirect_uri, and only a registered one may be redirected to.
        let redirect_uri =
            params.get("redirect_uri").ok_or_else(|| Refusal::Page(invalid("redirect_uri is missing")))?;
        if !client.allows_redirect(redirect_uri) {
            return Err(Refusal::Page(invalid("redirect_uri is not registered for this client")));
        }
        let state = params.get("state").map(str::to_owned);
        let back = |error: OAuthError| {
            Refusal::Redirect(Redirect {
                uri: redirect_uri.to_owned(),
                // A state too long to store is not echoed either.
                state: state.clone().filter(|s| s.len() <= MAX_STATE),
                error,
            })
        };
        if params.get("request").is_some() {
            return Err(back(OAuthError::new(
                ErrorCode::RequestNotSupported,
                "request objects are not supported",
            )));
        }
        if params.get("request_uri").is_some() {
            return Err(back(OAuthError::new(
                ErrorCode::RequestUriNotSupported,
                "request_uri is not supported",
            )));
        }
        match params.get("response_type") {
            None => return Err(back(invalid("response_type is missing"))),
            Some("code") => {}
            Some(_) => {
                return Err(back(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                )));
            }
        }
        if params.get("response_mode").is_some_and(|mode| mode != "query") {
            return Err(back(invalid("only response_mode=query is supported")));
        }
        if !params.get("scope").is_some_and(|scope| scope.split(' ').any(|s| s == "openid")) {
            return Err(back(OAuthError::new(ErrorCode::InvalidScope, "the scope must include openid")));
        }
        if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
            return Err(back(invalid(format!("state is longer than {MAX_STATE} bytes"))));
        }
        let nonce = params.get("nonce").map(str::to_owned);
        if nonce.as_ref().is_some_and(|n| n.len() > MAX_STATE) {
            return Err(back(invalid(format!("nonce is longer than {MAX_STATE} bytes"))));
        }
        // PKCE is required, and only S256 (RFC 7636 §4.4.1; `plain` is the default when the
        // method is absent, so an absent method is refused too).
        let Some(code_challenge) = params.get("code_challenge") else {
            return Err(back(invalid("code challenge required (PKCE with S256)")));
        };
        if params.get("code_challenge_method") != Some("S256") {
            return Err(back(invalid(
                "transform algorithm not supported: code_challenge_method must be S256",
            )));
        }
        // The S256 challenge is BASE64URL(SHA-256(verifier)): 43 characters exactly.
        if code_challenge.len() != 43 || !code_challenge.chars().all(is_base64url) {
            return Err(back(invalid("code_challenge is not an S256 challenge")));
        }
        let login_hint = params.get("login_hint").map(str::to_owned);
        if let Some(hint) = &login_hint {
            if let Err(e) = crate::service::check_user(hint) {
                return Err(back(invalid(format!("login_hint: {}", e.public_message()))));
            }
            if hint.len() > super::MAX_SUBJECT_LEN {
                return Err(back(invalid(format!(
                    "login_hint is longer than {} bytes",
                    super::MAX_SUBJECT_LEN
                ))));
            }
        }
        let prompt: Vec<&str> = params.get("prompt").map(|p| p.split(' ').collect()).unwrap_or_default();
        let prompt_none = prompt.contains(&"none");
        if prompt_none && prompt.len() > 1 {
            // OpenID Connect Core §3.1.2.1.
            return Err(back(invalid("prompt=none cannot be combined with other values")));
        }
        Ok(Authorization {
            client,
            redirect_uri: redirect_uri.to_owned(),
            state,
            nonce,
            code_challenge: code_challenge.to_owned(),
            login_hint,
            prompt_none,
        })
    }
}

fn is_base64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `verifier` is a PKCE code verifier (RFC 7636 §4.1: 43 to 128 unreserved
/// characters).
pub fn is_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
}

/// Whether `verifier` answers the S256 `challenge` (RFC 7636 §4.6), in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic.
    Basic,
    /// In the body.
    Post,
}

/// The client's credentials at the token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The `client_id`.
    pub id: String,
    /// The secret as sent.
    pub secret: String,
    /// The secret form-decoded, when that reads differently (Basic only).
    pub decoded_secret: Option<String>,
    /// How it was sent.
    pub method: AuthMethod,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// A token request, before the code is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Who asks.
    pub credentials: ClientCredentials,
    /// The code.
    pub code: String,
    /// The redirect URI the code was issued for.
    pub redirect_uri: String,
    /// The PKCE verifier.
    pub code_verifier: String,
}

impl TokenRequest {
    /// Reads a token request (RFC 6749 §4.1.3, §2.3.1; RFC 7636 §4.5): exactly one way of
    /// client authentication, `grant_type=authorization_code`, the code, the redirect URI
    /// and a well-formed verifier. Client authentication failures are `invalid_client`.
    pub fn parse(authorization: Option<&str>, params: &Params) -> Result<Self, OAuthError> {
        let basic = authorization.map(basic_credentials).transpose()?;
        let posted = params.get("client_secret");
        let credentials = match (basic, posted) {
            (Some(_), Some(_)) => return Err(invalid("use one client authentication method, not two")),
            (Some(credentials), None) => {
                if params.get("client_id").is_some_and(|id| id != credentials.id) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidClient,
                        "client_id differs from the authenticated client",
                    ));
                }
                credentials
            }
            (None, Some(secret)) => ClientCredentials {
                id: params
                    .get("client_id")
                    .ok_or_else(|| OAuthError::new(ErrorCode::InvalidClient, "client_id is missing"))?
                    .to_owned(),
                secret: secret.to_owned(),
                decoded_secret: None,
                method: AuthMethod::Post,
            },
            (None, None) => {
                return Err(OAuthError::new(ErrorCode::InvalidClient, "client authentication is required"));
            }
        };
        match params.get("grant_type") {
            None => return Err(invalid("grant_type is missing")),
            Some("authorization_code") => {}
            Some(_) => {
                return Err(OAuthError::new(
                    ErrorCode::UnsupportedGrantType,
                    "only grant_type=authorization_code is supported",
                ));
            }
        }
        let required = |name: &str| {
            params.get(name).map(str::to_owned).ok_or_else(|| invalid(format!("{name} is missing")))
        };
        let code = required("code")?;
        let redirect_uri = required("redirect_uri")?;
        let code_verifier = required("code_verifier")?;
        if !is_code_verifier(&code_verifier) {
            return Err(invalid("code_verifier must be 43 to 128 unreserved characters"));
        }
        Ok(Self { credentials, code, redirect_uri, code_verifier })
    }
}

/// Reads `Authorization: Basic base64(client_id:client_secret)`, each part form-encoded
/// (RFC 6749 §2.3.1). Another scheme is `invalid_client`.
fn basic_credentials(header: &str) -> Result<ClientCredentials, OAuthError> {
    let refused = || OAuthError::new(ErrorCode::InvalidClient, "unreadable Basic credentials");
    let (scheme, value) = header.split_once(' ').ok_or_else(refused)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| refused())?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    let (id, secret) = text.split_once(':').ok_or_else(refused)?;
    let decoded = form_decode(secret);
    Ok(ClientCredentials {
        id: form_decode(id),
        decoded_secret: (decoded != secret).then_some(decoded),
        secret: secret.to_owned(),
        method: AuthMethod::Basic,
    })
}

/// One form-encoded component decoded (`+` is a space).
fn form_decode(component: &str) -> String {
    if component.contains('&') {
        return component.to_owned();
    }
    url::form_urlencoded::parse(format!("v={component}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::parse(query.as_bytes()).expect("params")
    }

    #[test]
    fn parameters() {
        assert_eq!(params("a=1&b=&c=%20x").get("c"), Some(" x"));
        assert_eq!(params("a=1&b=").get("b"), None, "empty counts as absent");
        assert_eq!(Params::parse(b"a=1&a=2"), Err(BadParams { repeated: Some("a".into()) }));
        let many: String = (0..40).map(|i| format!("p{i}=x&")).collect();
        assert_eq!(Params::parse(many.as_bytes()), Err(BadParams { repeated: None }));
    }

    #[test]
    fn pkce() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_code_verifier(verifier));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", challenge));
        assert!(!is_code_verifier("short"));
        assert!(!is_code_verifier(&"a".repeat(129)));
        assert!(!is_code_verifier(&format!("{}!", "a".repeat(50))));
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(append_query("https://a.example/cb", &[("code", "x y")]), "https://a.example/cb?code=x+y");
        assert_eq!(
            append_query("https://a.example/cb?t=1", &[("code", "c")]),
            "https://a.example/cb?t=1&code=c"
        );
        assert_eq!(append_query("https://a.example/cb?", &[("code", "c")]), "https://a.example/cb?code=c");
    }

    #[test]
    fn token_requests() {
        let basic = |id: &str, secret: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
        };
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let body = format!(
            "grant_type=authorization_code&code=c&redirect_uri=https%3A%2F%2Fa%2Fcb&code_verifier={verifier}"
        );
        let ok = TokenRequest::parse(Some(&basic("okta", "s%2Bcret")), &params(&body)).expect("basic");
        assert_eq!(ok.credentials.method, AuthMethod::Basic);
        assert_eq!(ok.credentials.secret, "s%2Bcret");
        assert_eq!(ok.credentials.decoded_secret.as_deref(), Some("s+cret"));
        assert_eq!(ok.redirect_uri, "https://a/cb");
        let post = TokenRequest::parse(None, &params(&format!("{body}&client_id=okta&client_secret=s")))
            .expect("post");
        assert_eq!((post.credentials.id.as_str(), post.credentials.method), ("okta", AuthMethod::Post));

        let cases: [(&str, Option<String>, String, ErrorCode); 7] = [
            (
                "fail/two-methods",
                Some(basic("okta", "s")),
                format!("{body}&client_id=okta&client_secret=s"),
                ErrorCode::InvalidRequest,
            ),
            ("fail/no-auth", None, body.clone(), ErrorCode::InvalidClient),
            ("fail/bearer", Some("Bearer x".into()), body.clone(), ErrorCode::InvalidClient),
            (
                "fail/other-client-id",
                Some(basic("okta", "s")),
                format!("{body}&client_id=other"),
                ErrorCode::InvalidClient,
            ),
            (
                "fail/grant-type",
                Some(basic("okta", "s")),
                body.replace("authorization_code", "refresh_token"),
                ErrorCode::UnsupportedGrantType,
            ),
            (
                "fail/no-verifier",
                Some(basic("okta", "s")),
                body.replace(&format!("&code_verifier={verifier}"), ""),
                ErrorCode::InvalidRequest,
            ),
            (
                "fail/short-verifier",
                Some(basic("okta", "s")),
                body.replace(verifier, "short"),
                ErrorCode::InvalidRequest,
            ),
        ];
        for (name, header, body, want) in cases {
            let got = TokenRequest::parse(header.as_deref(), &params(&body)).err().map(|e| e.code);
            assert_eq!(got, Some(want), "{name}");
        }
    }
}
