//! Identifiers and the object record.

use serde::{Deserialize, Serialize};

/// A node's cluster-wide number, assigned by the referee at its first join
/// and kept (by node name) across restarts of either side.
pub type NodeId = u32;

/// A System V IPC key (`key_t`). `IPC_PRIVATE` (0) always creates.
pub type Key = i32;

/// The C-visible id of a distributed object (`shmid`, `msqid`, `semid`).
pub type ObjectId = i32;

/// Every distributed id has this bit set and is below `i32::MAX`, so it is
/// positive (programs test `id < 0` for errors) and libsysv routes any call
/// whose id carries the bit to the node daemon. A kernel id reaches this
/// range only after one ipc slot has been reused 32768 times
/// (`IPCMNI` = 32768; 64 times with `ipcmni_extend`); libsysv checks kernel
/// results for that case (see libsysv's crate doc).
pub const DIPC_ID_BIT: i32 = 0x4000_0000;

/// Is `id` in the distributed id range?
pub fn is_dipc_id(id: i32) -> bool {
    id > 0 && id & DIPC_ID_BIT != 0
}

/// `IPC_PRIVATE`.
pub const IPC_PRIVATE: Key = 0;
/// `IPC_CREAT` (octal 01000).
pub const IPC_CREAT: i32 = 0o1000;
/// `IPC_EXCL` (octal 02000).
pub const IPC_EXCL: i32 = 0o2000;
/// `IPC_NOWAIT` (octal 04000).
pub const IPC_NOWAIT: i32 = 0o4000;

/// The kind of an IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Shm,
    Msg,
    Sem,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Shm => "shm",
            Kind::Msg => "msg",
            Kind::Sem => "sem",
        })
    }
}

/// Owner, creator and mode, as in `struct ipc_perm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Perm {
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// The low 9 bits (rwxrwxrwx) plus `SHM_DEST`/`SHM_LOCKED` style flags.
    pub mode: u32,
}

/// How a shared memory segment moves between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ShmMode {
    /// Unit by unit on demand (the default).
    #[default]
    Page,
    /// The whole segment moves as one unit.
    Segment,
}

/// Largest hold-time quantum of a segment (1 s, far below the bound on a
/// blocked access).
pub const MAX_QUANTUM_US: u32 = 1_000_000;
/// Largest sequential prefetch window of a segment, in units.
pub const MAX_PREFETCH: u32 = 1024;
/// Largest `msgmax` a node may be configured with (a message travels in
/// one frame, libsysv to node and node to node): 512 KiB, well inside
/// the node's 1 MiB bound on a local frame.
pub const MAX_MSGMAX: u32 = 512 * 1024;
/// Largest `msgmnb` a node may be configured with (the kernel's sysctl is
/// an `int` too).
pub const MAX_MSGMNB: u64 = i32::MAX as u64;

/// Kind-specific creation parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Params {
    Shm {
        /// Size requested by `shmget` (bytes).
        size: u64,
        /// Coherence unit in bytes (a power of two, at least 4096).
        unit: u32,
        mode: ShmMode,
        /// Hold-time quantum in microseconds (0: none): a node that
        /// received a unit for a local access keeps it at least this long.
        /// Fixed at creation, used by every node.
        quantum_us: u32,
        /// Largest sequential prefetch window in units (0: no prefetch;
        /// always 0 in segment mode). Fixed at creation.
        prefetch: u32,
    },
    Msg {
        /// Initial `msg_qbytes`: the creating node's `msgmnb`, also the
        /// most an unprivileged `IPC_SET` may raise it to.
        qbytes: u64,
        /// Longest message text (the creating node's `msgmax`, at most
        /// [`MAX_MSGMAX`]). Fixed at creation, enforced at the home.
        msgmax: u32,
    },
    Sem {
        nsems: u32,
    },
}

impl Params {
    pub fn kind(&self) -> Kind {
        match self {
            Params::Shm { .. } => Kind::Shm,
            Params::Msg { .. } => Kind::Msg,
            Params::Sem { .. } => Kind::Sem,
        }
    }
}

/// What the referee knows about one distributed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub key: Key,
    pub id: ObjectId,
    pub kind: Kind,
    /// The node where the object was created and where it lives.
    pub home: NodeId,
    pub params: Params,
    pub perm: Perm,
    /// Creation time (seconds since the epoch); `shm_ctime` and friends
    /// are kept at the home.
    pub ctime: i64,
    /// `IPC_RMID` was called on a segment still attached somewhere: the key
    /// is free again, the id lives until the last detach (as `SHM_DEST`).
    pub removed: bool,
}

/// Common errno values used by the protocols (Linux numbers).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ERANGE: i32 = 34;
    pub const ENOSYS: i32 = 38;
    pub const EPROTO: i32 = 71;
    pub const ECONNREFUSED: i32 = 111;
    pub const ENOMSG: i32 = 42;
    pub const EIDRM: i32 = 43;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const EHOSTDOWN: i32 = 112;
}

impl Perm {
    /// The kernel's `ipcperms`: may a caller with `uid`/`gid` have the
    /// access `want` (octal 4 = read, 2 = write, 6 = both)? The owner's or
    /// creator's bits apply to a matching uid, then the group's, then
    /// other's; uid 0 may do anything (`CAP_IPC_OWNER`).
    pub fn allows(&self, uid: u32, gid: u32, want: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let granted = if uid == self.uid || uid == self.cuid {
            self.mode >> 6
        } else if gid == self.gid || gid == self.cgid {
            self.mode >> 3
        } else {
            self.mode
        };
        want & 0o7 & !granted == 0
    }

    /// May `uid` change or remove the object (`IPC_SET`, `IPC_RMID`)?
    pub fn owns(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid || uid == self.cuid
    }
}
