//! dipc's benchmarks: page-fault latency, each figure next to its floor.
//!
//! This is the `bench/` box of the workspace, the engine of `dipc bench`
//! and `dipc demo`. It measures a table of scenarios ([`scenario`]):
//!
//! * floors ([`floors`]), measured alone in this process: a first touch of
//!   anonymous memory, a userfaultfd-served fault in one process, a 4 KiB
//!   round trip over dipc's TCP transport;
//! * dipc itself ([`shm`]): an embedded referee and two nodes
//!   ([`cluster`], the real daemons on loopback, each on its own thread and
//!   runtime) and one agent process per node ([`agent`]: the calling
//!   binary re-executed, calling libsysv's `shmget`/`shmat` through the
//!   `sysv` rlib, [`sys`]) fault on one segment: remote reads, writes that
//!   invalidate a copy, ownership ping-pong.
//!
//! Latencies are summarised with `hdrhistogram` after dropping a warm-up
//! ([`stats`]: p50, p90, p99, max), and every dipc figure is reported with
//! its ratio to the sum of its floors measured in the same run
//! ([`report`]), so the ratio survives a noisy machine where the value
//! does not. [`run::run`] runs the selection; the report prints as a
//! table and serialises to JSON with the machine's description
//! ([`machine`]). Progress bars (indicatif) go to stderr.
//!
//! Dependencies: the daemons (`dipc-referee`, `dipc-node`), the transport
//! (`dipc-transport-tcp`), the shared-memory edge (`dipc-shmem`), and
//! libsysv (`sysv`) for the agents. Nothing depends on this crate but the
//! `dipc` binary.
//!
//! Tests: unit tests cover the statistics, the report's ratios, table and
//! JSON, the scenario table's consistency and the agent protocol's
//! parsing; `tests/smoke.rs` runs the three floors for real with tiny
//! sample counts and checks the structure of the report (never a timing:
//! numbers are measured here, not asserted). The dipc scenarios need
//! agent processes, so they are exercised through the `dipc` binary
//! (`dipc demo`).
//!
//! The only `unsafe` is the C ABI calls of an agent, in [`sys`].
#![deny(unsafe_code)]

pub mod agent;
pub mod cluster;
mod error;
pub mod floors;
pub mod ipc;
pub mod ipcops;
pub mod logs;
pub mod machine;
pub mod plot;
pub mod redis;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shm;
pub mod shm2;
pub mod stats;
pub mod sys;

pub use error::Error;
pub use report::Report;
pub use run::{Options, run};
pub use scenario::{Kind, Profile, Rate, SCENARIOS, Scenario};

/// libsysv's C ABI (`shmget`, `shmat`, `shmdt`, `shmctl`).
use sysv as sysv_abi;
