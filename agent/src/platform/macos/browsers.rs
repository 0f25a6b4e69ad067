//! What the macOS browsers are told, decided without touching them: Safari's identity
//! preference names, Chrome's and Edge's `AutoSelectCertificateForUrls` preference (one entry
//! per origin: the cert-auth domain and each protected origin), and the per-browser status.
//!
//! The user's Chrome and Edge lists are shared with whoever else writes them, so the agent
//! removes only entries it recorded as added itself ([`crate::autoselect::sync`]); Safari's
//! identity preferences for protected origins are recorded by origin (list [`SAFARI_LIST`])
//! and, being names other tools may use too, removed only while they point at our identity.
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
use crate::platform::{BrowserStatus, OriginStatus};

pub(crate) use crate::mobileconfig::AUTO_SELECT_POLICY;
#[cfg(target_os = "macos")]
use crate::mobileconfig::{CHROME_DOMAIN, EDGE_DOMAIN};

#[cfg(target_os = "macos")]
/// The Chromium browsers configured through CFPreferences: status name and preference domain
/// (also the name of the domain's record in [`crate::platform::WrittenEntries`]).
pub(crate) const CHROMIUM_BROWSERS: [(&str, &str); 2] = [("chrome", CHROME_DOMAIN), ("edge", EDGE_DOMAIN)];

#[cfg(target_os = "macos")]
/// The record name of the protected origins given Safari identity preferences.
pub(crate) const SAFARI_LIST: &str = "safari";

/// One origin's Safari identity preference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafariOrigin {
    /// The origin, in canonical form.
    pub origin: String,
    /// The names its identity preferences are set for; none that an earlier origin has.
    pub names: Vec<String>,
}

/// The identity preference names per origin: the cert-auth domain's first (with the
/// organisation wildcard, see [`safari_identity_names`]), then each further entry's
/// (`protected`, as [`crate::autoselect::wanted`] made them) as URL, host name and, for `[*.]`,
/// `*.<host>`. A name already given to an earlier origin is not repeated.
pub(crate) fn safari_origins(
    cert_auth_domain: &str,
    org_domain: Option<&str>,
    protected: &[OurEntry],
) -> Result<Vec<SafariOrigin>, BrowserTargetError> {
    let first = Origin::parse(cert_auth_domain)?;
    let mut seen = safari_identity_names(cert_auth_domain, org_domain)?;
    let mut out = vec![SafariOrigin { origin: first.to_string(), names: seen.clone() }];
    for entry in protected.iter().filter(|e| e.pattern() != first.to_string()) {
        let origin = Origin::parse(entry.pattern())?;
        let mut names = vec![origin.root_url(), origin.host().to_owned()];
        if origin.includes_subdomains() {
            names.push(format!("*.{}", origin.host()));
        }
        names.retain(|n| !seen.contains(n));
        seen.extend(names.iter().cloned());
        out.push(SafariOrigin { origin: origin.to_string(), names });
    }
    Ok(out)
}

