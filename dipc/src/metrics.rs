//! `--metrics ADDR` of `dipc referee` and `dipc node`: a Prometheus text
//! endpoint on loopback.
//!
//! Every scrape (`GET /metrics`, or `/`) observes the cluster from outside
//! the daemon, through the same interfaces the tools use, so the daemons'
//! code carries no metrics plumbing:
//!
//! * from the referee (`Request::Status`): members up and down, objects by
//!   kind, objects unavailable because their home is down;
//! * on a node, from its local socket (`IPC_STAT` as a program would ask
//!   it): the depth (messages, bytes) of every queue homed on this node and
//!   the cluster-wide attach count of every segment homed here.
//!
//! * on a node, the daemon's own counters (`dipc_node::metrics`: faults
//!   handled and resolved, invalidations, downgrades, coherence messages
//!   and page bytes sent and received, errors), read in-process.
//!
//! `dipc_scrape_errors_total` counts the parts of scrapes that failed
//! (referee or node unreachable).
//!
//! The endpoint only binds loopback addresses: it is unauthenticated, and
//! its labels name keys and ids of the cluster. The HTTP side is the least
//! that Prometheus needs: one request per connection, bounded in size and
//! time, answered with `Connection: close`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use dipc_wire::local::{MsgCtlCmd, Request, Response};
use dipc_wire::{Kind, Params};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Bound on reading a request and on each scrape part.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_REQUEST: usize = 8192;

static SCRAPE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// What a daemon's endpoint reports.
#[derive(Clone)]
pub struct Source {
    pub referee: String,
    pub cluster: String,
    pub secret: Arc<[u8]>,
    /// TLS for the referee connection (the daemon's own settings).
    pub tls: Option<Arc<dipc_transport_tcp::TlsConfig>>,
    /// A node's local socket (node daemons only).
    pub node_socket: Option<PathBuf>,
}

/// Parse `addr` and refuse anything but loopback.
pub fn loopback(addr: &str) -> anyhow::Result<SocketAddr> {
    let a: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics {addr}: not an address such as 127.0.0.1:9100"))?;
    if !a.ip().is_loopback() {
        bail!("--metrics {addr}: the metrics endpoint only listens on loopback");
    }
    Ok(a)
}

/// Bind `addr` and serve scrapes until the runtime stops.
pub async fn bind(addr: SocketAddr, source: Source) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let source = source.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(IO_TIMEOUT * 3, async {
                    let path = read_path(&mut conn).await?;
                    let (status, body) = if path == "/metrics" || path == "/" {
                        ("200 OK", scrape(&source).await)
                    } else {
                        ("404 Not Found", "not found; try /metrics\n".to_string())
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    conn.write_all(head.as_bytes()).await?;
                    conn.write_all(body.as_bytes()).await?;
                    conn.shutdown().await
                })
                .await;
            });
        }
    });
    Ok(())
}

/// The path of a `GET` request (reads the head, bounded).
async fn read_path(conn: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = tokio::time::timeout(IO_TIMEOUT, conn.read(&mut chunk))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    Ok(match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => path.to_string(),
        _ => String::new(),
    })
}

fn scrape_error(what: &str, e: &anyhow::Error) {
    SCRAPE_ERRORS.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("metrics: {what}: {e:#}");
}

