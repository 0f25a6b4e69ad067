//! The user's NSS database (`sql:$HOME/.pki/nssdb`), which Chromium, Chrome and Firefox read:
//! importing our identity, finding it, and removing it, with NSS's own tools.
//!
//! NSS imports private keys only from PKCS#12, so the identity passes through one. We build it
//! with `openssl pkcs12 -export`, which reads the key from stdin: the unencrypted key never
//! touches a file outside the agent's own store. The PKCS#12 is encrypted (AES-256-CBC,
//! SHA-256 MAC) under a random password; both live in a fresh 0700 directory (under
//! `$XDG_RUNTIME_DIR`, which is memory-backed, when there is one) that is deleted when the
//! import ends, on success or error. Passwords reach the tools only as files (`-passout file:`,
//! `pk12util -w`).
//!
//! Every call that could log in to the database passes an empty password file, so a database
//! protected by a primary password fails at once with [`NssError::PasswordProtected`] instead
//! of prompting on a terminal that a timer run does not have.
//!
//! NSS gives every certificate with the same subject the same nickname, so renewed
//! certificates all land under one fixed nickname; see [`NssDb::import`] for how the old one
//! is replaced.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::util::exec::{self, ExecError, Output};
use crate::util::pem;

/// The nickname our identity has in NSS.
pub(super) const DEFAULT_NICKNAME: &str = "DeviceTrust";

// Removing is a loop over what NSS still lists; this bounds it should a tool report success
// without deleting anything.
const MAX_REMOVALS: usize = 64;

/// What went wrong with the NSS database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NssError {
    /// A tool could not be run.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A tool ran and failed.
    #[error("{tool} {action} failed (exit {code}): {diagnostics}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What we asked of it.
        action: &'static str,
        /// Its exit code.
        code: i32,
        /// What it printed.
        diagnostics: String,
    },
    /// The database is protected by a primary password, which the agent does not know.
    #[error("the nss database {dir} is protected by a password; the agent cannot change it")]
    PasswordProtected {
        /// The database directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} {path}: {reason}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The certificate given is not PEM with a certificate in it.
    #[error("the certificate to import is not a pem certificate")]
    BadCertificate,
    /// The key given is neither PKCS#8 DER nor an unencrypted PKCS#8 PEM.
    #[error("the private key to import is not an unencrypted pkcs#8 key")]
    BadKey,
    /// The nickname is empty or has characters NSS would misread.
    #[error("the nss nickname {nickname:?} is empty or contains ':' or control characters")]
    BadNickname {
        /// The nickname as given.
        nickname: String,
    },
    /// The import reported success but the database does not hold exactly our identity.
    #[error("after import, the nss database does not hold the certificate with its key under {nickname:?}")]
    NotVerified {
        /// Our nickname.
        nickname: String,
    },
    /// `$HOME` is not set.
    #[error("HOME is not set; cannot find the user's nss database")]
    NoHome,
}

/// Where NSS's tools are, and how long each may take.
#[derive(Debug, Clone)]
pub(crate) struct NssTools {
    /// `certutil` (Debian: `libnss3-tools`).
    pub certutil: PathBuf,
    /// `pk12util` (Debian: `libnss3-tools`).
    pub pk12util: PathBuf,
    /// `openssl`, which builds the PKCS#12.
    pub openssl: PathBuf,
    /// Deadline for each invocation.
    pub timeout: Duration,
}

impl Default for NssTools {
    fn default() -> Self {
        Self {
            certutil: "certutil".into(),
            pk12util: "pk12util".into(),
            openssl: "openssl".into(),
            timeout: exec::DEFAULT_TIMEOUT,
        }
    }
}

/// A certificate line of `certutil -L`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NssCert {
    /// Its nickname.
    pub nickname: String,
    /// Its trust attributes (`SSL,S/MIME,JAR/XPI`), e.g. `u,u,u` for a certificate with a key.
    pub trust: String,
}

/// A key line of `certutil -K`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NssKey {
    /// The key type (`ec`, `rsa`).
    pub algorithm: String,
    /// The key id (hex), which addresses exactly this key.
    pub id: String,
    /// The nickname, or `None` for an orphan key.
    pub nickname: Option<String>,
}

