//! `[oidc]` and `[[oidc.clients]]`: the OpenID Connect clients (identity providers and
//! apps) that may ask the CA whether a browser is on a trusted device.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;
use crate::secret::SecretSource;

/// `[oidc]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcSettings {
    /// `id_token_lifetime_secs` (default 300): `exp - iat` of ID and access tokens.
    pub id_token_lifetime_secs: u32,
    /// `ask_mdm` (default true): ask the MDM at every authorization (through the positive
    /// cache of `[mdm] cache_ttl_secs`) and refuse when it cannot be asked. `false` trusts
    /// the certificate and what this process last heard from the MDM, as the forward-auth
    /// check does, so that sign-in survives an MDM outage.
    pub ask_mdm: bool,
    /// `signing_keys`: PKCS#8 PEM P-256 keys for ID and access tokens; the first signs,
    /// every one is published. Default: `oidc-key.pem`, generated in the data directory.
    /// Replicas must share them.
    pub signing_keys: Vec<PathBuf>,
    /// `[[oidc.clients]]`.
    pub clients: Vec<OidcClientSettings>,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self { id_token_lifetime_secs: 300, ask_mdm: true, signing_keys: Vec::new(), clients: Vec::new() }
    }
}

/// What an ID token's `sub` is for a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    /// The user the certificate is bound to.
    #[default]
    User,
    /// The device's UDID.
    Device,
}

/// `[[oidc.clients]]`: one OpenID Connect client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcClientSettings {
    /// `id`: its `client_id`.
    pub id: String,
    /// `name`: what pages and logs call it (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// `secret = { file = "..." }` or `{ env = "VAR" }`: its client secret, at least 32
    /// characters.
    pub secret: SecretSource,
    /// `redirect_uris`: where it may send browsers back to, matched exactly.
    pub redirect_uris: Vec<String>,
    /// `subject`: `user` (default) or `device`.
    #[serde(default)]
    pub subject: SubjectType,
    /// `refusal_page` (default false): show the "Security requirements" page before sending
    /// a refused browser back with `access_denied`.
    #[serde(default)]
    pub refusal_page: bool,
    /// `bind_login_hint` (default true): an unbound certificate is bound to the client's
    /// `login_hint` when the code is redeemed. Set false for a client that forwards a
    /// `login_hint` it did not verify (an app's own, through Keycloak's "Pass login_hint"):
    /// its hint is then only checked, and a first use binds to the enrolling user.
    #[serde(default = "yes")]
    pub bind_login_hint: bool,
}

fn yes() -> bool {
    true
}

/// Longest `id_token_lifetime_secs`; code rows are kept this long after their expiry.
pub const MAX_TOKEN_LIFETIME_SECS: u32 = 3600;

/// Longest client id.
const MAX_CLIENT_ID: usize = 64;

impl OidcSettings {
    /// Makes relative key and secret paths relative to `base`.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.signing_keys.iter_mut().for_each(fix);
        for client in &mut self.clients {
            if let Some(path) = &mut client.secret.file {
                fix(path);
            }
        }
    }

    /// Checks what serde cannot: lifetimes, ids, redirect URIs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        if !(60..=MAX_TOKEN_LIFETIME_SECS).contains(&self.id_token_lifetime_secs) {
            return invalid(
                "oidc.id_token_lifetime_secs",
                format!("must be between 60 and {MAX_TOKEN_LIFETIME_SECS}"),
            );
        }
        let mut ids = std::collections::BTreeSet::new();
        for client in &self.clients {
            let id = &client.id;
            if id.is_empty()
                || id.len() > MAX_CLIENT_ID
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return invalid(
                    "oidc.clients.id",
                    format!("{id:?}: 1 to {MAX_CLIENT_ID} characters of A-Z a-z 0-9 - _ ."),
                );
            }
            if !ids.insert(id.as_str()) {
                return invalid("oidc.clients.id", format!("{id:?} is listed twice"));
            }
            if client
                .name
                .as_ref()
                .is_some_and(|n| n.is_empty() || n.len() > 128 || n.chars().any(char::is_control))
            {
                return invalid("oidc.clients.name", format!("{id:?}: 1 to 128 printable characters"));
            }
            if client.redirect_uris.is_empty() {
                return invalid("oidc.clients.redirect_uris", format!("{id:?} has none"));
            }
            for uri in &client.redirect_uris {
                if let Err(reason) = check_redirect_uri(uri) {
                    return invalid("oidc.clients.redirect_uris", format!("{uri:?}: {reason}"));
                }
            }
        }
        Ok(())
    }
}

