//! Message queues and semaphore sets on a node: the homes of those created
//! here, and the callers on this node waiting for any of them.
//!
//! As in DIPC, a queue or set lives at its *home* (the node whose process
//! created it) and every operation on it runs there, in the pure engines
//! of `dipc_dsm` ([`MsgQueue`], [`SemSet`]); a caller on another node
//! waits for the answer of a peer call. Both sides are here, because a
//! node is the home of some objects and a caller of others (and a caller
//! of its own objects takes the same path without the network).
//!
//! # Waiting, cancelling, and why operations carry a token
//!
//! An operation that must wait is *parked* in its engine under an
//! [`OpId`] the home assigns; the home keeps a oneshot channel per parked
//! operation and completes it when a later call of the engine (a send, a
//! receive, `IPC_RMID`, a cancel) ends it. Remote waits are bounded by the
//! peer link, not by a timer: a peer call for an operation that may wait
//! has no deadline of its own, and when the link it came on closes the
//! home cancels every operation still parked for it.
//!
//! The caller names each operation with a *token* (unique per calling
//! node) so that it can cancel it: a signal interrupting the waiting
//! process makes libsysv send `Cancel` on the waiting connection, and the
//! node forwards [`PeerReq::IpcCancel`] on the same link as the operation,
//! after it. The home starts operations and cancels in the order they
//! arrive on a link (inline in the link's reader, `peer_call`), so a
//! cancel never overtakes its operation; a cancel that arrives after the
//! operation completed finds no token and does nothing, and the caller gets
//! the completed result (the kernel's rule: a signal after the wake-up
//! does not undo the operation). A cancel that comes before the operation
//! was sent stops it from being sent (`EINTR`).
//!
//! # Processes
//!
//! libsysv sends operations that may wait on *waiting connections* of the
//! process, one per waiting thread, and everything else on the process's
//! main connection. The closing of a waiting connection cancels its
//! operation (the process was killed, or gave up); the closing of the main
//! connection is the process's exit: the node tells the home of every set
//! in which the process made a `SEM_UNDO` operation
//! ([`PeerReq::ProcExit`]), which applies the adjustments
//! ([`SemSet::process_exit`]).
//!
//! # Direct connections
//!
//! A process may also send its operations on a remote home straight to it
//! (`crate::direct`): the home then starts them as if they had come on a
//! peer link from the caller's node ([`start_direct`]), each direct
//! connection being a link of its own for cancels and closing, and closes
//! those connections when the caller's node is declared down or this node
//! fences itself.
//!
//! Tested by unit tests here (cancel before and after parking, timeouts,
//! exit undo, a closed peer link, on a node without sockets) and end to
//! end by the `dipc` crate's `tests/msgsem.rs` (C programs on several
//! nodes); the engines have their own tests in `dipc_dsm`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use dipc_dsm::ipc::{Caller, Completion, Errno, IpcPerm, OpId, ProcId, flags, limits};
use dipc_dsm::msg::{MsgQueue, MsgResult, MsqidDs};
use dipc_dsm::sem::{SemBuf as EngineSemBuf, SemCtl, SemCtlResult, SemSet, SemidDs};
use dipc_transport_tcp::Replier;
use dipc_wire::local::{
    IpcLimits, MsgCtlCmd, MsgStat, Request as LReq, Response as LResp, SemCtlCmd, SemStat,
};
use dipc_wire::referee::{Caller as RefCaller, Request, Response};
use dipc_wire::{Kind, NodeId, ObjectId, ObjectRecord, Params, Perm, errno};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::local::Creds;
use crate::node::{Node, now_secs, peer_to_local};
use crate::peer::{PeerHandle, PeerReq, PeerResp};

/// The time bound of a peer call for an operation that may wait: in
/// effect none (the link bounds it, see the module doc).
const WAIT_FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The message-queue and semaphore state of a node, behind one lock that
/// is never held across an `.await`.
#[derive(Default)]
pub struct Ipc {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    // ---- home side ----
    queues: HashMap<ObjectId, MsgQueue>,
    sets: HashMap<ObjectId, SemSet>,
    /// Records of the objects above (kept current by `IPC_SET`).
    records: HashMap<ObjectId, ObjectRecord>,
    next_op: OpId,
    parked: HashMap<OpId, Parked>,
    /// (calling node, token) -> parked operation.
    by_token: HashMap<(NodeId, u64), OpId>,
    /// Per set: the processes that made `SEM_UNDO` operations in it (for
    /// when their node dies).
    undo_procs: HashMap<ObjectId, BTreeSet<ProcId>>,
    // ---- caller side ----
    next_token: u64,
    /// The operation in progress on each waiting connection.
    inflight: HashMap<u64, Inflight>,
    /// Waiting connections that asked to cancel before their operation
    /// was registered.
    cancel_early: HashSet<u64>,
    /// Connections that carried operations (their closing is not a
    /// process exit).
    waiting_conns: HashSet<u64>,
    /// Per local pid: the (home, set) pairs where it made `SEM_UNDO`
    /// operations.
    undo: HashMap<i32, BTreeSet<(NodeId, ObjectId)>>,
    // ---- direct connections served here (crate::direct) ----
    /// Link id -> (the node whose process it serves, its close switch).
    direct: HashMap<u64, (NodeId, Arc<tokio::sync::Notify>)>,
}

