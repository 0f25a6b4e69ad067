//! The Jamf Pro entry point, `devicetrust-agent jamf <mount> <computer> <user> [<ca url>
//! [<extra>...]]`: what Jamf's positional parameters mean and which commands to run.
//!
//! Jamf runs a policy script as root and passes `$1` the target volume's mount point, `$2`
//! the computer name, `$3` the user name (empty when nobody is logged in) and `$4`..`$11` the
//! policy's parameters. Ours are: `$4` the CA URL, `$5` the enrollment token (an admin should
//! rather put it in the managed configuration, where Jamf's policy log and the script's
//! parameters never show it), and the keywords `uninstall` and `verbose` in any parameter.
//!
//! Everything per-user runs in the console user's own session, `launchctl asuser <uid> sudo
//! -u <user> <agent> ...`, because the keychain, the LaunchAgent and the browser preferences
//! are the user's. The token is piped to `enroll --token-stdin`: it never reaches an argument
//! vector. With nobody at the console the handler defers with exit status 0, so that the
//! policy runs again at the next check-in instead of being marked failed.
//!
//! This module decides and formats; the backend runs the commands.

use std::path::Path;

use crate::token::Secret;

/// `launchctl`, by absolute path.
pub(crate) const LAUNCHCTL: &str = "/bin/launchctl";
/// `sudo`, by absolute path.
pub(crate) const SUDO: &str = "/usr/bin/sudo";

/// Why the arguments are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum JamfError {
    /// Jamf always passes at least three positional arguments.
    #[error(
        "expected at least 3 arguments (mount point, computer name, user name) as Jamf passes them, got {count}"
    )]
    TooFewArguments {
        /// How many were given.
        count: usize,
    },
    /// Jamf passes at most eleven.
    #[error("expected at most 11 arguments as Jamf passes them, got {count}")]
    TooManyArguments {
        /// How many were given.
        count: usize,
    },
    /// Parameter 4 is neither a keyword nor an https URL. Its value is not repeated: it may
    /// be a token pasted into the wrong field, and this message lands in the policy log.
    #[error("parameter 4 must be the CA's https url, \"uninstall\" or \"verbose\"")]
    BadCaUrl,
}

/// `devicetrust-agent jamf <mount> <computer> <user> [<ca url> [<extra>...]]`, as Jamf Pro
/// calls a policy script.
#[derive(Clone, PartialEq, Eq, clap::Args)]
pub(crate) struct JamfCli {
    /// Read the enrollment token from the first line of standard input; it is used when
    /// parameter 5 is empty (the policy script pipes the token so it is never an argument).
    #[arg(long)]
    pub token_stdin: bool,
    /// Jamf's $1 (mount point), $2 (computer name), $3 (user name), then the policy's
    /// parameters $4 (CA URL), $5 (enrollment token; prefer the managed configuration's
    /// enrollment_token) and $6..$11 (uninstall, verbose).
    #[arg(num_args = 3..=11, allow_hyphen_values = true, value_name = "ARG")]
    pub args: Vec<String>,
}

// The arguments may hold the token.
impl std::fmt::Debug for JamfCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JamfCli(<{} arguments redacted>)", self.args.len())
    }
}

/// Jamf's positional arguments.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct JamfArgs {
    /// `$1`: the target volume's mount point (normally `/`).
    pub mount_point: String,
    /// `$2`: the computer name.
    pub computer_name: String,
    /// `$3`: the logged-in user Jamf saw; `None` when empty.
    pub user: Option<String>,
    /// `$4` and after, as given (empty strings for parameters left blank).
    pub parameters: Vec<String>,
}

// Parameters may hold the token: never print them.
impl std::fmt::Debug for JamfArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JamfArgs")
            .field("mount_point", &self.mount_point)
            .field("computer_name", &self.computer_name)
            .field("user", &self.user)
            .field("parameters", &format_args!("<{} redacted>", self.parameters.len()))
            .finish()
    }
}

