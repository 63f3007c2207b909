//! The shared-memory edge of dipc: memfd regions, mappings and userfaultfd.
//!
//! A distributed segment lives on each node in a `memfd` owned by the node
//! daemon. Application processes map that memfd (received over the local
//! socket) and register the mapping with a userfaultfd, which they hand to
//! the daemon; the daemon then serves every fault of the mapping
//! (DESIGN.md, "the page-fault path"). This crate holds all the `unsafe`
//! that path needs, on both sides, behind a safe, bounds-checked API:
//!
//! * [`Memfd`] (daemon side): an owned memfd plus the daemon's own
//!   unregistered `MAP_SHARED` view of it, to fill, read and invalidate
//!   (`fallocate(PUNCH_HOLE)`) the node's copy of a segment;
//! * [`Uffd`] and [`UffdEvent`] (daemon side): a userfaultfd received from
//!   a process: read its fault events and resolve them (`UFFDIO_COPY`,
//!   `UFFDIO_CONTINUE`, `UFFDIO_WRITEPROTECT`, `UFFDIO_WAKE`);
//! * [`Mapping`], [`create_uffd`] and [`register`] (process side, used by
//!   libsysv): map a received memfd, create the process's userfaultfd with
//!   the features dipc needs, register a mapping with it;
//! * [`fdpass`] (both sides): send and receive descriptors with
//!   `SCM_RIGHTS` over the local socket.
//!
//! It may depend on `libc` and `thiserror` only: no async runtime, no
//! threads, no dipc crate (libsysv, which starts no threads, links it into
//! every application).
//!
//! Tested against the real kernel: `tests/uffd.rs` maps a memfd in the test
//! process, registers it and serves its faults from a thread with the
//! [`Uffd`] API (missing faults served by copy, minor faults by continue,
//! write-protect faults, hole punching, read-only registration); the
//! module tests check the bounds checks and memfd basics. The tests need
//! the right to create a userfaultfd (root, or
//! `vm.unprivileged_userfaultfd=1`).

mod error;
pub mod fdpass;
mod mapping;
mod memfd;
mod uffd;

pub use error::Error;
pub use mapping::{Mapping, Placement, Protection, poison_range};
pub use memfd::Memfd;
pub use uffd::{Uffd, UffdEvent, create_uffd, register, supported_features};

/// The size of a page of this machine (`sysconf(_SC_PAGESIZE)`).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 { n as u64 } else { 4096 }
    })
}

/// `len` rounded up to a multiple of the page size (saturating).
pub fn page_round_up(len: u64) -> u64 {
    let p = page_size();
    len.checked_add(p - 1).map_or(!(p - 1), |v| v & !(p - 1))
}

/// The last OS error as an `io::Error`.
pub(crate) fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}
