//! Semaphore sets: `semget`, `semop`, `semtimedop`, `semctl` with the
//! prototypes of `<sys/sem.h>`.
//!
//! Routing and the waiting connections are those of message queues (see
//! the `msg` module): `semop` and `semtimedop` of a distributed set go on
//! a waiting connection and may be interrupted by a signal (`EINTR`,
//! never restarted); `semtimedop`'s timeout runs at the set's home, which
//! ends the operation with `EAGAIN` when it expires.
//!
//! # `semctl` is variadic
//!
//! `int semctl(int semid, int semnum, int cmd, ...)` takes a fourth
//! argument, `union semun`, only for some commands. Rust cannot define a
//! variadic function, so libsysv defines `semctl` with a fourth `usize`
//! argument. On x86_64 and aarch64 Linux this is ABI-correct: the first
//! variadic arguments travel exactly like named ones (x86_64 SysV: the
//! fourth integer register, `rcx`; AAPCS64 on Linux: `x3`), and `union
//! semun` (an `int` or a pointer, 8 bytes, integer class) travels as one
//! 8-byte integer. A caller that passes no fourth argument leaves garbage
//! in that register, which is read only for the commands that take one;
//! a caller that passes a plain `int` for `SETVAL` has it in the low 32
//! bits, which is where `semun.val` lies (little endian).

use std::ffi::{c_int, c_long};

use dipc_wire::local::{IpcLimits, Request, Response, SemBuf, SemCtlCmd, SemStat};

use crate::Error;
use crate::config::Config;
use crate::ffi::{boundary, in_ref, out_ref};
use crate::msg::{daemon_up, limits, main_call, unexpected, wait_call};
use crate::route::{self, is_dipc_id};

const IPC_64: c_int = 0x100;
const GETPID: c_int = 11;
const GETVAL: c_int = 12;
const GETALL: c_int = 13;
const GETNCNT: c_int = 14;
const GETZCNT: c_int = 15;
const SETVAL: c_int = 16;
const SETALL: c_int = 17;
const SEM_STAT: c_int = 18;
const SEM_INFO: c_int = 19;
const SEM_STAT_ANY: c_int = 20;
/// The kernel's `SEMOPM`: longer operation arrays are `E2BIG` before
/// anything is read from the caller's array.
const SEMOPM: usize = 500;

fn check(rc: c_long) -> Result<c_long, Error> {
    if rc == -1 {
        Err(Error::last_kernel())
    } else {
        Ok(rc)
    }
}

/// `int semget(key_t key, int nsems, int semflg)`.
///
/// # Safety
/// None beyond the C prototype's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn semget(key: libc::key_t, nsems: c_int, semflg: c_int) -> c_int {
    boundary(-1, || {
        let to_kernel = |flags: c_int| {
            // SAFETY: semget takes integers only.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_semget,
                    c_long::from(key),
                    c_long::from(nsems),
                    c_long::from(flags),
                )
            };
            check(rc).map(|id| id as c_int)
        };
        let Some(flags) = route::get_flags(key, semflg, &Config::get().keys) else {
            return to_kernel(semflg);
        };
        match main_call(&Request::SemGet { key, nsems, flags })? {
            None => to_kernel(flags),
            Some(Response::Id(id)) => Ok(id),
            Some(Response::Err(e)) => Err(Error::Node(e)),
            Some(other) => Err(unexpected("SemGet", other)),
        }
    })
}

/// The relative timeout of `semtimedop` in nanoseconds: `EINVAL` for an
/// invalid `timespec`, as the kernel checks before anything else.
fn timeout_ns(ts: &libc::timespec) -> Result<u64, Error> {
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(Error::Node(libc::EINVAL));
    }
    Ok((ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64))
}

fn semop_kernel(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: usize,
    timeout: *const libc::timespec,
) -> Result<c_int, Error> {
    // SAFETY: the caller's own arguments, as the C caller passed them
    // (semop is semtimedop without a timeout, as glibc implements it).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_semtimedop,
            c_long::from(semid),
            sops,
            nsops,
            timeout,
        )
    };
    check(rc).map(|r| r as c_int)
}

