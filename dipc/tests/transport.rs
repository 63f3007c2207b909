//! Peer-link transport selection, end to end (`--transport`,
//! `--rdma-device`, `--gid-index`).
//!
//! The nodes of these clusters use whatever `DIPC_TEST_TRANSPORT` says
//! (testkit passes it as `--transport`; unset = TCP). On the development
//! machines (no RDMA device) that is TCP; `scripts/vm-tests.sh` runs this
//! file in the soft-RoCE VM with `DIPC_TEST_TRANSPORT=rdma`, where the
//! links must really be RDMA and `dipc status` must say so.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header, free_port};

const COMMON: &str = include_str!("c/common.h");
const PATTERN: &str = include_str!("c/pattern.c");

fn cluster(nodes: usize) -> Cluster {
    Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .start()
        .unwrap_or_else(|e| panic!("cluster of {nodes} nodes did not start: {e:#}"))
}

fn pattern_program() -> Program {
    compile_c_with_header(
        "#define USE_DIPC 1\n",
        ("common.h", COMMON),
        "pattern",
        PATTERN,
        Link::Sysv,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run `cmd` to its end (bounded); its stdout, or a panic with everything.
fn run(mut cmd: Command, what: &str, c: &Cluster) -> String {
    cmd.stdin(Stdio::null());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{what} did not finish in 120 s\n{}", c.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}): {stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    stdout
}

/// Write 1 MiB on node `w`, read it back on node `r`.
fn move_pages(c: &Cluster, key: i32, w: Command, r: Command) {
    let mut w = w;
    w.args(["write", &key.to_string(), "1048576", "7"]);
    let out = run(w, "pattern write", c);
    assert!(out.contains("written"), "{out}");
    let mut r = r;
    r.args(["read", &key.to_string(), "1048576", "7"]);
    let out = run(r, "pattern read", c);
    assert!(out.contains("verified 1048576"), "{out}");
}

fn wanted() -> Option<String> {
    std::env::var("DIPC_TEST_TRANSPORT")
        .ok()
        .filter(|t| !t.is_empty())
}

#[test]
fn status_shows_the_transport_the_links_use() {
    let c = cluster(2);
    let prog = pattern_program();
    move_pages(&c, 0x7d10_0001, c.run_on(0, &prog), c.run_on(1, &prog));
    let status = c.status().expect("status");
    let text = c.status_text().expect("status text");
    for m in &status.members {
        match wanted().as_deref() {
            Some("rdma") => assert!(m.transport.starts_with("rdma("), "{text}"),
            Some("auto") => assert!(
                m.transport == "tcp" || m.transport.starts_with("rdma("),
                "{text}"
            ),
            _ => assert_eq!(m.transport, "tcp", "{text}"),
        }
        assert!(text.contains(&m.transport), "{text}");
    }
    // The pages moved over the links the status claims.
    let over = if wanted().as_deref() == Some("rdma") {
        "over rdma"
    } else {
        "over "
    };
    let logs = c.node_log(0) + &c.node_log(1);
    assert!(
        logs.contains("link to node") && logs.contains(over),
        "no link {over} in the logs:\n{}",
        c.logs()
    );
    if wanted().as_deref() != Some("rdma") {
        assert!(!logs.contains("over rdma"), "{}", c.logs());
    }
}

/// A segment-mode segment larger than a frame (20 MiB, moved as one
/// message in 4 MiB parts) crosses the links whole, whatever they are
/// (RDMA in the soft-RoCE VM).
#[test]
fn a_segment_larger_than_a_frame_moves_whole() {
    let c = cluster(2);
    let prog = pattern_program();
    let (key, size) = ("0x7d100003", (20u64 << 20).to_string());
    let mut w = c.run_on(0, &prog);
    w.env("DIPC_SHM_MODE", "segment")
        .args(["write", key, &size, "11"]);
    let out = run(w, "pattern write (segment mode)", &c);
    assert!(out.contains("written"), "{out}");
    let mut r = c.run_on(1, &prog);
    r.args(["read", key, &size, "11"]);
    let out = run(r, "pattern read (segment mode)", &c);
    assert!(out.contains(&format!("verified {size}")), "{out}");
}

/// A node started by hand with `args` in `c`'s cluster; killed on drop.
struct Extra(std::process::Child, std::path::PathBuf);

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn extra_node(c: &Cluster, name: &str, args: &[&str]) -> Extra {
    let socket = c.dir().join(format!("{name}.sock"));
    let log = std::fs::File::create(c.dir().join(format!("{name}.log"))).expect("log");
    let mut cmd = c.dipc();
    cmd.arg("node")
        .args(["--name", name, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port().expect("port")))
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    Extra(cmd.spawn().expect("spawn node"), socket)
}

fn extra_log(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// `--transport rdma` with a device that does not exist stops the node at
/// once with a clear error; `auto` with it falls back to TCP and says so.
#[test]
fn rdma_without_a_device_is_refused_and_auto_falls_back() {
    let c = cluster(1);
    let mut refused = extra_node(
        &c,
        "no-dev",
        &["--transport", "rdma", "--rdma-device", "nosuchdev9"],
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = refused.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node with no device kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = extra_log(&c, "no-dev");
    assert!(
        log.contains("--transport rdma: no usable RDMA device"),
        "{log}"
    );

    let fallback = extra_node(
        &c,
        "auto-dev",
        &["--transport", "auto", "--rdma-device", "nosuchdev9"],
    );
    c.wait_until("the auto node up on TCP", Duration::from_secs(30), |c| {
        Ok(c.status()?
            .members
            .iter()
            .any(|m| m.name == "auto-dev" && m.up && m.transport == "tcp"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", extra_log(&c, "auto-dev")));
    assert!(extra_log(&c, "auto-dev").contains("peer links use TCP"));
    // Pages move between the auto (TCP) node and the cluster's node,
    // whatever that one uses: a node on RDMA falls back to TCP for it.
    let prog = pattern_program();
    let mut on_extra = prog.command();
    on_extra
        .env("DIPC_SOCKET", &fallback.1)
        .env("DIPC_FALLBACK", "error");
    move_pages(&c, 0x7d10_0002, c.run_on(0, &prog), on_extra);
    if wanted().as_deref() == Some("rdma") {
        assert!(
            c.node_log(0).contains("falls back to TCP"),
            "{}",
            c.node_log(0)
        );
    }
}
