//! A throwaway PostgreSQL cluster for one test: `initdb` into a temporary directory, then
//! `postgres` as a child of the test on a Unix socket in that directory (no TCP port at
//! all), stopped and deleted when the [`PgCluster`] is dropped.
//!
//! The server runs as a [`Guard`]ed child rather than as a `pg_ctl` daemon so that it dies
//! with the test whatever happens (a panic, a killed test binary's process group), and so
//! that a test can stop it and start it again on the same data ([`PgCluster::stop`],
//! [`PgCluster::start_again`]) to see what the CA does while the database is away.
//!
//! PostgreSQL refuses to run as root; as root the cluster belongs to Debian's `postgres`
//! account (made by the `postgresql` package) and every server process runs as it. The
//! role the CA uses, `devicetrust`, logs in with a password (SCRAM) read from
//! [`PgCluster::password_file`], so that the CA's password-file path is what the tests
//! exercise; the superuser `postgres` is trusted on the socket and only used by the
//! test itself. The server is tuned for tests only (`fsync = off`): a crash of the
//! machine is not what these tests are about.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Guard, run};

/// The password of the `devicetrust` role in every test cluster. Not a secret: the
/// cluster has no TCP listener and lives for one test.
const PASSWORD: &str = "devicetrust-test-password";

/// A running (or stopped, until started again) throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    owner: Option<(u32, u32)>,
    server: Option<Guard>,
    databases: u32,
}

impl PgCluster {
    /// Makes a new cluster and starts it; panics with the tool's output if that fails.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("devicetrust-pg-").tempdir().expect("tempdir");
        let owner = service_account();
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into()))
                .expect("chown the cluster dir");
        }
        std::fs::write(dir.path().join("pwfile"), PASSWORD).expect("write the password file");
        let mut cluster = Self { bin, dir, owner, server: None, databases: 0 };
        let data = cluster.data_dir();
        let mut initdb = cluster.tool("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(&mut initdb).expect_success();
        // The superuser is trusted on the socket (the test's own setup); every other role
        // logs in with its password.
        std::fs::write(data.join("pg_hba.conf"), "local all postgres trust\nlocal all all scram-sha-256\n")
            .expect("write pg_hba.conf");
        cluster.start_again();
        cluster.psql(&format!("CREATE ROLE devicetrust LOGIN PASSWORD '{PASSWORD}'"));
        cluster
    }

    /// The password file of the `devicetrust` role (the CA's `[store] password_file`).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("pwfile")
    }

    /// The role's password, for a test that opens the store itself.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// A new empty database owned by `devicetrust`, and its URL (without the password).
    pub fn create_database(&mut self) -> String {
        self.databases += 1;
        let name = format!("devicetrust_{}", self.databases);
        self.psql(&format!("CREATE DATABASE {name} OWNER devicetrust"));
        self.url(&name)
    }

    /// The URL of database `name` as the `devicetrust` role, over the socket.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://devicetrust@localhost/{name}?host={}", self.socket_dir().display())
    }

    /// Runs one SQL statement as the superuser in database `postgres`; panics on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL statement as the superuser in database `database`.
    pub fn psql_in(&self, database: &str, sql: &str) -> String {
        let mut psql = self.tool("psql");
        psql.arg("-h").arg(self.socket_dir()).args([
            "-U",
            "postgres",
            "-d",
            database,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        run(&mut psql).expect_success().stdout.clone()
    }

    /// Stops the server now (SIGINT: PostgreSQL's fast shutdown, which ends every
    /// connection), waiting until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            if let Ok(pid) = i32::try_from(server.id()) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT);
            }
            if server.wait_for(crate::HANG_LIMIT).is_none() {
                server.kill();
            }
        }
    }

    /// Starts the server (again) on the same data and waits until it takes connections.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        let mut postgres = self.tool("postgres");
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=300"])
            .args(["-c", "shared_buffers=64MB", "-c", "unix_socket_permissions=0777"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server log"));
        if let Some((uid, gid)) = self.owner {
            // The log file must be the server's to write after a restart too.
            nix::unistd::chown(&log, Some(uid.into()), Some(gid.into())).expect("chown the log");
        }
        self.server = Some(Guard::spawn(&mut postgres, "postgres"));
        // Ready when the superuser can run a query (bounded: a server that never comes up
        // fails the test with its log).
        let started = Instant::now();
        loop {
            let mut probe = self.tool("psql");
            probe
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-U", "postgres", "-d", "postgres", "-X", "-c", "SELECT 1"]);
            probe.stdout(Stdio::null()).stderr(Stdio::null());
            if probe.status().is_ok_and(|s| s.success()) {
                return;
            }
            if started.elapsed() > crate::HANG_LIMIT {
                panic!(
                    "postgres did not start within {:?}; its log:\n{}",
                    crate::HANG_LIMIT,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for one of the cluster's programs, as the cluster's owner.
    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid).gid(gid);
        }
        // psql and friends would read the caller's ~/.psqlrc and PG* variables otherwise.
        command.env_remove("PGHOST").env_remove("PGPORT").env_remove("PGUSER").env_remove("PGDATABASE");
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where PostgreSQL's programs are: `DEVICETRUST_PG_BIN`, else the newest of Debian's
/// `/usr/lib/postgresql/<version>/bin`, else wherever `initdb` is on `PATH`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DEVICETRUST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").exists()))
        .unwrap_or_else(|| {
            panic!("PostgreSQL's initdb is not installed (Debian package postgresql; scripts/test.sh installs it)")
        })
}

/// As root: the uid and gid of the `postgres` account. Otherwise none (run as ourselves).
fn service_account() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("running as root, PostgreSQL needs the `postgres` account (Debian package postgresql)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}
