//! The `devicetrust-agent` binary: parses the command line, refuses to run as root from a
//! place others can change (see `agent::check_own_binary`), sets up logging to stderr (and
//! on a Mac to the unified log), and runs the command, whose outcome is a documented exit
//! code (see `--help`).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use agent::{Cli, Exit};
use clap::Parser as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage.code()));
        }
    };
    // As root, nothing happens unless this binary is one only root could have put there.
    if let Err(e) = agent::check_own_binary() {
        eprintln!("devicetrust-agent: error: {e}");
        eprintln!(
            "  install the agent where only root can write (on a Mac: {}), with any symbolic link pointing there",
            agent::AGENT_BINARY
        );
        return Exit::Usage.into();
    }
    init_logging(cli.verbosity());
    agent::run(&cli, &mut std::io::stdin().lock(), &mut std::io::stdout().lock())
}

/// The log filter without `DEVICETRUST_LOG`. A person at a terminal reads each command's
/// result on stdout and its error once; the log adds warnings only, unless asked with -v. A
/// timer or launchd writes stderr to a file, where the info lines are the record.
fn default_filter(verbose: u8, stderr_is_terminal: bool) -> &'static str {
    // -v is about the agent's own decisions; the TLS and HTTP stacks join only at -vv.
    match (verbose, stderr_is_terminal) {
        (0, true) => "warn",
        (0, false) => "info",
        (1, _) => "info,agent=debug,ca_client=debug",
        _ => "debug,agent=trace,ca_client=trace",
    }
}

fn init_logging(verbose: u8) {
    let default = default_filter(verbose, std::io::stderr().is_terminal());
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEVICETRUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal who has not asked for none (no-color.org).
        .with_ansi(
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(stderr);
    // On a Mac the same events also go to the unified log (subsystem com.devicetrust.agent).
    #[cfg(target_os = "macos")]
    let registry = registry.with(agent::oslog_layer());
    registry.init();
}

#[cfg(test)]
mod tests {
    use super::default_filter;

    #[test]
    fn quiet_at_a_terminal_unless_asked() {
        assert_eq!(default_filter(0, true), "warn", "ok/terminal");
        assert_eq!(default_filter(0, false), "info", "ok/log-file");
        assert!(default_filter(1, true).contains("agent=debug"), "ok/verbose");
        assert!(default_filter(2, false).contains("trace"), "ok/very-verbose");
    }
}
