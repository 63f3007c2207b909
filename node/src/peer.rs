//! The node-to-node protocol and the peer links.
//!
//! Every node dials each peer it needs to talk to and sends everything for
//! that peer (coherence messages, calls to the home of an object) on its own
//! outgoing connection, so messages from A to B are FIFO, which the
//! coherence protocol relies on. Replies come back on the connection the
//! call went out on. The first message on a connection is `Hello` with the
//! dialer's node id (the handshake already proved it knows the secret).
//!
//! Messages for a peer that is not connected yet are queued (in order)
//! while a task dials it; a link that dies is redialed on the next send.
//!
//! Transport: every link starts as an authenticated TCP connection. Before
//! any RPC traffic the dialer sends [`LinkSetup::Open`] saying whether it
//! wants RDMA, and the acceptor answers [`LinkSetup::Accept`] with RDMA
//! only if both nodes use it. With RDMA, both sides then set up a queue
//! pair over that authenticated connection (`dipc_transport_rdma::
//! establish`: GID, QPN, PSN and rkeys travel only there) and run the same
//! RPC over it; page data is copied through the connection's registered
//! staging rings, never registered in place (DESIGN.md's pinning trap). A
//! node on TCP and a node on RDMA talk over TCP (logged once per link). A
//! failed RDMA setup fails that dial like an unreachable peer; the next
//! send dials again.
//!
//! With TLS (`NodeConfig::tls`) the TCP connection is TLS from its first
//! byte, so `LinkSetup` and the RDMA connection data travel encrypted;
//! the verbs traffic that follows is not encrypted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dipc_dsm::coherence::CohMsg;
use dipc_dsm::ipc::{Caller as IpcCaller, ProcId};
use dipc_transport_tcp::{Conn, Incoming, Role, RpcHandle, rpc_with};
use dipc_wire::Frame;
use dipc_wire::local::{MsgCtlCmd, MsgStat, SemBuf, SemCtlCmd, SemStat, ShmStat};
use dipc_wire::referee::Caller;
use dipc_wire::{NodeId, ObjectId};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::metrics;
use crate::node::Node;

/// One-way messages between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// First message on a connection: who is dialing.
    Hello { node: NodeId },
    /// A coherence protocol message; page data travels as the raw payload.
    Coh(CohMsg),
}

/// Calls to the home of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReq {
    /// `shmat` on another node: permission check and attach count at the home.
    ShmAttach {
        id: ObjectId,
        caller: Caller,
        readonly: bool,
        now: i64,
    },
    /// `shmdt` (or exit) on another node.
    ShmDetach {
        id: ObjectId,
        pid: i32,
        now: i64,
    },
    ShmStat {
        id: ObjectId,
        caller: Caller,
    },
    ShmSet {
        id: ObjectId,
        caller: Caller,
        uid: u32,
        gid: u32,
        mode: u32,
        now: i64,
    },
    ShmRmid {
        id: ObjectId,
        caller: Caller,
    },
    /// `msgsnd` at the queue's home. `token` names the operation for
    /// [`PeerReq::IpcCancel`] (unique per calling node).
    MsgSnd {
        id: ObjectId,
        caller: IpcCaller,
        token: u64,
        mtype: i64,
        #[serde(with = "dipc_wire::byte_buf")]
        text: bytes::Bytes,
        flags: i32,
        now: i64,
    },
    /// `msgrcv` at the queue's home.
    MsgRcv {
        id: ObjectId,
        caller: IpcCaller,
        token: u64,
        maxsize: u64,
        msgtyp: i64,
        flags: i32,
        now: i64,
    },
    MsgCtl {
        id: ObjectId,
        caller: IpcCaller,
        cmd: MsgCtlCmd,
        now: i64,
    },
    /// `semop`/`semtimedop` at the set's home.
    SemOp {
        id: ObjectId,
        caller: IpcCaller,
        token: u64,
        sops: Vec<SemBuf>,
        timeout_ns: Option<u64>,
        now: i64,
    },
    SemCtl {
        id: ObjectId,
        caller: IpcCaller,
        cmd: SemCtlCmd,
        now: i64,
    },
    /// A signal interrupted the caller of operation `token` (sent by the
    /// node that sent the operation, on the same link, after it).
    IpcCancel {
        token: u64,
    },
    /// Process `proc_` is gone: apply its `SEM_UNDO` adjustments in sets
    /// `ids` and end its waiting operations.
    ProcExit {
        proc_: ProcId,
        ids: Vec<ObjectId>,
        now: i64,
    },
}