/// An operation parked at this home.
struct Parked {
    id: ObjectId,
    token: (NodeId, u64),
    /// The peer link it came on (`None`: a caller on this node).
    link: Option<u64>,
    tx: oneshot::Sender<PeerResp>,
    /// The `semtimedop` timer.
    timer: Option<tokio::task::AbortHandle>,
}

/// An operation of a local process, on its way or waiting.
struct Inflight {
    token: u64,
    /// The local process.
    pid: i32,
    /// `None` until it was handed to the home; then the link it went on
    /// (`None` inside for a home on this node).
    sent: Option<Option<PeerHandle>>,
    cancelled: bool,
}

/// What starting an operation at the home gave.
pub(crate) enum Start {
    Done(PeerResp),
    Wait(oneshot::Receiver<PeerResp>),
}

impl Ipc {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update of Inner is complete before anything that could
        // panic, so a poisoned lock still guards consistent state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tag for one peer link (see [`link_closed`]).
pub(crate) fn next_link() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The limits of this node: its configured `msgmax` and `msgmnb` (those
/// of the queues created here), the kernel's defaults for the rest.
pub fn ipc_limits(msg: crate::MsgLimits) -> IpcLimits {
    IpcLimits {
        msgmax: u64::from(msg.msgmax),
        msgmnb: msg.msgmnb,
        msgmni: limits::MSGMNI as u64,
        semmsl: limits::SEMMSL as u64,
        semopm: limits::SEMOPM as u64,
        semvmx: limits::SEMVMX as u64,
        semaem: limits::SEMAEM as u64,
        semmni: limits::SEMMNI as u64,
        semmns: limits::SEMMNS as u64,
    }
}

// ===================================================================
// Home side
// ===================================================================

fn msg_resp(r: Result<MsgResult, Errno>) -> PeerResp {
    match r {
        Ok(MsgResult::Sent) => PeerResp::Ok,
        Ok(MsgResult::Received { mtype, text }) => PeerResp::Msg { mtype, text },
        Err(e) => PeerResp::Err(e),
    }
}

fn sem_resp(r: Result<(), Errno>) -> PeerResp {
    match r {
        Ok(()) => PeerResp::Ok,
        Err(e) => PeerResp::Err(e),
    }
}

fn msg_out(out: Vec<Completion<MsgResult>>) -> Vec<(OpId, PeerResp)> {
    out.into_iter()
        .map(|c| (c.op, msg_resp(c.result)))
        .collect()
}

fn sem_out(out: Vec<Completion<()>>) -> Vec<(OpId, PeerResp)> {
    out.into_iter()
        .map(|c| (c.op, sem_resp(c.result)))
        .collect()
}

fn wire_perm(p: &IpcPerm) -> Perm {
    Perm {
        uid: p.uid,
        gid: p.gid,
        cuid: p.cuid,
        cgid: p.cgid,
        mode: p.mode,
    }
}

fn msg_stat(ds: &MsqidDs) -> MsgStat {
    MsgStat {
        key: ds.perm.key,
        perm: wire_perm(&ds.perm),
        stime: ds.stime,
        rtime: ds.rtime,
        ctime: ds.ctime,
        cbytes: ds.cbytes,
        qnum: ds.qnum,
        qbytes: ds.qbytes,
        lspid: ds.lspid.pid,
        lrpid: ds.lrpid.pid,
    }
}

fn sem_stat(ds: &SemidDs) -> SemStat {
    SemStat {
        key: ds.perm.key,
        perm: wire_perm(&ds.perm),
        otime: ds.otime,
        ctime: ds.ctime,
        nsems: ds.nsems,
    }
}

fn engine_ctl(cmd: SemCtlCmd) -> SemCtl {
    match cmd {
        SemCtlCmd::GetVal { semnum } => SemCtl::GetVal { semnum },
        SemCtlCmd::SetVal { semnum, val } => SemCtl::SetVal { semnum, val },
        SemCtlCmd::GetPid { semnum } => SemCtl::GetPid { semnum },
        SemCtlCmd::GetNcnt { semnum } => SemCtl::GetNcnt { semnum },
        SemCtlCmd::GetZcnt { semnum } => SemCtl::GetZcnt { semnum },
        SemCtlCmd::GetAll => SemCtl::GetAll,
        SemCtlCmd::SetAll { values } => SemCtl::SetAll { values },
        SemCtlCmd::Stat => SemCtl::Stat,
        SemCtlCmd::Set { uid, gid, mode } => SemCtl::Set { uid, gid, mode },
        SemCtlCmd::Rmid => SemCtl::Rmid,
    }
}

impl Inner {
    fn op(&mut self) -> OpId {
        self.next_op += 1;
        self.next_op
    }

    /// Hand completed operations their answers.
    fn complete(&mut self, out: Vec<(OpId, PeerResp)>) {
        for (op, resp) in out {
            if let Some(p) = self.parked.remove(&op) {
                self.by_token.remove(&p.token);
                if let Some(t) = p.timer {
                    t.abort();
                }
                // The caller may be gone (its link closed); nothing to do.
                let _ = p.tx.send(resp);
            }
        }
    }

    /// The engine answered `op` at once, or parked it: then wait.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        node: &Arc<Node>,
        op: OpId,
        id: ObjectId,
        token: (NodeId, u64),
        link: Option<u64>,
        timeout: Option<Duration>,
        out: Vec<(OpId, PeerResp)>,
    ) -> Start {
        let mut mine = None;
        let mut others = Vec::with_capacity(out.len());
        for (o, r) in out {
            if o == op && mine.is_none() {
                mine = Some(r);
            } else {
                others.push((o, r));
            }
        }
        self.complete(others);
        if let Some(r) = mine {
            return Start::Done(r);
        }
        let (tx, rx) = oneshot::channel();
        let timer = timeout.map(|d| {
            let node = node.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                node.ipc().lock().cancel_op(op, errno::EAGAIN);
            })
            .abort_handle()
        });
        self.by_token.insert(token, op);
        self.parked.insert(
            op,
            Parked {
                id,
                token,
                link,
                tx,
                timer,
            },
        );
        Start::Wait(rx)
    }

    /// True if this node is the home of object `id`.
    fn knows(&self, id: ObjectId) -> bool {
        self.queues.contains_key(&id) || self.sets.contains_key(&id)
    }

    /// End parked `op` with `errno` (signal, timeout, lost link).
    fn cancel_op(&mut self, op: OpId, errno: Errno) {
        let Some(id) = self.parked.get(&op).map(|p| p.id) else {
            return;
        };
        let out = if let Some(q) = self.queues.get_mut(&id) {
            msg_out(q.cancel(op, errno))
        } else if let Some(s) = self.sets.get_mut(&id) {
            sem_out(s.cancel(op, errno))
        } else {
            vec![(op, PeerResp::Err(errno::EIDRM))]
        };
        self.complete(out);
    }

    fn proc_exit(&mut self, proc_: ProcId, ids: &[ObjectId], now: i64) {
        for id in ids {
            if let Some(procs) = self.undo_procs.get_mut(id) {
                procs.remove(&proc_);
            }
            let out = if let Some(s) = self.sets.get_mut(id) {
                sem_out(s.process_exit(proc_, now))
            } else if let Some(q) = self.queues.get_mut(id) {
                msg_out(q.process_exit(proc_))
            } else {
                continue;
            };
            self.complete(out);
        }
    }
}

