//! What the agent does as root, reproduced as the attacks it stops:
//!
//! - `install --system` under `sudo -E` (the invoking user's `HOME` and XDG variables): the
//!   user's configuration and cached metadata must not be read, or a `certAuthDomain` of `*`
//!   would become every user's browser policy;
//! - a `--config`, CA bundle or cached metadata that someone other than root could change;
//! - a CA (or cache) publishing a `certAuthDomain` that is not a safe https origin;
//! - the agent's binary, or one of its directories, replaceable by a user;
//! - the Jamf scripts asked to run such a binary.
//!
//! Every refusal must exit 2 and write nothing. The tests need root (CI runs as root) and
//! fail, saying so, without it. None of them means to write the browsers' managed policy
//! under `/etc`: [`PolicyFiles`] fails a test whose agent wrote it and puts it back.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::Finished;

use serde_json::Value;

use crate::support::{
    FakeCa, Home, NOBODY, PolicyFiles, TOKEN, chmod, code, give_to_nobody, require_root, text,
};

const AGENT: &str = env!("CARGO_BIN_EXE_devicetrust-agent");

/// The values a CA (or a poisoned cache) could publish to make every browser present the
/// device certificate to every site, or to a site the CA does not own.
const UNSAFE_DOMAINS: [&str; 5] =
    ["*", "https://*", "https://evil.example/path", "https://*.example.com", "https://evil.example@ca"];

fn stderr(out: &Finished) -> String {
    out.stderr.clone()
}

#[track_caller]
fn assert_refused(out: &Finished, what: &str, needles: &[&str]) {
    assert_eq!(code(out), 2, "{what}: {}", text(out));
    for needle in needles {
        assert!(stderr(out).contains(needle), "{what}: stderr lacks {needle:?}\n{}", text(out));
    }
}

/// Every file and directory under `dir`, `dir` included, handed to [`NOBODY`].
fn give_tree_to_nobody(dir: &Path) {
    give_to_nobody(dir);
    for (path, _) in Home::tree(dir) {
        give_to_nobody(&path);
    }
}

/// Rewrites the cached metadata's `certAuthDomain` (keeping every other field as the agent
/// wrote it, whatever the protocol version).
fn poison_cache(file: &Path, domain: &str) {
    let mut cached: Value = serde_json::from_slice(&std::fs::read(file).expect("the cache")).expect("json");
    cached["metadata"]["certAuthDomain"] = Value::from(domain);
    std::fs::write(file, serde_json::to_vec(&cached).expect("json")).expect("write the cache");
}

/// A home enrolled at `ca`, with the metadata cached by the agent (as root, root-owned).
fn enrolled_home(ca: &FakeCa) -> Home {
    let home = Home::for_ca(ca);
    home.enroll();
    assert!(home.data_dir().join("metadata.json").is_file(), "enroll caches the metadata");
    home
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
    std::fs::write(path, text).expect("write");
    path.to_owned()
}

#[test]
fn install_system_under_sudo_e_reads_neither_the_users_config_nor_their_cache() {
    require_root("the agent's rules for root apply only to root");
    assert!(
        !Path::new(agent::SYSTEM_CONFIG).exists(),
        "this test needs a machine without {} (it would be read instead)",
        agent::SYSTEM_CONFIG
    );
    let policy = PolicyFiles::guard();
    let ca = FakeCa::start();
    let home = enrolled_home(&ca);
    let requests = ca.requests();
    let cache = home.data_dir().join("metadata.json");
    poison_cache(&cache, "*");

    // (a) The user's own configuration points the data directory at the poisoned cache.
    let evil = home.temp.path().join("evil");
    std::fs::create_dir_all(&evil).expect("dir");
    std::fs::rename(&cache, evil.join("metadata.json")).expect("move the cache");
    let user_config = write(
        &home.temp.path().join("config/devicetrust/agent.toml"),
        &format!("data_dir = \"{}\"\n", evil.display()),
    );
    for dir in ["home", "data", "config", "evil"] {
        give_tree_to_nobody(&home.temp.path().join(dir));
    }
    let out = home.run_with(home.command_without_config(AGENT, &["install", "--system"]), None);
    assert_refused(&out, "user config", &["ca_url is not set", agent::SYSTEM_CONFIG]);
    policy.assert_unchanged("user config");

    // (b) No configuration: the data directory of the user's environment holds the cache.
    std::fs::remove_file(&user_config).expect("rm");
    std::fs::rename(evil.join("metadata.json"), &cache).expect("move the cache back");
    let out = home.run_with(home.command_without_config(AGENT, &["install", "--system"]), None);
    assert_refused(
        &out,
        "user cache",
        &[
            "refusing to use the cached CA metadata",
            &cache.display().to_string(),
            &format!("owner uid {NOBODY}"),
            "is not owned by root",
            "set ca_url",
        ],
    );
    policy.assert_unchanged("user cache");
    assert_eq!(ca.requests(), requests, "nothing asked the CA the user's config names");
}