/// Our identity as NSS holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NssIdentity {
    /// Every certificate under our nickname, DER.
    pub certificates: Vec<Vec<u8>>,
    /// Whether a private key under our nickname is there.
    pub has_private_key: bool,
}

impl NssIdentity {
    /// Whether NSS holds exactly this certificate, once, with its key.
    pub(crate) fn is_exactly(&self, certificate_der: &[u8]) -> bool {
        self.has_private_key && self.certificates.len() == 1 && self.certificates[0] == certificate_der
    }
}

/// What [`NssDb::import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImportOutcome {
    /// The identity was already there; nothing was touched.
    AlreadyCurrent,
    /// The identity was imported, after removing what was under our nickname before.
    Imported {
        /// What was removed first.
        replaced: Removed,
    },
}

/// What a removal deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Certificates deleted.
    pub certificates: usize,
    /// Private keys deleted.
    pub keys: usize,
}

impl Removed {
    /// Whether nothing was deleted.
    pub(crate) fn is_empty(&self) -> bool {
        self.certificates == 0 && self.keys == 0
    }
}

/// One NSS database directory and the tools to change it.
#[derive(Debug, Clone)]
pub(crate) struct NssDb {
    dir: PathBuf,
    temp_parent: PathBuf,
    tools: NssTools,
}

impl NssDb {
    /// The database at `dir`, temporary files under `$XDG_RUNTIME_DIR` (else the system temp
    /// directory).
    pub(crate) fn new(dir: PathBuf) -> Self {
        let temp_parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        Self { dir, temp_parent, tools: NssTools::default() }
    }

    /// The database browsers read for the user whose home is `home`: `home/.pki/nssdb`.
    pub(crate) fn for_home(home: &Path) -> Self {
        Self::new(home.join(".pki").join("nssdb"))
    }

