//! Test support for dipc: run the real thing on loopback.
//!
//! Integration tests of dipc start a referee and N node daemons as real
//! processes (the `dipc` binary) on free loopback ports, compile small C
//! programs against libsysv, run them "on node i", and tear everything down
//! even when the test fails, the way ripgrep's and cargo's test helpers run
//! their real binaries in a temporary directory:
//!
//! ```no_run
//! use std::time::Duration;
//! use dipc_testkit::{Cluster, Link, compile_c};
//!
//! # fn main() -> anyhow::Result<()> {
//! // In the dipc crate's tests: .bin(env!("CARGO_BIN_EXE_dipc"))
//! let cluster = Cluster::builder()
//!     .bin(dipc_testkit::dipc_bin())
//!     .nodes(2)
//!     .heartbeat_ms(300)
//!     .down_after_ms(1500)
//!     .start()?;
//! let prog = compile_c("int main(void) { return 0; }", "noop", Link::Sysv)?;
//! let status = cluster.run_on(1, &prog).status()?;
//! assert!(status.success(), "{}", cluster.logs());
//! # Ok(())
//! # }
//! ```
//!
//! * [`Cluster`] / [`ClusterBuilder`]: one temporary directory holding the
//!   secret file, data directories, local sockets and one log file per
//!   process; start, kill (`SIGKILL`), restart, status (`dipc status
//!   --json`), bounded waits that print every process's log when they time
//!   out. Dropping it sends `SIGTERM`, then `SIGKILL`, and reaps everything.
//! * [`Process`]: one supervised child with its log file; the building block
//!   of the cluster, usable alone.
//! * [`compile_c`] / [`Program`] / [`sysv_pc_dir`]: C programs built with
//!   `cc -O2 -Wall -Werror -pthread`, linked with `-lsysv` through
//!   pkg-config or left plain to run under `LD_PRELOAD`.
//! * [`LocalClient`]: speaks the local protocol (`dipc_wire::local`) over a
//!   node's Unix socket, for tests that need exact control of requests.
//! * [`NetnsPair`]: two network namespaces joined by a veth pair whose link
//!   a partition test sets down and up (root only; deleted on drop).
//!
//! Every flag of the `dipc` binary also has a `DIPC_*` environment variable,
//! so the kit passes flags explicitly and removes inherited `DIPC_*`
//! variables from every child it starts. Every wait in the kit is bounded.
//!
//! Errors are `anyhow` errors: this crate only serves tests, whose failures
//! are read by a person (with the processes' logs attached), never matched
//! by code, so one error enum would add nothing but ceremony.
//!
//! Set `DIPC_TESTKIT_KEEP=1` to keep a cluster's directory (logs, data)
//! after the test; its path is printed to stderr.
//!
//! Depends on `dipc-wire` (status and local protocol types), `nix` (signals),
//! `tempfile`, `serde_json`, `anyhow`; never on the daemon crates, so it
//! always tests the binary as a user runs it. Tested by `tests/kit.rs`,
//! which uses only `cc`, `sh` and `sleep` (no dipc binary), and by the dipc
//! crate's integration tests, which use it against the real binary.
#![forbid(unsafe_code)]

mod cc;
mod cluster;
mod local;
mod netns;
mod paths;
mod process;
mod wait;

pub use cc::{Link, Program, compile_c, compile_c_with_header, sysv_pc_dir};
pub use cluster::{Cluster, ClusterBuilder};
pub use local::LocalClient;
pub use netns::NetnsPair;
pub use paths::{dipc_bin, include_dir, libsysv, repo_root, target_dir};
pub use process::{Process, run_bounded, stop_all};
pub use wait::{free_port, poll_until};