#[test]
fn a_config_or_bundle_root_does_not_own_is_refused() {
    require_root("the agent's rules for root apply only to root");
    let policy = PolicyFiles::guard();
    let ca = FakeCa::start();
    ca.publish_cert_auth_domain("*");
    let home = Home::for_ca(&ca);
    let original = std::fs::read_to_string(&home.config).expect("config");
    let dir = |name: &str, mode: u32| {
        let dir = home.temp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        chmod(&dir, mode);
        dir
    };
    let install = |config: &Path| {
        let mut cmd = home.command_without_config(AGENT, &["install", "--system", "--config"]);
        cmd.arg(config);
        home.run_with(cmd, None)
    };

    let users = write(&dir("users", 0o755).join("agent.toml"), &original);
    give_to_nobody(&users);
    let out = install(&users);
    assert_refused(
        &out,
        "fail/users-config",
        &["refusing to use the configuration file", &format!("owner uid {NOBODY}"), "is not owned by root"],
    );

    let writable = write(&dir("writable", 0o755).join("agent.toml"), &original);
    chmod(&writable, 0o666);
    assert_refused(&install(&writable), "fail/world-writable-config", &["mode 0666", "by others"]);

    let open_dir = dir("open", 0o777);
    let in_open_dir = write(&open_dir.join("agent.toml"), &original);
    assert_refused(
        &install(&in_open_dir),
        "fail/config-in-a-world-writable-dir",
        &[&format!("{} (owner uid 0, gid 0, mode 0777)", open_dir.display()), "by others"],
    );

    let bundle = home.temp.path().join("users/bundle.pem");
    std::fs::copy(&home.bundle, &bundle).expect("copy");
    give_to_nobody(&bundle);
    let with_users_bundle = write(
        &home.temp.path().join("bundle-config/agent.toml"),
        &original.replace(&home.bundle.display().to_string(), &bundle.display().to_string()),
    );
    assert_refused(
        &install(&with_users_bundle),
        "fail/users-ca-bundle",
        &["refusing to use the CA bundle", "is not owned by root"],
    );
    policy.assert_unchanged("refused configurations");
    assert_eq!(ca.requests(), 0, "no refused configuration reached the CA");

    // Accepted: a root-owned file in a sticky directory like /tmp, and a symbolic link
    // (in a directory anyone may write) to a root-owned file: the file read is the target.
    let sticky = write(&dir("sticky", 0o1777).join("agent.toml"), &original);
    let link = open_dir.join("link.toml");
    std::os::unix::fs::symlink(&home.config, &link).expect("symlink");
    for (name, config) in [("ok/sticky-parent", &sticky), ("ok/link-to-a-root-file", &link)] {
        let mut cmd = home.command_without_config(AGENT, &["status", "--config"]);
        cmd.arg(config);
        let out = home.run_with(cmd, None);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
    }
}

#[test]
fn install_system_refuses_unsafe_cert_auth_domains_before_writing() {
    require_root("install --system writes system-wide policy only as root");
    let policy = PolicyFiles::guard();
    let ca = FakeCa::start();
    let home = enrolled_home(&ca);
    let cache = home.data_dir().join("metadata.json");
    // Without ca_url, install --system uses the (root-owned, so trusted) cache.
    let cache_only = write(
        &home.temp.path().join("cache-only.toml"),
        &format!("data_dir = \"{}\"\n", home.data_dir().display()),
    );
    for domain in UNSAFE_DOMAINS {
        ca.publish_cert_auth_domain(domain);
        let out = home.run(&["install", "--system"]);
        assert_refused(&out, domain, &["cannot configure browsers", "is not a safe https origin"]);
        policy.assert_unchanged(domain);

        poison_cache(&cache, domain);
        let mut cmd = home.command_without_config(AGENT, &["install", "--system", "--config"]);
        cmd.arg(&cache_only);
        let out = home.run_with(cmd, None);
        assert_refused(&out, &format!("cached {domain}"), &["cached in", "is not a safe https origin"]);
        policy.assert_unchanged(&format!("cached {domain}"));
    }
}

