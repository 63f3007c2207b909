//! The crate's one error type.
//!
//! Every variant names the failing operation and keeps the kernel's
//! `io::Error` as its source, so the node daemon can log something a user
//! can act on and libsysv can turn it into an errno ([`Error::errno`]).

use std::io;

/// Errors of memfd, mapping and userfaultfd operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("memfd_create({name:?}) failed")]
    MemfdCreate {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot size memfd to {size} bytes")]
    Truncate {
        size: u64,
        #[source]
        source: io::Error,
    },
    #[error("mmap of {len} bytes failed")]
    Map {
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("range {off}+{len} is outside the region of {size} bytes")]
    OutOfBounds { off: u64, len: u64, size: u64 },
    #[error("the mapping is read-only")]
    ReadOnly,
    #[error("{op} failed")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "userfaultfd is not permitted for this process: run as root (CAP_SYS_PTRACE), \
         set sysctl vm.unprivileged_userfaultfd=1, or give the user read-write access \
         to /dev/userfaultfd"
    )]
    UffdNotPermitted {
        #[source]
        source: io::Error,
    },
    #[error("userfaultfd on this kernel lacks {what} (features offered: {offered:#x})")]
    UffdUnsupported { what: &'static str, offered: u64 },
    #[error("userfaultfd {op} at {addr:#x}+{len:#x} failed")]
    Uffd {
        op: &'static str,
        addr: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    /// The process that registered the range has exited (or exec'd): its
    /// faults need no answer any more.
    #[error("the process owning this userfaultfd has exited")]
    ProcessGone,
}

impl Error {
    /// The errno this error stands for, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::MemfdCreate { source, .. }
            | Error::Truncate { source, .. }
            | Error::Map { source, .. }
            | Error::Io { source, .. }
            | Error::UffdNotPermitted { source }
            | Error::Uffd { source, .. } => source.raw_os_error(),
            Error::OutOfBounds { .. } => Some(libc::EINVAL),
            Error::ReadOnly => Some(libc::EACCES),
            Error::UffdUnsupported { .. } => Some(libc::ENOSYS),
            Error::ProcessGone => Some(libc::ESRCH),
        }
    }
}
