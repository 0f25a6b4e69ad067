//! The command line (clap derive): subcommands, flags and the help text.
//!
//! No flag carries a secret: the enrollment token is read from standard input, a file or
//! the environment (see [`crate::token`]), so it never appears in the process list.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;
use crate::token::TokenSource;

/// Keeps this device's mutual-TLS client certificate enrolled, renewed and presented by
/// browsers.
#[derive(Debug, Parser)]
#[command(name = "devicetrust-agent", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Configuration file (default: /etc/devicetrust/agent.toml, then
    /// ~/.config/devicetrust/agent.toml; as root only the first, and a file only root can
    /// change).
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// The CA's base URL (https), overriding `ca_url` from the configuration.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) ca_url: Option<String>,

    /// Log more (-v: debug, -vv: trace); DEVICETRUST_LOG takes a tracing filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Enroll this device (needs an enrollment token); does nothing when already enrolled.
    #[command(after_help = EXIT_CODES_HELP)]
    Enroll(TokenArgs),
    /// What the timer runs: check revocation, renew when due, enroll when a token is given.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(TokenArgs),
    /// Renew the certificate when due, or now with --force.
    #[command(after_help = EXIT_CODES_HELP)]
    Renew {
        /// Renew now, ignoring the due time and any backoff after failures.
        #[arg(long)]
        force: bool,
    },
    /// Show the certificate, renewal, CA, browser and store state (no network).
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// Print JSON.
        #[arg(long, conflicts_with = "jamf_ea")]
        json: bool,
        /// Print a Jamf Pro extension attribute: <result>STATE, expires YYYY-MM-DD</result>.
        #[arg(long)]
        jamf_ea: bool,
    },
    /// Install the daily and login run (user), or the browsers' managed policy (--system, root).
    #[command(after_help = EXIT_CODES_HELP)]
    Install {
        /// Install the system-wide browser policy instead (needs root).
        #[arg(long)]
        system: bool,
    },
    /// Remove everything the agent made for this user (or, with --system, system-wide).
    #[command(after_help = EXIT_CODES_HELP)]
    Uninstall {
        /// Remove the system-wide browser policy instead (needs root).
        #[arg(long)]
        system: bool,
    },
    /// Print a configuration profile (.mobileconfig) for an MDM, made from the CA's metadata.
    #[command(after_help = EXIT_CODES_HELP)]
    Profile(ProfileArgs),
    /// Jamf Pro's policy entry point (macOS, as root).
    #[cfg(target_os = "macos")]
    Jamf(crate::platform::macos::jamf::JamfCli),
    /// Apps allowed to use the device key without a prompt (macOS).
    #[cfg(target_os = "macos")]
    #[command(subcommand)]
    Allowlist(crate::platform::macos::allowlist::AllowlistCommand),
    /// Print the version.
    Version,
}

/// `profile <kind>`: which profile, for which CA.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProfileArgs {
    /// agent, chrome, edge, browsers, login-items or icloud-keychain.
    #[arg(value_enum)]
    pub(crate) kind: crate::mobileconfig::ProfileKind,
    /// For the login-items profile: the TeamIdentifier the agent is signed with, which the
    /// rule then also requires.
    #[arg(long, value_name = "TEAMID")]
    pub(crate) team_id: Option<String>,
    /// PEM roots trusted for the CA's TLS while fetching its metadata (default: the
    /// configuration's `ca_bundle`, else the system's roots).
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_bundle: Option<PathBuf>,
    /// Write to this file (mode 0600) instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<PathBuf>,
    /// For the agent profile: include the enrollment token read from this file.
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
}

/// Where the enrollment token comes from. Without either flag, the environment variable
/// DEVICETRUST_ENROLLMENT_TOKEN is used when set.
#[derive(Debug, Clone, Args)]
pub(crate) struct TokenArgs {
    /// Read the enrollment token from the first line of standard input.
    #[arg(long, conflicts_with = "token_file")]
    pub(crate) token_stdin: bool,
    /// Read the enrollment token from a file.
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
}

impl Cli {
    /// How much to log: the number of `-v` flags.
    pub fn verbosity(&self) -> u8 {
        self.verbose
    }
}

impl TokenArgs {
    /// The source these flags select.
    pub(crate) fn source(&self) -> TokenSource {
        match (&self.token_file, self.token_stdin) {
            (Some(path), _) => TokenSource::File(path.clone()),
            (None, true) => TokenSource::Stdin,
            (None, false) => TokenSource::Environment,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_table() {
        let ok: [(&str, &[&str]); 11] = [
            ("ok/ca-url-override", &["run", "--ca-url", "https://ca.example.com"]),
            ("ok/profile", &["profile", "browsers", "--ca-url", "https://ca.example.com", "--out", "/p"]),
            ("ok/run", &["run"]),
            ("ok/run-config-after", &["run", "--config", "/x.toml"]),
            ("ok/config-before", &["--config", "/x.toml", "status", "--json"]),
            ("ok/enroll-stdin", &["enroll", "--token-stdin"]),
            ("ok/enroll-file", &["enroll", "--token-file", "/t"]),
            ("ok/renew-force", &["renew", "--force"]),
            ("ok/jamf", &["status", "--jamf-ea"]),
            ("ok/system", &["uninstall", "--system", "--config", "/x.toml"]),
            ("ok/version", &["version", "--config", "/x.toml"]),
        ];
        for (name, args) in ok {
            let argv = std::iter::once("devicetrust-agent").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_ok(), "{name}");
        }
        use clap::error::ErrorKind;
        let fail: [(&str, &[&str], ErrorKind); 6] = [
            ("fail/token-as-argument", &["enroll", "--token", "abc"], ErrorKind::UnknownArgument),
            (
                "fail/both-token-sources",
                &["enroll", "--token-stdin", "--token-file", "/t"],
                ErrorKind::ArgumentConflict,
            ),
            ("fail/both-formats", &["status", "--json", "--jamf-ea"], ErrorKind::ArgumentConflict),
            ("fail/no-command", &[], ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand),
            ("fail/unknown", &["frobnicate"], ErrorKind::InvalidSubcommand),
            ("fail/profile-unknown-kind", &["profile", "firefox"], ErrorKind::InvalidValue),
        ];
        for (name, args, kind) in fail {
            let argv = std::iter::once("devicetrust-agent").chain(args.iter().copied());
            assert_eq!(Cli::try_parse_from(argv).err().map(|e| e.kind()), Some(kind), "{name}");
        }
    }

    #[test]
    fn token_source_table() {
        let args =
            |stdin, file: Option<&str>| TokenArgs { token_stdin: stdin, token_file: file.map(PathBuf::from) };
        assert_eq!(args(true, None).source(), TokenSource::Stdin);
        assert_eq!(args(false, Some("/t")).source(), TokenSource::File(PathBuf::from("/t")));
        assert_eq!(args(false, None).source(), TokenSource::Environment);
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("8  certificate expired, needs re-enrollment"), "{help}");
    }
}
