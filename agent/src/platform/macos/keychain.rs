//! The dedicated keychain `~/Library/Keychains/devicetrust.keychain-db` and the identity
//! store on it.
//!
//! The keychain is created with a random 32-byte password (hex-encoded) that is kept only as a
//! generic password item in the login keychain (service `devicetrust`, account `keychain`),
//! whose ACL trusts the agent alone; it never locks on sleep or after a timeout, and it joins
//! the user's search list so that browsers find the identity. The private keys are ECDSA P-256,
//! generated inside the keychain as non-extractable (checked after generation, from the key's
//! database record); they sign through `SecKeyCreateSignature` and are never seen as bytes.
//! Keys are found by label and application label with references and attributes only: asking
//! a private key for its attributes (`SecKeyCopyAttributes`) would export it in the clear into
//! this process whenever the ACL allows. The key's ACL lets the agent and the allowlisted apps
//! sign, and nobody export ([`sys::set_key_access`]). The issued certificate is added next to
//! its key, which is what makes an identity.
//!
//! After a renewal the agent takes its keychain out of the user's search list and puts it
//! back. Chrome and Edge drop their remembered certificate choice and their TLS sessions when
//! another process changes the search list (Chromium `net/cert/cert_database_mac.cc` listens for
//! `kSecKeychainListChangedEvent`; adding an item raises nothing they listen for), and
//! securityd posts that event only when the list really changes (`StorageManager::setSearchList`
//! in `OSX/libsecurity_keychain/lib/StorageManager.cpp`), so writing the same list again would
//! not do. On Security-61901 setting a Safari identity preference copies the certificate into
//! the login keychain; the store deletes those copies (matched by DER) when their identity goes.
//!
//! Which key is current, pending or previous is kept in a small index file in the data
//! directory (`keychain-identities.json`, 0600, replaced atomically), keyed by each key's
//! application label (the hash of its public key). The keychain has no transaction that
//! spans items, so the atomic rename of that file is the store's one atomic step: a crash on
//! either side of it leaves a state the next run completes, and items no slot refers to are
//! swept when a new key is made or the previous identity is deleted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use ca_client::cert::CertificateInfo;
use ca_client::signer::{KeyAlgorithm, KeySigner, SignError};
use security_framework::certificate::SecCertificate;
use security_framework::identity::SecIdentity;
use security_framework::item::{ItemClass, ItemSearchOptions, Limit, Reference, SearchResult};
use security_framework::key::{Algorithm, SecKey};
use security_framework::os::macos::identity::SecIdentityExt as _;
use security_framework::os::macos::keychain::{
    CreateOptions, KeychainSettings, KeychainUserInteractionLock, SecKeychain, SecPreferencesDomain,
};
use security_framework::os::macos::passwords::find_generic_password;
use serde::{Deserialize, Serialize};

use super::allowlist::{self, Allowlist, PartitionId, Source};
use super::sys::KeyKind;
use super::{KEYCHAIN_FILE_NAME, PASSWORD_ACCOUNT, PASSWORD_SERVICE, keychain_list, sys};
use crate::platform::{BoxError, Identity, IdentityStore, PlatformError, StoreDescription, StoreSnapshot};
use crate::util::exec;
use crate::util::files;

/// The index file's name in the data directory.
const INDEX_FILE: &str = "keychain-identities.json";
/// The label of our keys and of the password item, as Keychain Access shows them.
const KEY_LABEL: &str = "DeviceTrust device key";
const PASSWORD_LABEL: &str = "DeviceTrust keychain password";
/// `errSecItemNotFound`.
const ITEM_NOT_FOUND: i32 = -25300;
/// `errSecDuplicateItem`.
const DUPLICATE_ITEM: i32 = -25299;
/// `/usr/bin/security`, for the search list.
const SECURITY: &str = "/usr/bin/security";

fn backend(what: &'static str, e: impl Into<BoxError>) -> PlatformError {
    PlatformError::backend(what, e)
}

/// The keychain password: only ever in memory, wiped when dropped, never printed.
struct Password(Vec<u8>);

impl Password {
    fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        // Hex keeps the password printable, which the keychain APIs taking `&str` need.
        Self(hex::encode(bytes).into_bytes())
    }

    fn as_str(&self) -> Result<&str, PlatformError> {
        std::str::from_utf8(&self.0).map_err(|_| PlatformError::Corrupt {
            what: "the keychain password item",
            location: format!("service {PASSWORD_SERVICE}, account {PASSWORD_ACCOUNT}"),
            reason: "not text".to_owned(),
        })
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A private key in the dedicated keychain.
pub(super) struct KeychainKey {
    key: SecKey,
    public: Vec<u8>,
    label: Vec<u8>,
}

impl fmt::Debug for KeychainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeychainKey")
            .field("application_label", &hex::encode(&self.label))
            .finish_non_exhaustive()
    }
}

