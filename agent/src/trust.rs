//! What the agent trusts when it runs as root: only files that nobody but root can change.
//!
//! Root runs the agent from Jamf policies (macOS) and for `install --system` and
//! `uninstall --system` (both platforms). A file that another user can replace, or that sits
//! in a directory another user can write to, lets that user decide what root does: their
//! program in place of the agent, their configuration naming another CA, their cached
//! metadata naming `*` as the cert-auth domain. So, as root (effective uid 0):
//!
//! - before doing anything, the agent checks its own executable ([`check_own_binary`]);
//! - before reading a configuration file, a CA bundle or the cached CA metadata, it checks
//!   that file ([`Trust::resolve`]) and then reads the path the check resolved, so that a
//!   symbolic link repointed between the check and the read changes nothing; the
//!   configuration under `$HOME` or the XDG directories of the invoking environment is never
//!   even looked for (see [`crate::config`]).
//!
//! # The rule
//!
//! The path is resolved first (every symbolic link followed, `std::fs::canonicalize`), so the
//! check is about the file that is actually read or run: `/usr/local/bin/devicetrust-agent`
//! may be a symbolic link for people, as long as what it points to passes. Then:
//!
//! - **the file** must be a regular file owned by root (uid 0) and not writable by its group
//!   or by others;
//! - **every directory above it, up to `/`,** must be owned by root and not writable by its
//!   group or by others, **except** that a root-owned directory with the sticky bit (like
//!   `/tmp`, mode 1777) may be writable by anyone. In a sticky directory only the owner of an
//!   entry, the directory's owner or root may rename or remove that entry, so nobody can swap
//!   a root-owned file or directory in it for their own. The file itself gets no such
//!   exception: a sticky bit on a file does not stop anyone who may write to it.
//!
//! This is OpenSSH's `StrictModes` walk (`safe_path()`: owner and group/other write bits of
//! the file and of each parent up to `/`) with that one relaxation, which sshd does not make
//! but which is sound for root-owned entries; it lets an administrator (and the tests) try the
//! agent from a directory under `/tmp`. The group id is reported but does not matter: a
//! group-writable directory is refused even when its group is `wheel` or `root`, because
//! which users are in a group is not the agent's to know. Access control lists (macOS
//! `chmod +a`, Linux POSIX ACLs) are not examined.
//!
//! # What the check of its own binary can and cannot do
//!
//! A replaced binary does not run this check, so it is no barrier against a binary that was
//! already swapped. It stops root from running a correct agent from a place where it *could*
//! be swapped: a wrong deployment (the binary in a user-owned `/usr/local/bin`, as on an Intel
//! Mac with Homebrew) fails loudly at its first run as root instead of staying exploitable.
//! The Jamf scripts check the binary's path the same way before they run it, which is the
//! barrier for the policies.
//!
//! The decision, [`check_chain`], is a pure function of `stat` facts, so it is tested with a
//! table; [`inspect`] gathers the facts.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The file type bits of `st_mode`.
const S_IFMT: u32 = 0o170_000;
/// A regular file.
const S_IFREG: u32 = 0o100_000;
/// A directory.
const S_IFDIR: u32 = 0o040_000;
/// A symbolic link.
const S_IFLNK: u32 = 0o120_000;
/// The sticky bit.
const S_ISVTX: u32 = 0o001_000;
/// Write permission for the group and for others.
const GROUP_OR_OTHER_WRITE: u32 = 0o022;

/// What `lstat` says about one path: its owner, its group and its `st_mode` (type and
/// permission bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathFacts {
    /// The path.
    pub path: PathBuf,
    /// The owner's uid.
    pub uid: u32,
    /// The group's gid.
    pub gid: u32,
    /// `st_mode`: the file type and the permission bits.
    pub mode: u32,
}

/// Why a path cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The owner is not root.
    NotOwnedByRoot,
    /// The group or others may write to it.
    WritableByGroupOrOthers,
    /// The file is not a regular file.
    NotARegularFile,
    /// A parent is not a directory.
    NotADirectory,
    /// A symbolic link is left after resolving the path (it changed meanwhile).
    SymbolicLink,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOwnedByRoot => "is not owned by root",
            Self::WritableByGroupOrOthers => "is writable by its group or by others",
            Self::NotARegularFile => "is not a regular file",
            Self::NotADirectory => "is not a directory",
            Self::SymbolicLink => "is a symbolic link",
        })
    }
}

