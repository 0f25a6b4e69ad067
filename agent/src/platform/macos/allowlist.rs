//! The app allowlist: which apps may use the device key without a keychain prompt.
//!
//! Since macOS 10.12 every keychain key carries a *partition list* of code-signing identities.
//! securityd gives each process one (`partitionIdForProcess`, `securityd/src/clientid.cpp`):
//! `apple:` for any code that satisfies `anchor apple` (Safari, but also `osascript`, `curl`,
//! the shells and whatever script they run), `apple-tool:` for `/usr/bin/security` alone,
//! `teamid:<TeamIdentifier>` for Developer ID and App Store code, `cdhash:<hash>` for one exact
//! build of any other signed code (ad-hoc included), and `unsigned:` for all unsigned code. An
//! app outside the list gets a password prompt, which a browser presenting a client
//! certificate turns into a broken page. The agent therefore writes the allowlist into the
//! key's partition list.
//!
//! The partition list is one of two gates: securityd checks the key's ACL as well
//! (`SecurityServerAcl::validate`, `securityd/src/acls.cpp`). The agent gives the ACL's signing
//! entry only to itself and to code that satisfies a requirement made from each allowlist entry
//! ([`signing_requirement`]), so that `apple:` in the partition list admits Safari's processes
//! to signing and not every Apple-signed tool; no entry grants export.
//!
//! Where the list comes from, first match wins: the managed preference `allowlist` (an admin's
//! configuration profile), the file `allowlist.json` in the agent's data directory (written by
//! `devicetrust-agent allowlist add`), the defaults below. The agent's own partition ID is
//! always added to the effective list, or it would lock itself out of its own key.
//!
//! In the keychain the list is an ACL entry whose description is the hex encoding of an XML
//! property list `{"Partitions": [...]}`, exactly as `security set-key-partition-list` writes
//! it; [`encode_description`] and [`decode_description`] convert.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::codesign::{Signature, Signer};

/// The file name of the persisted list in the agent's data directory.
pub(crate) const FILE_NAME: &str = "allowlist.json";

/// `devicetrust-agent allowlist ...`: the apps that may use the device key without a prompt.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub(crate) enum AllowlistCommand {
    /// Show the effective list, where it comes from, and what the key carries.
    Show,
    /// Allow an app: its code signature's TeamIdentifier becomes `teamid:<id>` (Apple's apps:
    /// apple:). Unsigned and ad-hoc signed apps are refused.
    Add {
        /// The app, e.g. /Applications/Zoom.app.
        app: PathBuf,
    },
    /// Remove a partition id (e.g. teamid:BQR82RBBHL) or the entry of an app.
    Remove {
        /// A partition id, or the path of an app.
        entry: String,
    },
}

/// Why an allowlist entry or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AllowlistError {
    /// Not one of the partition ID forms.
    #[error(
        "{value:?} is not a partition id (expected apple:, teamid:<10 characters> or cdhash:<40 hex digits>)"
    )]
    InvalidEntry {
        /// The value as given.
        value: String,
    },
    /// `unsigned:` admits every unsigned program on the Mac; it is only ever the agent's own
    /// partition, never an allowlist entry.
    #[error("unsigned: would admit every unsigned program; only signed apps can be allowed")]
    UnsignedEntry,
    /// The app is not signed; nothing identifies it across updates.
    #[error("{app} is not code signed; only signed apps can be allowed")]
    Unsigned {
        /// The app's path.
        app: PathBuf,
    },
    /// The app is ad-hoc signed: its identity changes with every build.
    #[error(
        "{app} is only ad-hoc signed (TeamIdentifier=not set); only apps signed by a developer team can be allowed"
    )]
    AdHoc {
        /// The app's path.
        app: PathBuf,
    },
    /// The app's signature names no team.
    #[error(
        "{app} is signed without a TeamIdentifier; only apps signed by a developer team or Apple can be allowed"
    )]
    NoTeam {
        /// The app's path.
        app: PathBuf,
    },
    /// The partition ACL description is not hex or not the expected property list.
    #[error("the keychain partition description is not readable: {reason}")]
    BadDescription {
        /// What is wrong.
        reason: String,
    },
    /// The persisted list could not be read or written.
    #[error("the allowlist file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// One keychain partition ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PartitionId {
    /// `apple-tool:`: `/usr/bin/security` alone (signing identifier `com.apple.security`).
    /// Accepted from an admin's list, never added by the agent: it is the tool that exports keys.
    AppleTool,
    /// `apple:`: any code that satisfies `anchor apple`, Safari among them.
    Apple,
    /// `teamid:<TeamIdentifier>`.
    TeamId(String),
    /// `cdhash:<hex>`: one exact build of ad-hoc signed code, or of code signed without a team
    /// (the agent itself in development builds; never accepted from `allowlist add`).
    CdHash(String),
    /// `unsigned:`: every unsigned program. Only ever the agent's own partition, when the agent
    /// itself is unsigned, so that it does not lock itself out of its key.
    Unsigned,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AppleTool => f.write_str("apple-tool:"),
            Self::Apple => f.write_str("apple:"),
            Self::TeamId(id) => write!(f, "teamid:{id}"),
            Self::CdHash(hash) => write!(f, "cdhash:{hash}"),
            Self::Unsigned => f.write_str("unsigned:"),
        }
    }
}

