//! The command line: `devicetrust-ca serve --config FILE`, `devicetrust-ca dev`, and
//! `devicetrust-ca admin ...` (a running CA's administration API, in the private `admin`
//! module).
//!
//! Exit codes of `serve` and `dev`: 0 after a clean shutdown (SIGINT or SIGTERM), 1 when the
//! CA cannot start or fails while running (the error chain is printed on stderr), 2 for a
//! usage error. `admin` has its own: 0 done, 1 the CA could not be reached or failed, 2 usage
//! or configuration, 3 no such device.
//! Secrets are never taken from arguments: tokens come from files or the environment as
//! the configuration says.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

mod admin;

use crate::config::Config;
use crate::dev::{self, DevOptions};
use crate::mdm::MdmSettings;
use crate::server::{self, Listeners};
use crate::service::Ca;

/// The reference Device Trust CA (protocol v1).
#[derive(Debug, Parser)]
#[command(name = "devicetrust-ca", version, about)]
pub struct Cli {
    /// Log lines on stderr as text, or as one JSON object per line (for a log collector).
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: time, level, target, message and fields.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the CA described by a TOML configuration file.
    Serve {
        /// The configuration file; every key is explained in `ca-server/config.example.toml`
        /// of the source tree (a safe starting point to copy), and in `docs/jamf.md`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running CA: a device's certificates, revocation, the event log.
    Admin(admin::AdminArgs),
    /// Run a local CA for trying it out and for tests: generates whatever is missing in the
    /// data directory and prints one JSON line with the URL, tokens and files on stdout.
    Dev {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, value_name = "ADDR", default_value = dev::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Directory for the CA, TLS files, tokens and database.
        #[arg(long, value_name = "DIR", default_value = "devicetrust-ca-dev")]
        data_dir: PathBuf,
        /// JSON list of managed devices, `[{"udid": "...", "serialNumber": "..."}]`.
        /// Without it every device counts as managed.
        #[arg(long, value_name = "FILE")]
        managed_devices: Option<PathBuf>,
        /// TOML file with the keys of a configuration's `[limits]` table (connection caps,
        /// rate limits, timeouts), instead of the defaults.
        #[arg(long, value_name = "FILE")]
        limits: Option<PathBuf>,
        /// TOML file with the keys of a configuration's `[relying_party]` table (protected
        /// origins, the relying parties allowed to ask the forward-auth check, assertion
        /// settings); relative paths in it are relative to the file.
        #[arg(long, value_name = "FILE")]
        relying_parties: Option<PathBuf>,
        /// Also serve OCSP, the CRL and the JWKS over plain HTTP on this address (port 0
        /// picks one), and name it in issued certificates.
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<SocketAddr>,
        /// Register an OpenID Connect client `dev` that may redirect to URI (repeatable),
        /// with a generated secret; the ready line then names the issuer, the client id,
        /// the secret and the 0600 file holding it.
        #[arg(long, value_name = "URI")]
        oidc_redirect_uri: Vec<String>,
    },
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every file the CA creates (database, WAL, generated keys, tokens) is for its own user
    // only, whatever umask it was started with.
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // The admin commands print their results; their log is for -v-like debugging only.
    init_logging(if matches!(cli.command, Command::Admin(_)) { "warn" } else { "info" }, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if format == LogFormat::Json {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal who has not asked for none (no-color.org).
        .with_ansi(
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Register the handlers before serving, so that a signal during startup is not lost.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    match cli.command {
        // Its own exit codes and messages.
        Command::Admin(args) => return Ok(admin::run(args, shutdown).await),
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            if config.mdm == MdmSettings::AllowAll {
                tracing::warn!(
                    "[mdm] kind = \"allow_all\": every device counts as managed; use only for development"
                );
            }
            let ca = Ca::builder(config.clone()).build().await.context("cannot start the CA")?;
            let main = bind(config.server.listen).await?;
            let cert_auth = bind_optional(config.cert_auth.as_ref().map(|l| l.listen)).await?;
            let http = bind_optional(config.http.as_ref().map(|l| l.listen)).await?;
            let relying_party = bind_optional(config.relying_party.listen).await?;
            let ops = bind_optional(config.ops.as_ref().map(|l| l.listen)).await?;
            server::serve_listeners(Listeners { main, cert_auth, http, relying_party, ops }, ca, shutdown)
                .await?;
        }
        Command::Dev {
            listen,
            data_dir,
            managed_devices,
            limits,
            relying_parties,
            http_listen,
            oidc_redirect_uri,
        } => {
            let listener = bind(listen).await?;
            let local = listener.local_addr().context("cannot read the listening address")?;
            let limits = match limits {
                Some(path) => Some(dev::load_limits(&path)?),
                None => None,
            };
            let relying_parties = match relying_parties {
                Some(path) => Some(dev::load_relying_parties(&path)?),
                None => None,
            };
            let http = bind_optional(http_listen).await?;
            let relying_party = bind_optional(relying_parties.as_ref().and_then(|rp| rp.listen)).await?;
            // The operations listener, always, on loopback (a free port): `opsUrl`.
            let ops = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let mut env = dev::prepare(&DevOptions { data_dir, managed_devices }, local)
                .context("cannot prepare the data directory")?;
            if let Some(limits) = limits {
                env.config.limits = limits;
            }
            if let Some(relying_parties) = relying_parties {
                env.config.relying_party = relying_parties;
            }
            if let Some(http) = &http {
                env.serve_plain_http(http.local_addr().context("cannot read the listening address")?);
            }
            if let Some(listener) = &relying_party {
                env.serve_relying_parties(
                    listener.local_addr().context("cannot read the listening address")?,
                );
            }
            env.serve_ops(ops.local_addr().context("cannot read the listening address")?);
            if !oidc_redirect_uri.is_empty() {
                env.register_oidc_client(oidc_redirect_uri)
                    .context("cannot register the dev openid connect client")?;
            }
            env.config.validate()?;
            if env.allows_all_devices {
                eprintln!(
                    "warning: no --managed-devices list: every device counts as managed. Use this only for development."
                );
            }
            let ca = Ca::builder(env.config.clone()).build().await.context("cannot start the CA")?;
            // The listener is bound and listening: connections from here on are accepted.
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", env.ready_line())
                .and_then(|()| stdout.flush())
                .context("cannot write to stdout")?;
            drop(stdout);
            let listeners =
                Listeners { main: listener, cert_auth: None, http, relying_party, ops: Some(ops) };
            server::serve_listeners(listeners, ca, shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

async fn bind_optional(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(bind(addr).await?)),
        None => Ok(None),
    }
}

/// Completes at the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