fn semop_routed(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: usize,
    timeout: *const libc::timespec,
) -> Result<c_int, Error> {
    if !is_dipc_id(semid) || !daemon_up() {
        return semop_kernel(semid, sops, nsops, timeout);
    }
    if nsops > SEMOPM {
        return Err(Error::Node(libc::E2BIG));
    }
    if nsops == 0 {
        return Err(Error::Node(libc::EINVAL));
    }
    let timeout_ns = if timeout.is_null() {
        None
    } else {
        // SAFETY: a non-NULL timeout points to a timespec (C contract).
        Some(timeout_ns(unsafe { in_ref(timeout) }?)?)
    };
    if sops.is_null() {
        return Err(Error::Fault);
    }
    crate::ffi::check_access(
        sops.cast_const().cast(),
        nsops * std::mem::size_of::<libc::sembuf>(),
        false,
    )?;
    // SAFETY: sops points to nsops (1..=SEMOPM) sembufs (C contract).
    let array = unsafe { std::slice::from_raw_parts(sops, nsops) };
    let req = Request::SemOp {
        id: semid,
        sops: array
            .iter()
            .map(|b| SemBuf {
                num: b.sem_num,
                op: b.sem_op,
                flg: b.sem_flg,
            })
            .collect(),
        timeout_ns,
    };
    match wait_call(&req)? {
        Response::Ok => Ok(0),
        Response::Err(libc::EINVAL) => semop_kernel(semid, sops, nsops, timeout),
        Response::Err(e) => Err(Error::Node(e)),
        other => Err(unexpected("SemOp", other)),
    }
}

/// `int semop(int semid, struct sembuf *sops, size_t nsops)`.
///
/// # Safety
/// As `semop(2)`: `sops` points to `nsops` operations.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn semop(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: libc::size_t,
) -> c_int {
    boundary(-1, || semop_routed(semid, sops, nsops, std::ptr::null()))
}

/// `int semtimedop(int semid, struct sembuf *sops, size_t nsops, const
/// struct timespec *timeout)`.
///
/// # Safety
/// As `semtimedop(2)`: `sops` points to `nsops` operations, `timeout` is
/// NULL or points to a `timespec`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn semtimedop(
    semid: c_int,
    sops: *mut libc::sembuf,
    nsops: libc::size_t,
    timeout: *const libc::timespec,
) -> c_int {
    boundary(-1, || semop_routed(semid, sops, nsops, timeout))
}

fn zeroed_semid_ds() -> libc::semid_ds {
    // SAFETY: semid_ds is plain integers (and integer padding): all-zero
    // is a valid value.
    unsafe { std::mem::zeroed() }
}

fn fill_semid_ds(s: &SemStat) -> libc::semid_ds {
    let mut ds = zeroed_semid_ds();
    crate::ffi::fill_ipc_perm(&mut ds.sem_perm, s.key, &s.perm);
    ds.sem_otime = s.otime as libc::time_t;
    ds.sem_ctime = s.ctime as libc::time_t;
    ds.sem_nsems = s.nsems as _;
    ds
}

/// `struct seminfo` for `IPC_INFO`/`SEM_INFO` on a distributed id: the
/// limits distributed sets obey (the kernel's defaults); `semmap`,
/// `semmnu`, `semume`, `semusz` as `ipc/sem.c` reports them for
/// `IPC_INFO`.
fn fill_seminfo(l: &IpcLimits) -> libc::seminfo {
    let int = |v: u64| c_int::try_from(v).unwrap_or(c_int::MAX);
    libc::seminfo {
        semmap: int(l.semmns),
        semmni: int(l.semmni),
        semmns: int(l.semmns),
        semmnu: int(l.semmns),
        semmsl: int(l.semmsl),
        semopm: int(l.semopm),
        semume: int(l.semopm),
        semusz: 16,
        semvmx: int(l.semvmx),
        semaem: int(l.semaem),
    }
}

/// What a distributed `semctl` needs to do with its answer.
enum After {
    Value,
    Zero,
    Stat(*mut libc::semid_ds),
    GetAll(*mut libc::c_ushort),
}

