//! Safari's identity preferences, decided without touching the keychain: which names Safari's
//! lookup tries for an origin, which of those names a third-party tool can write, and which one
//! a lookup would pick.
//!
//! Safari (and every app on the system TLS stack) picks a client identity through identity
//! preferences: keychain items of class generic password and type `iprf` whose service is a
//! name. Since Security-59754.100.106 (macOS 11.3) two rules of
//! `OSX/libsecurity_keychain/lib/SecIdentity.cpp` decide which names work:
//!
//! * A lookup (`SecIdentityCopyPreference`) tries, first found wins, the names
//!   `_SecIdentityCopyPossiblePaths` makes from the URL: the URL without its query, each parent
//!   path, then `*.<suffix>` for every suffix left after dropping leading labels of the host
//!   (port removed), and it rewrites every name *that is a URL* to `"<url> (<looking-up app's
//!   id>)"`. The bare host name is never among them; wildcards are never rewritten.
//! * Setting a preference (`SecIdentitySetPreference`, through `SecIdentityCopyPerAppNameForName`)
//!   rewrites a URL-form name to `"<url> (<caller's app id>)"` unless the caller holds the
//!   `keychain-access-groups` `*` entitlement, which the agent does not.
//!
//! So a URL-form preference the agent writes is only ever found by the agent itself, and a bare
//! host is found by nobody that looks up a URL: the only names the agent can give Safari are
//! wildcards. It writes `*.<parent domain>` for each origin's host (and `*.<host>` for an origin
//! that includes subdomains, and `*.<org_domain>` when configured), never at or above a public
//! suffix (the Public Suffix List, through the `psl` crate), so that no preference reaches hosts
//! of another organisation. The price is that the wildcard also answers for the host's sibling
//! subdomains, all inside the organisation's own domain.
//!
//! `status` reports what Safari would find: it walks [`lookup_names`] with Safari's app id in
//! order and looks each name up exactly, so that a choice the user once made in Safari (stored
//! under the URL with Safari's id, and found first) shows up as what it is.

use crate::autoselect::OurEntry;
use crate::origin::Origin;
use crate::platform::{BrowserStatus, OriginStatus};

use super::browsers::BrowserTargetError;

/// Safari's application identifier as Security.framework computes it for a lookup
/// (`SecXPCCopyClientApplicationIdentifier` in `OSX/utilities/SecXPCUtils.m`: the
/// `application-identifier` entitlement, else the signing identifier). Not confirmed on a Mac
/// yet (Safari is closed source); `docs/macos.md` says how to confirm it. It only decides which
/// URL-form names [`lookup_names`] reports; the agent never writes one.
pub(crate) const SAFARI_APP_ID: &str = "com.apple.Safari";

/// One origin's identity preference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafariOrigin {
    /// The origin, in canonical form.
    pub origin: String,
    /// The root URL Safari looks up for it (`https://host[:port]/`).
    pub url: String,
    /// The names its identity preferences are set for; none that an earlier origin has.
    pub names: Vec<String>,
    /// Why no name can cover the origin's own host, when none can.
    pub uncovered: Option<&'static str>,
}

/// The wildcard `*.<domain>`, when `domain` is a registrable domain or below it (never a
/// public suffix such as `com` or `co.uk`, and never a single label).
fn wildcard_for(domain: &str) -> Option<String> {
    let registrable = psl::domain_str(domain).is_some_and(|d| d.len() <= domain.len());
    (registrable && domain.contains('.')).then(|| format!("*.{domain}"))
}

/// The names that let Safari find the identity for `origin`, and why its own host is not
/// covered when it is not.
fn names_for(origin: &Origin) -> (Vec<String>, Option<&'static str>) {
    let host = origin.host();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return (
            Vec::new(),
            Some(
                "Safari finds identity preferences for an IP address only under its URL, which only Safari can write",
            ),
        );
    }
    let mut names = Vec::new();
    let parent = host.split_once('.').map(|(_, rest)| rest);
    let uncovered = match parent.and_then(wildcard_for) {
        Some(wildcard) => {
            names.push(wildcard);
            None
        }
        None => {
            Some("its parent domain is a public suffix, and Safari finds no other name the agent can write")
        }
    };
    if origin.includes_subdomains()
        && let Some(wildcard) = wildcard_for(host)
    {
        names.push(wildcard);
    }
    (names, uncovered)
}

