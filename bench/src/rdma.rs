//! `dipc bench --transport rdma`: the fault scenarios with the nodes' peer
//! links on RDMA, next to the same scenarios on TCP and to the floors an
//! RDMA fault is made of, all in one run between the same endpoints.
//!
//! Rows, in the order measured:
//!
//! * floors: the local userfaultfd fault ([`floors::uffd_local`]),
//!   `ib_read_lat -s 4096` (perftest's RDMA READ, typical latency; skipped
//!   when perftest is missing), a raw 4 KiB round trip over an `RdmaConn`
//!   (send, echo, receive), a 4 KiB call over `rpc()` on RDMA, and the
//!   same call over dipc's TCP transport ([`floors::tcp_rtt_4k`]);
//! * for `tcp` and then `rdma`: an embedded referee and two nodes whose
//!   peer links use that transport, and the scenarios `remote-read`,
//!   `write-inval-1` and `pingpong` of [`crate::shm`].
//!
//! The remote read fault is compared with its target, local uffd fault +
//! RDMA 4 KiB (perftest's READ when present, else the raw round trip).
//! Only ratios mean anything under emulation (soft-RoCE in a TCG VM,
//! `scripts/bench-rdma.sh`).

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dipc_transport_rdma::{DeviceChoice, RdmaConfig};
use dipc_transport_tcp::{Auth, Incoming, rpc};
use dipc_wire::Frame;
use indicatif::ProgressBar;

use crate::agent::AgentCommand;
use crate::cluster::Cluster;
use crate::floors::{accept_one, current_thread_runtime, loopback_listener};
use crate::stats::{Summary, human, summarize, warmup_for};
use crate::{Error, floors, shm};

/// Transport (and RDMA settings) of the nodes the embedded cluster starts
/// next; `None` = TCP.
static NODE_TRANSPORT: Mutex<Option<RdmaConfig>> = Mutex::new(None);

/// `transport` and `rdma` of the next embedded node's configuration.
pub fn node_transport() -> (String, RdmaConfig) {
    match &*NODE_TRANSPORT.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(cfg) => ("rdma".into(), cfg.clone()),
        None => ("tcp".into(), RdmaConfig::default()),
    }
}

fn set_node_transport(t: Option<RdmaConfig>) {
    *NODE_TRANSPORT.lock().unwrap_or_else(|p| p.into_inner()) = t;
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RdmaOptions {
    /// `auto` or a device name (e.g. `rxe0`).
    pub device: String,
    pub gid_index: u8,
    /// Counted samples per row.
    pub samples: usize,
    /// Starts agent processes on the nodes.
    pub agent: AgentCommand,
}

/// One row of the result.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub what: String,
    /// `Err` = skipped or failed, with why.
    pub result: Result<Summary, String>,
}

const TIMEOUT: Duration = Duration::from_secs(20);
const SCENARIOS: [(&str, &str); 3] = [
    ("remote-read", "remote read fault"),
    ("write-inval-1", "write fault, invalidate 1"),
    ("pingpong", "ownership ping-pong"),
];

fn measure(
    total: usize,
    f: impl FnOnce(usize, &ProgressBar) -> Result<Vec<u64>, Error>,
) -> Result<Summary, String> {
    let warm = warmup_for(total);
    let raw = f(total + warm, &ProgressBar::hidden()).map_err(|e| crate::run::chain(&e))?;
    summarize(&raw, warm).map_err(|e| e.to_string())
}

