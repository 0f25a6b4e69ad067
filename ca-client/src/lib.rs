//! The client side of Device Trust CA protocol v1.
//!
//! This crate owns the wire types ([`protocol`]), the signing trait through which private
//! keys are used ([`signer`]), CSR creation ([`csr`]), certificate inspection ([`cert`]), the
//! rustls configuration for pinned roots and mutual TLS ([`tls`]) and the async HTTPS client
//! ([`client`]).
//!
//! It contains no platform code: it never touches a keychain, a file or a process. Keys come
//! in through [`signer::KeySigner`], trust anchors as PEM bytes.

pub mod protocol;
pub mod signer;
