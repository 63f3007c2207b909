//! The tokio shell around the registry.
//!
//! Three kinds of tasks:
//!
//! * the accept loop, which spawns one task per connection and stops on
//!   shutdown;
//! * one task per connection: authenticate (a refused peer is logged with
//!   the reason and never gets further), start RPC, forward every call to
//!   the registry task; a node's first call must be `Join`, later calls
//!   carry the node id it returned;
//! * the registry task, which owns the [`Registry`] and the [`Store`] and is
//!   therefore the only place where state changes. For each input it applies
//!   the `Outcome` in order: store writes first (durable, on a blocking
//!   thread, before anyone hears of the change), then the response, then the
//!   events to every joined node. A timer feeds `tick` every
//!   `heartbeat_ms / 2` so silent nodes are marked down.
//!
//! One bad connection costs only its own task: frames are checked by the
//! transport, requests the registry refuses get an error answer, and a peer
//! that does not read its events is disconnected (it re-joins and re-reads).
//! The one fatal error is a store that cannot persist: answering without
//! persisting would let a restart forget objects nodes were told exist, so
//! the server stops with that error instead.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dipc_transport_tcp::{Auth, Conn, Incoming, Replier, Role, RpcHandle, rpc};
use dipc_wire::NodeId;
use dipc_wire::errno::{EIO, ENOTCONN};
use dipc_wire::referee::{Event, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::registry::{Config, Origin, Outcome, Registry, Snapshot};
use crate::store::Store;

/// Time a peer has to complete the authentication handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound of calls on a connection (the referee makes none, but the
/// transport wants one).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting for the registry task before connections wait.
const QUEUE: usize = 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The referee's side of an RPC connection.
type Handle = RpcHandle<Request, Response, Event>;

/// Settings of a referee server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (`host:port`; port 0 picks one).
    pub listen: String,
    /// Directory of `registry.redb` (created if missing).
    pub data_dir: PathBuf,
    /// Cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// The cluster secret peers must prove they know.
    pub secret: Arc<[u8]>,
    /// Mutual TLS for every connection (`None`: plain TCP); peers without
    /// it are refused.
    pub tls: Option<Arc<dipc_transport_tcp::TlsConfig>>,
    /// Heartbeat period told to nodes.
    pub heartbeat_ms: u64,
    /// Silence after which a node is marked down.
    pub down_after_ms: u64,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("cluster", &self.cluster)
            .field("secret", &"<hidden>")
            .field("tls", &self.tls)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("down_after_ms", &self.down_after_ms)
            .finish()
    }
}

/// A bound referee, not yet serving.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    store: Store,
    snapshot: Snapshot,
    config: ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("store", &self.store)
            .finish()
    }
}