/// The names of protected origins recorded earlier (`recorded`, canonical patterns) that are
/// no longer wanted, minus every name still wanted: what to clear (while it points at us).
pub(crate) fn safari_retired_names(recorded: &[String], wanted: &[SafariOrigin]) -> Vec<String> {
    let still: Vec<&String> = wanted.iter().flat_map(|o| &o.names).collect();
    let mut out = Vec::new();
    for pattern in recorded.iter().filter(|p| wanted.iter().all(|o| o.origin != **p)) {
        let Ok(origin) = Origin::parse(pattern) else { continue };
        let mut names = vec![origin.root_url(), origin.host().to_owned()];
        if origin.includes_subdomains() {
            names.push(format!("*.{}", origin.host()));
        }
        for name in names {
            if !still.contains(&&name) && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Why the browser targets cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BrowserTargetError {
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
pub(crate) fn safari_identity_names(
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
pub(crate) fn string_list(value: &plist::Value) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_string().map(str::to_owned)).collect()
}

/// What a user-level update does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserUpdate {
    /// The list to write, `None` when it is unchanged; `Some` of an empty list means the key
    /// should be deleted.
    pub write: Option<Vec<String>>,
    /// The patterns whose entry was added.
    pub added: Vec<String>,
    /// The patterns whose entry (ours, recorded) was removed.
    pub retired: Vec<String>,
    /// The new record of our entries in this list.
    pub written: Vec<String>,
}

/// What to write at user level for the `wanted` entries, given the entries this agent
/// recorded as added before (`written`). `user_value` is the user's own value (not the
/// effective one, which may include a managed value we must not copy).
pub(crate) fn chromium_user_update(
    user_value: Option<&plist::Value>,
    wanted: &[OurEntry],
    written: &[String],
) -> Result<UserUpdate, String> {
    let existing = match user_value {
        None => Vec::new(),
        Some(value) => string_list(value)
            .ok_or_else(|| format!("the user's {AUTO_SELECT_POLICY} is not a list of strings; left alone"))?,
    };
    let synced = autoselect::sync(&existing, wanted, written);
    let added = wanted
        .iter()
        .zip(&synced.changes)
        .filter(|(_, c)| **c == autoselect::Change::Added)
        .map(|(e, _)| e.pattern().to_owned())
        .collect();
    let retired = synced.retired.iter().map(|e| e.pattern().to_owned()).collect();
    let write = synced.list_changed(&existing).then(|| synced.list.clone());
    Ok(UserUpdate { write, added, retired, written: synced.written })
}

/// What to write back after removing our entries (`always`: the cert-auth domain's, which names
/// the CA's own site; and every entry recorded in `written`), or `None` when none was there.
/// `Some` of an empty list means the key should be deleted.
pub(crate) fn chromium_user_removal(
    user_value: Option<&plist::Value>,
    always: &[OurEntry],
    written: &[String],
) -> Option<Vec<String>> {
    let existing = string_list(user_value?)?;
    let (list, removed) = autoselect::remove_ours(&existing, always, written);
    (removed > 0).then_some(list)
}

/// The status of one Chromium browser from its effective value and whether that is forced:
/// each wanted entry's, and in place when all are.
pub(crate) fn chromium_status(
    browser: &str,
    effective: Option<&plist::Value>,
    forced: bool,
    wanted: &[OurEntry],
) -> BrowserStatus {
    let list = effective.and_then(string_list);
    let origins: Vec<OriginStatus> = wanted
        .iter()
        .map(|ours| OriginStatus {
            origin: ours.pattern().to_owned(),
            entry: list.as_deref().map_or(autoselect::Status::Absent, |l| autoselect::status(l, ours)),
        })
        .collect();
    let pick = |status: autoselect::Status| -> Vec<&str> {
        origins.iter().filter(|o| o.entry == status).map(|o| o.origin.as_str()).collect()
    };
    let (other, absent) =
        (pick(autoselect::Status::PresentWithOtherFilter), pick(autoselect::Status::Absent));
    let present = other.is_empty() && absent.is_empty();
    let mut problems = Vec::new();
    if !other.is_empty() {
        problems
            .push(format!("another {AUTO_SELECT_POLICY} entry takes precedence for {}", other.join(", ")));
    }
    if !absent.is_empty() {
        problems.push(if forced {
            format!(
                "a managed {AUTO_SELECT_POLICY} without our entry for {} overrides user preferences; add ours to the configuration profile",
                absent.join(", ")
            )
        } else if list.is_some() {
            format!("{AUTO_SELECT_POLICY} has no entry for {}", absent.join(", "))
        } else if effective.is_some() {
            format!("{AUTO_SELECT_POLICY} is not a list of strings")
        } else {
            format!("{AUTO_SELECT_POLICY} is not set")
        });
    }
    let detail = (!problems.is_empty()).then(|| problems.join("; "));
    BrowserStatus { browser: browser.to_owned(), present, managed: forced, detail, origins }
}

/// Safari's status from which identity preference names of each origin point at our
/// certificate: an origin is present when all of its names do.
pub(crate) fn safari_status(origins: &[(String, Vec<(String, bool)>)]) -> BrowserStatus {
    let missing: Vec<&str> = origins
        .iter()
        .flat_map(|(_, names)| names)
        .filter(|(_, ours)| !ours)
        .map(|(n, _)| n.as_str())
        .collect();
    let any = origins.iter().any(|(_, names)| !names.is_empty());
    BrowserStatus {
        browser: "safari".to_owned(),
        present: any && missing.is_empty(),
        // Identity preferences are per user; there is no managed form.
        managed: false,
        detail: (!missing.is_empty()).then(|| format!("no identity preference for {}", missing.join(", "))),
        origins: origins
            .iter()
            .map(|(origin, names)| OriginStatus {
                origin: origin.clone(),
                entry: if names.iter().all(|(_, ours)| *ours) {
                    autoselect::Status::Present
                } else {
                    autoselect::Status::Absent
                },
            })
            .collect(),
    }
}

/// The AppleScript that tells the user to restart browsers after a renewal; `browsers` are
/// the status names (`chrome`, `edge`, `safari`). Only fixed text and sanitised names reach it.
pub(crate) fn restart_notification_script(browsers: &[String]) -> String {
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
        const DOMAIN: &str = "bad cert-auth domain";
        const ORG: &str = "bad org domain";
        let cases: &[(&str, &str, Option<&str>, Result<&[&str], &str>)] = &[
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
            ("fail/http", "http://ca.example.com", None, Err(DOMAIN)),
            ("fail/not-a-url", "ca.example.com", None, Err(DOMAIN)),
            ("fail/star", "*", None, Err(DOMAIN)),
            ("fail/https-star", "https://*", None, Err(DOMAIN)),
            ("fail/star-label", "https://*.example.com", None, Err(DOMAIN)),
            ("fail/path", "https://evil.example/path", None, Err(DOMAIN)),
            ("fail/userinfo", "https://u@ca.example.com", None, Err(DOMAIN)),
            ("fail/single-label-org", ORIGIN, Some("com"), Err(ORG)),
            ("fail/org-with-space", ORIGIN, Some("exa mple.com"), Err(ORG)),
        ];
        for (name, domain, org, want) in cases {
            let got = safari_identity_names(domain, *org).map_err(|e| match e {
                BrowserTargetError::BadCertAuthDomain(_) => DOMAIN,
                BrowserTargetError::BadOrgDomain { .. } => ORG,
            });
            let want = want.map(|w| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    const APPS_ORIGIN: &str = "https://[*.]apps.example.com";
    const APPS: &str = r#"{"pattern":"https://[*.]apps.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#;

    fn apps() -> OurEntry {
        OurEntry::new(APPS_ORIGIN, CN).unwrap()
    }

    fn owned(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn user_update_table() {
        // (name, user value, wanted, recorded before, list to write, record after)
        type Case<'a> = (
            &'a str,
            Option<Value>,
            Vec<OurEntry>,
            &'a [&'a str],
            Result<Option<Vec<&'a str>>, ()>,
            &'a [&'a str],
        );
        let cases: Vec<Case<'_>> = vec![
            ("ok/unset", None, vec![ours()], &[], Ok(Some(vec![OURS])), &[OURS]),
            (
                "ok/appends-keeping-others",
                Some(array(&[OTHER])),
                vec![ours()],
                &[],
                Ok(Some(vec![OTHER, OURS])),
                &[OURS],
            ),
            // The cert-auth entry is ours, recorded or not (an agent from before the record).
            ("ok/already-there", Some(array(&[OURS, OTHER])), vec![ours()], &[], Ok(None), &[OURS]),
            (
                "ok/every-origin",
                Some(array(&[OTHER])),
                vec![ours(), apps()],
                &[],
                Ok(Some(vec![OTHER, OURS, APPS])),
                &[OURS, APPS],
            ),
            (
                "ok/dropped-origin-removed",
                Some(array(&[OURS, OTHER, APPS])),
                vec![ours()],
                &[OURS, APPS],
                Ok(Some(vec![OURS, OTHER])),
                &[OURS],
            ),
            (
                "ok/last-recorded-entry-leaves-empty",
                Some(array(&[APPS])),
                vec![],
                &[APPS],
                Ok(Some(vec![])),
                &[],
            ),
            (
                "fail/hand-written-twin-stays",
                Some(array(&[APPS, OURS])),
                vec![ours()],
                &[OURS],
                Ok(None),
                &[OURS],
            ),
            ("fail/not-a-list", Some(Value::String("x".into())), vec![ours()], &[], Err(()), &[]),
            (
                "fail/list-of-numbers",
                Some(Value::Array(vec![Value::Integer(1.into())])),
                vec![ours()],
                &[],
                Err(()),
                &[],
            ),
        ];
        for (name, value, wanted, before, want, record) in cases {
            let got = chromium_user_update(value.as_ref(), &wanted, &owned(before));
            let want_write = want.map(|o| o.map(|v| owned(&v)));
            assert_eq!(got.as_ref().map(|u| u.write.clone()).map_err(|_| ()), want_write, "{name}");
            if let Ok(update) = got {
                assert_eq!(update.written, owned(record), "{name}");
            }
        }
        let update = chromium_user_update(Some(&array(&[OURS, APPS])), &[ours()], &owned(&[APPS])).unwrap();
        assert_eq!((update.added, update.retired), (vec![], vec![APPS_ORIGIN.to_owned()]));
    }

    #[test]
    fn user_removal_table() {
        let cases: &[(&str, Option<Value>, &[&str], Option<Vec<&str>>)] = &[
            ("ok/removes-ours-only", Some(array(&[OTHER, OURS])), &[], Some(vec![OTHER])),
            ("ok/last-entry-leaves-empty", Some(array(&[OURS])), &[], Some(vec![])),
            ("ok/recorded-origin-too", Some(array(&[OURS, APPS, OTHER])), &[APPS], Some(vec![OTHER])),
            ("fail/unrecorded-origin-stays", Some(array(&[OURS, APPS])), &[], Some(vec![APPS])),
            ("ok/absent", Some(array(&[OTHER])), &[], None),
            ("ok/unset", None, &[], None),
            ("ok/not-a-list", Some(Value::Boolean(true)), &[], None),
        ];
        for (name, value, written, want) in cases {
            let got = chromium_user_removal(value.as_ref(), &[ours()], &owned(written));
            let want = want.clone().map(|v| owned(&v));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn safari_origins_table() {
        let wiki = OurEntry::new("https://wiki.example.com:8443", CN).unwrap();
        let cases: &[(&str, Vec<OurEntry>, Option<&str>, &[(&str, &[&str])])] = &[
            (
                "ok/cert-auth-only",
                vec![ours()],
                None,
                &[(ORIGIN, &["https://cell-devicetrust.example.com/", "cell-devicetrust.example.com"])],
            ),
            (
                "ok/per-origin",
                vec![ours(), apps(), wiki.clone()],
                None,
                &[
                    (ORIGIN, &["https://cell-devicetrust.example.com/", "cell-devicetrust.example.com"]),
                    (APPS_ORIGIN, &["https://apps.example.com/", "apps.example.com", "*.apps.example.com"]),
                    (
                        "https://wiki.example.com:8443",
                        &["https://wiki.example.com:8443/", "wiki.example.com"],
                    ),
                ],
            ),
            (
                "ok/names-once",
                vec![ours(), OurEntry::new("https://cell-devicetrust.example.com:8443", CN).unwrap()],
                Some("example.com"),
                &[
                    (
                        ORIGIN,
                        &[
                            "https://cell-devicetrust.example.com/",
                            "cell-devicetrust.example.com",
                            "*.example.com",
                        ],
                    ),
                    (
                        "https://cell-devicetrust.example.com:8443",
                        &["https://cell-devicetrust.example.com:8443/"],
                    ),
                ],
            ),
        ];
        for (name, entries, org, want) in cases {
            let got = safari_origins(ORIGIN, *org, entries).unwrap();
            let got: Vec<(&str, Vec<&str>)> = got
                .iter()
                .map(|o| (o.origin.as_str(), o.names.iter().map(String::as_str).collect()))
                .collect();
            let want: Vec<(&str, Vec<&str>)> = want.iter().map(|(o, n)| (*o, n.to_vec())).collect();
            assert_eq!(got, want, "{name}");
        }
        let wanted = safari_origins(ORIGIN, None, &[ours(), wiki]).unwrap();
        assert_eq!(
            safari_retired_names(&owned(&[APPS_ORIGIN, "https://wiki.example.com:8443"]), &wanted),
            owned(&["https://apps.example.com/", "apps.example.com", "*.apps.example.com"]),
            "ok/only-dropped-origins-names"
        );
        assert!(safari_retired_names(&owned(&["not an origin"]), &wanted).is_empty(), "fail/garbage-record");
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
            let status = chromium_status("chrome", value.as_ref(), *forced, &[ours()]);
            assert_eq!(status.browser, "chrome", "{name}");
            assert_eq!(status.present, *present, "{name}");
            assert_eq!(status.managed, *forced, "{name}");
            assert_eq!(status.detail.is_none(), *present, "{name}: {:?}", status.detail);
        }
        let forced_absent = chromium_status("edge", Some(&array(&[OTHER])), true, &[ours()]);
        assert!(forced_absent.detail.unwrap().contains("configuration profile"));
        // Per origin: one missing makes the browser missing, and says which.
        let partial = chromium_status("chrome", Some(&array(&[OURS])), false, &[ours(), apps()]);
        assert!(!partial.present);
        assert_eq!(
            partial.origins.iter().map(|o| (o.origin.as_str(), o.entry)).collect::<Vec<_>>(),
            [(ORIGIN, autoselect::Status::Present), (APPS_ORIGIN, autoselect::Status::Absent)]
        );
        assert_eq!(
            partial.detail.as_deref(),
            Some("AutoSelectCertificateForUrls has no entry for https://[*.]apps.example.com")
        );
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
        let one = |names: Vec<(String, bool)>| vec![("https://a".to_owned(), names)];
        assert!(safari_status(&one(vec![n("https://a/", true), n("a", true)])).present);
        let partial = safari_status(&one(vec![n("https://a/", true), n("a", false)]));
        assert!(!partial.present);
        assert_eq!(partial.detail.as_deref(), Some("no identity preference for a"));
        assert_eq!(partial.origins[0].entry, autoselect::Status::Absent);
        assert!(!safari_status(&[]).present);
        assert!(!safari_status(&one(vec![n("a", true)])).managed);
        let two = safari_status(&[
            ("https://a".to_owned(), vec![n("a", true)]),
            ("https://b".to_owned(), vec![n("b", false)]),
        ]);
        let entries: Vec<_> = two.origins.iter().map(|o| (o.origin.as_str(), o.entry)).collect();
        assert_eq!(
            entries,
            [("https://a", autoselect::Status::Present), ("https://b", autoselect::Status::Absent)]
        );
    }
}