/// The identity preference names per origin: the cert-auth domain's first (with the
/// organisation's wildcard when `org_domain` is set), then each further entry's (`protected`, as
/// [`crate::autoselect::wanted`] made them). A name already given to an earlier origin is not
/// repeated. The cert-auth domain goes through the same validator as every other browser
/// setting, so nothing here is broader than what Chrome and Edge are told, save the wildcard.
///
/// The organisation domain is never guessed beyond the host's parent: dropping two labels of
/// `ca.example.co.uk` would give `*.co.uk`, a preference for half a country.
pub(crate) fn safari_origins(
    cert_auth_domain: &str,
    org_domain: Option<&str>,
    protected: &[OurEntry],
) -> Result<Vec<SafariOrigin>, BrowserTargetError> {
    let first = Origin::parse(cert_auth_domain)?;
    let (mut names, mut uncovered) = names_for(&first);
    if let Some(org) = org_domain.map(str::trim).filter(|o| !o.is_empty()) {
        let org = org.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
        let wildcard = crate::origin::is_dns_name(&org).then(|| wildcard_for(&org)).flatten();
        let Some(wildcard) = wildcard else { return Err(BrowserTargetError::BadOrgDomain { value: org }) };
        let covers = first.host().strip_suffix(org.as_str()).is_some_and(|rest| rest.ends_with('.'));
        if covers {
            uncovered = None;
        }
        if !names.contains(&wildcard) {
            names.push(wildcard);
        }
    }
    let mut seen = names.clone();
    let mut out = vec![SafariOrigin { origin: first.to_string(), url: first.root_url(), names, uncovered }];
    for entry in protected.iter().filter(|e| e.pattern() != first.to_string()) {
        let origin = Origin::parse(entry.pattern())?;
        let (mut names, uncovered) = names_for(&origin);
        names.retain(|n| !seen.contains(n));
        seen.extend(names.iter().cloned());
        out.push(SafariOrigin { origin: origin.to_string(), url: origin.root_url(), names, uncovered });
    }
    Ok(out)
}

/// The names versions before 0.5 wrote for an origin (its root URL, which Security.framework
/// stored under the agent's own app id, and its bare host): found by no browser, removed while
/// they point at the agent's identity.
pub(crate) fn legacy_names(origin: &str) -> Vec<String> {
    Origin::parse(origin).map(|o| vec![o.root_url(), o.host().to_owned()]).unwrap_or_default()
}

