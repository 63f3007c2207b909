//! Direct connections: a process's queue and semaphore operations sent
//! straight to the object's home.
//!
//! A remote `msgsnd`, `msgrcv` or `semop` relayed by the caller's node
//! crosses the process's socket to its node, the peer link, and both again
//! on the way back: four hops and three sleeping threads to wake per call.
//! A direct connection takes the middle out. The process asks its node for
//! one ([`Request::Direct`], once per home and process, pooled by libsysv);
//! the node dials the home, authenticates as itself (the cluster secret
//! never leaves the daemon), and says [`LinkSetup::Direct`] with the
//! caller's node, pid, uid and gid, which the kernel vouched for on the
//! local socket. The home binds the connection to that caller and answers
//! [`LinkSetup::Accept`]; the node hands the socket to the process
//! (`SCM_RIGHTS`) and forgets it. From then on the process sends those
//! operations (and `Cancel`) in the local protocol, and the home ([`serve`])
//! runs them in its engines exactly as if they had come on a peer link from
//! the caller's node: same caller, same cancel and link rules
//! (`crate::ipc`).
//!
//! What a direct connection cannot change: the caller's identity is the
//! one bound when it was opened (libsysv keeps one per effective uid and
//! gid, so a process that changes ids opens another, and the socket is
//! its own as an open file would be); it carries only these operations
//! (anything else closes it, with a logged reason); a home that learns the
//! caller's node is down, or fences itself, closes it (so a process of a
//! node the cluster gave up on stops being served, as with the relay). A
//! connection that breaks with an operation unanswered is judged by the
//! caller's node ([`Request::DirectLost`]): `EIDRM` if the home is declared
//! down within the call timeout, else `EIO`, the relay's rule.
//!
//! Not used (the node answers [`Response::Relay`]) when the object's home
//! is the caller's own node, or when links run under TLS: the TLS session
//! cannot leave the daemon.
//!
//! Tested end to end by the `dipc` crate's `tests/msgsem.rs` and
//! `tests/failure.rs`, whose remote operations take this path.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dipc_dsm::ipc::{Caller, ProcId};
use dipc_transport_tcp::{Conn, Role};
use dipc_wire::local::{LocalFrame, Request, Response};
use dipc_wire::{Frame, Kind, NodeId, ObjectId, errno};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::ipc::{self, Op, Start};
use crate::local::Creds;
use crate::metrics;
use crate::node::{Node, now_secs, peer_to_local};
use crate::peer::{LinkSetup, PeerReq, PeerResp};

/// Who a direct connection serves: sent by the caller's node in
/// [`LinkSetup::Direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectHello {
    pub node: NodeId,
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Tokens of direct operations: unique at this home, and apart from the
/// tokens a node gives its relayed operations (which count up from 1), so
/// the two never name each other's operations.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1 << 63);

/// Caller side: a direct connection to the home of `id` for the process
/// `creds`, or `Relay`.
pub(crate) async fn open(
    node: &Arc<Node>,
    creds: Creds,
    kind: Kind,
    id: ObjectId,
) -> (Response, Option<OwnedFd>) {
    if node.config().tls.is_some() {
        return (Response::Relay, None);
    }
    let rec = match ipc::record_of(node, kind, id).await {
        Ok(r) => r,
        Err(e) => return (Response::Err(e), None),
    };
    let Some(me) = node.node_id() else {
        return (Response::Err(errno::EIO), None);
    };
    if rec.home == me {
        return (Response::Relay, None);
    }
    if node.is_member_down(rec.home) {
        return (Response::Err(errno::EIDRM), None);
    }
    let hello = DirectHello {
        node: me,
        pid: creds.pid,
        uid: creds.uid,
        gid: creds.gid,
    };
    match dial(node, rec.home, hello).await {
        Ok(fd) => {
            metrics::DIRECT_OPENED.inc();
            (Response::Direct { home: rec.home }, Some(fd))
        }
        Err(e) => {
            // The relay path has its own waits and errors for an
            // unreachable home; the process uses it for this object.
            warn!(
                home = rec.home,
                "no direct connection to node {}: {e}", rec.home
            );
            (Response::Relay, None)
        }
    }
}

async fn dial(node: &Arc<Node>, home: NodeId, hello: DirectHello) -> Result<OwnedFd, String> {
    let addr = node
        .member_addr(home)
        .ok_or_else(|| format!("no address known for node {home}"))?;
    let timeout = node.config().call_timeout;
    let (mut conn, _) = Conn::connect(&addr, &node.auth(), Role::Node, timeout)
        .await
        .map_err(|e| e.to_string())?;
    conn.send(&Frame::msg(&LinkSetup::Direct(hello)))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, conn.recv()).await {
        Err(_) => return Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(None)) => return Err("closed by the home".into()),
        Ok(Ok(Some(f))) => match f.decode::<LinkSetup>() {
            Ok(LinkSetup::Accept { .. }) => {}
            other => return Err(format!("unexpected answer {other:?}")),
        },
    }
    let (tcp, rest, _) = conn.into_parts();
    if !rest.is_empty() {
        return Err(format!("{} bytes after the answer", rest.len()));
    }
    let tcp = tcp.into_std().map_err(|e| e.to_string())?;
    // The process waits in blocking reads; the socket's flags are shared
    // with the descriptor it receives.
    tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(OwnedFd::from(tcp))
}