impl JamfArgs {
    /// Reads the positional arguments after `jamf`.
    pub(crate) fn from_positional(args: &[String]) -> Result<Self, JamfError> {
        if args.len() < 3 {
            return Err(JamfError::TooFewArguments { count: args.len() });
        }
        if args.len() > 11 {
            return Err(JamfError::TooManyArguments { count: args.len() });
        }
        let user = Some(args[2].trim()).filter(|u| !u.is_empty()).map(str::to_owned);
        Ok(Self {
            mount_point: args[0].clone(),
            computer_name: args[1].clone(),
            user,
            parameters: args[3..].to_vec(),
        })
    }
}

/// What the policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Enroll (or run, when there is no token) and install the LaunchAgent.
    Enroll,
    /// Remove everything the agent made for the user.
    Uninstall,
}

/// The parameters, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JamfRequest {
    /// What to do.
    pub action: Action,
    /// `$4`, when it is a URL.
    pub ca_url: Option<String>,
    /// `$5`, when it holds something other than a keyword.
    pub parameter_token: Option<Secret>,
    /// `verbose` was given.
    pub verbose: bool,
    /// Things worth a `WARN:` line (never containing a parameter's value).
    pub warnings: Vec<String>,
}

/// Interprets `$4`..`$11`.
pub(crate) fn interpret(args: &JamfArgs) -> Result<JamfRequest, JamfError> {
    let mut request = JamfRequest {
        action: Action::Enroll,
        ca_url: None,
        parameter_token: None,
        verbose: false,
        warnings: Vec::new(),
    };
    for (index, raw) in args.parameters.iter().enumerate() {
        let number = index + 4;
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        if value.eq_ignore_ascii_case("uninstall") {
            request.action = Action::Uninstall;
        } else if value.eq_ignore_ascii_case("verbose") {
            request.verbose = true;
        } else if number == 4 {
            let url = url::Url::parse(value).map_err(|_| JamfError::BadCaUrl)?;
            if url.scheme() != "https" {
                return Err(JamfError::BadCaUrl);
            }
            request.ca_url = Some(value.to_owned());
        } else if number == 5 {
            request.parameter_token = Some(Secret::new(value.to_owned()));
        } else {
            request.warnings.push(format!("parameter {number} is not understood and was ignored"));
        }
    }
    Ok(request)
}

/// Which token to use: the managed configuration's, else parameter 5's; with a warning when
/// the parameter is used (it shows in Jamf's policy editor) or ignored.
pub(crate) fn choose_token(
    managed: Option<Secret>,
    parameter: Option<Secret>,
) -> (Option<Secret>, Option<String>) {
    match (managed, parameter) {
        (Some(token), Some(_)) => (
            Some(token),
            Some("parameter 5 is ignored: the managed configuration's enrollment_token wins".to_owned()),
        ),
        (Some(token), None) => (Some(token), None),
        (None, Some(token)) => (
            Some(token),
            Some(
                "the enrollment token came from parameter 5; prefer enrollment_token in the managed configuration"
                    .to_owned(),
            ),
        ),
        (None, None) => (None, None),
    }
}

/// Whose session the per-user work runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserChoice {
    /// This user, with a note worth a `WARN:` line, if any.
    Run {
        /// The user name.
        user: String,
        /// Why this user, when it is not simply the console user.
        note: Option<String>,
    },
    /// Nobody to work for now; try at the next check-in.
    Defer {
        /// Why, for the `INFO:` line.
        reason: String,
    },
}