/// Start `req` from node `from` (arrived on peer link `link`, or from
/// this node) at this home.
fn start(node: &Arc<Node>, from: NodeId, link: Option<u64>, req: PeerReq) -> Start {
    let mut g = node.ipc().lock();
    let inner = &mut *g;
    let no_object = || Start::Done(PeerResp::Err(errno::EINVAL));
    match req {
        PeerReq::MsgSnd {
            id,
            caller,
            token,
            mtype,
            text,
            flags,
            now,
        } => {
            let op = inner.op();
            let Some(q) = inner.queues.get_mut(&id) else {
                return no_object();
            };
            let out = msg_out(q.send(op, &caller, mtype, text, flags, now));
            inner.finish(node, op, id, (from, token), link, None, out)
        }
        PeerReq::MsgRcv {
            id,
            caller,
            token,
            maxsize,
            msgtyp,
            flags,
            now,
        } => {
            let op = inner.op();
            let Some(q) = inner.queues.get_mut(&id) else {
                return no_object();
            };
            let maxsize = usize::try_from(maxsize).unwrap_or(usize::MAX);
            let out = msg_out(q.recv(op, &caller, maxsize, msgtyp, flags, now));
            inner.finish(node, op, id, (from, token), link, None, out)
        }
        PeerReq::SemOp {
            id,
            caller,
            token,
            sops,
            timeout_ns,
            now,
        } => {
            let op = inner.op();
            let Some(s) = inner.sets.get_mut(&id) else {
                return no_object();
            };
            let sops: Vec<EngineSemBuf> = sops
                .iter()
                .map(|b| EngineSemBuf {
                    num: b.num,
                    op: b.op,
                    flg: b.flg,
                })
                .collect();
            let out = sem_out(s.semop(op, &caller, &sops, now));
            if sops.iter().any(|b| b.flg & flags::SEM_UNDO != 0) {
                inner.undo_procs.entry(id).or_default().insert(caller.proc_);
            }
            let timeout = timeout_ns.map(Duration::from_nanos);
            inner.finish(node, op, id, (from, token), link, timeout, out)
        }
        PeerReq::MsgCtl {
            id,
            caller,
            cmd,
            now,
        } => {
            let Some(q) = inner.queues.get_mut(&id) else {
                return no_object();
            };
            match cmd {
                MsgCtlCmd::Stat => Start::Done(match q.stat(&caller) {
                    Ok(ds) => PeerResp::MsgStat(msg_stat(&ds)),
                    Err(e) => PeerResp::Err(e),
                }),
                MsgCtlCmd::Set {
                    uid,
                    gid,
                    mode,
                    qbytes,
                } => {
                    let (r, out) = q.set(&caller, uid, gid, mode, qbytes, now);
                    let perm = q.stat_any().perm;
                    inner.complete(msg_out(out));
                    if r.is_ok() {
                        perm_changed(node, inner, id, &perm);
                    }
                    Start::Done(sem_resp(r))
                }
                MsgCtlCmd::Rmid => match q.remove(&caller) {
                    Ok(out) => {
                        inner.complete(msg_out(out));
                        inner.queues.remove(&id);
                        removed(node, inner, id)
                    }
                    Err(e) => Start::Done(PeerResp::Err(e)),
                },
            }
        }
        PeerReq::SemCtl {
            id,
            caller,
            cmd,
            now,
        } => {
            let Some(s) = inner.sets.get_mut(&id) else {
                return no_object();
            };
            let (set, rmid) = (
                matches!(cmd, SemCtlCmd::Set { .. }),
                matches!(cmd, SemCtlCmd::Rmid),
            );
            let (r, out) = s.ctl(&caller, engine_ctl(cmd), now);
            let perm = s.stat_any().perm;
            inner.complete(sem_out(out));
            match r {
                Ok(_) if rmid => {
                    inner.sets.remove(&id);
                    inner.undo_procs.remove(&id);
                    removed(node, inner, id)
                }
                Ok(v) => {
                    if set {
                        perm_changed(node, inner, id, &perm);
                    }
                    Start::Done(match v {
                        SemCtlResult::Value(v) => PeerResp::Value(v),
                        SemCtlResult::Pid(p) => PeerResp::Value(p.pid),
                        SemCtlResult::Values(v) => PeerResp::Values(v),
                        SemCtlResult::Stat(ds) => PeerResp::SemStat(sem_stat(&ds)),
                        SemCtlResult::Done => PeerResp::Ok,
                    })
                }
                Err(e) => Start::Done(PeerResp::Err(e)),
            }
        }
        PeerReq::IpcCancel { token } => {
            if let Some(&op) = inner.by_token.get(&(from, token)) {
                inner.cancel_op(op, errno::EINTR);
            }
            Start::Done(PeerResp::Ok)
        }
        PeerReq::ProcExit { proc_, ids, now } => {
            inner.proc_exit(proc_, &ids, now);
            Start::Done(PeerResp::Ok)
        }
        _ => no_object(),
    }
}

