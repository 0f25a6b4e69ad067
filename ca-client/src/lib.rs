//! The client side of Device Trust CA protocol v1.
//!
//! This crate owns the wire types ([`protocol`]), the signing trait through which private
//! keys are used ([`signer`]), CSR creation ([`csr`]), certificate inspection and chain checks
//! ([`cert`]), the rustls configuration for pinned roots and mutual TLS ([`tls`]), the pure
//! interpretation of the CA's answers ([`response`]), the async HTTPS client ([`client`]) and
//! its error type ([`error`]), and the client of the administration API ([`admin`]).
//!
//! It contains no platform code: it never touches a keychain, a file or a process. Keys come
//! in through [`signer::KeySigner`], trust anchors as PEM bytes. TLS is rustls with the *ring*
//! provider only; no OpenSSL and no aws-lc.

pub mod admin;
pub mod cert;
pub mod client;
pub mod csr;
pub mod error;
pub mod protocol;
pub mod response;
pub mod signer;
pub mod tls;

pub use admin::{AdminClient, EventsQuery};
pub use client::{CaClient, ClientOptions, user_agent};
pub use error::ClientError;
pub use response::Issued;
