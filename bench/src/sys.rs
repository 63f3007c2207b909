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

impl Attached {
    /// An atomic `fetch_add(1)` on the 8-byte counter at `off` (8-aligned,
    /// inside the attachment): the counter's previous value, `None` when
    /// `off` is misaligned or out of bounds.
    pub fn fetch_add(&self, off: u64) -> Option<u64> {
        Some(
            self.counter(off)?
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// An atomic load of the 8-byte counter at `off`, as [`Attached::fetch_add`].
    pub fn load(&self, off: u64) -> Option<u64> {
        Some(self.counter(off)?.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn counter(&self, off: u64) -> Option<&std::sync::atomic::AtomicU64> {
        let off = usize::try_from(off)
            .ok()
            .filter(|&o| o % 8 == 0 && o.checked_add(8).is_some_and(|e| e <= self.len))?;
        let p = (self.addr + off) as *mut u64;
        // SAFETY: `p` is 8-aligned (the mapping is page aligned, `off` a
        // multiple of 8) and its 8 bytes lie inside the attachment, mapped
        // read-write while `self` (and so the returned borrow) lives. Other
        // processes access the counter only atomically, which `AtomicU64`
        // permits.
        Some(unsafe { std::sync::atomic::AtomicU64::from_ptr(p) })
    }
}

/// Which implementation of the System V calls an agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The kernel, by raw `syscall(2)`: the `sysv` rlib linked into the
    /// agent exports `msgsnd` and friends itself, so `libc::msgsnd` would
    /// resolve to libsysv's.
    Kernel,
    /// libsysv's C ABI with `IPC_DIPC`: the node daemon.
    Dipc,
}

impl Via {
    /// `k` or `d`, as the agent protocol writes it.
    pub fn parse(s: &str) -> Option<Via> {
        match s {
            "k" => Some(Via::Kernel),
            "d" => Some(Via::Dipc),
            _ => None,
        }
    }

    fn flag(self) -> i32 {
        match self {
            Via::Kernel => 0,
            Via::Dipc => sysv::IPC_DIPC,
        }
    }
}

fn check(rc: i64) -> io::Result<i64> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `msgget(key, flags)` (`IPC_DIPC` added for [`Via::Dipc`]).
pub fn msgget(via: Via, key: i32, flags: i32) -> io::Result<i32> {
    let flags = flags | via.flag();
    let rc = match via {
        // SAFETY: msgget takes no pointers.
        Via::Kernel => unsafe { libc::syscall(libc::SYS_msgget, key, flags) },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::msgget(key, flags) }),
    };
    check(rc).map(|id| id as i32)
}

/// `msgsnd` of `text` with type `mtype`. `buf` is scratch room reused
/// between calls (the `long` type followed by the text).
pub fn msgsnd(via: Via, id: i32, mtype: i64, text: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
    msg_buf(mtype, text, buf);
    msgsnd_buf(via, id, buf)
}

/// Fill `buf` with a message as `msgsnd` takes it: a long type, the text.
pub fn msg_buf(mtype: i64, text: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&mtype.to_ne_bytes());
    buf.extend_from_slice(text);
}

/// `msgsnd` of `msg`, a message built by [`msg_buf`] (or received by
/// [`msgrcv`]: sent back from where it arrived).
pub fn msgsnd_buf(via: Via, id: i32, msg: &[u8]) -> io::Result<()> {
    if msg.len() < 8 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let len = msg.len() - 8;
    let p = msg.as_ptr().cast::<c_void>();
    let rc = match via {
        // SAFETY: `p` points to a long type followed by `len` bytes, all
        // inside `msg`, which outlives the call.
        Via::Kernel => unsafe { libc::syscall(libc::SYS_msgsnd, id, p, len, 0) },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::msgsnd(id, p, len, 0) }),
    };
    check(rc).map(|_| ())
}

