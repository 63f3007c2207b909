//! The local protocol between libsysv (in an application process) and its
//! node daemon, over the Unix stream socket at `DIPC_SOCKET`.
//!
//! Each request is one frame and gets exactly one response frame, in order
//! ([`LocalFrame`]). A message text is the
//! frame's payload, not part of its header: it is written from its own
//! memory and read as a view of the receive buffer, never copied by the
//! encoding.
//! File descriptors travel as `SCM_RIGHTS` with the first byte of a frame:
//! the node sends the segment's memfd with [`Response::ShmAttach`], and
//! libsysv sends its userfaultfd with the first [`Request::ShmRegister`].
//! The caller's pid, uid and gid are read by the node with `SO_PEERCRED`;
//! they are never taken from the message.
//!
//! The connection lives as long as the process: when it closes (exit, kill,
//! exec) the node detaches everything the process had attached and applies
//! its `SEM_UNDO` adjustments.
//!
//! Operations that may wait (`msgsnd`/`msgrcv` without `IPC_NOWAIT`,
//! `semop`) go on a further connection of the process, used for nothing
//! else, so that a waiting thread does not hold up the process's other
//! calls; while one waits, libsysv may send [`Request::Cancel`] on it. Its
//! closing cancels the waiting operation, and does not count as the
//! process's exit.
//!
//! Those operations on an object homed on another node may instead go on
//! a *direct connection* to the home ([`Request::Direct`]), a TCP socket
//! the node hands over, in this same protocol.
//!
//! A *watch connection* ([`Request::Watch`]) carries nothing after its
//! first frame: its only event is its closing, when the daemon dies or
//! drops the process, which libsysv learns by a signal (`SIGRTMAX - 1`).
//! The node never writes to it, so that signal never comes for anything
//! else (an answer on a connection with `O_ASYNC` would raise it, even
//! after the answer was read: the kernel signals after it wakes the
//! reader).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError};
use crate::ids::{Key, ObjectId, Perm, ShmMode};

/// Version of this protocol; a node refuses a Hello with another one.
/// 3: message texts travel as the frame's payload. 4: the watch
/// connection.
pub const VERSION: u32 = 4;

/// Default path of the node's local socket.
pub const DEFAULT_SOCKET: &str = "/run/dipc/node.sock";

/// A request from libsysv.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message on a connection.
    Hello { version: u32 },
    /// `shmget(key, size, flags)`. `unit`, `mode`, `quantum_us` and
    /// `prefetch` override the node's defaults for a segment this call
    /// creates (see [`crate::Params::Shm`]); they are ignored when the
    /// segment exists.
    ShmGet {
        key: Key,
        size: u64,
        flags: i32,
        unit: Option<u32>,
        mode: Option<ShmMode>,
        quantum_us: Option<u32>,
        prefetch: Option<u32>,
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
    /// `msgget(key, flags)`.
    MsgGet { key: Key, flags: i32 },
    /// `msgsnd(id, {mtype, text}, text.len(), flags)`. Without
    /// `IPC_NOWAIT` it may wait; libsysv sends it on a connection of its
    /// own (see [`Request::Cancel`]).
    MsgSnd {
        id: ObjectId,
        mtype: i64,
        /// The frame's payload (see [`LocalFrame`]).
        #[serde(skip)]
        text: Bytes,
        flags: i32,
    },
    /// `msgrcv(id, buf, maxsize, msgtyp, flags)`; may wait like `MsgSnd`.
    MsgRcv {
        id: ObjectId,
        maxsize: u64,
        msgtyp: i64,
        flags: i32,
    },
    /// `msgctl(id, cmd)`.
    MsgCtl { id: ObjectId, cmd: MsgCtlCmd },
    /// `semget(key, nsems, flags)`.
    SemGet { key: Key, nsems: i32, flags: i32 },
    /// `semop`/`semtimedop(id, sops, timeout)`; may wait like `MsgSnd`.
    /// `timeout_ns` is the relative `semtimedop` timeout.
    SemOp {
        id: ObjectId,
        sops: Vec<SemBuf>,
        timeout_ns: Option<u64>,
    },
    /// `semctl(id, cmd)`.
    SemCtl { id: ObjectId, cmd: SemCtlCmd },
    /// The limits of distributed queues and sets (`IPC_INFO`, `MSG_INFO`,
    /// `SEM_INFO`). Answer: [`Response::Limits`].
    IpcLimits,
    /// A signal interrupted the wait for the request in progress on this
    /// connection (the only request that is sent while another one is
    /// unanswered, and the only one without an answer of its own). The
    /// node cancels the waiting operation; the request's answer then comes
    /// as usual: its result if it completed anyway, else `Err(EINTR)`.
    /// Ignored when nothing is in progress.
    Cancel,
    /// A *direct connection* for the operations (`MsgSnd`, `MsgRcv`,
    /// `SemOp`) on queue or set `id` of `kind`: the node dials the
    /// object's home, authenticates the connection as itself, binds it to
    /// the caller's pid, uid and gid at the home, and hands it over
    /// ([`Response::Direct`]). The process then sends those operations (and
    /// `Cancel`) on it in this protocol, without `Hello`, and the home
    /// answers them itself: one network round trip per call instead of
    /// one plus two local hops. [`Response::Relay`] when the home is this
    /// node or the links run under TLS (the socket cannot leave the node).
    Direct { kind: crate::Kind, id: ObjectId },
    /// The direct connection to node `home` broke with an operation
    /// unanswered: the node answers `Err(EIDRM)` if the referee declares
    /// the home down within the call timeout (the object died with it),
    /// else `Err(EIO)`.
    DirectLost { home: u32 },
    /// First and only frame of a *watch connection* (instead of `Hello`):
    /// the node never answers or writes anything on it, and keeps it open
    /// until the process closes it or the node drops the process's
    /// connections (it died, or fenced itself). Its closing is not the
    /// process's exit (the main connection's is). A `version` other than
    /// [`VERSION`] closes it.
    Watch { version: u32 },
}

