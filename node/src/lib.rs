//! The dipc node daemon (one per machine; several per machine in tests).
//!
//! It is the box in the middle of DESIGN.md's picture: it joins the
//! referee, listens for peer nodes, serves the local Unix socket that
//! libsysv talks to, holds the node's copy of each attached segment in a
//! memfd, resolves page faults of local processes and runs the coherence
//! protocol with its peers, and is the home of the message queues and
//! semaphore sets created on it.
//!
//! It may depend on `dipc-wire`, the transports and the `dsm` engines; the
//! engines decide, this crate performs their actions (I/O at the edges).
//!
//! Modules: [`referee_link`] (join, heartbeat, re-join and re-announce),
//! [`local`] (the libsysv socket, `SO_PEERCRED`, fd passing), [`node`]
//! (shared state, local request handling), [`peer`] (the node-to-node
//! protocol), [`shm`] (segments and the fault path), [`ipc`] (message
//! queues and semaphore sets: their homes and their callers), [`direct`]
//! (processes' operations sent straight to a remote home).
//!
//! Tested by the integration tests of the `dipc` crate, which start real
//! referees and nodes as processes.

pub mod direct;
pub mod error;
pub mod ipc;
pub mod local;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod referee_link;
pub mod shm;
mod timers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dipc_transport_rdma::RdmaConfig;
pub use error::Error;
pub use node::Node;
use tracing::info;

/// Everything a node needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Stable name (the referee gives the same node id to the same name).
    pub name: String,
    /// Address peers connect to.
    pub listen: String,
    /// The local socket for libsysv.
    pub socket: PathBuf,
    /// The referee's address.
    pub referee: String,
    pub cluster: String,
    pub secret: Arc<[u8]>,
    /// Mutual TLS for the referee link and peer links (`--tls-*`); `None`:
    /// plain TCP. RDMA links set up over TLS, but verbs traffic is not
    /// encrypted.
    pub tls: Option<Arc<dipc_transport_tcp::TlsConfig>>,
    /// `tcp`, `rdma` or `auto`, as asked (`--transport`). [`run`] replaces
    /// it with the transport its peer links use, `tcp` or `rdma(DEVICE)`,
    /// which is what the referee (and `dipc status`) is told.
    pub transport: String,
    /// Device and GID index for `rdma`/`auto` (`--rdma-device`,
    /// `--gid-index`).
    pub rdma: RdmaConfig,
    /// Bound on every remote wait.
    pub call_timeout: Duration,
    /// Coherence unit of segments created here without an explicit one.
    pub default_unit: u32,
    /// `msgmax` and `msgmnb` of the queues created here.
    pub msg: MsgLimits,
}

/// The message-queue limits of a node, as the kernel's `kernel.msgmax`
/// and `kernel.msgmnb` sysctls: every queue created on the node takes them
/// (in its record, so the home enforces them whoever calls), and
/// `msgctl(IPC_INFO/MSG_INFO)` on the node reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgLimits {
    /// Longest message text, 1 to [`dipc_wire::MAX_MSGMAX`] bytes.
    pub msgmax: u32,
    /// A new queue's `msg_qbytes`, `msgmax` to [`dipc_wire::MAX_MSGMNB`].
    pub msgmnb: u64,
}

impl Default for MsgLimits {
    /// The kernel's defaults: 8192 and 16384.
    fn default() -> Self {
        MsgLimits {
            msgmax: dipc_dsm::ipc::limits::MSGMAX as u32,
            msgmnb: dipc_dsm::ipc::limits::MSGMNB,
        }
    }
}

impl MsgLimits {
    /// Check the limits (`msgmax` in range, `msgmnb` at least `msgmax`,
    /// or no message of the largest size could ever be queued).
    pub fn new(msgmax: u32, msgmnb: u64) -> Result<MsgLimits, String> {
        let max = dipc_wire::MAX_MSGMAX;
        if msgmax == 0 || msgmax > max {
            return Err(format!("msgmax {msgmax} out of range (1 to {max} bytes)"));
        }
        if msgmnb < u64::from(msgmax) || msgmnb > dipc_wire::MAX_MSGMNB {
            return Err(format!(
                "msgmnb {msgmnb} out of range (msgmax {msgmax} to {} bytes)",
                dipc_wire::MAX_MSGMNB
            ));
        }
        Ok(MsgLimits { msgmax, msgmnb })
    }
}

