//! Tests of the `devicetrust-agent` binary as a process: exit codes, output, files, and the
//! flows against a small HTTPS CA that runs inside the test on 127.0.0.1 (`support`). The
//! end-to-end tests against the real `devicetrust-ca` live in the `tests` crate. `root`
//! reproduces the attacks on the agent run as root and needs root (it fails, saying so,
//! without it).

mod basics;
#[cfg(feature = "test-hooks")]
mod crash;
mod flows;
mod root;
mod support;
