//! Assembles the macOS [`Platform`] and runs the macOS-only subcommands (`jamf`,
//! `allowlist`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::platform::{Platform, PlatformError, PlatformOptions, SystemClock};
use crate::token::Secret;

use super::allowlist::{self, AllowlistCommand, PartitionId, Source};
use super::codesign;
use super::config::{self, MacSettings};
use super::facts::{self, MacDevice};
use super::jamf::{self, Level, Step, UserChoice};
use super::keychain::{KeychainStore, Paths};
use super::launchctl::LaunchAgentScheduler;
use super::notify::MacNotifier;
use super::prefs::{self, MacBrowsers};
use crate::exec;

const CODESIGN: &str = "/usr/bin/codesign";

/// The agent's data directory: the configured one, else `~/Library/Application
/// Support/DeviceTrust`.
fn data_dir(options: &PlatformOptions, home: &Path) -> PathBuf {
    options.data_dir.clone().unwrap_or_else(|| home.join("Library/Application Support/DeviceTrust"))
}

fn mac_settings() -> Result<MacSettings, PlatformError> {
    config::mac_settings(&prefs::managed_preferences()).map_err(|e| PlatformError::Backend(e.to_string()))
}

/// The signature report of some code; `codesign` exits 1 for unsigned code, whose report is
/// still worth parsing.
fn signature_of(path: &Path) -> Result<codesign::Signature, PlatformError> {
    let path_arg = path.to_string_lossy();
    let out = exec::run(Path::new(CODESIGN), &["-dv", "--verbose=4", &path_arg], None, exec::DEFAULT_TIMEOUT)
        .map_err(|e| PlatformError::Backend(e.to_string()))?;
    codesign::parse(&out.stderr).map_err(|e| PlatformError::Backend(e.to_string()))
}

/// This executable's partition ID, so that the partition list never locks the agent out.
fn own_partition() -> Option<PartitionId> {
    let exe = std::env::current_exe().ok()?;
    match signature_of(&exe) {
        Ok(sig) => allowlist::own_partition_id(&sig),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the agent's own code signature");
            None
        }
    }
}

fn store(
    options: &PlatformOptions,
    settings: &MacSettings,
) -> Result<(Arc<KeychainStore>, PathBuf, PathBuf), PlatformError> {
    let me = facts::this_user()?;
    let home = me.dir;
    let data_dir = data_dir(options, &home);
    let store =
        KeychainStore::new(Paths::new(&home, data_dir.clone()), own_partition, settings.allowlist.clone());
    Ok((Arc::new(store), home, data_dir))
}

/// Opens the macOS backend for the user running the agent.
pub fn open(options: &PlatformOptions) -> Result<Platform, PlatformError> {
    let settings = mac_settings()?;
    let (store, home, data_dir) = store(options, &settings)?;
    let uid = nix::unistd::Uid::current().as_raw();
    Ok(Platform {
        data_dir,
        store: store.clone(),
        device: Box::new(MacDevice::default()),
        browsers: Box::new(MacBrowsers { store, org_domain: settings.org_domain }),
        scheduler: Box::new(LaunchAgentScheduler { uid, home }),
        notifier: Box::new(MacNotifier),
        clock: Arc::new(SystemClock),
    })
}

/// Lays the forced managed preferences of `com.devicetrust.agent` over `config` (what the
/// configuration file said); returns the keys they set. Call
/// [`crate::config::Loaded::validate`] afterwards.
pub fn apply_managed_config(config: &mut Config) -> Result<Vec<&'static str>, PlatformError> {
    let applied = config::overlay(config, &prefs::managed_preferences())
        .map_err(|e| PlatformError::Backend(e.to_string()))?;
    if !applied.is_empty() {
        tracing::info!(keys = %applied.join(", "), "managed preferences override the configuration file");
    }
    Ok(applied)
}

fn say(out: &mut dyn Write, level: Level, message: &str) {
    // The policy log is the only place this is read; a closed stdout leaves nothing to tell.
    let _ = writeln!(out, "{}", jamf::line(level, message));
    let _ = out.flush();
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// How long one per-user step may take: enrollment talks to the CA, which asks Jamf Pro.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// `devicetrust-agent jamf ...`: the Jamf Pro policy entry point. Prints `INFO:`/`WARN:`/
/// `ERROR:` lines for the policy log and returns the agent's exit code (0 when deferred).
pub fn run_jamf(
    args: &[String],
    stdin_token: Option<Secret>,
    config_path: Option<&Path>,
    out: &mut dyn Write,
) -> ExitCode {
    say(out, Level::Info, &format!("devicetrust-agent {} (jamf policy)", env!("CARGO_PKG_VERSION")));
    if !nix::unistd::Uid::effective().is_root() {
        say(out, Level::Error, "the jamf entry point runs as root, as Jamf Pro runs policies");
        return exit(2);
    }
    let parsed = jamf::JamfArgs::from_positional(args).and_then(|a| jamf::interpret(&a).map(|r| (a, r)));
    let (jamf_args, request) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            say(out, Level::Error, &e.to_string());
            return exit(2);
        }
    };
    for warning in &request.warnings {
        say(out, Level::Warn, warning);
    }
    let console = facts::console_user_and_uid().map(|c| c.map(|(name, _)| name)).map_err(|e| e.to_string());
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
            say(out, Level::Error, &e.to_string());
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
                say(out, Level::Error, &e.to_string());
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

