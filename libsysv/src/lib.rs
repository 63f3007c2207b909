//! libsysv: System V IPC made distributed by dipc, as a C library.
//!
//! This is the "libsysv.so" box of DESIGN.md: a `cdylib` (`libsysv.so`,
//! for `-lsysv` or `LD_PRELOAD`), a `staticlib` (`libsysv.a`) and an
//! `rlib` (for Rust tests and tools), exporting `shmget`, `shmat`, `shmdt`,
//! `shmctl`, `msgget`, `msgsnd`, `msgrcv`, `msgctl`, `semget`, `semop`,
//! `semtimedop` and `semctl` with the system prototypes (`msg` and `sem`
//! modules; their operations wait on connections of their own, see `msg`).
//! A C program includes `<sys/shm.h>` (`<sys/msg.h>`, `<sys/sem.h>`) as
//! usual and `include/dipc.h` for `IPC_DIPC`.
//!
//! * Calls that are not distributed go straight to the kernel by raw
//!   system call (`kernel` module), with the same results and errno as without
//!   libsysv.
//! * Distributed calls ([`route`]: the `IPC_DIPC` flag, keys selected by
//!   `DIPC_KEYS`, ids with [`DIPC_ID_BIT`], our attachments) go to the
//!   local node daemon over a Unix socket ([`client`], protocol
//!   [`dipc_wire::local`]). Shared memory pages are then served by the
//!   daemon through the process's userfaultfd ([`dipc_shmem`]).
//! * No daemon at the first distributed call: the process acts locally
//!   through the kernel, with one warning (`DIPC_FALLBACK=error` fails
//!   with `ECONNREFUSED` instead). See [`config`] for every variable.
//! * Ids: a distributed id has [`DIPC_ID_BIT`] (bit 30) set. A kernel id
//!   reaches that range only after one slot was reused 32768 times; calls
//!   on such an id still work (the daemon answers `EINVAL`, the call goes
//!   to the kernel) unless a distributed object has the very same id, and
//!   libsysv warns once when the kernel hands one out.
//! * `fork` keeps attached segments working in the child, and a dying
//!   daemon turns accesses to its segments into `SIGBUS`, never zeros or a
//!   hang (see the `state` module doc).
//!
//! libsysv starts no threads and runs no async runtime; every wait for the
//! daemon is bounded (`DIPC_TIMEOUT_MS`). It may depend on `dipc-wire`
//! (protocol), `dipc-shmem` (memfd, mmap, userfaultfd, fd passing) and
//! `libc`, never on the daemon. `unsafe` lives in `kernel` (raw system
//! calls), the C ABI module and a small `sys` module; every other module
//! forbids it.
//!
//! Tested by unit tests (configuration parsing, routing, the errno table,
//! the client against a fake daemon, the panic boundary) and by
//! `tests/c_programs.rs`, which compiles C programs with `cc` against the
//! built `libsysv.so` (linked with `-lsysv` and under `LD_PRELOAD`) and
//! checks that local calls behave exactly as the kernel's, that `IPC_DIPC`
//! without a daemon works locally with one warning, that
//! `DIPC_FALLBACK=error` gives `ECONNREFUSED`, and that `dipc.h` agrees
//! with the constants here; and by `tests/fake_node.rs`, where a small
//! in-process node serves real faults: attach/detach/ctl, fork, and the
//! node dying under a blocked fault and under an idle process (SIGBUS).
//! End-to-end tests with the real node live with the node.

pub mod client;
pub mod config;
mod direct;
mod error;
#[cfg(feature = "c-abi")]
mod ffi;
#[cfg(feature = "c-abi")]
mod kernel;
#[cfg(feature = "c-abi")]
mod msg;
pub mod route;
#[cfg(feature = "c-abi")]
mod sem;
#[cfg(feature = "c-abi")]
mod shm;
#[cfg(feature = "c-abi")]
mod state;
#[cfg(feature = "c-abi")]
mod sys;

pub use dipc_wire::DIPC_ID_BIT;
pub use error::Error;
/// The C ABI functions, callable from Rust too (the agents of `dipc bench`).
#[cfg(feature = "c-abi")]
pub use ffi::{shmat, shmctl, shmdt, shmget};
/// The message-queue and semaphore C ABI functions, callable from Rust too.
#[cfg(feature = "c-abi")]
pub use msg::{msgctl, msgget, msgrcv, msgsnd};
#[cfg(feature = "c-abi")]
pub use sem::{semctl, semget, semop, semtimedop};

/// The `shmget`/`msgget`/`semget` flag that makes an object distributed
/// (`0x00100000`, bit 20). No Linux `*get`, `shmat` or `msgsnd`/`msgrcv`
/// flag uses it: DIPC's historic `010000` is `SHM_NORESERVE` for `shmget`,
/// and bits 26-31 are `SHM_HUGE_*`. Stripped before the daemon or the
/// kernel sees the flags.
pub const IPC_DIPC: i32 = 0x0010_0000;