impl FromStr for PartitionId {
    type Err = AllowlistError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || AllowlistError::InvalidEntry { value: s.to_owned() };
        let value = s.trim();
        match value {
            "apple-tool:" => return Ok(Self::AppleTool),
            "apple:" => return Ok(Self::Apple),
            "unsigned:" => return Ok(Self::Unsigned),
            _ => {}
        }
        if let Some(team) = value.strip_prefix("teamid:") {
            // Apple's TeamIdentifiers are ten upper-case letters and digits.
            let ok = team.len() == 10 && team.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            return if ok { Ok(Self::TeamId(team.to_owned())) } else { Err(invalid()) };
        }
        if let Some(hash) = value.strip_prefix("cdhash:") {
            let ok = hash.len() == 40 && hash.chars().all(|c| c.is_ascii_hexdigit());
            return if ok { Ok(Self::CdHash(hash.to_ascii_lowercase())) } else { Err(invalid()) };
        }
        Err(invalid())
    }
}

impl Serialize for PartitionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PartitionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The partition ID for an app being added to the allowlist; unsigned, ad-hoc and team-less
/// signatures are refused because nothing would identify the app after its next update.
pub(crate) fn partition_id_for_app(signature: &Signature, app: &Path) -> Result<PartitionId, AllowlistError> {
    match signature.signer() {
        Signer::Team(team) => format!("teamid:{team}").parse(),
        Signer::Apple => Ok(PartitionId::Apple),
        Signer::AdHoc => Err(AllowlistError::AdHoc { app: app.to_path_buf() }),
        Signer::NoTeam => Err(AllowlistError::NoTeam { app: app.to_path_buf() }),
        Signer::Unsigned => Err(AllowlistError::Unsigned { app: app.to_path_buf() }),
    }
}

/// The agent's own partition ID, from its own signature, as `partitionIdForProcess`
/// (`securityd/src/clientid.cpp`) gives it: a development build is ad-hoc signed (the linker
/// signs every arm64 binary), so its exact build hash stands in; unsigned code is `unsigned:`.
/// `None` when the signature names a partition the agent cannot tell (a signed build without
/// a `CDHash=` line).
pub(crate) fn own_partition_id(signature: &Signature) -> Option<PartitionId> {
    match signature {
        Signature::Unsigned => Some(PartitionId::Unsigned),
        Signature::Signed(sig) => match sig.signer() {
            Signer::Team(team) => format!("teamid:{team}").parse().ok(),
            Signer::Apple => Some(PartitionId::Apple),
            Signer::AdHoc | Signer::NoTeam => {
                sig.cdhash.as_deref().and_then(|h| format!("cdhash:{h}").parse().ok())
            }
            Signer::Unsigned => Some(PartitionId::Unsigned),
        },
    }
}