/// Why a file may not be used as root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A path of the chain can be changed by someone other than root.
    #[error("{} (owner uid {uid}, gid {gid}, mode {:04o}) {problem}", .path.display(), .mode & 0o7777)]
    Untrusted {
        /// The offending path: the file or one of its directories.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Its `st_mode`.
        mode: u32,
        /// What is wrong.
        problem: Problem,
    },
    /// The facts are not the file followed by each of its parents up to `/`.
    #[error("the facts about {} do not describe it and each of its directories up to /", .path.display())]
    IncompleteChain {
        /// The first path given.
        path: PathBuf,
    },
    /// The path could not be resolved or inspected.
    #[error("could not inspect {}: {reason}", .path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
}

/// Decides whether `chain` — a file, then each of its parent directories in order, ending
/// with `/` — is changeable by root alone (see the module documentation for the rule).
pub(crate) fn check_chain(chain: &[PathFacts]) -> Result<(), TrustError> {
    let Some((file, parents)) = chain.split_first() else {
        return Err(TrustError::IncompleteChain { path: PathBuf::new() });
    };
    let incomplete = || TrustError::IncompleteChain { path: file.path.clone() };
    let is_chain = file.path.is_absolute()
        && chain.windows(2).all(|w| w[0].path.parent() == Some(w[1].path.as_path()))
        && chain.last().is_some_and(|last| last.path == Path::new("/"));
    if !is_chain {
        return Err(incomplete());
    }
    let refuse = |facts: &PathFacts, problem| {
        Err(TrustError::Untrusted {
            path: facts.path.clone(),
            uid: facts.uid,
            gid: facts.gid,
            mode: facts.mode,
            problem,
        })
    };
    match file.mode & S_IFMT {
        S_IFREG => {}
        S_IFLNK => return refuse(file, Problem::SymbolicLink),
        _ => return refuse(file, Problem::NotARegularFile),
    }
    if file.uid != 0 {
        return refuse(file, Problem::NotOwnedByRoot);
    }
    if file.mode & GROUP_OR_OTHER_WRITE != 0 {
        return refuse(file, Problem::WritableByGroupOrOthers);
    }
    for dir in parents {
        match dir.mode & S_IFMT {
            S_IFDIR => {}
            S_IFLNK => return refuse(dir, Problem::SymbolicLink),
            _ => return refuse(dir, Problem::NotADirectory),
        }
        if dir.uid != 0 {
            return refuse(dir, Problem::NotOwnedByRoot);
        }
        // Root-owned and sticky: others may add entries but not replace root's.
        if dir.mode & GROUP_OR_OTHER_WRITE != 0 && dir.mode & S_ISVTX == 0 {
            return refuse(dir, Problem::WritableByGroupOrOthers);
        }
    }
    Ok(())
}

/// Resolves `path` and gathers the facts [`check_chain`] decides on: the resolved file, then
/// each of its directories up to `/`, as `lstat` sees them.
pub(crate) fn inspect(path: &Path) -> Result<Vec<PathFacts>, TrustError> {
    let inspect_error =
        |path: &Path, e: std::io::Error| TrustError::Inspect { path: path.to_owned(), reason: e.to_string() };
    let resolved = std::fs::canonicalize(path).map_err(|e| inspect_error(path, e))?;
    resolved
        .ancestors()
        .map(|p| {
            let meta = std::fs::symlink_metadata(p).map_err(|e| inspect_error(p, e))?;
            Ok(PathFacts { path: p.to_owned(), uid: meta.uid(), gid: meta.gid(), mode: meta.mode() })
        })
        .collect()
}

/// Whose files the agent may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Trust {
    /// Running as a user: the user's own files, as any program of theirs would.
    #[default]
    User,
    /// Running as root: only files that nobody but root can change.
    RootOnly,
}

impl Trust {
    /// [`Trust::RootOnly`] when this process's effective uid is 0.
    pub(crate) fn of_this_process() -> Self {
        if nix::unistd::geteuid().is_root() { Self::RootOnly } else { Self::User }
    }

    /// Checks `path` before it is used as `what` (e.g. "the configuration file") and returns
    /// the path to read: for a user, `path` itself; for root, the resolved path once it passed
    /// [`check_chain`]. Reading the returned path is what makes the check hold: nobody but root
    /// can change it or any directory above it afterwards.
    pub(crate) fn resolve(self, what: &'static str, path: &Path) -> Result<PathBuf, Refused> {
        match self {
            Self::User => Ok(path.to_owned()),
            Self::RootOnly => inspect(path)
                .and_then(|chain| check_chain(&chain).map(|()| chain[0].path.clone()))
                .map_err(|reason| Refused { what, path: path.to_owned(), reason }),
        }
    }
}

/// Where the macOS package installs the agent: a directory only root can change, because Jamf
/// Pro runs the agent as root (`/usr/local/bin/devicetrust-agent` is only a symbolic link to
/// it, for people: on Intel Macs with Homebrew `/usr/local/bin` belongs to a user). `main`
/// names it when [`check_own_binary`] refuses.
pub const AGENT_BINARY: &str = "/Library/DeviceTrust/bin/devicetrust-agent";

