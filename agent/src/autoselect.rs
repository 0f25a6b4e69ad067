//! Chrome's `AutoSelectCertificateForUrls` entries: building ours, reading a list, and
//! changing a list without disturbing anyone else's entries.
//!
//! The policy is a list of JSON strings such as
//! `{"pattern":"https://ca.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}`.
//! Linux writes it into Chromium's managed policy files and macOS into CFPreferences; both use
//! these pure functions, so "ours", "present" and "never touch the rest" mean the same everywhere.
//!
//! Lists are administered by people and other tools, so anything we cannot read (not JSON, no
//! pattern) is carried through unchanged rather than rejected.
//!
//! # One entry per origin
//!
//! The agent wants one entry per origin ([`wanted`]): the CA's cert-auth domain first, then
//! every origin of the metadata's `protectedOrigins`, each through the one origin validator
//! ([`crate::origin`]), identical patterns once. An invalid protected origin is skipped (and
//! reported), never written; an invalid cert-auth domain is an error, as it always was.
//!
//! # Which entries are ours to remove
//!
//! When the CA drops an origin, its entry must go, but a list shared with others may hold an
//! entry that looks exactly like ours (same pattern, same issuer-CN filter) and that an
//! administrator wrote by hand. The text of an entry cannot tell the two apart, so the agent
//! remembers what it added: [`sync`] takes the entries this agent appended to that list
//! before (`written`, kept in the agent's state file per list) and returns the new record.
//! An entry is removed only when it is in that record and no longer wanted; an entry that
//! was already there when the agent wanted it (`AlreadyPresent`) is never recorded, so it is
//! never removed. Recording the published set of patterns instead would make the hand-written
//! twin ours the moment the CA published its pattern.
//!
//! Where the agent owns the whole list (Linux: its own policy file, rebuilt from the other
//! files at every install) nothing needs remembering; see `crate::platform::linux::chromium_policy`.

use serde::Serialize;
use serde_json::Value;

use crate::origin::{Origin, OriginError};

/// The entries the agent wants in a list, and the protected origins it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// One entry per origin, the cert-auth domain's first, each pattern once.
    pub entries: Vec<OurEntry>,
    /// Protected origins that failed the origin check, as given, with the reason; never written.
    pub skipped: Vec<OriginError>,
}

/// The entries for the cert-auth domain and every protected origin, in that order, each
/// checked with [`OurEntry::new`]. A bad cert-auth domain or issuer CN is an error (nothing can
/// be written); a bad protected origin is skipped and listed in [`Wanted::skipped`].
pub(crate) fn wanted(
    cert_auth_domain: &str,
    protected_origins: &[String],
    issuer_cn: &str,
) -> Result<Wanted, AutoSelectError> {
    let mut entries = vec![OurEntry::new(cert_auth_domain, issuer_cn)?];
    let mut skipped = Vec::new();
    for origin in protected_origins {
        match OurEntry::new(origin, issuer_cn) {
            // Canonical patterns compare as plain strings.
            Ok(entry) if entries.iter().any(|e| e.pattern == entry.pattern) => {}
            Ok(entry) => entries.push(entry),
            Err(AutoSelectError::Origin(e)) => skipped.push(e),
            // The issuer CN was checked with the cert-auth domain's entry above.
            Err(e) => return Err(e),
        }
    }
    Ok(Wanted { entries, skipped })
}

/// Why our entry cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AutoSelectError {
    /// The URL pattern is not a safe https origin (see [`crate::origin`]).
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The issuer common name is empty.
    #[error("the issuer common name for the auto-select filter is empty")]
    EmptyIssuer,
    /// The issuer common name holds control characters.
    #[error("the issuer common name {issuer_cn:?} contains control characters")]
    InvalidIssuer {
        /// The issuer CN as given.
        issuer_cn: String,
    },
}

/// The entry this agent owns: a pattern (the cert-auth origin) and an issuer CN filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OurEntry {
    pattern: String,
    issuer_cn: String,
}

