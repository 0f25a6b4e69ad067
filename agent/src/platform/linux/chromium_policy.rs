//! Chromium's and Chrome's managed policy on Linux: our `AutoSelectCertificateForUrls` entries
//! (one per origin: the cert-auth domain and each protected origin) in
//! `/etc/chromium/policies/managed/` and `/etc/opt/chrome/policies/managed/` (root only).
//!
//! The browser reads every file in the directory, in byte order of the names, and when two
//! files set the same policy the *last* one wins outright: lists are not merged. So our file
//! (`zz-devicetrust.json`, named to sort late) carries the list the browser uses today, the
//! one from the last other file that sets the policy, plus our entries. Other files are never
//! written. If an administrator later edits their list, ours is a stale copy until
//! `install --system` runs again; [`PolicyStatus::in_sync`] says when that is the case.
//!
//! Which entries are ours needs no record here: every install rebuilds our file from the
//! other files' list and the origins wanted now, so an origin the CA dropped is simply not
//! written again, and an entry in another file (even one identical to ours) is never touched.
//!
//! Files are written atomically (a temporary file beside the directory, fsync, rename) with
//! mode 0644, since the browser runs as the user.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::autoselect::{self, Change, OurEntry, Status};

/// The policy we set.
pub(super) const POLICY: &str = "AutoSelectCertificateForUrls";
/// Our file in each managed directory; `zz-` so that it sorts after the usual names and wins.
pub(super) const POLICY_FILE: &str = "zz-devicetrust.json";

/// A browser that reads a managed policy directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Browser {
    /// Chromium (Debian's `chromium`).
    Chromium,
    /// Google Chrome.
    Chrome,
}

impl Browser {
    /// Both browsers.
    pub(crate) const ALL: [Browser; 2] = [Browser::Chromium, Browser::Chrome];

    /// The name `status` shows.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Chromium => "chromium",
            Self::Chrome => "chrome",
        }
    }

    /// Where the distributions' packages put the browser's program (Debian's and Ubuntu's
    /// `chromium`, the snap, Google's own package): any of them means it is installed.
    pub(crate) const fn executables(self) -> &'static [&'static str] {
        match self {
            Self::Chromium => &["/usr/bin/chromium", "/usr/bin/chromium-browser", "/snap/bin/chromium"],
            Self::Chrome => {
                &["/opt/google/chrome/chrome", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"]
            }
        }
    }

    /// The process name (`/proc/PID/comm`) of the browser's main program.
    pub(crate) const fn process_name(self) -> &'static str {
        match self {
            Self::Chromium => "chromium",
            Self::Chrome => "chrome",
        }
    }

    /// Whether any of [`Browser::executables`] exists.
    pub(crate) fn installed(self) -> bool {
        self.executables().iter().any(|path| std::path::Path::new(path).exists())
    }

    /// Where the browser reads managed (mandatory) policy on Linux.
    pub(crate) fn system_dir(self) -> PathBuf {
        PathBuf::from(match self {
            Self::Chromium => "/etc/chromium/policies/managed",
            Self::Chrome => "/etc/opt/chrome/policies/managed",
        })
    }
}

/// What went wrong with a policy directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PolicyError {
    /// A file operation failed (typically: not root).
    #[error("{action} {path}: {reason}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The managed directory has no parent to stage the temporary file in.
    #[error("the policy directory {dir} has no parent directory")]
    NoParent {
        /// The managed directory.
        dir: PathBuf,
    },
}

/// Where our entry stands for one browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyStatus {
    /// The browser.
    pub browser: Browser,
    /// Its managed policy directory.
    pub dir: PathBuf,
    /// Always true: these files are managed policy, which the user cannot change.
    pub managed: bool,
    /// Each wanted entry in the list the browser actually uses: the pattern and where it stands.
    pub entries: Vec<(String, Status)>,
    /// The file whose list the browser uses, if any file sets the policy.
    pub effective_file: Option<PathBuf>,
    /// Whether our file sets the policy.
    pub our_file: bool,
    /// Whether our file says what `install --system` would write now; false when another
    /// file's list changed since, or a later-sorting file overrides ours.
    pub in_sync: bool,
}

