//! `devicetrust-agent jamf ...` (macOS only): the Jamf Pro policy entry point, run as root.
//!
//! It speaks in the policy log's terms (`INFO:`/`WARN:`/`ERROR:` lines, see
//! `crate::platform::macos::jamf`) rather than in agent errors: it finds the console user and
//! runs the per-user steps as that user, relaying their output.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::platform::macos::facts;
use crate::platform::macos::jamf::{self, JamfCli, Level, Step, UserChoice};
use crate::platform::macos::mac_settings;
use crate::token::{TokenSource, read_token};

use super::{Exit, error_chain};
use crate::util::exec;

fn say(out: &mut dyn Write, level: Level, message: &str) {
    // The policy log is the only place this is read; a closed stdout leaves nothing to tell.
    let _ = writeln!(out, "{}", jamf::line(level, message));
    let _ = out.flush();
}

pub(super) fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// How long one per-user step may take: enrollment talks to the CA, which asks Jamf Pro.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// `devicetrust-agent jamf ...`: the Jamf Pro policy entry point. Prints `INFO:`/`WARN:`/
/// `ERROR:` lines for the policy log and returns the agent's exit code (0 when deferred).
/// `config_path` is `--config`, passed on to the per-user steps.
pub(super) fn run(
    cli: &JamfCli,
    config_path: Option<&Path>,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
) -> ExitCode {
    let stdin_token = if cli.token_stdin {
        match read_token(&TokenSource::Stdin, stdin, None) {
            Ok(token) => token,
            Err(e) => {
                say(out, Level::Error, &error_chain(&e));
                return Exit::Usage.into();
            }
        }
    } else {
        None
    };
    let args = &cli.args;
    say(out, Level::Info, &format!("devicetrust-agent {} (jamf policy)", env!("CARGO_PKG_VERSION")));
    if !nix::unistd::Uid::effective().is_root() {
        say(out, Level::Error, "the jamf entry point runs as root, as Jamf Pro runs policies");
        return exit(2);
    }
    let parsed = jamf::JamfArgs::from_positional(args).and_then(|a| jamf::interpret(&a).map(|r| (a, r)));
    let (jamf_args, request) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            say(out, Level::Error, &error_chain(&e));
            return exit(2);
        }
    };
    for warning in &request.warnings {
        say(out, Level::Warn, warning);
    }
    let console = facts::console_user_and_uid().map(|c| c.map(|(name, _)| name)).map_err(|e| error_chain(&e));
    let user = match jamf::choose_user(console, jamf_args.user.as_deref()) {
        UserChoice::Defer { reason } => {
            say(out, Level::Info, &reason);
            return ExitCode::SUCCESS;
        }
        UserChoice::Run { user, note } => {
            if let Some(note) = note {
                say(out, Level::Warn, &note);
            }
            user
        }
    };
    let uid = match facts::user_record(&user) {
        Ok((uid, _home)) => uid,
        Err(e) => {
            say(out, Level::Error, &error_chain(&e));
            return exit(1);
        }
    };
    let managed_token = match mac_settings() {
        Ok(settings) => settings.enrollment_token,
        Err(e) => {
            say(out, Level::Error, &format!("the managed configuration is unusable: {e}"));
            return exit(2);
        }
    };
    // A piped token stands in for an empty parameter 5 (see `jamf/devicetrust-policy.sh`).
    let parameter_token = request.parameter_token.clone().or(stdin_token);
    let (token, warning) = jamf::choose_token(managed_token, parameter_token);
    if let Some(warning) = warning {
        say(out, Level::Warn, &warning);
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            say(out, Level::Error, &format!("could not find the agent's own path: {e}"));
            return exit(1);
        }
    };
    for step in jamf::steps(request.action, token.is_some()) {
        let argv = jamf::as_user(
            uid,
            &user,
            &program,
            &jamf::agent_args(step, config_path, request.ca_url.as_deref()),
        );
        if request.verbose {
            say(out, Level::Info, &format!("running: {}", argv.join(" ")));
        }
        let stdin = match (step, &token) {
            (Step::Enroll, Some(token)) => Some(format!("{}\n", token.expose()).into_bytes()),
            _ => None,
        };
        let (program_arg, rest) = match argv.split_first() {
            Some(split) => split,
            None => return exit(1),
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let result = exec::run(Path::new(program_arg), &rest, stdin.as_deref(), STEP_TIMEOUT);
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                say(out, Level::Error, &error_chain(&e));
                return exit(1);
            }
        };
        for line in jamf::relay(&output.stdout).iter().chain(jamf::relay(&output.stderr).iter()) {
            let _ = writeln!(out, "{line}");
        }
        let code = output.status.code().unwrap_or(1);
        if code != 0 {
            say(
                out,
                Level::Error,
                &format!("{step:?} for {user} ended with exit status {code}: {}", jamf::exit_meaning(code)),
            );
            return exit(code);
        }
        say(out, Level::Info, &format!("{step:?} for {user}: done"));
    }
    ExitCode::SUCCESS
}
