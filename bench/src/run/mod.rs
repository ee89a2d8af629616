//! Running the scenarios: servers (ser, Kamailio), a UAS, the load generator, and the /proc
//! readings of one step. Every process it starts is stopped by its own id when the step ends
//! (SIGTERM through `kill`, then SIGKILL), and every run is bounded by a deadline.
//!
//! Each job is a submodule: [`scenarios`] (what is measured), [`env`](mod@env) (the tools found),
//! [`prepare`] (users and databases, once per run), [`process`] (our child processes),
//! [`procfs`] (CPU, RSS and port readings), [`servers`] (ser, Kamailio, the UAS), [`drive`]
//! (SIPp and loadgen), [`measure`] (one step), [`ramp`] (the steps of a run) and [`results`]
//! (what they produced). The report is written elsewhere (`crate::report`).

mod drive;
mod env;
mod measure;
mod prepare;
mod process;
mod procfs;
mod ramp;
mod results;
mod scenarios;
mod servers;

pub use env::{repo_root, Env};
pub use ramp::run_all;
pub use results::{fmt_opt, Results, Step};
pub use scenarios::{Server, SCENARIOS};
