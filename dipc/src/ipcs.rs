//! `dipc ipcs`: the cluster's distributed objects, the way `ipcs` lists a
//! machine's.
//!
//! The list comes from the referee (`Request::Status`), which names every
//! object of the cluster: key, id, home node, size, owner, mode. The
//! figures only the home knows (a segment's cluster-wide attach count, a
//! queue's bytes and messages) are asked of a node over its local socket
//! (`--socket`, `DIPC_SOCKET`, as `IPC_STAT` from a program would; any node
//! forwards to the home) when one is reachable, and shown as `-` otherwise
//! or when this user may not read the object. Sections and columns follow
//! util-linux `ipcs` (key in hex, id, owner, perms, bytes/nattch/status,
//! used-bytes/messages, nsems) plus, for a segment, how it moves (mode,
//! unit, hold-time quantum, prefetch window, fixed at creation), and the
//! home node; `--json` prints one
//! array of objects for scripts.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use dipc_wire::local::{MsgCtlCmd, Request, Response};
use dipc_wire::referee::{ClusterStatus, ObjectStatus};
use dipc_wire::{Kind, Params, ShmMode};
use serde::Serialize;

use crate::ipcmk::NodeConn;

/// `dipc ipcs` arguments (the cluster's are flattened in by `main`).
#[derive(Args, Debug, Clone)]
pub struct IpcsArgs {
    /// Only shared memory segments.
    #[arg(short = 'm', long = "shmems")]
    shm: bool,
    /// Only message queues.
    #[arg(short = 'q', long = "queues")]
    msg: bool,
    /// Only semaphore sets.
    #[arg(short = 's', long = "semaphores")]
    sem: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// A node's local socket for attach counts and queue contents
    /// (default: DIPC_SOCKET, then the config file, then /run/dipc/node.sock).
    #[arg(long, env = "DIPC_SOCKET")]
    socket: Option<PathBuf>,
}

/// One object as `ipcs` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub key: i32,
    pub id: i32,
    pub owner: String,
    pub uid: u32,
    pub perms: u32,
    /// Segment size, or queue bytes used (when known).
    pub bytes: Option<u64>,
    /// Cluster-wide attachments of a segment (when known).
    pub nattch: Option<u64>,
    /// Messages in a queue (when known).
    pub messages: Option<u64>,
    pub nsems: Option<u32>,
    /// A segment's transfer settings, fixed at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
    /// `dest`: removed, still attached; `unavailable`: home node down.
    pub status: String,
    pub home: u32,
    pub home_name: String,
}

/// How a segment moves: what `shmget` (or the creating node's
/// configuration) chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// `page` or `segment`.
    pub mode: &'static str,
    /// Coherence unit in bytes (the whole segment in segment mode).
    pub unit: u64,
    /// Hold-time quantum in microseconds (0: none).
    pub quantum_us: u32,
    /// Largest sequential prefetch window in units (0: off).
    pub prefetch: u32,
}

impl Transfer {
    /// The transfer settings in a segment's parameters.
    pub fn of(params: &Params) -> Option<Transfer> {
        let Params::Shm {
            size,
            unit,
            mode,
            quantum_us,
            prefetch,
        } = *params
        else {
            return None;
        };
        let segment = mode == ShmMode::Segment;
        Some(Transfer {
            mode: if segment { "segment" } else { "page" },
            unit: if segment {
                size.div_ceil(4096) * 4096
            } else {
                u64::from(unit)
            },
            quantum_us,
            prefetch,
        })
    }
}

fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Rows from the referee's status, completed through `node` if given.
pub fn rows(st: &ClusterStatus, mut node: Option<&mut NodeConn>) -> Vec<Row> {
    let mut out: Vec<Row> = st
        .objects
        .iter()
        .map(|o: &ObjectStatus| {
            let r = &o.record;
            let mut row = Row {
                kind: r.kind,
                key: r.key,
                id: r.id,
                owner: owner_name(r.perm.uid),
                uid: r.perm.uid,
                perms: r.perm.mode & 0o777,
                bytes: None,
                nattch: None,
                messages: None,
                nsems: None,
                transfer: Transfer::of(&r.params),
                status: match (r.removed, o.available) {
                    (true, _) => "dest".into(),
                    (false, false) => "unavailable".into(),
                    (false, true) => String::new(),
                },
                home: r.home,
                home_name: st
                    .members
                    .iter()
                    .find(|m| m.node == r.home)
                    .map(|m| m.name.clone())
                    .unwrap_or_else(|| r.home.to_string()),
            };
            match r.params {
                Params::Shm { size, .. } => row.bytes = Some(size),
                Params::Msg { .. } => {}
                Params::Sem { nsems } => row.nsems = Some(nsems),
            }
            if let Some(n) = node.as_deref_mut()
                && o.available
            {
                complete(n, &mut row);
            }
            row
        })
        .collect();
    out.sort_by_key(|r| (r.kind, r.id));
    out
}

/// Ask the node for what only the home knows; leave `None` on refusal.
fn complete(node: &mut NodeConn, row: &mut Row) {
    match row.kind {
        Kind::Shm => {
            if let Ok(Response::ShmStat(s)) = node.call(&Request::ShmStat { id: row.id }) {
                row.nattch = Some(s.nattch);
                row.bytes = Some(s.segsz);
            }
        }
        Kind::Msg => {
            if let Ok(Response::MsgStat(s)) = node.call(&Request::MsgCtl {
                id: row.id,
                cmd: MsgCtlCmd::Stat,
            }) {
                row.bytes = Some(s.cbytes);
                row.messages = Some(s.qnum);
            }
        }
        Kind::Sem => {}
    }
}