impl PeerReq {
    /// Is this a message-queue or semaphore call (served by `crate::ipc`)?
    pub fn is_ipc(&self) -> bool {
        matches!(
            self,
            PeerReq::MsgSnd { .. }
                | PeerReq::MsgRcv { .. }
                | PeerReq::MsgCtl { .. }
                | PeerReq::SemOp { .. }
                | PeerReq::SemCtl { .. }
                | PeerReq::IpcCancel { .. }
                | PeerReq::ProcExit { .. }
        )
    }
}

/// Answers of the home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerResp {
    Ok,
    Err(i32),
    ShmStat(ShmStat),
    /// A received message.
    Msg {
        mtype: i64,
        #[serde(with = "dipc_wire::byte_buf")]
        text: bytes::Bytes,
    },
    MsgStat(MsgStat),
    SemStat(SemStat),
    /// What `semctl` GETVAL, GETPID, GETNCNT, GETZCNT return.
    Value(i32),
    /// GETALL.
    Values(Vec<u16>),
}

pub type PeerHandle = RpcHandle<PeerReq, PeerResp, PeerMsg>;
type PeerIncoming = tokio::sync::mpsc::Receiver<Incoming<PeerReq, PeerMsg>>;

/// Largest message on a peer link: a whole segment-mode segment and its
/// header. Larger payloads than one frame travel in parts
/// (`dipc_transport_tcp::chunk`), so this bounds what one message can make
/// the receiving node buffer, not the frames.
pub const MAX_PEER_MESSAGE: usize = crate::shm::MAX_SEGMENT_MODE_SIZE as usize + 64 * 1024;

/// The first exchange on a peer link, before RPC starts: which transport
/// carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkSetup {
    /// From the dialer: does it want RDMA?
    Open { rdma: bool },
    /// From the acceptor: RDMA if both want it. (Also its answer to
    /// `Direct`, with `rdma: false`.)
    Accept { rdma: bool },
    /// From the dialer, instead of `Open`: this is a direct connection
    /// for one process of the dialer (see `crate::direct`).
    Direct(crate::direct::DirectHello),
}

