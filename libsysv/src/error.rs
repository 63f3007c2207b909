//! The crate's one error type and its errno table.
//!
//! Inside libsysv errors carry what a user needs to act (which socket,
//! which operation); they become an errno only at the C boundary, through
//! [`Error::errno`], the one table. Errors from the kernel or the daemon
//! already are errnos and pass through unchanged.

use std::io;
use std::path::PathBuf;

/// Errors of libsysv.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call passed through to the kernel failed.
    #[error("kernel call failed with errno {0}")]
    Kernel(i32),
    /// The node daemon answered with this errno.
    #[error("node daemon answered errno {0}")]
    Node(i32),
    #[error("cannot connect to the dipc node daemon at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No daemon was reachable and `DIPC_FALLBACK=error`.
    #[error("no dipc node daemon at {path} (DIPC_FALLBACK=error)")]
    NoDaemon { path: PathBuf },
    #[error("connection to the dipc node daemon failed during {op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the dipc node daemon did not answer {op} in time")]
    Timeout { op: &'static str },
    #[error("the dipc node daemon closed the connection")]
    Closed,
    #[error("protocol error talking to the dipc node daemon: {0}")]
    Protocol(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("bad address")]
    Fault,
    #[error(transparent)]
    Shm(#[from] dipc_shmem::Error),
}

impl Error {
    /// The errno a C caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Kernel(e) | Error::Node(e) => *e,
            Error::Connect { .. } | Error::NoDaemon { .. } => libc::ECONNREFUSED,
            Error::Io { .. } | Error::Closed => libc::EIO,
            Error::Timeout { .. } => libc::ETIMEDOUT,
            Error::Protocol(_) => libc::EPROTO,
            Error::Config(_) | Error::Invalid(_) => libc::EINVAL,
            Error::Fault => libc::EFAULT,
            Error::Shm(e) => match e {
                dipc_shmem::Error::UffdNotPermitted { .. } => libc::EPERM,
                _ => match e.errno() {
                    // MAP_FIXED_NOREPLACE found a mapping in the way: shmat
                    // without SHM_REMAP reports that as EINVAL.
                    Some(libc::EEXIST) => libc::EINVAL,
                    Some(e) => e,
                    None => libc::EIO,
                },
            },
        }
    }

    /// The error of a failed kernel call (errno read right after it).
    #[cfg(feature = "c-abi")]
    pub(crate) fn last_kernel() -> Error {
        Error::Kernel(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        assert_eq!(Error::Kernel(libc::ENOENT).errno(), libc::ENOENT);
        assert_eq!(Error::Node(libc::EACCES).errno(), libc::EACCES);
        assert_eq!(
            Error::NoDaemon { path: "/x".into() }.errno(),
            libc::ECONNREFUSED
        );
        assert_eq!(Error::Timeout { op: "x" }.errno(), libc::ETIMEDOUT);
        assert_eq!(Error::Closed.errno(), libc::EIO);
        assert_eq!(Error::Fault.errno(), libc::EFAULT);
        let overlap = dipc_shmem::Error::Map {
            len: 1,
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(Error::Shm(overlap).errno(), libc::EINVAL);
        let nomem = dipc_shmem::Error::Map {
            len: 1,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        };
        assert_eq!(Error::Shm(nomem).errno(), libc::ENOMEM);
        let perm = dipc_shmem::Error::UffdNotPermitted {
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(Error::Shm(perm).errno(), libc::EPERM);
    }
}
