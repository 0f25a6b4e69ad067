//! Shared helpers for the end-to-end tests: the Jamf Pro simulator, process harnesses and
//! the load generators' common code. The tests themselves live in `tests/tests/`.

pub mod harness;
pub mod jamf_sim;