/// Run every row (see the module doc).
pub fn compare(opts: &RdmaOptions) -> Result<Vec<Row>, Error> {
    let cfg = RdmaConfig {
        device: opts.device.parse().unwrap_or(DeviceChoice::Auto),
        gid_index: opts.gid_index,
        timeout: TIMEOUT,
        ..RdmaConfig::default()
    };
    let sel = cfg.select().map_err(|e| Error::Unavailable {
        what: format!("RDMA bench: {e}"),
    })?;
    let n = opts.samples;
    let mut rows = Vec::new();
    let mut row = |name: &str, what: String, result| {
        rows.push(Row {
            name: name.into(),
            what,
            result,
        })
    };
    row(
        "uffd-local",
        "uffd fault, local".into(),
        measure(n, floors::uffd_local),
    );
    row(
        "ib_read_lat",
        format!("ib_read_lat -s 4096 -d {} -x {}", sel.device, cfg.gid_index),
        ib_read_lat(&sel.device, cfg.gid_index, n),
    );
    let c = cfg.clone();
    row(
        "rdma-raw-4k",
        "4 KiB round trip, RdmaConn send/recv".into(),
        measure(n, |t, _| rdma_rtt(&c, t, false)),
    );
    let c = cfg.clone();
    row(
        "rdma-rpc-4k",
        "4 KiB call, rpc() over RDMA".into(),
        measure(n, |t, _| rdma_rtt(&c, t, true)),
    );
    row(
        "tcp-rpc-4k",
        "4 KiB call, rpc() over TCP".into(),
        measure(n, floors::tcp_rtt_4k),
    );
    for (label, transport) in [("tcp", None), ("rdma", Some(cfg.clone()))] {
        set_node_transport(transport);
        let cluster = Cluster::start(2, opts.agent.clone());
        set_node_transport(None);
        let cluster = match cluster {
            Ok(c) => c,
            Err(e) => {
                for (name, what) in SCENARIOS {
                    row(
                        &format!("{name} ({label})"),
                        what.into(),
                        Err(format!("cluster: {e}")),
                    );
                }
                continue;
            }
        };
        for (name, what) in SCENARIOS {
            let f = match name {
                "remote-read" => shm::remote_read,
                "write-inval-1" => shm::write_inval_1,
                _ => shm::pingpong,
            };
            row(
                &format!("{name} ({label})"),
                format!("{what}, nodes on {label}"),
                measure(n, |t, pb| f(&cluster, t, pb)),
            );
        }
    }
    Ok(rows)
}

/// The table, with the remote read's ratios to its target.
pub fn table(rows: &[Row]) -> String {
    let p50 = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.result.as_ref().ok())
            .map(|s| s.p50_ns as f64)
    };
    let mut out =
        String::from("| row | what | p50 | p99 | samples | ratio |\n|---|---|---|---|---|---|\n");
    let uffd = p50("uffd-local");
    let rdma_4k = p50("ib_read_lat").or(p50("rdma-raw-4k"));
    for r in rows {
        let ratio = match (r.name.as_str(), &r.result) {
            (n, Ok(s)) if n.starts_with("remote-read") => match (uffd, rdma_4k) {
                (Some(u), Some(x)) => format!("{:.2}x (uffd + RDMA 4K)", s.p50_ns as f64 / (u + x)),
                _ => String::new(),
            },
            (n, Ok(s)) if n.ends_with("(rdma)") => {
                let tcp = n.replace("(rdma)", "(tcp)");
                p50(&tcp).map_or(String::new(), |t| {
                    format!("{:.2}x of TCP", s.p50_ns as f64 / t)
                })
            }
            _ => String::new(),
        };
        // remote-read (rdma) gets both ratios.
        let ratio = if r.name == "remote-read (rdma)"
            && let (Ok(s), Some(t)) = (&r.result, p50("remote-read (tcp)"))
        {
            format!("{ratio}; {:.2}x of TCP", s.p50_ns as f64 / t)
        } else {
            ratio
        };
        match &r.result {
            Ok(s) => out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.what,
                human(s.p50_ns as f64),
                human(s.p99_ns as f64),
                s.samples,
                ratio
            )),
            Err(e) => out.push_str(&format!("| {} | {} | - | - | - | {e} |\n", r.name, r.what)),
        }
    }
    out
}

fn auth(name: &str) -> Auth {
    Auth {
        cluster: "rdma-floor".into(),
        secret: std::sync::Arc::from(&b"rdma-floor-secret"[..]),
        name: name.into(),
        tls: None,
    }
}

fn rdma_err(what: &str, e: dipc_transport_rdma::Error) -> Error {
    Error::Tcp {
        what: format!("RDMA floor: {what}"),
        source: e.into_tcp(),
    }
}

