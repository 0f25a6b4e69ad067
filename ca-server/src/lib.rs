//! The reference Device Trust CA (`devicetrust-ca`), protocol v1.
//!
//! Layers, from the wire inwards:
//!
//! - [`server`] (sockets, connection caps, TLS handshakes, HTTP connections, shutdown), with
//!   [`server::tls`] (the server configuration and the client-certificate verifier) and
//!   [`server::limits`] (connection caps, per-address budgets, counters);
//! - [`api`]: routes, bodies and error responses, one file per protocol area (the agent's,
//!   the browser's, the admin's, relying parties', OpenID Connect's);
//! - `service` ([`Ca`]): what each endpoint does, in the contract's order;
//! - beneath it: [`authority`] (X.509 issuance, the CRL, and the OCSP responder),
//!   [`store`] (persistence), [`mdm`] (is the device managed?) and [`clock`];
//! - the protocols for the organisation's apps: [`relying_party`] (the forward-auth check
//!   and the signed device assertion) and [`oidc`] (the OpenID Connect device factor), with
//!   `jwt` holding the signing keys of both;
//! - [`config`], [`dev`], [`cli`], [`secret`] and [`fsutil`] set it all up.
//!
//! To run a CA in-process (as the tests do):
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use ca_server::dev::{prepare, DevOptions};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let env = prepare(&DevOptions { data_dir: "dev".into(), managed_devices: None }, listener.local_addr()?)?;
//! let ca = ca_server::Ca::builder(env.config.clone()).build().await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(ca_server::serve(listener, ca, async { let _ = stopped.await; }));
//! // ... talk to env.url, trusting env.ca_bundle ...
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```

pub mod api;
pub mod authority;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
mod error;
pub mod fsutil;
mod jwt;
pub mod mdm;
pub mod oidc;
pub mod ops;
pub mod relying_party;
pub mod secret;
pub mod server;
mod service;
pub mod store;

pub use server::{Listeners, serve, serve_listeners};
pub use service::{Ca, CaBuilder};
