//! The kernel's System V IPC, by raw system call.
//!
//! libsysv exports `shmget` and friends, so `libc::shmget` would resolve to
//! our own symbol and recurse: calls that are not distributed go to the
//! kernel with `syscall(SYS_shmget, ..)`, exactly as glibc's wrappers do on
//! x86_64 and aarch64 (which pass the arguments through unchanged; no
//! `IPC_64` juggling on 64-bit targets). Results and errno are the
//! kernel's.

use std::ffi::c_void;

use crate::Error;

fn check(rc: libc::c_long) -> Result<libc::c_long, Error> {
    if rc == -1 {
        Err(Error::last_kernel())
    } else {
        Ok(rc)
    }
}

/// `shmget(2)`.
pub fn shmget(key: libc::key_t, size: usize, flags: libc::c_int) -> Result<libc::c_int, Error> {
    // SAFETY: shmget takes integers only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_shmget,
            libc::c_long::from(key),
            size as libc::c_long,
            libc::c_long::from(flags),
        )
    };
    check(rc).map(|id| id as libc::c_int)
}

/// `shmat(2)`.
///
/// # Safety
/// With a non-NULL `addr` (and `SHM_REMAP`) the kernel replaces what is
/// mapped there: the caller (the C program) owns that memory.
pub unsafe fn shmat(
    id: libc::c_int,
    addr: *const c_void,
    flags: libc::c_int,
) -> Result<*mut c_void, Error> {
    // SAFETY: forwarded as is; the caller answers for `addr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_shmat,
            libc::c_long::from(id),
            addr,
            libc::c_long::from(flags),
        )
    };
    check(rc).map(|a| a as *mut c_void)
}

/// `shmdt(2)`.
///
/// # Safety
/// Unmaps the attachment at `addr`: the caller (the C program) owns it.
pub unsafe fn shmdt(addr: *const c_void) -> Result<(), Error> {
    // SAFETY: forwarded as is; the caller answers for `addr`.
    check(unsafe { libc::syscall(libc::SYS_shmdt, addr) }).map(drop)
}

/// `shmctl(2)`.
///
/// # Safety
/// `buf` must be NULL or valid for the access `cmd` implies (the kernel
/// reports EFAULT for a bad pointer, but may write through a good one).
pub unsafe fn shmctl(
    id: libc::c_int,
    cmd: libc::c_int,
    buf: *mut libc::shmid_ds,
) -> Result<libc::c_int, Error> {
    // SAFETY: forwarded as is; the caller answers for `buf`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_shmctl,
            libc::c_long::from(id),
            libc::c_long::from(cmd),
            buf,
        )
    };
    check(rc).map(|r| r as libc::c_int)
}
