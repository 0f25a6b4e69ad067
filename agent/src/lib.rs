//! `devicetrust-agent`: keeps this device's mutual-TLS client certificate enrolled, renewed
//! and presented by browsers, and removes it when the CA revokes it.
//!
//! The crate is layered so that the rules are testable without a machine (see
//! `ARCHITECTURE.md` at the root of the repository for the whole map):
//!
//! - `decision`: the pure decision (enroll, renew, nothing, uninstall, blocked, expired), a
//!   function of its inputs and the time, with no I/O;
//! - `lifecycle`: the crash-safe enrollment and renewal flows over an identity store and a
//!   CA, with the named crash points of [`Step`];
//! - `app`: the subcommands, which gather inputs, decide, act through the lifecycle and the
//!   platform, and report; `https_ca` is the CA they talk to;
//! - `platform`: the traits every operating system implements, with the backends side by
//!   side in `platform::linux` (NSS, Chromium policy, systemd, over the identity store on
//!   files in `platform::file_store`) and `platform::macos` (keychain, preferences,
//!   LaunchAgent);
//! - the rules both platforms share: `autoselect` (Chrome's certificate auto-selection
//!   entries), `origin` (the one check of every origin written into a browser setting),
//!   `mobileconfig` (configuration profiles), `config`, `token` (the enrollment token, never
//!   shown) and `trust` (what the agent may read and run as root);
//! - `util`: atomic private files, the bounded tool runner and the PEM codec.
//!
//! The library exists so that the binary, the tests and the benchmarks drive the same code;
//! its public surface is only what `main`, the cross-process tests and the fleet simulator
//! (`decision`) need.

// Table tests (`ok/...`, `fail/...`) spell out their row types inline, where a reader needs them.
#![cfg_attr(test, allow(clippy::type_complexity, reason = "table tests spell out their row types"))]

mod cli;

mod app;
mod autoselect;
mod config;
pub mod decision;
mod exit;
mod https_ca;
mod lifecycle;
mod mobileconfig;
mod origin;
mod platform;
mod token;
mod trust;
mod util;

#[cfg(test)]
mod testing;

pub use app::{Exit, run};
pub use cli::Cli;
pub use config::SYSTEM_CONFIG;
pub use lifecycle::checkpoints::{ABORT_AT_ENV, Step};
#[cfg(target_os = "macos")]
pub use platform::macos::oslog_layer;
pub use trust::{AGENT_BINARY, Refused, check_own_binary};
