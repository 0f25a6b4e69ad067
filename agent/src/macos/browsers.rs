//! What the macOS browsers are told, decided without touching them: Safari's identity
//! preference names, Chrome's and Edge's `AutoSelectCertificateForUrls` preference, and the
//! per-browser status.
//!
//! Safari (and every other app using the system TLS stack) picks a client identity through
//! *identity preferences*: name → identity entries that `SecIdentityCopyPreferred` looks up by
//! URL, then by host name, then by `*.domain` wildcards. Chrome and Edge read the policy
//! `AutoSelectCertificateForUrls` from their preference domains; the merge itself is
//! [`crate::autoselect`]'s, shared with Linux, so "ours" and "never disturb the rest" mean the
//! same everywhere. A user-level value may be treated by Chrome as *recommended* rather than
//! mandatory, which is why `status` reports whether the effective value is managed (forced by
//! a configuration profile; see `devicetrust-agent profile chrome`).

use crate::autoselect::{self, OurEntry};
use crate::origin::{Origin, OriginError};
use crate::platform::BrowserStatus;

pub use crate::mobileconfig::{AUTO_SELECT_POLICY, CHROME_DOMAIN, EDGE_DOMAIN};

/// The Chromium browsers configured through CFPreferences: status name and preference domain.
pub const CHROMIUM_BROWSERS: [(&str, &str); 2] = [("chrome", CHROME_DOMAIN), ("edge", EDGE_DOMAIN)];

/// Why the browser targets cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserTargetError {
    /// `certAuthDomain` is not a safe https origin (the one validator, [`Origin::parse`]).
    #[error("the cert-auth domain cannot be used: {0}")]
    BadCertAuthDomain(#[from] OriginError),
    /// The configured organisation domain is not a plain DNS name.
    #[error("the organisation domain {value:?} is not a dns name such as example.com")]
    BadOrgDomain {
        /// The configured value.
        value: String,
    },
}

/// The names Safari's identity preferences are set for: the cert-auth origin as a URL, its
/// host name, `*.<host>` when the origin has Chrome's `[*.]` (subdomains too), and
/// `*.<org domain>` when one is configured. The cert-auth domain goes through the same
/// validator as every other browser setting, so nothing here is broader than what Chrome and
/// Edge are told.
///
/// The organisation domain is never guessed from the host: dropping the first label of
/// `ca.example.co.uk` would give `*.co.uk`, a preference for half a country.
pub fn safari_identity_names(
    cert_auth_domain: &str,
    org_domain: Option<&str>,
) -> Result<Vec<String>, BrowserTargetError> {
    let origin = Origin::parse(cert_auth_domain)?;
    let mut names = vec![origin.root_url(), origin.host().to_owned()];
    if origin.includes_subdomains() {
        names.push(format!("*.{}", origin.host()));
    }
    if let Some(org) = org_domain.map(str::trim).filter(|o| !o.is_empty()) {
        let org = org.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
        if org.split('.').count() < 2 || !crate::origin::is_dns_name(&org) {
            return Err(BrowserTargetError::BadOrgDomain { value: org });
        }
        let wildcard = format!("*.{org}");
        if !names.contains(&wildcard) {
            names.push(wildcard);
        }
    }
    Ok(names)
}

/// Reads a preference value as a list of strings; `None` when it is something else, which
/// is someone else's business and must not be overwritten.
pub fn string_list(value: &plist::Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_string().map(str::to_owned)).collect()
}

/// What to write at user level, or `None` when nothing changes. `user_value` is the user's
/// own value (not the effective one, which may include a managed value we must not copy).
pub fn chromium_user_update(
    user_value: Option<&plist::Value>,
    ours: &OurEntry,
) -> Result<Option<Vec<String>>, String> {
    let existing = match user_value {
        None => Vec::new(),
        Some(value) => string_list(value)
            .ok_or_else(|| format!("the user's {AUTO_SELECT_POLICY} is not a list of strings; left alone"))?,
    };
    let (list, change) = autoselect::merge(&existing, ours);
    Ok((change == autoselect::Change::Added).then_some(list))
}

/// What to write back after removing our entry, or `None` when it was not there. `Some` of an
/// empty list means the key should be deleted.
pub fn chromium_user_removal(user_value: Option<&plist::Value>, ours: &OurEntry) -> Option<Vec<String>> {
    let existing = string_list(user_value?)?;
    let (list, change) = autoselect::remove(&existing, ours);
    matches!(change, autoselect::Change::Removed(_)).then_some(list)
}