/// What an install or uninstall did in one directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyChange {
    /// The browser.
    pub browser: Browser,
    /// Our file.
    pub file: PathBuf,
    /// What happened to each wanted entry in the list the browser uses (install), position for
    /// position; empty for an uninstall.
    pub changes: Vec<Change>,
    /// How many of our entries an uninstall dropped (entries of our file that no other file has).
    pub removed: usize,
    /// Whether our file was written (or, when uninstalling, changed or deleted).
    pub file_changed: bool,
}

/// One browser's managed policy directory.
#[derive(Debug, Clone)]
pub(crate) struct ManagedPolicy {
    browser: Browser,
    dir: PathBuf,
}

/// The policy files of a directory as the browser sees them.
struct DirView {
    /// Our file's object (empty when absent or unreadable).
    ours: Map<String, Value>,
    ours_exists: bool,
    /// The list from the last other file that sets the policy, and that file.
    others: Option<(PathBuf, Vec<String>)>,
    /// The last file of all, ours included, that sets the policy: the browser's choice.
    effective: Option<(PathBuf, Vec<String>)>,
}

impl ManagedPolicy {
    /// The directory `dir` for `browser` (tests use temporary directories).
    pub(crate) fn new(browser: Browser, dir: PathBuf) -> Self {
        Self { browser, dir }
    }

    /// The system directory of `browser`.
    pub(crate) fn system(browser: Browser) -> Self {
        Self::new(browser, browser.system_dir())
    }

    /// The system directories of every browser.
    pub(crate) fn all_system() -> Vec<Self> {
        Browser::ALL.into_iter().map(Self::system).collect()
    }

    /// The browser.
    pub(crate) fn browser(&self) -> Browser {
        self.browser
    }

    /// Our file's path.
    pub(crate) fn file(&self) -> PathBuf {
        self.dir.join(POLICY_FILE)
    }

    /// Makes the browser use our entries: writes our file with the list the browser uses now
    /// plus each wanted entry whose pattern that list lacks (an entry for the pattern already
    /// there is an administrator's choice and stands). An entry our file held for an origin no
    /// longer wanted is not carried over. Creates the directory if needed.
    pub(crate) fn install(&self, wanted: &[OurEntry]) -> Result<PolicyChange, PolicyError> {
        let view = self.view()?;
        let (list, changes) = Self::wanted_list(&view, wanted);
        let mut object = view.ours.clone();
        match list {
            Some(list) => {
                object.insert(POLICY.to_owned(), Value::from(list));
            }
            // Other files already cover every pattern: ours must not repeat or shadow them.
            None => {
                object.remove(POLICY);
            }
        }
        let file_changed = self.store(&view, object)?;
        // Our file already said exactly this: nothing was added now.
        let changes = changes
            .into_iter()
            .map(|c| if c == Change::Added && !file_changed { Change::AlreadyPresent } else { c })
            .collect();
        Ok(PolicyChange { browser: self.browser, file: self.file(), changes, removed: 0, file_changed })
    }

    /// Removes our entries: drops the policy from our file, and the file when nothing else is
    /// in it. Other files are untouched, so entries they hold (even one for our pattern) stay.
    pub(crate) fn uninstall(&self) -> Result<PolicyChange, PolicyError> {
        let view = self.view()?;
        let our_list = view.ours.get(POLICY).map(string_list).unwrap_or_default();
        let base = view.others.as_ref().map(|(_, list)| list.clone()).unwrap_or_default();
        let removed = our_list.iter().filter(|e| !base.contains(e)).count();
        let mut object = view.ours.clone();
        object.remove(POLICY);
        let file_changed = self.store(&view, object)?;
        Ok(PolicyChange {
            browser: self.browser,
            file: self.file(),
            changes: Vec::new(),
            removed,
            file_changed,
        })
    }