/// `IPC_SET` succeeded: keep the record here and at the referee current.
fn perm_changed(node: &Arc<Node>, inner: &mut Inner, id: ObjectId, perm: &IpcPerm) {
    let Some(rec) = inner.records.get_mut(&id) else {
        return;
    };
    rec.perm = Perm {
        mode: (rec.perm.mode & !0o777) | (perm.mode & 0o777),
        ..wire_perm(perm)
    };
    let (rec, node) = (rec.clone(), node.clone());
    tokio::spawn(async move {
        let perm = rec.perm;
        node.host(rec);
        if let Err(e) = node.referee_call(&Request::SetPerm { id, perm }).await {
            debug!(id, "referee did not take the new permissions: errno {e}");
        }
    });
}

/// `IPC_RMID` succeeded: the key is free once the referee knows, and the
/// call answers then (so that a `*get` right after it creates anew).
fn removed(node: &Arc<Node>, inner: &mut Inner, id: ObjectId) -> Start {
    inner.records.remove(&id);
    let (tx, rx) = oneshot::channel();
    let node = node.clone();
    tokio::spawn(async move {
        node.unhost(id);
        let r = node
            .referee_call(&Request::Remove {
                id,
                still_attached: false,
            })
            .await;
        if let Err(e) = r {
            warn!(id, "referee did not take the removal: errno {e}");
        }
        let _ = tx.send(PeerResp::Ok);
    });
    Start::Wait(rx)
}

/// A message-queue or semaphore call from peer `from` on link `link`:
/// started here, in arrival order; answered when it completes.
/// The queue or set a call is about, if this home does not know it (yet).
fn unknown_object(node: &Node, req: &PeerReq) -> Option<ObjectId> {
    match req {
        PeerReq::MsgSnd { id, .. }
        | PeerReq::MsgRcv { id, .. }
        | PeerReq::SemOp { id, .. }
        | PeerReq::MsgCtl { id, .. }
        | PeerReq::SemCtl { id, .. } => Some(*id).filter(|&id| !node.ipc().lock().knows(id)),
        _ => None,
    }
}

pub(crate) fn peer_call(node: &Arc<Node>, from: NodeId, link: u64, req: PeerReq, reply: Replier) {
    // An object this home does not know may be one whose create is still
    // on its way back from the referee: answer once it is settled.
    if let Some(id) = unknown_object(node, &req) {
        let node = node.clone();
        tokio::spawn(async move {
            node.settle_creates(|| node.ipc().lock().knows(id)).await;
            answer_peer(&node, from, link, req, reply);
        });
        return;
    }
    answer_peer(node, from, link, req, reply);
}

/// Start an operation of a direct connection (`crate::direct`) of node
/// `from`'s process, as `peer_call` starts one that came on a peer link.
pub(crate) async fn start_direct(node: &Arc<Node>, from: NodeId, link: u64, req: PeerReq) -> Start {
    if let Some(id) = unknown_object(node, &req) {
        node.settle_creates(|| node.ipc().lock().knows(id)).await;
    }
    start(node, from, Some(link), req)
}

/// Register direct connection `link` of node `from`'s process: its switch
/// closes it when `from` is declared down or this node fences itself.
pub(crate) fn direct_opened(node: &Node, link: u64, from: NodeId) -> Arc<tokio::sync::Notify> {
    let kill = Arc::new(tokio::sync::Notify::new());
    node.ipc().lock().direct.insert(link, (from, kill.clone()));
    kill
}

/// Direct connection `link` closed: what waits for it is cancelled.
pub(crate) fn direct_closed(node: &Arc<Node>, link: u64) {
    node.ipc().lock().direct.remove(&link);
    link_closed(node, link);
}

