//! Tells the user that running browsers must be restarted after a renewal: a notification
//! through `osascript` when the user is at the console, and always the log.
//!
//! Chrome and Edge switch to the new certificate at once: the keychain store takes the device
//! keychain out of the search list and puts it back after a renewal, and Chromium drops its
//! remembered choice and TLS sessions on that event (`net/cert/cert_database_mac.cc`). So they
//! are not named; Safari still is, as nothing shows that it drops a TLS session it holds. The
//! notification text is fixed and names only browsers; nothing secret can reach `osascript`'s
//! arguments.

use std::path::Path;

use super::facts;
use crate::platform::Notifier;
use crate::util::exec;

const OSASCRIPT: &str = "/usr/bin/osascript";
const PGREP: &str = "/usr/bin/pgrep";

/// Whether this user runs `browser` (a status name), by its process name with `pgrep -x -U`
/// (exit 0: found, 1: none). When that cannot be told (`browsers`, the unknown list, or a
/// failing `pgrep`), it counts as running: a needless reminder beats a silent stale one.
fn is_running(browser: &str) -> bool {
    if browser == "browsers" {
        return true;
    }
    let uid = nix::unistd::getuid().as_raw().to_string();
    let name = super::browsers::display_name(browser);
    match exec::run(Path::new(PGREP), &["-x", "-U", &uid, &name], None, exec::DEFAULT_TIMEOUT) {
        Ok(out) if out.status.code() == Some(1) => false,
        Ok(_) | Err(_) => true,
    }
}

/// Notifies through Notification Center and the log.
#[derive(Debug, Default)]
pub(super) struct MacNotifier;

impl Notifier for MacNotifier {
    fn browser_restart_needed(&self, browsers: &[String]) {
        let browsers: Vec<String> =
            super::browsers::needing_restart(browsers).into_iter().filter(|b| is_running(b)).collect();
        if browsers.is_empty() {
            tracing::info!("no running browser holds the old certificate; nothing to restart");
            return;
        }
        let names: Vec<String> = browsers.iter().map(|b| super::browsers::display_name(b)).collect();
        tracing::warn!(
            "the certificate was renewed; restart {} so that it presents the new one",
            names.join(" and ")
        );
        let at_console = match (facts::console_user_and_uid(), facts::this_user()) {
            (Ok(Some((console, _))), Ok(me)) => console == me.name,
            _ => false,
        };
        if !at_console {
            return;
        }
        let script = super::browsers::restart_notification_script(&browsers);
        match exec::run(Path::new(OSASCRIPT), &["-e", &script], None, exec::DEFAULT_TIMEOUT) {
            Ok(out) if out.success() => {}
            Ok(out) => tracing::info!(stderr = %out.stderr_tail(), "could not show the restart notification"),
            Err(e) => tracing::info!(error = %e, "could not show the restart notification"),
        }
    }
}
