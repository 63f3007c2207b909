//! The referee protocol: requests from nodes and from the `dipc` CLI,
//! responses, and events the referee pushes to every joined node.
//!
//! These travel inside the transport's RPC envelope (request ids and time
//! bounds are the transport's business), after the authentication handshake
//! has checked the cluster name and secret.

use serde::{Deserialize, Serialize};

use crate::ids::{Key, Kind, NodeId, ObjectId, ObjectRecord, Params, Perm};

/// Who is asking: the creator credentials of a `*get` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// A request to the referee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First request of a node on a connection. `hosted` re-announces the
    /// objects whose home is this node (after a referee restart or a
    /// reconnect). The answer is [`Response::Joined`].
    Join {
        /// Stable name of the node (default: its listen address).
        name: String,
        /// Address peers connect to.
        listen: String,
        /// Transport the node uses for pages ("tcp" or "rdma").
        transport: String,
        hosted: Vec<ObjectRecord>,
        /// Random per start of the node's daemon (0: unknown). A join of
        /// a new incarnation while the old one is still taken for up is a
        /// restart the referee has not noticed: it declares the old one
        /// down first, so the others drop what they thought it held.
        incarnation: u64,
    },
    /// Liveness, every `heartbeat_ms`.
    Heartbeat,
    /// `shmget`/`msgget`/`semget` by key with `IPC_CREAT`/`IPC_EXCL` in
    /// `flags` (and the mode in its low 9 bits). Creation makes the asking
    /// node the home. Answer: [`Response::Record`] or [`Response::Err`]
    /// (`ENOENT`, `EEXIST`, `EINVAL`, `ENOSPC`).
    Get {
        key: Key,
        flags: i32,
        params: Params,
        caller: Caller,
        now: i64,
    },
    /// Look an object up by id. Answer: `Record` or `Err(EINVAL)`.
    Lookup { id: ObjectId },
    /// Look an object up by key and kind (no creation). Answer: `Record`
    /// or `Err(ENOENT)`.
    LookupKey { kind: Kind, key: Key },
    /// `IPC_RMID`: the key is free at once. For msg/sem the record is gone;
    /// for shm with `still_attached` the record stays (marked removed)
    /// until [`Request::Destroyed`].
    Remove { id: ObjectId, still_attached: bool },
    /// The home destroyed a removed segment (its last detach happened).
    Destroyed { id: ObjectId },
    /// `IPC_SET` changed owner or mode: keep the referee's copy current.
    SetPerm { id: ObjectId, perm: Perm },
    /// Cluster status (members and objects).
    Status,
    /// The pages of segment `id` this node knows lost with a failed node
    /// (ranges of page numbers, inclusive, ascending); it replaces the
    /// node's previous report. A segment's home reports the pages no live
    /// node holds; after the home failed, every survivor that knew the
    /// segment reports the pages it does not hold.
    ReportLost {
        id: ObjectId,
        pages: Vec<(u64, u64)>,
    },
}

/// An answer of the referee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Joined {
        node: NodeId,
        heartbeat_ms: u64,
        down_after_ms: u64,
        /// Current members, so the node can reach its peers.
        members: Vec<Member>,
        /// This referee had declared the node down (and nothing of it
        /// has been heard since): the others dropped its copies, so it
        /// must drop them too and re-join empty (the node's fence).
        was_down: bool,
    },
    Ok,
    Record(ObjectRecord),
    Status(ClusterStatus),
    Err {
        errno: i32,
        message: String,
    },
}

/// Something the referee tells every joined node without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An object was removed (or destroyed): drop cached lookups.
    ObjectGone { id: ObjectId, key: Key, kind: Kind },
    /// A node joined or came back.
    NodeUp(Member),
    /// A node missed its heartbeats for `down_after_ms`.
    NodeDown { node: NodeId },
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: NodeId,
    pub name: String,
    pub listen: String,
    pub transport: String,
    pub up: bool,
    /// Milliseconds since the referee last heard from it.
    pub last_seen_ms: u64,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterStatus {
    pub cluster: String,
    pub members: Vec<Member>,
    pub objects: Vec<ObjectStatus>,
    /// Segments with lost pages, by id.
    pub lost: Vec<LostPages>,
}

/// The pages of a segment lost with a failed node: their only valid copy
/// was there, and an access to one gets `SIGBUS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LostPages {
    pub id: ObjectId,
    /// How many pages are lost.
    pub count: u64,
    /// The lost pages (page numbers, inclusive ranges, ascending).
    pub ranges: Vec<(u64, u64)>,
    /// The segment's home failed: the pages no survivor holds are lost.
    pub home_down: bool,
}

/// An object and whether its home is reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStatus {
    pub record: ObjectRecord,
    /// False while the home node is down.
    pub available: bool,
}
