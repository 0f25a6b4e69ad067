//! The identity store on files: the Linux backend's [`IdentityStore`], and the one tests use.
//!
//! Layout under the data directory (0700):
//!
//! ```text
//! identities.json             {"current": ID, "pending": ID, "previous": ID}, each optional
//! identities/ID/key.pem       the PKCS#8 private key, 0600
//! identities/ID/cert.pem      the issued certificate, once the CA answered
//! identities/ID/chain.pem     the issuing chain the CA returned
//! ```
//!
//! An identity directory is written completely before the index names it, and the index is
//! replaced atomically, so that a switch-over is one rename: the index names the new
//! identity as current and the old one as previous, which is deleted afterwards. A
//! directory the index does not name is debris of a crash before any request was made, and
//! is swept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ca_client::signer::{KeyAlgorithm, KeySigner, SoftwareKey};
use serde::{Deserialize, Serialize};

use crate::platform::{Identity, IdentityStore, PlatformError, StoreDescription, StoreSnapshot};
use crate::util::{files, pem};

const INDEX: &str = "identities.json";
const IDENTITIES: &str = "identities";
const KEY: &str = "key.pem";
const CERT: &str = "cert.pem";
const CHAIN: &str = "chain.pem";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    pending: Option<String>,
    #[serde(default)]
    previous: Option<String>,
}

impl Index {
    fn names(&self, id: &str) -> bool {
        [&self.current, &self.pending, &self.previous].into_iter().any(|slot| slot.as_deref() == Some(id))
    }
}

/// Identities as files under one private directory; keys are PKCS#8 PEM files, mode 0600.
#[derive(Debug, Clone)]
pub(crate) struct FileIdentityStore {
    dir: PathBuf,
}

impl FileIdentityStore {
    /// A store rooted at `dir`; nothing is created until the first write.
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    #[cfg(test)]
    /// The root directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the current identity's key file, if there is a current identity; for
    /// backends that must hand the key to a browser database (NSS) by their own means.
    pub(crate) fn current_key_path(&self) -> Result<Option<PathBuf>, PlatformError> {
        Ok(self.load_index()?.current.map(|id| self.identity_dir(&id).join(KEY)))
    }

    #[cfg_attr(target_os = "macos", allow(dead_code, reason = "only the Linux backend uses it"))]
    /// The current identity's PKCS#8 DER key, for an import into NSS. A secret: never log it,
    /// never write it outside a 0700 directory.
    pub(crate) fn current_key_pkcs8(&self) -> Result<Option<Vec<u8>>, PlatformError> {
        let Some(id) = self.load_index()?.current else { return Ok(None) };
        let key = self.load_key(&id, "the current key")?;
        Ok(Some(key.pkcs8_der()))
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX)
    }

    fn identity_dir(&self, id: &str) -> PathBuf {
        self.dir.join(IDENTITIES).join(id)
    }

    fn load_index(&self) -> Result<Index, PlatformError> {
        let path = self.index_path();
        match files::read_optional(&path)? {
            None => Ok(Index::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| PlatformError::Corrupt {
                what: "the identity index",
                location: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn save_index(&self, index: &Index) -> Result<(), PlatformError> {
        files::ensure_private_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(index)
            .map_err(|source| PlatformError::Encode { what: "the identity index", source })?;
        files::write_atomic(&self.index_path(), &bytes).map_err(PlatformError::from)
    }

    fn load_key(&self, id: &str, what: &'static str) -> Result<SoftwareKey, PlatformError> {
        let path = self.identity_dir(id).join(KEY);
        let pem = files::read_optional(&path)?.ok_or(PlatformError::Missing(what))?;
        let der =
            pem::first(&pem, "PRIVATE KEY").ok_or_else(|| corrupt(what, &path, "not a PEM private key"))?;
        SoftwareKey::from_pkcs8_der(&der).map_err(|e| corrupt(what, &path, &e.to_string()))
    }

    fn load_identity(&self, id: &str, what: &'static str) -> Result<Option<Identity>, PlatformError> {
        let dir = self.identity_dir(id);
        let Some(cert) = files::read_optional(&dir.join(CERT))? else { return Ok(None) };
        let certificate_pem =
            String::from_utf8(cert).map_err(|_| corrupt(what, &dir.join(CERT), "not UTF-8 text"))?;
        let chain = files::read_optional(&dir.join(CHAIN))?.unwrap_or_default();
        let chain =
            String::from_utf8(chain).map_err(|_| corrupt(what, &dir.join(CHAIN), "not UTF-8 text"))?;
        let key = self.load_key(id, what)?;
        Ok(Some(Identity { certificate_pem, chain_pem: pem::split_certificates(&chain), key: Arc::new(key) }))
    }

    /// Removes identity directories the index does not name; returns what it removed.
    fn sweep(&self, index: &Index) -> Result<Vec<PathBuf>, PlatformError> {
        let root = self.dir.join(IDENTITIES);
        let entries = match fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PlatformError::io("could not list", root, e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| PlatformError::io("could not list", &root, e))?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|id| index.names(id)) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                files::remove_dir_all_if_exists(&path)?;
            } else {
                files::remove_file_if_exists(&path)?;
            }
            removed.push(path);
        }
        if !removed.is_empty() {
            files::sync_dir(&root)?;
        }
        Ok(removed)
    }
}

