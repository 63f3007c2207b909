//! The node's link to the referee.
//!
//! Dial with backoff, authenticate, `Join` (re-announcing every object this
//! node is home of, so a restarted referee learns them again), then
//! heartbeat until the connection dies, and start over. Events the referee
//! pushes (objects gone, members up/down) update the node's caches.
//! A refusal (wrong cluster or secret) is fatal: retrying cannot fix it.
//!
//! The link runs on a thread and runtime of its own ([`spawn`]), so that
//! heartbeats keep their pace while the node's runtime is busy (a large
//! segment copied under the state lock takes seconds): a healthy node is
//! never declared down for being busy. What it learns goes to the node's
//! runtime through one channel, in order ([`LinkMsg`]).

use std::sync::Arc;
use std::time::Duration;

use dipc_transport_tcp::{Backoff, Conn, Incoming, Role, rpc};
use dipc_wire::NodeId;
use dipc_wire::referee::{Event, Member, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::Error;
use crate::node::{Node, RefHandle};

/// What the link tells the node, in the order it happened.
pub(crate) enum LinkMsg {
    /// Joined as `id`: the members, and the handle for calls.
    Joined {
        id: NodeId,
        members: Vec<Member>,
        handle: RefHandle,
    },
    /// An event the referee pushed.
    Event(Event),
    /// The referee declared this node down: drop everything it holds
    /// ([`Node::fence`]), then acknowledge; the link then re-joins empty.
    Fence(oneshot::Sender<()>),
    /// The connection ended; the link reconnects.
    Lost,
}

/// Start the link on its own thread; the node's runtime applies its
/// messages in order ([`apply`]). The returned receiver yields the link's
/// end (a refusal, or a failure to start); dropping `stop` ends the link.
pub(crate) fn spawn(
    node: Arc<Node>,
    stop: oneshot::Receiver<()>,
) -> (
    mpsc::UnboundedReceiver<LinkMsg>,
    oneshot::Receiver<Result<(), Error>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let started = std::thread::Builder::new()
        .name("dipc-referee".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async move {
                    tokio::select! {
                        r = run(node, tx) => r,
                        _ = stop => Ok(()),
                    }
                }),
                Err(e) => Err(Error::Transport {
                    reason: format!("cannot start the referee link's runtime: {e}"),
                }),
            };
            let _ = done_tx.send(result);
        });
    if let Err(e) = started {
        error!("cannot start the referee link's thread: {e}");
    }
    (rx, done_rx)
}

/// Apply the link's messages on the node's runtime, in order, until the
/// link ends.
pub(crate) async fn apply(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<LinkMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            LinkMsg::Joined {
                id,
                members,
                handle,
            } => {
                node.joined(id, members);
                node.set_referee(Some(handle));
            }
            LinkMsg::Event(ev) => node.referee_event(ev),
            LinkMsg::Fence(ack) => {
                node.fence().await;
                let _ = ack.send(());
            }
            LinkMsg::Lost => node.set_referee(None),
        }
    }
}

/// Have the node fence itself and wait until it has.
async fn fence(tx: &mpsc::UnboundedSender<LinkMsg>) {
    let (ack, done) = oneshot::channel();
    if tx.send(LinkMsg::Fence(ack)).is_ok() {
        let _ = done.await;
    }
}

/// Run the link until a fatal error. Returns only with a refusal.
async fn run(node: Arc<Node>, tx: mpsc::UnboundedSender<LinkMsg>) -> Result<(), Error> {
    let cfg = node.config();
    let addr = cfg.referee.clone();
    let auth = node.auth();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut announced_down = false;
    loop {
        let conn = match Conn::connect(&addr, &auth, Role::Node, cfg.call_timeout).await {
            Ok((conn, _peer)) => conn,
            Err(e) if e.is_refusal() => {
                error!("referee {addr} refused this node: {e}");
                return Err(Error::Refused {
                    addr,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                if !announced_down {
                    warn!("referee {addr} unreachable ({e}); retrying");
                    announced_down = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let (handle, mut incoming): (RefHandle, _) = rpc(conn, cfg.call_timeout);
        let join = Request::Join {
            name: cfg.name.clone(),
            listen: cfg.listen.clone(),
            transport: cfg.advertised_transport(),
            hosted: node.hosted_records(),
            incarnation: node.incarnation(),
        };
        let (id, heartbeat) = match handle.call(&join).await {
            Ok(Response::Joined {
                node: id,
                heartbeat_ms,
                down_after_ms: _,
                members,
                was_down,
            }) => {
                let _ = tx.send(LinkMsg::Joined {
                    id,
                    members,
                    handle: handle.clone(),
                });
                info!(
                    "joined cluster {} at referee {addr} as node {id}",
                    cfg.cluster
                );
                if was_down {
                    // Declared down while cut off: the others dropped
                    // this node's copies; the objects just re-announced
                    // are gone after the fence, and the next join says so.
                    fence(&tx).await;
                    let _ = tx.send(LinkMsg::Lost);
                    continue;
                }
                (id, Duration::from_millis(heartbeat_ms.max(10)))
            }
            Ok(Response::Err { errno, message }) => {
                error!("referee {addr} rejected join: {message} (errno {errno})");
                return Err(Error::Refused {
                    addr,
                    reason: message,
                });
            }
            Ok(other) => {
                warn!("referee {addr} answered join with {other:?}; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                warn!("join at referee {addr} failed: {e}; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        announced_down = false;
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let h = handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = h.call(&Request::Heartbeat).await {
                            warn!("heartbeat failed: {e}");
                        }
                    });
                }
                msg = incoming.recv() => match msg {
                    Some(Incoming::Notify { ev: Event::NodeDown { node: down }, .. }) if down == id => {
                        // Declared down while connected (it was silent
                        // too long): fence, then re-join empty.
                        fence(&tx).await;
                        break;
                    }
                    Some(Incoming::Notify { ev, .. }) => {
                        let _ = tx.send(LinkMsg::Event(ev));
                    }
                    Some(Incoming::Call { reply, .. }) => {
                        reply.send(&Response::Err { errno: dipc_wire::errno::EINVAL, message: "nodes take no calls from the referee".into() }, bytes::Bytes::new());
                    }
                    None => break,
                },
                _ = handle.closed() => break,
            }
        }
        let _ = tx.send(LinkMsg::Lost);
        warn!("lost the referee {addr}; reconnecting");
    }
}

/// Apply one referee event to the node.
impl Node {
    pub(crate) fn referee_event(self: &Arc<Self>, ev: Event) {
        match ev {
            Event::ObjectGone { id, .. } => self.forget_object(id),
            Event::NodeUp(m) => self.member_up(m),
            Event::NodeDown { node } => self.member_down(node),
        }
    }
}
