//! Integration tests of `ca-client` against real HTTPS servers on 127.0.0.1 (one test binary,
//! shared helpers in `support`). Certificates come from `fixtures/tls` (see
//! `fixtures/README.md`).

mod certs;
mod exchange;
mod mtls;
mod properties;
mod support;
mod transport;
