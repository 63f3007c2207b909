//! userfaultfd: the ABI of `<linux/userfaultfd.h>` and safe wrappers.
//!
//! The process side ([`create_uffd`], [`register`]) runs in the
//! application (libsysv): a userfaultfd belongs to the memory of the
//! process that creates it, so the process must create and register it,
//! then hand it to the daemon. The daemon side ([`Uffd`]) reads the fault
//! events and resolves them with the ioctls below.
//!
//! The ioctl structures are defined here rather than taken from a crate:
//! we need `UFFDIO_CONTINUE` and write protection on shmem (Linux 5.13 /
//! 5.19), and the ABI is small and stable. Numbers are those of the
//! generic `_IOC` encoding used by x86_64 and aarch64.
//!
//! Kernel behaviour these wrappers encode (DESIGN.md, Firecracker):
//! `EEXIST` from `UFFDIO_COPY`/`UFFDIO_CONTINUE` means another resolution
//! won the race (benign, but the kernel then wakes nobody, so we wake);
//! `EAGAIN` means the address space is changing or the operation was
//! partial (retry the rest); `ESRCH` means the process has exited.

use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::{Error, last_os_error};

const UFFD_API: u64 = 0xAA;

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAA << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const IOWR: u64 = IOC_READ | IOC_WRITE;

const UFFDIO_API: u64 = ioc(IOWR, 0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = ioc(IOWR, 0x00, size_of::<UffdioRegister>());
const UFFDIO_WAKE: u64 = ioc(IOC_READ, 0x02, size_of::<UffdioRange>());
const UFFDIO_COPY: u64 = ioc(IOWR, 0x03, size_of::<UffdioCopy>());
const UFFDIO_WRITEPROTECT: u64 = ioc(IOWR, 0x06, size_of::<UffdioWriteprotect>());
const UFFDIO_CONTINUE: u64 = ioc(IOWR, 0x07, size_of::<UffdioContinue>());
const UFFDIO_POISON: u64 = ioc(IOWR, 0x08, size_of::<UffdioPoison>());
/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd` (`_IO(0xAA, 0x00)`).
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;

/// Bits of `uffdio_register.ioctls` (1 << `_UFFDIO_*`).
const IOCTL_BIT_WRITEPROTECT: u64 = 1 << 0x06;
const IOCTL_BIT_CONTINUE: u64 = 1 << 0x07;

const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
const FEATURE_MISSING_SHMEM: u64 = 1 << 5;
const FEATURE_MINOR_SHMEM: u64 = 1 << 10;
const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const FEATURE_POISON: u64 = 1 << 14;

const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const REGISTER_MODE_MINOR: u64 = 1 << 2;

const COPY_MODE_WP: u64 = 1 << 1;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
const CONTINUE_MODE_WP: u64 = 1 << 1;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;

const PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
const PAGEFAULT_FLAG_WP: u64 = 1 << 1;
const PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

/// `sizeof(struct uffd_msg)`.
const MSG_SIZE: usize = 32;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioContinue {
    range: UffdioRange,
    mode: u64,
    mapped: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioPoison {
    range: UffdioRange,
    mode: u64,
    updated: i64,
}

/// Issue a userfaultfd ioctl whose argument is the `#[repr(C)]` structure
/// `arg` (all the structures above are plain integers).
fn ioctl<T>(fd: BorrowedFd<'_>, req: u64, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `req` is one of the UFFDIO_* requests whose argument is a
    // `T` as laid out in <linux/userfaultfd.h>; `arg` is a valid, exclusive
    // pointer to one for the duration of the call. The kernel reads it and
    // writes only the structure's own output fields.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if rc == 0 {
        Ok(())
    } else {
        Err(last_os_error())
    }
}