/// The status of one Chromium browser from its effective value and whether that is forced.
pub fn chromium_status(
    browser: &str,
    effective: Option<&plist::Value>,
    forced: bool,
    ours: &OurEntry,
) -> BrowserStatus {
    let list = effective.and_then(string_list);
    let (present, detail) = match list.as_deref().map(|l| autoselect::status(l, ours)) {
        Some(autoselect::Status::Present) => (true, None),
        Some(autoselect::Status::PresentWithOtherFilter) => (
            false,
            Some(format!("another {AUTO_SELECT_POLICY} entry for {} takes precedence", ours.pattern())),
        ),
        Some(autoselect::Status::Absent) | None if forced => (
            false,
            Some(format!(
                "a managed {AUTO_SELECT_POLICY} without our entry overrides user preferences; add ours to the configuration profile"
            )),
        ),
        Some(autoselect::Status::Absent) => {
            (false, Some(format!("{AUTO_SELECT_POLICY} has no entry for {}", ours.pattern())))
        }
        None if effective.is_some() => {
            (false, Some(format!("{AUTO_SELECT_POLICY} is not a list of strings")))
        }
        None => (false, Some(format!("{AUTO_SELECT_POLICY} is not set"))),
    };
    BrowserStatus { browser: browser.to_owned(), present, managed: forced, detail }
}

/// Safari's status from which identity preference names point at our certificate.
pub fn safari_status(names: &[(String, bool)]) -> BrowserStatus {
    let missing: Vec<&str> = names.iter().filter(|(_, ours)| !ours).map(|(n, _)| n.as_str()).collect();
    BrowserStatus {
        browser: "safari".to_owned(),
        present: !names.is_empty() && missing.is_empty(),
        // Identity preferences are per user; there is no managed form.
        managed: false,
        detail: (!missing.is_empty()).then(|| format!("no identity preference for {}", missing.join(", "))),
    }
}