fn corrupt(what: &'static str, path: &Path, reason: &str) -> PlatformError {
    PlatformError::Corrupt { what, location: path.display().to_string(), reason: reason.to_owned() }
}

fn new_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

impl IdentityStore for FileIdentityStore {
    fn pending_key(&self) -> Result<Option<Arc<dyn KeySigner>>, PlatformError> {
        let Some(id) = self.load_index()?.pending else { return Ok(None) };
        match self.load_key(&id, "the pending key") {
            Ok(key) => Ok(Some(Arc::new(key))),
            // The index is written only after the key, so this is outside tampering; a new
            // pending key replaces the dangling entry.
            Err(PlatformError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_pending_key(&self) -> Result<Arc<dyn KeySigner>, PlatformError> {
        let mut index = self.load_index()?;
        let key = SoftwareKey::generate(KeyAlgorithm::EcdsaP256Sha256)
            .map_err(|e| PlatformError::key("could not generate a key", e))?;
        let id = new_id();
        let dir = self.identity_dir(&id);
        files::ensure_private_dir(&self.dir)?;
        files::ensure_private_dir(&self.dir.join(IDENTITIES))?;
        files::ensure_private_dir(&dir)?;
        files::write_atomic(&dir.join(KEY), pem::encode("PRIVATE KEY", &key.pkcs8_der()).as_bytes())?;
        index.pending = Some(id);
        self.save_index(&index)?;
        // The replaced pending key, if any, is now unnamed.
        self.sweep(&index)?;
        Ok(Arc::new(key))
    }

    fn store_pending_certificate(
        &self,
        certificate_pem: &str,
        chain_pem: &[String],
    ) -> Result<(), PlatformError> {
        let index = self.load_index()?;
        let id = index.pending.ok_or(PlatformError::Missing("the pending key"))?;
        let dir = self.identity_dir(&id);
        if !dir.join(KEY).exists() {
            return Err(PlatformError::Missing("the pending key"));
        }
        // The chain first: the certificate's presence is what marks the identity complete.
        let chain: String = chain_pem.iter().map(|pem| ensure_newline(pem)).collect();
        files::write_atomic(&dir.join(CHAIN), chain.as_bytes())?;
        files::write_atomic(&dir.join(CERT), ensure_newline(certificate_pem).as_bytes())
            .map_err(PlatformError::from)
    }

    fn pending_identity(&self) -> Result<Option<Identity>, PlatformError> {
        let Some(id) = self.load_index()?.pending else { return Ok(None) };
        self.load_identity(&id, "the pending identity")
    }

    fn discard_pending_certificate(&self) -> Result<(), PlatformError> {
        let Some(id) = self.load_index()?.pending else { return Ok(()) };
        let dir = self.identity_dir(&id);
        files::remove_file_if_exists(&dir.join(CERT))?;
        files::remove_file_if_exists(&dir.join(CHAIN))?;
        files::sync_dir(&dir)
            .or_else(|e| if dir.exists() { Err(e) } else { Ok(()) })
            .map_err(PlatformError::from)
    }

    fn promote(&self) -> Result<(), PlatformError> {
        let index = self.load_index()?;
        let pending = index.pending.clone().ok_or(PlatformError::Missing("the pending identity"))?;
        if !self.identity_dir(&pending).join(CERT).exists() {
            return Err(PlatformError::Missing("the pending identity's certificate"));
        }
        if index.previous.is_some() {
            // Finish the last switch-over first, so that no identity becomes unnamed debris
            // while still holding a certificate the CA counts.
            self.delete_previous()?;
        }
        let current = self.load_index()?.current;
        self.save_index(&Index { current: Some(pending), pending: None, previous: current })
    }

    fn delete_previous(&self) -> Result<bool, PlatformError> {
        let mut index = self.load_index()?;
        let Some(previous) = index.previous.take() else {
            self.sweep(&index)?;
            return Ok(false);
        };
        // Unname first, then delete: a crash in between leaves debris the sweep removes.
        self.save_index(&index)?;
        let dir = self.identity_dir(&previous);
        files::remove_dir_all_if_exists(&dir)?;
        self.sweep(&index)?;
        Ok(true)
    }

    fn current(&self) -> Result<Option<Identity>, PlatformError> {
        let Some(id) = self.load_index()?.current else { return Ok(None) };
        match self.load_identity(&id, "the current identity")? {
            Some(identity) => Ok(Some(identity)),
            None => Err(PlatformError::Missing("the current identity's certificate")),
        }
    }

    fn snapshot(&self) -> Result<StoreSnapshot, PlatformError> {
        let index = self.load_index()?;
        let exists = |id: &Option<String>, file: &str| {
            id.as_ref().is_some_and(|id| self.identity_dir(id).join(file).exists())
        };
        Ok(StoreSnapshot {
            current: exists(&index.current, CERT),
            pending_key: exists(&index.pending, KEY),
            pending_certificate: exists(&index.pending, CERT),
            previous: exists(&index.previous, KEY),
        })
    }

    fn remove_all(&self) -> Result<Vec<String>, PlatformError> {
        let mut removed = Vec::new();
        let identities = self.dir.join(IDENTITIES);
        let snapshot = self.snapshot().unwrap_or_default();
        if files::remove_dir_all_if_exists(&identities)? {
            let mut what = Vec::new();
            if snapshot.current {
                what.push("current identity");
            }
            if snapshot.pending_key {
                what.push("pending key");
            }
            if snapshot.previous {
                what.push("previous identity");
            }
            let what = if what.is_empty() { String::from("no identity") } else { what.join(", ") };
            removed.push(format!("identities ({what}) in {}", identities.display()));
        }
        if files::remove_file_if_exists(&self.index_path())? {
            removed.push(format!("identity index {}", self.index_path().display()));
        }
        if !removed.is_empty() && self.dir.exists() {
            files::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    fn describe(&self) -> StoreDescription {
        let mut details = BTreeMap::new();
        if let Ok(Some(path)) = self.current_key_path() {
            details.insert("keyFile".to_owned(), path.display().to_string());
        }
        StoreDescription { kind: "files".to_owned(), location: self.dir.display().to_string(), details }
    }
}

fn ensure_newline(pem: &str) -> String {
    if pem.ends_with('\n') { pem.to_owned() } else { format!("{pem}\n") }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn store() -> (tempfile::TempDir, FileIdentityStore) {
        let temp = tempfile::tempdir().expect("tempdir");
        let store = FileIdentityStore::new(temp.path().join("devicetrust"));
        (temp, store)
    }

    const CERT_A: &str = "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n";
    const CERT_B: &str = "-----BEGIN CERTIFICATE-----\nQg==\n-----END CERTIFICATE-----";

    fn files(dir: &Path) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("list") {
                let e = e.expect("entry");
                let mode = e.metadata().expect("meta").permissions().mode() & 0o777;
                let rel = e.path().strip_prefix(dir).expect("prefix").display().to_string();
                if e.path().is_dir() {
                    stack.push(e.path());
                }
                out.push((rel, mode));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn enrollment_then_renewal_keeps_one_identity() {
        let (_temp, store) = store();
        assert_eq!(store.snapshot().expect("snapshot"), StoreSnapshot::default());
        assert!(store.current().expect("current").is_none());

        let key = store.create_pending_key().expect("pending");
        let again = store.pending_key().expect("reload").expect("present");
        assert_eq!(key.public_key_sec1(), again.public_key_sec1(), "a retry reuses the persisted key");
        assert_eq!(
            store.snapshot().expect("snapshot"),
            StoreSnapshot { pending_key: true, ..StoreSnapshot::default() }
        );

        store.store_pending_certificate(CERT_A, &[CERT_B.to_owned()]).expect("store cert");
        let pending = store.pending_identity().expect("pending identity").expect("present");
        assert_eq!(pending.certificate_pem, CERT_A);
        assert_eq!(pending.chain_pem, vec![format!("{CERT_B}\n")]);
        store.promote().expect("promote");
        let current = store.current().expect("current").expect("present");
        assert_eq!(current.key.public_key_sec1(), key.public_key_sec1());
        assert_eq!(
            store.snapshot().expect("snapshot"),
            StoreSnapshot { current: true, ..StoreSnapshot::default() }
        );

        // Renewal: the new key sits beside the old identity until promoted.
        let next = store.create_pending_key().expect("next key");
        assert_eq!(
            store.current().expect("current").expect("still there").key.public_key_sec1(),
            key.public_key_sec1()
        );
        store.store_pending_certificate(CERT_B, &[]).expect("store new cert");
        store.promote().expect("switch");
        let snap = store.snapshot().expect("snapshot");
        assert!(snap.current && snap.previous && !snap.pending_key, "{snap:?}");
        assert_eq!(
            store.current().expect("current").expect("new").key.public_key_sec1(),
            next.public_key_sec1()
        );
        assert!(store.delete_previous().expect("delete old"));
        assert!(!store.delete_previous().expect("nothing left"));
        assert_eq!(
            store.snapshot().expect("snapshot"),
            StoreSnapshot { current: true, ..StoreSnapshot::default() }
        );
        assert_eq!(fs::read_dir(store.dir().join(IDENTITIES)).expect("list").count(), 1);
    }

    #[test]
    fn everything_is_private() {
        let (_temp, store) = store();
        store.create_pending_key().expect("pending");
        store.store_pending_certificate(CERT_A, &[]).expect("cert");
        let root_mode = fs::metadata(store.dir()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(root_mode, 0o700);
        for (path, mode) in files(store.dir()) {
            let dir = store.dir().join(&path).is_dir();
            assert_eq!(mode, if dir { 0o700 } else { 0o600 }, "{path}");
        }
    }

    #[test]
    fn a_new_pending_key_replaces_the_old_and_sweeps_debris() {
        let (_temp, store) = store();
        let first = store.create_pending_key().expect("first");
        // Debris of a crash between writing a key and naming it in the index.
        files::ensure_private_dir(&store.dir().join(IDENTITIES).join("debris")).expect("debris");
        let second = store.create_pending_key().expect("second");
        assert_ne!(first.public_key_sec1(), second.public_key_sec1());
        assert_eq!(fs::read_dir(store.dir().join(IDENTITIES)).expect("list").count(), 1);
    }

    #[test]
    fn fail_cases() {
        let (_temp, store) = store();
        assert!(
            matches!(store.store_pending_certificate(CERT_A, &[]), Err(PlatformError::Missing(_))),
            "fail/no-pending-key"
        );
        assert!(matches!(store.promote(), Err(PlatformError::Missing(_))), "fail/promote-nothing");
        store.create_pending_key().expect("pending");
        assert!(matches!(store.promote(), Err(PlatformError::Missing(_))), "fail/promote-without-cert");
        store.store_pending_certificate(CERT_A, &[]).expect("cert");
        store.discard_pending_certificate().expect("discard");
        assert!(store.pending_identity().expect("pending").is_none(), "ok/discard-keeps-key-only");
        assert!(store.pending_key().expect("key").is_some());

        fs::write(store.dir().join(INDEX), b"{not json").expect("corrupt index");
        assert!(matches!(store.snapshot(), Err(PlatformError::Corrupt { .. })), "fail/corrupt-index");
    }

    #[test]
    fn corrupt_key_is_reported_not_replaced() {
        let (_temp, store) = store();
        store.create_pending_key().expect("pending");
        let index = store.load_index().expect("index");
        let key = store.identity_dir(index.pending.as_deref().expect("id")).join(KEY);
        fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").expect("truncate");
        assert!(matches!(store.pending_key(), Err(PlatformError::Corrupt { .. })));
    }

    #[test]
    fn remove_all_is_idempotent_and_says_what() {
        let (_temp, store) = store();
        assert!(store.remove_all().expect("empty").is_empty());
        store.create_pending_key().expect("pending");
        store.store_pending_certificate(CERT_A, &[]).expect("cert");
        store.promote().expect("promote");
        let removed = store.remove_all().expect("remove");
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed[0].contains("current identity"), "{removed:?}");
        assert!(store.remove_all().expect("again").is_empty());
        assert_eq!(store.snapshot().expect("snapshot"), StoreSnapshot::default());
    }

    #[test]
    fn pem_round_trip() {
        let der = (0..=255u8).collect::<Vec<_>>();
        let text = pem::encode("PRIVATE KEY", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(pem::first(text.as_bytes(), "PRIVATE KEY"), Some(der));
        assert_eq!(pem::first(text.as_bytes(), "CERTIFICATE"), None);
        assert_eq!(pem::split_certificates(&format!("{CERT_A}{CERT_B}\n")).len(), 2);
    }
}