fn new_uffd_fd(flags: libc::c_int) -> Result<OwnedFd, Error> {
    // SAFETY: the userfaultfd syscall takes one integer and returns a new
    // file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this new descriptor to us.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
    }
    let err = last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(Error::Io {
            op: "userfaultfd()",
            source: err,
        });
    }
    // Not allowed through the syscall (vm.unprivileged_userfaultfd=0 and no
    // CAP_SYS_PTRACE): /dev/userfaultfd grants it by file permissions.
    let dev = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
    {
        Ok(f) => f,
        Err(_) => return Err(Error::UffdNotPermitted { source: err }),
    };
    // SAFETY: USERFAULTFD_IOC_NEW takes the flags as an integer argument
    // and returns a new file descriptor or -1.
    let fd = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            USERFAULTFD_IOC_NEW as libc::Ioctl,
            flags as libc::c_long,
        )
    };
    if fd < 0 {
        return Err(Error::UffdNotPermitted {
            source: last_os_error(),
        });
    }
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The userfaultfd features this kernel offers (probed once with a
/// throw-away userfaultfd, since the API handshake can be done only once
/// per descriptor).
pub fn supported_features() -> Result<u64, Error> {
    static FEATURES: OnceLock<u64> = OnceLock::new();
    if let Some(f) = FEATURES.get() {
        return Ok(*f);
    }
    let fd = new_uffd_fd(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    ioctl(fd.as_fd(), UFFDIO_API, &mut api).map_err(|source| Error::Io {
        op: "UFFDIO_API (probing features)",
        source,
    })?;
    Ok(*FEATURES.get_or_init(|| api.features))
}

/// Create this process's userfaultfd (`O_CLOEXEC | O_NONBLOCK`) and do the
/// API handshake with the features dipc needs: faults on missing and on
/// present-but-unmapped (minor) shmem pages, write protection of shmem
/// pages, and write-protecting unpopulated pages when offered.
///
/// Fails with [`Error::UffdNotPermitted`] when the process may not create
/// one, [`Error::UffdUnsupported`] when the kernel lacks a feature.
pub fn create_uffd() -> Result<OwnedFd, Error> {
    let offered = supported_features()?;
    let required = FEATURE_MISSING_SHMEM | FEATURE_MINOR_SHMEM;
    if offered & required != required {
        return Err(Error::UffdUnsupported {
            what: "missing and minor faults on shmem (Linux 5.14+)",
            offered,
        });
    }
    let wanted = required
        | FEATURE_WP_HUGETLBFS_SHMEM
        | FEATURE_PAGEFAULT_FLAG_WP
        | FEATURE_WP_UNPOPULATED
        | FEATURE_POISON;
    let fd = new_uffd_fd(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    let mut api = UffdioApi {
        api: UFFD_API,
        features: wanted & offered,
        ioctls: 0,
    };
    ioctl(fd.as_fd(), UFFDIO_API, &mut api).map_err(|source| Error::Io {
        op: "UFFDIO_API",
        source,
    })?;
    Ok(fd)
}

/// Register `[addr, addr + len)` (page aligned) with `uffd` for missing and
/// minor faults, plus write-protect faults when `wp` (a writable
/// attachment; a read-only one cannot take write faults).
pub fn register(uffd: BorrowedFd<'_>, addr: u64, len: u64, wp: bool) -> Result<(), Error> {
    let mut mode = REGISTER_MODE_MISSING | REGISTER_MODE_MINOR;
    if wp {
        mode |= REGISTER_MODE_WP;
    }
    let mut reg = UffdioRegister {
        range: UffdioRange { start: addr, len },
        mode,
        ioctls: 0,
    };
    ioctl(uffd, UFFDIO_REGISTER, &mut reg).map_err(|source| Error::Uffd {
        op: "UFFDIO_REGISTER",
        addr,
        len,
        source,
    })?;
    let mut needed = IOCTL_BIT_CONTINUE;
    if wp {
        needed |= IOCTL_BIT_WRITEPROTECT;
    }
    if reg.ioctls & needed != needed {
        return Err(Error::UffdUnsupported {
            what: if wp {
                "UFFDIO_CONTINUE and UFFDIO_WRITEPROTECT on shmem"
            } else {
                "UFFDIO_CONTINUE on shmem"
            },
            offered: supported_features().unwrap_or(0),
        });
    }
    Ok(())
}

/// One event read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdEvent {
    /// A thread faulted at `addr` (not page aligned: round it down).
    /// `write`: the access was a write; `wp`: it hit a write-protected
    /// page (present, readable); `minor`: the page is present in the memfd
    /// but not mapped in this process (resolve with `continue_`), else it
    /// is missing (resolve with `copy`).
    Fault {
        addr: u64,
        write: bool,
        wp: bool,
        minor: bool,
    },
    /// `madvise(MADV_REMOVE/DONTNEED)` of a range (only with
    /// `UFFD_FEATURE_EVENT_REMOVE`, which dipc does not request).
    Remove { start: u64, end: u64 },
    /// `munmap` of a range (only with `UFFD_FEATURE_EVENT_UNMAP`).
    Unmap { start: u64, end: u64 },
    /// Any other event, by its code (a fork event's descriptor is closed).
    Other(u8),
}

fn ne_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Decode one `struct uffd_msg` (32 bytes).
fn decode_msg(m: &[u8; MSG_SIZE]) -> UffdEvent {
    match m[0] {
        EVENT_PAGEFAULT => {
            let flags = ne_u64(m, 8);
            UffdEvent::Fault {
                addr: ne_u64(m, 16),
                write: flags & PAGEFAULT_FLAG_WRITE != 0,
                wp: flags & PAGEFAULT_FLAG_WP != 0,
                minor: flags & PAGEFAULT_FLAG_MINOR != 0,
            }
        }
        EVENT_REMOVE => UffdEvent::Remove {
            start: ne_u64(m, 8),
            end: ne_u64(m, 16),
        },
        EVENT_UNMAP => UffdEvent::Unmap {
            start: ne_u64(m, 8),
            end: ne_u64(m, 16),
        },
        EVENT_FORK => {
            let ufd = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]) as libc::c_int;
            if ufd >= 0 {
                // SAFETY: a fork event carries a new descriptor installed in
                // our table for us; nobody else knows it, so we own it.
                drop(unsafe { OwnedFd::from_raw_fd(ufd) });
            }
            UffdEvent::Other(EVENT_FORK)
        }
        other => UffdEvent::Other(other),
    }
}