fn answer_peer(node: &Arc<Node>, from: NodeId, link: u64, req: PeerReq, reply: Replier) {
    match start(node, from, Some(link), req) {
        Start::Done(resp) => reply.send(&resp, Bytes::new()),
        Start::Wait(rx) => {
            tokio::spawn(async move {
                let resp = rx.await.unwrap_or(PeerResp::Err(errno::EINTR));
                reply.send(&resp, Bytes::new());
            });
        }
    }
}

/// Peer link `link` closed: nobody can receive the answers of the
/// operations that came on it, so they are cancelled (as if the callers
/// had been interrupted), and take nothing from the queues or sets.
pub(crate) fn link_closed(node: &Arc<Node>, link: u64) {
    let mut g = node.ipc().lock();
    let ops: Vec<OpId> = g
        .parked
        .iter()
        .filter(|(_, p)| p.link == Some(link))
        .map(|(&op, _)| op)
        .collect();
    if !ops.is_empty() {
        debug!(
            link,
            "peer link closed: cancelling {} operations",
            ops.len()
        );
    }
    for op in ops {
        g.cancel_op(op, errno::EINTR);
    }
}

/// The referee says node `dead` is down: its processes are gone. Their
/// operations parked here end, and their `SEM_UNDO` adjustments are
/// applied, as the kernel does at exit (so a mutex held by a process of
/// a dead node is released).
pub(crate) fn node_down(node: &Node, dead: NodeId) {
    if node.node_id() == Some(dead) {
        return;
    }
    let now = now_secs();
    let mut g = node.ipc().lock();
    for (from, kill) in g.direct.values() {
        if *from == dead {
            kill.notify_one();
        }
    }
    let ops: Vec<OpId> = g
        .parked
        .iter()
        .filter(|(_, p)| p.token.0 == dead)
        .map(|(&op, _)| op)
        .collect();
    for op in ops {
        g.cancel_op(op, errno::EINTR);
    }
    let gone: Vec<(ObjectId, ProcId)> = g
        .undo_procs
        .iter()
        .flat_map(|(&id, procs)| procs.iter().map(move |&p| (id, p)))
        .filter(|(_, p)| p.node == dead)
        .collect();
    if !gone.is_empty() {
        debug!(
            dead,
            "node down: undoing {} processes' SEM_UNDO",
            gone.len()
        );
    }
    for (id, p) in gone {
        g.proc_exit(p, &[id], now);
    }
}

/// The node fenced itself ([`Node::fence`]): every queue and set homed
/// here is gone, and the operations parked on them end with `EIDRM`.
pub(crate) fn fence(node: &Node) {
    let mut g = node.ipc().lock();
    for (_, kill) in g.direct.values() {
        kill.notify_one();
    }
    g.queues.clear();
    g.sets.clear();
    g.records.clear();
    g.undo_procs.clear();
    let ops: Vec<OpId> = g.parked.keys().copied().collect();
    for op in ops {
        g.cancel_op(op, errno::EIDRM);
    }
}

// ===================================================================
// Caller side
// ===================================================================

/// Serve a message-queue or semaphore request of a local process.
pub(crate) async fn local_request(node: &Arc<Node>, conn: u64, creds: Creds, req: LReq) -> LResp {
    let Some(me) = node.node_id() else {
        return LResp::Err(errno::EIO);
    };
    let caller = Caller {
        proc_: ProcId {
            node: me,
            pid: creds.pid,
        },
        uid: creds.uid,
        gid: creds.gid,
    };
    let now = now_secs();
    let resp = match req {
        LReq::MsgGet { key, flags } => {
            return get(
                node,
                creds,
                key,
                flags,
                Params::Msg {
                    qbytes: node.config().msg.msgmnb,
                    msgmax: node.config().msg.msgmax,
                },
            )
            .await;
        }
        LReq::SemGet { key, nsems, flags } => {
            let Ok(nsems) = u32::try_from(nsems) else {
                return LResp::Err(errno::EINVAL);
            };
            return get(node, creds, key, flags, Params::Sem { nsems }).await;
        }
        LReq::IpcLimits => return LResp::Limits(ipc_limits(node.config().msg)),
        req @ (LReq::MsgSnd { .. } | LReq::MsgRcv { .. } | LReq::SemOp { .. }) => {
            match Op::of(req, caller, now) {
                Ok(op) => operation(node, conn, creds.pid, op).await,
                Err(_) => PeerResp::Err(errno::EINVAL),
            }
        }
        LReq::MsgCtl { id, cmd } => {
            let req = PeerReq::MsgCtl {
                id,
                caller,
                cmd,
                now,
            };
            control(node, Kind::Msg, id, req).await
        }
        LReq::SemCtl { id, cmd } => {
            let req = PeerReq::SemCtl {
                id,
                caller,
                cmd,
                now,
            };
            control(node, Kind::Sem, id, req).await
        }
        _ => PeerResp::Err(errno::EINVAL),
    };
    peer_to_local(resp)
}

/// An operation that may wait (`msgsnd`, `msgrcv`, `semop`), as the call
/// to its home: [`Op::call`] with its token still to be set.
pub(crate) struct Op {
    pub kind: Kind,
    pub id: ObjectId,
    /// It asks for `SEM_UNDO`.
    pub undo: bool,
    pub call: PeerReq,
}

