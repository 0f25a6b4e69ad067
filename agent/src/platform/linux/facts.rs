//! Device facts on Linux: the device id, serial number, display name, OS version and user,
//! read from the files the system keeps them in, each overridable by configuration.
//!
//! The device id comes from `/etc/machine-id` first, not from the DMI product UUID: the DMI
//! files are readable by root only on most distributions, and the id must be the same whether
//! the agent runs as the user (the timer) or as root (an installer), or the CA would see two
//! devices. The product UUID is the fallback for systems without a machine id.

use std::fs;
use std::path::PathBuf;

/// A fact that could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(super) enum FactsError {
    /// No source had a usable value and no override was given.
    #[error("{fact} is not available on this device (looked in {looked_in}); set it in the configuration")]
    Unavailable {
        /// The fact, e.g. "the device id".
        fact: &'static str,
        /// Where we looked.
        looked_in: String,
    },
}

/// Where the system files are; `/` on a real system, a temporary tree in tests.
#[derive(Debug, Clone)]
pub(super) struct FactSources {
    root: PathBuf,
}

impl Default for FactSources {
    fn default() -> Self {
        Self::system()
    }
}

impl FactSources {
    /// The running system.
    pub(super) fn system() -> Self {
        Self { root: PathBuf::from("/") }
    }

    /// A tree laid out like `/` under `root`.
    #[cfg(test)]
    pub(super) fn at(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    // Unreadable (root-only DMI files), missing and non-UTF-8 files all mean "no value here":
    // every fact has a fallback or an override.
    fn read(&self, absolute: &str) -> Option<String> {
        fs::read_to_string(self.path(absolute)).ok()
    }

    /// The machine id, from `/etc/machine-id` or the D-Bus copy of it.
    pub(super) fn machine_id(&self) -> Option<String> {
        ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| self.read(p).and_then(|t| parse_machine_id(&t)))
    }

    /// The device id: the machine id formatted as an uppercase UUID, else the DMI product UUID.
    pub(super) fn udid(&self) -> Result<String, FactsError> {
        self.machine_id()
            .map(|id| machine_id_as_uuid(&id))
            .or_else(|| self.read("/sys/class/dmi/id/product_uuid").and_then(|t| parse_dmi_uuid(&t)))
            .ok_or(FactsError::Unavailable {
                fact: "the device id",
                looked_in: "/etc/machine-id, /var/lib/dbus/machine-id, /sys/class/dmi/id/product_uuid".into(),
            })
    }

    /// The hardware serial number when readable and real, else the machine id.
    pub(super) fn serial_number(&self) -> Result<String, FactsError> {
        self.read("/sys/class/dmi/id/product_serial")
            .and_then(|t| parse_dmi_value(&t))
            .or_else(|| self.machine_id())
            .ok_or(FactsError::Unavailable {
                fact: "the serial number",
                looked_in: "/sys/class/dmi/id/product_serial, /etc/machine-id".into(),
            })
    }

    /// The host name.
    pub(super) fn hostname(&self) -> Result<String, FactsError> {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| self.read(p).and_then(|t| parse_hostname(&t)))
            .ok_or(FactsError::Unavailable {
                fact: "the host name",
                looked_in: "/proc/sys/kernel/hostname, /etc/hostname".into(),
            })
    }

    /// The OS version from `os-release`: `PRETTY_NAME`, else `NAME VERSION_ID`.
    pub(super) fn os_version(&self) -> Result<String, FactsError> {
        ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| self.read(p).and_then(|t| OsRelease::parse(&t).version()))
            .ok_or(FactsError::Unavailable {
                fact: "the os version",
                looked_in: "/etc/os-release, /usr/lib/os-release".into(),
            })
    }
}

/// The user this process runs as: the password database entry for the real uid, else `$USER`.
pub(super) fn current_user() -> Result<String, FactsError> {
    let uid = nix::unistd::getuid();
    if let Ok(Some(user)) = nix::unistd::User::from_uid(uid) {
        return Ok(user.name);
    }
    std::env::var("USER").ok().filter(|u| !u.is_empty()).ok_or(FactsError::Unavailable {
        fact: "the user name",
        looked_in: format!("the password database (uid {uid}), USER"),
    })
}

/// A machine id is 32 hex digits; anything else (empty, `uninitialized` during first boot,
/// all zeros) is not one.
pub(super) fn parse_machine_id(text: &str) -> Option<String> {
    let id = text.trim().to_ascii_lowercase();
    (id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) && id.chars().any(|c| c != '0'))
        .then_some(id)
}

/// `0123abcd...` as `0123ABCD-....-....-....-............`, the shape of a Mac's hardware UUID.
pub(super) fn machine_id_as_uuid(id: &str) -> String {
    let id = id.to_ascii_uppercase();
    if id.len() != 32 || !id.is_ascii() {
        return id;
    }
    format!("{}-{}-{}-{}-{}", &id[0..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32])
}

