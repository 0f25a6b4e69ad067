//! Tells the user that running browsers must be restarted after a renewal: a notification
//! through `osascript` when the user is at the console, and always the log.
//!
//! Chrome keeps presenting the certificate it chose until it is restarted. The notification
//! text is fixed and names only browsers; nothing secret can reach `osascript`'s arguments.

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
        tracing::warn!(
            browsers = %browsers.join(", "),
            "the certificate was renewed; restart running browsers (Chrome keeps the old one until restarted)"
        );
        let at_console = match (facts::console_user_and_uid(), facts::this_user()) {
            (Ok(Some((console, _))), Ok(me)) => console == me.name,
            _ => false,
        };
        if !at_console {
            return;
        }
        let script = super::browsers::restart_notification_script(browsers);
        match exec::run(Path::new(OSASCRIPT), &["-e", &script], None, exec::DEFAULT_TIMEOUT) {
            Ok(out) if out.success() => {}
            Ok(out) => tracing::info!(stderr = %out.stderr_tail(), "could not show the restart notification"),
            Err(e) => tracing::info!(error = %e, "could not show the restart notification"),
        }
    }
}