/// `int semctl(int semid, int semnum, int cmd, ...)`, the fourth argument
/// (`union semun`) as an 8-byte integer (see the module doc).
///
/// # Safety
/// As `semctl(2)`: the fourth argument must be what `cmd` takes (a
/// pointer valid for it, or the value for `SETVAL`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn semctl(semid: c_int, semnum: c_int, cmd: c_int, arg: usize) -> c_int {
    boundary(-1, || {
        let to_kernel = || {
            // SAFETY: the caller's own arguments, as the C caller passed
            // them (arg is the union's 8 bytes).
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_semctl,
                    c_long::from(semid),
                    c_long::from(semnum),
                    c_long::from(cmd),
                    arg,
                )
            };
            check(rc).map(|r| r as c_int)
        };
        if !is_dipc_id(semid) {
            return to_kernel();
        }
        let (cmd_req, after) = match cmd & !IPC_64 {
            SEM_STAT | SEM_STAT_ANY => return to_kernel(),
            libc::IPC_INFO | SEM_INFO => {
                let Some(l) = limits()? else {
                    return to_kernel();
                };
                // SAFETY: for these commands arg.__buf is a struct seminfo.
                *unsafe { out_ref(arg as *mut libc::seminfo) }? = fill_seminfo(&l);
                return Ok(0);
            }
            libc::IPC_STAT => (SemCtlCmd::Stat, After::Stat(arg as *mut libc::semid_ds)),
            libc::IPC_SET => {
                // SAFETY: for IPC_SET arg.buf is a valid semid_ds.
                let ds = unsafe { in_ref(arg as *const libc::semid_ds) }?;
                let set = SemCtlCmd::Set {
                    uid: ds.sem_perm.uid,
                    gid: ds.sem_perm.gid,
                    mode: u32::from(ds.sem_perm.mode) & 0o777,
                };
                (set, After::Zero)
            }
            libc::IPC_RMID => (SemCtlCmd::Rmid, After::Zero),
            GETVAL => (SemCtlCmd::GetVal { semnum }, After::Value),
            GETPID => (SemCtlCmd::GetPid { semnum }, After::Value),
            GETNCNT => (SemCtlCmd::GetNcnt { semnum }, After::Value),
            GETZCNT => (SemCtlCmd::GetZcnt { semnum }, After::Value),
            // semun.val: the low 32 bits (see the module doc).
            SETVAL => (
                SemCtlCmd::SetVal {
                    semnum,
                    val: arg as u32 as i32,
                },
                After::Zero,
            ),
            GETALL => (SemCtlCmd::GetAll, After::GetAll(arg as *mut libc::c_ushort)),
            SETALL => {
                // The array holds nsems values: learn nsems first.
                let nsems = match main_call(&Request::SemCtl {
                    id: semid,
                    cmd: SemCtlCmd::Stat,
                })? {
                    None | Some(Response::Err(libc::EINVAL)) => return to_kernel(),
                    Some(Response::SemStat(s)) => s.nsems as usize,
                    Some(Response::Err(e)) => return Err(Error::Node(e)),
                    Some(other) => return Err(unexpected("SemCtl", other)),
                };
                let p = arg as *const libc::c_ushort;
                if p.is_null() {
                    return Err(Error::Fault);
                }
                crate::ffi::check_access(p.cast(), nsems * 2, false)?;
                // SAFETY: arg.array holds nsems values (C contract).
                let values = unsafe { std::slice::from_raw_parts(p, nsems) }.to_vec();
                (SemCtlCmd::SetAll { values }, After::Zero)
            }
            _ => return Err(Error::Node(libc::EINVAL)),
        };
        let resp = match main_call(&Request::SemCtl {
            id: semid,
            cmd: cmd_req,
        })? {
            None | Some(Response::Err(libc::EINVAL)) => return to_kernel(),
            Some(Response::Err(e)) => return Err(Error::Node(e)),
            Some(r) => r,
        };
        match (after, resp) {
            (After::Value, Response::Value(v)) => Ok(v),
            (After::Zero, Response::Ok) => Ok(0),
            (After::Stat(p), Response::SemStat(s)) => {
                // SAFETY: for IPC_STAT arg.buf is a valid, writable semid_ds.
                *unsafe { out_ref(p) }? = fill_semid_ds(&s);
                Ok(0)
            }
            (After::GetAll(p), Response::Values(v)) => {
                if p.is_null() {
                    return Err(Error::Fault);
                }
                crate::ffi::check_access(p.cast_const().cast(), v.len() * 2, true)?;
                // SAFETY: arg.array has room for nsems values, which is
                // what the home sent.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()) };
                Ok(0)
            }
            (_, other) => Err(unexpected("SemCtl", other)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_checked_like_the_kernel() {
        let ts = |s, ns| libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        };
        assert_eq!(timeout_ns(&ts(0, 0)).ok(), Some(0));
        assert_eq!(timeout_ns(&ts(2, 5)).ok(), Some(2_000_000_005));
        assert_eq!(
            timeout_ns(&ts(0, 1_000_000_000))
                .map_err(|e| e.errno())
                .err(),
            Some(libc::EINVAL)
        );
        assert_eq!(
            timeout_ns(&ts(-1, 0)).map_err(|e| e.errno()).err(),
            Some(libc::EINVAL)
        );
    }

    #[test]
    fn semid_ds_and_seminfo() {
        let s = SemStat {
            key: 7,
            perm: dipc_wire::Perm {
                uid: 1,
                gid: 2,
                cuid: 3,
                cgid: 4,
                mode: 0o600,
            },
            otime: 5,
            ctime: 6,
            nsems: 3,
        };
        let ds = fill_semid_ds(&s);
        assert_eq!((ds.sem_perm.__key, ds.sem_perm.mode), (7, 0o600));
        assert_eq!((ds.sem_otime, ds.sem_ctime, ds.sem_nsems), (5, 6, 3));
        let l = IpcLimits {
            semmsl: 32000,
            semopm: 500,
            semvmx: 32767,
            semmni: 32000,
            ..IpcLimits::default()
        };
        let i = fill_seminfo(&l);
        assert_eq!(
            (i.semmsl, i.semopm, i.semvmx, i.semmni),
            (32000, 500, 32767, 32000)
        );
    }
}