/// Daemon side: a userfaultfd received from a process.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Wrap a userfaultfd (received with `SCM_RIGHTS`).
    pub fn from_fd(fd: OwnedFd) -> Uffd {
        Uffd { fd }
    }

    /// The descriptor, to poll for readability.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Append every pending event to `out` without blocking (the
    /// descriptor is non-blocking). Nothing pending is not an error.
    pub fn read_events(&self, out: &mut Vec<UffdEvent>) -> Result<(), Error> {
        let mut buf = [0u8; MSG_SIZE * 32];
        loop {
            // SAFETY: read into a buffer we own, at most its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                let err = last_os_error();
                return match err.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => Err(Error::Io {
                        op: "read from userfaultfd",
                        source: err,
                    }),
                };
            }
            if n == 0 {
                return Ok(());
            }
            for chunk in buf[..n as usize].chunks_exact(MSG_SIZE) {
                let mut m = [0u8; MSG_SIZE];
                m.copy_from_slice(chunk);
                out.push(decode_msg(&m));
            }
            if (n as usize) < buf.len() {
                return Ok(());
            }
        }
    }

    fn uffd_err(op: &'static str, addr: u64, len: u64, source: std::io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ESRCH) {
            Error::ProcessGone
        } else {
            Error::Uffd {
                op,
                addr,
                len,
                source,
            }
        }
    }

    /// Resolve a missing fault: copy `src` (a whole number of pages) to
    /// `dst` (page aligned) in the process, atomically, and wake the
    /// faulting threads. With `write_protect` the new page is mapped
    /// write-protected (the node holds it read-only).
    ///
    /// A page already present (`EEXIST`: another thread resolved it) is
    /// not an error; `EAGAIN` (address space changing, or partial copy) is
    /// retried for the remainder.
    pub fn copy(&self, dst: u64, src: &[u8], write_protect: bool) -> Result<(), Error> {
        let mut done = 0usize;
        while done < src.len() {
            let mut c = UffdioCopy {
                dst: dst + done as u64,
                src: src[done..].as_ptr() as u64,
                len: (src.len() - done) as u64,
                mode: if write_protect { COPY_MODE_WP } else { 0 },
                copy: 0,
            };
            match ioctl(self.as_fd(), UFFDIO_COPY, &mut c) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if c.copy > 0 {
                        done += c.copy as usize;
                        continue;
                    }
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => std::thread::yield_now(),
                        Some(libc::EEXIST) => {
                            return self.wake(dst, src.len() as u64);
                        }
                        _ => return Err(Self::uffd_err("UFFDIO_COPY", dst, src.len() as u64, e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolve a minor fault: map the memfd's pages of `[addr, addr + len)`
    /// (page aligned, already present in the memfd) in the process, and wake
    /// the faulting threads; write-protected with `write_protect`.
    pub fn continue_(&self, addr: u64, len: u64, write_protect: bool) -> Result<(), Error> {
        let mut done = 0u64;
        while done < len {
            let mut c = UffdioContinue {
                range: UffdioRange {
                    start: addr + done,
                    len: len - done,
                },
                mode: if write_protect { CONTINUE_MODE_WP } else { 0 },
                mapped: 0,
            };
            match ioctl(self.as_fd(), UFFDIO_CONTINUE, &mut c) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if c.mapped > 0 {
                        done += c.mapped as u64;
                        continue;
                    }
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => std::thread::yield_now(),
                        Some(libc::EEXIST) => return self.wake(addr, len),
                        _ => return Err(Self::uffd_err("UFFDIO_CONTINUE", addr, len, e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Set (`protect`) or clear write protection of the mapped pages of
    /// `[addr, addr + len)`. Clearing with `wake` also wakes threads waiting
    /// on a write-protect fault there; `wake` is ignored when protecting
    /// (the kernel wakes nobody then).
    pub fn write_protect(
        &self,
        addr: u64,
        len: u64,
        protect: bool,
        wake: bool,
    ) -> Result<(), Error> {
        let mut mode = 0;
        if protect {
            mode |= WRITEPROTECT_MODE_WP;
        }
        // The kernel refuses DONTWAKE together with WP (it never wakes
        // when protecting anyway).
        if !protect && !wake {
            mode |= WRITEPROTECT_MODE_DONTWAKE;
        }
        let mut w = UffdioWriteprotect {
            range: UffdioRange { start: addr, len },
            mode,
        };
        loop {
            match ioctl(self.as_fd(), UFFDIO_WRITEPROTECT, &mut w) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {
                    std::thread::yield_now()
                }
                Err(e) => return Err(Self::uffd_err("UFFDIO_WRITEPROTECT", addr, len, e)),
            }
        }
    }

    /// Poison the unmapped pages of `[addr, addr + len)` (page aligned):
    /// every access to them, including the faults waiting there (woken
    /// now), gets `SIGBUS`, until the range is unmapped (Linux 6.6+,
    /// `UFFDIO_POISON`). Fails with `EEXIST` if a page is mapped, and on
    /// older kernels.
    pub fn poison(&self, addr: u64, len: u64) -> Result<(), Error> {
        let mut done = 0u64;
        while done < len {
            let mut p = UffdioPoison {
                range: UffdioRange {
                    start: addr + done,
                    len: len - done,
                },
                mode: 0,
                updated: 0,
            };
            match ioctl(self.as_fd(), UFFDIO_POISON, &mut p) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if p.updated > 0 {
                        done += p.updated as u64;
                        continue;
                    }
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => std::thread::yield_now(),
                        _ => return Err(Self::uffd_err("UFFDIO_POISON", addr, len, e)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Wake the threads waiting on a fault in `[addr, addr + len)` (after
    /// the page was installed some other way, e.g. through the daemon's
    /// own view for a missing fault).
    pub fn wake(&self, addr: u64, len: u64) -> Result<(), Error> {
        let mut r = UffdioRange { start: addr, len };
        ioctl(self.as_fd(), UFFDIO_WAKE, &mut r)
            .map_err(|e| Self::uffd_err("UFFDIO_WAKE", addr, len, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_header() {
        // Values of the _IOWR/_IOR macros on x86_64 and aarch64.
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
        assert_eq!(UFFDIO_CONTINUE, 0xC020_AA07);
        assert_eq!(UFFDIO_POISON, 0xC020_AA08);
    }

    #[test]
    fn decode_fault_and_remove() {
        let mut m = [0u8; MSG_SIZE];
        m[0] = EVENT_PAGEFAULT;
        m[8..16].copy_from_slice(&(PAGEFAULT_FLAG_WRITE | PAGEFAULT_FLAG_WP).to_ne_bytes());
        m[16..24].copy_from_slice(&0x7000_1234u64.to_ne_bytes());
        assert_eq!(
            decode_msg(&m),
            UffdEvent::Fault {
                addr: 0x7000_1234,
                write: true,
                wp: true,
                minor: false
            }
        );
        m[8..16].copy_from_slice(&PAGEFAULT_FLAG_MINOR.to_ne_bytes());
        assert!(matches!(
            decode_msg(&m),
            UffdEvent::Fault {
                minor: true,
                write: false,
                ..
            }
        ));
        m[0] = EVENT_REMOVE;
        m[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        m[16..24].copy_from_slice(&0x3000u64.to_ne_bytes());
        assert_eq!(
            decode_msg(&m),
            UffdEvent::Remove {
                start: 0x1000,
                end: 0x3000
            }
        );
        m[0] = EVENT_UNMAP;
        assert_eq!(
            decode_msg(&m),
            UffdEvent::Unmap {
                start: 0x1000,
                end: 0x3000
            }
        );
        m[0] = 0x14;
        assert_eq!(decode_msg(&m), UffdEvent::Other(0x14));
    }
}
