//! `dipc status`: ask the referee for members and objects and print them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dipc_transport_tcp::{Auth, Conn, Role, TlsConfig, rpc};
use dipc_wire::referee::{ClusterStatus, Event, Request, Response};
use dipc_wire::{Kind, Params};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetch the cluster status from the referee at `addr` (over TLS with
/// `tls`).
pub async fn fetch(
    addr: &str,
    cluster: &str,
    secret: Arc<[u8]>,
    tls: Option<Arc<TlsConfig>>,
) -> anyhow::Result<ClusterStatus> {
    let auth = Auth {
        cluster: cluster.to_string(),
        secret,
        name: "dipc-status".into(),
        tls,
    };
    let (conn, _) = Conn::connect(addr, &auth, Role::Client, TIMEOUT)
        .await
        .with_context(|| format!("cannot reach the referee at {addr}"))?;
    let (h, _rx) = rpc::<Request, Response, Event>(conn, TIMEOUT);
    match h.call(&Request::Status).await? {
        Response::Status(s) => Ok(s),
        Response::Err { message, .. } => bail!("referee {addr}: {message}"),
        other => bail!("referee {addr} answered {other:?}"),
    }
}

pub async fn show(
    addr: &str,
    cluster: &str,
    secret: Arc<[u8]>,
    tls: Option<Arc<TlsConfig>>,
    json: bool,
) -> anyhow::Result<()> {
    let over_tls = tls.is_some();
    let s = fetch(addr, cluster, secret, tls).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", render(&s));
    if over_tls {
        println!("\nreferee {addr}: connected over TLS (certificate verified)");
    }
    Ok(())
}

/// The human-readable status.
pub fn render(s: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let up = s.members.iter().filter(|m| m.up).count();
    let _ = writeln!(
        out,
        "cluster {}: {} members ({} up), {} objects",
        s.cluster,
        s.members.len(),
        up,
        s.objects.len()
    );
    let _ = writeln!(
        out,
        "\n{:<5} {:<22} {:<22} {:<9} {:<5} {:>10}",
        "NODE", "NAME", "ADDRESS", "TRANSPORT", "STATE", "LAST SEEN"
    );
    for m in &s.members {
        let hosted = s.objects.iter().filter(|o| o.record.home == m.node).count();
        let _ = writeln!(
            out,
            "{:<5} {:<22} {:<22} {:<9} {:<5} {:>9.1}s  {} objects",
            m.node,
            m.name,
            m.listen,
            m.transport,
            if m.up { "up" } else { "DOWN" },
            m.last_seen_ms as f64 / 1000.0,
            hosted
        );
    }
    if s.members
        .iter()
        .any(|m| m.transport.starts_with("rdma(") && m.transport.ends_with("+tls"))
    {
        let _ = writeln!(
            out,
            "(rdma+tls: referee and link setup over TLS; RDMA page traffic is not encrypted)"
        );
    }
    if !s.objects.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<4} {:<10} {:<10} {:<5} {:<16} {:<6} {:<5} {:<5} STATE",
            "KIND", "KEY", "ID", "HOME", "SIZE", "OWNER", "GROUP", "MODE"
        );
        for o in &s.objects {
            let r = &o.record;
            let size = match r.params {
                Params::Shm { size, .. } => match crate::ipcs::Transfer::of(&r.params) {
                    Some(t) => format!(
                        "{size} ({} {}B, quantum {}us, prefetch {})",
                        t.mode, t.unit, t.quantum_us, t.prefetch
                    ),
                    None => size.to_string(),
                },
                Params::Msg { qbytes, msgmax } => format!("qbytes {qbytes} msgmax {msgmax}"),
                Params::Sem { nsems } => format!("{nsems} sems"),
            };
            let lost = s.lost.iter().find(|l| l.id == r.id);
            let state = match (o.available, r.removed, lost) {
                (_, true, _) => "removed, attached".to_string(),
                (true, false, None) => "ok".to_string(),
                (false, false, None) => "UNAVAILABLE (home down)".to_string(),
                (_, false, Some(l)) if l.home_down => {
                    format!("LOST {} pages (home down)", l.count)
                }
                (_, false, Some(l)) => format!("LOST {} pages", l.count),
            };
            let _ = writeln!(
                out,
                "{:<4} {:<#10x} {:<10} {:<5} {:<16} {:<6} {:<5} {:<5o} {}",
                match r.kind {
                    Kind::Shm => "shm",
                    Kind::Msg => "msg",
                    Kind::Sem => "sem",
                },
                r.key,
                r.id,
                r.home,
                size,
                r.perm.uid,
                r.perm.gid,
                r.perm.mode & 0o777,
                state
            );
        }
    }
    if !s.lost.is_empty() {
        let _ = writeln!(
            out,
            "\nLost pages (their only copy was at a failed node; an access gets SIGBUS):"
        );
        for l in &s.lost {
            let key = s
                .objects
                .iter()
                .find(|o| o.record.id == l.id)
                .map_or(0, |o| o.record.key);
            let _ = writeln!(
                out,
                "shm {:<#10x} {:<10} {} pages: {}",
                key,
                l.id,
                l.count,
                page_ranges(&l.ranges)
            );
        }
    }
    out
}

/// `0-3,7,9-10`.
pub fn page_ranges(ranges: &[(u64, u64)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
