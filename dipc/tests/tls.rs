//! TLS for the referee and peer links, end to end with real daemons
//! (`--tls-cert`, `--tls-key`, `--tls-ca`; certificates from `dipc
//! certgen`, made by testkit's `ClusterBuilder::tls`).
//!
//! * A C program shares a segment and a message queue between two TLS
//!   nodes, `dipc status` says the links are TLS, and a packet capture on
//!   the machine (an `AF_PACKET` socket: every byte on loopback) does not
//!   contain the segment's text or the message; the same run without TLS
//!   does show both, so the capture would catch a leak.
//! * A node whose certificate comes from another CA, or that trusts the
//!   cluster CA but holds a certificate of another, or that has no TLS at
//!   all, cannot join: it exits with the reason, and the referee logs it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header, free_port};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const COMMON: &str = include_str!("c/common.h");
const TLS_SHARE: &str = include_str!("c/tls_share.c");
const SHM_KEY: &str = "0x71500001";
const MSG_KEY: &str = "0x71500002";
/// Bound on each program and each refused node.
const BOUND: Duration = Duration::from_secs(30);

fn cluster(tls: bool, nodes: usize) -> Cluster {
    Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .tls(tls)
        .start()
        .unwrap_or_else(|e| panic!("cluster (tls {tls}) did not start: {e:#}"))
}

fn share_program() -> Program {
    compile_c_with_header(
        "#define USE_DIPC 1\n",
        ("common.h", COMMON),
        "tls_share",
        TLS_SHARE,
        Link::Sysv,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run `cmd` to its end within [`BOUND`]; its output.
fn run_bounded(cmd: Command, what: &str, c: &Cluster) -> Output {
    dipc_testkit::run_bounded(cmd, BOUND).unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", c.logs()))
}

/// Run the program on node `i`; its stdout (it must succeed).
fn share(c: &Cluster, prog: &Program, i: usize, mode: &str, mark: &str) -> String {
    let mut cmd = c.run_on(i, prog);
    cmd.args([mode, SHM_KEY, MSG_KEY, mark]);
    let out = run_bounded(cmd, &format!("tls_share {mode} on node {i}"), c);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tls_share {mode} on node {i} failed ({}): {stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    stdout
}

/// Every packet on the machine's interfaces (loopback included) while it
/// runs: what someone with a tap on the wire would see.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u8>>,
}

impl Capture {
    fn start() -> Capture {
        let fd: OwnedFd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::EthAll,
        )
        .expect("an AF_PACKET socket (this test runs as root, like the rest of the suite)");
        // A large buffer, so that no packet is dropped while we copy.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(64 << 20));
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(0, 50_000), // 50 ms: check the stop flag
        )
        .expect("receive timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    // Timeout: nothing queued; stop only then, so that
                    // everything sent before `finish` was read.
                    Err(_) if flag.load(Ordering::Acquire) => return all,
                    Err(_) => {}
                }
            }
        });
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<u8> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("capture thread")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Share a segment and a queue from node 0 to node 1 under a capture;
/// return the captured bytes and the marker text.
fn share_under_capture(c: &Cluster, prog: &Program) -> (Vec<u8>, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mark = format!("dipc-wire-probe-{:x}-{nanos:x}", std::process::id());
    let cap = Capture::start();
    assert!(share(c, prog, 0, "put", &mark).contains("put"));
    assert!(share(c, prog, 1, "get", &mark).contains("verified and sent"));
    let got = share(c, prog, 0, "recv", &mark);
    assert!(got.contains(&format!("got {mark} says hello")), "{got}");
    // Let the last packets (acknowledgements, detach traffic) arrive.
    std::thread::sleep(Duration::from_millis(200));
    (cap.finish(), mark)
}

/// The nodes' `--transport` from testkit's `DIPC_TEST_TRANSPORT` (unset:
/// TCP), as in tests/transport.rs.
fn rdma_links() -> bool {
    std::env::var("DIPC_TEST_TRANSPORT").is_ok_and(|t| t == "rdma")
}