/// The public point of a private key: `SecKeyCopyPublicKey` finds the public key's own record
/// (by the shared label, `SecKey.cpp`) and never touches the private one.
fn public_point(key: &SecKey) -> Result<Vec<u8>, PlatformError> {
    key.public_key()
        .and_then(|p| p.external_representation())
        .map(|d| d.to_vec())
        .filter(|p| p.len() == 65 && p[0] == 0x04)
        .ok_or(PlatformError::Key {
            action: "the keychain key has no uncompressed p-256 public key".into(),
            source: None,
        })
}

/// The application label the keychain gives a key: the SHA-1 of its public key, for an EC key
/// of the uncompressed point (`CSSM_APPLECSP_KEYDIGEST` in `KeyItem.cpp`, `AppleCSP.cpp`).
fn application_label_of(public: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, public).as_ref().to_vec()
}

impl KeychainKey {
    fn new(found: sys::FoundKey) -> Result<Self, PlatformError> {
        let public = public_point(&found.key)?;
        Ok(Self { key: found.key, public, label: found.label })
    }

    pub(super) fn sec_key(&self) -> &SecKey {
        &self.key
    }
}

impl KeySigner for KeychainKey {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256Sha256
    }

    fn public_key_sec1(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        // The keychain hashes the message with SHA-256 and returns a DER ECDSA-Sig-Value.
        self.key
            .create_signature(Algorithm::ECDSASignatureMessageX962SHA256, message)
            .map_err(|e| SignError::Store(e.description().to_string()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    /// The key's application label, hex.
    key: String,
    #[serde(default)]
    certificate_pem: Option<String>,
    #[serde(default)]
    chain_pem: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Index {
    version: u32,
    #[serde(default)]
    current: Option<Slot>,
    #[serde(default)]
    pending: Option<Slot>,
    #[serde(default)]
    previous: Option<Slot>,
}

impl Slot {
    fn certificate_der(&self) -> Option<Vec<u8>> {
        let pem = self.certificate_pem.as_deref()?;
        CertificateInfo::from_pem(pem).ok().map(|c| c.der().to_vec())
    }
}

impl Index {
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        [&self.current, &self.pending, &self.previous].into_iter().flatten()
    }
}

struct Opened {
    keychain: SecKeychain,
    password: Password,
}

/// Where the store keeps things.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    /// `~/Library/Keychains/devicetrust.keychain-db`.
    pub keychain: PathBuf,
    /// The agent's data directory.
    pub data_dir: PathBuf,
}

impl Paths {
    pub(super) fn new(home: &Path, data_dir: PathBuf) -> Self {
        Self { keychain: home.join("Library/Keychains").join(KEYCHAIN_FILE_NAME), data_dir }
    }

    fn index(&self) -> PathBuf {
        self.data_dir.join(INDEX_FILE)
    }
}

/// The identity store on the dedicated keychain.
pub(crate) struct KeychainStore {
    paths: Paths,
    // Found with `codesign` on the agent's own executable, only when a key needs it.
    find_own_partition: fn() -> Option<PartitionId>,
    own_partition: OnceLock<Option<PartitionId>>,
    managed_allowlist: Option<Vec<String>>,
    opened: Mutex<Option<Opened>>,
    // Held for the life of the store: no keychain call may put up a dialog while the agent
    // runs unattended; a call that would needs the user gets an error instead.
    _no_prompts: Option<KeychainUserInteractionLock>,
}

impl fmt::Debug for KeychainStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeychainStore")
            .field("keychain", &self.paths.keychain)
            .field("own_partition", &self.own_partition.get())
            .finish_non_exhaustive()
    }
}

impl KeychainStore {
    pub(super) fn new(
        paths: Paths,
        find_own_partition: fn() -> Option<PartitionId>,
        managed_allowlist: Option<Vec<String>>,
    ) -> Self {
        let no_prompts = SecKeychain::disable_user_interaction()
            .map_err(|e| tracing::warn!(error = %e, "could not disable keychain user interaction"))
            .ok();
        Self {
            paths,
            find_own_partition,
            own_partition: OnceLock::new(),
            managed_allowlist,
            opened: Mutex::new(None),
            _no_prompts: no_prompts,
        }
    }

    fn own_partition(&self) -> Option<&PartitionId> {
        self.own_partition.get_or_init(self.find_own_partition).as_ref()
    }

    pub(crate) fn keychain_path(&self) -> &Path {
        &self.paths.keychain
    }

