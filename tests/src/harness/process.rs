//! Child processes that cannot outlive the test that started them.
//!
//! Every child starts in its own process group, so that what it starts in turn (Chromium's
//! helpers, the agent's `certutil`) is killed with it. [`Guard`] kills the group and reaps
//! the child in `Drop`, whatever happened in the test; when the leader exits on its own,
//! whatever it left running in its group is killed too. Waits are bounded, so that a hung
//! program fails the test with its output instead of hanging the suite; the bounds are
//! generous and never assert how fast anything is.

use std::fmt;
use std::io::Write as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// How long a command that should finish promptly may take before it counts as hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(120);

/// A running child, leader of its own process group.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    what: String,
    reaped: Option<ExitStatus>,
}

impl Guard {
    /// The first line the child printed on its piped stdout (a ready line), waiting at most
    /// [`HANG_LIMIT`]; kills the child and panics with its stderr file if none came. The
    /// rest of stdout is read and dropped, so that a later write never meets a closed pipe.
    pub fn ready_line(&mut self, stderr: &std::path::Path) -> String {
        let stdout = self.child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(Some(Ok(line))) => line,
            other => {
                self.kill();
                panic!(
                    "{} printed no ready line ({other:?}); its stderr:\n{}",
                    self.what,
                    std::fs::read_to_string(stderr).unwrap_or_default()
                );
            }
        }
    }

    /// Starts `command` in a new process group; panics with `what` when it cannot start.
    pub fn spawn(command: &mut Command, what: impl Into<String>) -> Self {
        let what = what.into();
        command.process_group(0);
        let child = command.spawn().unwrap_or_else(|e| panic!("could not start {what}: {e}"));
        Self { child, what, reaped: None }
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// What this process is, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Whether the child is still running (not yet reaped).
    pub fn is_running(&mut self) -> bool {
        self.wait_for(Duration::ZERO).is_none()
    }

    /// Signals the whole group. Only while the leader is unreaped: its pid, and so the group
    /// id, cannot be reused before that, so the signal cannot reach a stranger.
    fn signal_group(&self, signal: Signal) {
        if self.reaped.is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// Waits until the child exits or `limit` passes; `None` when it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.reaped {
            return Some(status);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let deadline = Instant::now() + limit;
        loop {
            // WNOWAIT leaves an exited child a zombie, so that its group id is still ours to
            // signal: whatever it left running in its group goes with it.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {
                    let _ = killpg(pid, Signal::SIGKILL);
                    let status =
                        self.child.wait().unwrap_or_else(|e| panic!("could not reap {}: {e}", self.what));
                    self.reaped = Some(status);
                    return Some(status);
                }
                Err(e) => panic!("could not wait for {}: {e}", self.what),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the group and reaps the child.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal_group(Signal::SIGKILL);
        if let Some(status) = self.reaped {
            return status;
        }
        let status = self.child.wait().unwrap_or_else(|e| panic!("could not reap {}: {e}", self.what));
        self.reaped = Some(status);
        status
    }

    /// SIGTERM to the group, then SIGKILL when it has not exited after `grace`.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.signal_group(Signal::SIGTERM);
        match self.wait_for(grace) {
            Some(status) => status,
            None => self.kill(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if self.reaped.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// A program run to its end (or killed when it hung), with its output.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What ran, for messages.
    pub what: String,
    /// How it ended; `None` when it was still running at the limit and was killed.
    pub status: Option<ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Finished {
    /// The exit code; `None` when it was killed by a signal or hung.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The signal that ended it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }

    /// Panics, showing everything it printed, unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code}\n{self}");
        self
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ended = match (self.status, self.code(), self.signal()) {
            (None, _, _) => "hung and was killed".to_owned(),
            (Some(_), Some(code), _) => format!("exited with {code}"),
            (Some(_), None, Some(signal)) => format!("was killed by signal {signal}"),
            (Some(status), None, None) => format!("ended with {status}"),
        };
        write!(f, "{} {ended}\n--- stdout\n{}\n--- stderr\n{}\n---", self.what, self.stdout, self.stderr)
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `command` to its end, feeding it `stdin` (then closing it), and kills its process
/// group if it is still running after `limit`.
pub fn run_bounded(command: &mut Command, stdin: Option<&[u8]>, limit: Duration, what: &str) -> Finished {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = Guard::spawn(command, what);
    let out = drain(guard.child_mut().stdout.take());
    let err = drain(guard.child_mut().stderr.take());
    if let (Some(bytes), Some(mut pipe)) = (stdin, guard.child_mut().stdin.take()) {
        // A program that exits without reading its input closes the pipe: not our failure.
        let _ = pipe.write_all(bytes);
    }
    let status = guard.wait_for(limit);
    if status.is_none() {
        guard.kill();
    }
    Finished {
        what: what.to_owned(),
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