/// The next link setup message on `conn`, within the call timeout.
async fn recv_setup(conn: &mut Conn, timeout: std::time::Duration) -> Result<LinkSetup, String> {
    match tokio::time::timeout(timeout, conn.recv()).await {
        Err(_) => Err(format!("no link setup within {timeout:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(None)) => Err("closed during link setup".into()),
        Ok(Ok(Some(f))) => f
            .decode::<LinkSetup>()
            .map_err(|e| format!("bad link setup message: {e}")),
    }
}

/// Agree on the transport of a freshly authenticated link and start RPC
/// on it. `theirs` is `None` on the dialer's side, and on the acceptor's
/// what the dialer's `Open` asked for.
async fn start_link(
    node: &Node,
    mut conn: Conn,
    theirs: Option<bool>,
) -> Result<(PeerHandle, PeerIncoming, &'static str), String> {
    let timeout = node.config().call_timeout;
    let rdma = node.config().rdma_links();
    let peer = conn.peer().to_string();
    let use_rdma = match theirs {
        None => {
            let open = Frame::msg(&LinkSetup::Open {
                rdma: rdma.is_some(),
            });
            conn.send(&open).await.map_err(|e| e.to_string())?;
            match recv_setup(&mut conn, timeout).await? {
                LinkSetup::Accept { rdma } => rdma,
                other => return Err(format!("expected Accept, got {other:?}")),
            }
        }
        Some(theirs) => {
            let agreed = theirs && rdma.is_some();
            let accept = Frame::msg(&LinkSetup::Accept { rdma: agreed });
            conn.send(&accept).await.map_err(|e| e.to_string())?;
            agreed
        }
    };
    match (use_rdma, rdma) {
        (true, Some(cfg)) => {
            let conn = dipc_transport_rdma::establish(conn, cfg)
                .await
                .map_err(|e| format!("RDMA setup failed: {e}"))?;
            let (h, rx) = rpc_with(conn, timeout, MAX_PEER_MESSAGE);
            Ok((h, rx, "rdma"))
        }
        (true, None) => Err("peer accepted RDMA that this node did not offer".into()),
        (false, mine) => {
            if mine.is_some() {
                info!("{peer} uses TCP for peer links; this link falls back to TCP");
            }
            let (h, rx) = rpc_with(conn, timeout, MAX_PEER_MESSAGE);
            Ok((h, rx, "tcp"))
        }
    }
}

enum Link {
    Up(PeerHandle),
    Dialing(VecDeque<(PeerMsg, Bytes)>),
}

/// Outgoing links to peers.
#[derive(Default)]
pub struct Peers {
    links: Mutex<HashMap<NodeId, Link>>,
}

impl Peers {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send a one-way message to `to`, in order with every earlier one.
    pub fn send(self: &Arc<Self>, node: &Arc<Node>, to: NodeId, msg: PeerMsg, payload: Bytes) {
        if matches!(msg, PeerMsg::Coh(_)) {
            metrics::COH_SENT.inc();
            metrics::BYTES_SENT.add(payload.len() as u64);
        }
        let mut links = self.links();
        match links.get_mut(&to) {
            Some(Link::Up(h)) if !h.is_closed() => {
                if let Err(e) = h.notify(&msg, payload) {
                    metrics::ERRORS.inc();
                    warn!(peer = to, "send failed: {e}");
                }
                return;
            }
            Some(Link::Dialing(q)) => {
                q.push_back((msg, payload));
                return;
            }
            _ => {}
        }
        links.insert(to, Link::Dialing(VecDeque::from([(msg, payload)])));
        drop(links);
        let (peers, node) = (self.clone(), node.clone());
        tokio::spawn(async move { peers.dial(node, to).await });
    }

    /// A handle for calls to `to`, dialing if needed.
    pub async fn handle(self: &Arc<Self>, node: &Arc<Node>, to: NodeId) -> Option<PeerHandle> {
        let deadline = tokio::time::Instant::now() + node.config().call_timeout;
        loop {
            {
                let mut links = self.links();
                match links.get(&to) {
                    Some(Link::Up(h)) if !h.is_closed() => return Some(h.clone()),
                    Some(Link::Dialing(_)) => {}
                    _ => {
                        links.insert(to, Link::Dialing(VecDeque::new()));
                        let (peers, node) = (self.clone(), node.clone());
                        tokio::spawn(async move { peers.dial(node, to).await });
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn dial(self: Arc<Self>, node: Arc<Node>, to: NodeId) {
        let Some(addr) = node.member_addr(to) else {
            warn!(
                peer = to,
                "no address known for node {to}; dropping its queued messages"
            );
            self.links().remove(&to);
            return;
        };
        let timeout = node.config().call_timeout;
        let conn = match Conn::connect(&addr, &node.auth(), Role::Node, timeout).await {
            Ok((c, _)) => c,
            Err(e) => {
                warn!(peer = to, "cannot reach node {to} at {addr}: {e}");
                self.links().remove(&to);
                return;
            }
        };
        let (h, incoming, transport) = match start_link(&node, conn, None).await {
            Ok(x) => x,
            Err(e) => {
                metrics::ERRORS.inc();
                warn!(
                    peer = to,
                    "cannot set up the link to node {to} at {addr}: {e}"
                );
                self.links().remove(&to);
                return;
            }
        };
        // Calls and notifies on the dialed connection come from the peer only
        // as replies; anything else there is served like an incoming link.
        tokio::spawn(serve_incoming(node.clone(), Some(to), incoming));
        let me = node.node_id().unwrap_or(0);
        let _ = h.notify(&PeerMsg::Hello { node: me }, Bytes::new());
        let mut links = self.links();
        if let Some(Link::Dialing(q)) = links.remove(&to) {
            for (m, p) in q {
                if let Err(e) = h.notify(&m, p) {
                    warn!(peer = to, "send failed: {e}");
                }
            }
        }
        info!(peer = to, "link to node {to} at {addr} over {transport}");
        links.insert(to, Link::Up(h));
    }
}

/// Accept peer connections.
pub async fn listen(listener: tokio::net::TcpListener, node: Arc<Node>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("peer accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let timeout = node.config().call_timeout;
            let mut conn = match Conn::accept(stream, &node.auth(), timeout).await {
                Ok((conn, _)) => conn,
                Err(e) => return warn!("refused peer connection from {addr}: {e}"),
            };
            let theirs = match recv_setup(&mut conn, timeout).await {
                Ok(LinkSetup::Open { rdma }) => rdma,
                // TLS cannot be handed to a process, so no node asks.
                Ok(LinkSetup::Direct(hello)) if !conn.is_tls() => {
                    return crate::direct::serve(node, conn, hello).await;
                }
                Ok(other) => {
                    metrics::ERRORS.inc();
                    return warn!("peer link from {addr}: unexpected {other:?}");
                }
                Err(e) => {
                    metrics::ERRORS.inc();
                    return warn!("peer link from {addr} failed: {e}");
                }
            };
            match start_link(&node, conn, Some(theirs)).await {
                Ok((_h, incoming, transport)) => {
                    debug!("link from {addr} over {transport}");
                    serve_incoming(node, None, incoming).await
                }
                Err(e) => {
                    metrics::ERRORS.inc();
                    warn!("peer link from {addr} failed: {e}");
                }
            }
        });
    }
}

/// Serve what a peer sends on one connection.
async fn serve_incoming(node: Arc<Node>, mut from: Option<NodeId>, mut incoming: PeerIncoming) {
    // Message-queue and semaphore calls start here, in arrival order, so a
    // cancel never overtakes the operation it cancels; those still waiting
    // when the link goes are cancelled (the caller cannot get the answer).
    let link = crate::ipc::next_link();
    while let Some(item) = incoming.recv().await {
        match item {
            Incoming::Notify {
                ev: PeerMsg::Hello { node: n },
                ..
            } => from = Some(n),
            Incoming::Notify {
                ev: PeerMsg::Coh(msg),
                payload,
            } => match from {
                Some(f) => {
                    metrics::COH_RECEIVED.inc();
                    metrics::BYTES_RECEIVED.add(payload.len() as u64);
                    node.coherence_message(f, msg, payload)
                }
                None => {
                    metrics::ERRORS.inc();
                    warn!("coherence message before Hello: dropped")
                }
            },
            Incoming::Call { req, reply, .. } if req.is_ipc() => match from {
                Some(f) => crate::ipc::peer_call(&node, f, link, req, reply),
                None => reply.send(&PeerResp::Err(dipc_wire::errno::EPROTO), Bytes::new()),
            },
            Incoming::Call { req, reply, .. } => {
                let node = node.clone();
                tokio::spawn(async move {
                    let resp = node.peer_call(from, req).await;
                    reply.send(&resp, Bytes::new());
                });
            }
        }
    }
    crate::ipc::link_closed(&node, link);
}