/// The AppleScript that tells the user to restart browsers after a renewal; `browsers` are
/// the status names (`chrome`, `edge`, `safari`). Only fixed text and sanitised names reach it.
pub fn restart_notification_script(browsers: &[String]) -> String {
    let names: Vec<String> = browsers
        .iter()
        .map(|b| match b.as_str() {
            "chrome" => "Google Chrome".to_owned(),
            "edge" => "Microsoft Edge".to_owned(),
            "safari" => "Safari".to_owned(),
            other => other.chars().filter(|c| c.is_ascii_alphanumeric() || *c == ' ').collect(),
        })
        .collect();
    let which = if names.is_empty() { "your browser".to_owned() } else { names.join(", ") };
    format!(
        "display notification \"Your device certificate was renewed. Restart {which} to keep access.\" with title \"DeviceTrust\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use plist::Value;

    const ORIGIN: &str = "https://cell-devicetrust.example.com";
    const CN: &str = "MTLS Certificate Authority";
    const OURS: &str = r#"{"pattern":"https://cell-devicetrust.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#;
    const OTHER: &str = r#"{"pattern":"https://intranet.example.com","filter":{"ISSUER":{"CN":"Corp CA"}}}"#;

    fn ours() -> OurEntry {
        OurEntry::new(ORIGIN, CN).unwrap()
    }

    fn array(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String((*s).to_owned())).collect())
    }

    #[test]
    fn safari_names_table() {
        let cases: &[(&str, &str, Option<&str>, Result<&[&str], ()>)] = &[
            (
                "ok/origin-and-host",
                ORIGIN,
                None,
                Ok(&["https://cell-devicetrust.example.com/", "cell-devicetrust.example.com"]),
            ),
            (
                "ok/port-kept",
                "https://ca.example.com:8443",
                None,
                Ok(&["https://ca.example.com:8443/", "ca.example.com"]),
            ),
            (
                "ok/org-wildcard",
                ORIGIN,
                Some("Example.com"),
                Ok(&[
                    "https://cell-devicetrust.example.com/",
                    "cell-devicetrust.example.com",
                    "*.example.com",
                ]),
            ),
            (
                "ok/org-given-as-wildcard",
                ORIGIN,
                Some("*.example.com"),
                Ok(&[
                    "https://cell-devicetrust.example.com/",
                    "cell-devicetrust.example.com",
                    "*.example.com",
                ]),
            ),
            (
                "ok/blank-org-ignored",
                ORIGIN,
                Some(" "),
                Ok(&["https://cell-devicetrust.example.com/", "cell-devicetrust.example.com"]),
            ),
            (
                "ok/subdomain-wildcard",
                "https://[*.]example.com",
                Some("example.com"),
                Ok(&["https://example.com/", "example.com", "*.example.com"]),
            ),
            ("fail/http", "http://ca.example.com", None, Err(())),
            ("fail/not-a-url", "ca.example.com", None, Err(())),
            ("fail/star", "*", None, Err(())),
            ("fail/https-star", "https://*", None, Err(())),
            ("fail/star-label", "https://*.example.com", None, Err(())),
            ("fail/path", "https://evil.example/path", None, Err(())),
            ("fail/userinfo", "https://u@ca.example.com", None, Err(())),
            ("fail/single-label-org", ORIGIN, Some("com"), Err(())),
            ("fail/org-with-space", ORIGIN, Some("exa mple.com"), Err(())),
        ];
        for (name, domain, org, want) in cases {
            let got = safari_identity_names(domain, *org).map_err(|_| ());
            let want = want.map(|w| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn user_update_table() {
        let cases: &[(&str, Option<Value>, Result<Option<Vec<&str>>, ()>)] = &[
            ("ok/unset", None, Ok(Some(vec![OURS]))),
            ("ok/appends-keeping-others", Some(array(&[OTHER])), Ok(Some(vec![OTHER, OURS]))),
            ("ok/already-there", Some(array(&[OURS, OTHER])), Ok(None)),
            ("fail/not-a-list", Some(Value::String("x".into())), Err(())),
            ("fail/list-of-numbers", Some(Value::Array(vec![Value::Integer(1.into())])), Err(())),
        ];
        for (name, value, want) in cases {
            let got = chromium_user_update(value.as_ref(), &ours()).map_err(|_| ());
            let want = want.clone().map(|o| o.map(|v| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn user_removal_table() {
        let cases: &[(&str, Option<Value>, Option<Vec<&str>>)] = &[
            ("ok/removes-ours-only", Some(array(&[OTHER, OURS])), Some(vec![OTHER])),
            ("ok/last-entry-leaves-empty", Some(array(&[OURS])), Some(vec![])),
            ("ok/absent", Some(array(&[OTHER])), None),
            ("ok/unset", None, None),
            ("ok/not-a-list", Some(Value::Boolean(true)), None),
        ];
        for (name, value, want) in cases {
            let got = chromium_user_removal(value.as_ref(), &ours());
            let want = want.clone().map(|v| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn chromium_status_table() {
        let cases: &[(&str, Option<Value>, bool, bool)] = &[
            ("ok/present-user-level", Some(array(&[OTHER, OURS])), false, true),
            ("ok/present-managed", Some(array(&[OURS])), true, true),
            ("fail/absent", Some(array(&[OTHER])), false, false),
            ("fail/managed-without-ours", Some(array(&[OTHER])), true, false),
            ("fail/unset", None, false, false),
            ("fail/garbage", Some(Value::Integer(3.into())), false, false),
        ];
        for (name, value, forced, present) in cases {
            let status = chromium_status("chrome", value.as_ref(), *forced, &ours());
            assert_eq!(status.browser, "chrome", "{name}");
            assert_eq!(status.present, *present, "{name}");
            assert_eq!(status.managed, *forced, "{name}");
            assert_eq!(status.detail.is_none(), *present, "{name}: {:?}", status.detail);
        }
        let forced_absent = chromium_status("edge", Some(&array(&[OTHER])), true, &ours());
        assert!(forced_absent.detail.unwrap().contains("configuration profile"));
    }

    #[test]
    fn restart_notification() {
        let script = restart_notification_script(&["chrome".to_owned(), "edge".to_owned()]);
        assert_eq!(
            script,
            "display notification \"Your device certificate was renewed. Restart Google Chrome, Microsoft Edge to keep access.\" with title \"DeviceTrust\""
        );
        // A name with quotes cannot break out of the AppleScript string.
        let odd = restart_notification_script(&["x\" & do shell script \"id".to_owned()]);
        assert_eq!(odd.matches('"').count(), 4, "{odd}");
        assert!(restart_notification_script(&[]).contains("Restart your browser"));
    }

    #[test]
    fn safari_status_table() {
        let n = |name: &str, ours: bool| (name.to_owned(), ours);
        assert!(safari_status(&[n("https://a/", true), n("a", true)]).present);
        let partial = safari_status(&[n("https://a/", true), n("a", false)]);
        assert!(!partial.present);
        assert_eq!(partial.detail.as_deref(), Some("no identity preference for a"));
        assert!(!safari_status(&[]).present);
        assert!(!safari_status(&[n("a", true)]).managed);
    }
}
