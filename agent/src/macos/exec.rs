//! Running the macOS tools the backend reads or drives (`profiles`, `ioreg`, `codesign`,
//! `security`, `launchctl`, `osascript`, `scutil`, `sw_vers`) with a deadline, captured
//! output, and anything secret on standard input only.
//!
//! Tools are called by absolute path so that a `PATH` set by whoever started the agent cannot
//! substitute them. A tool that waits for a prompt would hang an unattended run forever, so
//! every call has a deadline after which the child is killed and reaped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The deadline for one tool call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a tool could not be run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program could not be started or talked to.
    #[error("could not run {program}: {reason}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The program did not finish in time and was stopped.
    #[error("{program} did not finish within {seconds} s and was stopped")]
    TimedOut {
        /// The program.
        program: PathBuf,
        /// The deadline.
        seconds: u64,
    },
}

/// What a finished tool printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the tool exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit status as text, for error messages.
    pub fn status_text(&self) -> String {
        self.status.code().map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit status {c}"))
    }

    /// The last few lines of standard error, for error messages.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// Runs `program` with `args`, feeding `stdin` (if any) and closing it, within `timeout`.
///
/// `stdin` is where secrets go: it never appears in the process list.
pub fn run(
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, ExecError> {
    let spawn_err =
        |e: std::io::Error| ExecError::Spawn { program: program.to_path_buf(), reason: e.to_string() };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;

    // Readers first, so that a child filling its output pipe before reading its input
    // cannot deadlock against us.
    let out_reader = child.stdout.take().map(spawn_reader);
    let err_reader = child.stderr.take().map(spawn_reader);
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading its input closes the pipe; that is its business,
        // and its exit status says what happened.
        let _ = pipe.write_all(bytes);
    }

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(spawn_err)? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecError::TimedOut {
                    program: program.to_path_buf(),
                    seconds: timeout.as_secs(),
                });
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .and_then(|r| r.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Output { status, stdout: collect(out_reader), stderr: collect(err_reader) })
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_feeds_stdin() {
        let out = run(
            Path::new("/bin/sh"),
            &["-c", "cat; echo err >&2; exit 3"],
            Some(b"secret\n"),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(out.stdout, "secret\n");
        assert_eq!(out.stderr_tail(), "err");
        assert!(!out.success());
        assert_eq!(out.status_text(), "exit status 3");
    }

    #[test]
    fn times_out() {
        let err = run(Path::new("/bin/sleep"), &["5"], None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn missing_program() {
        let err = run(Path::new("/nonexistent/tool"), &[], None, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
    }
}