impl NodeConfig {
    /// The RDMA settings if peer links use RDMA (after [`run`] resolved
    /// `transport`).
    pub fn rdma_links(&self) -> Option<&RdmaConfig> {
        self.transport.starts_with("rdma(").then_some(&self.rdma)
    }

    /// What the referee (and `dipc status`) is told about this node's
    /// links: the transport, `+tls` when links run under TLS.
    pub fn advertised_transport(&self) -> String {
        match self.tls {
            Some(_) => format!("{}+tls", self.transport),
            None => self.transport.clone(),
        }
    }

    /// Decide the transport of peer links: `tcp`; `rdma` (a usable device
    /// is required); `auto` (RDMA when a device with an ACTIVE port
    /// exists, else TCP). Sets `transport` to `tcp` or `rdma(DEVICE)` and
    /// logs the choice.
    pub fn resolve_transport(&mut self) -> Result<(), Error> {
        let asked = self.transport.trim().to_ascii_lowercase();
        self.rdma.timeout = self.call_timeout;
        let rdma = |cfg: &RdmaConfig| {
            cfg.select()
                .map(|sel| format!("rdma({})", sel.device))
                .map_err(|e| e.to_string())
        };
        self.transport = match asked.as_str() {
            "tcp" => "tcp".into(),
            "rdma" => rdma(&self.rdma).map_err(|reason| Error::Transport {
                reason: format!("--transport rdma: {reason}"),
            })?,
            "auto" => match rdma(&self.rdma) {
                Ok(t) => t,
                Err(reason) => {
                    info!("no usable RDMA device ({reason}); peer links use TCP");
                    "tcp".into()
                }
            },
            other => {
                return Err(Error::Transport {
                    reason: format!("unknown transport {other:?} (use tcp, rdma or auto)"),
                });
            }
        };
        let tcp = if self.tls.is_some() { "TLS" } else { "TCP" };
        if self.rdma_links().is_some() {
            info!(
                "peer links use {} (GID index {}); {tcp} for the referee and link setup{}",
                self.transport,
                self.rdma.gid_index,
                if self.tls.is_some() {
                    " (RDMA traffic itself is not encrypted)"
                } else {
                    ""
                }
            );
        } else {
            info!("peer links use {tcp}");
        }
        Ok(())
    }
}

/// Run a node until `shutdown` resolves or a fatal error happens.
pub async fn run(
    mut cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    cfg.resolve_transport()?;
    let peers = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| Error::ListenPeers {
            addr: cfg.listen.clone(),
            source,
        })?;
    let local = local::bind(&cfg.socket)?;
    let socket = cfg.socket.clone();
    info!(
        "node {} listening for peers on {} and for local processes on {}",
        cfg.name,
        cfg.listen,
        cfg.socket.display()
    );
    let node = Arc::new(Node::new(cfg));
    let local_task = tokio::spawn(local::serve(local, node.clone()));
    let peers_task = tokio::spawn(peer::listen(peers, node.clone()));
    // Every wait has a bound: a fault still blocked after three call
    // timeouts (its peer died or is cut off) ends the process's connection.
    let watchdog = {
        let node = node.clone();
        let bound = node.config().call_timeout * 3;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                node.expire_faults(bound);
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (link_msgs, link_end) = referee_link::spawn(node.clone(), stopped);
    let apply_task = tokio::spawn(referee_link::apply(node.clone(), link_msgs));
    let result = tokio::select! {
        r = link_end => r.unwrap_or_else(|_| Err(Error::Transport {
            reason: "the referee link's thread ended".into(),
        })),
        _ = shutdown => Ok(()),
    };
    drop(stop);
    local_task.abort();
    peers_task.abort();
    watchdog.abort();
    apply_task.abort();
    let _ = std::fs::remove_file(&socket);
    info!("node stopped");
    result
}
