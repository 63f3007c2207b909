//! Shared memory calls: routing, and the distributed half.
//!
//! Each function here decides first whether a call is distributed
//! ([`crate::route`]) and returns [`Routed::Kernel`] when the kernel
//! should do it instead; the C ABI layer then makes the raw system call
//! with the caller's original arguments, so a local call behaves exactly
//! as without libsysv.
//!
//! `shmat` of a distributed segment: `ShmAt` (permission check at the
//! daemon, which sends the segment's memfd), `mmap` of the memfd
//! (`MAP_SHARED`, `MADV_NOHUGEPAGE`; `PROT_READ` only for `SHM_RDONLY`),
//! close the memfd, register the range with the process's userfaultfd
//! (missing + minor faults, and write-protect faults unless read-only),
//! then `ShmRegister`. Any failure after `ShmAt` sends `ShmAbort`.
//!
//! A read-only attachment maps the read-write memfd with `PROT_READ`: the
//! kernel refuses to register a mapping of a file opened read-only (no
//! `VM_MAYWRITE`, verified in dipc-shmem's tests). Unlike the kernel's
//! `SHM_RDONLY`, a program could therefore `mprotect` it writable; such
//! writes would bypass coherence (undefined, as documented in dipc.h).

#![forbid(unsafe_code)]

use dipc_shmem::{Mapping, Placement, Protection, page_size};
use dipc_wire::local::{Request, Response, ShmStat};

use crate::Error;
use crate::config::Config;
use crate::route::{self, Routed};
use crate::state::{self, Attachment, State};

fn unexpected(op: &str, r: Response) -> Error {
    Error::Protocol(format!("unexpected answer to {op}: {r:?}"))
}

/// `shmget`: the id, or `Kernel(flags)` with the flags to pass to the
/// kernel (`IPC_DIPC` stripped).
pub(crate) fn shmget(key: i32, size: usize, flags: i32) -> Result<Routed<i32, i32>, Error> {
    let cfg = Config::get();
    let Some(flags) = route::get_flags(key, flags, &cfg.keys) else {
        return Ok(Routed::Kernel(flags));
    };
    let unit = cfg.unit.clone().map_err(Error::Config)?;
    let mode = cfg.shm_mode.clone().map_err(Error::Config)?;
    let quantum_us = cfg.quantum_us.clone().map_err(Error::Config)?;
    let prefetch = cfg.prefetch.clone().map_err(Error::Config)?;
    let mut st = state::lock();
    if st.client()?.is_none() {
        return Ok(Routed::Kernel(flags));
    }
    let req = Request::ShmGet {
        key,
        size: size as u64,
        flags,
        unit,
        mode,
        quantum_us,
        prefetch,
    };
    match st.call(&req, &[])?.0 {
        Response::Id(id) => Ok(Routed::Dipc(id)),
        Response::Err(e) => Err(Error::Node(e)),
        other => Err(unexpected("ShmGet", other)),
    }
}

/// Where `shmat(addr, flags)` maps, as the kernel's `do_shmat` decides.
fn placement(addr: u64, flags: i32) -> Result<Placement, Error> {
    let remap = flags & libc::SHM_REMAP != 0;
    if addr == 0 {
        if remap {
            return Err(Error::Invalid("SHM_REMAP needs an address"));
        }
        return Ok(Placement::Anywhere);
    }
    // SHMLBA is the page size on the 64-bit targets dipc supports.
    let shmlba = page_size();
    let mut addr = addr;
    if !addr.is_multiple_of(shmlba) {
        if flags & libc::SHM_RND == 0 {
            return Err(Error::Invalid("unaligned address without SHM_RND"));
        }
        addr &= !(shmlba - 1);
        if addr == 0 {
            return Err(Error::Invalid("SHM_RND rounded the address to 0"));
        }
    }
    Ok(Placement::Fixed {
        addr,
        replace: remap,
    })
}

/// `shmat`: the address, or `Kernel` when the id is not a distributed one
/// the daemon knows (or no daemon is reachable).
pub(crate) fn shmat(id: i32, addr: u64, flags: i32) -> Result<Routed<u64>, Error> {
    if !route::is_dipc_id(id) {
        return Ok(Routed::Kernel(()));
    }
    let place = placement(addr, flags)?;
    let readonly = flags & libc::SHM_RDONLY != 0;
    let mut st = state::lock();
    if !matches!(st.client(), Ok(Some(_))) {
        return Ok(Routed::Kernel(()));
    }
    let (size, memfd) = match st.call(&Request::ShmAt { id, readonly }, &[])? {
        (Response::ShmAttach { size, .. }, fds) => (size, fds.into_iter().next()),
        (Response::Err(libc::EINVAL), _) => return Ok(Routed::Kernel(())),
        (Response::Err(e), _) => return Err(Error::Node(e)),
        (other, _) => return Err(unexpected("ShmAt", other)),
    };
    let r = (|| {
        let memfd =
            memfd.ok_or_else(|| Error::Protocol("ShmAttach came without a memfd".into()))?;
        let prot = Protection {
            write: !readonly,
            exec: flags & libc::SHM_EXEC != 0,
        };
        if let Placement::Fixed {
            addr,
            replace: true,
        } = place
        {
            detach_overlapping(&mut st, addr, dipc_shmem::page_round_up(size));
        }
        let mapping = Mapping::map(std::os::fd::AsFd::as_fd(&memfd), size, place, prot)?;
        drop(memfd);
        st.register(id, &mapping, readonly)?;
        let addr = mapping.addr();
        if !crate::sys::track(addr, mapping.len()) {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                eprintln!(
                    "libsysv: more than 256 distributed attachments: the newest are not \
                     protected against a dying node daemon"
                )
            });
        }
        let generation = st.generation;
        st.attachments.push(Attachment {
            id,
            mapping,
            readonly,
            generation,
        });
        Ok(addr)
    })();
    match r {
        Ok(addr) => Ok(Routed::Dipc(addr)),
        Err(e) => {
            let _ = st.call(&Request::ShmAbort { id }, &[]);
            Err(e)
        }
    }
}

