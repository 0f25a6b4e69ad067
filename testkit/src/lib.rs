//! What every crate's tests share: child processes that cannot outlive the test and whose
//! failures show the command, how it ended, its stdout and its stderr ([`run`],
//! [`run_bounded`], [`Guard`]), the one spawner of `devicetrust-ca dev` ([`DevCaCommand`]),
//! the one fake CA ([`fake_ca::FakeCa`]), a throwaway PostgreSQL cluster
//! ([`postgres::PgCluster`]), and a port that is sure to refuse connections
//! ([`RefusedPort`]).
//!
//! The process half needs Unix process groups; on Linux it reaps with `waitid`, which keeps
//! an exited leader's group id ours until its leftovers are killed.

#[cfg(unix)]
mod dev_ca;
pub mod fake_ca;
#[cfg(unix)]
pub mod postgres;
#[cfg(unix)]
mod process;
mod refused;

#[cfg(unix)]
pub use dev_ca::{DevCaCommand, DevCaProcess, DevInfo};
#[cfg(unix)]
pub use process::{Finished, Guard, HANG_LIMIT, command_line, run, run_bounded};
pub use refused::RefusedPort;
