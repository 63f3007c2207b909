//! The local protocol between libsysv (in an application process) and its
//! node daemon, over the Unix stream socket at `DIPC_SOCKET`.
//!
//! Each request is one frame and gets exactly one response frame, in order.
//! File descriptors travel as `SCM_RIGHTS` with the first byte of a frame:
//! the node sends the segment's memfd with [`Response::ShmAttach`], and
//! libsysv sends its userfaultfd with the first [`Request::ShmRegister`].
//! The caller's pid, uid and gid are read by the node with `SO_PEERCRED`;
//! they are never taken from the message.
//!
//! The connection lives as long as the process: when it closes (exit, kill,
//! exec) the node detaches everything the process had attached.

use serde::{Deserialize, Serialize};

use crate::ids::{Key, ObjectId, Perm, ShmMode};

/// Version of this protocol; a node refuses a Hello with another one.
pub const VERSION: u32 = 1;

/// Default path of the node's local socket.
pub const DEFAULT_SOCKET: &str = "/run/dipc/node.sock";

/// A request from libsysv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message on a connection.
    Hello { version: u32 },
    /// `shmget(key, size, flags)`. `unit`/`mode` override the node's
    /// defaults for a segment this call creates.
    ShmGet {
        key: Key,
        size: u64,
        flags: i32,
        unit: Option<u32>,
        mode: Option<ShmMode>,
    },
    /// First half of `shmat`: permission check and the segment's memfd.
    ShmAt { id: ObjectId, readonly: bool },
    /// Second half of `shmat`: the segment is mapped at `addr` and
    /// registered with this process's userfaultfd (sent with the first
    /// registration of a process, as `SCM_RIGHTS`).
    ShmRegister {
        id: ObjectId,
        addr: u64,
        len: u64,
        readonly: bool,
    },
    /// `shmat` failed after `ShmAt` (e.g. mmap failed): undo it.
    ShmAbort { id: ObjectId },
    /// `shmdt(addr)`; libsysv unmaps after the answer.
    ShmDt { addr: u64 },
    /// `shmctl(IPC_STAT)`.
    ShmStat { id: ObjectId },
    /// `shmctl(IPC_SET)`.
    ShmSet {
        id: ObjectId,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// `shmctl(IPC_RMID)`.
    ShmRmid { id: ObjectId },
}

/// An answer of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        node: u32,
    },
    Ok,
    /// The call failed with this errno.
    Err(i32),
    /// An object id (`*get`).
    Id(ObjectId),
    /// The memfd follows as `SCM_RIGHTS`; map `size` bytes of it.
    ShmAttach {
        size: u64,
        unit: u32,
    },
    ShmStat(ShmStat),
}

/// `struct shmid_ds`, cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShmStat {
    pub key: Key,
    pub perm: Perm,
    /// `SHM_DEST` (01000) is set in `perm.mode` once removed.
    pub segsz: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    /// Attachments in the whole cluster.
    pub nattch: u64,
}