/// The agent binary copied into a directory of its own, whose modes the test changes.
struct Installed {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    binary: PathBuf,
}

impl Installed {
    fn new() -> Self {
        let temp = tempfile::Builder::new().prefix("devicetrust-bin-").tempdir().expect("tempdir");
        // Others (the `nobody` run below) must be able to reach the binary.
        chmod(temp.path(), 0o755);
        let dir = temp.path().join("bin");
        std::fs::create_dir(&dir).expect("dir");
        chmod(&dir, 0o755);
        let binary = dir.join("devicetrust-agent");
        std::fs::copy(AGENT, &binary).expect("copy the agent");
        chmod(&binary, 0o755);
        Self { _temp: temp, dir, binary }
    }

    fn reset(&self) {
        for path in [&self.dir, &self.binary] {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .expect("chown");
            chmod(path, 0o755);
        }
    }
}

#[test]
fn a_binary_others_can_replace_does_nothing_as_root() {
    require_root("the agent checks its own binary only as root");
    let policy = PolicyFiles::guard();
    let ca = FakeCa::start();
    let installed = Installed::new();
    type Setup = fn(&Installed);
    let cases: [(&str, Setup, &str); 6] = [
        (
            "fail/dir-world-writable",
            |i| chmod(&i.dir, 0o777),
            "mode 0777) is writable by its group or by others",
        ),
        (
            "fail/dir-group-writable",
            |i| chmod(&i.dir, 0o775),
            "mode 0775) is writable by its group or by others",
        ),
        ("fail/dir-owned-by-a-user", |i| give_to_nobody(&i.dir), "is not owned by root"),
        ("fail/binary-owned-by-a-user", |i| give_to_nobody(&i.binary), "is not owned by root"),
        ("fail/binary-group-writable", |i| chmod(&i.binary, 0o775), "mode 0775) is writable"),
        ("fail/binary-world-writable", |i| chmod(&i.binary, 0o757), "mode 0757) is writable"),
    ];
    for (name, setup, reason) in cases {
        installed.reset();
        setup(&installed);
        let offending = if name.starts_with("fail/dir") { &installed.dir } else { &installed.binary };
        let needles = ["refusing to use the agent's own binary", &offending.display().to_string(), reason];

        // What would enroll (and write an identity) refuses, and asks the CA nothing.
        let home = Home::for_ca(&ca);
        let mut cmd =
            home.command_without_config(&installed.binary, &["enroll", "--token-stdin", "--config"]);
        cmd.arg(&home.config);
        let out = home.run_with(cmd, Some(&format!("{TOKEN}\n")));
        assert_refused(&out, name, &needles);
        assert!(!home.data_dir().exists(), "{name}: nothing written: {:?}", Home::tree(&home.data_dir()));

        // What would write the system-wide policy (the CA's domain is fine) refuses too.
        let mut cmd = home.command_without_config(&installed.binary, &["install", "--system", "--config"]);
        cmd.arg(&home.config);
        assert_refused(&home.run_with(cmd, None), name, &needles);
        policy.assert_unchanged(name);
        assert_eq!(ca.requests(), 0, "{name}: the CA was never asked");
    }

    // Accepted: root-owned 0755 throughout; a root-owned sticky parent (like /tmp); a
    // symbolic link from a directory anyone can write (like a user's /usr/local/bin) to it.
    let run_version = |program: &Path| testkit::run(Command::new(program).arg("version").env_clear());
    installed.reset();
    let out = run_version(&installed.binary);
    assert_eq!(code(&out), 0, "ok/root-owned: {}", text(&out));
    chmod(&installed.dir, 0o1777);
    let out = run_version(&installed.binary);
    assert_eq!(code(&out), 0, "ok/sticky-parent: {}", text(&out));
    installed.reset();
    let links = installed.dir.parent().expect("parent").join("links");
    std::fs::create_dir(&links).expect("dir");
    chmod(&links, 0o777);
    let link = links.join("devicetrust-agent");
    std::os::unix::fs::symlink(&installed.binary, &link).expect("symlink");
    let out = run_version(&link);
    assert_eq!(code(&out), 0, "ok/link-to-a-root-binary: {}", text(&out));

    // A user runs the same binary from the same open directory: the rule is root's alone.
    chmod(&installed.dir, 0o777);
    let out = {
        use std::os::unix::process::CommandExt as _;
        testkit::run(Command::new(&installed.binary).arg("version").env_clear().uid(NOBODY).gid(NOBODY))
    };
    assert_eq!(code(&out), 0, "ok/not-root: {}", text(&out));
}

