//! Finds the two programs under test, building them first.
//!
//! `env!("CARGO_BIN_EXE_...")` only names binaries of the test's own package, so the first
//! test that needs them runs, once per test process, `cargo build -p agent -p ca-server
//! --bins --features agent/test-hooks` in the workspace, into the same target directory as
//! the test itself (so nothing is built twice). This works from a clean clone with plain
//! `cargo test --workspace`: cargo has released its build lock by the time tests run.
//!
//! The agent is built with the crash-test hook (`DEVICETRUST_TEST_ABORT_AT`), which does
//! nothing unless that variable names a step. `scripts/test.sh` runs the tests in a target
//! directory of their own (`target/test-hooks`), so that the hooked agent never stands in
//! `target/debug/` for a user's build. Because `<target>/debug/devicetrust-agent` is still
//! rewritten by every `cargo build` of the agent there, with or without the feature, both
//! binaries are copied right after the build into `<target>/devicetrust-e2e/`, and the
//! agent copy is checked to contain the hook.
//!
//! `DEVICETRUST_E2E_BIN_DIR=<dir>` skips the build and uses `<dir>/devicetrust-agent` and
//! `<dir>/devicetrust-ca` as they are (the crash test still requires the hook).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The environment variable naming a directory of prebuilt binaries.
pub const BIN_DIR_ENV: &str = "DEVICETRUST_E2E_BIN_DIR";

/// What the agent prints when its crash-test hook fires; present in the binary only when it
/// was built with the feature `test-hooks`.
const HOOK_MARKER: &[u8] = b"test hook: aborting at";

/// The programs under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `devicetrust-agent`.
    pub agent: PathBuf,
    /// `devicetrust-ca`.
    pub ca: PathBuf,
    /// Whether the agent has the crash-test hook compiled in.
    pub agent_has_test_hooks: bool,
}

/// The programs, built on first use; panics with the build's output when they cannot be.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINARIES.get_or_init(locate) {
        Ok(binaries) => binaries,
        Err(message) => panic!("{message}"),
    }
}

fn locate() -> Result<Binaries, String> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        let agent = dir.join("devicetrust-agent");
        let ca = dir.join("devicetrust-ca");
        for path in [&agent, &ca] {
            if !path.is_file() {
                return Err(format!("{BIN_DIR_ENV}={} has no {}", dir.display(), path.display()));
            }
        }
        let agent_has_test_hooks = contains(&agent, HOOK_MARKER)?;
        return Ok(Binaries { agent, ca, agent_has_test_hooks });
    }
    // Another cargo build of the agent can replace the file between our build and our copy;
    // a second round then wins.
    let mut last = String::new();
    for _ in 0..3 {
        let built = build()?;
        let target = target_dir();
        let stable = target.join("devicetrust-e2e");
        std::fs::create_dir_all(&stable).map_err(|e| format!("cannot create {}: {e}", stable.display()))?;
        let agent = copy_into(&built.0, &stable)?;
        let ca = copy_into(&built.1, &stable)?;
        if contains(&agent, HOOK_MARKER)? {
            return Ok(Binaries { agent, ca, agent_has_test_hooks: true });
        }
        last = format!("{} was replaced by a build without the feature test-hooks", built.0.display());
    }
    Err(last)
}

/// The workspace root (the tests crate's parent).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or_else(|| manifest.to_path_buf(), Path::to_path_buf)
}

/// The target directory: `CARGO_TARGET_DIR`, else the one holding this test executable
/// (cargo marks its root with `CACHEDIR.TAG`), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() { dir } else { workspace_root().join(dir) };
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds both binaries; returns the agent's and the CA's paths as cargo reports them.
fn build() -> Result<(PathBuf, PathBuf), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    // Cargo gives the test process its package's variables (CARGO_PKG_NAME=tests,
    // CARGO_MANIFEST_DIR, ...). Build scripts such as ring's declare `rerun-if-env-changed`
    // on those names, so passing them on would make this build and the next ordinary one
    // rebuild ring and everything above it, each undoing the other.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .current_dir(workspace_root())
        .args(["build", "-p", "agent", "-p", "ca-server", "--bins", "--features", "agent/test-hooks"])
        .args(["--message-format", "json-render-diagnostics", "--target-dir"])
        .arg(target_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", PathBuf::from(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!(
            "building devicetrust-agent and devicetrust-ca failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut agent = None;
    let mut ca = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(name), Some(executable)) =
            (message["target"]["name"].as_str(), message["executable"].as_str())
        else {
            continue;
        };
        match name {
            "devicetrust-agent" => agent = Some(PathBuf::from(executable)),
            "devicetrust-ca" => ca = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    match (agent, ca) {
        (Some(agent), Some(ca)) => Ok((agent, ca)),
        _ => Err("cargo build did not report both devicetrust-agent and devicetrust-ca".to_owned()),
    }
}

/// Copies `file` into `dir` under its own name, atomically (a running copy keeps running).
fn copy_into(file: &Path, dir: &Path) -> Result<PathBuf, String> {
    let name = file.file_name().ok_or_else(|| format!("{} has no file name", file.display()))?;
    let dest = dir.join(name);
    let temp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
    std::fs::copy(file, &temp).map_err(|e| format!("cannot copy {}: {e}", file.display()))?;
    std::fs::rename(&temp, &dest).map_err(|e| format!("cannot rename {}: {e}", temp.display()))?;
    Ok(dest)
}

/// Whether `file` contains `needle`, read in chunks that overlap by the needle's length.
fn contains(file: &Path, needle: &[u8]) -> Result<bool, String> {
    use std::io::Read as _;
    let mut reader = std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        if n == 0 {
            return Ok(false);
        }
        window.extend_from_slice(&chunk[..n]);
        // The standard library's substring search is optimised even in a debug build.
        if String::from_utf8_lossy(&window).contains(&*String::from_utf8_lossy(needle)) {
            return Ok(true);
        }
        let keep = needle.len().min(window.len());
        window.drain(..window.len() - keep);
    }
}
