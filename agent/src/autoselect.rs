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

use serde::Serialize;
use serde_json::Value;

use crate::origin::{Origin, OriginError};

/// Why our entry cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AutoSelectError {
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
pub struct OurEntry {
    pattern: String,
    issuer_cn: String,
}

impl OurEntry {
    /// Checks the pattern with the one origin validator ([`Origin::parse`]: an https origin,
    /// no path, no wildcard but a leading `[*.]`) and the issuer CN. The pattern is kept in
    /// the origin's canonical form (lowercase host, no default port, no trailing `/`).
    pub fn new(pattern: &str, issuer_cn: &str) -> Result<Self, AutoSelectError> {
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
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The issuer CN the filter matches.
    pub fn issuer_cn(&self) -> &str {
        &self.issuer_cn
    }

    /// The policy string, keys in the order Chrome's documentation shows them.
    pub fn to_json(&self) -> String {
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
pub struct Entry {
    /// The URL pattern, as written.
    pub pattern: String,
    /// The filter object, as written; `None` when the entry has none.
    pub filter: Option<Value>,
}

/// Reads one entry; `None` for anything that is not a JSON object with a string `pattern`.
pub fn parse(entry: &str) -> Option<Entry> {
    let value: Value = serde_json::from_str(entry).ok()?;
    let object = value.as_object()?;
    let pattern = object.get("pattern")?.as_str()?.to_owned();
    let filter = object.get("filter").cloned();
    Some(Entry { pattern, filter })
}

/// Reads every entry of a list, position for position; unreadable entries are `None`.
pub fn parse_list(list: &[String]) -> Vec<Option<Entry>> {
    list.iter().map(|entry| parse(entry)).collect()
}

/// Whether our entry is in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
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
pub enum Change {
    /// Our entry was appended.
    Added,
    /// Our entry was already there; nothing changed.
    AlreadyPresent,
    /// Another entry already covers our pattern with another filter; nothing changed, because
    /// Chrome uses the first matching entry and an administrator's choice must win.
    PatternHasOtherFilter,
    /// This many copies of our entry were removed.
    Removed(usize),
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
pub fn status(list: &[String], ours: &OurEntry) -> Status {
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
pub fn merge(existing: &[String], ours: &OurEntry) -> (Vec<String>, Change) {
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

/// Removes our entry (every copy of it) and nothing else; other entries for the same pattern
/// belong to someone else and stay.
pub fn remove(existing: &[String], ours: &OurEntry) -> (Vec<String>, Change) {
    let list: Vec<String> =
        existing.iter().filter(|raw| ours.classify(parse(raw).as_ref()) != Kind::Ours).cloned().collect();
    let removed = existing.len() - list.len();
    let change = if removed == 0 { Change::NotPresent } else { Change::Removed(removed) };
    (list, change)
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

    #[test]
    fn merge_then_remove_round_trips() {
        let before = list(&["junk", OTHER_SITE]);
        let (merged, _) = merge(&before, &ours());
        let (removed, _) = remove(&merged, &ours());
        assert_eq!(removed, before);
    }
}
