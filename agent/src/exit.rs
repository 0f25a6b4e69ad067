//! The exit codes, one per outcome a script or a Jamf policy may branch on.

use std::fmt;

/// How the agent ended. The numbers are a contract: documented in `--help` and
/// `docs/agent.md`, and never reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Done, or nothing to do.
    Success = 0,
    /// An unexpected error.
    Failure = 1,
    /// A usage or configuration error (including an enrollment token the CA refuses).
    Usage = 2,
    /// The device is not managed (the local MDM check or the CA says so).
    NotManaged = 3,
    /// The CA's limit of unbound certificates for this device is reached.
    LimitReached = 4,
    /// The CA is unavailable or answered wrongly; retry later (the identity is untouched).
    CaUnavailable = 5,
    /// The CA revoked the certificate; everything was uninstalled.
    Revoked = 6,
    /// Not enrolled, and no enrollment token was given.
    NotEnrolled = 7,
    /// The certificate expired (or the CA no longer accepts it): re-enrollment is needed.
    Expired = 8,
}

impl Exit {
    /// Every code, in order.
    pub const ALL: [Self; 9] = [
        Self::Success,
        Self::Failure,
        Self::Usage,
        Self::NotManaged,
        Self::LimitReached,
        Self::CaUnavailable,
        Self::Revoked,
        Self::NotEnrolled,
        Self::Expired,
    ];

    /// The process exit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// One line saying what it means.
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::Success => "done, or nothing to do",
            Self::Failure => "unexpected error",
            Self::Usage => "usage or configuration error",
            Self::NotManaged => "device not managed",
            Self::LimitReached => "enrollment limit reached",
            Self::CaUnavailable => "CA unavailable, retry later",
            Self::Revoked => "certificate revoked, uninstalled",
            Self::NotEnrolled => "not enrolled and no enrollment token",
            Self::Expired => "certificate expired, needs re-enrollment",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.meaning())
    }
}

/// The exit-code table shown after `--help`; a test keeps it equal to [`Exit::meaning`].
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done, or nothing to do
  1  unexpected error
  2  usage or configuration error
  3  device not managed
  4  enrollment limit reached
  5  CA unavailable, retry later
  6  certificate revoked, uninstalled
  7  not enrolled and no enrollment token
  8  certificate expired, needs re-enrollment";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_table_matches_the_enum() {
        let lines: Vec<String> =
            Exit::ALL.iter().map(|e| format!("  {}  {}", e.code(), e.meaning())).collect();
        let expected = format!("Exit codes:\n{}", lines.join("\n"));
        assert_eq!(EXIT_CODES_HELP, expected);
        for (i, exit) in Exit::ALL.iter().enumerate() {
            assert_eq!(usize::from(exit.code()), i);
        }
    }
}
