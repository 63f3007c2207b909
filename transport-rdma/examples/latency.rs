//! 4 KiB round trips over this transport (and over transport-tcp, for
//! comparison), printed, not asserted.
//!
//! ```sh
//! cargo build --release -p dipc-transport-rdma --example latency
//! ../shared/rxe-vm/run -- target/release/examples/latency [ROUNDS]
//! ```
//!
//! Measured 2026-11-26 in one rxe VM (TCG, on a 2-core host whose load
//! average was 12-16 from other builds, so only the ratios mean anything),
//! 4 KiB, 2000 rounds, whole round trips: this transport median 9.8 ms
//! (min 1.4 ms), transport-tcp 4.0 ms (min 0.7 ms), `ib_read_lat` typical
//! 1.0 ms (min 65 us), `ib_write_lat` typical 2.8 ms per half (so about
//! 5.5 ms). Across two VMs (`--vms 2`): 12 ms vs TCP 3.1 ms. The gap to
//! perftest is the hand-offs between threads (application -> engine ->
//! rxe -> engine -> application, each a wake-up under emulation), which
//! perftest, polling in one thread, does not have.
//!
//! `SPIN_US=n` sets how long the engines busy-poll before sleeping.
//! It re-runs itself as the echoing peer (`latency echo-rdma ADDR` /
//! `latency echo-tcp ADDR`); the control connection is on 127.0.0.1 and
//! the RDMA data goes through the first usable device. Under
//! `rxe-vm/run --vms 2` (`RXE_VM_NODES=2`) VM 1 echoes and VM 0 measures,
//! across the virtual link between them. Compare with
//! `ib_read_lat -d rxe0 -x 1 -s 4096` (a whole round trip) or
//! `ib_write_lat` / `ib_send_lat` (half of one).

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use dipc_transport_rdma::{RdmaConfig, accept, connect};
use dipc_transport_tcp::{Auth, Conn, Role};
use dipc_wire::Frame;
use tokio::net::TcpListener;

fn auth(name: &str) -> Auth {
    Auth {
        cluster: "bench".into(),
        secret: Arc::from(&b"latency"[..]),
        name: name.into(),
        tls: None,
    }
}

fn spawn(role: &str, addr: &str) -> Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([role, addr])
        .spawn()
        .context("spawn the echo peer")
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    println!(
        "{what:>5} 4 KiB round trip over {} rounds: median {:?}, p99 {:?}, p99.9 {:?}, min {:?}",
        times.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        times[0]
    );
}

async fn echo(role: &str, addr: &str) -> Result<()> {
    match role {
        "echo-rdma" => {
            let (mut conn, _) = connect(addr, &auth("echo"), &cfg()).await?;
            while let Some(f) = conn.recv().await? {
                conn.send(f).await?;
            }
        }
        "echo-tcp" => {
            let (mut conn, _) =
                Conn::connect(addr, &auth("echo"), Role::Node, Duration::from_secs(10)).await?;
            while let Some(f) = conn.recv().await? {
                conn.send(&f).await?;
            }
        }
        other => bail!("unknown role {other}"),
    }
    Ok(())
}

/// Connect `role` to `addr`, retrying while the other VM starts listening.
async fn echo_retrying(role: &str, addr: &str) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        match echo(role, addr).await {
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let text = format!("{e:#}");
                if text.contains("refused") || text.contains("connect to") {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Start the echo peer: a child process on one VM; on two, the other VM
/// runs it already.
fn peer(role: &str, addr: &str) -> Result<Option<Child>> {
    if two_vms() {
        Ok(None)
    } else {
        spawn(role, addr).map(Some)
    }
}

/// The transport's settings; `SPIN_US` overrides the busy-poll time.
fn cfg() -> RdmaConfig {
    let mut cfg = RdmaConfig::default();
    if let Some(us) = std::env::var("SPIN_US").ok().and_then(|s| s.parse().ok()) {
        cfg.spin = Duration::from_micros(us);
    }
    cfg
}

fn two_vms() -> bool {
    std::env::var("RXE_VM_NODES").is_ok_and(|n| n == "2")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 {
        return echo(&args[1], &args[2]).await;
    }
    let rounds: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    if two_vms() && std::env::var("RXE_VM_NODE").is_ok_and(|n| n == "1") {
        let peer = std::env::var("RXE_VM_PEER_IP").context("RXE_VM_PEER_IP")?;
        echo_retrying("echo-rdma", &format!("{peer}:7470")).await?;
        echo_retrying("echo-tcp", &format!("{peer}:7471")).await?;
        return Ok(());
    }
    let host = if two_vms() {
        std::env::var("RXE_VM_IP").context("RXE_VM_IP")?
    } else {
        "127.0.0.1".to_string()
    };
    let payload = Bytes::from(vec![7u8; 4096]);
    let warmup = rounds / 10 + 1;

    let listener =
        TcpListener::bind(format!("{host}:{}", if two_vms() { 7470 } else { 0 })).await?;
    let addr = listener.local_addr()?.to_string();
    let child = peer("echo-rdma", &addr)?;
    let (s, _) = listener.accept().await?;
    let (mut conn, _) = accept(s, &auth("probe"), &cfg()).await?;
    let mut times = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t = Instant::now();
        conn.send(Frame::new(&(i as u64), payload.clone())).await?;
        conn.recv().await?.context("echo ended")?;
        if i >= warmup {
            times.push(t.elapsed());
        }
    }
    report("rdma", times);
    conn.close();
    drop(conn);
    if let Some(mut c) = child {
        c.wait()?;
    }

    let listener =
        TcpListener::bind(format!("{host}:{}", if two_vms() { 7471 } else { 0 })).await?;
    let addr = listener.local_addr()?.to_string();
    let child = peer("echo-tcp", &addr)?;
    let (s, _) = listener.accept().await?;
    let (mut conn, _) = Conn::accept(s, &auth("probe"), Duration::from_secs(10)).await?;
    let mut times = Vec::with_capacity(rounds);
    for i in 0..warmup + rounds {
        let t = Instant::now();
        conn.send(&Frame::new(&(i as u64), payload.clone())).await?;
        conn.recv().await?.context("echo ended")?;
        if i >= warmup {
            times.push(t.elapsed());
        }
    }
    report("tcp", times);
    drop(conn);
    if let Some(mut c) = child {
        c.wait()?;
    }
    Ok(())
}