/// The Jamf scripts run the agent as root; each checks the binary's path first, the way the
/// agent does, and runs the resolved path it checked.
#[test]
fn jamf_scripts_refuse_an_agent_others_can_replace() {
    require_root("the Jamf scripts run as root and check for root-owned files");
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("bin");
    std::fs::create_dir(&dir).expect("dir");
    chmod(&dir, 0o755);
    let marker = temp.path().join("ran");
    // A stand-in agent that records how it was called.
    let stand_in = write(&dir.join("devicetrust-agent"), "#!/bin/sh\necho \"$0 $*\" >> \"$MARKER\"\n");
    chmod(&stand_in, 0o755);
    let script = |name: &str| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../jamf").join(name);
    let run = |name: &str, agent: &Path| {
        let _ = std::fs::remove_file(&marker);
        testkit::run(
            Command::new("/bin/sh")
                .arg(script(name))
                .args(["/", "mac", "alice", "", ""])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("DEVICETRUST_AGENT", agent)
                .env("MARKER", &marker),
        )
    };
    // Both back to root:root 0755, as each case starts.
    let give_back_to_root = || {
        for path in [&dir, &stand_in] {
            nix::unistd::chown(
                path.as_path(),
                Some(nix::unistd::Uid::from_raw(0)),
                Some(nix::unistd::Gid::from_raw(0)),
            )
            .expect("chown");
            chmod(path, 0o755);
        }
    };
    /// Makes the directory or the stand-in (the two arguments) replaceable.
    type Setup = fn(&Path, &Path);
    let cases: [(&str, Setup, &str); 4] = [
        ("fail/dir-world-writable", |dir, _| chmod(dir, 0o777), "writable by its group or by others"),
        ("fail/dir-owned-by-a-user", |dir, _| give_to_nobody(dir), "not owned by root"),
        ("fail/agent-owned-by-a-user", |_, agent| give_to_nobody(agent), "not owned by root"),
        ("fail/agent-group-writable", |_, agent| chmod(agent, 0o775), "writable by its group or by others"),
    ];
    for script_name in ["devicetrust-policy.sh", "devicetrust-uninstall.sh"] {
        for (name, setup, reason) in cases {
            give_back_to_root();
            setup(&dir, &stand_in);
            let out = run(script_name, &stand_in);
            let what = format!("{script_name} {name}");
            assert_eq!(code(&out), 2, "{what}: {}", text(&out));
            let stdout = &out.stdout;
            assert!(stdout.contains("ERROR:") && stdout.contains(reason), "{what}: {}", text(&out));
            assert!(!marker.exists(), "{what}: the agent must not run");
        }
    }

    // Accepted: the stand-in in a root-owned directory, also through a symbolic link from a
    // directory anyone can write; the script runs the resolved path it checked, not the link.
    give_back_to_root();
    let open = temp.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    chmod(&open, 0o777);
    let link = open.join("devicetrust-agent");
    std::os::unix::fs::symlink(&stand_in, &link).expect("symlink");
    let resolved = std::fs::canonicalize(&stand_in).expect("resolve");
    for agent in [&stand_in, &link] {
        let out = run("devicetrust-policy.sh", agent);
        assert_eq!(code(&out), 0, "ok/{}: {}", agent.display(), text(&out));
        let ran = std::fs::read_to_string(&marker).expect("the stand-in ran");
        assert_eq!(ran, format!("{} jamf / mac alice  \n", resolved.display()), "{}", agent.display());
    }
}
