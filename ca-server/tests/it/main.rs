//! Integration tests of `devicetrust-ca` with real TLS on 127.0.0.1: every endpoint and
//! error code, the profile of issued certificates checked with OpenSSL and webpki, the
//! store's guarantees under concurrency, the `dev` command as a process, and a contract
//! conformance client written in Python from the contract alone, and the OpenID Connect
//! provider checked against its specifications.

mod admin;
mod admin_cli;
mod config;
mod enroll;
mod failures;
mod hardening;
mod harness;
mod jamf;
mod jamf_sim;
mod limits;
mod oidc;
mod process;
mod relying_party;
mod renew;
mod replicas;
mod store;
mod tls;