impl OurEntry {
    /// Checks the pattern with the one origin validator ([`Origin::parse`]: an https origin,
    /// no path, no wildcard but a leading `[*.]`) and the issuer CN. The pattern is kept in
    /// the origin's canonical form (lowercase host, no default port, no trailing `/`).
    pub(crate) fn new(pattern: &str, issuer_cn: &str) -> Result<Self, AutoSelectError> {
        let origin = Origin::parse(pattern)?;
        if issuer_cn.is_empty() {
            return Err(AutoSelectError::EmptyIssuer);
        }
        if issuer_cn.chars().any(char::is_control) {
            return Err(AutoSelectError::InvalidIssuer { issuer_cn: issuer_cn.to_owned() });
        }
        Ok(Self { pattern: origin.to_string(), issuer_cn: issuer_cn.to_owned() })
    }

    /// The URL pattern.
    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The issuer CN the filter matches.
    pub(crate) fn issuer_cn(&self) -> &str {
        &self.issuer_cn
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// Reads back an entry in exactly the shape [`OurEntry::to_json`] writes (a safe pattern and
    /// a filter of nothing but the issuer CN); `None` for anything else.
    pub(crate) fn from_json(raw: &str) -> Option<Self> {
        let entry = parse(raw)?;
        let issuer_cn =
            entry.filter.as_ref()?.as_object()?.get("ISSUER")?.as_object()?.get("CN")?.as_str()?;
        let ours = Self::new(&entry.pattern, issuer_cn).ok()?;
        (entry.filter.as_ref() == Some(&ours.filter_value())).then_some(ours)
    }

    /// The policy string, keys in the order Chrome's documentation shows them.
    pub(crate) fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Name<'a> {
            #[serde(rename = "CN")]
            cn: &'a str,
        }
        #[derive(Serialize)]
        struct Filter<'a> {
            #[serde(rename = "ISSUER")]
            issuer: Name<'a>,
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            pattern: &'a str,
            filter: Filter<'a>,
        }
        let entry = Entry { pattern: &self.pattern, filter: Filter { issuer: Name { cn: &self.issuer_cn } } };
        // Serialising borrowed strings into a String cannot fail; the fallback keeps the
        // function total without a panic path.
        serde_json::to_string(&entry).unwrap_or_default()
    }

    fn filter_value(&self) -> Value {
        serde_json::json!({ "ISSUER": { "CN": self.issuer_cn } })
    }

    fn classify(&self, parsed: Option<&Entry>) -> Kind {
        match parsed {
            Some(entry) if same_pattern(&entry.pattern, &self.pattern) => {
                if entry.filter.as_ref() == Some(&self.filter_value()) {
                    Kind::Ours
                } else {
                    Kind::SamePatternOtherFilter
                }
            }
            _ => Kind::Other,
        }
    }
}

/// One list entry as read: its pattern and its filter, if any.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The URL pattern, as written.
    pub pattern: String,
    /// The filter object, as written; `None` when the entry has none.
    pub filter: Option<Value>,
}

/// Reads one entry; `None` for anything that is not a JSON object with a string `pattern`.
pub(crate) fn parse(entry: &str) -> Option<Entry> {
    let value: Value = serde_json::from_str(entry).ok()?;
    let object = value.as_object()?;
    let pattern = object.get("pattern")?.as_str()?.to_owned();
    let filter = object.get("filter").cloned();
    Some(Entry { pattern, filter })
}

#[cfg(test)]
/// Reads every entry of a list, position for position; unreadable entries are `None`.
pub(crate) fn parse_list(list: &[String]) -> Vec<Option<Entry>> {
    list.iter().map(|entry| parse(entry)).collect()
}

/// Whether our entry is in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Our exact entry is there.
    Present,
    /// Our pattern is there, but only with another filter (someone else's setting wins).
    PresentWithOtherFilter,
    /// No entry for our pattern.
    Absent,
}