    /// What our file's list should be (`None`: no list, other files cover every pattern) and
    /// what that does to each wanted entry.
    fn wanted_list(view: &DirView, wanted: &[OurEntry]) -> (Option<Vec<String>>, Vec<Change>) {
        let base = view.others.as_ref().map(|(_, list)| list.clone()).unwrap_or_default();
        let (list, changes) = autoselect::merge_all(&base, wanted);
        let list = changes.contains(&Change::Added).then_some(list);
        (list, changes)
    }

    /// Where each wanted entry stands in the list the browser uses.
    pub(crate) fn status(&self, wanted: &[OurEntry]) -> Result<PolicyStatus, PolicyError> {
        let view = self.view()?;
        let entries = wanted
            .iter()
            .map(|ours| {
                let status = match &view.effective {
                    Some((_, list)) => autoselect::status(list, ours),
                    None => Status::Absent,
                };
                (ours.pattern().to_owned(), status)
            })
            .collect();
        let our_list = view.ours.get(POLICY).map(string_list);
        let (want, _) = Self::wanted_list(&view, wanted);
        let effective_is_ours = view.effective.as_ref().is_some_and(|(path, _)| *path == self.file());
        let in_sync = our_list == want && (want.is_none() || effective_is_ours);
        Ok(PolicyStatus {
            browser: self.browser,
            dir: self.dir.clone(),
            managed: true,
            entries,
            effective_file: view.effective.map(|(path, _)| path),
            our_file: our_list.is_some(),
            in_sync,
        })
    }

    fn view(&self) -> Result<DirView, PolicyError> {
        let mut view = DirView { ours: Map::new(), ours_exists: false, others: None, effective: None };
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(view),
            Err(e) => return Err(io_err("read", &self.dir, e)),
        };
        // The browser sorts file names and lets the last file that sets a policy win.
        let mut files = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("read", &self.dir, e))?;
            let path = entry.path();
            if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.insert(entry.file_name(), path);
            }
        }
        for (name, path) in files {
            let object = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| match v {
                    Value::Object(map) => Some(map),
                    _ => None,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &path, e)),
            };
            let is_ours = name == POLICY_FILE;
            if is_ours {
                view.ours_exists = true;
            }
            // Unreadable files are skipped, as the browser skips them.
            let Some(object) = object else { continue };
            if let Some(value) = object.get(POLICY) {
                let list = string_list(value);
                if !is_ours {
                    view.others = Some((path.clone(), list.clone()));
                }
                view.effective = Some((path.clone(), list));
            }
            if is_ours {
                view.ours = object;
            }
        }
        Ok(view)
    }

    /// Writes `object` as our file, or deletes our file when `object` is empty; returns
    /// whether anything changed on disk.
    fn store(&self, view: &DirView, object: Map<String, Value>) -> Result<bool, PolicyError> {
        let path = self.file();
        if object.is_empty() {
            if !view.ours_exists {
                return Ok(false);
            }
            return match fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err("remove", &path, e)),
            };
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default();
        text.push('\n');
        if fs::read(&path).is_ok_and(|current| current == text.as_bytes()) {
            return Ok(false);
        }
        create_dirs(&self.dir)?;
        write_atomically(&self.dir, &path, text.as_bytes())?;
        Ok(true)
    }
}

/// The string items of a policy value (the browser drops other items too).
fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

// Creates missing directories 0755 whatever the umask, because the browser reads them as the
// user; existing directories keep their modes.
fn create_dirs(dir: &Path) -> Result<(), PolicyError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", d, e)),
        }
        fs::set_permissions(d, Permissions::from_mode(0o755)).map_err(|e| io_err("set mode of", d, e))?;
    }
    Ok(())
}