/// Open the store, bind, and serve until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// Open the store and bind the listening socket; serving starts with
/// [`Server::run`]. With port 0, [`Server::local_addr`] tells the port.
pub async fn bind(config: ServerConfig) -> Result<Server, Error> {
    let dir = config.data_dir.clone();
    let (store, snapshot) = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|_| Error::RegistryStopped)??;
    let bind_err = |source| Error::Bind {
        addr: config.listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    info!(
        %addr,
        cluster = %config.cluster,
        store = %store.path().display(),
        objects = snapshot.objects.len(),
        nodes = snapshot.nodes.len(),
        tls = config.tls.is_some(),
        "referee listening"
    );
    Ok(Server {
        listener,
        addr,
        store,
        snapshot,
        config,
    })
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` resolves (then close every connection and
    /// return `Ok`) or the store fails (return that error).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Server {
            listener,
            addr: _,
            store,
            snapshot,
            config,
        } = self;
        let registry = Registry::new(
            Config {
                cluster: config.cluster.clone(),
                heartbeat_ms: config.heartbeat_ms,
                down_after_ms: config.down_after_ms,
            },
            snapshot,
        );
        let auth = Arc::new(Auth {
            cluster: config.cluster.clone(),
            secret: config.secret.clone(),
            name: "referee".into(),
            tls: config.tls.clone(),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = watch::channel(false);
        let actor = Actor {
            registry,
            store: Some(store),
            start: Instant::now(),
            conns: HashMap::new(),
        };
        let tick = Duration::from_millis((config.heartbeat_ms / 2).max(1));
        let mut actor_task = tokio::spawn(actor.run(rx, stop_rx, tick));
        let mut conns = JoinSet::new();
        let mut next_conn = 0u64;
        tokio::pin!(shutdown);

        let mut result = None;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                r = &mut actor_task => {
                    result = Some(r.unwrap_or(Err(Error::RegistryStopped)));
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        next_conn += 1;
                        conns.spawn(serve(next_conn, stream, peer, auth.clone(), tx.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        // The registry task closes every connection it knows when it stops;
        // tasks still in the handshake are aborted.
        let _ = stop_tx.send(true);
        let result = match result {
            Some(r) => r,
            None => actor_task.await.unwrap_or(Err(Error::RegistryStopped)),
        };
        conns.shutdown().await;
        info!("referee stopped");
        result
    }
}

/// What a connection task asks of the registry task.
enum Cmd {
    /// An authenticated connection started RPC.
    Open { conn: u64, handle: Handle },
    /// A call. `joined` receives the node id if this was a successful Join.
    Call {
        conn: u64,
        role: Role,
        node: Option<NodeId>,
        req: Request,
        reply: Replier,
        joined: Option<oneshot::Sender<Option<NodeId>>>,
    },
    /// The connection ended.
    Closed { conn: u64 },
}

/// Serve one connection.
async fn serve(
    conn: u64,
    stream: TcpStream,
    addr: SocketAddr,
    auth: Arc<Auth>,
    tx: mpsc::Sender<Cmd>,
) {
    let (c, peer) = match Conn::accept(stream, &auth, HANDSHAKE_TIMEOUT).await {
        Ok(x) => x,
        Err(e) if e.is_refusal() => {
            info!(%addr, reason = %e, "refused peer");
            return;
        }
        // Closed before saying anything: a port probe (or a readiness
        // check), not worth a warning.
        Err(e @ dipc_transport_tcp::Error::Closed { .. }) => {
            debug!(%addr, error = %e, "handshake failed");
            return;
        }
        Err(e) => {
            // Garbage, a truncated frame, or silence until the bound: the
            // connection is dropped, and the log says why.
            warn!(%addr, error = %e, "handshake failed; connection dropped");
            return;
        }
    };
    debug!(%peer, role = ?peer.role, "authenticated");
    let (handle, mut incoming) = rpc::<Request, Response, Event>(c, CALL_TIMEOUT);
    if tx.send(Cmd::Open { conn, handle }).await.is_err() {
        return;
    }
    let mut node: Option<NodeId> = None;
    while let Some(msg) = incoming.recv().await {
        let (req, reply) = match msg {
            Incoming::Call { req, reply, .. } => (req, reply),
            Incoming::Notify { ev, .. } => {
                warn!(%peer, event = ?ev, "ignoring an event sent to the referee");
                continue;
            }
        };
        let is_join = matches!(req, Request::Join { .. }) && peer.role == Role::Node;
        if peer.role == Role::Node && node.is_none() && !is_join {
            reply.send(
                &Response::Err {
                    errno: ENOTCONN,
                    message: "a node's first request must be Join".into(),
                },
                Bytes::new(),
            );
            continue;
        }
        let (joined, wait) = if is_join {
            let (s, r) = oneshot::channel();
            (Some(s), Some(r))
        } else {
            (None, None)
        };
        let cmd = Cmd::Call {
            conn,
            role: peer.role,
            node,
            req,
            reply,
            joined,
        };
        if tx.send(cmd).await.is_err() {
            break;
        }
        if let Some(wait) = wait {
            match wait.await {
                Ok(Some(id)) => node = Some(id),
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
    let _ = tx.send(Cmd::Closed { conn }).await;
}

/// A connection the registry task knows.
struct ConnState {
    handle: Handle,
    /// Set once the peer joined as this node: it then receives events.
    node: Option<NodeId>,
}

/// The registry task.
struct Actor {
    registry: Registry,
    /// `None` only while a write runs on the blocking pool.
    store: Option<Store>,
    start: Instant,
    conns: HashMap<u64, ConnState>,
}

impl Actor {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut stop: watch::Receiver<bool>,
        tick: Duration,
    ) -> Result<(), Error> {
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = stop.changed() => break Ok(()),
                _ = timer.tick() => {
                    let out = self.registry.tick(self.now_ms());
                    if let Err(e) = self.apply(out, None, None).await {
                        break Err(e);
                    }
                }
                cmd = rx.recv() => match cmd {
                    None => break Ok(()),
                    Some(cmd) => if let Err(e) = self.command(cmd).await {
                        break Err(e);
                    },
                },
            }
        };
        for c in self.conns.values() {
            c.handle.close();
        }
        result
    }

    async fn command(&mut self, cmd: Cmd) -> Result<(), Error> {
        match cmd {
            Cmd::Open { conn, handle } => {
                self.conns.insert(conn, ConnState { handle, node: None });
                Ok(())
            }
            Cmd::Closed { conn } => {
                if let Some(ConnState {
                    handle,
                    node: Some(node),
                }) = self.conns.remove(&conn)
                {
                    info!(node, peer = %handle.peer(), "node disconnected");
                }
                Ok(())
            }
            Cmd::Call {
                conn,
                role,
                node,
                req,
                reply,
                joined,
            } => {
                let now = self.now_ms();
                let out = match (role, node, req) {
                    (
                        Role::Node,
                        _,
                        Request::Join {
                            name,
                            listen,
                            transport,
                            hosted,
                            incarnation,
                        },
                    ) => {
                        let hosted_n = hosted.len();
                        let out = self.registry.join(
                            now,
                            name.clone(),
                            listen.clone(),
                            transport,
                            hosted,
                            incarnation,
                        );
                        if let Some(Response::Joined { node, .. }) = &out.response {
                            info!(node, %name, %listen, hosted = hosted_n, "node joined");
                            if out.events.contains(&Event::NodeDown { node: *node }) {
                                info!(
                                    node,
                                    "a new start of the node joined while its previous one \
                                     was taken for up: that one is declared down"
                                );
                            }
                            if let Some(c) = self.conns.get_mut(&conn) {
                                c.node = Some(*node);
                            }
                        }
                        out
                    }
                    (Role::Node, Some(n), req) => self.registry.handle(now, Origin::Node(n), req),
                    // serve() answers this itself; kept for completeness.
                    (Role::Node, None, _) => Outcome {
                        response: Some(Response::Err {
                            errno: ENOTCONN,
                            message: "a node's first request must be Join".into(),
                        }),
                        ..Outcome::default()
                    },
                    (Role::Client, _, req) => self.registry.handle(now, Origin::Client, req),
                };
                let joined_node = match &out.response {
                    Some(Response::Joined { node, .. }) => Some(*node),
                    _ => None,
                };
                // A joining node is not told of its previous incarnation's
                // NodeDown (it would take it for its own and fence).
                let result = self.apply(out, Some(reply), Some(conn)).await;
                if let Some(j) = joined {
                    let _ = j.send(joined_node);
                }
                result
            }
        }
    }

    /// Persist, answer, broadcast; connection `joiner` (which just joined)
    /// is not sent a `NodeDown` about its own node.
    async fn apply(
        &mut self,
        out: Outcome,
        reply: Option<Replier>,
        joiner: Option<u64>,
    ) -> Result<(), Error> {
        if !out.writes.is_empty() {
            let persisted = self.persist(out.writes).await;
            if let Err(e) = persisted {
                error!(error = %e, "cannot persist the registry; stopping the referee");
                if let Some(reply) = reply {
                    reply.send(
                        &Response::Err {
                            errno: EIO,
                            message: format!("referee cannot persist its registry: {e}"),
                        },
                        Bytes::new(),
                    );
                }
                return Err(e);
            }
        }
        if let (Some(reply), Some(resp)) = (reply, out.response) {
            reply.send(&resp, Bytes::new());
        }
        for ev in &out.events {
            match ev {
                Event::NodeDown { node } => info!(node, "node down"),
                Event::NodeUp(m) => debug!(node = m.node, name = %m.name, "node up"),
                Event::ObjectGone { id, key, kind } => debug!(id, key, %kind, "object gone"),
            }
            for (id, c) in self.conns.iter().filter(|(_, c)| c.node.is_some()) {
                if joiner == Some(*id)
                    && matches!(ev, Event::NodeDown { node } if c.node == Some(*node))
                {
                    continue;
                }
                // A closed connection is reaped by its Closed command. One
                // that does not read is cut off: it will re-join and learn
                // the current state from the members list and fresh lookups.
                if let Err(e) = c.handle.notify(ev, Bytes::new())
                    && !c.handle.is_closed()
                {
                    warn!(peer = %c.handle.peer(), error = %e, "event not delivered; closing");
                    c.handle.close();
                }
            }
        }
        Ok(())
    }

    /// Run the store transaction on the blocking pool.
    async fn persist(&mut self, ops: Vec<crate::StoreOp>) -> Result<(), Error> {
        let Some(mut store) = self.store.take() else {
            return Err(Error::RegistryStopped);
        };
        let (store, result) = tokio::task::spawn_blocking(move || {
            let r = store.apply(&ops);
            (store, r)
        })
        .await
        .map_err(|_| Error::RegistryStopped)?;
        self.store = Some(store);
        result
    }
}