/// Caller side: the direct connection to `home` broke with an operation
/// unanswered.
pub(crate) async fn lost(node: &Arc<Node>, home: NodeId) -> Response {
    if node
        .wait_member_down(home, node.config().call_timeout)
        .await
    {
        Response::Err(errno::EIDRM)
    } else {
        Response::Err(errno::EIO)
    }
}

/// Home side: serve direct connection `conn` of `hello`'s process until it
/// closes, breaks the protocol, or is closed by `node_down`/`fence`.
pub(crate) async fn serve(node: Arc<Node>, mut conn: Conn, hello: DirectHello) {
    let peer = conn.peer().to_string();
    let accept = Frame::msg(&LinkSetup::Accept { rdma: false });
    if let Err(e) = conn.send(&accept).await {
        debug!("direct connection from {peer}: {e}");
        return;
    }
    let link = ipc::next_link();
    let kill = ipc::direct_opened(&node, link, hello.node);
    let caller = Caller {
        proc_: ProcId {
            node: hello.node,
            pid: hello.pid,
        },
        uid: hello.uid,
        gid: hello.gid,
    };
    let who = format!("process {} of node {} ({peer})", hello.pid, hello.node);
    debug!("direct connection from {who}");
    // The switch first: `node_down` ends the parked operations of the
    // dead node (with `EINTR`) as it throws it, and the process must see
    // its connection close (then `EIO` from its node), not a signal.
    let why = tokio::select! {
        biased;
        () = kill.notified() => "its node is down, or this node fenced itself".into(),
        why = serve_ops(&node, &mut conn, link, caller) => why,
    };
    debug!("direct connection from {who} closed: {why}");
    ipc::direct_closed(&node, link);
}

/// What the next frame on a direct connection is.
enum Next {
    Op(Box<Op>),
    Cancel,
    End(String),
}

async fn next(conn: &mut Conn, caller: Caller) -> Next {
    let frame = match conn.recv().await {
        Ok(Some(f)) => f,
        Ok(None) => return Next::End("closed".into()),
        Err(e) => {
            metrics::ERRORS.inc();
            warn!("bad input on a direct connection: {e}: closing it");
            return Next::End(e.to_string());
        }
    };
    match Request::from_frame(&frame) {
        Ok(Request::Cancel) => Next::Cancel,
        Ok(req) => match Op::of(req, caller, now_secs()) {
            Ok(op) => Next::Op(Box::new(op)),
            Err(other) => {
                metrics::ERRORS.inc();
                warn!("{other:?} on a direct connection: closing it");
                Next::End(format!("{other:?} is not an operation"))
            }
        },
        Err(e) => {
            metrics::ERRORS.inc();
            warn!("malformed request on a direct connection: {e}: closing it");
            Next::End(format!("malformed request: {e}"))
        }
    }
}

async fn serve_ops(node: &Arc<Node>, conn: &mut Conn, link: u64, caller: Caller) -> String {
    let from = caller.proc_.node;
    loop {
        let op = match spin_then_wait(next(conn, caller)).await {
            Next::Op(op) => op,
            // One that crossed the answer it meant to stop.
            Next::Cancel => continue,
            Next::End(why) => return why,
        };
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let resp = match ipc::start_direct(node, from, link, op.named(token)).await {
            Start::Done(r) => r,
            Start::Wait(rx) => {
                tokio::pin!(rx);
                loop {
                    tokio::select! {
                        r = spin_then_wait(&mut rx) => break r.unwrap_or(PeerResp::Err(errno::EINTR)),
                        n = next(conn, caller) => match n {
                            Next::Cancel => {
                                let cancel = PeerReq::IpcCancel { token };
                                let _ = ipc::start_direct(node, from, link, cancel).await;
                            }
                            Next::Op(_) => return "an operation while another waits".into(),
                            Next::End(why) => return why,
                        },
                    }
                }
            }
        };
        if let Err(e) = conn.send(&peer_to_local(resp).frame()).await {
            return e.to_string();
        }
    }
}

/// Await `fut`, polling it in a busy loop (yielding to the runtime, which
/// meanwhile runs the node's other tasks) for up to the fault loop's spin
/// before sleeping: a process in a round trip sends its next call, and a
/// waiting operation is often completed, within microseconds, and a sleep
/// and wake-up through epoll costs more than that.
pub(crate) async fn spin_then_wait<F: std::future::Future>(fut: F) -> F::Output {
    tokio::pin!(fut);
    let until = std::time::Instant::now() + crate::shm::fault_spin();
    while std::time::Instant::now() < until {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            () = tokio::task::yield_now() => std::thread::yield_now(),
        }
    }
    fut.await
}
