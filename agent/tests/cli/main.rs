//! Tests of the `devicetrust-agent` binary as a process: exit codes, output, files, and the
//! flows against a small HTTPS CA that runs inside the test on 127.0.0.1 (`support`). The
//! end-to-end tests against the real `devicetrust-ca` live in the `tests` crate.

mod basics;
#[cfg(feature = "test-hooks")]
mod crash;
mod flows;
mod support;