    fn lock(&self) -> MutexGuard<'_, Option<Opened>> {
        // A panic elsewhere while holding the lock leaves the handle usable.
        self.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load_index(&self) -> Result<Index, PlatformError> {
        let path = self.paths.index();
        match files::read_optional(&path)? {
            None => Ok(Index { version: 1, ..Index::default() }),
            Some(bytes) => {
                let index: Index = serde_json::from_slice(&bytes).map_err(|e| PlatformError::Corrupt {
                    what: "the keychain identity index",
                    location: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                if index.version != 1 {
                    return Err(PlatformError::Corrupt {
                        what: "the keychain identity index",
                        location: path.display().to_string(),
                        reason: format!("unknown version {}", index.version),
                    });
                }
                Ok(index)
            }
        }
    }

    fn save_index(&self, index: &Index) -> Result<(), PlatformError> {
        files::ensure_private_dir(&self.paths.data_dir)?;
        let mut bytes =
            serde_json::to_vec_pretty(index).map_err(|e| backend("could not encode the index", e))?;
        bytes.push(b'\n');
        files::write_atomic(&self.paths.index(), &bytes).map_err(PlatformError::from)
    }

    fn login_keychain() -> Result<SecKeychain, PlatformError> {
        SecKeychain::default_for_domain(SecPreferencesDomain::User)
            .map_err(|e| backend("could not open the login keychain", e))
    }

    fn read_password() -> Result<Option<Password>, PlatformError> {
        let login = Self::login_keychain()?;
        match find_generic_password(Some(&[login]), PASSWORD_SERVICE, PASSWORD_ACCOUNT) {
            Ok((password, _item)) => Ok(Some(Password(password.to_vec()))),
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(backend("could not read the keychain password item from the login keychain", e)),
        }
    }

    fn delete_password_item() -> Result<bool, PlatformError> {
        let login = Self::login_keychain()?;
        match find_generic_password(Some(&[login]), PASSWORD_SERVICE, PASSWORD_ACCOUNT) {
            Ok((_password, item)) => {
                item.delete();
                Ok(true)
            }
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(false),
            Err(e) => Err(backend("could not find the keychain password item", e)),
        }
    }

    /// Opens (and unlocks) the keychain; with `create`, makes it first when missing.
    fn open(&self, create: bool) -> Result<Option<MutexGuard<'_, Option<Opened>>>, PlatformError> {
        let mut guard = self.lock();
        if guard.is_some() {
            return Ok(Some(guard));
        }
        let exists = self.paths.keychain.exists();
        let password = Self::read_password()?;
        let opened = match (exists, password) {
            (true, Some(password)) => {
                let mut keychain = SecKeychain::open(&self.paths.keychain)
                    .map_err(|e| backend("could not open the keychain", e))?;
                keychain
                    .unlock(Some(password.as_str()?))
                    .map_err(|e| backend("could not unlock the keychain with its stored password", e))?;
                Opened { keychain, password }
            }
            (true, None) => {
                // A keychain whose password is gone can never be unlocked again. It is ours to
                // recreate only if it holds nothing the index knows of.
                if self.load_index()?.slots().next().is_some() || !create {
                    return Err(PlatformError::Corrupt {
                        what: "the device keychain",
                        location: self.paths.keychain.display().to_string(),
                        reason: "its password item is missing from the login keychain; run `devicetrust-agent uninstall`, then enroll again".to_owned(),
                    });
                }
                tracing::warn!(keychain = %self.paths.keychain.display(), "recreating an empty keychain whose password was lost");
                std::fs::remove_file(&self.paths.keychain)
                    .map_err(|e| PlatformError::io("could not remove", &self.paths.keychain, e))?;
                self.create()?
            }
            (false, _) if !create => return Ok(None),
            (false, stale) => {
                if stale.is_some() {
                    Self::delete_password_item()?;
                }
                self.create()?
            }
        };
        // Idempotent, so that a keychain made by an older version is fixed too.
        self.ensure_settings(&opened.keychain)?;
        self.ensure_in_search_list()?;
        *guard = Some(opened);
        Ok(Some(guard))
    }

    fn create(&self) -> Result<Opened, PlatformError> {
        let password = Password::random();
        // The item first: a crash between the two steps then leaves a stale item, which the
        // next run replaces, rather than a keychain nobody can unlock.
        let access = sys::access_for_this_app("DeviceTrust keychain password")
            .map_err(|e| backend("could not make the password item's access list", e))?;
        sys::add_generic_password(
            &Self::login_keychain()?,
            PASSWORD_SERVICE,
            PASSWORD_ACCOUNT,
            PASSWORD_LABEL,
            &password.0,
            &access,
        )
        .map_err(|e| backend("could not store the keychain password in the login keychain", e))?;
        if let Some(dir) = self.paths.keychain.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PlatformError::io("could not create", dir, e))?;
        }
        let keychain = CreateOptions::new()
            .password(password.as_str()?)
            .create(&self.paths.keychain)
            .map_err(|e| backend("could not create the keychain", e))?;
        tracing::info!(keychain = %self.paths.keychain.display(), "created the device keychain");
        Ok(Opened { keychain, password })
    }

    fn ensure_settings(&self, keychain: &SecKeychain) -> Result<(), PlatformError> {
        // No lock on sleep, no lock after a timeout: the daily run and the browsers must find
        // it unlocked. It still locks when the user logs out; the run at login unlocks it.
        let mut keychain = keychain.clone();
        keychain
            .set_settings(&KeychainSettings::new())
            .map_err(|e| backend("could not set the keychain's lock settings", e))
    }

    fn search_list() -> Result<Vec<PathBuf>, PlatformError> {
        let out =
            exec::run(Path::new(SECURITY), &["list-keychains", "-d", "user"], None, exec::DEFAULT_TIMEOUT)
                .map_err(|e| backend("could not read the keychain search list", e))?;
        if !out.success() {
            return Err(PlatformError::command(SECURITY, &out));
        }
        Ok(keychain_list::parse(&out.stdout))
    }

    fn set_search_list(list: &[PathBuf]) -> Result<(), PlatformError> {
        let mut args: Vec<String> = vec!["list-keychains".into(), "-d".into(), "user".into(), "-s".into()];
        args.extend(list.iter().map(|p| p.to_string_lossy().into_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = exec::run(Path::new(SECURITY), &args, None, exec::DEFAULT_TIMEOUT)
            .map_err(|e| backend("could not set the keychain search list", e))?;
        if out.success() { Ok(()) } else { Err(PlatformError::command(SECURITY, &out)) }
    }

    fn ensure_in_search_list(&self) -> Result<(), PlatformError> {
        let list = Self::search_list()?;
        if let Some(new) = keychain_list::with_added(&list, &self.paths.keychain) {
            Self::set_search_list(&new)?;
            tracing::info!("added the device keychain to the search list");
        }
        Ok(())
    }

    fn remove_from_search_list(&self) -> Result<bool, PlatformError> {
        let list = Self::search_list()?;
        match keychain_list::with_removed(&list, &self.paths.keychain) {
            Some(new) => Self::set_search_list(&new).map(|()| true),
            None => Ok(false),
        }
    }

    fn find_key(keychain: &SecKeychain, label_hex: &str) -> Result<Option<KeychainKey>, PlatformError> {
        let label = hex::decode(label_hex).map_err(|e| PlatformError::Corrupt {
            what: "a key reference in the keychain index",
            location: label_hex.to_owned(),
            reason: e.to_string(),
        })?;
        let found = sys::keychain_keys(keychain, KeyKind::Private, Some(&label))
            .map_err(|e| backend("could not search the keychain for a key", e))?;
        found.into_iter().next().map(KeychainKey::new).transpose()
    }

    fn all_certificates(keychain: &SecKeychain) -> Result<Vec<SecCertificate>, PlatformError> {
        Self::all_of(keychain, ItemClass::certificate(), "certificates", |r| match r {
            Reference::Certificate(cert) => Some(cert),
            _ => None,
        })
    }

    /// Every item of `class` in the keychain, as the references `pick` keeps.
    fn all_of<T>(
        keychain: &SecKeychain,
        class: ItemClass,
        what: &str,
        pick: impl Fn(Reference) -> Option<T>,
    ) -> Result<Vec<T>, PlatformError> {
        let found = ItemSearchOptions::new()
            .keychains(std::slice::from_ref(keychain))
            .class(class)
            .load_refs(true)
            .limit(Limit::All)
            .search();
        match found {
            Ok(results) => Ok(results
                .into_iter()
                .filter_map(|r| match r {
                    SearchResult::Ref(reference) => pick(reference),
                    _ => None,
                })
                .collect()),
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(Vec::new()),
            Err(e) => Err(PlatformError::backend(format!("could not list the keychain's {what}"), e)),
        }
    }

    /// Deletes every key and certificate no slot of `index` refers to (left by a crash between
    /// a keychain change and the index write).
    fn sweep(keychain: &SecKeychain, index: &Index) -> Result<(), PlatformError> {
        let keep_keys: Vec<Vec<u8>> = index.slots().filter_map(|s| hex::decode(&s.key).ok()).collect();
        for kind in [KeyKind::Private, KeyKind::Public] {
            let keys = sys::keychain_keys(keychain, kind, None)
                .map_err(|e| backend("could not list the keychain's keys", e))?;
            for found in keys.iter().filter(|f| !keep_keys.contains(&f.label)) {
                found.key.delete().map_err(|e| backend("could not delete a stray key", e))?;
                tracing::info!(?kind, "deleted a key no identity refers to");
            }
        }
        let keep_certs: Vec<Vec<u8>> = index.slots().filter_map(Slot::certificate_der).collect();
        for cert in Self::all_certificates(keychain)? {
            if !keep_certs.contains(&cert.to_der()) {
                cert.delete().map_err(|e| backend("could not delete a stray certificate", e))?;
                tracing::info!("deleted a certificate no identity refers to");
            }
        }
        Ok(())
    }

    fn delete_slot_items(keychain: &SecKeychain, slot: &Slot) -> Result<(), PlatformError> {
        if let Some(der) = slot.certificate_der() {
            Self::delete_certificates(keychain, std::slice::from_ref(&der))?;
            Self::delete_login_copies(std::slice::from_ref(&der));
        }
        let label = hex::decode(&slot.key).map_err(|e| PlatformError::Corrupt {
            what: "a key reference in the keychain index",
            location: slot.key.clone(),
            reason: e.to_string(),
        })?;
        Self::delete_keys(keychain, &label)
    }

    /// Deletes the private and the public key whose application label is `label`.
    fn delete_keys(keychain: &SecKeychain, label: &[u8]) -> Result<(), PlatformError> {
        for kind in [KeyKind::Private, KeyKind::Public] {
            let keys = sys::keychain_keys(keychain, kind, Some(label))
                .map_err(|e| backend("could not search the keychain for a key", e))?;
            for found in keys {
                found.key.delete().map_err(|e| backend("could not delete a key", e))?;
            }
        }
        Ok(())
    }

    /// Deletes the certificates of `keychain` whose DER is one of `ders`; returns how many.
    fn delete_certificates(keychain: &SecKeychain, ders: &[Vec<u8>]) -> Result<usize, PlatformError> {
        let mut deleted = 0;
        for cert in Self::all_certificates(keychain)? {
            if ders.contains(&cert.to_der()) {
                cert.delete().map_err(|e| backend("could not delete a certificate", e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes the copies of our certificates that setting a Safari identity preference put into
    /// the login keychain (Security-61901, `SecIdentityImportToFileBackedKeychain`). Best effort:
    /// a copy left behind is clutter, not a failure of the step that retires the identity.
    fn delete_login_copies(ders: &[Vec<u8>]) -> usize {
        let result = Self::login_keychain().and_then(|login| Self::delete_certificates(&login, ders));
        match result {
            Ok(deleted) => {
                if deleted > 0 {
                    tracing::info!(deleted, "deleted copies of our certificates from the login keychain");
                }
                deleted
            }
            Err(e) => {
                tracing::warn!(error = %crate::util::error_chain(&e), "could not clean our certificates out of the login keychain");
                0
            }
        }
    }

    /// Takes the keychain out of the user's search list and puts the list back as it was, so
    /// that running Chrome and Edge forget the old certificate at once (see the module doc).
    fn announce_new_identity(&self) {
        let result = Self::search_list().and_then(|list| {
            match keychain_list::with_removed(&list, &self.paths.keychain) {
                Some(without) => Self::set_search_list(&without).and_then(|()| Self::set_search_list(&list)),
                None => Ok(()),
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %crate::util::error_chain(&e), "could not tell running browsers about the new certificate");
        }
    }

    /// A freshly generated key, once the keychain says it cannot leave it and it is found
    /// under the application label computed from its public key; otherwise it is deleted and
    /// refused.
    fn checked_new_key(keychain: &SecKeychain, key: SecKey) -> Result<KeychainKey, PlatformError> {
        let refuse = |key: &SecKey, why: PlatformError| {
            if let Some(public) = key.public_key() {
                let _ = public.delete();
            }
            if let Err(e) = key.delete() {
                tracing::warn!(error = %e, "could not delete the refused key");
            }
            why
        };
        match sys::key_is_extractable(&key) {
            Ok(false) => {}
            Ok(true) => {
                return Err(refuse(
                    &key,
                    PlatformError::Key {
                        action: "refusing a key the keychain made extractable".into(),
                        source: None,
                    },
                ));
            }
            Err(e) => {
                return Err(refuse(
                    &key,
                    PlatformError::key("could not read whether the new key is extractable", e),
                ));
            }
        }
        let public = match public_point(&key) {
            Ok(public) => public,
            Err(e) => return Err(refuse(&key, e)),
        };
        let label = application_label_of(&public);
        match sys::keychain_keys(keychain, KeyKind::Private, Some(&label)) {
            Ok(found) if !found.is_empty() => Ok(KeychainKey { key, public, label }),
            Ok(_) => Err(refuse(
                &key,
                PlatformError::Key {
                    action: "the new key is not found under the application label of its public key".into(),
                    source: None,
                },
            )),
            Err(e) => Err(refuse(&key, backend("could not search the keychain for the new key", e))),
        }
    }

    fn identity_of(keychain: &SecKeychain, slot: &Slot) -> Result<Option<Identity>, PlatformError> {
        let Some(certificate_pem) = &slot.certificate_pem else { return Ok(None) };
        let key = Self::find_key(keychain, &slot.key)?.ok_or_else(|| PlatformError::Corrupt {
            what: "an identity's key",
            location: format!("application label {}", slot.key),
            reason: "the index refers to a key the keychain does not hold".to_owned(),
        })?;
        Ok(Some(Identity {
            certificate_pem: certificate_pem.clone(),
            chain_pem: slot.chain_pem.clone(),
            key: Arc::new(key),
        }))
    }

    /// The allowlist in force, and where it came from.
    pub(crate) fn allowlist(&self) -> Result<(Allowlist, Source), PlatformError> {
        allowlist::resolve(self.managed_allowlist.as_deref(), &self.paths.data_dir)
            .map_err(|e| backend("the app allowlist", e))
    }

    /// The effective partition list for our keys.
    pub(crate) fn effective_partitions(&self) -> Result<Vec<PartitionId>, PlatformError> {
        Ok(self.allowlist()?.0.effective(self.own_partition()))
    }

    /// Writes the key's access: the partition list and the signing entry from the allowlist,
    /// no export rights. Refused while the agent's own partition is unknown: a list without
    /// it would lock the agent out of its own key.
    fn apply_partitions(&self, opened: &Opened, key: &KeychainKey) -> Result<(), PlatformError> {
        let own = self.own_partition().ok_or(PlatformError::Unavailable {
            what: "the agent's own code signature (codesign -dv on the running binary)",
            hint: "the key's partition list is left as it is, since one without the agent would lock it out of its key; check that /usr/bin/codesign runs",
        })?;
        let (list, _) = self.allowlist()?;
        let ids = list.effective(Some(own));
        let description =
            allowlist::encode_description(&ids).map_err(|e| backend("the partition list", e))?;
        let trusted = sys::trusted_applications(&list.signing_requirements(Some(own)))
            .map_err(|e| backend("could not make the key's trusted applications (app allowlist)", e))?;
        sys::set_key_access(key.sec_key(), &opened.password.0, &description, &trusted)
            .map_err(|e| backend("could not set the key's access (app allowlist)", e))?;
        tracing::info!(partitions = %allowlist::render_list(&ids), "set the key's partition list and signing entry");
        Ok(())
    }

    /// Re-applies the allowlist to every key the store holds; returns how many keys.
    pub(crate) fn reapply_allowlist(&self) -> Result<usize, PlatformError> {
        let Some(guard) = self.open(false)? else { return Ok(0) };
        let Some(opened) = guard.as_ref() else { return Ok(0) };
        let index = self.load_index()?;
        let mut count = 0;
        for slot in index.slots() {
            if let Some(key) = Self::find_key(&opened.keychain, &slot.key)? {
                self.apply_partitions(opened, &key)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The partition IDs the current key actually carries, for `status`.
    pub(crate) fn current_partitions(&self) -> Result<Option<Vec<String>>, PlatformError> {
        let Some(guard) = self.open(false)? else { return Ok(None) };
        let Some(opened) = guard.as_ref() else { return Ok(None) };
        let Some(slot) = self.load_index()?.current else { return Ok(None) };
        let Some(key) = Self::find_key(&opened.keychain, &slot.key)? else { return Ok(None) };
        let mut out = Vec::new();
        for description in
            sys::key_partition_descriptions(key.sec_key()).map_err(|e| backend("the key's acl", e))?
        {
            out.extend(allowlist::decode_description(&description).map_err(|e| backend("the key's acl", e))?);
        }
        Ok(Some(out))
    }

    /// Takes the export rights off the current key when its access still grants them (written
    /// by an older agent): a read of its ACL, and a rewrite only when due. A failure is logged;
    /// it must not stop the run that unlocked the keychain.
    fn fix_stale_access(&self, opened: &Opened) {
        let result = (|| {
            let Some(slot) = self.load_index()?.current else { return Ok(false) };
            let Some(key) = Self::find_key(&opened.keychain, &slot.key)? else { return Ok(false) };
            if !sys::key_grants_export(key.sec_key()).map_err(|e| backend("the key's access", e))? {
                return Ok(false);
            }
            self.apply_partitions(opened, &key).map(|()| true)
        })();
        match result {
            Ok(true) => tracing::info!("took the export rights off the device key's access"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %crate::util::error_chain(&e), "could not update the device key's access")
            }
        }
    }

    /// Whether the current key could leave the keychain (keys made before the fix could).
    fn current_key_extractable(&self) -> Result<Option<bool>, PlatformError> {
        let Some(guard) = self.open(false)? else { return Ok(None) };
        let Some(opened) = guard.as_ref() else { return Ok(None) };
        let Some(slot) = self.load_index()?.current else { return Ok(None) };
        let Some(key) = Self::find_key(&opened.keychain, &slot.key)? else { return Ok(None) };
        sys::key_is_extractable(key.sec_key()).map(Some).map_err(|e| backend("the key's record", e))
    }

    /// The keychain identity for a certificate the store holds (for identity preferences).
    pub(super) fn sec_identity(&self, certificate_pem: &str) -> Result<Option<SecIdentity>, PlatformError> {
        let Some(guard) = self.open(false)? else { return Ok(None) };
        let Some(opened) = guard.as_ref() else { return Ok(None) };
        let der = CertificateInfo::from_pem(certificate_pem).map_err(|e| backend("the certificate", e))?;
        let cert = SecCertificate::from_der(der.der()).map_err(|e| backend("the certificate", e))?;
        match SecIdentity::with_certificate(std::slice::from_ref(&opened.keychain), &cert) {
            Ok(identity) => Ok(Some(identity)),
            Err(e) if e.code() == ITEM_NOT_FOUND => Ok(None),
            Err(e) => Err(backend("could not find the identity in the keychain", e)),
        }
    }
}

impl IdentityStore for KeychainStore {
    fn unlock(&self) -> Result<bool, PlatformError> {
        // Opening unlocks: SecKeychainUnlock with the stored password, in this process's
        // security session, which is the one the user's browsers are in.
        let Some(guard) = self.open(false)? else { return Ok(false) };
        if let Some(opened) = guard.as_ref() {
            self.fix_stale_access(opened);
        }
        Ok(true)
    }

    fn pending_key(&self) -> Result<Option<Arc<dyn KeySigner>>, PlatformError> {
        let index = self.load_index()?;
        let Some(slot) = index.pending else { return Ok(None) };
        let Some(guard) = self.open(false)? else { return Ok(None) };
        let Some(opened) = guard.as_ref() else { return Ok(None) };
        match Self::find_key(&opened.keychain, &slot.key)? {
            Some(key) => Ok(Some(Arc::new(key))),
            None => {
                tracing::warn!(key = %slot.key, "the pending key is gone from the keychain; forgetting it");
                drop(guard);
                let mut index = self.load_index()?;
                index.pending = None;
                self.save_index(&index)?;
                Ok(None)
            }
        }
    }

    fn create_pending_key(&self) -> Result<Arc<dyn KeySigner>, PlatformError> {
        let guard = self.open(true)?.ok_or(PlatformError::Missing("the device keychain"))?;
        let opened = guard.as_ref().ok_or(PlatformError::Missing("the device keychain"))?;
        let mut index = self.load_index()?;
        let replaced = index.pending.take();
        // Anything a crash left behind goes before a new key is added.
        Self::sweep(&opened.keychain, &index)?;
        let key = sys::generate_p256_key(&opened.keychain, KEY_LABEL)
            .map_err(|e| PlatformError::key("could not generate a key in the device keychain", e))?;
        let key = Self::checked_new_key(&opened.keychain, key)?;
        self.apply_partitions(opened, &key)?;
        index.pending =
            Some(Slot { key: hex::encode(&key.label), certificate_pem: None, chain_pem: Vec::new() });
        self.save_index(&index)?;
        if let Some(old) = replaced {
            Self::delete_slot_items(&opened.keychain, &old)?;
        }
        tracing::info!(key = %hex::encode(&key.label), "generated a new key in the device keychain");
        Ok(Arc::new(key))
    }

    fn store_pending_certificate(
        &self,
        certificate_pem: &str,
        chain_pem: &[String],
    ) -> Result<(), PlatformError> {
        let mut index = self.load_index()?;
        let slot = index.pending.as_mut().ok_or(PlatformError::Missing("the pending key"))?;
        let guard = self.open(false)?.ok_or(PlatformError::Missing("the device keychain"))?;
        let opened = guard.as_ref().ok_or(PlatformError::Missing("the device keychain"))?;
        let info = CertificateInfo::from_pem(certificate_pem).map_err(|e| PlatformError::Corrupt {
            what: "the issued certificate",
            location: "the CA's answer".to_owned(),
            reason: e.to_string(),
        })?;
        let cert = SecCertificate::from_der(info.der()).map_err(|e| backend("the issued certificate", e))?;
        // Added next to its key, the certificate makes the identity browsers can present.
        match cert.add_to_keychain(Some(opened.keychain.clone())) {
            Ok(()) => {}
            Err(e) if e.code() == DUPLICATE_ITEM => {}
            Err(e) => return Err(backend("could not add the certificate to the keychain", e)),
        }
        slot.certificate_pem = Some(certificate_pem.to_owned());
        slot.chain_pem = chain_pem.to_vec();
        self.save_index(&index)
    }

    fn pending_identity(&self) -> Result<Option<Identity>, PlatformError> {
        let index = self.load_index()?;
        let Some(slot) = index.pending else { return Ok(None) };
        let Some(guard) = self.open(false)? else { return Ok(None) };
        let Some(opened) = guard.as_ref() else { return Ok(None) };
        Self::identity_of(&opened.keychain, &slot)
    }

    fn discard_pending_certificate(&self) -> Result<(), PlatformError> {
        let mut index = self.load_index()?;
        let Some(slot) = index.pending.as_mut() else { return Ok(()) };
        let Some(pem) = slot.certificate_pem.take() else { return Ok(()) };
        slot.chain_pem.clear();
        self.save_index(&index)?;
        if let Some(guard) = self.open(false)?
            && let Some(opened) = guard.as_ref()
            && let Ok(info) = CertificateInfo::from_pem(&pem)
        {
            Self::delete_certificates(&opened.keychain, &[info.der().to_vec()])?;
        }
        Ok(())
    }

    fn promote(&self) -> Result<(), PlatformError> {
        let mut index = self.load_index()?;
        let pending = index.pending.take().ok_or(PlatformError::Missing("the pending identity"))?;
        if pending.certificate_pem.is_none() {
            return Err(PlatformError::Missing("the pending certificate"));
        }
        let older = index.previous.take();
        index.previous = index.current.take();
        index.current = Some(pending);
        // The switch-over: one atomic rename.
        self.save_index(&index)?;
        if let Some(older) = older
            && let Some(guard) = self.open(false)?
            && let Some(opened) = guard.as_ref()
        {
            Self::delete_slot_items(&opened.keychain, &older)?;
        }
        self.announce_new_identity();
        Ok(())
    }

    fn delete_previous(&self) -> Result<bool, PlatformError> {
        let mut index = self.load_index()?;
        let Some(previous) = index.previous.take() else { return Ok(false) };
        self.save_index(&index)?;
        if let Some(guard) = self.open(false)?
            && let Some(opened) = guard.as_ref()
        {
            Self::delete_slot_items(&opened.keychain, &previous)?;
            Self::sweep(&opened.keychain, &index)?;
        }
        Ok(true)
    }

    fn current(&self) -> Result<Option<Identity>, PlatformError> {
        let index = self.load_index()?;
        let Some(slot) = index.current else { return Ok(None) };
        let guard = self.open(false)?.ok_or_else(|| PlatformError::Corrupt {
            what: "the device keychain",
            location: self.paths.keychain.display().to_string(),
            reason: "the index names a current identity but the keychain file is gone".to_owned(),
        })?;
        let opened = guard.as_ref().ok_or(PlatformError::Missing("the device keychain"))?;
        Self::identity_of(&opened.keychain, &slot)
    }

    fn snapshot(&self) -> Result<StoreSnapshot, PlatformError> {
        let index = self.load_index()?;
        Ok(StoreSnapshot {
            current: index.current.as_ref().is_some_and(|s| s.certificate_pem.is_some()),
            pending_key: index.pending.is_some(),
            pending_certificate: index.pending.as_ref().is_some_and(|s| s.certificate_pem.is_some()),
            previous: index.previous.is_some(),
        })
    }

    fn remove_all(&self) -> Result<Vec<String>, PlatformError> {
        let mut removed = Vec::new();
        // A damaged index only means there are no copies to look for.
        let ders: Vec<Vec<u8>> = self
            .load_index()
            .map(|i| i.slots().filter_map(Slot::certificate_der).collect())
            .unwrap_or_default();
        let copies = Self::delete_login_copies(&ders);
        if copies > 0 {
            removed.push(format!("{copies} copies of our certificates from the login keychain"));
        }
        let mut guard = self.lock();
        *guard = None;
        if self.paths.keychain.exists() {
            match SecKeychain::open(&self.paths.keychain) {
                Ok(keychain) => sys::delete_keychain(&keychain)
                    .map_err(|e| backend("could not delete the device keychain", e))?,
                Err(e) => return Err(backend("could not open the device keychain to delete it", e)),
            }
            // SecKeychainDelete removes the file; make sure, for a damaged keychain.
            files::remove_file_if_exists(&self.paths.keychain)?;
            removed.push(format!("the keychain {}", self.paths.keychain.display()));
        }
        if self.remove_from_search_list()? {
            removed.push("the keychain from the user's keychain search list".to_owned());
        }
        if Self::delete_password_item()? {
            removed.push(format!(
                "the keychain password item (service {PASSWORD_SERVICE}, account {PASSWORD_ACCOUNT}) from the login keychain"
            ));
        }
        if files::remove_file_if_exists(&self.paths.index())? {
            removed.push(format!("identity index {}", self.paths.index().display()));
        }
        Ok(removed)
    }

    fn describe(&self) -> StoreDescription {
        let mut details = std::collections::BTreeMap::new();
        details.insert(
            "passwordItem".to_owned(),
            format!("login keychain, service {PASSWORD_SERVICE}, account {PASSWORD_ACCOUNT}"),
        );
        match self.allowlist() {
            Ok((list, source)) => {
                details.insert(
                    "allowlist".to_owned(),
                    allowlist::render_list(&list.effective(self.own_partition())),
                );
                details.insert("allowlistSource".to_owned(), source.to_string());
            }
            Err(e) => {
                details.insert("allowlist".to_owned(), format!("error: {}", crate::util::error_chain(&e)));
            }
        }
        details.insert(
            "agentPartition".to_owned(),
            self.own_partition().map_or_else(|| "unknown".to_owned(), ToString::to_string),
        );
        if let Some(warning) = allowlist::own_partition_warning(self.own_partition()) {
            details.insert("agentSignature".to_owned(), warning.to_owned());
        }
        if let Ok(Some(extractable)) = self.current_key_extractable() {
            details.insert(
                "keyExtractable".to_owned(),
                if extractable {
                    "yes: made by an agent before 0.5; `devicetrust-agent renew --force` replaces it with a key that cannot leave the keychain".to_owned()
                } else {
                    "no".to_owned()
                },
            );
        }
        if let Ok(Some(partitions)) = self.current_partitions() {
            details.insert("keyPartitions".to_owned(), partitions.join(","));
        }
        StoreDescription {
            kind: "keychain".to_owned(),
            location: self.paths.keychain.display().to_string(),
            details,
        }
    }
}
