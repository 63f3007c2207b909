//! dipc's benchmarks: page faults, queues and semaphores, each figure next
//! to its floor.
//!
//! This is the `bench/` box of the workspace, the engine of `dipc bench`
//! and `dipc demo`. It measures a table of scenarios ([`scenario`]):
//!
//! * floors, measured without dipc: a first touch of anonymous memory, a
//!   userfaultfd-served fault in one process, round trips and a 1 MiB
//!   fetch over dipc's TCP transport ([`floors`]); the kernel's own SysV
//!   queues and semaphores between local agent processes ([`ipc`]); and
//!   Redis, the peer a user would pick for queues ([`redis`], skipped
//!   when `redis-server` is missing);
//! * dipc itself: an embedded referee and up to five nodes ([`cluster`],
//!   the real daemons on loopback, each on its own thread and runtime) and
//!   agent processes ([`agent`]: the calling binary re-executed, calling
//!   libsysv through the `sysv` rlib, [`sys`], [`ipcops`]): remote reads,
//!   invalidations, ownership ping-pong ([`shm`]); reads from a third
//!   node, invalidating 2 and 4 copies, 256 MiB scans with 4 KiB and
//!   64 KiB units, a hot page read by 1..4 nodes, an atomic counter on
//!   1..4 nodes ([`shm2`]); message round trips and streams, semop,
//!   contended locks and barriers ([`ipc`]).
//!
//! Latencies are summarised with `hdrhistogram` after dropping a warm-up
//! ([`stats`]: p50, p90, p99, max), rates (MB/s, ops/s) derive from the
//! mean, and every dipc figure is reported with its ratio to the sum of
//! its floors measured in the same run, plus ratios to further references
//! ([`report`]), so the ratio survives a noisy machine where the value
//! does not. [`run::run`] runs the selection in interleaved slices; the
//! report prints as a table, serialises to JSON with the machine's
//! description ([`machine`]) and draws SVG plots ([`plot`]). Progress
//! bars (indicatif) go to stderr, only when it is a terminal.
//!
//! Dependencies: the daemons (`dipc-referee`, `dipc-node`), the transport
//! (`dipc-transport-tcp`), the shared-memory edge (`dipc-shmem`), and
//! libsysv (`sysv`) for the agents. Nothing depends on this crate but the
//! `dipc` binary.
//!
//! Tests: unit tests cover the statistics, the report's ratios, rates,
//! targets, table and JSON, the scenario table's consistency, the agent
//! protocol's parsing, RESP parsing, and the kernel queue and semaphore
//! commands for real; `tests/smoke.rs` runs floors and dipc rows end to end
//! with tiny sample counts (this package's `dipc-bench-agent` as the
//! agent) and checks the structure of the report and plots (never a
//! timing: numbers are measured here, not asserted).
//!
//! The only `unsafe` is the C ABI and raw syscalls of an agent, in [`sys`].
#![deny(unsafe_code)]

pub mod agent;
pub mod cluster;
mod error;
pub mod floors;
pub mod ipc;
pub mod ipcops;
pub mod logs;
pub mod machine;
pub mod netns;
pub mod plot;
pub mod rdma;
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