/// The names of protected origins recorded earlier (`recorded`, canonical patterns) that are
/// no longer wanted, and every origin's legacy names ([`legacy_names`]), minus every name still
/// wanted: what to clear (while it points at us).
pub(crate) fn safari_retired_names(recorded: &[String], wanted: &[SafariOrigin]) -> Vec<String> {
    let still: Vec<&String> = wanted.iter().flat_map(|o| &o.names).collect();
    let mut out: Vec<String> = Vec::new();
    let dropped = recorded.iter().filter(|p| wanted.iter().all(|o| o.origin != **p));
    for pattern in dropped {
        let Ok(origin) = Origin::parse(pattern) else { continue };
        out.extend(names_for(&origin).0);
        out.extend(legacy_names(pattern));
    }
    for origin in wanted {
        out.extend(legacy_names(&origin.origin));
    }
    let mut unique = Vec::new();
    for name in out {
        if !still.contains(&&name) && !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// The names a lookup by `app_id` tries for `url`, in order: a transcription of
/// `_SecIdentityCopyPossiblePaths` (`OSX/libsecurity_keychain/lib/SecIdentity.cpp`,
/// Security-61901): the URL without its query, each parent path, `*.<suffix>` for every suffix
/// of the host after dropping one or more leading labels (port removed; `*.com` included, as
/// there), and then every URL-form name suffixed with `" (<app_id>)"`.
pub(crate) fn lookup_names(url: &str, app_id: Option<&str>) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(url) else { return vec![url.to_owned()] };
    let without_query = url.split_once('?').map_or(url, |(before, _)| before).to_owned();
    let mut urls = vec![without_query.clone()];
    let mut current = without_query;
    // Each level of the path, as CFURLCreateCopyDeletingLastPathComponent gives it; bounded by
    // the number of slashes.
    for _ in 0..current.matches('/').count() {
        let trimmed = current.trim_end_matches('/');
        let Some(cut) = trimmed.rfind('/') else { break };
        let parent = &trimmed[..=cut];
        if parent.len() >= current.len() || parent.ends_with("//") {
            break;
        }
        current = parent.to_owned();
        urls.push(current.clone());
    }
    let mut names: Vec<String> = urls
        .into_iter()
        .map(|u| match app_id {
            Some(id) => format!("{u} ({id})"),
            None => u,
        })
        .collect();
    if let Some(host) = parsed.host_str() {
        let labels: Vec<&str> = host.split('.').collect();
        for start in 1..labels.len() {
            let rest: Vec<&str> = labels[start..].iter().copied().filter(|l| !l.is_empty()).collect();
            if !rest.is_empty() {
                names.push(format!("*.{}", rest.join(".")));
            }
        }
    }
    names
}

/// What an exact lookup of one name found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No preference of that name.
    Nothing,
    /// A preference for the agent's current identity.
    Ours,
    /// A preference for another identity (or one that no longer resolves).
    Other,
}

/// What Safari's lookup finds for one origin: the first name in `names` (from
/// [`lookup_names`]) that `find` finds, with what it points at.
pub(crate) fn safari_pick(names: &[String], mut find: impl FnMut(&str) -> Found) -> Option<(String, Found)> {
    names.iter().find_map(|name| match find(name) {
        Found::Nothing => None,
        found => Some((name.clone(), found)),
    })
}

/// Safari's status from what its lookup finds for each origin (`None`: nothing).
pub(crate) fn safari_status(origins: &[(SafariOrigin, Option<(String, Found)>)]) -> BrowserStatus {
    let mut problems = Vec::new();
    for (origin, pick) in origins {
        match pick {
            Some((_, Found::Ours)) => {}
            Some((name, _)) => problems.push(format!(
                "Safari would present another identity for {} (the preference {name:?} comes first)",
                origin.url
            )),
            None => match origin.uncovered {
                Some(why) => problems.push(format!("Safari cannot be given {}: {why}", origin.url)),
                None => problems.push(format!("no identity preference Safari finds for {}", origin.url)),
            },
        }
    }
    BrowserStatus {
        browser: "safari".to_owned(),
        present: !origins.is_empty() && problems.is_empty(),
        // Identity preferences are per user; there is no managed form.
        managed: false,
        // Part of macOS.
        installed: Some(true),
        detail: (!problems.is_empty()).then(|| problems.join("; ")),
        origins: origins
            .iter()
            .map(|(origin, pick)| OriginStatus {
                origin: origin.origin.clone(),
                entry: if matches!(pick, Some((_, Found::Ours))) {
                    crate::autoselect::Status::Present
                } else {
                    crate::autoselect::Status::Absent
                },
            })
            .collect(),
    }
}

/// What an identity preference item that exists points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointsAt {
    /// The agent's current identity.
    Current,
    /// Another certificate of the agent's CA (one a renewal replaced).
    OurCa,
    /// Anything else, or a certificate that is gone.
    Other,
}

/// An identity preference item as stored: its exact name and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Existing {
    /// The stored name, app-id suffix included.
    pub name: String,
    /// What it points at.
    pub points_at: PointsAt,
}