    /// The current user's database, from `$HOME`.
    pub(crate) fn from_env() -> Result<Self, NssError> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).ok_or(NssError::NoHome)?;
        Ok(Self::for_home(Path::new(&home)))
    }

    /// Puts the short-lived PKCS#12 directories under `dir` instead.
    #[cfg(test)]
    pub(crate) fn with_temp_parent(mut self, dir: PathBuf) -> Self {
        self.temp_parent = dir;
        self
    }

    /// The database directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the database has been created.
    pub(crate) fn exists(&self) -> bool {
        self.dir.join("cert9.db").is_file()
    }

    fn db_arg(&self) -> String {
        format!("sql:{}", self.dir.display())
    }

    fn create_dir(&self) -> Result<(), NssError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io_err("create", &self.dir, e))?;
        fs::set_permissions(&self.dir, Permissions::from_mode(0o700))
            .map_err(|e| io_err("restrict", &self.dir, e))
    }

    /// Every certificate in the database (`certutil -L`).
    pub(crate) fn list(&self) -> Result<Vec<NssCert>, NssError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let db = self.db_arg();
        let out = self.certutil(&["-L", "-d", &db], None)?;
        self.check(&out, "certutil", "list certificates")?;
        Ok(parse_cert_list(&out.stdout))
    }

    /// Every private key in the database (`certutil -K`).
    pub(crate) fn keys(&self) -> Result<Vec<NssKey>, NssError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let db = self.db_arg();
        let out = self.certutil(&["-K", "-d", &db, "-f", "/dev/null"], None)?;
        if !out.success() && out.diagnostics().contains("no keys found") {
            return Ok(Vec::new());
        }
        self.check(&out, "certutil", "list keys")?;
        Ok(parse_key_list(&out.stdout))
    }

    /// Our identity under `nickname`, or `None` when there is no certificate under it.
    pub(crate) fn identity(&self, nickname: &str) -> Result<Option<NssIdentity>, NssError> {
        let Some(certificates) = self.certificates_under(nickname)? else { return Ok(None) };
        let has_private_key = self.keys()?.iter().any(|k| k.nickname.as_deref() == Some(nickname));
        Ok(Some(NssIdentity { certificates, has_private_key }))
    }

    /// The certificates (DER) under `nickname`, or `None` when there is none.
    fn certificates_under(&self, nickname: &str) -> Result<Option<Vec<Vec<u8>>>, NssError> {
        if !self.exists() {
            return Ok(None);
        }
        // Asked by name directly (one process rather than a listing first): every helper
        // process costs the user-visible `enroll` several milliseconds.
        let db = self.db_arg();
        let out = self.certutil(&["-L", "-d", &db, "-n", nickname, "-a"], None)?;
        if !out.success() && out.diagnostics().contains("Could not find cert") {
            return Ok(None);
        }
        self.check(&out, "certutil", "export certificate")?;
        Ok(Some(pem::blocks(out.stdout.as_bytes(), "CERTIFICATE")))
    }

    /// Imports the identity under `nickname` so that afterwards exactly this certificate and
    /// its key are there; does nothing when that already holds.
    ///
    /// NSS can only address a certificate by nickname, and after a second import under the
    /// same nickname it resolves to the newer one, so "import the new one, then delete the
    /// old one" cannot be done reliably. Instead everything that can fail before the database
    /// is touched (parsing, building the PKCS#12, which checks that key and certificate match)
    /// is done first, then the old entries are removed and the new one imported. This
    /// database is a copy of the agent's own store, which keeps the previous identity until
    /// the new one is verified, so a failed import is repaired by the next run.
    pub(crate) fn import(
        &self,
        nickname: &str,
        cert_pem: &[u8],
        key_pkcs8: &[u8],
    ) -> Result<ImportOutcome, NssError> {
        check_nickname(nickname)?;
        let cert_text = std::str::from_utf8(cert_pem).map_err(|_| NssError::BadCertificate)?;
        let leaf_der = pem::first(cert_text.as_bytes(), "CERTIFICATE").ok_or(NssError::BadCertificate)?;
        let key = SecretPem::from_pkcs8(key_pkcs8)?;

        // A missing database is made by `pk12util` itself on import (with an empty password,
        // as `certutil -N --empty-password` would make it): one helper process less. And a
        // database made now holds nothing of ours: no need to look or to clean up.
        let created = !self.exists();
        if created {
            self.create_dir()?;
        } else if self.identity(nickname)?.is_some_and(|id| id.is_exactly(&leaf_der)) {
            return Ok(ImportOutcome::AlreadyCurrent);
        }

        let staging = Staging::new(&self.temp_parent)?;
        self.build_pkcs12(&staging, nickname, &key, &leaf_der)?;
        let replaced = if created { Removed::default() } else { self.remove(nickname)? };
        let db = self.db_arg();
        let out = exec::run(
            &self.tools.pk12util,
            &[
                "-i".as_ref(),
                staging.p12.as_os_str(),
                "-d".as_ref(),
                db.as_ref(),
                "-w".as_ref(),
                staging.password.as_os_str(),
                "-k".as_ref(),
                "/dev/null".as_ref(),
            ],
            None,
            self.tools.timeout,
        )?;
        self.check(&out, "pk12util", "import identity")?;
        staging.close()?;

        // `pk12util` imports the key and the certificate of the PKCS#12 together and
        // succeeded, so the key is there; what can still be wrong is which certificate NSS
        // now resolves the nickname to, and only in a database that held entries before.
        if !created && self.certificates_under(nickname)?.is_none_or(|certs| certs != [leaf_der]) {
            return Err(NssError::NotVerified { nickname: nickname.to_owned() });
        }
        Ok(ImportOutcome::Imported { replaced })
    }

    /// Removes every certificate and key under `nickname`, and nothing else. Removing what is
    /// not there succeeds.
    pub(crate) fn remove(&self, nickname: &str) -> Result<Removed, NssError> {
        check_nickname(nickname)?;
        let mut removed = Removed::default();
        if !self.exists() {
            return Ok(removed);
        }
        let db = self.db_arg();
        // Keys go by id (`-F -k` deletes exactly that key and leaves certificates alone), so a
        // key of another certificate can never be hit.
        for key in self.keys()?.into_iter().filter(|k| k.nickname.as_deref() == Some(nickname)) {
            let out = self.certutil(&["-F", "-d", &db, "-f", "/dev/null", "-k", &key.id], None)?;
            self.check(&out, "certutil", "delete key")?;
            removed.keys += 1;
        }
        for _ in 0..MAX_REMOVALS {
            if !self.list()?.iter().any(|c| c.nickname == nickname) {
                return Ok(removed);
            }
            let out = self.certutil(&["-D", "-d", &db, "-f", "/dev/null", "-n", nickname], None)?;
            self.check(&out, "certutil", "delete certificate")?;
            removed.certificates += 1;
        }
        Err(NssError::Tool {
            tool: "certutil",
            action: "delete certificate",
            code: 0,
            diagnostics: format!("certificates under {nickname:?} remain after {MAX_REMOVALS} deletions"),
        })
    }

    fn build_pkcs12(
        &self,
        staging: &Staging,
        nickname: &str,
        key: &SecretPem,
        leaf_der: &[u8],
    ) -> Result<(), NssError> {
        let mut input = key.0.clone().into_bytes();
        input.extend_from_slice(pem::encode("CERTIFICATE", leaf_der).as_bytes());
        let passout = {
            let mut arg = std::ffi::OsString::from("file:");
            arg.push(staging.password.as_os_str());
            arg
        };
        let out = exec::run(
            &self.tools.openssl,
            &[
                "pkcs12".as_ref(),
                "-export".as_ref(),
                "-name".as_ref(),
                nickname.as_ref(),
                "-keypbe".as_ref(),
                "AES-256-CBC".as_ref(),
                "-certpbe".as_ref(),
                "AES-256-CBC".as_ref(),
                "-macalg".as_ref(),
                "sha256".as_ref(),
                "-passout".as_ref(),
                passout.as_os_str(),
                "-out".as_ref(),
                staging.p12.as_os_str(),
            ],
            Some(&input),
            self.tools.timeout,
        );
        // The input held the key in clear; overwrite it before the buffer is freed.
        input.iter_mut().for_each(|b| *b = 0);
        self.check(&out?, "openssl", "build pkcs#12")
    }

    fn certutil(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, NssError> {
        Ok(exec::run(&self.tools.certutil, args, stdin, self.tools.timeout)?)
    }

    fn check(&self, out: &Output, tool: &'static str, action: &'static str) -> Result<(), NssError> {
        if out.success() {
            return Ok(());
        }
        let diagnostics = out.diagnostics();
        if diagnostics.contains("SEC_ERROR_BAD_PASSWORD") {
            return Err(NssError::PasswordProtected { dir: self.dir.clone() });
        }
        Err(NssError::Tool { tool, action, code: out.code(), diagnostics })
    }
}

