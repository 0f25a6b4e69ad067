//! The end-to-end harness: the real `devicetrust-ca` and `devicetrust-agent` processes and
//! headless Chromium, each owned by a guard that kills and reaps its processes (and undoes
//! its system-wide changes) in `Drop`, also when a test panics. Child processes, the `dev`
//! spawner and the fake CA that answers wrongly are `testkit`'s.
//!
//! - [`binaries`]: builds the two programs (the agent with its crash-test hook) and finds them;
//! - [`ca`]: `devicetrust-ca dev` on 127.0.0.1 and its admin API;
//! - [`agent`]: the agent in a temporary home with its own configuration file;
//! - [`browser`]: headless Chromium, the managed policy guard and the NSS database;
//! - [`proxy`]: nginx and Caddy in front of an app, consulting the CA (forward auth, OCSP);
//! - [`demo_app`]: the app behind them, which admits a verified device assertion;
//! - [`oidc_rp`]: an OpenID Connect relying party on `openid-client` (Node).

pub mod agent;
pub mod binaries;
pub mod browser;
pub mod ca;
pub mod demo_app;
pub mod oidc_rp;
pub mod proxy;

/// Fails the test, with what to do, unless it runs as root. Tests that write system-wide
/// files (the browsers' managed policy under `/etc`) need root; they never skip silently.
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root: {why}. Run it as root (in CI the container is root), \
         e.g. `sudo -E cargo test -p tests`"
    );
}
