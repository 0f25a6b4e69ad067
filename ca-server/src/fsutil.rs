//! Files the CA writes and reads, kept private: generated keys, certificates and tokens are
//! written atomically with the right mode, the data directory is 0700, and key files that
//! other users could read are refused.
//!
//! A file is written to a temporary file in the same directory, synced, then renamed over
//! the target, so a crash never leaves a half-written key behind. Secret files are created
//! with mode 0600 from the start: there is no moment at which another user could open them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteError {
    /// The target file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: keys and tokens.
    Private,
    /// Mode 0644: certificates.
    Public,
}

/// Writes `contents` to `path` atomically with the given visibility.
pub fn write_atomic(path: &Path, contents: &[u8], visibility: Visibility) -> Result<(), WriteError> {
    let err = |source| WriteError { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = match visibility {
            Visibility::Private => 0o600,
            Visibility::Public => 0o644,
        };
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let mut file = builder.tempfile_in(dir).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.as_file().sync_all().map_err(err)?;
    file.persist(path).map_err(|e| err(e.error))?;
    // The rename is durable only once the directory entry is.
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist, and tightens it to 0700
/// if it exists with a wider mode: the database and its WAL inside must not be readable by
/// other users, whatever mode SQLite or an admin gave them.
pub fn create_private_dir(dir: &Path) -> Result<(), WriteError> {
    let err = |source| WriteError { path: dir.to_owned(), source };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        builder.mode(0o700);
        builder.create(dir).map_err(err)?;
        let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %dir.display(), mode = format!("{mode:04o}"), "the data directory was open to other users; making it 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(err)
}

/// Makes an existing file mode 0600 if it is open to other users (a database left 0644 by
/// an earlier version or a restore); a missing file is fine.
pub fn tighten_file(path: &Path) -> Result<(), WriteError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let err = |source| WriteError { path: path.to_owned(), source };
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Why a key file is refused, in words for the error message; `None` if it is private
/// enough: owner-only, or also readable (not writable) by its group, as Debian's `ssl-cert`
/// group convention has it.
pub fn key_file_problem(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        if mode & 0o037 != 0 {
            return Some(format!(
                "it is mode {mode:04o}, open to other users; a private key must be mode 0600 (`chmod 600 {}`)",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_open_data_directory_is_tightened_and_open_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir(&data).expect("tighten");
        assert_eq!(std::fs::metadata(&data).expect("meta").permissions().mode() & 0o777, 0o700);

        let key = dir.path().join("key.pem");
        let cases = [
            ("ok/0600", 0o600, false),
            ("ok/0400", 0o400, false),
            ("ok/0640-group-read", 0o640, false),
            ("fail/0644", 0o644, true),
            ("fail/0604", 0o604, true),
            ("fail/0660-group-write", 0o660, true),
        ];
        std::fs::write(&key, "k").expect("write");
        for (name, mode, refused) in cases {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(key_file_problem(&key).is_some(), refused, "{name}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        tighten_file(&key).expect("tighten");
        assert_eq!(std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);
        tighten_file(&dir.path().join("missing")).expect("a missing file is fine");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_replace_atomically() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", Visibility::Private).expect("write");
        write_atomic(&path, b"two", Visibility::Private).expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let public = dir.path().join("ca.pem");
        write_atomic(&public, b"cert", Visibility::Public).expect("write");
        let mode = std::fs::metadata(&public).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