fn check_nickname(nickname: &str) -> Result<(), NssError> {
    // NSS reads "token:nickname", so a colon would send the lookup to another token.
    if nickname.trim().is_empty() || nickname.contains(':') || nickname.chars().any(char::is_control) {
        return Err(NssError::BadNickname { nickname: nickname.to_owned() });
    }
    Ok(())
}

fn io_err(action: &'static str, path: &Path, e: io::Error) -> NssError {
    NssError::Io { action, path: path.to_owned(), reason: e.to_string() }
}

/// An unencrypted PKCS#8 PEM; never printed, zeroed when dropped.
struct SecretPem(String);

impl SecretPem {
    fn from_pkcs8(key: &[u8]) -> Result<Self, NssError> {
        let text = std::str::from_utf8(key).ok().filter(|t| t.trim_start().starts_with("-----BEGIN"));
        match text {
            Some(text) => {
                let der = pem::first(text.as_bytes(), "PRIVATE KEY").ok_or(NssError::BadKey)?;
                let pem = pem::encode("PRIVATE KEY", &der);
                zero(der);
                Ok(Self(pem))
            }
            // DER PKCS#8 is a SEQUENCE.
            None if key.first() == Some(&0x30) => Ok(Self(pem::encode("PRIVATE KEY", key))),
            None => Err(NssError::BadKey),
        }
    }
}