/// A DMI string, unless it is one of the placeholders firmware vendors leave in.
pub(super) fn parse_dmi_value(text: &str) -> Option<String> {
    const PLACEHOLDERS: &[&str] = &[
        "",
        "0",
        "none",
        "n/a",
        "na",
        "default string",
        "not specified",
        "not applicable",
        "not available",
        "to be filled by o.e.m.",
        "system serial number",
        "serial number",
        "0123456789",
        "123456789",
        "xxxxxxxxxx",
    ];
    let value = text.trim();
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str()) || value.chars().all(|c| c == '0' || c == ' ') {
        return None;
    }
    Some(value.to_owned())
}

/// A DMI product UUID (uppercased), unless it is a placeholder.
pub(super) fn parse_dmi_uuid(text: &str) -> Option<String> {
    let value = parse_dmi_value(text)?.to_ascii_uppercase();
    let hex: String = value.chars().filter(|c| *c != '-').collect();
    let placeholder = hex.chars().all(|c| c == '0') || hex.chars().all(|c| c == 'F')
        // Common firmware default.
        || value == "03000200-0400-0500-0006-000700080009";
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && !placeholder).then_some(value)
}

/// The first line of a hostname file, trimmed.
pub(super) fn parse_hostname(text: &str) -> Option<String> {
    let name = text.lines().next()?.trim();
    (!name.is_empty() && name != "(none)" && name != "localhost").then(|| name.to_owned())
}

/// The fields of `os-release` we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct OsRelease {
    /// `NAME`, e.g. `Debian GNU/Linux`.
    pub name: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Parses the shell-style assignments of `os-release(5)`; unknown keys, comments and
    /// malformed lines are skipped.
    pub(super) fn parse(text: &str) -> Self {
        let mut release = Self::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, raw)) = line.split_once('=') else { continue };
            let Some(value) = unquote(raw.trim()).filter(|v| !v.is_empty()) else { continue };
            match key.trim() {
                "NAME" => release.name = Some(value),
                "VERSION_ID" => release.version_id = Some(value),
                "PRETTY_NAME" => release.pretty_name = Some(value),
                _ => {}
            }
        }
        release
    }

    /// What we report as the OS version.
    pub(super) fn version(&self) -> Option<String> {
        if let Some(pretty) = &self.pretty_name {
            return Some(pretty.clone());
        }
        match (&self.name, &self.version_id) {
            (Some(name), Some(version)) => Some(format!("{name} {version}")),
            (None, Some(version)) => Some(version.clone()),
            (Some(name), None) => Some(name.clone()),
            (None, None) => None,
        }
    }
}