/// A registered redirect URI: absolute, `https` (or `http` to a loopback host, for a client
/// on the same machine, RFC 8252 §7.3), no user information and no fragment (RFC 6749
/// §3.1.2). It is matched byte for byte, so it must be written as clients send it: ASCII,
/// in the normal form of a URL parser (what a client library puts on the wire).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    if url.as_str() != uri {
        return Err(format!("write it as {:?}, its normal form, which clients send", url.as_str()));
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("http is allowed only for 127.0.0.1, [::1] and localhost".into()),
        _ => return Err("must be an https URL".into()),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password".into());
    }
    if url.fragment().is_some() || uri.contains('#') {
        return Err("must not have a fragment".into());
    }
    if uri.len() > 2048 {
        return Err("is longer than 2048 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        let cases = [
            ("ok/https", "https://example.okta.com/oauth2/v1/authorize/callback", true),
            ("ok/loopback-http", "http://127.0.0.1:9000/callback", true),
            ("ok/query", "https://idp.example.com/cb?tenant=1", true),
            ("fail/http", "http://idp.example.com/callback", false),
            ("fail/fragment", "https://idp.example.com/cb#x", false),
            ("fail/userinfo", "https://u:p@idp.example.com/cb", false),
            ("fail/relative", "/callback", false),
            ("fail/custom-scheme", "com.example.app:/cb", false),
            ("fail/not-normal", "https://IdP.example.com/cb", false),
            ("fail/no-path", "https://idp.example.com", false),
            ("fail/space", " https://idp.example.com/cb", false),
            ("fail/non-ascii", "https://idp.example.com/café", false),
        ];
        for (name, uri, ok) in cases {
            assert_eq!(check_redirect_uri(uri).is_ok(), ok, "{name}: {:?}", check_redirect_uri(uri));
        }
    }

    #[test]
    fn settings() {
        let client = |id: &str, uris: &[&str]| OidcClientSettings {
            id: id.into(),
            name: None,
            secret: SecretSource::file("/x"),
            redirect_uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            subject: SubjectType::User,
            refusal_page: false,
            bind_login_hint: true,
        };
        let ok = OidcSettings {
            clients: vec![client("okta", &["https://o.example.com/cb"])],
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let cases = [
            (
                "fail/duplicate-id",
                vec![client("a", &["https://a/cb"]), client("a", &["https://b/cb"])],
                "oidc.clients.id",
            ),
            ("fail/bad-id", vec![client("a b", &["https://a/cb"])], "oidc.clients.id"),
            ("fail/no-redirect", vec![client("a", &[])], "oidc.clients.redirect_uris"),
            (
                "fail/bad-redirect",
                vec![client("a", &["http://a.example.com/cb"])],
                "oidc.clients.redirect_uris",
            ),
        ];
        for (name, clients, want) in cases {
            let settings = OidcSettings { clients, ..Default::default() };
            assert!(
                matches!(settings.validate(), Err(ConfigError::Invalid { setting, .. }) if setting == want),
                "{name}: {:?}",
                settings.validate()
            );
        }
        let short = OidcSettings { id_token_lifetime_secs: 10, ..Default::default() };
        assert!(matches!(
            short.validate(),
            Err(ConfigError::Invalid { setting: "oidc.id_token_lifetime_secs", .. })
        ));
    }
}
