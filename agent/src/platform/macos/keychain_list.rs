//! The user's keychain search list: reading `security list-keychains -d user` and computing
//! the list with our keychain added or removed.
//!
//! `security list-keychains -d user -s ...` replaces the whole list, so the agent must read
//! the current one first and hand every entry back; dropping one would hide another tool's
//! keychain from every app. The tool prints one path per line, indented and double-quoted:
//!
//! ```text
//!     "/Users/alice/Library/Keychains/login.keychain-db"
//! ```

use std::path::{Path, PathBuf};

/// Parses the tool's standard output into paths, in order.
pub(crate) fn parse(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let inner = line.strip_prefix('"').and_then(|l| l.strip_suffix('"')).unwrap_or(line);
            (!inner.is_empty()).then(|| PathBuf::from(inner))
        })
        .collect()
}

/// The list with `ours` appended, unless it is already there (then `None`: nothing to do).
///
/// Appending rather than prepending keeps the login keychain the first, default one, so that
/// other apps keep storing new items where they did.
pub(crate) fn with_added(list: &[PathBuf], ours: &Path) -> Option<Vec<PathBuf>> {
    if list.iter().any(|p| same_keychain(p, ours)) {
        return None;
    }
    let mut out = list.to_vec();
    out.push(ours.to_path_buf());
    Some(out)
}

/// The list without `ours`, or `None` when it was not there.
pub(crate) fn with_removed(list: &[PathBuf], ours: &Path) -> Option<Vec<PathBuf>> {
    let out: Vec<PathBuf> = list.iter().filter(|p| !same_keychain(p, ours)).cloned().collect();
    (out.len() != list.len()).then_some(out)
}

// macOS may list the keychain by its `.keychain-db` file or by the legacy `.keychain` name it
// was created with; both mean the same keychain.
fn same_keychain(a: &Path, b: &Path) -> bool {
    fn stem(p: &Path) -> PathBuf {
        let s = p.to_string_lossy();
        PathBuf::from(s.strip_suffix("-db").unwrap_or(&s))
    }
    stem(a) == stem(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::fixture;

    const LOGIN: &str = "/Users/alice/Library/Keychains/login.keychain-db";
    const PROJECT: &str = "/Users/alice/Library/Keychains/Project Certs.keychain-db";
    const OURS: &str = "/Users/alice/Library/Keychains/devicetrust.keychain-db";

    fn paths(items: &[&str]) -> Vec<PathBuf> {
        items.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn parse_fixtures() {
        assert_eq!(parse(&fixture("security-list-keychains.user.txt")), paths(&[LOGIN, PROJECT]));
        assert_eq!(
            parse(&fixture("security-list-keychains.user-with-devicetrust.txt")),
            paths(&[LOGIN, PROJECT, OURS])
        );
        assert!(parse("").is_empty());
        assert!(parse("\n   \n").is_empty());
    }

    #[test]
    fn add_table() {
        let cases: &[(&str, &[&str], Option<&[&str]>)] = &[
            ("ok/appended-keeping-others", &[LOGIN, PROJECT], Some(&[LOGIN, PROJECT, OURS])),
            ("ok/empty-list", &[], Some(&[OURS])),
            ("ok/already-there", &[LOGIN, OURS, PROJECT], None),
            ("ok/legacy-name-counts", &[LOGIN, "/Users/alice/Library/Keychains/devicetrust.keychain"], None),
        ];
        for (name, list, want) in cases {
            let got = with_added(&paths(list), Path::new(OURS));
            assert_eq!(got, want.map(paths), "{name}");
        }
    }

    #[test]
    fn remove_table() {
        let cases: &[(&str, &[&str], Option<&[&str]>)] = &[
            ("ok/removed-keeping-order", &[LOGIN, OURS, PROJECT], Some(&[LOGIN, PROJECT])),
            ("ok/absent", &[LOGIN, PROJECT], None),
        ];
        for (name, list, want) in cases {
            let got = with_removed(&paths(list), Path::new(OURS));
            assert_eq!(got, want.map(paths), "{name}");
        }
    }
}
