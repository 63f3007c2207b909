//! What the message-queue and semaphore engines share: who is calling,
//! the permission record and its checks, the kernel's limits and flag
//! values, and the shape of a completion.
//!
//! Why a module of its own: both engines must answer permission questions
//! exactly as the kernel's `ipcperms()` and `ipcctl_obtain_check()` do
//! (ipc/util.c), and both hand results back as `errno` values, because the
//! result of an operation travels back to a C program that called `msgrcv`
//! or `semop` and expects the number Linux would have given it. The node
//! daemon translates nothing: it forwards the [`Errno`] as is.
//!
//! Privilege is modelled as Linux does for an unprivileged user namespace
//! seen from the init namespace: uid 0 holds every capability
//! (`CAP_IPC_OWNER`, `CAP_SYS_ADMIN`, `CAP_SYS_RESOURCE`), every other uid
//! none. Group membership is the caller's effective gid only: the daemon
//! learns a caller's credentials with `SO_PEERCRED`, which carries no
//! supplementary groups.

use serde::{Deserialize, Serialize};

/// Identifies one parked operation. The node daemon chooses it (unique per
/// engine instance) and gets it back in the [`Completion`].
pub type OpId = u64;

/// A Linux `errno` value (positive), as the C caller will see it.
pub type Errno = i32;

/// The `errno` values the engines produce (Linux numbers, x86-64 and
/// aarch64 alike).
pub mod errno {
    use super::Errno;
    pub const EPERM: Errno = 1;
    pub const EINTR: Errno = 4;
    pub const E2BIG: Errno = 7;
    pub const EAGAIN: Errno = 11;
    pub const EACCES: Errno = 13;
    pub const EINVAL: Errno = 22;
    pub const EFBIG: Errno = 27;
    pub const ERANGE: Errno = 34;
    pub const ENOMSG: Errno = 42;
    pub const EIDRM: Errno = 43;
}

/// Flag bits of `msgsnd`/`msgrcv`/`semop` (values of `<sys/ipc.h>`,
/// `<sys/msg.h>` and `<sys/sem.h>`).
pub mod flags {
    /// `IPC_NOWAIT` (octal 04000): fail instead of waiting.
    pub const IPC_NOWAIT: i32 = 0o4000;
    /// `MSG_NOERROR` (octal 010000): truncate a too long message.
    pub const MSG_NOERROR: i32 = 0o10000;
    /// `MSG_EXCEPT` (octal 020000): receive the first message *not* of
    /// type `msgtyp` (only for `msgtyp > 0`).
    pub const MSG_EXCEPT: i32 = 0o20000;
    /// `MSG_COPY` (octal 040000): copy message number `msgtyp` without
    /// removing it; needs `IPC_NOWAIT`, excludes `MSG_EXCEPT`.
    pub const MSG_COPY: i32 = 0o40000;
    /// `SEM_UNDO` (0x1000): undo this operation when the process exits.
    pub const SEM_UNDO: i16 = 0x1000;
    /// `IPC_NOWAIT` as a `sem_flg` (a `short`).
    pub const SEM_NOWAIT: i16 = 0o4000;
}

/// The kernel's default limits (include/uapi/linux/msg.h and sem.h, as
/// `/proc/sys/kernel/{msgmax,msgmnb,msgmni,sem}` show them on a fresh
/// boot).
pub mod limits {
    /// Largest message text, bytes (`msgsnd` fails with `EINVAL` above).
    pub const MSGMAX: usize = 8192;
    /// Default (and, without privilege, largest) `msg_qbytes`.
    pub const MSGMNB: u64 = 16384;
    /// Most message queues.
    pub const MSGMNI: usize = 32000;
    /// Most semaphores in one set.
    pub const SEMMSL: usize = 32000;
    /// Most operations in one `semop` call (`E2BIG` above).
    pub const SEMOPM: usize = 500;
    /// Largest semaphore value (`ERANGE` above).
    pub const SEMVMX: i32 = 32767;
    /// Largest absolute `SEM_UNDO` adjustment (`ERANGE` beyond).
    pub const SEMAEM: i32 = 32767;
    /// Most semaphore sets.
    pub const SEMMNI: usize = 32000;
    /// Most semaphores in all sets.
    pub const SEMMNS: usize = SEMMSL * SEMMNI;
}