/// Picks the user: the console user; `$3` only when the console cannot be read. Nobody at the
/// console means the login keychain is locked, so there is nothing to do even if Jamf named
/// a user.
pub(crate) fn choose_user(console: Result<Option<String>, String>, jamf_user: Option<&str>) -> UserChoice {
    match console {
        Ok(Some(user)) => {
            let note = jamf_user.filter(|j| *j != user).map(|j| {
                format!("Jamf named user {j}, but {user} is logged in at the console; working for {user}")
            });
            UserChoice::Run { user, note }
        }
        Ok(None) => UserChoice::Defer {
            reason: "nobody is logged in at the console; deferring to the next check-in".to_owned(),
        },
        Err(e) => match jamf_user.and_then(super::console::from_owner_name) {
            Some(user) => UserChoice::Run {
                note: Some(format!("could not read the console user ({e}); using {user} from Jamf")),
                user,
            },
            None => UserChoice::Defer {
                reason: format!("could not read the console user ({e}) and Jamf named nobody; deferring"),
            },
        },
    }
}

/// `launchctl asuser <uid> sudo -u <user> -H -n -- <program> <args...>`: runs `program` as
/// `user` inside that user's login session (their keychain, their preferences, their
/// `gui/<uid>` launchd domain). `-H` sets `HOME` to the user's home; `-n` makes sudo fail
/// rather than prompt.
pub(crate) fn as_user(uid: u32, user: &str, program: &Path, args: &[String]) -> Vec<String> {
    let mut cmd = vec![
        LAUNCHCTL.to_owned(),
        "asuser".to_owned(),
        uid.to_string(),
        SUDO.to_owned(),
        "-u".to_owned(),
        user.to_owned(),
        "-H".to_owned(),
        "-n".to_owned(),
        "--".to_owned(),
        program.to_string_lossy().into_owned(),
    ];
    cmd.extend(args.iter().cloned());
    cmd
}

/// The agent's arguments for one per-user step; `--config` and `--ca-url` are passed on when
/// given. The enrollment token is never among them: `enroll` reads it from standard input.
pub(crate) fn agent_args(step: Step, config: Option<&Path>, ca_url: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = match step {
        Step::Install => vec!["install".into()],
        Step::Enroll => vec!["enroll".into(), "--token-stdin".into()],
        Step::Run => vec!["run".into()],
        Step::Uninstall => vec!["uninstall".into()],
    };
    if let Some(config) = config {
        args.push("--config".into());
        args.push(config.to_string_lossy().into_owned());
    }
    if let (Some(url), Step::Enroll | Step::Run) = (ca_url, step) {
        args.push("--ca-url".into());
        args.push(url.to_owned());
    }
    args
}

/// The per-user steps of the Jamf flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `install`: the LaunchAgent.
    Install,
    /// `enroll --token-stdin`.
    Enroll,
    /// `run`: when there is no token, do what the daily run does (renew, re-apply settings).
    Run,
    /// `uninstall`.
    Uninstall,
}

/// The steps for a request: uninstall alone; else enroll when there is a token (enrolling an
/// enrolled device does nothing) or run when there is none, and then, only once that
/// succeeded, install the LaunchAgent. Installing first would start its login run
/// (`RunAtLoad`) beside the enrollment, and a LaunchAgent for a device that could not enroll
/// only fails daily: the policy's next run is the retry.
pub(crate) fn steps(action: Action, have_token: bool) -> Vec<Step> {
    match action {
        Action::Uninstall => vec![Step::Uninstall],
        Action::Enroll if have_token => vec![Step::Enroll, Step::Install],
        Action::Enroll => vec![Step::Run, Step::Install],
    }
}

/// A policy-log line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// `INFO:`.
    Info,
    /// `WARN:`.
    Warn,
    /// `ERROR:`.
    Error,
}

