//! The embedded cluster of the dipc scenarios: a referee and two nodes in
//! this process, agents as child processes.
//!
//! The daemons are the real ones (`dipc_referee::server`,
//! `dipc_node::run`), each on its own thread with its own current-thread
//! tokio runtime, as each runs in its own process in production, so a
//! node's fault loop never waits behind another daemon's tasks. Everything
//! lives in one temporary directory (the referee's store, the nodes'
//! sockets), removed on drop.
//!
//! Every wait is bounded: start-up (the referee accepting, the nodes'
//! sockets appearing, both nodes listed up by the referee's `Status`) and
//! shutdown (a daemon that does not stop in time is left behind with a
//! warning rather than waited for). The referee binds `127.0.0.1:0` and
//! reports its port; a node's port is found by binding `127.0.0.1:0` and
//! releasing it (the node binds by address), and a node that then cannot
//! bind it is started again on another.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dipc_transport_tcp::{Auth, Conn, Role, rpc};
use dipc_wire::referee::{ClusterStatus, Event, Request, Response};
use tokio::sync::oneshot;

use crate::Error;
use crate::agent::{Agent, AgentCommand};

/// Bound on the whole start-up (referee up, nodes joined).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on each daemon's shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any remote wait inside the nodes (their `call_timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to start a daemon whose port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
const CLUSTER: &str = "dipc-bench";
/// `msgmax` and `msgmnb` of the bench's nodes: the largest message of the
/// msg rows (64 KiB), which the kernel rows raise `kernel.msgmax` and
/// `kernel.msgmnb` to as well.
pub const MSG_LIMIT: u32 = 64 * 1024;

/// One daemon thread and the means to stop it.
struct Daemon {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Run `body(stop)` on a new thread named `name` with its own
    /// current-thread runtime; its result arrives on `done`.
    fn spawn<F, Fut>(name: &str, netns: Option<std::fs::File>, body: F) -> Result<Daemon, Error>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let (stop, stop_rx) = oneshot::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // In its network namespace before any socket exists.
                if let Some(ns) = netns
                    && let Err(e) = crate::sys::enter_netns(&ns)
                {
                    let _ = done_tx.send(Err(format!("cannot enter its network namespace: {e}")));
                    return;
                }
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(body(stop_rx)),
                    Err(e) => Err(format!("cannot start a tokio runtime: {e}")),
                };
                let _ = done_tx.send(result);
            })
            .map_err(|e| Error::io(format!("starting the {name} thread"), e))?;
        Ok(Daemon {
            name: name.to_string(),
            stop: Some(stop),
            done,
            thread: Some(thread),
        })
    }

    /// The daemon's result if it has already ended.
    fn ended(&self) -> Option<Result<(), String>> {
        match self.done.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err("its thread panicked".into())),
        }
    }

    /// Ask it to stop and wait up to [`STOP_TIMEOUT`].
    fn stop(mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.done.recv_timeout(STOP_TIMEOUT) {
            Ok(r) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                r
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "{} did not stop within {STOP_TIMEOUT:?}; left behind",
                    self.name
                );
                Err(format!("did not stop within {STOP_TIMEOUT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("its thread panicked".into()),
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; may be taken later).
fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))
}

/// A node of the embedded cluster.
pub struct NodeInfo {
    pub name: String,
    pub listen: String,
    pub socket: PathBuf,
}