fn opt(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The tables, util-linux style, for the kinds selected.
pub fn render(rows: &[Row], shm: bool, msg: bool, sem: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let of = |k: Kind| rows.iter().filter(move |r| r.kind == k);
    if msg {
        let _ = writeln!(out, "\n------ Message Queues --------");
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<10} {:<10} {:<12} {:<11} home",
            "key", "msqid", "owner", "perms", "used-bytes", "messages"
        );
        for r in of(Kind::Msg) {
            let _ = writeln!(
                out,
                "{:#010x} {:<10} {:<10} {:<10o} {:<12} {:<11} {}{}",
                r.key as u32,
                r.id,
                r.owner,
                r.perms,
                opt(r.bytes),
                opt(r.messages),
                r.home_name,
                status_suffix(r)
            );
        }
    }
    if shm {
        let _ = writeln!(out, "\n------ Shared Memory Segments --------");
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<10} {:<10} {:<10} {:<10} {:<8} {:<10} {:<10} {:<8} {:<11} home",
            "key",
            "shmid",
            "owner",
            "perms",
            "bytes",
            "nattch",
            "mode",
            "unit",
            "quantum-us",
            "prefetch",
            "status"
        );
        for r in of(Kind::Shm) {
            let t = r.transfer;
            let _ = writeln!(
                out,
                "{:#010x} {:<10} {:<10} {:<10o} {:<10} {:<10} {:<8} {:<10} {:<10} {:<8} {:<11} {}",
                r.key as u32,
                r.id,
                r.owner,
                r.perms,
                opt(r.bytes),
                opt(r.nattch),
                t.map_or("-", |t| t.mode),
                opt(t.map(|t| t.unit)),
                opt(t.map(|t| t.quantum_us)),
                opt(t.map(|t| t.prefetch)),
                r.status,
                r.home_name
            );
        }
    }
    if sem {
        let _ = writeln!(out, "\n------ Semaphore Arrays --------");
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<10} {:<10} {:<10} home",
            "key", "semid", "owner", "perms", "nsems"
        );
        for r in of(Kind::Sem) {
            let _ = writeln!(
                out,
                "{:#010x} {:<10} {:<10} {:<10o} {:<10} {}{}",
                r.key as u32,
                r.id,
                r.owner,
                r.perms,
                opt(r.nsems),
                r.home_name,
                status_suffix(r)
            );
        }
    }
    out.push('\n');
    out
}

fn status_suffix(r: &Row) -> String {
    if r.status.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.status)
    }
}

/// `dipc ipcs`.
pub async fn show(
    args: IpcsArgs,
    referee: &str,
    cluster: &str,
    secret: Arc<[u8]>,
    tls: Option<Arc<dipc_transport_tcp::TlsConfig>>,
    file: &crate::config::FileConfig,
) -> anyhow::Result<()> {
    let st = crate::status::fetch(referee, cluster, secret, tls).await?;
    let socket = crate::ipcmk::socket_path(args.socket.clone(), file);
    let mut node = NodeConn::connect(&socket).ok();
    let all = !(args.shm || args.msg || args.sem);
    let rows: Vec<Row> = rows(&st, node.as_mut())
        .into_iter()
        .filter(|r| {
            all || match r.kind {
                Kind::Shm => args.shm,
                Kind::Msg => args.msg,
                Kind::Sem => args.sem,
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!(
            "{}",
            render(&rows, all || args.shm, all || args.msg, all || args.sem)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: Kind, key: i32, id: i32) -> Row {
        Row {
            kind,
            key,
            id,
            owner: "alice".into(),
            uid: 1000,
            perms: 0o640,
            bytes: Some(4096),
            nattch: Some(2),
            messages: None,
            nsems: Some(3),
            transfer: Transfer::of(&Params::Shm {
                size: 4096,
                unit: 4096,
                mode: ShmMode::Page,
                quantum_us: 1000,
                prefetch: 8,
            }),
            status: String::new(),
            home: 1,
            home_name: "node-a".into(),
        }
    }

    #[test]
    fn tables_show_hex_keys_octal_perms_and_home() {
        let rows = [
            row(Kind::Shm, 0x1234, 1_073_741_825),
            row(Kind::Sem, 0x99, 1_073_741_826),
        ];
        let text = render(&rows, true, true, true);
        assert!(text.contains("------ Shared Memory Segments --------"));
        assert!(text.contains("------ Message Queues --------"));
        let shm_line = text
            .lines()
            .find(|l| l.starts_with("0x00001234"))
            .expect("shm line");
        let cols: Vec<&str> = shm_line.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "0x00001234",
                "1073741825",
                "alice",
                "640",
                "4096",
                "2",
                "page",
                "4096",
                "1000",
                "8",
                "node-a"
            ]
        );
        let sem_line = text
            .lines()
            .find(|l| l.starts_with("0x00000099"))
            .expect("sem line");
        assert!(sem_line.contains(" 3 ") && sem_line.ends_with("node-a"));
        // Only the shm section when asked.
        let only = render(&rows, true, false, false);
        assert!(!only.contains("Semaphore") && only.contains("0x00001234"));
    }
}
