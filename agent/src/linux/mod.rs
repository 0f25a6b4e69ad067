//! The Linux backend's own parts: the user's NSS database, Chromium's and Chrome's managed
//! policy, the systemd user timer and the device facts, plus the helper that runs their tools.
//!
//! Each submodule works on paths and programs it is given, so tests run against temporary
//! directories and the real `certutil`, `pk12util` and `openssl` without touching the
//! machine's own configuration.

pub mod chromium_policy;

pub mod facts;
pub mod nss;
pub mod systemd;

pub use facts::{FactOverrides, FactSources, LinuxFacts};
