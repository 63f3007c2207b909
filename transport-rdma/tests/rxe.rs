//! Real RDMA connections between two processes.
//!
//! Each test starts a peer process: this same test binary, re-run with
//! `DIPC_RDMA_ROLE` set, which makes the `peer` test play the role named
//! there (echo, stream, die) against the address in `DIPC_RDMA_ADDR`. The
//! control connection runs over 127.0.0.1; the data goes through the RDMA
//! device (in the soft-RoCE VM, rxe loopback on `rxe0`).
//!
//! Without a usable RDMA device (the development machines have none) every
//! test prints why and returns: run `transport-rdma/tests/vm.sh` to run
//! them inside the soft-RoCE VM. `setup_without_a_device_fails_cleanly`
//! is the one test that runs only where there is no device.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dipc_transport_rdma::{Error, RdmaConfig, RdmaConn, accept, connect, probe};
use dipc_transport_tcp::{Auth, Incoming, rpc};
use dipc_wire::Frame;
use tokio::net::TcpListener;

const ROLE: &str = "DIPC_RDMA_ROLE";
const ADDR: &str = "DIPC_RDMA_ADDR";

fn auth(name: &str) -> Auth {
    Auth {
        cluster: "lab".into(),
        secret: Arc::from(&b"s3cret"[..]),
        name: name.into(),
        tls: None,
    }
}

fn cfg() -> RdmaConfig {
    RdmaConfig {
        timeout: Duration::from_secs(20),
        ..RdmaConfig::default()
    }
}