/// `msgrcv` of a message of type `mtype` into `buf` (resized to hold a
/// long and `max` bytes); the text's length.
pub fn msgrcv(via: Via, id: i32, mtype: i64, max: usize, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.resize(8 + max, 0);
    let p = buf.as_mut_ptr().cast::<c_void>();
    let rc = match via {
        // SAFETY: `p` points to room for a long and `max` bytes inside
        // `buf`, which outlives the call.
        Via::Kernel => unsafe { libc::syscall(libc::SYS_msgrcv, id, p, max, mtype, 0) },
        // SAFETY: as above.
        Via::Dipc => (unsafe { abi::msgrcv(id, p, max, mtype as libc::c_long, 0) }) as i64,
    };
    check(rc).map(|n| n as usize)
}

/// `msgctl(id, IPC_RMID)`.
pub fn msgrm(via: Via, id: i32) -> io::Result<()> {
    let rc = match via {
        // SAFETY: IPC_RMID does not touch the buffer argument.
        Via::Kernel => unsafe {
            libc::syscall(libc::SYS_msgctl, id, libc::IPC_RMID, std::ptr::null::<u8>())
        },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) }),
    };
    check(rc).map(|_| ())
}

/// `msgctl(id, IPC_STAT)`, then `msgctl(id, IPC_SET)` with `msg_qbytes`
/// set to `qbytes` (lowering it needs no privilege).
pub fn msg_set_qbytes(via: Via, id: i32, qbytes: u64) -> io::Result<()> {
    // SAFETY: msqid_ds is plain data; all zeros is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    let ctl = |cmd: i32, ds: &mut libc::msqid_ds| {
        let p: *mut libc::msqid_ds = ds;
        match via {
            // SAFETY: `p` points to a msqid_ds that outlives the call.
            Via::Kernel => unsafe { libc::syscall(libc::SYS_msgctl, id, cmd, p) },
            // SAFETY: as above.
            Via::Dipc => i64::from(unsafe { abi::msgctl(id, cmd, p) }),
        }
    };
    check(ctl(libc::IPC_STAT, &mut ds))?;
    ds.msg_qbytes = qbytes as libc::msglen_t;
    check(ctl(libc::IPC_SET, &mut ds)).map(|_| ())
}

/// `semget(key, nsems, flags)` (`IPC_DIPC` added for [`Via::Dipc`]).
pub fn semget(via: Via, key: i32, nsems: i32, flags: i32) -> io::Result<i32> {
    let flags = flags | via.flag();
    let rc = match via {
        // SAFETY: semget takes no pointers.
        Via::Kernel => unsafe { libc::syscall(libc::SYS_semget, key, nsems, flags) },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::semget(key, nsems, flags) }),
    };
    check(rc).map(|id| id as i32)
}

/// `semop(id, ops)`, each op `(semnum, delta, flags)`, applied atomically.
pub fn semop(via: Via, id: i32, ops: &[(u16, i16, i16)]) -> io::Result<()> {
    let mut sops: Vec<libc::sembuf> = ops
        .iter()
        .map(|&(n, op, flg)| libc::sembuf {
            sem_num: n,
            sem_op: op,
            sem_flg: flg,
        })
        .collect();
    let p = sops.as_mut_ptr();
    let rc = match via {
        // SAFETY: `p` points to `sops.len()` sembufs that outlive the call;
        // a null timeout waits without a bound, as semop does.
        Via::Kernel => unsafe {
            libc::syscall(
                libc::SYS_semtimedop,
                id,
                p,
                sops.len(),
                std::ptr::null::<libc::timespec>(),
            )
        },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::semop(id, p, sops.len()) }),
    };
    check(rc).map(|_| ())
}

/// `semctl(id, 0, IPC_RMID)`.
pub fn semrm(via: Via, id: i32) -> io::Result<()> {
    let rc = match via {
        // SAFETY: IPC_RMID reads no argument.
        Via::Kernel => unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::IPC_RMID, 0usize) },
        // SAFETY: as above.
        Via::Dipc => i64::from(unsafe { abi::semctl(id, 0, libc::IPC_RMID, 0) }),
    };
    check(rc).map(|_| ())
}

/// Threads of this process, from `/proc/self/status` (`None` when it
/// cannot be read).
pub fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Move the calling thread into the network namespace `ns` (an open
/// `/run/netns/NAME`): sockets it (and threads it starts) creates from
/// then on live there. Other threads are unaffected.
pub fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a file descriptor we own (open for the duration
    // of the call) and a flag; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