impl Op {
    /// `req` by `caller` at `now`, if it is such an operation.
    pub(crate) fn of(req: LReq, caller: Caller, now: i64) -> Result<Op, LReq> {
        let token = 0;
        Ok(match req {
            LReq::MsgSnd {
                id,
                mtype,
                text,
                flags,
            } => Op {
                kind: Kind::Msg,
                id,
                undo: false,
                call: PeerReq::MsgSnd {
                    id,
                    caller,
                    token,
                    mtype,
                    text,
                    flags,
                    now,
                },
            },
            LReq::MsgRcv {
                id,
                maxsize,
                msgtyp,
                flags,
            } => Op {
                kind: Kind::Msg,
                id,
                undo: false,
                call: PeerReq::MsgRcv {
                    id,
                    caller,
                    token,
                    maxsize,
                    msgtyp,
                    flags,
                    now,
                },
            },
            LReq::SemOp {
                id,
                sops,
                timeout_ns,
            } => Op {
                kind: Kind::Sem,
                id,
                undo: sops.iter().any(|s| s.flg & flags::SEM_UNDO != 0),
                call: PeerReq::SemOp {
                    id,
                    caller,
                    token,
                    sops,
                    timeout_ns,
                    now,
                },
            },
            other => return Err(other),
        })
    }

    /// The call, named `token` (unique per calling node).
    pub(crate) fn named(mut self, t: u64) -> PeerReq {
        match &mut self.call {
            PeerReq::MsgSnd { token, .. }
            | PeerReq::MsgRcv { token, .. }
            | PeerReq::SemOp { token, .. } => *token = t,
            _ => {}
        }
        self.call
    }
}

/// `msgget`/`semget`: find or create at the referee; a creation makes
/// this node the home.
async fn get(node: &Arc<Node>, creds: Creds, key: i32, flags: i32, params: Params) -> LResp {
    let req = Request::Get {
        key,
        flags,
        params,
        caller: RefCaller {
            uid: creds.uid,
            gid: creds.gid,
            pid: creds.pid,
        },
        now: now_secs(),
    };
    let _creating = node.begin_create();
    let rec = match node.referee_call(&req).await {
        Ok(Response::Record(rec)) if rec.kind == params.kind() => rec,
        Ok(Response::Err { errno, .. }) => return LResp::Err(errno),
        Ok(other) => {
            warn!("referee answered {other:?} to a {} get", params.kind());
            return LResp::Err(errno::EIO);
        }
        Err(e) => return LResp::Err(e),
    };
    let id = rec.id;
    if Some(rec.home) != node.node_id() {
        node.cache_record(rec);
        return LResp::Id(id);
    }
    {
        let mut g = node.ipc().lock();
        let inner = &mut *g;
        let perm = IpcPerm {
            key: rec.key,
            uid: rec.perm.uid,
            gid: rec.perm.gid,
            cuid: rec.perm.cuid,
            cgid: rec.perm.cgid,
            mode: rec.perm.mode & 0o777,
        };
        match rec.params {
            Params::Msg { qbytes, msgmax } if !inner.queues.contains_key(&id) => {
                let q = MsgQueue::with_limits(perm, msgmax as usize, qbytes, rec.ctime);
                inner.queues.insert(id, q);
                inner.records.insert(id, rec.clone());
            }
            Params::Sem { nsems } if !inner.sets.contains_key(&id) => {
                inner
                    .sets
                    .insert(id, SemSet::new(perm, nsems as usize, rec.ctime));
                inner.records.insert(id, rec.clone());
            }
            _ => {}
        }
    }
    node.host(rec);
    LResp::Id(id)
}

/// The record of `id`, if it is of `kind` (`EINVAL` otherwise, as the
/// kernel says for an id of another kind).
pub(crate) async fn record_of(
    node: &Arc<Node>,
    kind: Kind,
    id: ObjectId,
) -> Result<ObjectRecord, Errno> {
    match node.record(id).await {
        Ok(r) if r.kind == kind => Ok(r),
        Ok(_) => Err(errno::EINVAL),
        Err(e) => Err(e),
    }
}

/// `msgctl`/`semctl`: at the home, with the usual bounded peer call.
async fn control(node: &Arc<Node>, kind: Kind, id: ObjectId, req: PeerReq) -> PeerResp {
    let rec = match record_of(node, kind, id).await {
        Ok(r) => r,
        Err(e) => return PeerResp::Err(e),
    };
    if Some(rec.home) != node.node_id() {
        return node.home_call(id, req).await;
    }
    match start(node, rec.home, None, req) {
        Start::Done(r) => r,
        Start::Wait(rx) => rx.await.unwrap_or(PeerResp::Err(errno::EIO)),
    }
}

/// Removes a waiting connection's operation however the request ends.
struct InflightGuard<'a> {
    node: &'a Node,
    conn: u64,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.node.ipc().lock();
        g.inflight.remove(&self.conn);
        g.cancel_early.remove(&self.conn);
    }
}