/// `devicetrust-agent allowlist ...`; `config_path` is `--config`, for the data directory.
pub fn run_allowlist(
    command: &AllowlistCommand,
    config_path: Option<&Path>,
    out: &mut dyn Write,
) -> ExitCode {
    let options = match load_options(config_path) {
        Ok(options) => options,
        Err(message) => {
            let _ = writeln!(out, "error: {message}");
            return exit(2);
        }
    };
    match allowlist_inner(command, &options) {
        Ok(lines) => {
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            let _ = writeln!(out, "error: {message}");
            exit(code)
        }
    }
}

/// The backend options the configuration (file and managed preferences) gives.
fn load_options(config_path: Option<&Path>) -> Result<PlatformOptions, String> {
    let trust = crate::trust::Trust::of_this_process();
    let mut loaded = crate::config::load(config_path, &crate::config::default_candidates(trust), trust)
        .map_err(|e| e.to_string())?;
    apply_managed_config(&mut loaded.config).map_err(|e| e.to_string())?;
    loaded.validate().map_err(|e| e.to_string())?;
    Ok(PlatformOptions { data_dir: loaded.config.data_dir })
}

fn allowlist_inner(
    command: &AllowlistCommand,
    options: &PlatformOptions,
) -> Result<Vec<String>, (i32, String)> {
    let fail = |e: PlatformError| (1, e.to_string());
    let settings = mac_settings().map_err(|e| (2, e.to_string()))?;
    let (store, _home, data_dir) = store(options, &settings).map_err(fail)?;
    let (list, source) = store.allowlist().map_err(fail)?;
    let entry_for = |value: &str| -> Result<PartitionId, (i32, String)> {
        if let Ok(id) = value.parse::<PartitionId>() {
            return Ok(id);
        }
        let app = Path::new(value);
        if !app.exists() {
            return Err((2, format!("{value} is neither a partition id nor an existing app")));
        }
        let signature = signature_of(app).map_err(fail)?;
        allowlist::partition_id_for_app(&signature, app).map_err(|e| (2, e.to_string()))
    };
    let managed_refusal = || {
        (
            2,
            "the allowlist is set by a configuration profile (managed preference allowlist); change it there"
                .to_owned(),
        )
    };
    let mut lines = Vec::new();
    match command {
        AllowlistCommand::Show => {
            let effective = store.effective_partitions().map_err(fail)?;
            lines.push(format!("allowlist:        {}", allowlist::render_list(&effective)));
            lines.push(format!("source:           {source}"));
            if let Ok(Some(on_key)) = store.current_partitions() {
                lines.push(format!("on the key:       {}", on_key.join(",")));
            }
            return Ok(lines);
        }
        AllowlistCommand::Add { app } => {
            if source == Source::Managed {
                return Err(managed_refusal());
            }
            let id = entry_for(&app.to_string_lossy())?;
            let mut list = list;
            if !list.add(id.clone()) {
                lines.push(format!("{id} is already allowed"));
                return Ok(lines);
            }
            allowlist::save(&data_dir, &list).map_err(|e| (1, e.to_string()))?;
            lines.push(format!("allowed {id} ({})", app.display()));
        }
        AllowlistCommand::Remove { entry } => {
            if source == Source::Managed {
                return Err(managed_refusal());
            }
            let id = entry_for(entry)?;
            let mut list = list;
            if !list.remove(&id) {
                lines.push(format!("{id} was not in the allowlist"));
                return Ok(lines);
            }
            allowlist::save(&data_dir, &list).map_err(|e| (1, e.to_string()))?;
            lines.push(format!("removed {id}"));
        }
    }
    let keys = store.reapply_allowlist().map_err(fail)?;
    if keys > 0 {
        lines.push(format!("applied the allowlist to {keys} key(s) in {}", store.keychain_path().display()));
    }
    Ok(lines)
}
