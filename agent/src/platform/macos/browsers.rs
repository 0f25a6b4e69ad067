//! What the macOS browsers are told, decided without touching them: Chrome's and Edge's
//! `AutoSelectCertificateForUrls` preference (one entry per origin: the cert-auth domain and
//! each protected origin) and its status; Safari's identity preferences are
//! [`super::safari`]'s.
//!
//! The user's Chrome and Edge lists are shared with whoever else writes them, so the agent
//! removes only entries it recorded as added itself ([`crate::autoselect::sync`]); Safari's
//! identity preferences for protected origins are recorded by origin (list [`SAFARI_LIST`])
//! and, being names other tools may use too, removed only while they point at our identity.
//!
//! Chrome and Edge read the policy `AutoSelectCertificateForUrls` from their preference
//! domains; the merge itself is [`crate::autoselect`]'s, shared with Linux, so "ours" and
//! "never disturb the rest" mean the same everywhere. A user-level value may be treated by
//! Chrome as *recommended* rather than mandatory, which is why `status` reports whether the
//! effective value is managed (forced by a configuration profile; see `devicetrust-agent
//! profile chrome`).

use crate::autoselect::{self, OurEntry};
use crate::origin::OriginError;
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

/// Why the browser targets cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BrowserTargetError {
    /// `certAuthDomain` is not a safe https origin (the one validator, [`crate::origin::Origin::parse`]).
    #[error("the cert-auth domain cannot be used: {0}")]
    BadCertAuthDomain(#[from] OriginError),
    /// The configured organisation domain is not a plain DNS name.
    #[error("the organisation domain {value:?} is not a dns name such as example.com")]
    BadOrgDomain {
        /// The configured value.
        value: String,
    },
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
    BrowserStatus { browser: browser.to_owned(), present, managed: forced, installed: None, detail, origins }
}

/// Where a browser's application bundle is, system-wide and in the user's own
/// `~/Applications` (`home`): either means it is installed. Safari always is.
pub(crate) fn app_bundles(browser: &str, home: &std::path::Path) -> Vec<std::path::PathBuf> {
    let app = match browser {
        "chrome" => "Google Chrome.app",
        "edge" => "Microsoft Edge.app",
        "safari" => "Safari.app",
        _ => return Vec::new(),
    };
    vec![std::path::Path::new("/Applications").join(app), home.join("Applications").join(app)]
}

/// The browsers (status names) among `browsers` that keep the old certificate until they are
/// restarted: not Chrome and Edge, which switch when the keychain search list changes (see
/// `notify`); `browsers`, the name used when the list is unknown, stands for all of them.
pub(crate) fn needing_restart(browsers: &[String]) -> Vec<String> {
    browsers.iter().filter(|b| !matches!(b.as_str(), "chrome" | "edge")).cloned().collect()
}

/// A browser's application name (also its process name) for a status name; an unknown name
/// keeps only letters, digits and spaces.
pub(crate) fn display_name(browser: &str) -> String {
    match browser {
        "chrome" => "Google Chrome".to_owned(),
        "edge" => "Microsoft Edge".to_owned(),
        "safari" => "Safari".to_owned(),
        other => other.chars().filter(|c| c.is_ascii_alphanumeric() || *c == ' ').collect(),
    }
}

/// The AppleScript that tells the user to restart browsers after a renewal; `browsers` are
/// the status names (`chrome`, `edge`, `safari`). Only fixed text and sanitised names reach it.
pub(crate) fn restart_notification_script(browsers: &[String]) -> String {
    let names: Vec<String> = browsers.iter().map(|b| display_name(b)).collect();
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
    fn only_safari_needs_a_restart() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(needing_restart(&names(&["chrome", "edge", "safari"])), names(&["safari"]), "ok/safari");
        assert!(needing_restart(&names(&["chrome", "edge"])).is_empty(), "ok/chromium-switches-itself");
        assert_eq!(needing_restart(&names(&["browsers"])), names(&["browsers"]), "ok/unknown-kept");
    }

    #[test]
    fn app_bundles_table() {
        let home = std::path::Path::new("/Users/alice");
        assert_eq!(
            app_bundles("chrome", home),
            [
                std::path::PathBuf::from("/Applications/Google Chrome.app"),
                std::path::PathBuf::from("/Users/alice/Applications/Google Chrome.app")
            ],
            "ok/chrome"
        );
        assert_eq!(
            app_bundles("edge", home)[0],
            std::path::Path::new("/Applications/Microsoft Edge.app"),
            "ok/edge"
        );
        assert!(app_bundles("nssdb", home).is_empty(), "ok/not-an-app");
        assert_eq!(display_name("edge"), "Microsoft Edge", "ok/display-name");
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
}