// os-release values are shell words: double quotes allow `\"`, `\\`, `\$` and `` \` `` escapes,
// single quotes none.
fn unquote(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(e @ ('"' | '\\' | '$' | '`')) => out.push(e),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    } else if let Some(inner) = raw.strip_prefix('\'') {
        inner.strip_suffix('\'').map(str::to_owned)
    } else {
        Some(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n";
    const MACHINE_ID: &str = "4c4c4544004b4a1080365ac04f4e4d32";

    #[test]
    fn os_release_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/debian", DEBIAN, Some("Debian GNU/Linux 12 (bookworm)")),
            ("ok/fedora-single-quotes", "NAME='Fedora Linux'\nVERSION_ID=40\n", Some("Fedora Linux 40")),
            ("ok/escapes", "PRETTY_NAME=\"A \\\"quoted\\\" \\$OS\"\n", Some("A \"quoted\" $OS")),
            ("ok/comment-and-junk", "# PRETTY_NAME=\"no\"\ngarbage line\nVERSION_ID=3.19\n", Some("3.19")),
            ("fail/empty", "", None),
            ("fail/unterminated-quote", "PRETTY_NAME=\"Oops\n", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(OsRelease::parse(text).version().as_deref(), *want, "{name}");
        }
        let debian = OsRelease::parse(DEBIAN);
        assert_eq!(debian.version_id.as_deref(), Some("12"));
        assert_eq!(debian.name.as_deref(), Some("Debian GNU/Linux"));
    }

    #[test]
    fn machine_id_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/plain", "4c4c4544004b4a1080365ac04f4e4d32\n", Some(MACHINE_ID)),
            ("ok/uppercase", "4C4C4544004B4A1080365AC04F4E4D32", Some(MACHINE_ID)),
            ("fail/uninitialized", "uninitialized\n", None),
            ("fail/empty", "", None),
            ("fail/zeros", "00000000000000000000000000000000", None),
            ("fail/short", "4c4c4544", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_machine_id(text).as_deref(), *want, "{name}");
        }
        assert_eq!(machine_id_as_uuid(MACHINE_ID), "4C4C4544-004B-4A10-8036-5AC04F4E4D32");
    }

    #[test]
    fn dmi_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/serial", "C02XK1ABJGH5\n", Some("C02XK1ABJGH5")),
            ("ok/vm", "VMware-56 4d 12 34\n", Some("VMware-56 4d 12 34")),
            ("fail/oem", "To Be Filled By O.E.M.\n", None),
            ("fail/default", "Default string\n", None),
            ("fail/zero", "0\n", None),
            ("fail/blank", "   \n", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_dmi_value(text).as_deref(), *want, "{name}");
        }
        let uuids: &[(&str, &str, Option<&str>)] = &[
            (
                "ok/uuid",
                "4c4c4544-004b-4a10-8036-5ac04f4e4d32\n",
                Some("4C4C4544-004B-4A10-8036-5AC04F4E4D32"),
            ),
            ("fail/zeros", "00000000-0000-0000-0000-000000000000", None),
            ("fail/ffs", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None),
            ("fail/firmware-default", "03000200-0400-0500-0006-000700080009", None),
            ("fail/not-uuid", "hello", None),
        ];
        for (name, text, want) in uuids {
            assert_eq!(parse_dmi_uuid(text).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn hostname_table() {
        for (name, text, want) in [
            ("ok/plain", "alice-laptop\n", Some("alice-laptop")),
            ("ok/first-line", " build-01 \nother\n", Some("build-01")),
            ("fail/empty", "\n", None),
            ("fail/none", "(none)\n", None),
        ] {
            assert_eq!(parse_hostname(text).as_deref(), want, "{name}");
        }
    }

    fn fact_path(root: &Path, absolute: &str) -> PathBuf {
        root.join(absolute.trim_start_matches('/'))
    }

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, FactSources) {
        let tmp = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = fact_path(tmp.path(), path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let sources = FactSources::at(tmp.path().to_owned());
        (tmp, sources)
    }

    #[test]
    fn ok_reads_a_system_tree() {
        let (_tmp, sources) = tree(&[
            ("/etc/machine-id", "4c4c4544004b4a1080365ac04f4e4d32\n"),
            ("/sys/class/dmi/id/product_uuid", "11111111-2222-3333-4444-555555555555\n"),
            ("/sys/class/dmi/id/product_serial", "PF3ABCDE\n"),
            ("/proc/sys/kernel/hostname", "alice-laptop\n"),
            ("/etc/os-release", DEBIAN),
        ]);
        assert_eq!(sources.udid().unwrap(), "4C4C4544-004B-4A10-8036-5AC04F4E4D32");
        assert_eq!(sources.serial_number().unwrap(), "PF3ABCDE");
        assert_eq!(sources.hostname().unwrap(), "alice-laptop");
        assert_eq!(sources.os_version().unwrap(), "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn ok_fallbacks() {
        let (_tmp, sources) = tree(&[
            ("/etc/machine-id", "uninitialized\n"),
            ("/var/lib/dbus/machine-id", "4c4c4544004b4a1080365ac04f4e4d32\n"),
            ("/sys/class/dmi/id/product_serial", "To Be Filled By O.E.M.\n"),
            ("/etc/hostname", "box\n"),
            ("/usr/lib/os-release", "NAME=Alpine\nVERSION_ID=3.20.1\n"),
        ]);
        assert_eq!(sources.udid().unwrap(), "4C4C4544-004B-4A10-8036-5AC04F4E4D32");
        assert_eq!(
            sources.serial_number().unwrap(),
            MACHINE_ID,
            "placeholder serial falls back to the machine id"
        );
        assert_eq!(sources.hostname().unwrap(), "box");
        assert_eq!(sources.os_version().unwrap(), "Alpine 3.20.1");

        let (_tmp, sources) =
            tree(&[("/sys/class/dmi/id/product_uuid", "4c4c4544-004b-4a10-8036-5ac04f4e4d32\n")]);
        assert_eq!(
            sources.udid().unwrap(),
            "4C4C4544-004B-4A10-8036-5AC04F4E4D32",
            "no machine id: dmi uuid"
        );
    }

    #[test]
    fn fail_empty_tree() {
        let (_tmp, sources) = tree(&[]);
        assert!(matches!(sources.udid(), Err(FactsError::Unavailable { fact: "the device id", .. })));
        assert!(matches!(
            sources.serial_number(),
            Err(FactsError::Unavailable { fact: "the serial number", .. })
        ));
        assert!(matches!(sources.hostname(), Err(FactsError::Unavailable { fact: "the host name", .. })));
        assert!(matches!(sources.os_version(), Err(FactsError::Unavailable { fact: "the os version", .. })));
        assert!(!current_user().unwrap().is_empty(), "the user comes from the process");
    }
}