/// A referee and nodes running in this process.
pub struct Cluster {
    dir: tempfile::TempDir,
    referee_addr: String,
    secret: Arc<[u8]>,
    referee: Option<Daemon>,
    nodes: Vec<(NodeInfo, Option<Daemon>)>,
    agent: AgentCommand,
    /// The nodes' network namespaces, if they have them (removed after
    /// the daemons stopped: fields drop after `Drop::drop`).
    net: Option<crate::netns::Net>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.dir.path())
            .field("referee", &self.referee_addr)
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|(n, _)| &n.listen)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Cluster {
    /// Start a referee and `nodes` nodes and wait until every node is up
    /// (bounded by [`START_TIMEOUT`]); `agent` starts agent processes.
    pub fn start(nodes: usize, agent: AgentCommand) -> Result<Cluster, Error> {
        Cluster::start_in(nodes, agent, None)
    }

    /// [`Cluster::start`] with each node in its own network namespace of
    /// `net` (the referee in this one, on the bridge).
    pub fn start_in(
        nodes: usize,
        agent: AgentCommand,
        net: Option<crate::netns::Net>,
    ) -> Result<Cluster, Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        let dir = tempfile::Builder::new()
            .prefix("dipc-bench-")
            .tempdir()
            .map_err(|e| Error::io("creating the cluster's temporary directory", e))?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Error::Cluster {
            detail: format!("cannot draw a cluster secret: {e}"),
        })?;
        let mut cluster = Cluster {
            referee_addr: String::new(),
            secret: Arc::from(&secret[..]),
            referee: None,
            nodes: Vec::new(),
            agent,
            dir,
            net,
        };
        cluster.start_referee(deadline)?;
        for i in 1..=nodes {
            cluster.start_node(i, deadline)?;
        }
        cluster.wait_joined(deadline)?;
        Ok(cluster)
    }

    /// The referee's address.
    pub fn referee_addr(&self) -> &str {
        &self.referee_addr
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> Option<&NodeInfo> {
        self.nodes.get(i.wrapping_sub(1)).map(|(n, _)| n)
    }

    /// Start an agent process on node `i` (1-based).
    pub fn agent(&self, i: usize) -> Result<Agent, Error> {
        let node = self.node(i).ok_or_else(|| Error::Cluster {
            detail: format!("no node {i}"),
        })?;
        Agent::spawn(&self.agent, i, &node.socket)
    }

    /// [`Cluster::agent`] with extra environment variables.
    pub fn agent_with(&self, i: usize, env: &[(&str, &str)]) -> Result<Agent, Error> {
        let node = self.node(i).ok_or_else(|| Error::Cluster {
            detail: format!("no node {i}"),
        })?;
        Agent::spawn_with(&self.agent, i, &node.socket, env)
    }

    /// Has a daemon stopped on its own (a crash, a fatal error)?
    pub fn check_alive(&self) -> Result<(), Error> {
        let all = self
            .referee
            .iter()
            .map(|d| ("referee".to_string(), d))
            .chain(
                self.nodes
                    .iter()
                    .filter_map(|(n, d)| d.as_ref().map(|d| (n.name.clone(), d))),
            );
        for (name, d) in all {
            if let Some(r) = d.ended() {
                return Err(Error::Cluster {
                    detail: format!(
                        "{name} stopped: {}",
                        r.err().unwrap_or_else(|| "without error".into())
                    ),
                });
            }
        }
        Ok(())
    }

    fn auth(&self, name: &str) -> Auth {
        Auth {
            cluster: CLUSTER.into(),
            secret: self.secret.clone(),
            name: name.into(),
            tls: None,
        }
    }

    fn start_referee(&mut self, deadline: Instant) -> Result<(), Error> {
        let ip = self
            .net
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |n| n.referee_ip());
        let cfg = dipc_referee::server::ServerConfig {
            listen: format!("{ip}:0"),
            data_dir: self.dir.path().join("referee"),
            cluster: CLUSTER.into(),
            secret: self.secret.clone(),
            tls: None,
            heartbeat_ms: 500,
            // Nothing here measures failure detection: a generous bound
            // keeps a stall of a loaded machine (agents, builds) from
            // excluding a node mid-run (it would fence itself, and the
            // run would fail).
            down_after_ms: 10_000,
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let d = Daemon::spawn("referee", None, move |stop| async move {
            let server = dipc_referee::server::bind(cfg)
                .await
                .map_err(|e| crate::run::chain(&e))?;
            let _ = addr_tx.send(server.local_addr());
            server
                .run(async {
                    let _ = stop.await;
                })
                .await
                .map_err(|e| crate::run::chain(&e))
        })?;
        loop {
            if let Ok(addr) = addr_rx.try_recv() {
                self.referee_addr = addr.to_string();
                self.referee = Some(d);
                return Ok(());
            }
            if let Some(r) = d.ended() {
                return Err(Error::Cluster {
                    detail: format!(
                        "the referee did not start: {}",
                        r.err().unwrap_or_else(|| "it stopped at once".into())
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "starting the embedded referee".into(),
                    after: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start_node(&mut self, i: usize, deadline: Instant) -> Result<(), Error> {
        let socket = self.dir.path().join(format!("node-{i}.sock"));
        let name = format!("node-{i}");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            // A fresh namespace has every port free.
            let (listen, netns) = match &self.net {
                Some(net) => (format!("{}:7201", net.node_ip(i)), Some(net.open(i)?)),
                None => (format!("127.0.0.1:{}", free_port()?), None),
            };
            let (transport, rdma) = crate::rdma::node_transport();
            let cfg = dipc_node::NodeConfig {
                name: name.clone(),
                listen: listen.clone(),
                socket: socket.clone(),
                referee: self.referee_addr.clone(),
                cluster: CLUSTER.into(),
                secret: self.secret.clone(),
                tls: None,
                transport,
                rdma,
                call_timeout: CALL_TIMEOUT,
                default_unit: dipc_shmem::page_size() as u32,
                msg: dipc_node::MsgLimits {
                    msgmax: MSG_LIMIT,
                    msgmnb: u64::from(MSG_LIMIT),
                },
            };
            let d = Daemon::spawn(&name, netns, move |stop| async move {
                dipc_node::run(cfg, async {
                    let _ = stop.await;
                })
                .await
                .map_err(|e| crate::run::chain(&e))
            })?;
            loop {
                if let Some(r) = d.ended() {
                    last = r.err().unwrap_or_else(|| "stopped at once".into());
                    break;
                }
                if socket.exists() {
                    self.nodes.push((
                        NodeInfo {
                            name: name.clone(),
                            listen,
                            socket,
                        },
                        Some(d),
                    ));
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout {
                        what: format!("{name} creating its socket {}", socket.display()),
                        after: START_TIMEOUT,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Err(Error::Cluster {
            detail: format!("{name} did not start: {last}"),
        })
    }

    /// The referee's view of the cluster.
    pub fn status(&self, timeout: Duration) -> Result<ClusterStatus, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting a tokio runtime", e))?;
        let auth = self.auth("dipc-bench");
        let addr = self.referee_addr.clone();
        rt.block_on(async move {
            let (conn, _) = Conn::connect(&addr, &auth, Role::Client, timeout)
                .await
                .map_err(|e| Error::tcp(format!("connecting to the referee at {addr}"), e))?;
            let (h, _rx) = rpc::<Request, Response, Event>(conn, timeout);
            let r = h
                .call(&Request::Status)
                .await
                .map_err(|e| Error::tcp("asking the referee for its status", e));
            h.close();
            match r? {
                Response::Status(s) => Ok(s),
                other => Err(Error::Cluster {
                    detail: format!("the referee answered Status with {other:?}"),
                }),
            }
        })
    }

    fn wait_joined(&self, deadline: Instant) -> Result<(), Error> {
        let mut last;
        loop {
            self.check_alive()?;
            match self.status(Duration::from_secs(2)) {
                Ok(s) => {
                    let up = |name: &str| s.members.iter().any(|m| m.name == name && m.up);
                    if self.nodes.iter().all(|(n, _)| up(&n.name)) {
                        return Ok(());
                    }
                    last = format!(
                        "members: {:?}",
                        s.members
                            .iter()
                            .map(|m| (&m.name, m.up))
                            .collect::<Vec<_>>()
                    );
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(Error::Cluster {
                    detail: format!("the nodes did not all join within {START_TIMEOUT:?} ({last})"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the nodes, then the referee (each bounded); the first failure
    /// is returned after all were asked to stop.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), Error> {
        let mut first = None;
        for (n, d) in &mut self.nodes {
            if let Some(d) = d.take()
                && let Err(e) = d.stop()
            {
                first.get_or_insert_with(|| format!("{}: {e}", n.name));
            }
        }
        if let Some(d) = self.referee.take()
            && let Err(e) = d.stop()
        {
            first.get_or_insert_with(|| format!("referee: {e}"));
        }
        match first {
            Some(detail) => Err(Error::Cluster { detail }),
            None => Ok(()),
        }
    }

    /// The temporary directory holding the sockets and the referee's store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}