/// Is there a device? If not, say so (the test then passes vacuously).
fn have_device(test: &str) -> bool {
    match probe() {
        Ok(sel) => {
            eprintln!("{test}: using {} port {}", sel.device, sel.port.port);
            true
        }
        Err(e) => {
            eprintln!(
                "SKIPPED {test}: {e}. Run transport-rdma/tests/vm.sh to run it on soft-RoCE."
            );
            false
        }
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Kills the peer process if a test fails before waiting for it.
struct Peer(Option<Child>);

impl Peer {
    fn spawn(role: &str, addr: &str) -> Peer {
        let exe = std::env::current_exe().expect("test binary path");
        let child = Command::new(exe)
            .args(["--exact", "peer", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(ADDR, addr)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn peer process");
        Peer(Some(child))
    }

    fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.0 = None;
    }

    /// Wait (bounded) for the peer to exit; its exit status.
    fn wait(&mut self, bound: Duration) -> std::process::ExitStatus {
        let Some(c) = self.0.as_mut() else {
            panic!("peer already reaped");
        };
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().expect("wait for peer") {
                self.0 = None;
                return s;
            }
            assert!(
                start.elapsed() < bound,
                "peer did not exit within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Listen, start the peer with `role`, and accept its RDMA connection.
async fn start(role: &str) -> (RdmaConn, Peer) {
    start_with(role, &cfg()).await
}

async fn start_with(role: &str, cfg: &RdmaConfig) -> (RdmaConn, Peer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let peer = Peer::spawn(role, &addr);
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("peer connects within 30 s")
        .expect("accept");
    let (conn, info) = accept(stream, &auth("parent"), cfg)
        .await
        .expect("RDMA accept");
    assert_eq!(info.name, format!("peer-{role}"));
    (conn, peer)
}

/// The peer process's side: runs only when re-executed by a test.
#[test]
fn peer() {
    let (Ok(role), Ok(addr)) = (std::env::var(ROLE), std::env::var(ADDR)) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let (mut conn, _) = connect(&addr, &auth(&format!("peer-{role}")), &cfg())
            .await
            .expect("RDMA connect");
        match role.as_str() {
            // Send every frame back until the parent closes.
            "echo" => {
                while let Some(f) = conn.recv().await.expect("echo recv") {
                    conn.send(f).await.expect("echo send");
                }
            }
            // Send 1 MiB frames until killed.
            "stream" => {
                for i in 0u64.. {
                    let f = Frame::new(&i, pattern(1 << 20, i as u8));
                    if conn.send(f).await.is_err() {
                        break;
                    }
                }
            }
            // Never read: the parent's sends must fail after its timeout.
            "stall" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            // Take three frames, then die without closing.
            "die" => {
                for _ in 0..3 {
                    conn.recv().await.expect("recv").expect("a frame");
                }
                std::process::exit(3);
            }
            // rpc() over RDMA: answer every call with its payload; with
            // "rpc-die", exit without closing after 20 calls.
            "rpc-echo" | "rpc-die" => {
                let (h, mut rx) = rpc::<u64, u64, u64>(conn, Duration::from_secs(20));
                let mut served = 0;
                while let Some(m) = rx.recv().await {
                    if let Incoming::Call {
                        req,
                        payload,
                        reply,
                    } = m
                    {
                        reply.send(&req, payload);
                        served += 1;
                        if role == "rpc-die" && served == 20 {
                            std::process::exit(3);
                        }
                    }
                }
                drop(h);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            other => panic!("unknown role {other}"),
        }
        conn.close();
        // Let the engine say goodbye before the process exits.
        drop(conn);
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_4k_and_1m() {
    if !have_device("round_trip_4k_and_1m") {
        return;
    }
    let (mut conn, mut peer) = start("echo").await;
    for (i, len) in [0usize, 100, 4096, 1 << 20, 4 << 20]
        .into_iter()
        .enumerate()
    {
        let sent = Frame::new(&("page", i as u64), pattern(len, i as u8));
        let t = Instant::now();
        conn.send(sent.clone()).await.expect("send");
        let back = conn
            .recv_timeout(Duration::from_secs(20))
            .await
            .expect("recv")
            .expect("a frame");
        eprintln!("{len} bytes round trip: {:?}", t.elapsed());
        assert_eq!(
            back.decode::<(String, u64)>().expect("header"),
            ("page".into(), i as u64)
        );
        assert_eq!(back.payload.len(), len);
        assert!(
            back.payload == sent.payload,
            "payload of {len} bytes changed"
        );
    }
    conn.close();
    // The peer sees a clean end, echoes nothing more and exits 0.
    assert!(peer.wait(Duration::from_secs(20)).success());
    assert!(matches!(conn.recv().await, Ok(None)), "clean close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_small_frames_in_order() {
    if !have_device("ten_thousand_small_frames_in_order") {
        return;
    }
    const N: u32 = 10_000;
    let (mut conn, mut peer) = start("echo").await;
    let tx = conn.sender();
    // Several senders at once; each one's frames must stay in order.
    let senders: Vec<_> = (0..4u32)
        .map(|s| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..N / 4 {
                    let payload = pattern(64, (i % 256) as u8);
                    tx.send(Frame::new(&(s, i), payload)).await.expect("send");
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut next = [0u32; 4];
    for _ in 0..N {
        let f = conn
            .recv_timeout(Duration::from_secs(20))
            .await
            .expect("recv")
            .expect("a frame");
        let (s, i): (u32, u32) = f.decode().expect("header");
        assert_eq!(i, next[s as usize], "sender {s} out of order");
        assert!(f.payload == pattern(64, (i % 256) as u8));
        next[s as usize] += 1;
    }
    for s in senders {
        s.await.expect("sender task");
    }
    eprintln!("{N} echoed frames in {:?}", start.elapsed());
    assert_eq!(next, [N / 4; 4]);
    conn.close();
    assert!(peer.wait(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_transfer_is_a_bounded_error() {
    if !have_device("peer_killed_mid_transfer_is_a_bounded_error") {
        return;
    }
    let (mut conn, mut peer) = start("stream").await;
    for _ in 0..3 {
        let f = conn
            .recv_timeout(Duration::from_secs(20))
            .await
            .expect("recv")
            .expect("a frame");
        assert_eq!(f.payload.len(), 1 << 20);
    }
    peer.kill();
    let killed = Instant::now();
    let err = loop {
        match conn.recv_timeout(Duration::from_secs(10)).await {
            Ok(Some(f)) => assert_eq!(f.payload.len(), 1 << 20, "only whole frames"),
            Ok(None) => panic!("a killed peer must not look like a clean close"),
            Err(e) => break e,
        }
    };
    eprintln!("error {:?} after the kill: {err}", killed.elapsed());
    assert!(matches!(err, Error::PeerGone { .. }), "{err:?}");
    assert!(err.is_peer_failure());
    assert!(killed.elapsed() < Duration::from_secs(10));
    // Sending fails too, at once.
    let e = conn
        .send(Frame::msg(&1u8))
        .await
        .expect_err("send after failure");
    assert!(e.is_peer_failure(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_dead_peer_fails_in_bounded_time() {
    if !have_device("sending_to_a_dead_peer_fails_in_bounded_time") {
        return;
    }
    let (conn, mut peer) = start("die").await;
    let t = Instant::now();
    let err = loop {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sends kept succeeding"
        );
        if let Err(e) = conn.send(Frame::new(&0u8, pattern(1 << 20, 0))).await {
            break e;
        }
    };
    eprintln!("send failed after {:?}: {err}", t.elapsed());
    assert!(err.is_peer_failure(), "{err:?}");
    assert_eq!(peer.wait(Duration::from_secs(10)).code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_fails_sends_after_the_timeout() {
    if !have_device("a_peer_that_stops_reading_fails_sends_after_the_timeout") {
        return;
    }
    let short = RdmaConfig {
        timeout: Duration::from_secs(2),
        ..RdmaConfig::default()
    };
    let (conn, _peer) = start_with("stall", &short).await;
    let t = Instant::now();
    let mut sent = 0u32;
    let err = loop {
        assert!(t.elapsed() < Duration::from_secs(60), "sends never failed");
        match conn.send(Frame::new(&sent, pattern(4096, 1))).await {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    eprintln!("{sent} frames queued, then after {:?}: {err}", t.elapsed());
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // The peer buffers a bounded number of frames: its receive queue and
    // the engine's backlog, plus our queue and what is in flight.
    assert!(
        sent < 2_000,
        "{sent} frames accepted by a peer that does not read"
    );
}

/// Many page-sized calls at once through `rpc()` over RDMA: every answer
/// carries its own page back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_many_concurrent_page_transfers() {
    if !have_device("rpc_many_concurrent_page_transfers") {
        return;
    }
    let (conn, mut peer) = start("rpc-echo").await;
    let (h, _rx) = rpc::<u64, u64, u64>(conn, Duration::from_secs(20));
    assert_eq!(h.peer().name, "peer-rpc-echo");
    let t = Instant::now();
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let h = h.clone();
            tokio::spawn(async move {
                for i in 0..32u64 {
                    let id = task * 1000 + i;
                    let page = pattern(4096, id as u8);
                    let (back, data) = h
                        .call_payload(&id, page.clone(), Duration::from_secs(20))
                        .await
                        .expect("call");
                    assert_eq!(back, id);
                    assert!(data == page, "page of call {id} changed");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    eprintln!("512 concurrent 4 KiB calls in {:?}", t.elapsed());
    drop(h);
    drop(_rx);
    assert!(peer.wait(Duration::from_secs(20)).success());
}

/// A peer killed while calls are in flight: every pending call fails with
/// a connection error (not its timeout), and a new connection to a new
/// peer works (what the node does on the next send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_peer_killed_fails_pending_calls_then_reconnects() {
    if !have_device("rpc_peer_killed_fails_pending_calls_then_reconnects") {
        return;
    }
    let (conn, mut peer) = start("rpc-die").await;
    let (h, _rx) = rpc::<u64, u64, u64>(conn, Duration::from_secs(30));
    let t = Instant::now();
    let calls: Vec<_> = (0..40u64)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                h.call_payload(&i, pattern(64 * 1024, i as u8), Duration::from_secs(30))
                    .await
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for c in calls {
        match c.await.expect("caller task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        dipc_transport_tcp::Error::Closed { .. }
                            | dipc_transport_tcp::Error::Io { .. }
                    ),
                    "{e:?}"
                );
                failed += 1;
            }
        }
    }
    eprintln!(
        "{ok} calls answered, {failed} failed, all within {:?}",
        t.elapsed()
    );
    assert!(ok <= 20 && failed >= 20, "{ok} answered, {failed} failed");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "failures took too long"
    );
    assert!(h.is_closed());
    assert_eq!(peer.wait(Duration::from_secs(10)).code(), Some(3));
    // Reconnect: a fresh connection and rpc work as before.
    let (conn, mut peer) = start("rpc-echo").await;
    let (h, rx) = rpc::<u64, u64, u64>(conn, Duration::from_secs(20));
    let (v, data) = h
        .call_payload(&7, pattern(4096, 7), Duration::from_secs(20))
        .await
        .expect("call after reconnect");
    assert_eq!((v, data.len()), (7, 4096));
    drop((h, rx));
    assert!(peer.wait(Duration::from_secs(20)).success());
}

/// Where there is no device, both ends of a setup fail with a clear
/// error, quickly, instead of hanging on each other.
#[tokio::test]
async fn setup_without_a_device_fails_cleanly() {
    if probe().is_ok() {
        eprintln!("setup_without_a_device_fails_cleanly: a device is present; nothing to check");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        accept(s, &auth("server"), &cfg()).await.map(|_| ())
    });
    let t = Instant::now();
    let client = connect(&addr, &auth("client"), &cfg()).await.map(|_| ());
    let server = server.await.expect("join");
    let (ce, se) = (client.expect_err("client"), server.expect_err("server"));
    assert!(t.elapsed() < Duration::from_secs(5));
    for e in [&ce, &se] {
        assert!(
            matches!(e, Error::NoDevice { .. }) || e.to_string().contains("no usable RDMA device"),
            "{e:?}"
        );
    }
}
