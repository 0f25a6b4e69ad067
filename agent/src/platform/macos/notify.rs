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

/// Notifies through Notification Center and the log.
#[derive(Debug, Default)]
pub(super) struct MacNotifier;

impl Notifier for MacNotifier {
    fn browser_restart_needed(&self, browsers: &[String]) {
        let browsers = super::browsers::needing_restart(browsers);
        if browsers.is_empty() {
            return;
        }
        tracing::warn!(
            browsers = %browsers.join(", "),
            "the certificate was renewed; restart running browsers so that they present the new one"
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
