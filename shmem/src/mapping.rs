//! `mmap` of a memfd, owned: unmapped on drop.
//!
//! Both sides map segment memfds: the daemon its own unregistered view
//! (inside [`crate::Memfd`]), an application process the memfd it received
//! at `shmat` (libsysv keeps the [`Mapping`] in its attachment table until
//! `shmdt`). Every mapping is `MAP_SHARED` and `MADV_NOHUGEPAGE`: a
//! transparent huge page would make one fault cover 2 MiB, which the
//! coherence protocol, working in units of 4 KiB and up, cannot follow
//! (the Firecracker/Cloud Hypervisor lesson in DESIGN.md).
//!
//! A [`Mapping`] only hands out copies ([`Mapping::read_at`],
//! [`Mapping::write_at`]), never references: other processes write the same
//! pages concurrently, so a `&[u8]` into them could change under the
//! borrow. The copies are plain `memcpy`s, like `read(2)` of a file being
//! written.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{Error, last_os_error, page_round_up, page_size};

/// Where to place a new mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the kernel chooses (`shmat(id, NULL, ..)`).
    Anywhere,
    /// Exactly at `addr` (page aligned). With `replace == false`
    /// (`MAP_FIXED_NOREPLACE`) the call fails with `EEXIST` if anything is
    /// mapped there already; with `replace == true` (`MAP_FIXED`, for
    /// `SHM_REMAP`) whatever was there is unmapped first.
    Fixed { addr: u64, replace: bool },
}

/// Access rights of a new mapping (always readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    pub write: bool,
    pub exec: bool,
}

impl Protection {
    pub const READ_ONLY: Protection = Protection {
        write: false,
        exec: false,
    };
    pub const READ_WRITE: Protection = Protection {
        write: true,
        exec: false,
    };

    fn bits(self) -> libc::c_int {
        let mut p = libc::PROT_READ;
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// A `MAP_SHARED` mapping of (a prefix of) a file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    len: usize,
    writable: bool,
}

impl Mapping {
    /// Map the first `len` bytes (rounded up to pages) of `fd`.
    pub fn map(
        fd: BorrowedFd<'_>,
        len: u64,
        place: Placement,
        prot: Protection,
    ) -> Result<Mapping, Error> {
        let map_len = page_round_up(len);
        let einval = |source| Error::Map { len, source };
        if map_len == 0 || map_len > isize::MAX as u64 {
            return Err(einval(std::io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let (hint, flags) = match place {
            Placement::Anywhere => (0u64, libc::MAP_SHARED),
            Placement::Fixed { addr, replace } => {
                if addr == 0 || addr % page_size() != 0 || addr.checked_add(map_len).is_none() {
                    return Err(einval(std::io::Error::from_raw_os_error(libc::EINVAL)));
                }
                let fixed = if replace {
                    libc::MAP_FIXED
                } else {
                    libc::MAP_FIXED_NOREPLACE
                };
                (addr, libc::MAP_SHARED | fixed)
            }
        };
        // SAFETY: mapping a file creates new memory and does not touch any
        // existing Rust object, except with MAP_FIXED, which replaces what is
        // at `hint`: the caller asked for exactly that (SHM_REMAP semantics:
        // the range belongs to the application, not to Rust code).
        let p = unsafe {
            libc::mmap(
                hint as *mut c_void,
                map_len as usize,
                prot.bits(),
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Map {
                len,
                source: last_os_error(),
            });
        }
        // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat it as a
        // hint: refuse a mapping placed elsewhere.
        if let Placement::Fixed { addr, .. } = place
            && p as u64 != addr
        {
            // SAFETY: `p` is the mapping just created, of `map_len` bytes.
            unsafe { libc::munmap(p, map_len as usize) };
            return Err(einval(std::io::Error::from_raw_os_error(libc::EEXIST)));
        }
        let m = Mapping {
            addr: p as usize,
            len: map_len as usize,
            writable: prot.write,
        };
        // SAFETY: madvise on our own mapping; MADV_NOHUGEPAGE only changes
        // how future faults are served.
        unsafe { libc::madvise(p, map_len as usize, libc::MADV_NOHUGEPAGE) };
        Ok(m)
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes (a multiple of the page size).
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Never true: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Was the mapping made writable?
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Is `addr` inside this mapping?
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.addr() && addr - self.addr() < self.len()
    }

    fn check(&self, off: u64, len: usize) -> Result<usize, Error> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.len as u64 => Ok(off as usize),
            _ => Err(Error::OutOfBounds {
                off,
                len: len as u64,
                size: self.len as u64,
            }),
        }
    }

    /// Copy `buf.len()` bytes at `off` out of the mapping.
    ///
    /// If the mapping is registered with a userfaultfd, this access faults
    /// like any other and blocks until the fault is served.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        let off = self.check(off, buf.len())?;
        // SAFETY: `off + buf.len()` is inside the mapping (checked), which is
        // alive while `self` is; `buf` is a distinct Rust buffer, so the
        // ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.addr + off) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copy `data` into the mapping at `off`.
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let off = self.check(off, data.len())?;
        // SAFETY: the destination is inside the mapping (checked), which is
        // writable and alive while `self` is; `data` is a distinct buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (self.addr + off) as *mut u8, data.len())
        };
        Ok(())
    }

    /// Replace the whole range with a mapping of an empty memfd, so that
    /// every later access raises `SIGBUS` instead of reading stale data or
    /// zeros. Used when the pages can no longer be kept coherent (the
    /// daemon is gone, or a forked child could not re-register). The range
    /// stays reserved and is still unmapped on drop.
    pub fn poison(&self) -> Result<(), Error> {
        // SAFETY: the range is this mapping's own; nothing in Rust holds a
        // reference into it (only copies are handed out).
        unsafe { poison_range(self.addr as u64, self.len as u64) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `Mapping::map` and is unmapped
        // exactly once, here; no reference into it exists (only copies).
        unsafe { libc::munmap(self.addr as *mut c_void, self.len) };
    }
}

/// Replace `[addr, addr + len)` with a `MAP_SHARED` mapping of an empty
/// memfd: every access then raises `SIGBUS`.
///
/// Only raw system calls, no allocation: async-signal-safe, so a signal
/// handler may call it (libsysv does, when its daemon dies while threads
/// may be blocked in faults on the range).
///
/// # Safety
/// The range must be page aligned and no Rust reference may point into it:
/// its contents are gone afterwards.
pub unsafe fn poison_range(addr: u64, len: u64) -> Result<(), Error> {
    // SAFETY: the name is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(c"dipc-dead".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Io {
            op: "memfd_create for poisoning",
            source: last_os_error(),
        });
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the caller guarantees that nothing Rust-visible lives in the
    // range; MAP_FIXED atomically replaces the old mapping there.
    let p = unsafe {
        libc::mmap(
            addr as *mut c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Map {
            len,
            source: last_os_error(),
        });
    }
    Ok(())
}
