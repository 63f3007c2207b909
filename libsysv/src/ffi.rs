//! The C ABI: `shmget`, `shmat`, `shmdt`, `shmctl` with the prototypes of
//! `<sys/shm.h>`.
//!
//! Every exported body runs inside [`boundary`]: a Rust error sets errno
//! (from the one table, [`crate::Error::errno`]) and returns the C failure
//! value; a panic sets errno to `EIO` and returns the failure value too,
//! never unwinding into C (the crate keeps `panic = "unwind"` so that this
//! catch works). Raw pointers become references only through the checked
//! helpers [`in_ref`] and [`out_ref`]. Calls that are not distributed go to
//! the kernel with the caller's own arguments ([`crate::kernel`]).
//!
//! Message queues and semaphore sets (later) plug in the same way: route
//! with [`crate::route`], do the distributed half in their own module,
//! fall through to `kernel::`.

use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Error;
use crate::kernel;
use crate::route::{Routed, is_dipc_id};
use crate::shm::{self, Ctl, CtlDone, SetArgs};
use crate::sys::{set_errno, zeroed_shmid_ds};

/// Run `f` at the C boundary: its value, or `fail` with errno set.
pub(crate) fn boundary<T>(fail: T, f: impl FnOnce() -> Result<T, Error>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e.errno());
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}

/// Can this process read (and, with `write`, write) the `len` bytes at
/// `p`? The kernel's IPC calls answer `EFAULT` for memory that is not
/// mapped so; a reference to it would crash the program instead. The
/// kernel is asked: `process_vm_readv` on ourselves copies the bytes out
/// (failing with `EFAULT` where they cannot be read), and for `write`
/// `process_vm_writev` copies the same bytes back (failing where they
/// cannot be written). Two or three system calls, only on the calls that
/// pass a buffer.
fn accessible(p: *const u8, len: usize, write: bool) -> bool {
    let mut copy = vec![0u8; len];
    // SAFETY: `copy` is ours, `len` bytes; the bytes written back are
    // those just read, so the memory is unchanged when it is writable.
    unsafe {
        kernel_copy(copy.as_mut_ptr(), p, len, false)
            && (!write || kernel_copy(copy.as_mut_ptr(), p, len, true))
    }
}

/// Copy `len` bytes between our own buffer `local` and `remote` through
/// the kernel: from `remote` with `process_vm_readv`, or to it with
/// `process_vm_writev` (`to_remote`), on this very process. A bad
/// `remote` address is a short count, not a fault. True when all `len`
/// bytes were copied.
///
/// # Safety
/// `local` must be valid for `len` bytes: writable when reading from
/// `remote`, readable when writing to it.
unsafe fn kernel_copy(local: *mut u8, remote: *const u8, len: usize, to_remote: bool) -> bool {
    let local = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // SAFETY: `local` is valid for the access by the caller's contract;
    // the kernel accesses `remote` on our behalf and reports a bad address
    // as an error instead of faulting.
    let n = unsafe {
        if to_remote {
            libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
        } else {
            libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
        }
    };
    usize::try_from(n).ok() == Some(len)
}

/// `EFAULT` unless the `len` bytes at `p` are readable now: one byte of
/// each page they touch is read by the kernel (`process_vm_readv` on
/// ourselves, one call), which reports a bad address as an error. For a
/// buffer the kernel then reads itself (a `msgsnd` text, sent from the
/// caller's memory): a bad one is refused before anything is sent.
pub(crate) fn probe_readable(p: *const u8, len: usize) -> Result<(), Error> {
    if len == 0 {
        return Ok(());
    }
    if p.is_null() {
        return Err(Error::Fault);
    }
    const PAGE: usize = 4096;
    let (first, last) = (p as usize, p as usize + (len - 1));
    let mut remote: Vec<libc::iovec> = std::iter::once(first)
        .chain((first / PAGE + 1..=last / PAGE).map(|page| page * PAGE))
        .map(|a| libc::iovec {
            iov_base: a as *mut libc::c_void,
            iov_len: 1,
        })
        .collect();
    let mut got = vec![0u8; remote.len()];
    // At most IOV_MAX (1024) iovecs a call.
    for (chunk, out) in remote.chunks_mut(1024).zip(got.chunks_mut(1024)) {
        let local = libc::iovec {
            iov_base: out.as_mut_ptr().cast(),
            iov_len: out.len(),
        };
        // SAFETY: getpid has no preconditions; `local` is our buffer of
        // `chunk.len()` bytes, and the kernel reads `chunk`'s addresses
        // on our behalf, reporting a bad one as a short count.
        let n = unsafe {
            libc::process_vm_readv(
                libc::getpid(),
                &local,
                1,
                chunk.as_ptr(),
                chunk.len() as libc::c_ulong,
                0,
            )
        };
        if usize::try_from(n).ok() != Some(chunk.len()) {
            return Err(Error::Fault);
        }
    }
    Ok(())
}