/// One line for Jamf's policy log.
pub(crate) fn line(level: Level, message: &str) -> String {
    let prefix = match level {
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    format!("{prefix}: {message}")
}

/// Re-labels what a per-user step printed so that every line carries a policy-log prefix:
/// lines already prefixed pass through; `tracing` lines are labelled by their level.
pub(crate) fn relay(output: &str) -> Vec<String> {
    output
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            if ["INFO:", "WARN:", "ERROR:"].iter().any(|p| l.starts_with(p)) {
                l.to_owned()
            } else if l.contains(" ERROR ") || l.starts_with("ERROR ") || l.starts_with("error:") {
                line(Level::Error, l)
            } else if l.contains(" WARN ") || l.starts_with("WARN ") || l.starts_with("warning:") {
                line(Level::Warn, l)
            } else {
                line(Level::Info, l)
            }
        })
        .collect()
}

/// What an agent exit status means, for the policy log (the agent's documented exit codes).
pub(crate) fn exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "done",
        1 => "unexpected error",
        2 => "usage or configuration error",
        3 => "device not managed",
        4 => "enrollment limit reached",
        5 => "CA unavailable, retry later",
        6 => "certificate revoked, uninstalled",
        7 => "not enrolled and no enrollment token",
        8 => "certificate expired, needs re-enrollment",
        _ => "unknown exit status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn cli_table() {
        use clap::Parser as _;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            jamf: JamfCli,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("jamf").chain(args.iter().copied())).map(|c| c.jamf.args)
        };
        assert_eq!(parse(&["/", "mac", ""]).unwrap(), strings(&["/", "mac", ""]));
        assert_eq!(parse(&["/", "mac", "alice", "https://ca", "-tok-"]).unwrap().len(), 5);
        // clap enforces the count: Jamf passes three to eleven positional parameters.
        let kind = |args: &[&str]| parse(args).err().map(|e| e.kind());
        assert_eq!(kind(&["/", "mac"]), Some(clap::error::ErrorKind::TooFewValues));
        assert_eq!(
            kind(&["/", "m", "u", "4", "5", "6", "7", "8", "9", "10", "11", "12"]),
            Some(clap::error::ErrorKind::TooManyValues)
        );
        let cli = JamfCli { token_stdin: false, args: strings(&["/", "mac", "alice", "", "s3cr3t"]) };
        assert!(!format!("{cli:?}").contains("s3cr3t"));
    }

    #[test]
    fn positional_table() {
        let cases: &[(&str, &[&str], Result<(Option<&str>, usize), JamfError>)] = &[
            ("ok/three", &["/", "Alice's MacBook", "alice"], Ok((Some("alice"), 0))),
            ("ok/empty-user", &["/", "mac", ""], Ok((None, 0))),
            (
                "ok/all-eleven",
                &["/", "mac", "alice", "https://ca", "tok", "", "", "", "", "", ""],
                Ok((Some("alice"), 8)),
            ),
            ("fail/two", &["/", "mac"], Err(JamfError::TooFewArguments { count: 2 })),
            (
                "fail/twelve",
                &["/", "m", "u", "4", "5", "6", "7", "8", "9", "10", "11", "12"],
                Err(JamfError::TooManyArguments { count: 12 }),
            ),
        ];
        for (name, args, want) in cases {
            let got = JamfArgs::from_positional(&strings(args)).map(|a| (a.user.clone(), a.parameters.len()));
            let want = want.clone().map(|(u, n)| (u.map(str::to_owned), n));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn interpret_table() {
        struct Want {
            action: Action,
            ca_url: Option<&'static str>,
            token: Option<&'static str>,
            verbose: bool,
            warnings: usize,
        }
        let enroll =
            |ca_url, token| Want { action: Action::Enroll, ca_url, token, verbose: false, warnings: 0 };
        let cases: Vec<(&str, &[&str], Result<Want, JamfError>)> = vec![
            ("ok/nothing", &[], Ok(enroll(None, None))),
            (
                "ok/url-and-token",
                &["https://ca.example.com", "t0ken"],
                Ok(enroll(Some("https://ca.example.com"), Some("t0ken"))),
            ),
            ("ok/blank-url-then-token", &["", "t0ken"], Ok(enroll(None, Some("t0ken")))),
            (
                "ok/uninstall-in-4",
                &["uninstall"],
                Ok(Want {
                    action: Action::Uninstall,
                    ca_url: None,
                    token: None,
                    verbose: false,
                    warnings: 0,
                }),
            ),
            (
                "ok/uninstall-anywhere-case-insensitive",
                &["https://ca.example.com", "", "", "UNINSTALL"],
                Ok(Want {
                    action: Action::Uninstall,
                    ca_url: Some("https://ca.example.com"),
                    token: None,
                    verbose: false,
                    warnings: 0,
                }),
            ),
            (
                "ok/verbose-and-unknown",
                &["https://ca.example.com", "", "verbose", "what"],
                Ok(Want {
                    action: Action::Enroll,
                    ca_url: Some("https://ca.example.com"),
                    token: None,
                    verbose: true,
                    warnings: 1,
                }),
            ),
            ("fail/http-url", &["http://ca.example.com"], Err(JamfError::BadCaUrl)),
            ("fail/token-in-4", &["s3cr3t-token"], Err(JamfError::BadCaUrl)),
        ];
        for (name, params, want) in cases {
            let mut all = strings(&["/", "mac", "alice"]);
            all.extend(strings(params));
            let args = JamfArgs::from_positional(&all).unwrap();
            match (interpret(&args), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got.action, want.action, "{name}");
                    assert_eq!(got.ca_url.as_deref(), want.ca_url, "{name}");
                    assert_eq!(got.parameter_token.as_ref().map(Secret::expose), want.token, "{name}");
                    assert_eq!(got.verbose, want.verbose, "{name}");
                    assert_eq!(got.warnings.len(), want.warnings, "{name}");
                }
                (Err(got), Err(want)) => assert_eq!(got, want, "{name}"),
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn secrets_never_printed() {
        let args =
            JamfArgs::from_positional(&strings(&["/", "mac", "alice", "s3cr3t-in-4", "s3cr3t-5"])).unwrap();
        assert!(!format!("{args:?}").contains("s3cr3t"));
        let err = interpret(&args).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let args =
            JamfArgs::from_positional(&strings(&["/", "mac", "alice", "", "s3cr3t-5", "s3cr3t-6"])).unwrap();
        let request = interpret(&args).unwrap();
        assert!(!format!("{request:?}").contains("s3cr3t"));
        assert!(request.warnings.iter().all(|w| !w.contains("s3cr3t")));
    }

    #[test]
    fn token_choice_table() {
        let s = |v: &str| Some(Secret::new(v.to_owned()));
        let cases: &[(&str, Option<Secret>, Option<Secret>, Option<&str>, bool)] = &[
            ("ok/managed-only", s("m"), None, Some("m"), false),
            ("ok/managed-wins", s("m"), s("p"), Some("m"), true),
            ("ok/parameter-with-advice", None, s("p"), Some("p"), true),
            ("ok/none", None, None, None, false),
        ];
        for (name, managed, parameter, want, warns) in cases {
            let (token, warning) = choose_token(managed.clone(), parameter.clone());
            assert_eq!(token.as_ref().map(Secret::expose), *want, "{name}");
            assert_eq!(warning.is_some(), *warns, "{name}");
        }
    }

    #[test]
    fn user_choice_table() {
        let run = |u: &str, noted: bool| (Some(u.to_owned()), noted);
        let cases: &[(&str, Result<Option<&str>, &str>, Option<&str>, (Option<String>, bool))] = &[
            ("ok/console-user", Ok(Some("alice")), Some("alice"), run("alice", false)),
            ("ok/console-wins-over-jamf", Ok(Some("alice")), Some("bob"), run("alice", true)),
            ("ok/console-user-no-jamf-user", Ok(Some("alice")), None, run("alice", false)),
            ("ok/nobody-defers-even-if-jamf-named-one", Ok(None), Some("alice"), (None, false)),
            ("ok/console-unreadable-uses-jamf", Err("stat failed"), Some("alice"), run("alice", true)),
            ("fail/console-unreadable-jamf-root", Err("stat failed"), Some("root"), (None, false)),
            ("fail/console-unreadable-no-jamf", Err("stat failed"), None, (None, false)),
        ];
        for (name, console, jamf, want) in cases {
            let console = console.map(|c| c.map(str::to_owned)).map_err(str::to_owned);
            let got = match choose_user(console, *jamf) {
                UserChoice::Run { user, note } => (Some(user), note.is_some()),
                UserChoice::Defer { .. } => (None, false),
            };
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn command_lines() {
        let agent = Path::new(crate::trust::AGENT_BINARY);
        let enroll = as_user(
            501,
            "alice",
            agent,
            &agent_args(
                Step::Enroll,
                Some(Path::new("/etc/devicetrust/agent.toml")),
                Some("https://ca.example.com"),
            ),
        );
        assert_eq!(
            enroll,
            strings(&[
                "/bin/launchctl",
                "asuser",
                "501",
                "/usr/bin/sudo",
                "-u",
                "alice",
                "-H",
                "-n",
                "--",
                "/Library/DeviceTrust/bin/devicetrust-agent",
                "enroll",
                "--token-stdin",
                "--config",
                "/etc/devicetrust/agent.toml",
                "--ca-url",
                "https://ca.example.com",
            ])
        );
        assert_eq!(agent_args(Step::Install, None, Some("https://ca")), strings(&["install"]));
        assert_eq!(agent_args(Step::Uninstall, None, None), strings(&["uninstall"]));
        assert_eq!(
            agent_args(Step::Run, None, Some("https://ca")),
            strings(&["run", "--ca-url", "https://ca"])
        );
    }

    #[test]
    fn token_never_in_the_command_line() {
        let args =
            JamfArgs::from_positional(&strings(&["/", "mac", "alice", "https://ca.example.com", "s3cr3t"]))
                .unwrap();
        let request = interpret(&args).unwrap();
        let (token, _) = choose_token(None, request.parameter_token.clone());
        assert!(token.is_some());
        for step in steps(request.action, token.is_some()) {
            let cmd =
                as_user(501, "alice", Path::new("/a"), &agent_args(step, None, request.ca_url.as_deref()));
            assert!(cmd.iter().all(|a| !a.contains("s3cr3t")), "{step:?}: {cmd:?}");
        }
    }

    #[test]
    fn steps_table() {
        assert_eq!(steps(Action::Uninstall, true), [Step::Uninstall]);
        assert_eq!(steps(Action::Enroll, true), [Step::Enroll, Step::Install]);
        assert_eq!(steps(Action::Enroll, false), [Step::Run, Step::Install]);
    }

    #[test]
    fn log_lines() {
        assert_eq!(line(Level::Info, "enrolled"), "INFO: enrolled");
        assert_eq!(line(Level::Warn, "w"), "WARN: w");
        assert_eq!(line(Level::Error, "e"), "ERROR: e");
        let relayed = relay(
            "2026-01-01T00:00:00Z  INFO devicetrust_agent: enrolled\n\n2026-01-01T00:00:01Z  WARN x: slow\nERROR: already\n2026-01-01T00:00:02Z ERROR y: boom\nplain\n",
        );
        assert_eq!(
            relayed,
            strings(&[
                "INFO: 2026-01-01T00:00:00Z  INFO devicetrust_agent: enrolled",
                "WARN: 2026-01-01T00:00:01Z  WARN x: slow",
                "ERROR: already",
                "ERROR: 2026-01-01T00:00:02Z ERROR y: boom",
                "INFO: plain",
            ])
        );
        assert_eq!(exit_meaning(3), "device not managed");
        assert_eq!(exit_meaning(4), "enrollment limit reached");
        assert_eq!(exit_meaning(42), "unknown exit status");
    }
}
