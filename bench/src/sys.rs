//! The System V calls of an agent, through libsysv (the only unsafe code of
//! this crate).
//!
//! An agent process calls `shmget`/`shmat`/`shmdt`/`shmctl` exactly as an
//! application would, through the `sysv` rlib (libsysv's C ABI functions),
//! with `IPC_DIPC` on `shmget`. The attached segment is wrapped in
//! [`Attached`], whose byte accesses are bounds-checked and volatile: each
//! access is one real load or store at the address the benchmark times, so
//! the compiler can neither drop it nor move it out of the timed region.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;

use crate::sysv_abi as abi;

/// `shmget(key, size, flags)`; the id, or the errno as an `io::Error`.
pub fn shmget(key: i32, size: u64, flags: i32) -> io::Result<i32> {
    let size = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: shmget takes no pointers; any argument values are allowed.
    let id = unsafe { abi::shmget(key, size, flags) };
    if id < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(id)
    }
}

/// `shmctl(id, IPC_RMID, NULL)`.
pub fn remove(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID does not read or write the buffer argument, so a
    // null pointer is allowed.
    let rc = unsafe { abi::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A segment attached read-write at an address the kernel (or libsysv)
/// chose; detached on drop.
#[derive(Debug)]
pub struct Attached {
    id: i32,
    addr: usize,
    len: usize,
}

impl Attached {
    /// `shmat(id, NULL, 0)`; `len` is the size the segment was looked up
    /// with (at most its real size: `shmget` fails otherwise).
    pub fn attach(id: i32, len: u64) -> io::Result<Attached> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a null address lets the implementation choose where to
        // map; no existing memory is replaced.
        let p = unsafe { abi::shmat(id, std::ptr::null(), 0) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Attached {
            id,
            addr: p as usize,
            len,
        })
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    /// Bytes accessible through [`Attached::read`] and [`Attached::write`].
    pub fn size(&self) -> u64 {
        self.len as u64
    }

    /// One volatile load of the byte at `off` (faults like any access of
    /// an application would). `None` past the end.
    pub fn read(&self, off: u64) -> Option<u8> {
        let off = usize::try_from(off).ok().filter(|&o| o < self.len)?;
        // SAFETY: `off` is inside the attachment, which stays mapped while
        // `self` lives; other processes write it concurrently, which a
        // volatile byte load tolerates (no reference is formed).
        Some(unsafe { std::ptr::read_volatile((self.addr + off) as *const u8) })
    }

    /// One volatile store of `v` at `off`; false past the end.
    pub fn write(&self, off: u64, v: u8) -> bool {
        let Some(off) = usize::try_from(off).ok().filter(|&o| o < self.len) else {
            return false;
        };
        // SAFETY: `off` is inside the attachment, mapped read-write while
        // `self` lives; no Rust reference points into it.
        unsafe { std::ptr::write_volatile((self.addr + off) as *mut u8, v) };
        true
    }

    /// `shmdt`, reporting its error (drop ignores it).
    pub fn detach(self) -> io::Result<()> {
        let r = self.shmdt();
        std::mem::forget(self);
        r
    }

    fn shmdt(&self) -> io::Result<()> {
        // SAFETY: `addr` is what shmat returned and is detached once (by
        // `detach`, which forgets `self`, or by drop).
        let rc = unsafe { abi::shmdt(self.addr as *const c_void) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Nothing to do about a failed detach of a process about to exit.
        let _ = self.shmdt();
    }
}
