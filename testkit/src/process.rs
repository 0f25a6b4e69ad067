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
#[cfg(any(target_os = "linux", target_os = "android"))]
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
    /// The first line the child printed on its piped stdout (a ready line), without its
    /// line end, waiting at most [`HANG_LIMIT`]; kills the child and panics with its stderr
    /// file if none came. The rest of stdout is read and dropped, so that a later write never
    /// meets a closed pipe.
    pub fn ready_line(&mut self, stderr: &std::path::Path) -> String {
        let (line, _rest) = self.ready_line_and_rest(stderr);
        line.trim_end().to_owned()
    }

    /// Like [`Guard::ready_line`], but the line is as printed (with its `\n`, so a caller can
    /// tell a whole line from one cut off by an exit), and the rest of stdout is collected:
    /// joining the handle gives it once the child and its group are gone.
    pub fn ready_line_and_rest(&mut self, stderr: &std::path::Path) -> (String, JoinHandle<String>) {
        let stdout = self.child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let rest = std::thread::spawn(move || {
            use std::io::{BufRead as _, Read as _};
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|n| (n, line)));
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            rest
        });
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(Ok((n, line))) if n > 0 => (line, rest),
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

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
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
            if self.exited(pid) {
                let _ = killpg(pid, Signal::SIGKILL);
                let status =
                    self.child.wait().unwrap_or_else(|e| panic!("could not reap {}: {e}", self.what));
                self.reaped = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the leader has exited, leaving it unreaped. On Linux, `waitid` with WNOWAIT
    /// leaves an exited child a zombie, so that its group id is still ours to signal:
    /// whatever it left running in its group goes with it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn exited(&mut self, pid: Pid) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) => true,
            Err(e) => panic!("could not wait for {}: {e}", self.what),
        }
    }

    /// Whether the leader has exited. Without `waitid` (macOS), this reaps it; the group is
    /// then signalled by a group id that could, in theory, have been reused.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn exited(&mut self, _pid: Pid) -> bool {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = Some(status);
                true
            }
            Ok(None) => false,
            Err(e) => panic!("could not wait for {}: {e}", self.what),
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
    /// The command line: the program and its arguments (never a secret: secrets go on
    /// standard input or in files), without the environment.
    pub command: String,
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

    /// Panics, showing the command, how it ended and everything it printed, unless it
    /// exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code}\n{self}");
        self
    }

    /// [`Finished::expect_code`] 0.
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        self.expect_code(0)
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
        write!(
            f,
            "{} {ended}\n--- command\n{}\n--- stdout\n{}\n--- stderr\n{}\n---",
            self.what, self.command, self.stdout, self.stderr
        )
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

/// The program and its arguments, shell-quoted where needed, for messages.
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| {
            let part = part.to_string_lossy();
            if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
            {
                part.into_owned()
            } else {
                format!("'{}'", part.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to its end with no input, waiting at most [`HANG_LIMIT`]; named by its own
/// command line.
pub fn run(command: &mut Command) -> Finished {
    let what = command.get_program().to_string_lossy().into_owned();
    run_bounded(command, None, HANG_LIMIT, &what)
}

/// Runs `command` to its end, feeding it `stdin` (then closing it), and kills its process
/// group if it is still running after `limit`.
pub fn run_bounded(command: &mut Command, stdin: Option<&[u8]>, limit: Duration, what: &str) -> Finished {
    let line = command_line(command);
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
        command: line,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
