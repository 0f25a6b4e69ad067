//! Shared helpers for the end-to-end tests: process harnesses and the load generators' common code. The tests themselves live in `tests/tests/`.

// The end-to-end flow runs on Linux (NSS, Chromium's managed policy, process groups);
// on a Mac the same crate only type-checks its platform-free parts.
#[cfg(target_os = "linux")]
pub mod harness;
