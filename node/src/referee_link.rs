//! The node's link to the referee.
//!
//! Dial with backoff, authenticate, `Join` (re-announcing every object this
//! node is home of, so a restarted referee learns them again), then
//! heartbeat until the connection dies, and start over. Events the referee
//! pushes (objects gone, members up/down) update the node's caches.
//! A refusal (wrong cluster or secret) is fatal: retrying cannot fix it.

use std::sync::Arc;
use std::time::Duration;

use dipc_transport_tcp::{Backoff, Conn, Incoming, Role, rpc};
use dipc_wire::referee::{Event, Request, Response};
use tracing::{error, info, warn};

use crate::Error;
use crate::node::{Node, RefHandle};

/// Run the link until a fatal error. Returns only with a refusal.
pub async fn run(node: Arc<Node>) -> Result<(), Error> {
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
        };
        let heartbeat = match handle.call(&join).await {
            Ok(Response::Joined {
                node: id,
                heartbeat_ms,
                down_after_ms: _,
                members,
            }) => {
                node.joined(id, members);
                info!(
                    "joined cluster {} at referee {addr} as node {id}",
                    cfg.cluster
                );
                Duration::from_millis(heartbeat_ms.max(10))
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
        node.set_referee(Some(handle.clone()));
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
                    Some(Incoming::Notify { ev, .. }) => node.referee_event(ev),
                    Some(Incoming::Call { reply, .. }) => {
                        reply.send(&Response::Err { errno: dipc_wire::errno::EINVAL, message: "nodes take no calls from the referee".into() }, bytes::Bytes::new());
                    }
                    None => break,
                },
                _ = handle.closed() => break,
            }
        }
        node.set_referee(None);
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