/// What a [`merge`] or [`remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    /// Our entry was appended.
    Added,
    /// Our entry was already there; nothing changed.
    AlreadyPresent,
    /// Another entry already covers our pattern with another filter; nothing changed, because
    /// Chrome uses the first matching entry and an administrator's choice must win.
    PatternHasOtherFilter,
    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// This many copies of our entry were removed.
    Removed(usize),
    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// Our entry was not there; nothing changed.
    NotPresent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    SamePatternOtherFilter,
    Other,
}

// Chrome matches schemes and hosts case-insensitively, and an origin with or without a
// trailing slash names the same site.
fn same_pattern(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/').eq_ignore_ascii_case(b.trim().trim_end_matches('/'))
}

/// Whether our entry, or another entry for our pattern, is in `list`.
pub(crate) fn status(list: &[String], ours: &OurEntry) -> Status {
    let kinds: Vec<Kind> = list.iter().map(|raw| ours.classify(parse(raw).as_ref())).collect();
    if kinds.contains(&Kind::Ours) {
        Status::Present
    } else if kinds.contains(&Kind::SamePatternOtherFilter) {
        Status::PresentWithOtherFilter
    } else {
        Status::Absent
    }
}

/// Appends our entry unless an entry for our pattern already exists; every other entry is kept
/// byte for byte and in order.
pub(crate) fn merge(existing: &[String], ours: &OurEntry) -> (Vec<String>, Change) {
    let mut list = existing.to_vec();
    let change = match status(existing, ours) {
        Status::Present => Change::AlreadyPresent,
        Status::PresentWithOtherFilter => Change::PatternHasOtherFilter,
        Status::Absent => {
            list.push(ours.to_json());
            Change::Added
        }
    };
    (list, change)
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
/// Removes our entry (every copy of it) and nothing else; other entries for the same pattern
/// belong to someone else and stay.
pub(crate) fn remove(existing: &[String], ours: &OurEntry) -> (Vec<String>, Change) {
    let list: Vec<String> =
        existing.iter().filter(|raw| ours.classify(parse(raw).as_ref()) != Kind::Ours).cloned().collect();
    let removed = existing.len() - list.len();
    let change = if removed == 0 { Change::NotPresent } else { Change::Removed(removed) };
    (list, change)
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
/// Removes the first copy of our entry and nothing else. The copy the agent appended is the
/// first one: it is only appended when none is there, so any later twin is someone else's.
fn remove_first(existing: &[String], ours: &OurEntry) -> (Vec<String>, Change) {
    let mut list = existing.to_vec();
    match list.iter().position(|raw| ours.classify(parse(raw).as_ref()) == Kind::Ours) {
        Some(i) => {
            list.remove(i);
            (list, Change::Removed(1))
        }
        None => (list, Change::NotPresent),
    }
}

/// Appends each of `wanted` as [`merge`] does, in order; the changes are position for
/// position with `wanted`.
pub(crate) fn merge_all(existing: &[String], wanted: &[OurEntry]) -> (Vec<String>, Vec<Change>) {
    let mut list = existing.to_vec();
    let mut changes = Vec::with_capacity(wanted.len());
    for entry in wanted {
        let (next, change) = merge(&list, entry);
        list = next;
        changes.push(change);
    }
    (list, changes)
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
/// What [`sync`] did to a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Synced {
    /// The list to write (equal to the input when nothing changed).
    pub list: Vec<String>,
    /// What happened to each wanted entry, position for position.
    pub changes: Vec<Change>,
    /// The entries removed because the agent wrote them and no longer wants them.
    pub retired: Vec<OurEntry>,
    /// The new record of what the agent added to this list: what it added before and still
    /// wants, plus what it added now.
    pub written: Vec<String>,
}

impl Synced {
    /// Whether the list changed.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    pub(crate) fn list_changed(&self, existing: &[String]) -> bool {
        self.list != existing
    }
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
/// Brings a shared list to `wanted`: removes our entries that the agent itself added earlier
/// (`written`, the record [`Synced::written`] returned last time) and no longer wants, then
/// appends each wanted entry that has no entry for its pattern. Every other entry, including
/// one identical to ours that the agent did not add (but for the cert-auth domain's, which is
/// always ours), stays byte for byte and in order.
pub(crate) fn sync(existing: &[String], wanted: &[OurEntry], written: &[String]) -> Synced {
    let previous: Vec<OurEntry> = written.iter().filter_map(|raw| OurEntry::from_json(raw)).collect();
    let retired: Vec<OurEntry> = previous.iter().filter(|p| !wanted.contains(p)).cloned().collect();
    let mut list = existing.to_vec();
    let mut removed = Vec::new();
    for entry in &retired {
        let (next, change) = remove_first(&list, entry);
        list = next;
        if matches!(change, Change::Removed(_)) {
            removed.push(entry.clone());
        }
    }
    let (list, changes) = merge_all(&list, wanted);
    let mut record: Vec<String> = Vec::new();
    for (i, (entry, change)) in wanted.iter().zip(&changes).enumerate() {
        // The cert-auth domain's entry (first) is ours whoever wrote it, as on uninstall: an
        // agent from before the record existed wrote it, and it must retire when the CA's
        // issuer or domain changes.
        let ours_before = i == 0 || previous.contains(entry);
        if *change == Change::Added || (ours_before && *change == Change::AlreadyPresent) {
            record.push(entry.to_json());
        }
    }
    Synced { list, changes, retired: removed, written: record }
}

#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
/// Removes every entry the agent recorded as its own (`written`) and the entries of `always`
/// (our exact entry for the cert-auth domain, which names the CA's own site); nothing else.
/// Returns the list and how many entries went.
pub(crate) fn remove_ours(
    existing: &[String],
    always: &[OurEntry],
    written: &[String],
) -> (Vec<String>, usize) {
    let mut targets: Vec<OurEntry> = always.to_vec();
    for entry in written.iter().filter_map(|raw| OurEntry::from_json(raw)) {
        if !targets.contains(&entry) {
            targets.push(entry);
        }
    }
    let mut list = existing.to_vec();
    for entry in &targets {
        list = remove(&list, entry).0;
    }
    let removed = existing.len() - list.len();
    (list, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://cell-devicetrust.example.com";
    const CN: &str = "MTLS Certificate Authority";
    const OURS: &str = r#"{"pattern":"https://cell-devicetrust.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#;
    const OTHER_SITE: &str =
        r#"{"pattern":"https://intranet.example.com","filter":{"ISSUER":{"CN":"Corp CA"}}}"#;
    const SAME_SITE_OTHER_FILTER: &str =
        r#"{"pattern":"https://cell-devicetrust.example.com","filter":{"SUBJECT":{"CN":"someone"}}}"#;

    fn ours() -> OurEntry {
        OurEntry::new(ORIGIN, CN).unwrap()
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn new_table() {
        use crate::origin::OriginProblem as P;
        let bad = |value: &str, problem| {
            Err(AutoSelectError::Origin(OriginError { value: value.to_owned(), problem }))
        };
        let cases: &[(&str, &str, &str, Result<&str, AutoSelectError>)] = &[
            ("ok/origin", ORIGIN, CN, Ok(OURS)),
            ("ok/trailing-slash-dropped", "https://cell-devicetrust.example.com/", CN, Ok(OURS)),
            ("ok/canonical-form", "HTTPS://Cell-DeviceTrust.example.com:443", CN, Ok(OURS)),
            (
                "ok/port-kept",
                "https://ca.example.com:8443",
                "X",
                Ok(r#"{"pattern":"https://ca.example.com:8443","filter":{"ISSUER":{"CN":"X"}}}"#),
            ),
            (
                "ok/subdomain-wildcard",
                "https://[*.]example.com",
                "X",
                Ok(r#"{"pattern":"https://[*.]example.com","filter":{"ISSUER":{"CN":"X"}}}"#),
            ),
            (
                "ok/quotes-escaped",
                "https://a.example",
                "A \"quoted\" CA",
                Ok(r#"{"pattern":"https://a.example","filter":{"ISSUER":{"CN":"A \"quoted\" CA"}}}"#),
            ),
            ("fail/empty-pattern", "", CN, bad("", P::Empty)),
            ("fail/slash-only", "/", CN, bad("/", P::NoScheme)),
            ("fail/star", "*", CN, bad("*", P::Wildcard)),
            ("fail/https-star", "https://*", CN, bad("https://*", P::Wildcard)),
            ("fail/path", "https://evil.example/path", CN, bad("https://evil.example/path", P::Path)),
            ("fail/space-in-pattern", "https://a b", CN, bad("https://a b", P::Characters)),
            ("fail/empty-issuer", ORIGIN, "", Err(AutoSelectError::EmptyIssuer)),
            (
                "fail/control-in-issuer",
                ORIGIN,
                "CA\n",
                Err(AutoSelectError::InvalidIssuer { issuer_cn: "CA\n".into() }),
            ),
        ];
        for (name, pattern, cn, want) in cases {
            let got = OurEntry::new(pattern, cn).map(|e| e.to_json());
            assert_eq!(got.as_deref().map_err(Clone::clone), want.clone(), "{name}");
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, Option<(&str, bool)>)] = &[
            ("ok/ours", OURS, Some((ORIGIN, true))),
            ("ok/no-filter", r#"{"pattern":"https://x"}"#, Some(("https://x", false))),
            ("fail/not-json", "https://x", None),
            ("fail/json-array", "[1,2]", None),
            ("fail/no-pattern", r#"{"filter":{}}"#, None),
            ("fail/pattern-not-string", r#"{"pattern":3}"#, None),
        ];
        for (name, raw, want) in cases {
            let got = parse(raw);
            assert_eq!(got.as_ref().map(|e| (e.pattern.as_str(), e.filter.is_some())), *want, "{name}");
        }
        let parsed = parse_list(&list(&[OURS, "junk"]));
        assert!(parsed[0].is_some() && parsed[1].is_none());
    }

    #[test]
    fn status_table() {
        let cases: &[(&str, &[&str], Status)] = &[
            ("ok/empty", &[], Status::Absent),
            ("ok/only-others", &[OTHER_SITE, "not json"], Status::Absent),
            ("ok/ours", &[OTHER_SITE, OURS], Status::Present),
            (
                "ok/ours-reordered-keys-and-spaces",
                &[
                    r#"{ "filter": {"ISSUER": {"CN": "MTLS Certificate Authority"}}, "pattern": "HTTPS://Cell-DeviceTrust.example.com/" }"#,
                ],
                Status::Present,
            ),
            ("ok/other-filter", &[SAME_SITE_OTHER_FILTER], Status::PresentWithOtherFilter),
            ("ok/ours-beats-other-filter", &[SAME_SITE_OTHER_FILTER, OURS], Status::Present),
            (
                "ok/extra-filter-field-is-not-ours",
                &[
                    r#"{"pattern":"https://cell-devicetrust.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority","O":"X"}}}"#,
                ],
                Status::PresentWithOtherFilter,
            ),
            (
                "ok/no-filter-is-other",
                &[r#"{"pattern":"https://cell-devicetrust.example.com"}"#],
                Status::PresentWithOtherFilter,
            ),
            (
                "fail/subdomain-is-not-our-pattern",
                &[
                    r#"{"pattern":"https://x.cell-devicetrust.example.com","filter":{"ISSUER":{"CN":"MTLS Certificate Authority"}}}"#,
                ],
                Status::Absent,
            ),
        ];
        for (name, items, want) in cases {
            assert_eq!(status(&list(items), &ours()), *want, "{name}");
        }
    }

    #[test]
    fn merge_table() {
        let cases: &[(&str, &[&str], &[&str], Change)] = &[
            ("ok/empty", &[], &[OURS], Change::Added),
            (
                "ok/appends-after-others-keeping-junk",
                &["junk", OTHER_SITE, "{\"pattern\": 1}"],
                &["junk", OTHER_SITE, "{\"pattern\": 1}", OURS],
                Change::Added,
            ),
            ("ok/idempotent", &[OTHER_SITE, OURS], &[OTHER_SITE, OURS], Change::AlreadyPresent),
            (
                "fail/pattern-owned-by-other-filter",
                &[SAME_SITE_OTHER_FILTER, OTHER_SITE],
                &[SAME_SITE_OTHER_FILTER, OTHER_SITE],
                Change::PatternHasOtherFilter,
            ),
        ];
        for (name, before, after, change) in cases {
            let (got, got_change) = merge(&list(before), &ours());
            assert_eq!(got, list(after), "{name}");
            assert_eq!(got_change, *change, "{name}");
        }
    }

    #[test]
    fn remove_table() {
        let cases: &[(&str, &[&str], &[&str], Change)] = &[
            ("ok/only-ours", &[OURS], &[], Change::Removed(1)),
            (
                "ok/keeps-others-in-order",
                &["junk", OURS, OTHER_SITE, SAME_SITE_OTHER_FILTER],
                &["junk", OTHER_SITE, SAME_SITE_OTHER_FILTER],
                Change::Removed(1),
            ),
            ("ok/duplicates-all-go", &[OURS, OTHER_SITE, OURS], &[OTHER_SITE], Change::Removed(2)),
            ("fail/absent", &[OTHER_SITE, "junk"], &[OTHER_SITE, "junk"], Change::NotPresent),
            (
                "fail/other-filter-is-not-ours",
                &[SAME_SITE_OTHER_FILTER],
                &[SAME_SITE_OTHER_FILTER],
                Change::NotPresent,
            ),
        ];
        for (name, before, after, change) in cases {
            let (got, got_change) = remove(&list(before), &ours());
            assert_eq!(got, list(after), "{name}");
            assert_eq!(got_change, *change, "{name}");
        }
    }

    const APPS: &str = "https://[*.]apps.example.com";
    const WIKI: &str = "https://wiki.example.com:8443";

    fn entry(pattern: &str) -> OurEntry {
        OurEntry::new(pattern, CN).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wanted_table() {
        use crate::origin::OriginProblem as P;
        let cases: &[(&str, &[&str], &[&str], &[(&str, P)])] = &[
            ("ok/cert-auth-only", &[], &[ORIGIN], &[]),
            ("ok/origins-after-cert-auth", &[APPS, WIKI], &[ORIGIN, APPS, WIKI], &[]),
            (
                "ok/dedupe-canonical-forms",
                &[APPS, "HTTPS://[*.]Apps.Example.com:443/", ORIGIN, "https://cell-devicetrust.example.com/"],
                &[ORIGIN, APPS],
                &[],
            ),
            (
                "fail/invalid-skipped-rest-kept",
                &["http://wiki.example.com", APPS, "https://*", "https://a.example/path"],
                &[ORIGIN, APPS],
                &[
                    ("http://wiki.example.com", P::NotHttps),
                    ("https://*", P::Wildcard),
                    ("https://a.example/path", P::Path),
                ],
            ),
        ];
        for (name, protected, entries, skipped) in cases {
            let got = wanted(ORIGIN, &strings(protected), CN).unwrap();
            let patterns: Vec<&str> = got.entries.iter().map(OurEntry::pattern).collect();
            assert_eq!(patterns, *entries, "{name}");
            let problems: Vec<(&str, P)> =
                got.skipped.iter().map(|e| (e.value.as_str(), e.problem)).collect();
            assert_eq!(problems, *skipped, "{name}");
        }
        assert!(
            matches!(
                wanted("https://*", &[], CN),
                Err(AutoSelectError::Origin(OriginError {
                    problem: crate::origin::OriginProblem::Wildcard,
                    ..
                }))
            ),
            "fail/bad-cert-auth-domain"
        );
        assert_eq!(wanted(ORIGIN, &strings(&[APPS]), ""), Err(AutoSelectError::EmptyIssuer), "fail/issuer");
    }

    #[test]
    fn from_json_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/ours", OURS, Some(ORIGIN)),
            (
                "ok/canonicalised",
                &OurEntry::new("HTTPS://[*.]Apps.example.com/", CN).unwrap().to_json(),
                Some(APPS),
            ),
            ("fail/other-filter", SAME_SITE_OTHER_FILTER, None),
            (
                "fail/extra-filter-field",
                r#"{"pattern":"https://a.example","filter":{"ISSUER":{"CN":"X","O":"Y"}}}"#,
                None,
            ),
            ("fail/unsafe-pattern", r#"{"pattern":"https://*","filter":{"ISSUER":{"CN":"X"}}}"#, None),
            ("fail/junk", "junk", None),
        ];
        for (name, raw, want) in cases {
            assert_eq!(OurEntry::from_json(raw).as_ref().map(OurEntry::pattern), *want, "{name}");
        }
    }

    #[test]
    fn sync_table() {
        let ours = |p: &str| entry(p).to_json();
        let (o, a, w) = (ours(ORIGIN), ours(APPS), ours(WIKI));
        struct Case<'a> {
            name: &'a str,
            before: Vec<&'a str>,
            wanted: &'a [&'a str],
            written: Vec<&'a str>,
            after: Vec<&'a str>,
            record: Vec<&'a str>,
        }
        let cases = [
            Case {
                name: "ok/adds-every-origin",
                before: vec![OTHER_SITE],
                wanted: &[ORIGIN, APPS, WIKI],
                written: vec![],
                after: vec![OTHER_SITE, &o, &a, &w],
                record: vec![&o, &a, &w],
            },
            Case {
                name: "ok/idempotent",
                before: vec![OTHER_SITE, &o, &a],
                wanted: &[ORIGIN, APPS],
                written: vec![&o, &a],
                after: vec![OTHER_SITE, &o, &a],
                record: vec![&o, &a],
            },
            Case {
                name: "ok/dropped-origin-removed",
                before: vec![&o, "junk", &a, OTHER_SITE, &w],
                wanted: &[ORIGIN, WIKI],
                written: vec![&o, &a, &w],
                after: vec![&o, "junk", OTHER_SITE, &w],
                record: vec![&o, &w],
            },
            Case {
                name: "ok/hand-written-twin-is-not-recorded",
                before: vec![&a],
                wanted: &[ORIGIN, APPS],
                written: vec![],
                after: vec![&a, &o],
                record: vec![&o],
            },
            Case {
                name: "fail/hand-written-twin-survives-a-drop",
                before: vec![&a, &o],
                wanted: &[ORIGIN],
                written: vec![&o],
                after: vec![&a, &o],
                record: vec![&o],
            },
            Case {
                name: "fail/other-filter-wins-and-is-not-recorded",
                before: vec![r#"{"pattern":"https://[*.]apps.example.com","filter":{}}"#],
                wanted: &[ORIGIN, APPS],
                written: vec![],
                after: vec![r#"{"pattern":"https://[*.]apps.example.com","filter":{}}"#, &o],
                record: vec![&o],
            },
            Case {
                // The admin added a twin after the agent's entry: only the agent's goes.
                name: "fail/a-later-twin-survives-a-drop",
                before: vec![&o, &a, OTHER_SITE, &a],
                wanted: &[ORIGIN],
                written: vec![&o, &a],
                after: vec![&o, OTHER_SITE, &a],
                record: vec![&o],
            },
            Case {
                // Written by an agent from before the record: the cert-auth entry is ours.
                name: "ok/an-upgraded-agent-records-the-cert-auth-entry",
                before: vec![OTHER_SITE, &o],
                wanted: &[ORIGIN, APPS],
                written: vec![],
                after: vec![OTHER_SITE, &o, &a],
                record: vec![&o, &a],
            },
            Case {
                name: "ok/issuer-change-retires-the-old-entry",
                before: vec![
                    r#"{"pattern":"https://[*.]apps.example.com","filter":{"ISSUER":{"CN":"Old CA"}}}"#,
                ],
                wanted: &[ORIGIN],
                written: vec![
                    r#"{"pattern":"https://[*.]apps.example.com","filter":{"ISSUER":{"CN":"Old CA"}}}"#,
                ],
                after: vec![&o],
                record: vec![&o],
            },
        ];
        for c in cases {
            let wanted: Vec<OurEntry> = c.wanted.iter().map(|p| entry(p)).collect();
            let synced = sync(&strings(&c.before), &wanted, &strings(&c.written));
            assert_eq!(synced.list, strings(&c.after), "{}", c.name);
            assert_eq!(synced.written, strings(&c.record), "{}", c.name);
        }
    }

    #[test]
    fn remove_ours_table() {
        let (o, a) = (entry(ORIGIN).to_json(), entry(APPS).to_json());
        let before = strings(&[OTHER_SITE, &o, &a, "junk", SAME_SITE_OTHER_FILTER]);
        let (list, n) = remove_ours(&before, &[entry(ORIGIN)], std::slice::from_ref(&a));
        assert_eq!(
            (list, n),
            (strings(&[OTHER_SITE, "junk", SAME_SITE_OTHER_FILTER]), 2),
            "ok/recorded-and-cert-auth"
        );
        let (list, n) = remove_ours(&before, &[entry(ORIGIN)], &[]);
        assert_eq!(
            (list, n),
            (strings(&[OTHER_SITE, &a, "junk", SAME_SITE_OTHER_FILTER]), 1),
            "fail/unrecorded-stays"
        );
    }

    // Foreign entries: anything that is not exactly one of the entries the test may want.
    fn foreign_entry() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(OTHER_SITE.to_owned()),
            Just(SAME_SITE_OTHER_FILTER.to_owned()),
            Just("junk".to_owned()),
            Just(r#"{"pattern":"https://[*.]apps.example.com","filter":{}}"#.to_owned()),
            "[a-z{}\":,]{0,12}",
        ]
    }

    proptest::proptest! {
        /// Whatever the wanted origins do from one run to the next, every foreign entry stays,
        /// in order, and the agent's own entries are exactly the wanted ones it could add.
        #[test]
        fn foreign_entries_survive_add_and_remove(
            foreign in proptest::collection::vec(foreign_entry(), 0..6),
            runs in proptest::collection::vec(proptest::collection::vec(0usize..3, 0..4), 1..5),
        ) {
            let pool = [ORIGIN, APPS, WIKI];
            let mut list = foreign.clone();
            let mut written: Vec<String> = Vec::new();
            for run in runs {
                let wanted: Vec<OurEntry> = run.iter().map(|i| entry(pool[*i])).collect();
                let synced = sync(&list, &wanted, &written);
                list = synced.list;
                written = synced.written;
                let kept: Vec<&String> = list.iter().filter(|e| !written.contains(e)).collect();
                let foreign_refs: Vec<&String> = foreign.iter().collect();
                proptest::prop_assert_eq!(&kept, &foreign_refs);
                for w in &written {
                    proptest::prop_assert!(wanted.iter().any(|e| e.to_json() == *w));
                }
            }
            let (after, _) = remove_ours(&list, &[], &written);
            proptest::prop_assert_eq!(after, foreign);
        }
    }

    #[test]
    fn merge_then_remove_round_trips() {
        let before = list(&["junk", OTHER_SITE]);
        let (merged, _) = merge(&before, &ours());
        let (removed, _) = remove(&merged, &ours());
        assert_eq!(removed, before);
    }
}