/// `EFAULT` unless the `len` bytes at `p` are readable (and, with
/// `write`, writable): for the buffers that are slices, not one `T`.
pub(crate) fn check_access(p: *const u8, len: usize, write: bool) -> Result<(), Error> {
    if len > 0 && (p.is_null() || !accessible(p, len, write)) {
        return Err(Error::Fault);
    }
    Ok(())
}

/// A shared reference from a C pointer; `EFAULT` for NULL or for memory
/// this process cannot read (as the kernel's calls answer).
///
/// # Safety
/// A readable `p` must point to a valid `T` for `'a`.
pub(crate) unsafe fn in_ref<'a, T>(p: *const T) -> Result<&'a T, Error> {
    if p.is_null() || !accessible(p.cast(), std::mem::size_of::<T>(), false) {
        return Err(Error::Fault);
    }
    // SAFETY: readable, and valid by the caller's contract.
    unsafe { p.as_ref() }.ok_or(Error::Fault)
}

/// An exclusive reference from a C pointer; `EFAULT` for NULL or for
/// memory this process cannot write.
///
/// # Safety
/// A writable `p` must point to a valid `T`, not aliased, for `'a`.
pub(crate) unsafe fn out_ref<'a, T>(p: *mut T) -> Result<&'a mut T, Error> {
    if p.is_null() || !accessible(p.cast_const().cast(), std::mem::size_of::<T>(), true) {
        return Err(Error::Fault);
    }
    // SAFETY: writable, and valid and exclusive by the caller's contract.
    unsafe { p.as_mut() }.ok_or(Error::Fault)
}

/// A kernel id in the distributed range is ambiguous (see the crate doc):
/// say so once.
fn warn_if_in_dipc_range(id: &c_int) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if is_dipc_id(*id) {
        ONCE.call_once(|| {
            eprintln!(
                "libsysv: the kernel returned IPC id {id:#x}, inside dipc's id range; \
                 calls on it try the dipc node daemon first"
            )
        });
    }
}

/// `int shmget(key_t key, size_t size, int shmflg)`.
///
/// # Safety
/// None beyond the C prototype's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmget(key: libc::key_t, size: libc::size_t, shmflg: c_int) -> c_int {
    boundary(-1, || match shm::shmget(key, size, shmflg)? {
        Routed::Dipc(id) => Ok(id),
        Routed::Kernel(flags) => kernel::shmget(key, size, flags).inspect(warn_if_in_dipc_range),
    })
}

/// `void *shmat(int shmid, const void *shmaddr, int shmflg)`.
///
/// # Safety
/// As `shmat(2)`: a non-NULL `shmaddr` with `SHM_REMAP` replaces whatever
/// the program had mapped there.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmat(shmid: c_int, shmaddr: *const c_void, shmflg: c_int) -> *mut c_void {
    boundary(usize::MAX as *mut c_void, || {
        match shm::shmat(shmid, shmaddr as u64, shmflg)? {
            Routed::Dipc(addr) => Ok(addr as *mut c_void),
            // SAFETY: the caller's own arguments, as the C caller passed them.
            Routed::Kernel(()) => unsafe { kernel::shmat(shmid, shmaddr, shmflg) },
        }
    })
}

/// `int shmdt(const void *shmaddr)`.
///
/// # Safety
/// As `shmdt(2)`: the attachment at `shmaddr` is unmapped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmdt(shmaddr: *const c_void) -> c_int {
    boundary(-1, || match shm::shmdt(shmaddr as u64)? {
        Routed::Dipc(()) => Ok(0),
        // SAFETY: the caller's own argument.
        Routed::Kernel(()) => unsafe { kernel::shmdt(shmaddr) }.map(|()| 0),
    })
}

/// `IPC_64`, which 32-bit callers OR into commands; ignored on 64-bit.
const IPC_64: c_int = 0x100;
const SHM_STAT: c_int = 13;
const SHM_INFO: c_int = 14;
const SHM_STAT_ANY: c_int = 15;

fn fill_shmid_ds(s: &dipc_wire::local::ShmStat) -> libc::shmid_ds {
    let mut ds = zeroed_shmid_ds();
    fill_ipc_perm(&mut ds.shm_perm, s.key, &s.perm);
    ds.shm_segsz = s.segsz as libc::size_t;
    ds.shm_atime = s.atime as libc::time_t;
    ds.shm_dtime = s.dtime as libc::time_t;
    ds.shm_ctime = s.ctime as libc::time_t;
    ds.shm_cpid = s.cpid;
    ds.shm_lpid = s.lpid;
    ds.shm_nattch = s.nattch as libc::shmatt_t;
    ds
}

