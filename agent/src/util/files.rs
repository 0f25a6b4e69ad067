//! Crash-safe, private file handling for everything the agent persists.
//!
//! Every state file is written whole or not at all: a temporary file in the same directory
//! (created 0600), fsync, rename over the target, fsync the directory, so that a crash or a
//! power cut leaves either the old or the new content. Directories the agent owns are 0700.

use std::fs::{self, File, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A file or directory could not be read, written or removed. The platform's callers see it
/// as [`crate::platform::PlatformError::Io`].
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", .path.display())]
pub(crate) struct FileError {
    /// What was being done, e.g. "could not write".
    pub(crate) action: &'static str,
    /// The path concerned.
    pub(crate) path: PathBuf,
    /// The cause.
    #[source]
    pub(crate) source: io::Error,
}

impl FileError {
    fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self { action, path: path.into(), source }
    }
}

/// Mode of every directory the agent creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Mode of every file the agent creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) and makes `dir` itself 0700, tightening it if an
/// earlier version or a person left it looser.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(|e| FileError::new("could not create", parent, e))?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(FileError::new("could not create", dir, e)),
    }
    let mode =
        fs::metadata(dir).map_err(|e| FileError::new("could not inspect", dir, e))?.permissions().mode();
    if mode & 0o777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| FileError::new("could not restrict the permissions of", dir, e))?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically, as a 0600 file.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(|e| FileError::new("could not create a temporary file in", dir, e))?;
    temp.write_all(contents).map_err(|e| FileError::new("could not write", temp.path().to_path_buf(), e))?;
    temp.as_file().sync_all().map_err(|e| FileError::new("could not sync", temp.path().to_path_buf(), e))?;
    temp.persist(path).map_err(|e| FileError::new("could not replace", path, e.error))?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| FileError::new("could not sync", dir, e))
}

/// The contents of `path`, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("could not read", path, e)),
    }
}

/// Removes the file at `path`; `Ok(false)` when there was none.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new("could not remove", path, e)),
    }
}

/// Removes the directory tree at `path`; `Ok(false)` when there was none.
pub(crate) fn remove_dir_all_if_exists(path: &Path) -> Result<bool, FileError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new("could not remove", path, e)),
    }
}

/// Removes `path` if it is an empty directory; `Ok(false)` when it is missing or not empty.
pub(crate) fn remove_dir_if_empty(path: &Path) -> Result<bool, FileError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            Ok(false)
        }
        Err(e) => Err(FileError::new("could not remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn private_dir_is_created_and_tightened() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("a/b/devicetrust");
        ensure_private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("loosen");
        ensure_private_dir(&dir).expect("again");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn atomic_write_replaces_whole_file_with_private_mode() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("state.json");
        write_atomic(&path, b"first").expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(mode(&path), 0o600);
        write_atomic(&path, b"second, longer").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        // No temporary file is left behind.
        let names: Vec<_> =
            fs::read_dir(temp.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn removal_helpers_are_idempotent() {
        let temp = tempfile::tempdir().expect("tempdir");
        let file = temp.path().join("f");
        assert_eq!(read_optional(&file).expect("read"), None);
        write_atomic(&file, b"x").expect("write");
        assert!(remove_file_if_exists(&file).expect("remove"));
        assert!(!remove_file_if_exists(&file).expect("remove again"));
        let dir = temp.path().join("d");
        ensure_private_dir(&dir.join("e")).expect("create");
        assert!(!remove_dir_if_empty(&dir).expect("not empty"));
        assert!(remove_dir_all_if_exists(&dir).expect("remove tree"));
        assert!(!remove_dir_all_if_exists(&dir).expect("remove tree again"));
    }
}