/// What the agent's own partition breaks when it is not a Developer ID (or Apple) one, for
/// `status`; `None` for a partition that survives updates. `own` is `None` when the agent's
/// signature could not be read.
pub(crate) fn own_partition_warning(own: Option<&PartitionId>) -> Option<&'static str> {
    match own {
        Some(PartitionId::TeamId(_) | PartitionId::Apple) => None,
        Some(PartitionId::CdHash(_) | PartitionId::AppleTool) => Some(
            "the agent is not Developer ID signed: its key and its keychain password admit only this exact build (its cdhash), so an updated agent cannot renew without a new enrollment; sign it with a Developer ID for production",
        ),
        Some(PartitionId::Unsigned) => Some(
            "the agent is not code signed: its key's partition list must admit every unsigned program (unsigned:), and an updated agent cannot read its keychain password; sign it with a Developer ID for production",
        ),
        None => Some(
            "the agent's own code signature could not be read, so it will not change the key's partition list (it would lock itself out); check that /usr/bin/codesign runs",
        ),
    }
}

/// Safari's processes that may sign with the key when `apple:` is allowed: the browser and
/// WebKit's networking process, which runs Safari's TLS. The list is a reading of how Safari
/// is built, not yet confirmed on a Mac (see `docs/macos.md`, "First run on a real Mac").
pub(crate) const SAFARI_SIGNING_IDENTIFIERS: [&str; 2] = ["com.apple.Safari", "com.apple.WebKit.Networking"];

/// The code requirement whose holders the key's signing ACL entry trusts for one allowlist
/// entry (code signing requirement language): `teamid:X` is any code of that Developer ID or App
/// Store team, helpers included; `apple:` only Safari's processes
/// ([`SAFARI_SIGNING_IDENTIFIERS`]); `cdhash:` that one build; `apple-tool:` and `unsigned:`
/// none (`None`): `security` is the tool that exports keys, and unsigned code has no identity.
pub(crate) fn signing_requirement(id: &PartitionId) -> Option<String> {
    match id {
        PartitionId::TeamId(team) => {
            Some(format!("anchor apple generic and certificate leaf[subject.OU] = \"{team}\""))
        }
        PartitionId::Apple => {
            let ids: Vec<String> =
                SAFARI_SIGNING_IDENTIFIERS.iter().map(|i| format!("identifier \"{i}\"")).collect();
            Some(format!("anchor apple and ({})", ids.join(" or ")))
        }
        PartitionId::CdHash(hash) => Some(format!("cdhash H\"{hash}\"")),
        PartitionId::AppleTool | PartitionId::Unsigned => None,
    }
}

/// Where the effective list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// The managed preference `allowlist`.
    Managed,
    /// `allowlist.json` in the data directory.
    File,
    /// The built-in defaults.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Managed => "managed preferences",
            Self::File => "allowlist file",
            Self::Default => "defaults",
        })
    }
}

/// An ordered list of partition IDs without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Allowlist {
    entries: Vec<PartitionId>,
}

impl Default for Allowlist {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Allowlist {
    /// The default list: Apple's (for Safari), Google, Microsoft, Slack and Box. Skype, retired
    /// by Microsoft in May 2025, is no longer among them.
    pub(crate) fn defaults() -> Self {
        let entries = [
            "apple:",
            "teamid:EQHXZ8M8AV", // Google (Chrome)
            "teamid:UBF8T346G9", // Microsoft (Edge, Teams, Office)
            "teamid:BQR82RBBHL", // Slack
            "teamid:M683GB7CPW", // Box
        ];
        Self { entries: entries.iter().filter_map(|e| e.parse().ok()).collect() }
    }

    /// A list from configured strings; any invalid entry refuses the whole list, so that a
    /// typo in a profile is reported instead of silently narrowing access.
    pub(crate) fn from_strings<S: AsRef<str>>(values: &[S]) -> Result<Self, AllowlistError> {
        let mut list = Self { entries: Vec::new() };
        for value in values {
            let id: PartitionId = value.as_ref().parse()?;
            if id == PartitionId::Unsigned {
                return Err(AllowlistError::UnsignedEntry);
            }
            list.add(id);
        }
        Ok(list)
    }