/// A `msgctl` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgCtlCmd {
    /// `IPC_STAT` (answer [`Response::MsgStat`]).
    Stat,
    /// `IPC_SET`: owner, the low 9 mode bits and `msg_qbytes`.
    Set {
        uid: u32,
        gid: u32,
        mode: u32,
        qbytes: u64,
    },
    /// `IPC_RMID`.
    Rmid,
}

/// `struct sembuf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemBuf {
    pub num: u16,
    pub op: i16,
    pub flg: i16,
}

/// A `semctl` command with its argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemCtlCmd {
    GetVal {
        semnum: i32,
    },
    SetVal {
        semnum: i32,
        val: i32,
    },
    GetPid {
        semnum: i32,
    },
    GetNcnt {
        semnum: i32,
    },
    GetZcnt {
        semnum: i32,
    },
    GetAll,
    SetAll {
        values: Vec<u16>,
    },
    /// `IPC_STAT` (answer [`Response::SemStat`]).
    Stat,
    /// `IPC_SET`: owner and the low 9 mode bits.
    Set {
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// `IPC_RMID`.
    Rmid,
}

impl LocalFrame for Request {
    fn text(&self) -> Option<&Bytes> {
        match self {
            Request::MsgSnd { text, .. } => Some(text),
            _ => None,
        }
    }

    fn text_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Request::MsgSnd { text, .. } => Some(text),
            _ => None,
        }
    }
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
    /// A received message (`MsgRcv`).
    Msg {
        mtype: i64,
        /// The frame's payload (see [`LocalFrame`]).
        #[serde(skip)]
        text: Bytes,
    },
    MsgStat(MsgStat),
    SemStat(SemStat),
    /// The value `semctl` returns (GETVAL, GETPID, GETNCNT, GETZCNT).
    Value(i32),
    /// GETALL.
    Values(Vec<u16>),
    Limits(IpcLimits),
    /// A connection to the home `home` follows as `SCM_RIGHTS` (a TCP
    /// socket, see [`Request::Direct`]).
    Direct {
        home: u32,
    },
    /// Send this object's operations to the node as before.
    Relay,
}

/// `struct msqid_ds`, at the queue's home. Pids are those of the
/// processes on their own nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MsgStat {
    pub key: Key,
    pub perm: Perm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
}

/// `struct semid_ds`, at the set's home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SemStat {
    pub key: Key,
    pub perm: Perm,
    pub otime: i64,
    pub ctime: i64,
    pub nsems: u64,
}

/// The limits distributed queues and sets obey (the kernel's defaults),
/// for `IPC_INFO`/`MSG_INFO`/`SEM_INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpcLimits {
    pub msgmax: u64,
    pub msgmnb: u64,
    pub msgmni: u64,
    pub semmsl: u64,
    pub semopm: u64,
    pub semvmx: u64,
    pub semaem: u64,
    pub semmni: u64,
    pub semmns: u64,
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

impl LocalFrame for Response {
    fn text(&self) -> Option<&Bytes> {
        match self {
            Response::Msg { text, .. } => Some(text),
            _ => None,
        }
    }

    fn text_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Response::Msg { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A message of this protocol ([`Request`], [`Response`]) in its frame:
/// a message text is the payload, the rest the header.
pub trait LocalFrame: Serialize + serde::de::DeserializeOwned {
    /// The message text this message carries, if it is one that does.
    fn text(&self) -> Option<&Bytes>;
    fn text_mut(&mut self) -> Option<&mut Bytes>;

    /// This message as a frame (a `Bytes` clone shares the text; the
    /// header skips it).
    fn frame(&self) -> Frame {
        Frame::new(self, self.text().cloned().unwrap_or_default())
    }

    /// The message `frame` carries; a payload after a message without
    /// text is an error.
    fn from_frame(frame: &Frame) -> Result<Self, FrameError> {
        let mut msg: Self = frame.decode()?;
        match msg.text_mut() {
            Some(text) => *text = frame.payload.clone(),
            None if frame.payload.is_empty() => {}
            None => {
                return Err(FrameError::Decode(format!(
                    "{} bytes of payload after a message that has none",
                    frame.payload.len()
                )));
            }
        }
        Ok(msg)
    }
}