/// An operation that may wait (`msgsnd`, `msgrcv`, `semop`) by a local
/// process, on waiting connection `conn`.
async fn operation(node: &Arc<Node>, conn: u64, pid: i32, op: Op) -> PeerResp {
    let (id, undo) = (op.id, op.undo);
    let rec = match record_of(node, op.kind, id).await {
        Ok(r) => r,
        Err(e) => return PeerResp::Err(e),
    };
    let me = node.node_id().unwrap_or(0);
    let token = {
        let mut g = node.ipc().lock();
        g.waiting_conns.insert(conn);
        if g.cancel_early.remove(&conn) {
            return PeerResp::Err(errno::EINTR);
        }
        g.next_token += 1;
        let token = g.next_token;
        g.inflight.insert(
            conn,
            Inflight {
                token,
                pid,
                sent: None,
                cancelled: false,
            },
        );
        if undo {
            g.undo.entry(pid).or_default().insert((rec.home, id));
        }
        token
    };
    let _guard = InflightGuard { node, conn };
    let req = op.named(token);
    if rec.home == me {
        if !mark_sent(node, conn, None) {
            return PeerResp::Err(errno::EINTR);
        }
        return match start(node, me, None, req) {
            Start::Done(r) => r,
            Start::Wait(rx) => rx.await.unwrap_or(PeerResp::Err(errno::EINTR)),
        };
    }
    if node.is_member_down(rec.home) {
        // The home failed: the object went with it.
        return PeerResp::Err(errno::EIDRM);
    }
    let Some(h) = node.peers().handle(node, rec.home).await else {
        return PeerResp::Err(errno::EIDRM);
    };
    if !mark_sent(node, conn, Some(h.clone())) {
        return PeerResp::Err(errno::EINTR);
    }
    // The call is queued on the link in this poll, before any cancel can
    // be (see `local_cancel`).
    match h.call_payload(&req, Bytes::new(), WAIT_FOREVER).await {
        Ok((r, _)) => r,
        Err(e) => {
            warn!(home = rec.home, "operation on {id} failed: {e}");
            // The link to the home broke. If the referee declares the home
            // down (within one call timeout), the object died with it.
            let bound = node.config().call_timeout;
            if node.wait_member_down(rec.home, bound).await {
                PeerResp::Err(errno::EIDRM)
            } else {
                PeerResp::Err(errno::EIO)
            }
        }
    }
}

/// The operation of `conn` is about to go out on `link`: false if it was
/// cancelled already.
fn mark_sent(node: &Node, conn: u64, link: Option<PeerHandle>) -> bool {
    let mut g = node.ipc().lock();
    match g.inflight.get_mut(&conn) {
        Some(i) if !i.cancelled => {
            i.sent = Some(link);
            true
        }
        _ => false,
    }
}

/// A signal interrupted the process waiting on connection `conn` (it sent
/// `Cancel`), or the connection closed: cancel its operation.
pub(crate) fn local_cancel(node: &Arc<Node>, conn: u64) {
    let me = node.node_id().unwrap_or(0);
    let mut g = node.ipc().lock();
    let Some(i) = g.inflight.get_mut(&conn) else {
        g.cancel_early.insert(conn);
        return;
    };
    if i.cancelled {
        return;
    }
    i.cancelled = true;
    let token = i.token;
    match i.sent.clone() {
        None => {}
        Some(None) => {
            if let Some(&op) = g.by_token.get(&(me, token)) {
                g.cancel_op(op, errno::EINTR);
            }
        }
        Some(Some(h)) => {
            drop(g);
            tokio::spawn(async move {
                if let Err(e) = h.call(&PeerReq::IpcCancel { token }).await {
                    debug!("cancel of operation {token} not delivered: {e}");
                }
            });
        }
    }
}

