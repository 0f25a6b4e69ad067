//! `profile <kind>`: configuration profiles for an MDM, made from the CA's metadata (see
//! `crate::mobileconfig`).

use std::io::Write;

use super::{AgentError, client_options, target_of, warn_skipped_origins};
use crate::config::Loaded;
use crate::lifecycle::CaApi as _;

/// `profile <kind>`: asks the CA for its metadata, then prints (or writes, 0600) a
/// configuration profile made from it. Needs no enrollment and touches no local state.
pub(super) fn profile(
    args: &crate::cli::ProfileArgs,
    config: &Loaded,
    out: &mut dyn Write,
) -> Result<(), AgentError> {
    use crate::mobileconfig::{self, ProfileInputs};
    let url = config.require_ca_url()?;
    let roots = match &args.ca_bundle {
        Some(path) => Some(config.read_bundle(path)?),
        None => config.ca_bundle()?,
    };
    let remote = crate::https_ca::HttpsCa::new(
        client_options(config, url.clone(), roots, "unknown")?,
        crate::https_ca::HttpsCa::terminal_progress(),
    )
    .map_err(|source| AgentError::Ca { action: "set up the CA client", source })?;
    let metadata =
        remote.metadata().map_err(|source| AgentError::Ca { action: "fetch the CA's metadata", source })?;
    if let Ok(target) = target_of(&metadata) {
        warn_skipped_origins(&target);
    }
    let mut inputs = ProfileInputs::from_metadata(&metadata, &url);
    inputs.team_id.clone_from(&args.team_id);
    if let Some(path) = &args.token_file {
        let token = crate::token::read_token(
            &crate::token::TokenSource::File(path.clone()),
            &mut std::io::empty(),
            None,
        )?;
        inputs.enrollment_token = token.map(|t| t.expose().to_owned());
    }
    match &args.out {
        Some(path) => {
            mobileconfig::write_file(path, &mobileconfig::render(args.kind, &inputs)?)?;
            writeln!(out, "wrote {} profile to {}", args.kind, path.display())?;
        }
        None => mobileconfig::write_profile(args.kind, &inputs, out)?,
    }
    Ok(())
}