/// A process, cluster-wide: a pid alone is not unique across nodes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct ProcId {
    pub node: u32,
    /// The process id (thread group id) on that node.
    pub pid: i32,
}

/// The credentials of the process making a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Caller {
    pub proc_: ProcId,
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
}

impl Caller {
    /// Does this caller hold the capabilities of root? (uid 0; see the
    /// module doc.)
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// `struct ipc_perm` of a message queue or semaphore set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct IpcPerm {
    pub key: i32,
    /// Owner.
    pub uid: u32,
    pub gid: u32,
    /// Creator.
    pub cuid: u32,
    pub cgid: u32,
    /// Access bits (`rwxrwxrwx`, only the low 9 bits are kept).
    pub mode: u32,
}

impl IpcPerm {
    /// The record `msgget`/`semget` creates: the creator owns the object,
    /// `mode` is `flags & 0777`.
    pub fn new(key: i32, creator: &Caller, mode: u32) -> Self {
        IpcPerm {
            key,
            uid: creator.uid,
            gid: creator.gid,
            cuid: creator.uid,
            cgid: creator.gid,
            mode: mode & 0o777,
        }
    }
}

/// Read permission, as `requested` of [`ipcperms`].
pub const PERM_READ: u32 = 0o4;
/// Write (alter) permission, as `requested` of [`ipcperms`].
pub const PERM_WRITE: u32 = 0o2;

/// The kernel's `ipcperms()`: may `caller` access the object for
/// `requested` (an `rwx` triple such as [`PERM_READ`] or [`PERM_WRITE`])?
///
/// The owner or creator uid selects the owner bits, else the owner or
/// creator gid selects the group bits, else the other bits; root
/// (`CAP_IPC_OWNER`) may do anything.
pub fn ipcperms(perm: &IpcPerm, caller: &Caller, requested: u32) -> bool {
    let requested = (requested | (requested >> 3) | (requested >> 6)) & 0o7;
    let granted = if caller.uid == perm.cuid || caller.uid == perm.uid {
        perm.mode >> 6
    } else if caller.gid == perm.cgid || caller.gid == perm.gid {
        perm.mode >> 3
    } else {
        perm.mode
    };
    requested & !granted & 0o7 == 0 || caller.is_root()
}

/// May `caller` change or remove the object (`IPC_SET`, `IPC_RMID`)? The
/// owner, the creator and root may (`ipcctl_obtain_check()`); anyone else
/// gets `EPERM`.
pub fn may_control(perm: &IpcPerm, caller: &Caller) -> bool {
    caller.is_root() || caller.uid == perm.cuid || caller.uid == perm.uid
}

/// The kernel's `ipc_update_perm()` for `IPC_SET`: new owner and the low 9
/// mode bits. `(uid_t)-1` or `(gid_t)-1` is not a valid id: `EINVAL`, and
/// nothing changes.
pub(crate) fn update_perm(perm: &mut IpcPerm, uid: u32, gid: u32, mode: u32) -> Result<(), Errno> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(errno::EINVAL);
    }
    perm.uid = uid;
    perm.gid = gid;
    perm.mode = (perm.mode & !0o777) | (mode & 0o777);
    Ok(())
}

/// The end of an operation: `op` finished with `result`. Every operation
/// completes exactly once: either in the list returned by the call that
/// issued it, or later, in the list returned by the call that woke it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion<T> {
    pub op: OpId,
    pub result: Result<T, Errno>,
}

impl<T> Completion<T> {
    pub(crate) fn ok(op: OpId, value: T) -> Self {
        Completion {
            op,
            result: Ok(value),
        }
    }

    pub(crate) fn err(op: OpId, errno: Errno) -> Self {
        Completion {
            op,
            result: Err(errno),
        }
    }
}