/// The metrics text.
pub async fn scrape(source: &Source) -> String {
    let mut out = String::new();
    let status = tokio::time::timeout(
        IO_TIMEOUT,
        crate::status::fetch(
            &source.referee,
            &source.cluster,
            source.secret.clone(),
            source.tls.clone(),
        ),
    )
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("referee timed out")));
    let status = match status {
        Ok(s) => Some(s),
        Err(e) => {
            scrape_error("referee", &e);
            None
        }
    };
    if let Some(st) = &status {
        let up = st.members.iter().filter(|m| m.up).count();
        let _ = writeln!(out, "# HELP dipc_members Cluster members by state.");
        let _ = writeln!(out, "# TYPE dipc_members gauge");
        let _ = writeln!(out, "dipc_members{{state=\"up\"}} {up}");
        let _ = writeln!(
            out,
            "dipc_members{{state=\"down\"}} {}",
            st.members.len() - up
        );
        let _ = writeln!(out, "# HELP dipc_objects Distributed objects by kind.");
        let _ = writeln!(out, "# TYPE dipc_objects gauge");
        for kind in [Kind::Shm, Kind::Msg, Kind::Sem] {
            let n = st.objects.iter().filter(|o| o.record.kind == kind).count();
            let _ = writeln!(out, "dipc_objects{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP dipc_objects_unavailable Objects whose home node is down."
        );
        let _ = writeln!(out, "# TYPE dipc_objects_unavailable gauge");
        let _ = writeln!(
            out,
            "dipc_objects_unavailable {}",
            st.objects.iter().filter(|o| !o.available).count()
        );
    }
    if source.node_socket.is_some() {
        // Same process as the node daemon: its own counters.
        out.push_str(&dipc_node::metrics::render());
    }
    if let (Some(socket), Some(st)) = (&source.node_socket, status) {
        let socket = socket.clone();
        let homed = tokio::task::spawn_blocking(move || node_part(&socket, &st)).await;
        match homed {
            Ok(Ok(text)) => out.push_str(&text),
            Ok(Err(e)) => scrape_error("node", &e),
            Err(e) => scrape_error("node", &anyhow::anyhow!("{e}")),
        }
    }
    let _ = writeln!(
        out,
        "# HELP dipc_scrape_errors_total Scrape parts that failed (referee or node unreachable)."
    );
    let _ = writeln!(out, "# TYPE dipc_scrape_errors_total counter");
    let _ = writeln!(
        out,
        "dipc_scrape_errors_total {}",
        SCRAPE_ERRORS.load(Ordering::Relaxed)
    );
    out
}

/// Queue depths and attach counts of the objects homed on this node.
fn node_part(
    socket: &std::path::Path,
    st: &dipc_wire::referee::ClusterStatus,
) -> anyhow::Result<String> {
    let mut node = crate::ipcmk::NodeConn::connect(socket)?;
    let me = node.node();
    let mut msgs = String::new();
    let mut bytes = String::new();
    let mut attach = String::new();
    for o in st.objects.iter().filter(|o| o.record.home == me) {
        let r = &o.record;
        let labels = format!("key=\"{:#x}\",id=\"{}\"", r.key as u32, r.id);
        match r.params {
            Params::Msg { .. } => {
                if let Response::MsgStat(s) = node.call(&Request::MsgCtl {
                    id: r.id,
                    cmd: MsgCtlCmd::Stat,
                })? {
                    let _ = writeln!(msgs, "dipc_queue_messages{{{labels}}} {}", s.qnum);
                    let _ = writeln!(bytes, "dipc_queue_bytes{{{labels}}} {}", s.cbytes);
                }
            }
            Params::Shm { .. } => {
                if let Response::ShmStat(s) = node.call(&Request::ShmStat { id: r.id })? {
                    let _ = writeln!(attach, "dipc_shm_attachments{{{labels}}} {}", s.nattch);
                }
            }
            Params::Sem { .. } => {}
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "# HELP dipc_node_id This node's id in the cluster.");
    let _ = writeln!(out, "# TYPE dipc_node_id gauge");
    let _ = writeln!(out, "dipc_node_id {me}");
    for (name, help, body) in [
        (
            "dipc_queue_messages",
            "Messages in each queue homed on this node.",
            msgs,
        ),
        (
            "dipc_queue_bytes",
            "Bytes in each queue homed on this node.",
            bytes,
        ),
        (
            "dipc_shm_attachments",
            "Cluster-wide attachments of each segment homed on this node.",
            attach,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        out.push_str(&body);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(loopback("127.0.0.1:9100").is_ok());
        assert!(loopback("[::1]:9100").is_ok());
        assert!(loopback("0.0.0.0:9100").is_err());
        assert!(loopback("10.0.0.1:9100").is_err());
        assert!(loopback("localhost").is_err());
    }
}