    #[cfg(test)]
    /// The entries, in order.
    pub(crate) fn entries(&self) -> &[PartitionId] {
        &self.entries
    }

    /// Adds an entry; `false` when it was already there.
    pub(crate) fn add(&mut self, id: PartitionId) -> bool {
        if self.entries.contains(&id) {
            return false;
        }
        self.entries.push(id);
        true
    }

    /// Removes an entry; `false` when it was not there.
    pub(crate) fn remove(&mut self, id: &PartitionId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e != id);
        before != self.entries.len()
    }

    /// What goes into the key's partition list: the agent's own ID first, then the entries.
    /// `apple-tool:` (`/usr/bin/security`, which `security export` and `security cms -S` would
    /// use) is not added: the agent never asks that tool to use the key.
    pub(crate) fn effective(&self, own: Option<&PartitionId>) -> Vec<PartitionId> {
        let mut out: Vec<PartitionId> = own.cloned().into_iter().collect();
        for id in &self.entries {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The requirements the key's signing ACL entry trusts besides the agent itself: one per
    /// entry that has one ([`signing_requirement`]), in order.
    pub(crate) fn signing_requirements(&self, own: Option<&PartitionId>) -> Vec<String> {
        self.effective(own).iter().filter_map(signing_requirement).collect()
    }
}

/// The comma-separated form `security set-key-partition-list -S` takes and `status` shows.
pub(crate) fn render_list(ids: &[PartitionId]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Serialize)]
struct PartitionsPlist {
    #[serde(rename = "Partitions")]
    partitions: Vec<String>,
}

/// The partition ACL entry's description: lower-case hex of the XML plist
/// `{"Partitions": [ids...]}`.
pub(crate) fn encode_description(ids: &[PartitionId]) -> Result<String, AllowlistError> {
    let body = PartitionsPlist { partitions: ids.iter().map(ToString::to_string).collect() };
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &body)
        .map_err(|e| AllowlistError::BadDescription { reason: e.to_string() })?;
    // CoreFoundation ends its XML with a newline; match it byte for byte.
    if xml.last() != Some(&b'\n') {
        xml.push(b'\n');
    }
    Ok(hex::encode(xml))
}

/// The partition IDs in a partition ACL entry's description, as written (unknown forms are
/// kept as strings so that `status` can show what some other tool put there).
pub(crate) fn decode_description(description: &str) -> Result<Vec<String>, AllowlistError> {
    let bad = |reason: String| AllowlistError::BadDescription { reason };
    let bytes = hex::decode(description.trim()).map_err(|e| bad(format!("not hex: {e}")))?;
    let value =
        plist::Value::from_reader_xml(bytes.as_slice()).map_err(|e| bad(format!("not a plist: {e}")))?;
    let partitions = value
        .as_dictionary()
        .and_then(|d| d.get("Partitions"))
        .and_then(plist::Value::as_array)
        .ok_or_else(|| bad("no Partitions array".into()))?;
    partitions
        .iter()
        .map(|p| p.as_string().map(str::to_owned).ok_or_else(|| bad("a partition is not a string".into())))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct StoredList {
    version: u32,
    entries: Vec<PartitionId>,
}

/// Reads `allowlist.json` from `data_dir`; `Ok(None)` when there is none.
pub(crate) fn load(data_dir: &Path) -> Result<Option<Allowlist>, AllowlistError> {
    let path = data_dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AllowlistError::File { path, reason: e.to_string() }),
    };
    let stored: StoredList = serde_json::from_slice(&bytes)
        .map_err(|e| AllowlistError::File { path: path.clone(), reason: e.to_string() })?;
    if stored.version != 1 {
        return Err(AllowlistError::File { path, reason: format!("unknown version {}", stored.version) });
    }
    let mut list = Allowlist { entries: Vec::new() };
    for id in stored.entries {
        if id == PartitionId::Unsigned {
            return Err(AllowlistError::File { path, reason: AllowlistError::UnsignedEntry.to_string() });
        }
        list.add(id);
    }
    Ok(Some(list))
}