/// `SHM_REMAP` over our own attachments: detach them first (the kernel
/// would keep the parts outside the new range attached; dipc detaches the
/// whole of each, documented in dipc.h).
fn detach_overlapping(st: &mut State, addr: u64, len: u64) {
    let end = addr.saturating_add(len);
    let overlapping: Vec<u64> = st
        .attachments
        .iter()
        .filter(|a| a.mapping.addr() < end && addr < a.mapping.addr() + a.mapping.len())
        .map(|a| a.mapping.addr())
        .collect();
    for a in overlapping {
        detach(st, a);
    }
}

/// Detach our attachment at `addr`, if there is one.
fn detach(st: &mut State, addr: u64) -> bool {
    let Some(i) = st.attachments.iter().position(|a| a.mapping.addr() == addr) else {
        return false;
    };
    if st.is_current(st.attachments[i].generation) {
        // Whatever the answer, the attachment goes: the daemon forgets
        // it on error too, and a broken connection detached everything.
        let _ = st.call(&Request::ShmDt { addr }, &[]);
    }
    // Dropping the mapping unmaps it (after the daemon's answer), and
    // only once the death signal handler no longer knows the range.
    crate::sys::untrack(addr);
    drop(st.attachments.remove(i));
    true
}

/// `shmdt`: `Kernel` when `addr` is not one of our attachments.
pub(crate) fn shmdt(addr: u64) -> Result<Routed<()>, Error> {
    let mut st = state::lock();
    if detach(&mut st, addr) {
        Ok(Routed::Dipc(()))
    } else {
        Ok(Routed::Kernel(()))
    }
}

/// What `shmctl` needs from the caller's `struct shmid_ds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetArgs {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The distributed `shmctl` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctl {
    Stat,
    Set(SetArgs),
    Rmid,
    /// Any other command on an id in the distributed range.
    Other,
}

/// What a distributed `shmctl` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CtlDone {
    Stat(ShmStat),
    Done,
}

/// `shmctl` on an id in the distributed range: `Kernel` when the daemon
/// does not know the id or no daemon is reachable.
pub(crate) fn shmctl(id: i32, ctl: Ctl) -> Result<Routed<CtlDone>, Error> {
    let mut st = state::lock();
    if !matches!(st.client(), Ok(Some(_))) {
        return Ok(Routed::Kernel(()));
    }
    let req = match ctl {
        Ctl::Stat | Ctl::Other => Request::ShmStat { id },
        Ctl::Set(a) => Request::ShmSet {
            id,
            uid: a.uid,
            gid: a.gid,
            mode: a.mode & 0o777,
        },
        Ctl::Rmid => Request::ShmRmid { id },
    };
    match (ctl, st.call(&req, &[])?.0) {
        (_, Response::Err(libc::EINVAL)) => Ok(Routed::Kernel(())),
        (_, Response::Err(e)) => Err(Error::Node(e)),
        (Ctl::Stat, Response::ShmStat(s)) => Ok(Routed::Dipc(CtlDone::Stat(s))),
        // A distributed segment: commands dipc does not implement.
        (Ctl::Other, Response::ShmStat(_)) => Err(Error::Invalid(
            "shmctl command not supported on a distributed segment",
        )),
        (Ctl::Set(_) | Ctl::Rmid, Response::Ok) => Ok(Routed::Dipc(CtlDone::Done)),
        (_, other) => Err(unexpected("shmctl", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shmat_placement_rules() {
        let p = page_size();
        assert_eq!(placement(0, 0).ok(), Some(Placement::Anywhere));
        assert_eq!(placement(0, libc::SHM_RND).ok(), Some(Placement::Anywhere));
        assert!(placement(0, libc::SHM_REMAP).is_err());
        assert_eq!(
            placement(5 * p, 0).ok(),
            Some(Placement::Fixed {
                addr: 5 * p,
                replace: false
            })
        );
        assert!(placement(5 * p + 1, 0).is_err());
        assert_eq!(
            placement(5 * p + 1, libc::SHM_RND | libc::SHM_REMAP).ok(),
            Some(Placement::Fixed {
                addr: 5 * p,
                replace: true
            })
        );
        assert!(placement(1, libc::SHM_RND).is_err());
        assert_eq!(
            placement(5 * p + 1, 0).map_err(|e| e.errno()).err(),
            Some(libc::EINVAL)
        );
    }
}