/// The stored items a name stands for: itself, and for a URL-form name every `"<url> (<app
/// id>)"` the framework made of it.
fn stored<'a>(name: &'a str, existing: &'a [Existing]) -> impl Iterator<Item = &'a Existing> + 'a {
    let suffixed = format!("{name} (");
    let is_url = name.contains("://");
    existing.iter().filter(move |e| e.name == name || (is_url && e.name.starts_with(&suffixed)))
}

/// What [`plan_apply`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Names to point at the current identity.
    pub set: Vec<String>,
    /// Stored names to delete.
    pub delete: Vec<String>,
    /// Names of protected origins that point at someone else's identity: theirs, left alone,
    /// as Chrome's foreign entries are.
    pub left_alone: Vec<String>,
}

/// What an apply does with Safari's preferences: every wanted name that does not point at the
/// current identity is set (a protected origin's name that points at another identity, a smart
/// card say, is left alone; the cert-auth domain's names are ours by definition), and every
/// retired or legacy name ([`safari_retired_names`]) is deleted while it points at an identity
/// of ours.
pub(crate) fn plan_apply(origins: &[SafariOrigin], recorded: &[String], existing: &[Existing]) -> Plan {
    let mut plan = Plan::default();
    for name in safari_retired_names(recorded, origins) {
        for item in stored(&name, existing).filter(|e| e.points_at != PointsAt::Other) {
            if !plan.delete.contains(&item.name) {
                plan.delete.push(item.name.clone());
            }
        }
    }
    for (index, origin) in origins.iter().enumerate() {
        for name in &origin.names {
            match existing.iter().find(|e| e.name == *name).map(|e| e.points_at) {
                Some(PointsAt::Current) => {}
                Some(PointsAt::Other) if index > 0 => plan.left_alone.push(name.clone()),
                _ => plan.set.push(name.clone()),
            }
        }
    }
    plan
}

/// The stored names an uninstall deletes: every name of every origin (wanted, retired and
/// legacy) while it points at an identity of ours, and the cert-auth domain's legacy names
/// (its URL and host: our CA's own site) whatever they point at.
pub(crate) fn plan_remove(
    origins: &[SafariOrigin],
    recorded: &[String],
    existing: &[Existing],
) -> Vec<String> {
    let mut names: Vec<String> = origins.iter().flat_map(|o| o.names.iter().cloned()).collect();
    names.extend(safari_retired_names(recorded, &[]));
    names.extend(origins.iter().flat_map(|o| legacy_names(&o.origin)));
    let always: Vec<String> = origins.first().map(|o| legacy_names(&o.origin)).unwrap_or_default();
    let mut delete = Vec::new();
    for name in &names {
        let ours_by_definition = always.contains(name);
        for item in stored(name, existing) {
            if (ours_by_definition || item.points_at != PointsAt::Other) && !delete.contains(&item.name) {
                delete.push(item.name.clone());
            }
        }
    }
    delete
}