impl Drop for SecretPem {
    fn drop(&mut self) {
        zero(std::mem::take(&mut self.0).into_bytes());
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

fn zero(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    // Keeps the writes from being optimised away as dead stores.
    std::hint::black_box(&bytes);
}

/// The 0700 directory holding the PKCS#12 and its password file; removed on drop.
struct Staging {
    dir: tempfile::TempDir,
    p12: PathBuf,
    password: PathBuf,
}

impl Staging {
    fn new(parent: &Path) -> Result<Self, NssError> {
        let dir = tempfile::Builder::new()
            .prefix("devicetrust-p12-")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(|e| io_err("create temporary directory in", parent, e))?;
        let password = dir.path().join("password");
        let p12 = dir.path().join("identity.p12");
        let secret: String = rand::rng().sample_iter(Alphanumeric).take(32).map(char::from).collect();
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&password)
            .map_err(|e| io_err("create", &password, e))?;
        file.write_all(secret.as_bytes()).map_err(|e| io_err("write", &password, e))?;
        zero(secret.into_bytes());
        Ok(Self { dir, p12, password })
    }

    fn close(self) -> Result<(), NssError> {
        let path = self.dir.path().to_owned();
        self.dir.close().map_err(|e| io_err("remove", &path, e))
    }
}

/// Parses `certutil -L`: a header, then one line per certificate with the nickname and, after
/// the last run of spaces, the trust attributes.
pub(super) fn parse_cert_list(text: &str) -> Vec<NssCert> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end();
            let (nickname, trust) = line.rsplit_once(char::is_whitespace)?;
            let nickname = nickname.trim_end();
            // Trust attributes are three comma-separated flag sets; the header lines lack them.
            if nickname.is_empty() || trust.matches(',').count() != 2 || trust.contains("S/MIME") {
                return None;
            }
            Some(NssCert { nickname: nickname.to_owned(), trust: trust.to_owned() })
        })
        .collect()
}