/// `total` round trips of 4 KiB each way between two RDMA connections of
/// this process (server on its own thread): raw frames, or `rpc()` calls.
fn rdma_rtt(cfg: &RdmaConfig, total: usize, use_rpc: bool) -> Result<Vec<u64>, Error> {
    let (listener, addr) = loopback_listener("RDMA floor")?;
    let addr = addr.to_string();
    let scfg = cfg.clone();
    let server = std::thread::Builder::new()
        .name("rdma-floor-server".into())
        .spawn(move || -> Result<(), Error> {
            current_thread_runtime()?.block_on(async move {
                let s = accept_one(listener, "RDMA floor", TIMEOUT).await?;
                let (mut conn, _) = dipc_transport_rdma::accept(s, &auth("server"), &scfg)
                    .await
                    .map_err(|e| rdma_err("server setup", e))?;
                if use_rpc {
                    let (_h, mut rx) = rpc::<u64, u64, ()>(conn, TIMEOUT);
                    while let Some(m) = rx.recv().await {
                        if let Incoming::Call {
                            req,
                            payload,
                            reply,
                        } = m
                        {
                            reply.send(&req, payload);
                        }
                    }
                } else {
                    while let Ok(Some(f)) = conn.recv().await {
                        if conn.send(f).await.is_err() {
                            break;
                        }
                    }
                }
                Ok(())
            })
        })
        .map_err(|e| Error::io("RDMA floor: server thread", e))?;
    let page = Bytes::from(vec![0x5Au8; 4096]);
    let client = current_thread_runtime()?.block_on(async {
        let (mut conn, _) = dipc_transport_rdma::connect(&addr, &auth("client"), cfg)
            .await
            .map_err(|e| rdma_err("client setup", e))?;
        let mut out = Vec::with_capacity(total);
        if use_rpc {
            let (h, _rx) = rpc::<u64, u64, ()>(conn, TIMEOUT);
            for i in 0..total as u64 {
                let t = Instant::now();
                let (id, p) = h
                    .call_payload(&i, page.clone(), TIMEOUT)
                    .await
                    .map_err(|e| Error::tcp(format!("RDMA floor: call {i}"), e))?;
                out.push(t.elapsed().as_nanos() as u64);
                check(i, id, &p)?;
            }
            h.close();
        } else {
            for i in 0..total as u64 {
                let t = Instant::now();
                conn.send(Frame::new(&i, page.clone()))
                    .await
                    .map_err(|e| rdma_err("send", e))?;
                let f = conn
                    .recv_timeout(TIMEOUT)
                    .await
                    .map_err(|e| rdma_err("receive", e))?
                    .ok_or_else(|| Error::Cluster {
                        detail: "RDMA floor: the echo server closed".into(),
                    })?;
                out.push(t.elapsed().as_nanos() as u64);
                let id: u64 = f.decode().map_err(|e| Error::WrongData {
                    detail: format!("RDMA floor: {e}"),
                })?;
                check(i, id, &f.payload)?;
            }
            conn.close();
        }
        Ok::<_, Error>(out)
    });
    let server = server.join().map_err(|_| Error::Cluster {
        detail: "RDMA floor: the server thread panicked".into(),
    })?;
    let out = client?;
    server?;
    Ok(out)
}

fn check(i: u64, id: u64, payload: &[u8]) -> Result<(), Error> {
    if id != i || payload.len() != 4096 || payload.first() != Some(&0x5A) {
        return Err(Error::WrongData {
            detail: format!(
                "RDMA floor: round trip {i} came back as {id}, {} bytes",
                payload.len()
            ),
        });
    }
    Ok(())
}

/// perftest's `ib_read_lat -s 4096` between a server and a client on this
/// machine; its typical latency (as one sample, repeated: perftest gives
/// no raw samples) and 99% percentile.
fn ib_read_lat(device: &str, gid: u8, n: usize) -> Result<Summary, String> {
    let gid = gid.to_string();
    let iters = n.clamp(100, 5000).to_string();
    let args = ["-d", device, "-x", &gid, "-s", "4096", "-n", &iters];
    let server = Command::new("ib_read_lat")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut server = match server {
        Ok(s) => s,
        Err(e) => {
            return Err(format!(
                "skipped: ib_read_lat not available ({e}); install perftest"
            ));
        }
    };
    std::thread::sleep(Duration::from_millis(1000));
    let client = Command::new("ib_read_lat")
        .args(args)
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .output();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
    let out = client.map_err(|e| format!("ib_read_lat client: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_perftest(&text).ok_or_else(|| format!("cannot read ib_read_lat's output: {text}"))
}

/// The result line after perftest's `#bytes #iterations t_min t_max
/// t_typical t_avg t_stdev 99% 99.9%` header (microseconds).
fn parse_perftest(text: &str) -> Option<Summary> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("#bytes"));
    lines.next()?;
    let v: Vec<f64> = lines
        .next()?
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    let ns = |us: f64| (us * 1000.0) as u64;
    Some(Summary {
        samples: v[1] as u64,
        warmup: 0,
        min_ns: ns(v[2]),
        p50_ns: ns(v[4]),
        p90_ns: ns(v[4]),
        p99_ns: ns(v[7]),
        max_ns: ns(v[3]),
        mean_ns: v[5] * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perftest_output_parses() {
        let text = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] \n 4096       1000          40.12          300.5        46.33             50.1           9.2             190.2                    282.0\n";
        let s = parse_perftest(text).expect("parse");
        assert_eq!(s.p50_ns, 46_330);
        assert_eq!(s.p99_ns, 190_200);
        assert_eq!(s.samples, 1000);
        assert!(parse_perftest("no header").is_none());
    }
}
