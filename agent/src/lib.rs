//! `devicetrust-agent`: keeps this device's mutual-TLS client certificate enrolled, renewed
//! and presented by browsers, and removes it when the CA revokes it.
//!
//! The crate is layered so that the rules are testable without a machine:
//!
//! - [`core`]: the pure decision (enroll, renew, nothing, uninstall, blocked, expired);
//! - [`lifecycle`]: the crash-safe enrollment and renewal flows over an identity store and a
//!   CA client, with named crash points ([`hooks`]);
//! - [`platform`]: the traits every operating system implements, with the backends in
//!   [`linux_backend`] (files, NSS, Chromium policy, systemd) and `macos` (keychain,
//!   preferences, LaunchAgent);
//! - [`commands`]: the CLI's subcommands, which gather inputs, decide, act and report;
//! - [`origin`]: the one check of every origin written into a browser setting, and
//!   [`trust`]: what the agent may read and run as root (only what nobody but root can change).
//!
//! The library exists so that tests and benchmarks can drive the same code the binary runs.

// Table tests (`ok/...`, `fail/...`) spell out their row types inline, where a reader needs them.
#![cfg_attr(test, allow(clippy::type_complexity, reason = "table tests spell out their row types"))]

pub mod autoselect;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod exec;
pub mod exit;
pub mod fsutil;
pub mod hooks;
pub mod lifecycle;
#[cfg(not(target_os = "macos"))]
pub mod linux;
#[cfg(not(target_os = "macos"))]
pub mod linux_backend;
pub mod macos;
/// Configuration profiles (`.mobileconfig`) for MDMs: the `profile` subcommand.
pub mod mobileconfig;
pub mod origin;
pub mod platform;
pub mod remote;
pub mod state;
pub mod status;
pub mod store;
pub mod token;
pub mod trust;

#[cfg(test)]
mod testing;