/// A file root refuses to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to use {what} {} as root: {reason}", .path.display())]
pub struct Refused {
    /// What the file is for, e.g. "the configuration file".
    pub what: &'static str,
    /// The file as named (before resolving).
    pub path: PathBuf,
    /// Why.
    pub reason: TrustError,
}

/// As root, refuses to go on unless this process's own executable passes the check of every path component (see the module documentation);
/// does nothing for a user. `main` calls it before anything else.
pub fn check_own_binary() -> Result<(), Refused> {
    let trust = Trust::of_this_process();
    if trust == Trust::User {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Refused {
        what: "the agent's own binary",
        path: PathBuf::from("(unknown)"),
        reason: TrustError::Inspect { path: PathBuf::from("the running executable"), reason: e.to_string() },
    })?;
    trust.resolve("the agent's own binary", &exe).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: u32 = S_IFREG;
    const DIR: u32 = S_IFDIR;
    const LINK: u32 = S_IFLNK;

    fn facts(path: &str, uid: u32, gid: u32, mode: u32) -> PathFacts {
        PathFacts { path: PathBuf::from(path), uid, gid, mode }
    }

    /// A chain for `/a/b/agent`: the file, `/a/b`, `/a`, `/`, each as (uid, gid, mode).
    fn chain(file: (u32, u32, u32), b: (u32, u32, u32), a: (u32, u32, u32)) -> Vec<PathFacts> {
        vec![
            facts("/a/b/agent", file.0, file.1, file.2),
            facts("/a/b", b.0, b.1, b.2),
            facts("/a", a.0, a.1, a.2),
            facts("/", 0, 0, DIR | 0o755),
        ]
    }

    #[test]
    fn check_chain_table() {
        use Problem as P;
        let root_file = (0, 0, FILE | 0o755);
        let root_dir = (0, 0, DIR | 0o755);
        let refused = |path: &str, (uid, gid, mode): (u32, u32, u32), problem| {
            Err(TrustError::Untrusted { path: PathBuf::from(path), uid, gid, mode, problem })
        };
        let cases: Vec<(&str, Vec<PathFacts>, Result<(), TrustError>)> = vec![
            ("ok/root-owned-everywhere", chain(root_file, root_dir, root_dir), Ok(())),
            ("ok/read-only-file", chain((0, 0, FILE | 0o444), root_dir, root_dir), Ok(())),
            (
                "ok/file-of-another-group-not-group-writable",
                chain((0, 80, FILE | 0o750), root_dir, root_dir),
                Ok(()),
            ),
            ("ok/sticky-root-parent-like-tmp", chain(root_file, root_dir, (0, 0, DIR | 0o1777)), Ok(())),
            (
                "ok/sticky-root-parent-group-writable",
                chain(root_file, (0, 0, DIR | 0o1775), root_dir),
                Ok(()),
            ),
            (
                "ok/setuid-bits-do-not-matter",
                chain((0, 0, FILE | 0o4755), (0, 0, DIR | 0o2755), root_dir),
                Ok(()),
            ),
            (
                "fail/binary-owned-by-a-user",
                chain((501, 20, FILE | 0o755), root_dir, root_dir),
                refused("/a/b/agent", (501, 20, FILE | 0o755), P::NotOwnedByRoot),
            ),
            (
                "fail/binary-group-writable",
                chain((0, 80, FILE | 0o775), root_dir, root_dir),
                refused("/a/b/agent", (0, 80, FILE | 0o775), P::WritableByGroupOrOthers),
            ),
            (
                "fail/binary-world-writable",
                chain((0, 0, FILE | 0o757), root_dir, root_dir),
                refused("/a/b/agent", (0, 0, FILE | 0o757), P::WritableByGroupOrOthers),
            ),
            (
                "fail/binary-sticky-and-world-writable",
                chain((0, 0, FILE | 0o1777), root_dir, root_dir),
                refused("/a/b/agent", (0, 0, FILE | 0o1777), P::WritableByGroupOrOthers),
            ),
            (
                "fail/binary-is-a-directory",
                chain((0, 0, DIR | 0o755), root_dir, root_dir),
                refused("/a/b/agent", (0, 0, DIR | 0o755), P::NotARegularFile),
            ),
            (
                "fail/binary-is-a-symlink",
                chain((0, 0, LINK | 0o777), root_dir, root_dir),
                refused("/a/b/agent", (0, 0, LINK | 0o777), P::SymbolicLink),
            ),
            (
                "fail/parent-owned-by-a-user-like-homebrew-usr-local-bin",
                chain(root_file, (501, 80, DIR | 0o755), root_dir),
                refused("/a/b", (501, 80, DIR | 0o755), P::NotOwnedByRoot),
            ),
            (
                "fail/parent-group-writable-like-applications",
                chain(root_file, (0, 80, DIR | 0o775), root_dir),
                refused("/a/b", (0, 80, DIR | 0o775), P::WritableByGroupOrOthers),
            ),
            (
                "fail/parent-group-writable-even-by-wheel",
                chain(root_file, (0, 0, DIR | 0o775), root_dir),
                refused("/a/b", (0, 0, DIR | 0o775), P::WritableByGroupOrOthers),
            ),
            (
                "fail/parent-world-writable-not-sticky",
                chain(root_file, root_dir, (0, 0, DIR | 0o777)),
                refused("/a", (0, 0, DIR | 0o777), P::WritableByGroupOrOthers),
            ),
            (
                "fail/sticky-parent-owned-by-a-user",
                chain(root_file, (1000, 1000, DIR | 0o1777), root_dir),
                refused("/a/b", (1000, 1000, DIR | 0o1777), P::NotOwnedByRoot),
            ),
            (
                "fail/parent-is-a-symlink",
                chain(root_file, (0, 0, LINK | 0o777), root_dir),
                refused("/a/b", (0, 0, LINK | 0o777), P::SymbolicLink),
            ),
            (
                "fail/parent-is-a-file",
                chain(root_file, (0, 0, FILE | 0o755), root_dir),
                refused("/a/b", (0, 0, FILE | 0o755), P::NotADirectory),
            ),
            (
                "fail/first-problem-from-the-file-up",
                chain((501, 20, FILE | 0o777), (501, 20, DIR | 0o777), root_dir),
                refused("/a/b/agent", (501, 20, FILE | 0o777), P::NotOwnedByRoot),
            ),
            (
                "fail/root-directory-writable",
                vec![facts("/agent", 0, 0, FILE | 0o755), facts("/", 0, 0, DIR | 0o777)],
                refused("/", (0, 0, DIR | 0o777), P::WritableByGroupOrOthers),
            ),
            ("fail/empty-chain", vec![], Err(TrustError::IncompleteChain { path: PathBuf::new() })),
            (
                "fail/chain-stops-short-of-root",
                chain(root_file, root_dir, root_dir)[..3].to_vec(),
                Err(TrustError::IncompleteChain { path: PathBuf::from("/a/b/agent") }),
            ),
            (
                "fail/chain-skips-a-directory",
                vec![
                    facts("/a/b/agent", 0, 0, FILE | 0o755),
                    facts("/a", 0, 0, DIR | 0o755),
                    facts("/", 0, 0, DIR | 0o755),
                ],
                Err(TrustError::IncompleteChain { path: PathBuf::from("/a/b/agent") }),
            ),
            (
                "fail/relative-path",
                vec![facts("agent", 0, 0, FILE | 0o755)],
                Err(TrustError::IncompleteChain { path: PathBuf::from("agent") }),
            ),
        ];
        for (name, chain, want) in cases {
            assert_eq!(check_chain(&chain), want, "{name}");
        }
    }

    #[test]
    fn messages_name_the_path_owner_and_mode() {
        let err = check_chain(&chain((0, 0, FILE | 0o755), (0, 0, DIR | 0o755), (501, 80, DIR | 0o777)))
            .unwrap_err();
        assert_eq!(err.to_string(), "/a (owner uid 501, gid 80, mode 0777) is not owned by root");
        let refused =
            Refused { what: "the agent's own binary", path: PathBuf::from("/usr/local/bin/x"), reason: err };
        assert_eq!(
            refused.to_string(),
            "refusing to use the agent's own binary /usr/local/bin/x as root: \
             /a (owner uid 501, gid 80, mode 0777) is not owned by root"
        );
    }

    #[test]
    fn inspect_resolves_links_and_reaches_the_root() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("agent.toml");
        std::fs::write(&file, "x").unwrap();
        let link = temp.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let chain = inspect(&link).unwrap();
        let resolved = std::fs::canonicalize(&file).unwrap();
        assert_eq!(chain[0].path, resolved, "the link is followed");
        assert_eq!(chain[0].mode & S_IFMT, S_IFREG);
        assert_eq!(chain.last().map(|f| f.path.as_path()), Some(Path::new("/")));
        assert_eq!(chain.len(), resolved.ancestors().count());
        let missing = inspect(&temp.path().join("missing")).unwrap_err();
        assert!(matches!(missing, TrustError::Inspect { .. }), "{missing:?}");
        // A user trusts their own files without looking, and reads them where they are named.
        let missing = temp.path().join("missing");
        assert_eq!(Trust::User.resolve("the configuration file", &missing), Ok(missing));
    }
}
