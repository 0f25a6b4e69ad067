//! Running the platform's helper tools (`certutil`, `pk12util`, `openssl`, `systemctl` on
//! Linux; `profiles`, `ioreg`, `codesign`, `security`, `launchctl`, `osascript` on macOS)
//! with a deadline, captured output, and secrets only ever on standard input.
//!
//! A tool that waits for a prompt or a D-Bus reply would hang an unattended run forever, so
//! every call has a deadline after which the child is killed and reaped. The wait blocks on
//! the child's exit (no polling), because `enroll` runs several tools and each poll interval
//! would add to its latency. The enrollment token's environment variable is removed from
//! every child: no tool needs it.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use wait_timeout::ChildExt as _;

/// Default deadline for one tool call.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a tool could not be run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExecError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program} was not found; is it installed?")]
    NotFound {
        /// The program as invoked.
        program: PathBuf,
    },
    /// The program could not be started or talked to.
    #[error("could not run {program}: {reason}")]
    Spawn {
        /// The program as invoked.
        program: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The program did not finish in time and was stopped.
    #[error("{program} did not finish within {seconds} s and was stopped")]
    TimedOut {
        /// The program as invoked.
        program: PathBuf,
        /// The deadline that passed.
        seconds: u64,
    },
}

/// What a finished tool printed and how it exited.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the tool exited with status 0.
    pub(crate) fn success(&self) -> bool {
        self.status.success()
    }

    #[cfg_attr(target_os = "macos", allow(dead_code, reason = "only the Linux backend uses it"))]
    /// The exit code, or -1 when a signal ended the tool.
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// The exit status as text, for error messages.
    pub(crate) fn status_text(&self) -> String {
        self.status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit status {c}"))
    }

    #[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "only the macOS backend uses it"))]
    /// The last few non-empty lines of standard error, for error messages.
    pub(crate) fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    #[cfg_attr(target_os = "macos", allow(dead_code, reason = "only the Linux backend uses it"))]
    /// Stderr and stdout joined and trimmed, for error messages (tools differ in where they
    /// complain).
    pub(crate) fn diagnostics(&self) -> String {
        let mut text = self.stderr.trim().to_owned();
        let out = self.stdout.trim();
        if !out.is_empty() {
            if !text.is_empty() {
                text.push_str("; ");
            }
            text.push_str(out);
        }
        text
    }
}

/// Runs `program args...`, feeding `stdin` (or nothing: the tool sees end of file, so it can
/// never sit at a prompt) and waiting at most `timeout`.
pub(crate) fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, ExecError> {
    let spawn_error = |e: io::Error| ExecError::Spawn { program: program.to_owned(), reason: e.to_string() };
    let mut child = command(program, args, stdin).spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ExecError::NotFound { program: program.to_owned() }
        } else {
            spawn_error(e)
        }
    })?;

    // Readers run on their own threads so that a chatty tool cannot fill a pipe and stall
    // before it reads its input or exits.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early (bad input) closes its end; its exit status explains more
        // than the broken pipe would, so the write error is not the error we report.
        let _ = pipe.write_all(input);
        drop(pipe);
    }

    let status = match child.wait_timeout(timeout).map_err(spawn_error)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExecError::TimedOut { program: program.to_owned(), seconds: timeout.as_secs() });
        }
    };
    let collect = |handle: Option<thread::JoinHandle<Vec<u8>>>| {
        handle
            .and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Output { status, stdout: collect(stdout), stderr: collect(stderr) })
}

fn command<S: AsRef<OsStr>>(program: &Path, args: &[S], stdin: Option<&[u8]>) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_remove(crate::token::TOKEN_ENV)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn drain<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_captures_output_and_feeds_stdin() {
        let out = run(
            Path::new("/bin/sh"),
            &["-c", "cat; echo err >&2; exit 3"],
            Some(b"secret\n"),
            DEFAULT_TIMEOUT,
        )
        .expect("run");
        assert_eq!(out.stdout, "secret\n");
        assert_eq!(out.stderr_tail(), "err");
        assert_eq!(out.diagnostics(), "err; secret");
        assert!(!out.success());
        assert_eq!(out.code(), 3);
        assert_eq!(out.status_text(), "exit status 3");
    }

    #[test]
    fn ok_children_never_see_the_enrollment_token() {
        let command = command(Path::new("/bin/true"), &["x"], None);
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_owned())
            .collect();
        assert_eq!(removed, vec![std::ffi::OsString::from(crate::token::TOKEN_ENV)]);
    }

    #[test]
    fn fail_timeout_kills_child() {
        let err = run(Path::new("/bin/sleep"), &["30"], None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn fail_missing_program() {
        let err = run::<&str>(Path::new("/nonexistent/tool"), &[], None, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err}");
    }
}
