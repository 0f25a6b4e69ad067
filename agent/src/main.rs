//! The `devicetrust-agent` binary: parses the command line, refuses to run as root from a
//! place others can change (see `agent::trust`), sets up logging to stderr, runs the command
//! and turns its outcome into a documented exit code (see `--help`).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use agent::cli::Cli;
use agent::exit::Exit;
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
    if let Err(e) = agent::trust::check_own_binary() {
        eprintln!("devicetrust-agent: error: {e}");
        eprintln!(
            "  install the agent where only root can write (on a Mac: {}), with any symbolic link pointing there",
            agent::macos::AGENT_BINARY
        );
        return ExitCode::from(Exit::Usage.code());
    }
    init_logging(cli.verbose);
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    #[cfg(target_os = "macos")]
    if let Some(code) = run_macos_only(&cli, &mut stdin, &mut stdout) {
        return code;
    }
    match agent::commands::execute(&cli, &mut stdin, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let exit = e.exit();
            eprintln!("devicetrust-agent: error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            ExitCode::from(exit)
        }
    }
}

/// The macOS-only subcommands, which speak in the Jamf policy log's terms rather than in
/// agent errors; `None` for every other subcommand.
#[cfg(target_os = "macos")]
fn run_macos_only(
    cli: &Cli,
    stdin: &mut dyn std::io::BufRead,
    out: &mut dyn std::io::Write,
) -> Option<ExitCode> {
    use agent::cli::Command;
    match &cli.command {
        Command::Jamf(jamf) => {
            let token = if jamf.token_stdin {
                match agent::token::read_token(&agent::token::TokenSource::Stdin, stdin, None) {
                    Ok(token) => token,
                    Err(e) => {
                        let _ = writeln!(out, "ERROR: {e}");
                        return Some(ExitCode::from(Exit::Usage.code()));
                    }
                }
            } else {
                None
            };
            Some(agent::macos::run_jamf(&jamf.args, token, cli.config.as_deref(), out))
        }
        Command::Allowlist(command) => Some(agent::macos::run_allowlist(command, cli.config.as_deref(), out)),
        _ => None,
    }
}

fn init_logging(verbose: u8) {
    // -v is about the agent's own decisions; the TLS and HTTP stacks join only at -vv.
    let default = match verbose {
        0 => "info",
        1 => "info,agent=debug,ca_client=debug",
        _ => "debug,agent=trace,ca_client=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEVICETRUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(stderr);
    // On a Mac the same events also go to the unified log (subsystem com.devicetrust.agent).
    #[cfg(target_os = "macos")]
    let registry = registry.with(agent::macos::oslog_layer());
    registry.init();
}