/// `int shmctl(int shmid, int cmd, struct shmid_ds *buf)`.
///
/// # Safety
/// As `shmctl(2)`: `buf` must be NULL or point to a valid `shmid_ds`
/// (written by `IPC_STAT`, read by `IPC_SET`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmctl(shmid: c_int, cmd: c_int, buf: *mut libc::shmid_ds) -> c_int {
    boundary(-1, || {
        let to_kernel = || {
            // SAFETY: the caller's own arguments, as the C caller passed them.
            unsafe { kernel::shmctl(shmid, cmd, buf) }
        };
        if !is_dipc_id(shmid) {
            return to_kernel();
        }
        let ctl = match cmd & !IPC_64 {
            // These take an index or nothing, not an id: the kernel's.
            libc::IPC_INFO | SHM_INFO | SHM_STAT | SHM_STAT_ANY => return to_kernel(),
            libc::IPC_STAT => Ctl::Stat,
            libc::IPC_SET => {
                // SAFETY: a non-NULL `buf` is a valid shmid_ds (C contract).
                let ds = unsafe { in_ref(buf) }?;
                Ctl::Set(SetArgs {
                    uid: ds.shm_perm.uid,
                    gid: ds.shm_perm.gid,
                    mode: u32::from(ds.shm_perm.mode),
                })
            }
            libc::IPC_RMID => Ctl::Rmid,
            _ => Ctl::Other,
        };
        match shm::shmctl(shmid, ctl)? {
            Routed::Dipc(CtlDone::Stat(s)) => {
                // SAFETY: a non-NULL `buf` is a valid, writable shmid_ds.
                *unsafe { out_ref(buf) }? = fill_shmid_ds(&s);
                Ok(0)
            }
            Routed::Dipc(CtlDone::Done) => Ok(0),
            Routed::Kernel(()) => to_kernel(),
        }
    })
}

/// `struct ipc_perm` of a distributed object, for every `*_ds` libsysv fills.
pub(crate) fn fill_ipc_perm(p: &mut libc::ipc_perm, key: i32, perm: &dipc_wire::Perm) {
    p.__key = key;
    p.uid = perm.uid;
    p.gid = perm.gid;
    p.cuid = perm.cuid;
    p.cgid = perm.cgid;
    p.mode = perm.mode as libc::c_ushort;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_eio() {
        let r = boundary(-1, || -> Result<i32, Error> { panic!("boom") });
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EIO)
        );
    }

    #[test]
    fn error_sets_errno() {
        let r = boundary(-1, || -> Result<i32, Error> {
            Err(Error::Node(libc::EACCES))
        });
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EACCES)
        );
        assert_eq!(boundary(-1, || Ok(7)), 7);
    }

    #[test]
    fn null_pointers_are_efault() {
        // SAFETY: NULL is handled by the helpers.
        let e = unsafe { in_ref::<u32>(std::ptr::null()) }.expect_err("null");
        assert_eq!(e.errno(), libc::EFAULT);
        // SAFETY: as above.
        let e = unsafe { out_ref::<u32>(std::ptr::null_mut()) }.expect_err("null");
        assert_eq!(e.errno(), libc::EFAULT);
    }

    #[test]
    fn unmapped_pointers_are_efault() {
        // An address in the never-mapped first page.
        let bad = std::ptr::without_provenance_mut::<u64>(8);
        // SAFETY: the helpers check the memory before making a reference.
        let e = unsafe { in_ref::<u64>(bad) }.expect_err("unmapped");
        assert_eq!(e.errno(), libc::EFAULT);
        // SAFETY: as above.
        let e = unsafe { out_ref::<u64>(bad) }.expect_err("unmapped");
        assert_eq!(e.errno(), libc::EFAULT);
        // Read-only memory can be read, not written.
        static RO: u64 = 7;
        let ro = &RO as *const u64;
        // SAFETY: as above; RO is a valid u64.
        assert_eq!(unsafe { in_ref(ro) }.ok().copied(), Some(7));
        // SAFETY: as above.
        let e = unsafe { out_ref(ro.cast_mut()) }.expect_err("read-only");
        assert_eq!(e.errno(), libc::EFAULT);
        let mut x = 5u64;
        // SAFETY: `x` is a valid, exclusive u64.
        *unsafe { out_ref(&mut x as *mut u64) }.expect("writable") = 6;
        assert_eq!(x, 6);
    }

    #[test]
    fn shmid_ds_from_stat() {
        let s = dipc_wire::local::ShmStat {
            key: 42,
            perm: dipc_wire::Perm {
                uid: 1,
                gid: 2,
                cuid: 3,
                cgid: 4,
                mode: 0o1640,
            },
            segsz: 8192,
            atime: 10,
            dtime: 11,
            ctime: 12,
            cpid: 100,
            lpid: 101,
            nattch: 3,
        };
        let ds = fill_shmid_ds(&s);
        assert_eq!(ds.shm_perm.__key, 42);
        assert_eq!((ds.shm_perm.uid, ds.shm_perm.cgid), (1, 4));
        assert_eq!(ds.shm_perm.mode, 0o1640);
        assert_eq!(ds.shm_segsz, 8192);
        assert_eq!((ds.shm_atime, ds.shm_dtime, ds.shm_ctime), (10, 11, 12));
        assert_eq!((ds.shm_cpid, ds.shm_lpid, ds.shm_nattch), (100, 101, 3));
    }
}