// The temporary file lives in the parent (`policies/`), which the browser does not read, so a
// half-written file can never be taken for policy.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), PolicyError> {
    let parent = dir.parent().ok_or_else(|| PolicyError::NoParent { dir: dir.to_owned() })?;
    let tmp = parent.join(format!(".{POLICY_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(Permissions::from_mode(0o644))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", path, e)
    })
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> PolicyError {
    PolicyError::Io { action, path: path.to_owned(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://cell-devicetrust.example.com";
    const CN: &str = "MTLS Certificate Authority";
    const INTRANET: &str =
        r#"{"pattern":"https://intranet.example.com","filter":{"ISSUER":{"CN":"Corp CA"}}}"#;
    const WIKI: &str = r#"{"pattern":"https://wiki.example.com","filter":{}}"#;
    const OURS_OTHER_FILTER: &str =
        r#"{"pattern":"https://cell-devicetrust.example.com","filter":{"SUBJECT":{"CN":"x"}}}"#;

    fn ours() -> OurEntry {
        OurEntry::new(ORIGIN, CN).unwrap()
    }

    struct Dir {
        _tmp: tempfile::TempDir,
        policy: ManagedPolicy,
    }

    impl Dir {
        fn new(files: &[(&str, &str)]) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("etc/chromium/policies/managed");
            if !files.is_empty() {
                fs::create_dir_all(&dir).unwrap();
            }
            for (name, text) in files {
                fs::write(dir.join(name), text).unwrap();
            }
            Self { _tmp: tmp, policy: ManagedPolicy::new(Browser::Chromium, dir) }
        }

        fn read(&self, name: &str) -> Option<String> {
            fs::read_to_string(self.policy.dir.join(name)).ok()
        }

        fn list(&self, name: &str) -> Vec<String> {
            let value: Value = serde_json::from_str(&self.read(name).unwrap()).unwrap();
            string_list(&value[POLICY])
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.policy.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn policy_file(entries: &[&str], extra: &str) -> String {
        let list: Vec<Value> = entries.iter().map(|e| Value::from(*e)).collect();
        format!(r#"{{ {extra} "{POLICY}": {} }}"#, Value::from(list))
    }

    #[test]
    fn ok_fresh_install_creates_dirs_and_file() {
        let d = Dir::new(&[]);
        let change = d.policy.install(&[ours()]).unwrap();
        assert_eq!((change.changes.as_slice(), change.file_changed), ([Change::Added].as_slice(), true));
        assert_eq!(d.list(POLICY_FILE), [ours().to_json()]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.policy.dir), 0o755);
        assert_eq!(mode(d.policy.dir.parent().unwrap()), 0o755);
        assert_eq!(mode(&d.policy.file()), 0o644);
        let parent = d.policy.dir.parent().unwrap();
        let leftovers: Vec<_> = fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["managed"], "no temporary file is left beside the directory");
        let status = d.policy.status(&[ours()]).unwrap();
        assert_eq!(status.entries, [(ORIGIN.to_owned(), Status::Present)]);
        assert!(status.managed && status.our_file && status.in_sync, "{status:?}");
        assert_eq!(status.effective_file, Some(d.policy.file()));

        let again = d.policy.install(&[ours()]).unwrap();
        assert_eq!((again.changes, again.file_changed), (vec![Change::AlreadyPresent], false), "idempotent");
    }

    #[test]
    fn ok_merges_with_existing_policy_files() {
        let corp = policy_file(
            &[INTRANET, "not json at all"],
            r#""HomepageLocation": "https://intranet.example.com","#,
        );
        let other = r#"{"BookmarkBarEnabled": true}"#;
        let older = policy_file(&[WIKI], "");
        let d = Dir::new(&[
            ("corp.json", &corp),
            ("a-older.json", &older),
            ("other.json", other),
            ("README", "not policy"),
        ]);

        let change = d.policy.install(&[ours()]).unwrap();
        assert_eq!(change.changes, [Change::Added]);
        // The browser used corp.json's list (the last file setting it); ours is that list plus us.
        assert_eq!(
            d.list(POLICY_FILE),
            [INTRANET.to_owned(), "not json at all".to_owned(), ours().to_json()]
        );
        assert_eq!(d.read("corp.json").unwrap(), corp, "other files are untouched");
        assert_eq!(d.read("a-older.json").unwrap(), older);
        assert_eq!(d.read("other.json").unwrap(), other);
        assert_eq!(d.names(), ["README", "a-older.json", "corp.json", "other.json", POLICY_FILE]);
        assert!(d.policy.status(&[ours()]).unwrap().in_sync);

        let change = d.policy.uninstall().unwrap();
        assert_eq!((change.removed, change.file_changed), (1, true));
        assert_eq!(d.names(), ["README", "a-older.json", "corp.json", "other.json"]);
        assert_eq!(d.read("corp.json").unwrap(), corp);
        let status = d.policy.status(&[ours()]).unwrap();
        assert_eq!(status.entries, [(ORIGIN.to_owned(), Status::Absent)]);
        assert_eq!(status.effective_file, Some(d.policy.dir.join("corp.json")));

        let again = d.policy.uninstall().unwrap();
        assert_eq!((again.removed, again.file_changed), (0, false), "second uninstall is a no-op");
    }

    #[test]
    fn ok_existing_entry_for_pattern_is_not_duplicated() {
        let corp = policy_file(&[INTRANET, &ours().to_json()], "");
        let d = Dir::new(&[("corp.json", &corp)]);
        let change = d.policy.install(&[ours()]).unwrap();
        assert_eq!((change.changes, change.file_changed), (vec![Change::AlreadyPresent], false));
        assert_eq!(d.read(POLICY_FILE), None);
        let status = d.policy.status(&[ours()]).unwrap();
        assert_eq!(status.entries, [(ORIGIN.to_owned(), Status::Present)]);
        assert!(!status.our_file && status.in_sync, "{status:?}");
        // Not ours to remove.
        let change = d.policy.uninstall().unwrap();
        assert_eq!((change.removed, change.file_changed), (0, false));
        assert_eq!(d.read("corp.json").unwrap(), corp);
    }

    #[test]
    fn fail_pattern_taken_by_another_filter() {
        let corp = policy_file(&[OURS_OTHER_FILTER], "");
        let d = Dir::new(&[("corp.json", &corp)]);
        let change = d.policy.install(&[ours()]).unwrap();
        assert_eq!(change.changes, [Change::PatternHasOtherFilter]);
        assert_eq!(d.read(POLICY_FILE), None);
        assert_eq!(
            d.policy.status(&[ours()]).unwrap().entries,
            [(ORIGIN.to_owned(), Status::PresentWithOtherFilter)]
        );
    }

    #[test]
    fn ok_our_file_keeps_foreign_keys_and_is_rewritten_when_stale() {
        let d = Dir::new(&[(POLICY_FILE, r#"{"Extra": 1, "AutoSelectCertificateForUrls": ["stale"]}"#)]);
        assert!(!d.policy.status(&[ours()]).unwrap().in_sync);
        d.policy.install(&[ours()]).unwrap();
        let value: Value = serde_json::from_str(&d.read(POLICY_FILE).unwrap()).unwrap();
        assert_eq!(value["Extra"], 1);
        assert_eq!(d.list(POLICY_FILE), [ours().to_json()]);
        d.policy.uninstall().unwrap();
        assert_eq!(d.read(POLICY_FILE).unwrap().trim(), "{\n  \"Extra\": 1\n}", "only our policy goes");

        // An administrator changes their list after install: status notices, install repairs.
        let d = Dir::new(&[("corp.json", &policy_file(&[INTRANET], ""))]);
        d.policy.install(&[ours()]).unwrap();
        fs::write(d.policy.dir.join("corp.json"), policy_file(&[INTRANET, WIKI], "")).unwrap();
        assert!(!d.policy.status(&[ours()]).unwrap().in_sync);
        d.policy.install(&[ours()]).unwrap();
        assert_eq!(d.list(POLICY_FILE), [INTRANET.to_owned(), WIKI.to_owned(), ours().to_json()]);
        assert!(d.policy.status(&[ours()]).unwrap().in_sync);
    }

    const APPS: &str = "https://[*.]apps.example.com";
    const WIKI_ORIGIN: &str = "https://wiki.example.com:8443";

    fn entries(patterns: &[&str]) -> Vec<OurEntry> {
        patterns.iter().map(|p| OurEntry::new(p, CN).unwrap()).collect()
    }

    fn jsons(patterns: &[&str]) -> Vec<String> {
        entries(patterns).iter().map(OurEntry::to_json).collect()
    }

    /// The round trip of the origins list through real files: added, dropped, the other
    /// files' entries (one of them identical to an entry we want) untouched throughout.
    #[test]
    fn ok_entries_follow_the_origins_list() {
        let apps_by_admin = OurEntry::new(APPS, CN).unwrap().to_json();
        let corp = policy_file(&[INTRANET, &apps_by_admin, "junk"], "");
        let d = Dir::new(&[("corp.json", &corp)]);

        let change = d.policy.install(&entries(&[ORIGIN, APPS, WIKI_ORIGIN])).unwrap();
        assert_eq!(change.changes, [Change::Added, Change::AlreadyPresent, Change::Added]);
        let mut want = vec![INTRANET.to_owned(), apps_by_admin.clone(), "junk".to_owned()];
        want.extend(jsons(&[ORIGIN, WIKI_ORIGIN]));
        assert_eq!(d.list(POLICY_FILE), want, "the admin's identical entry is not repeated");
        let status = d.policy.status(&entries(&[ORIGIN, APPS, WIKI_ORIGIN])).unwrap();
        assert!(status.in_sync && status.entries.iter().all(|(_, s)| *s == Status::Present), "{status:?}");

        // The CA drops the wiki and the apps: the wiki entry goes; the admin's apps entry stays.
        assert!(!d.policy.status(&entries(&[ORIGIN])).unwrap().in_sync, "status notices the change");
        let change = d.policy.install(&entries(&[ORIGIN])).unwrap();
        assert!(change.file_changed);
        let mut want = vec![INTRANET.to_owned(), apps_by_admin.clone(), "junk".to_owned()];
        want.extend(jsons(&[ORIGIN]));
        assert_eq!(d.list(POLICY_FILE), want);
        assert_eq!(d.read("corp.json").unwrap(), corp, "other files are never written");
        let status = d.policy.status(&entries(&[ORIGIN, WIKI_ORIGIN])).unwrap();
        assert_eq!(status.entries[1], (WIKI_ORIGIN.to_owned(), Status::Absent));

        let change = d.policy.uninstall().unwrap();
        assert_eq!((change.removed, change.file_changed), (1, true));
        assert_eq!(d.read(POLICY_FILE), None);
        assert_eq!(d.read("corp.json").unwrap(), corp);
    }

    #[test]
    fn fail_overridden_by_later_file() {
        let d = Dir::new(&[("zzz-late.json", &policy_file(&[INTRANET], ""))]);
        d.policy.install(&[ours()]).unwrap();
        let status = d.policy.status(&[ours()]).unwrap();
        assert_eq!(status.entries, [(ORIGIN.to_owned(), Status::Absent)], "the browser uses zzz-late.json");
        assert_eq!(status.effective_file, Some(d.policy.dir.join("zzz-late.json")));
        assert!(status.our_file && !status.in_sync, "{status:?}");
    }

    #[test]
    fn fail_unwritable_directory() {
        let d = Dir::new(&[]);
        let blocker = d.policy.dir.parent().unwrap().to_owned();
        fs::create_dir_all(blocker.parent().unwrap()).unwrap();
        fs::write(&blocker, "a file where a directory should be").unwrap();
        let err = d.policy.install(&[ours()]).unwrap_err();
        assert!(matches!(err, PolicyError::Io { .. }), "{err:?}");
    }

    #[test]
    fn system_dirs() {
        let dirs: Vec<_> =
            ManagedPolicy::all_system().iter().map(|p| (p.browser().name(), p.dir.clone())).collect();
        assert_eq!(
            dirs,
            [
                ("chromium", PathBuf::from("/etc/chromium/policies/managed")),
                ("chrome", PathBuf::from("/etc/opt/chrome/policies/managed")),
            ]
        );
    }
}
