//! `devicetrust-agent allowlist ...` (macOS only): shows and changes which apps, by
//! code-signing identity, may use the device key without a prompt, and applies the list to
//! the keys in the dedicated keychain.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::platform::macos::allowlist::{self, AllowlistCommand, PartitionId, Source};
use crate::platform::macos::{apply_managed_config, mac_settings, signature_of, store};
use crate::platform::{PlatformError, PlatformOptions};

use super::error_chain;
use super::jamf::exit;

/// `devicetrust-agent allowlist ...`; `config_path` is `--config`, for the data directory.
pub(super) fn run(command: &AllowlistCommand, config_path: Option<&Path>, out: &mut dyn Write) -> ExitCode {
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
        .map_err(|e| error_chain(&e))?;
    apply_managed_config(&mut loaded.config).map_err(|e| error_chain(&e))?;
    loaded.validate().map_err(|e| error_chain(&e))?;
    Ok(PlatformOptions { data_dir: loaded.config.data_dir })
}

fn allowlist_inner(
    command: &AllowlistCommand,
    options: &PlatformOptions,
) -> Result<Vec<String>, (i32, String)> {
    let fail = |e: PlatformError| (1, error_chain(&e));
    let settings = mac_settings().map_err(|e| (2, error_chain(&e)))?;
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
        allowlist::partition_id_for_app(&signature, app).map_err(|e| (2, error_chain(&e)))
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
            allowlist::save(&data_dir, &list).map_err(|e| (1, error_chain(&e)))?;
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
            allowlist::save(&data_dir, &list).map_err(|e| (1, error_chain(&e)))?;
            lines.push(format!("removed {id}"));
        }
    }
    let keys = store.reapply_allowlist().map_err(fail)?;
    if keys > 0 {
        lines.push(format!("applied the allowlist to {keys} key(s) in {}", store.keychain_path().display()));
    }
    Ok(lines)
}