/// Parses `certutil -K`: lines like `< 0> ec  957e...  DeviceTrust` (`(orphan)` for a key with
/// no certificate; a token name may prefix the nickname as `Token:`).
pub(super) fn parse_key_list(text: &str) -> Vec<NssKey> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix('<')?;
            let (_, rest) = rest.split_once('>')?;
            let mut fields = rest.trim_start().splitn(2, char::is_whitespace);
            let algorithm = fields.next()?.to_owned();
            let rest = fields.next()?.trim_start();
            let (id, name) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let name = name.trim();
            let nickname = match name {
                "" | "(orphan)" => None,
                _ => Some(name.strip_prefix("NSS Certificate DB:").unwrap_or(name).to_owned()),
            };
            Some(NssKey { algorithm, id: id.to_owned(), nickname })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn parse_cert_list_table() {
        let sample = "\nCertificate Nickname                                         Trust Attributes\n                                                             SSL,S/MIME,JAR/XPI\n\nDeviceTrust                                                  u,u,u\nCorp Root CA - G2                                            CT,C,C\nleftover                                                     ,,   \n";
        let got = parse_cert_list(sample);
        let want = [("DeviceTrust", "u,u,u"), ("Corp Root CA - G2", "CT,C,C"), ("leftover", ",,")];
        assert_eq!(got.len(), want.len(), "ok/all-lines {got:?}");
        for (cert, (nickname, trust)) in got.iter().zip(want) {
            assert_eq!((cert.nickname.as_str(), cert.trust.as_str()), (nickname, trust));
        }
        assert!(parse_cert_list("").is_empty(), "ok/empty");
        assert!(
            parse_cert_list("certutil: function failed: SEC_ERROR_BAD_DATABASE").is_empty(),
            "fail/error-text"
        );
    }

    #[test]
    fn parse_key_list_table() {
        let sample = "certutil: Checking token \"NSS Certificate DB\" in slot \"NSS User Private Key and Certificate Services\"\n< 0> ec       957ec09de103309ae81e55af8e3045617eec4b0f   DeviceTrust\n< 1> rsa      447a124e2e9be5e8171bdf4109157a6982095b60   NSS Certificate DB:Other Name\n<10> rsa      0123abcd   (orphan)\n";
        let got = parse_key_list(sample);
        let names: Vec<_> =
            got.iter().map(|k| (k.algorithm.as_str(), k.id.as_str(), k.nickname.as_deref())).collect();
        assert_eq!(
            names,
            [
                ("ec", "957ec09de103309ae81e55af8e3045617eec4b0f", Some("DeviceTrust")),
                ("rsa", "447a124e2e9be5e8171bdf4109157a6982095b60", Some("Other Name")),
                ("rsa", "0123abcd", None),
            ]
        );
        assert!(parse_key_list("certutil: no keys found").is_empty(), "fail/no-keys");
    }

    #[test]
    fn secret_pem_table() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x00];
        let pem = pem::encode("PRIVATE KEY", &der);
        let cases: &[(&str, &[u8], bool)] = &[
            ("ok/der", &der, true),
            ("ok/pem", pem.as_bytes(), true),
            (
                "fail/encrypted-pem",
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                false,
            ),
            ("fail/garbage", b"not a key", false),
            ("fail/empty", b"", false),
        ];
        for (name, input, ok) in cases {
            let got = SecretPem::from_pkcs8(input);
            assert!(if *ok { got.is_ok() } else { matches!(got, Err(NssError::BadKey)) }, "{name}");
            if let Ok(secret) = got {
                assert_eq!(secret.0, pem, "{name}");
                assert_eq!(format!("{secret:?}"), "SecretPem(..)");
            }
        }
    }

    #[test]
    fn nickname_table() {
        for (name, nick, ok) in [
            ("ok/default", DEFAULT_NICKNAME, true),
            ("ok/spaces", "DeviceTrust 01ab", true),
            ("fail/empty", "", false),
            ("fail/colon", "token:nick", false),
            ("fail/newline", "a\nb", false),
        ] {
            let got = check_nickname(nick);
            assert!(
                if ok { got.is_ok() } else { matches!(got, Err(NssError::BadNickname { .. })) },
                "{name}: {got:?}"
            );
        }
    }

    /// A scratch world: a fake HOME with its NSS database path, a private temp parent that
    /// must be empty after every import, and a throwaway CA issuing like ours does.
    struct World {
        root: tempfile::TempDir,
        db: NssDb,
    }

    impl World {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let staging = root.path().join("staging");
            fs::create_dir(&staging).unwrap();
            let db = NssDb::for_home(&root.path().join("home")).with_temp_parent(staging);
            openssl(root.path(), &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
            openssl(
                root.path(),
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    "ca.key",
                    "-subj",
                    "/CN=MTLS Certificate Authority",
                    "-days",
                    "30",
                    "-out",
                    "ca.pem",
                ],
            );
            Self { root, db }
        }

        /// Issues a leaf (subject `CN=Okta MTLS`, as every renewal has) and returns its PEM
        /// and PKCS#8 DER key.
        fn issue(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
            let dir = self.root.path();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let crt = format!("{name}.pem");
            let der = format!("{name}.p8");
            openssl(
                dir,
                &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key],
            );
            openssl(dir, &["req", "-new", "-key", &key, "-subj", "/CN=Okta MTLS", "-out", &csr]);
            openssl(
                dir,
                &[
                    "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "10", "-out",
                    &crt,
                ],
            );
            openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", &key, "-outform", "DER", "-out", &der]);
            (fs::read(dir.join(crt)).unwrap(), fs::read(dir.join(der)).unwrap())
        }

        fn der(pem: &[u8]) -> Vec<u8> {
            pem::blocks(pem, "CERTIFICATE").remove(0)
        }

        fn staging_is_empty(&self) -> bool {
            fs::read_dir(self.root.path().join("staging")).unwrap().next().is_none()
        }
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn import_list_reimport_remove() {
        let w = World::new();
        assert_eq!(w.db.identity(DEFAULT_NICKNAME).unwrap(), None, "no database yet");
        assert_eq!(w.db.remove(DEFAULT_NICKNAME).unwrap(), Removed::default(), "removing from nothing");

        let (cert1, key1) = w.issue("one");
        assert_eq!(
            w.db.import(DEFAULT_NICKNAME, &cert1, &key1).unwrap(),
            ImportOutcome::Imported { replaced: Removed::default() }
        );
        let mode = fs::metadata(w.db.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(w.staging_is_empty(), "the pkcs#12 directory is gone");
        let id = w.db.identity(DEFAULT_NICKNAME).unwrap().unwrap();
        assert!(id.is_exactly(&World::der(&cert1)), "{id:?}");
        assert!(w.db.list().unwrap().iter().any(|c| c.nickname == DEFAULT_NICKNAME && c.trust.contains('u')));

        // An unrelated certificate someone else put there must survive everything below.
        let ca = w.root.path().join("ca.pem");
        let db = w.db.db_arg();
        let out = Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "Unrelated Root", "-t", "C,,", "-i"])
            .arg(&ca)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        assert_eq!(w.db.import(DEFAULT_NICKNAME, &cert1, &key1).unwrap(), ImportOutcome::AlreadyCurrent);

        let (cert2, key2) = w.issue("two");
        let pem_key2 = pem::encode("PRIVATE KEY", &key2);
        assert_eq!(
            w.db.import(DEFAULT_NICKNAME, &cert2, pem_key2.as_bytes()).unwrap(),
            ImportOutcome::Imported { replaced: Removed { certificates: 1, keys: 1 } }
        );
        assert!(w.staging_is_empty());
        let id = w.db.identity(DEFAULT_NICKNAME).unwrap().unwrap();
        assert!(id.is_exactly(&World::der(&cert2)), "only the renewed certificate remains: {id:?}");
        assert_eq!(w.db.keys().unwrap().len(), 1, "the old key is gone");

        assert_eq!(w.db.remove(DEFAULT_NICKNAME).unwrap(), Removed { certificates: 1, keys: 1 });
        assert_eq!(w.db.identity(DEFAULT_NICKNAME).unwrap(), None);
        assert!(w.db.keys().unwrap().is_empty());
        let left: Vec<_> = w.db.list().unwrap().into_iter().map(|c| c.nickname).collect();
        assert_eq!(left, ["Unrelated Root"]);
        assert_eq!(w.db.remove(DEFAULT_NICKNAME).unwrap(), Removed::default(), "second removal is a no-op");
    }

    #[test]
    fn fail_mismatched_key_touches_nothing() {
        let w = World::new();
        let (cert1, key1) = w.issue("one");
        let (_, key2) = w.issue("two");
        w.db.import(DEFAULT_NICKNAME, &cert1, &key1).unwrap();
        let err = w.db.import(DEFAULT_NICKNAME, &cert1, &key2);
        // Same certificate: nothing to do, the wrong key is never looked at.
        assert_eq!(err, Ok(ImportOutcome::AlreadyCurrent));
        let (cert3, _) = w.issue("three");
        let err = w.db.import(DEFAULT_NICKNAME, &cert3, &key2).unwrap_err();
        assert!(matches!(err, NssError::Tool { tool: "openssl", .. }), "{err:?}");
        assert!(w.staging_is_empty(), "removed on error too");
        let id = w.db.identity(DEFAULT_NICKNAME).unwrap().unwrap();
        assert!(id.is_exactly(&World::der(&cert1)), "the old identity is untouched: {id:?}");
    }

    #[test]
    fn fail_bad_inputs() {
        let w = World::new();
        let (cert, key) = w.issue("one");
        assert_eq!(w.db.import(DEFAULT_NICKNAME, b"junk", &key), Err(NssError::BadCertificate));
        assert_eq!(w.db.import(DEFAULT_NICKNAME, &cert, b"junk"), Err(NssError::BadKey));
        assert!(matches!(w.db.import("a:b", &cert, &key), Err(NssError::BadNickname { .. })));
        assert!(!w.db.exists(), "nothing was created for bad input");
    }

    #[test]
    fn fail_password_protected_database() {
        let w = World::new();
        let (cert, key) = w.issue("one");
        fs::create_dir_all(w.db.dir()).unwrap();
        let pw = w.root.path().join("dbpw");
        fs::write(&pw, "primary-password").unwrap();
        let out =
            Command::new("certutil").args(["-N", "-d", &w.db.db_arg(), "-f"]).arg(&pw).output().unwrap();
        assert!(out.status.success());
        let err = w.db.import(DEFAULT_NICKNAME, &cert, &key).unwrap_err();
        assert!(matches!(err, NssError::PasswordProtected { .. }), "{err:?}");
        assert!(w.staging_is_empty());
    }
}
