//! Running the Linux helper tools (`certutil`, `pk12util`, `openssl`, `systemctl`) with a
//! deadline, captured output, and secrets only ever on stdin.
//!
//! A tool that waits for a password prompt or a D-Bus reply would otherwise hang the daily
//! run forever, so every call has a timeout after which the child is killed and reaped.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline for one tool invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a tool could not be run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The program is not installed (or not on `PATH`).
    #[error("{program} was not found; is it installed?")]
    NotFound {
        /// The program as invoked.
        program: PathBuf,
    },
    /// The program could not be started or talked to.
    #[error("could not run {program}: {reason}")]
    Io {
        /// The program as invoked.
        program: PathBuf,
        /// The operating system's explanation.
        reason: String,
    },
    /// The program did not finish in time and was killed.
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

    /// The exit code, or -1 when a signal ended the tool.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Stderr and stdout joined and trimmed, for error messages (tools differ in where they
    /// complain).
    pub fn diagnostics(&self) -> String {
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
pub fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, ExecError> {
    let io_error = |e: io::Error| ExecError::Io { program: program.to_owned(), reason: e.to_string() };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ExecError::NotFound { program: program.to_owned() }
            } else {
                io_error(e)
            }
        })?;

    // Readers run on their own threads so a chatty tool cannot fill a pipe and stall while we
    // wait for it to exit.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early (bad input) closes its end; its exit status explains more
        // than the broken pipe would, so the write error is not the error we report.
        let _ = pipe.write_all(input);
        drop(pipe);
    }

    let status = match wait_with_deadline(&mut child, timeout).map_err(io_error)? {
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

fn drain<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    })
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_captures_output_and_stdin() {
        let out = run(Path::new("sh"), &["-c", "cat; echo err >&2; exit 3"], Some(b"hello"), DEFAULT_TIMEOUT)
            .unwrap();
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr.trim(), "err");
        assert_eq!(out.code(), 3);
        assert_eq!(out.diagnostics(), "err; hello");
    }

    #[test]
    fn fail_missing_program() {
        let err = run(Path::new("/nonexistent/devicetrust-tool"), &["x"], None, DEFAULT_TIMEOUT).unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn fail_timeout_kills_child() {
        let started = Instant::now();
        let err = run(Path::new("sleep"), &["30"], None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