/// What an exact lookup of `name` among `existing` finds, as Safari's lookup sees it: only the
/// current identity counts as ours.
pub(crate) fn found_in(existing: &[Existing], name: &str) -> Found {
    match existing.iter().find(|e| e.name == name).map(|e| e.points_at) {
        None => Found::Nothing,
        Some(PointsAt::Current) => Found::Ours,
        Some(_) => Found::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CN: &str = "MTLS Certificate Authority";
    const ORIGIN: &str = "https://cell-devicetrust.example.com";
    const APPS_ORIGIN: &str = "https://[*.]apps.example.com";

    fn entry(pattern: &str) -> OurEntry {
        OurEntry::new(pattern, CN).expect("entry")
    }

    fn owned(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Each case: the name (step-ca style), the URL, the app id, the names in order.
    #[test]
    fn lookup_names_table() {
        let cases: &[(&str, &str, Option<&str>, &[&str])] = &[
            (
                "ok/root-with-app-id",
                "https://auth.example.com/",
                Some("com.apple.Safari"),
                &["https://auth.example.com/ (com.apple.Safari)", "*.example.com", "*.com"],
            ),
            (
                "ok/no-app-id",
                "https://auth.example.com/",
                None,
                &["https://auth.example.com/", "*.example.com", "*.com"],
            ),
            (
                "ok/port-stripped-from-wildcards",
                "https://wiki.example.com:8443/",
                None,
                &["https://wiki.example.com:8443/", "*.example.com", "*.com"],
            ),
            (
                "ok/query-and-parents",
                "https://a.b.example.com/x/y?q=1",
                None,
                &[
                    "https://a.b.example.com/x/y",
                    "https://a.b.example.com/x/",
                    "https://a.b.example.com/",
                    "*.b.example.com",
                    "*.example.com",
                    "*.com",
                ],
            ),
            ("ok/single-label", "https://intranet/", None, &["https://intranet/"]),
            ("fail/not-a-url", "*.example.com", Some("com.apple.Safari"), &["*.example.com"]),
        ];
        for (name, url, app, want) in cases {
            assert_eq!(lookup_names(url, *app), owned(want), "{name}");
        }
    }

    /// Each case: the name, the cert-auth domain, the org domain, per origin its names and
    /// whether its own host is covered.
    #[test]
    fn safari_origins_table() {
        type Want<'a> = &'a [(&'a str, &'a [&'a str], bool)];
        let cases: &[(&str, &str, Option<&str>, Vec<OurEntry>, Want<'_>)] = &[
            ("ok/parent-wildcard", ORIGIN, None, vec![], &[(ORIGIN, &["*.example.com"], true)]),
            (
                "ok/org-same-as-parent",
                ORIGIN,
                Some("Example.com"),
                vec![],
                &[(ORIGIN, &["*.example.com"], true)],
            ),
            (
                "ok/org-broader-than-parent",
                "https://ca.it.example.com",
                Some("*.example.com"),
                vec![],
                &[("https://ca.it.example.com", &["*.it.example.com", "*.example.com"], true)],
            ),
            ("ok/blank-org-ignored", ORIGIN, Some(" "), vec![], &[(ORIGIN, &["*.example.com"], true)]),
            (
                "ok/per-origin-names-once",
                ORIGIN,
                None,
                vec![entry(ORIGIN), entry(APPS_ORIGIN), entry("https://wiki.example.com:8443")],
                &[
                    (ORIGIN, &["*.example.com"], true),
                    (APPS_ORIGIN, &["*.apps.example.com"], true),
                    ("https://wiki.example.com:8443", &[], true),
                ],
            ),
            (
                "ok/other-organisation",
                ORIGIN,
                None,
                vec![entry("https://sso.partner.example.org")],
                &[
                    (ORIGIN, &["*.example.com"], true),
                    ("https://sso.partner.example.org", &["*.partner.example.org"], true),
                ],
            ),
            (
                "fail/host-under-public-suffix",
                "https://example.co.uk",
                None,
                vec![],
                &[("https://example.co.uk", &[], false)],
            ),
            (
                "fail/subdomains-of-registrable",
                "https://[*.]example.com",
                None,
                vec![],
                &[("https://[*.]example.com", &["*.example.com"], false)],
            ),
            (
                "fail/ip-address",
                "https://127.0.0.1:8443",
                None,
                vec![],
                &[("https://127.0.0.1:8443", &[], false)],
            ),
            (
                "ok/org-elsewhere-added-too",
                "https://ca.example.co.uk",
                Some("example.org"),
                vec![],
                &[("https://ca.example.co.uk", &["*.example.co.uk", "*.example.org"], true)],
            ),
        ];
        for (name, domain, org, entries, want) in cases {
            let got = safari_origins(domain, *org, entries).expect(name);
            let got: Vec<(&str, Vec<&str>, bool)> = got
                .iter()
                .map(|o| {
                    (o.origin.as_str(), o.names.iter().map(String::as_str).collect(), o.uncovered.is_none())
                })
                .collect();
            let want: Vec<(&str, Vec<&str>, bool)> =
                want.iter().map(|(o, n, c)| (*o, n.to_vec(), *c)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn refused_org_domains() {
        for (name, org) in [
            ("fail/single-label-org", "com"),
            ("fail/public-suffix-org", "co.uk"),
            ("fail/org-with-space", "exa mple.com"),
        ] {
            assert!(
                matches!(
                    safari_origins(ORIGIN, Some(org), &[]),
                    Err(BrowserTargetError::BadOrgDomain { .. })
                ),
                "{name}"
            );
        }
        for (name, domain) in [
            ("fail/http", "http://ca.example.com"),
            ("fail/not-a-url", "ca.example.com"),
            ("fail/star-label", "https://*.example.com"),
            ("fail/path", "https://evil.example/path"),
            ("fail/userinfo", "https://u@ca.example.com"),
        ] {
            assert!(
                matches!(safari_origins(domain, None, &[]), Err(BrowserTargetError::BadCertAuthDomain(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn retired_names_table() {
        let wanted = safari_origins(ORIGIN, None, &[entry(ORIGIN), entry("https://wiki.example.com:8443")])
            .expect("origins");
        assert_eq!(
            safari_retired_names(&owned(&[APPS_ORIGIN, "https://wiki.example.com:8443"]), &wanted),
            owned(&[
                "*.apps.example.com",
                "https://apps.example.com/",
                "apps.example.com",
                "https://cell-devicetrust.example.com/",
                "cell-devicetrust.example.com",
                "https://wiki.example.com:8443/",
                "wiki.example.com",
            ]),
            "ok/dropped-origin-and-every-legacy-name"
        );
        let retired = safari_retired_names(&owned(&["not an origin"]), &wanted);
        assert!(
            !retired.iter().any(|n| n.starts_with("*.example.com")),
            "fail/a-wanted-name-is-never-retired"
        );
    }

    /// The first name found decides, as in `SecIdentityCopyPreference`: a choice the user made
    /// in Safari (under the URL with Safari's id) beats the agent's wildcard.
    #[test]
    fn safari_status_table() {
        let origins = safari_origins(ORIGIN, None, &[]).expect("origins");
        let names = lookup_names(&origins[0].url, Some(SAFARI_APP_ID));
        let url_name = format!("{} ({SAFARI_APP_ID})", origins[0].url);
        type Case<'a> = (&'a str, &'a dyn Fn(&str) -> Found, bool, Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (
                "ok/wildcard-ours",
                &|n| if n == "*.example.com" { Found::Ours } else { Found::Nothing },
                true,
                None,
            ),
            (
                "fail/user-choice-first",
                &|n| {
                    if n == url_name {
                        Found::Other
                    } else if n == "*.example.com" {
                        Found::Ours
                    } else {
                        Found::Nothing
                    }
                },
                false,
                Some(
                    "the preference \"https://cell-devicetrust.example.com/ (com.apple.Safari)\" comes first",
                ),
            ),
            ("fail/nothing", &|_| Found::Nothing, false, Some("no identity preference Safari finds")),
            (
                "fail/tld-wildcard-of-someone-else",
                &|n| if n == "*.com" { Found::Other } else { Found::Nothing },
                false,
                Some("\"*.com\" comes first"),
            ),
        ];
        for (name, find, present, detail) in cases {
            let pick = safari_pick(&names, find);
            let status = safari_status(&[(origins[0].clone(), pick)]);
            assert_eq!(status.present, *present, "{name}");
            match detail {
                None => assert_eq!(status.detail, None, "{name}"),
                Some(part) => assert!(
                    status.detail.as_deref().is_some_and(|d| d.contains(part)),
                    "{name}: {:?}",
                    status.detail
                ),
            }
        }
        let uncovered = safari_origins("https://example.co.uk", None, &[]).expect("origins");
        let status = safari_status(&[(uncovered[0].clone(), None)]);
        assert!(status.detail.is_some_and(|d| d.contains("public suffix")), "fail/uncovered-says-why");
        assert!(!safari_status(&[]).present, "fail/no-origins");
    }

    fn existing(items: &[(&str, PointsAt)]) -> Vec<Existing> {
        items.iter().map(|(n, p)| Existing { name: (*n).to_owned(), points_at: *p }).collect()
    }

    /// Each case: the name, what exists, the plan.
    #[test]
    fn plan_apply_table() {
        use PointsAt::{Current, Other, OurCa};
        let origins =
            safari_origins(ORIGIN, None, &[entry(ORIGIN), entry("https://sso.partner.example.org")])
                .expect("origins");
        const LEGACY_URL: &str = "https://cell-devicetrust.example.com/ (com.devicetrust.agent)";
        type Case<'a> = (&'a str, Vec<Existing>, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: Vec<Case<'_>> = vec![
            ("ok/fresh", existing(&[]), &["*.example.com", "*.partner.example.org"], &[], &[]),
            (
                "ok/in-place",
                existing(&[("*.example.com", Current), ("*.partner.example.org", Current)]),
                &[],
                &[],
                &[],
            ),
            (
                "ok/after-renewal",
                existing(&[("*.example.com", OurCa), ("*.partner.example.org", OurCa)]),
                &["*.example.com", "*.partner.example.org"],
                &[],
                &[],
            ),
            (
                "ok/legacy-names-of-ours-go",
                existing(&[
                    ("*.example.com", Current),
                    ("*.partner.example.org", Current),
                    (LEGACY_URL, Current),
                    ("cell-devicetrust.example.com", OurCa),
                ]),
                &[],
                &[LEGACY_URL, "cell-devicetrust.example.com"],
                &[],
            ),
            (
                "ok/safaris-own-choice-of-another-identity-stays",
                existing(&[
                    ("*.example.com", Current),
                    ("*.partner.example.org", Current),
                    ("https://cell-devicetrust.example.com/ (com.apple.Safari)", Other),
                ]),
                &[],
                &[],
                &[],
            ),
            (
                "ok/partner-smart-card-left-alone",
                existing(&[("*.example.com", Other), ("*.partner.example.org", Other)]),
                &["*.example.com"],
                &[],
                &["*.partner.example.org"],
            ),
        ];
        for (name, existing, set, delete, left) in cases {
            let plan = plan_apply(&origins, &[], &existing);
            assert_eq!(
                plan,
                Plan { set: owned(set), delete: owned(delete), left_alone: owned(left) },
                "{name}"
            );
        }
        let dropped = plan_apply(
            &origins[..1],
            &owned(&["https://sso.partner.example.org"]),
            &existing(&[("*.example.com", Current), ("*.partner.example.org", Current)]),
        );
        assert_eq!(dropped.delete, owned(&["*.partner.example.org"]), "ok/dropped-origin-goes");
    }

    #[test]
    fn plan_remove_table() {
        use PointsAt::{Current, Other, OurCa};
        let origins =
            safari_origins(ORIGIN, None, &[entry(ORIGIN), entry("https://sso.partner.example.org")])
                .expect("origins");
        let items = existing(&[
            ("*.example.com", Current),
            ("*.partner.example.org", Other),
            ("https://cell-devicetrust.example.com/ (com.apple.Safari)", Other),
            ("https://sso.partner.example.org/ (com.devicetrust.agent)", OurCa),
            ("unrelated.example.net", Current),
        ]);
        assert_eq!(
            plan_remove(&origins, &[], &items),
            owned(&[
                "*.example.com",
                "https://cell-devicetrust.example.com/ (com.apple.Safari)",
                "https://sso.partner.example.org/ (com.devicetrust.agent)",
            ]),
            "ours, and whatever names our CA's own site; never someone else's name elsewhere"
        );
        assert_eq!(found_in(&items, "*.example.com"), Found::Ours);
        assert_eq!(found_in(&items, "*.partner.example.org"), Found::Other);
        assert_eq!(found_in(&items, "*.nothing.example"), Found::Nothing);
    }
}