/// Local connection `conn` of process `creds.pid` closed. A waiting
/// connection's operation was cancelled already; the main connection's
/// closing is the process's exit: operations still waiting on its other
/// connections are cancelled (a forked child may hold a copy of such a
/// connection open), and its `SEM_UNDO` adjustments are applied at the
/// homes of the sets it used them in.
pub(crate) fn process_gone(node: &Arc<Node>, conn: u64, creds: Creds) {
    let me = node.node_id().unwrap_or(0);
    let (sets, waiting) = {
        let mut g = node.ipc().lock();
        g.cancel_early.remove(&conn);
        g.inflight.remove(&conn);
        if g.waiting_conns.remove(&conn) {
            return;
        }
        let waiting: Vec<u64> = g
            .inflight
            .iter()
            .filter(|(_, i)| i.pid == creds.pid)
            .map(|(&c, _)| c)
            .collect();
        (g.undo.remove(&creds.pid).unwrap_or_default(), waiting)
    };
    for c in waiting {
        local_cancel(node, c);
    }
    let proc_ = ProcId {
        node: me,
        pid: creds.pid,
    };
    let mut by_home: BTreeMap<NodeId, Vec<ObjectId>> = BTreeMap::new();
    for (home, id) in sets {
        by_home.entry(home).or_default().push(id);
    }
    let now = now_secs();
    for (home, ids) in by_home {
        if home == me {
            node.ipc().lock().proc_exit(proc_, &ids, now);
            continue;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let Some(h) = node.peers().handle(&node, home).await else {
                warn!(home, "process {} exit: home unreachable", proc_.pid);
                return;
            };
            if let Err(e) = h.call(&PeerReq::ProcExit { proc_, ids, now }).await {
                warn!(home, "process {} exit not delivered: {e}", proc_.pid);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! The node-side paths without sockets: a `Node` that "joined" as
    //! node 1, a set installed at it as home, and requests as the local
    //! server would pass them.

    use super::*;
    use dipc_wire::local::SemBuf;

    const SET: ObjectId = dipc_wire::DIPC_ID_BIT | 1;
    const CREDS: Creds = Creds {
        pid: 4242,
        uid: 0,
        gid: 0,
    };

    fn node_with_set(nsems: usize) -> Arc<Node> {
        let node = Arc::new(Node::new(crate::NodeConfig {
            name: "test".into(),
            listen: "127.0.0.1:0".into(),
            socket: "/nonexistent/test.sock".into(),
            referee: "127.0.0.1:0".into(),
            cluster: "test".into(),
            secret: Arc::from(&b"secret"[..]),
            tls: None,
            transport: "tcp".into(),
            rdma: Default::default(),
            call_timeout: Duration::from_secs(5),
            default_unit: 4096,
            msg: Default::default(),
        }));
        node.joined(1, Vec::new());
        let rec = ObjectRecord {
            key: 77,
            id: SET,
            kind: Kind::Sem,
            home: 1,
            params: Params::Sem {
                nsems: nsems as u32,
            },
            perm: Perm {
                mode: 0o600,
                ..Perm::default()
            },
            ctime: 0,
            removed: false,
        };
        let perm = IpcPerm {
            key: 77,
            mode: 0o600,
            ..IpcPerm::default()
        };
        node.ipc()
            .lock()
            .sets
            .insert(SET, SemSet::new(perm, nsems, 0));
        node.host(rec);
        node
    }

    fn semop(op: i16, flg: i16, timeout_ns: Option<u64>) -> LReq {
        LReq::SemOp {
            id: SET,
            sops: vec![SemBuf { num: 0, op, flg }],
            timeout_ns,
        }
    }

    async fn getval(node: &Arc<Node>) -> LResp {
        let req = LReq::SemCtl {
            id: SET,
            cmd: SemCtlCmd::GetVal { semnum: 0 },
        };
        local_request(node, 1, CREDS, req).await
    }

    /// Yield until `conn`'s operation is parked at the home.
    async fn parked(node: &Arc<Node>, n: usize) {
        for _ in 0..1000 {
            if node.ipc().lock().parked.len() == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("operation never parked");
    }

    #[tokio::test]
    async fn a_cancel_ends_a_parked_operation_with_eintr() {
        let node = node_with_set(1);
        let n = node.clone();
        let waiting =
            tokio::spawn(async move { local_request(&n, 7, CREDS, semop(-1, 0, None)).await });
        parked(&node, 1).await;
        local_cancel(&node, 7);
        let r = waiting.await.expect("task");
        assert_eq!(r, LResp::Err(errno::EINTR));
        assert!(node.ipc().lock().parked.is_empty());
        // Nothing taken, nothing left behind for the connection.
        assert_eq!(getval(&node).await, LResp::Value(0));
        let g = node.ipc().lock();
        assert!(g.inflight.is_empty() && g.cancel_early.is_empty());
    }

    #[tokio::test]
    async fn a_cancel_that_comes_first_stops_the_operation_from_starting() {
        let node = node_with_set(1);
        local_cancel(&node, 8);
        let r = local_request(&node, 8, CREDS, semop(1, 0, None)).await;
        assert_eq!(r, LResp::Err(errno::EINTR));
        assert_eq!(getval(&node).await, LResp::Value(0));
    }

    #[tokio::test]
    async fn the_main_connection_closing_applies_sem_undo_and_a_waiting_one_does_not() {
        let node = node_with_set(1);
        let undo = flags::SEM_UNDO;
        assert_eq!(
            local_request(&node, 9, CREDS, semop(3, undo, None)).await,
            LResp::Ok
        );
        assert_eq!(getval(&node).await, LResp::Value(3));
        // Connection 9 carried the operation: its closing is no exit.
        process_gone(&node, 9, CREDS);
        assert_eq!(getval(&node).await, LResp::Value(3));
        // The main connection's closing is.
        process_gone(&node, 10, CREDS);
        assert_eq!(getval(&node).await, LResp::Value(0));
    }

    #[tokio::test]
    async fn a_timeout_ends_the_wait_with_eagain_at_the_home() {
        let node = node_with_set(1);
        let r = local_request(&node, 11, CREDS, semop(-1, 0, Some(5_000_000))).await;
        assert_eq!(r, LResp::Err(errno::EAGAIN));
        assert!(node.ipc().lock().parked.is_empty());
    }

    #[tokio::test]
    async fn a_closed_peer_link_cancels_what_came_on_it_only() {
        let node = node_with_set(1);
        let caller = Caller {
            proc_: ProcId { node: 2, pid: 5 },
            uid: 0,
            gid: 0,
        };
        let req = |token| PeerReq::SemOp {
            id: SET,
            caller,
            token,
            sops: vec![SemBuf {
                num: 0,
                op: -1,
                flg: 0,
            }],
            timeout_ns: None,
            now: 0,
        };
        let (Start::Wait(a), Start::Wait(b)) = (
            start(&node, 2, Some(100), req(1)),
            start(&node, 2, Some(101), req(2)),
        ) else {
            panic!("the operations should wait");
        };
        link_closed(&node, 100);
        assert_eq!(a.await.ok(), Some(PeerResp::Err(errno::EINTR)));
        // The other one still waits, and a post wakes it.
        assert_eq!(
            local_request(&node, 12, CREDS, semop(1, 0, None)).await,
            LResp::Ok
        );
        assert_eq!(b.await.ok(), Some(PeerResp::Ok));
        assert_eq!(getval(&node).await, LResp::Value(0));
    }
}