/// Writes `allowlist.json` into `data_dir` (0600, atomically).
pub(crate) fn save(data_dir: &Path, list: &Allowlist) -> Result<(), AllowlistError> {
    let path = data_dir.join(FILE_NAME);
    let stored = StoredList { version: 1, entries: list.entries.clone() };
    let mut bytes = serde_json::to_vec_pretty(&stored)
        .map_err(|e| AllowlistError::File { path: path.clone(), reason: e.to_string() })?;
    bytes.push(b'\n');
    crate::util::files::ensure_private_dir(data_dir)
        .and_then(|()| crate::util::files::write_atomic(&path, &bytes))
        .map_err(|e| AllowlistError::File { path, reason: format!("{e}: {}", e.source) })
}

/// The list in force and where it came from: the managed list if an admin set one, else the
/// file, else the defaults.
pub(crate) fn resolve(
    managed: Option<&[String]>,
    data_dir: &Path,
) -> Result<(Allowlist, Source), AllowlistError> {
    if let Some(values) = managed {
        return Ok((Allowlist::from_strings(values)?, Source::Managed));
    }
    match load(data_dir)? {
        Some(list) => Ok((list, Source::File)),
        None => Ok((Allowlist::defaults(), Source::Default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::macos::{codesign, fixture};

    fn ids(items: &[&str]) -> Vec<PartitionId> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        assert_eq!(
            render_list(Allowlist::defaults().entries()),
            "apple:,teamid:EQHXZ8M8AV,teamid:UBF8T346G9,teamid:BQR82RBBHL,teamid:M683GB7CPW"
        );
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str, Result<PartitionId, ()>)] = &[
            ("ok/apple-tool", "apple-tool:", Ok(PartitionId::AppleTool)),
            ("ok/apple", "apple:", Ok(PartitionId::Apple)),
            ("ok/team", "teamid:EQHXZ8M8AV", Ok(PartitionId::TeamId("EQHXZ8M8AV".into()))),
            ("ok/trimmed", " teamid:UBF8T346G9 ", Ok(PartitionId::TeamId("UBF8T346G9".into()))),
            (
                "ok/cdhash-lowercased",
                "cdhash:B1E8C4A0D5A93A4F8E5C1E2F7B3D9A60C2E4F6A8",
                Ok(PartitionId::CdHash("b1e8c4a0d5a93a4f8e5c1e2f7b3d9a60c2e4f6a8".into())),
            ),
            ("fail/bare-team", "EQHXZ8M8AV", Err(())),
            ("fail/short-team", "teamid:EQHX", Err(())),
            ("fail/lowercase-team", "teamid:eqhxz8m8av", Err(())),
            ("fail/short-cdhash", "cdhash:abc", Err(())),
            ("fail/apple-without-colon", "apple", Err(())),
            ("fail/empty", "", Err(())),
        ];
        for (name, raw, want) in cases {
            let got = raw
                .parse::<PartitionId>()
                .map_err(|e| assert!(matches!(e, AllowlistError::InvalidEntry { .. }), "{name}: {e}"));
            assert_eq!(&got, want, "{name}");
            if let Ok(id) = got {
                assert_eq!(id.to_string().parse::<PartitionId>().unwrap(), id, "{name}: round trip");
            }
        }
    }

    #[test]
    fn add_app_table() {
        let app = Path::new("/Applications/X.app");
        let cases: &[(&str, &str, Result<PartitionId, AllowlistError>)] = &[
            (
                "ok/developer-id",
                "codesign.developer-id.chrome.txt",
                Ok(PartitionId::TeamId("EQHXZ8M8AV".into())),
            ),
            ("ok/apple-app", "codesign.apple-platform.safari.txt", Ok(PartitionId::Apple)),
            ("fail/adhoc", "codesign.adhoc.txt", Err(AllowlistError::AdHoc { app: app.into() })),
            ("fail/unsigned", "codesign.unsigned.txt", Err(AllowlistError::Unsigned { app: app.into() })),
        ];
        for (name, file, want) in cases {
            let sig = codesign::parse(&fixture(file)).unwrap();
            assert_eq!(partition_id_for_app(&sig, app), *want, "{name}");
        }
        // The messages say what to do about it.
        let err = AllowlistError::AdHoc { app: app.into() }.to_string();
        assert!(err.contains("ad-hoc") && err.contains("TeamIdentifier=not set"), "{err}");
    }

    #[test]
    fn own_partition_id_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/team-signed-agent", "codesign.developer-id.chrome.txt", Some("teamid:EQHXZ8M8AV")),
            (
                "ok/adhoc-dev-build",
                "codesign.adhoc.txt",
                Some("cdhash:b1e8c4a0d5a93a4f8e5c1e2f7b3d9a60c2e4f6a8"),
            ),
            // All unsigned code shares one partition; the agent must keep it or lock itself out.
            ("ok/unsigned", "codesign.unsigned.txt", Some("unsigned:")),
        ];
        for (name, file, want) in cases {
            let sig = codesign::parse(&fixture(file)).unwrap();
            assert_eq!(own_partition_id(&sig).map(|p| p.to_string()).as_deref(), *want, "{name}");
        }
    }

    /// Only a Developer ID (or Apple) signature survives an update; `status` says what the
    /// others break.
    #[test]
    fn own_partition_warning_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("ok/developer-id", "codesign.developer-id.chrome.txt", None),
            ("ok/apple", "codesign.apple-platform.safari.txt", None),
            ("fail/adhoc", "codesign.adhoc.txt", Some("not Developer ID signed")),
            ("fail/unsigned", "codesign.unsigned.txt", Some("not code signed")),
        ];
        assert!(own_partition_warning(None).is_some_and(|w| w.contains("could not be read")), "fail/unknown");
        for (name, file, want) in cases {
            let sig = codesign::parse(&fixture(file)).unwrap();
            let got = own_partition_warning(own_partition_id(&sig).as_ref());
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some(part) => assert!(got.is_some_and(|w| w.contains(part)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn effective_list_has_the_agent_first_and_no_apple_tool_of_its_own() {
        let own: PartitionId = "teamid:ABCDE12345".parse().unwrap();
        let list = Allowlist::from_strings(&["teamid:EQHXZ8M8AV", "apple:"]).unwrap();
        assert_eq!(list.effective(Some(&own)), ids(&["teamid:ABCDE12345", "teamid:EQHXZ8M8AV", "apple:"]));
        assert_eq!(list.effective(None), ids(&["teamid:EQHXZ8M8AV", "apple:"]));
        // An admin may still list apple-tool: on purpose; it gets no signing requirement.
        let admin = Allowlist::from_strings(&["apple-tool:"]).unwrap();
        assert_eq!(admin.effective(Some(&own)), ids(&["teamid:ABCDE12345", "apple-tool:"]));
        assert_eq!(admin.signing_requirements(Some(&own)).len(), 1, "the agent's team only");
    }

    /// The requirement per entry: a team covers its helpers, `apple:` only Safari's processes,
    /// `apple-tool:` and `unsigned:` nothing.
    #[test]
    fn signing_requirement_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "ok/team",
                "teamid:EQHXZ8M8AV",
                Some("anchor apple generic and certificate leaf[subject.OU] = \"EQHXZ8M8AV\""),
            ),
            (
                "ok/apple-is-safari-only",
                "apple:",
                Some(
                    "anchor apple and (identifier \"com.apple.Safari\" or identifier \"com.apple.WebKit.Networking\")",
                ),
            ),
            (
                "ok/cdhash",
                "cdhash:b1e8c4a0d5a93a4f8e5c1e2f7b3d9a60c2e4f6a8",
                Some("cdhash H\"b1e8c4a0d5a93a4f8e5c1e2f7b3d9a60c2e4f6a8\""),
            ),
            ("fail/apple-tool", "apple-tool:", None),
            ("fail/unsigned", "unsigned:", None),
        ];
        for (name, id, want) in cases {
            let id: PartitionId = id.parse().unwrap();
            assert_eq!(signing_requirement(&id).as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn unsigned_is_never_an_allowlist_entry() {
        assert_eq!(
            Allowlist::from_strings(&["unsigned:"]),
            Err(AllowlistError::UnsignedEntry),
            "fail/managed"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), r#"{"version":1,"entries":["unsigned:"]}"#).unwrap();
        assert!(matches!(load(dir.path()), Err(AllowlistError::File { .. })), "fail/file");
    }

    #[test]
    fn add_and_remove() {
        let mut list = Allowlist::defaults();
        let zoom: PartitionId = "teamid:BJ4HAAB9B3".parse().unwrap();
        assert!(list.add(zoom.clone()));
        assert!(!list.add(zoom.clone()));
        assert_eq!(list.entries().last(), Some(&zoom));
        assert!(list.remove(&zoom));
        assert!(!list.remove(&zoom));
        assert_eq!(list, Allowlist::defaults());
        assert!(matches!(
            Allowlist::from_strings(&["apple:", "nonsense"]),
            Err(AllowlistError::InvalidEntry { .. })
        ));
    }

    #[test]
    fn description_matches_what_the_keychain_stores() {
        let real = fixture("keychain-acl-partition-description.slack.hex");
        assert_eq!(decode_description(&real).unwrap(), ["teamid:BQR82RBBHL"]);
        // Our encoder produces the same bytes CoreFoundation does for the same list.
        assert_eq!(encode_description(&ids(&["teamid:BQR82RBBHL"])).unwrap(), real.trim());
        let list = ids(&["apple-tool:", "apple:", "teamid:EQHXZ8M8AV"]);
        let decoded = decode_description(&encode_description(&list).unwrap()).unwrap();
        assert_eq!(decoded, ["apple-tool:", "apple:", "teamid:EQHXZ8M8AV"]);
    }

    #[test]
    fn decode_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("fail/not-hex", "zz", "not hex"),
            ("fail/not-plist", "68656c6c6f", "not a plist"),
            (
                "fail/no-partitions",
                &hex::encode(b"<plist version=\"1.0\"><dict/></plist>"),
                "no Partitions array",
            ),
        ];
        for (name, text, why) in cases {
            let result = decode_description(text);
            assert!(
                matches!(&result, Err(AllowlistError::BadDescription { reason }) if reason.starts_with(why)),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn cli_table() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AllowlistCommand,
        }
        let cases: &[(&str, &[&str], Option<AllowlistCommand>)] = &[
            ("ok/show", &["show"], Some(AllowlistCommand::Show)),
            (
                "ok/add",
                &["add", "/Applications/Zoom.app"],
                Some(AllowlistCommand::Add { app: "/Applications/Zoom.app".into() }),
            ),
            (
                "ok/remove",
                &["remove", "teamid:BQR82RBBHL"],
                Some(AllowlistCommand::Remove { entry: "teamid:BQR82RBBHL".into() }),
            ),
            ("fail/add-without-app", &["add"], None),
            ("fail/unknown", &["list"], None),
        ];
        for (name, args, want) in cases {
            let got = Cli::try_parse_from(std::iter::once("allowlist").chain(args.iter().copied()))
                .ok()
                .map(|c| c.command);
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn persisted_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), (Allowlist::defaults(), Source::Default));

        let mut list = Allowlist::defaults();
        list.add("teamid:BJ4HAAB9B3".parse().unwrap());
        save(dir.path(), &list).unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), (list.clone(), Source::File));

        let managed = vec!["apple:".to_owned()];
        assert_eq!(
            resolve(Some(&managed), dir.path()).unwrap(),
            (Allowlist::from_strings(&["apple:"]).unwrap(), Source::Managed)
        );
        let bad = vec!["apple".to_owned()];
        assert!(matches!(resolve(Some(&bad), dir.path()), Err(AllowlistError::InvalidEntry { .. })));

        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\":2,\"entries\":[]}").unwrap();
        assert!(matches!(load(dir.path()), Err(AllowlistError::File { .. })));
    }
}