#[test]
fn tls_links_carry_shared_memory_and_messages_and_nothing_readable_on_the_wire() {
    let prog = share_program();

    let c = cluster(true, 2);
    let status = c.status_text().expect("dipc status");
    assert!(status.contains("connected over TLS"), "{status}");
    if rdma_links() {
        // In the soft-RoCE VM: RDMA links set up over TLS. Page data and
        // messages travel over verbs, unencrypted (documented), so there is
        // nothing to look for on the wire; the sharing must work.
        assert_eq!(status.matches(")+tls").count(), 2, "{status}");
        assert!(
            status.contains("RDMA page traffic is not encrypted"),
            "{status}"
        );
        let mark = "dipc-rdma-over-tls";
        assert!(share(&c, &prog, 0, "put", mark).contains("put"));
        assert!(share(&c, &prog, 1, "get", mark).contains("verified and sent"));
        let got = share(&c, &prog, 0, "recv", mark);
        assert!(got.contains(&format!("got {mark} says hello")), "{got}");
        return;
    }
    assert_eq!(status.matches("tcp+tls").count(), 2, "{status}");
    let (wire, mark) = share_under_capture(&c, &prog);
    assert!(
        !wire.is_empty(),
        "the capture saw nothing at all; is this test root?"
    );
    assert!(
        !contains(&wire, mark.as_bytes()),
        "the segment's text crossed the wire in the clear under TLS ({} bytes captured)",
        wire.len()
    );
    assert!(
        !contains(&wire, b"says hello"),
        "the message crossed the wire in the clear under TLS"
    );
    for i in 0..2 {
        let log = c.node_log(i);
        assert!(log.contains("peer links use TLS"), "{log}");
    }
    drop(c);

    // The same without TLS: the capture does see both, so the checks above
    // are able to fail.
    let c = cluster(false, 2);
    let status = c.status_text().expect("dipc status");
    assert!(!status.contains("tls"), "{status}");
    let (wire, mark) = share_under_capture(&c, &prog);
    assert!(
        contains(&wire, mark.as_bytes()),
        "without TLS the segment's text must be visible ({} bytes captured)",
        wire.len()
    );
    assert!(
        contains(&wire, format!("{mark} says hello").as_bytes()),
        "without TLS the message must be visible"
    );
}

/// Start a node of `c` with extra arguments (its own TLS settings), expect
/// it to exit unsuccessfully within the bound; its stderr.
fn refused_node(c: &Cluster, name: &str, tls: &[std::ffi::OsString]) -> String {
    let mut cmd = c.dipc();
    for var in ["DIPC_TLS_CERT", "DIPC_TLS_KEY", "DIPC_TLS_CA"] {
        cmd.env_remove(var);
    }
    cmd.arg("node")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port().expect("port")))
        .arg("--socket")
        .arg(c.dir().join(format!("{name}.sock")))
        .arg("--name")
        .arg(name)
        .args(tls)
        .env("RUST_LOG", "warn");
    let out = run_bounded(cmd, name, c);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{name} must not run: {stderr}\n{}",
        c.logs()
    );
    stderr
}

#[test]
fn nodes_without_a_certificate_of_the_cluster_ca_cannot_join() {
    let c = cluster(true, 1);
    let dir = c.tls_dir().expect("TLS files");
    let other = c.dir().join("other-ca");
    let certgen = |args: &[&str]| {
        let mut cmd = c.dipc();
        cmd.arg("certgen").arg("--out").arg(&other).args(args);
        let out = run_bounded(cmd, "certgen", &c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    certgen(&["--ca"]);
    certgen(&["--name", "intruder", "--san", "127.0.0.1"]);
    let flags = |cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path| {
        vec![
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
            "--tls-ca".into(),
            ca.into(),
        ]
    };

    // The other CA's certificate, with `ca` as the node's CA bundle.
    let intruder =
        |ca: &std::path::Path| flags(&other.join("intruder.pem"), &other.join("intruder.key"), ca);

    // Another cluster's CA and certificate: the node does not trust the
    // referee, and says why.
    let err = refused_node(&c, "intruder", &intruder(&other.join("ca.pem")));
    assert!(err.contains("refused this node"), "{err}");
    assert!(err.contains("not signed by a CA of our bundle"), "{err}");

    // Trusting both CAs (so it accepts the referee) does not help: the
    // referee checks the node's certificate against the cluster CA.
    let both = c.dir().join("both-cas.pem");
    let bundle = [
        std::fs::read(dir.join("ca.pem")).expect("ca"),
        std::fs::read(other.join("ca.pem")).expect("other ca"),
    ]
    .concat();
    std::fs::write(&both, bundle).expect("bundle");
    let err = refused_node(&c, "intruder", &intruder(&both));
    assert!(err.contains("does not accept our TLS certificate"), "{err}");

    // A certificate the node's own CA file does not vouch for is caught at
    // start.
    let err = refused_node(&c, "mixed", &intruder(&dir.join("ca.pem")));
    assert!(err.contains("does not verify against CA"), "{err}");

    // No TLS at all.
    let err = refused_node(&c, "plain", &[]);
    assert!(err.contains("requires TLS"), "{err}");

    // Half the settings.
    let err = refused_node(
        &c,
        "half",
        &["--tls-cert".into(), dir.join("node-0.pem").into()],
    );
    assert!(err.contains("missing --tls-key, --tls-ca"), "{err}");

    let log = c.referee_log();
    assert!(log.contains("requires TLS"), "{log}");
    assert!(log.contains("not signed by a CA of our bundle"), "{log}");
    let members: Vec<String> = c
        .status()
        .expect("status")
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(members, vec![c.node_name(0)]);
}
