//! The agent's own persisted state, beside the identities: the backoff memory, what the CA
//! last said about the current certificate, the revocation marker, the browser entries it
//! added to shared lists, and the cached CA metadata (cert-auth domain, protected origins,
//! issuer CN, CA certificates for the chain check).
//!
//! Files live in the data directory, are written atomically and are 0600. A state file
//! that cannot be parsed is reported, never silently reset: resetting it would forget a
//! revocation or a backoff.
//!
//! As root ([`Trust::RootOnly`]) the cached metadata is used only from a file nobody but root
//! can change: under `sudo -E` the data directory is the invoking user's, and their
//! `metadata.json` could name any cert-auth domain. Such a cache is refused with
//! [`PlatformError::Untrusted`]; the commands that run as root prefer metadata fetched now.

use std::fs::File;
use std::path::{Path, PathBuf};

use ca_client::protocol::Metadata;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decision::{BackoffState, CaVerdict};
use crate::platform::{PlatformError, WrittenEntries};
use crate::trust::Trust;
use crate::util::files;

const STATE: &str = "state.json";
const METADATA: &str = "metadata.json";
const LOCK: &str = "agent.lock";

/// What the CA last said, and about which certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CaStatusRecord {
    /// The serial number the verdict is about; a verdict about another certificate is stale.
    pub serial_number: String,
    /// The verdict.
    pub verdict: Verdict,
    /// When the CA said it.
    pub checked_at: DateTime<Utc>,
}

/// [`CaVerdict`] as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// Known, not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// The CA wants a new enrollment.
    ReenrollRequired,
}

impl From<Verdict> for CaVerdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Good => Self::Good,
            Verdict::Revoked => Self::Revoked,
            Verdict::ReenrollRequired => Self::ReenrollRequired,
        }
    }
}

/// A revocation the agent acted on, kept so that `status` can say why nothing is enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevokedRecord {
    /// The revoked certificate.
    pub serial_number: String,
    /// When the agent uninstalled because of it.
    pub uninstalled_at: DateTime<Utc>,
}

/// The contents of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentState {
    /// Failures of enrollment and renewal.
    #[serde(default)]
    pub backoff: BackoffState,
    /// What the CA last said about the current certificate.
    #[serde(default)]
    pub ca_status: Option<CaStatusRecord>,
    /// Set when a revocation made the agent uninstall; cleared by the next enrollment.
    #[serde(default)]
    pub revoked: Option<RevokedRecord>,
    /// The serial of the certificate last put into the user's browsers (NSS database,
    /// keychain preferences); when it differs from the stored identity, `run` applies again.
    #[serde(default)]
    pub browsers_serial: Option<String>,
    /// The browser entries the agent added to lists it shares with others, by list: the only
    /// ones it removes when the CA stops publishing their origin (see [`crate::autoselect`]).
    #[serde(default, skip_serializing_if = "WrittenEntries::is_empty")]
    pub autoselect_written: WrittenEntries,
}

impl AgentState {
    /// The CA's verdict about the certificate with `serial`, if the record is about it.
    pub(crate) fn verdict_for(&self, serial: &str) -> CaVerdict {
        match &self.ca_status {
            Some(record) if ca_client::cert::serials_equal(&record.serial_number, serial) => {
                record.verdict.into()
            }
            _ => CaVerdict::Unknown,
        }
    }
}

/// The cached metadata, with when it was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CachedMetadata {
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
    /// The CA URL it was fetched from.
    pub ca_url: String,
    /// The answer.
    pub metadata: Metadata,
}

/// The state files in one data directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
    trust: Trust,
}

impl StateDir {
    /// The state files under `dir`, for a user ([`Trust::User`]).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), trust: Trust::User }
    }

    /// The same files, read under `trust`.
    pub(crate) fn with_trust(self, trust: Trust) -> Self {
        Self { trust, ..self }
    }

    /// The path of the cached metadata.
    pub(crate) fn metadata_path(&self) -> PathBuf {
        self.dir.join(METADATA)
    }

    #[cfg(test)]
    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `state.json`; a missing file is the default state.
    pub(crate) fn load(&self) -> Result<AgentState, PlatformError> {
        read_json(&self.dir.join(STATE), "the agent state").map(Option::unwrap_or_default)
    }

    /// Replaces `state.json`.
    pub(crate) fn save(&self, state: &AgentState) -> Result<(), PlatformError> {
        write_json(&self.dir, STATE, state)
    }

    /// Reads the cached metadata, if any; as root, a cache another user could have written is
    /// refused ([`PlatformError::Untrusted`]).
    pub(crate) fn load_metadata(&self) -> Result<Option<CachedMetadata>, PlatformError> {
        let path = self.metadata_path();
        if self.trust == Trust::RootOnly && std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let checked = self.trust.resolve("the cached CA metadata", &path)?;
        let Some(bytes) = files::read_optional(&checked)? else { return Ok(None) };
        parse_json(&path, &bytes, "the cached CA metadata").map(Some)
    }

    /// Replaces the cached metadata.
    pub(crate) fn save_metadata(&self, cached: &CachedMetadata) -> Result<(), PlatformError> {
        write_json(&self.dir, METADATA, cached)
    }

    /// Takes the run lock, waiting for another run of this user to finish: the timer, a
    /// login run and a manual command must not interleave their steps.
    pub(crate) fn lock(&self) -> Result<RunLock, PlatformError> {
        files::ensure_private_dir(&self.dir)?;
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode_private()
            .open(&path)
            .map_err(|e| PlatformError::io("could not open", &path, e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| PlatformError::io("could not lock", &path, errno.into()))?;
        Ok(RunLock { _lock: lock })
    }

    /// Removes the state files, the lock file and the directory when it is left empty;
    /// returns a line per removed state file.
    pub(crate) fn remove_all(&self) -> Result<Vec<String>, PlatformError> {
        let mut removed = Vec::new();
        for (name, what) in [(STATE, "agent state"), (METADATA, "cached CA metadata")] {
            let path = self.dir.join(name);
            if files::remove_file_if_exists(&path)? {
                removed.push(format!("{what} {}", path.display()));
            }
        }
        files::remove_file_if_exists(&self.dir.join(LOCK))?;
        files::remove_dir_if_empty(&self.dir)?;
        Ok(removed)
    }
}

