//! Unified logging: every `tracing` event goes to the subsystem `com.devicetrust.agent` with a
//! category per module, so that an admin can follow the agent in Console or with
//! `log stream --predicate 'subsystem == "com.devicetrust.agent"'` and narrow it with
//! `category == "keychain"`.
//!
//! The category is chosen from the event's target (its module path) by [`category`], a fixed
//! table so that the number of `os_log` handles stays bounded. On macOS, `oslog_layer`
//! returns the `tracing-subscriber` layer; the crate root adds it to its subscriber.

/// Every category the agent logs under.
pub(crate) const CATEGORIES: [&str; 13] = [
    "agent",
    "core",
    "lifecycle",
    "state",
    "ca-client",
    "keychain",
    "allowlist",
    "browsers",
    "launchd",
    "device",
    "jamf",
    "config",
    "macos",
];

/// The category for an event target such as `agent::platform::macos::keychain`.
pub(crate) fn category(target: &str) -> &'static str {
    let mut segments = target.split("::");
    let first = segments.next().unwrap_or("");
    if first == "ca_client" {
        return "ca-client";
    }
    if first != "devicetrust_agent" && first != "agent" {
        return "agent";
    }
    match (segments.next().unwrap_or(""), segments.next().unwrap_or("")) {
        ("decision", _) => "core",
        ("lifecycle", _) => "lifecycle",
        ("https_ca", _) => "ca-client",
        ("token", _) | ("app", "state_dir") | ("util", "files") | ("platform", "file_store") => "state",
        ("app", "jamf") => "jamf",
        ("app", "allowlist") => "allowlist",
        ("platform", "macos") => match segments.next().unwrap_or("") {
            "keychain" | "keychain_list" | "sys" => "keychain",
            "allowlist" | "codesign" => "allowlist",
            "browsers" | "prefs" => "browsers",
            "launch_agent" | "launchctl" => "launchd",
            "facts" | "ioreg" | "profiles" | "console" => "device",
            "jamf" => "jamf",
            "config" => "config",
            _ => "macos",
        },
        _ => "agent",
    }
}

#[cfg(target_os = "macos")]
pub use oslog::oslog_layer;

#[cfg(target_os = "macos")]
mod oslog {
    use tracing::span::{Attributes, Id};
    use tracing::{Event, Subscriber};
    use tracing_oslog::OsLogger;
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    use super::{CATEGORIES, category};
    use crate::platform::macos::BUNDLE_ID;

    /// Routes each event to the `os_log` handle of its category.
    ///
    /// Spans become os_activities through one logger only (`agent`): `tracing-oslog` keeps
    /// the activity in the span's extensions and expects the logger that made it to be the
    /// one that ends it, while any logger can log inside it.
    pub struct OsLogLayer {
        spans: OsLogger,
        loggers: Vec<(&'static str, OsLogger)>,
    }

    impl std::fmt::Debug for OsLogLayer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("OsLogLayer").field("subsystem", &BUNDLE_ID).finish_non_exhaustive()
        }
    }

    /// The layer for the subsystem `com.devicetrust.agent`.
    pub fn oslog_layer() -> OsLogLayer {
        OsLogLayer {
            spans: OsLogger::new(BUNDLE_ID, "agent"),
            loggers: CATEGORIES.iter().map(|c| (*c, OsLogger::new(BUNDLE_ID, c))).collect(),
        }
    }

    impl OsLogLayer {
        fn logger(&self, target: &str) -> &OsLogger {
            let wanted = category(target);
            self.loggers.iter().find(|(c, _)| *c == wanted).map_or(&self.spans, |(_, l)| l)
        }
    }

    impl<S> Layer<S> for OsLogLayer
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            self.spans.on_new_span(attrs, id, ctx);
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            self.logger(event.metadata().target()).on_event(event, ctx);
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            self.spans.on_close(id, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_table() {
        let cases: &[(&str, &str)] = &[
            ("agent::platform::macos::keychain", "keychain"),
            ("agent::platform::macos::sys", "keychain"),
            ("agent::platform::macos::prefs", "browsers"),
            ("agent::platform::macos::launchctl", "launchd"),
            ("agent::platform::macos::jamf", "jamf"),
            ("agent::platform::macos::facts", "device"),
            ("agent::platform::macos", "macos"),
            ("agent::platform::file_store", "state"),
            ("agent::app::jamf", "jamf"),
            ("agent::app::allowlist", "allowlist"),
            ("agent::app::state_dir", "state"),
            ("agent::app", "agent"),
            ("agent::lifecycle::checkpoints", "lifecycle"),
            ("agent::decision::backoff", "core"),
            ("agent::https_ca", "ca-client"),
            ("agent::util::files", "state"),
            ("devicetrust_agent", "agent"),
            ("ca_client::tls", "ca-client"),
            ("reqwest::connect", "agent"),
            ("", "agent"),
        ];
        for (target, want) in cases {
            let got = category(target);
            assert_eq!(got, *want, "{target}");
            assert!(CATEGORIES.contains(&got), "{got}");
        }
    }
}