/// Held while a command changes state; released on drop.
#[derive(Debug)]
pub(crate) struct RunLock {
    _lock: nix::fcntl::Flock<File>,
}

trait OpenPrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl OpenPrivate for std::fs::OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.mode(files::FILE_MODE)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<Option<T>, PlatformError> {
    let Some(bytes) = files::read_optional(path)? else { return Ok(None) };
    parse_json(path, &bytes, what).map(Some)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    what: &'static str,
) -> Result<T, PlatformError> {
    serde_json::from_slice(bytes).map_err(|e| PlatformError::Corrupt {
        what,
        location: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), PlatformError> {
    files::ensure_private_dir(dir)?;
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| PlatformError::Encode { what: "a state file", source })?;
    bytes.push(b'\n');
    files::write_atomic(&dir.join(name), &bytes).map_err(PlatformError::from)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::decision::backoff::Jitter;

    #[test]
    fn state_round_trips_and_missing_is_default() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(temp.path().join("dt"));
        assert_eq!(dir.load().expect("load"), AgentState::default());
        let now = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000);
        let state = AgentState {
            backoff: BackoffState::default().after_failure(now, Jitter::NONE, "ca down"),
            ca_status: Some(CaStatusRecord {
                serial_number: "0a1b".into(),
                verdict: Verdict::Revoked,
                checked_at: now,
            }),
            revoked: None,
            browsers_serial: Some("0a1a".into()),
            autoselect_written: [("com.google.Chrome".to_owned(), vec!["{}".to_owned()])].into(),
        };
        dir.save(&state).expect("save");
        assert_eq!(dir.load().expect("load"), state);
        assert_eq!(state.verdict_for("0A1B"), CaVerdict::Revoked);
        assert_eq!(
            state.verdict_for("0a1c"),
            CaVerdict::Unknown,
            "a verdict about another certificate is stale"
        );
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(temp.path());
        std::fs::write(temp.path().join(STATE), b"{\"backoff\": 3").expect("write");
        assert!(matches!(dir.load(), Err(PlatformError::Corrupt { .. })));
    }

    fn cached() -> CachedMetadata {
        CachedMetadata {
            fetched_at: DateTime::<Utc>::UNIX_EPOCH,
            ca_url: "https://ca.example.com".into(),
            metadata: Metadata {
                cert_auth_domain: "*".into(),
                issuer_common_name: "CA".into(),
                ca_certificates: Vec::new(),
                certificate_lifetime_days: 365,
                renew_before_days: 30,
                max_unbound_certificates: 5,
                read_only: false,
                protected_origins: Vec::new(),
            },
        }
    }

    /// A user reads their own cache; root refuses one it does not own, naming it. (Run as
    /// root, the test hands the file to `nobody`; run as a user, it is not root's anyway.)
    #[test]
    fn root_refuses_a_cache_it_does_not_own() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(temp.path().join("dt"));
        dir.save_metadata(&cached()).expect("save");
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&dir.metadata_path(), Some(nix::unistd::Uid::from_raw(65534)), None)
                .expect("chown");
        }
        assert_eq!(dir.load_metadata().expect("ok/user"), Some(cached()));
        let root = dir.clone().with_trust(Trust::RootOnly);
        let err = root.load_metadata().expect_err("fail/root");
        assert!(matches!(err, PlatformError::Untrusted(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("metadata.json") && text.contains("is not owned by root"), "{text}");
        // No cache: nothing to refuse.
        let empty = StateDir::new(temp.path().join("none")).with_trust(Trust::RootOnly);
        assert_eq!(empty.load_metadata().expect("ok/no-cache"), None);
    }

    #[test]
    fn remove_all_removes_the_empty_dir_and_is_idempotent() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::new(temp.path().join("dt"));
        {
            let _lock = dir.lock().expect("lock");
            dir.save(&AgentState::default()).expect("save");
        }
        assert_eq!(dir.remove_all().expect("remove").len(), 1);
        assert!(!dir.dir().exists());
        assert!(dir.remove_all().expect("again").is_empty());
    }
}
