//! Failures while the cluster is busy: real referee and node processes
//! (dipc-testkit) and C workers (`tests/c/chaos_worker.c`) checked against
//! an exact model (`tests/chaos_model`).
//!
//! * The referee is `SIGKILL`ed while processes on three nodes write and
//!   read a segment, send and receive messages and take a semaphore mutex:
//!   every worker keeps making progress during the outage (lookups are
//!   cached), a `shmget(IPC_CREAT)` of a new key made during the outage
//!   waits and succeeds once the referee is back, and nothing is lost
//!   (every message counted, the mutex-protected counter exact).
//! * A partition: the referee and node `a` in one network namespace, node
//!   `b` in another, joined by a veth pair whose link is set down. `b`'s
//!   calls to the homes on `a` fail within a bound (errors, never a hang),
//!   a page `b` lacks is `SIGBUS`, `a` keeps working and sees `b` down;
//!   when the link is up again `b` rejoins and its new operations succeed
//!   (a page `a` wrote during the cut reads right). Skipped, with a
//!   message, where network namespaces cannot be created (not root).
//! * A peer that authenticates as a node and then sends calls without ever
//!   reading the answers: the node's memory stays bounded (it stops
//!   reading that peer's calls while their answers are queued), it keeps
//!   serving the other node, and it closes the stuck connection after its
//!   write-stall bound, with the reason in its log.

mod chaos_model;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_model::{
    Worker, check_model, make, parse_report, parse_segment, run_to_end, wall_clock_in,
    worker_program,
};
use dipc_dsm::ipc::{Caller as IpcCaller, ProcId};
use dipc_node::peer::{LinkSetup, PeerMsg, PeerReq};
use dipc_testkit::Cluster;
use dipc_transport_tcp::{Auth, Conn, Head, Role};
use dipc_wire::local::{Request as LReq, Response as LResp, SemCtlCmd};
use dipc_wire::{Frame, IPC_CREAT};

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .heartbeat_ms(300)
        // No node fails here: a generous bound keeps a node that a loaded
        // machine (debug build) starves of heartbeats from being declared
        // down, which would turn its objects' pages lost.
        .down_after_ms(10_000)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

fn check<T>(c: &Cluster, r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", c.logs()),
    }
}

#[test]
fn referee_killed_mid_traffic_data_path_continues_creates_wait_nothing_lost() {
    const PROCS: u32 = 6;
    const RUN_SECS: u64 = 14;
    let mut c = cluster(3);
    let prog = worker_program(&c);
    let (shm, msg, sem) = ("0x0c4a0001", "0x0c4a0002", "0x0c4a0003");
    // Homes on three different nodes.
    make(&c, 0, &prog, &["mkshm", shm, &PROCS.to_string()]);
    make(&c, 1, &prog, &["mkmsg", msg]);
    make(&c, 2, &prog, &["mksem", sem]);

    let end = wall_clock_in(RUN_SECS).to_string();
    let mut workers: Vec<Worker> = (0..PROCS)
        .map(|rank| {
            let node = rank as usize % 3;
            let args = [
                "work",
                shm,
                msg,
                sem,
                &rank.to_string(),
                &PROCS.to_string(),
                &end,
            ];
            Worker::start(&c, node, rank, &prog, &args)
        })
        .collect();
    for w in &mut workers {
        if let Err(e) = w.wait_ready(Duration::from_secs(30)) {
            panic!("{e}\n{}", c.logs());
        }
    }
    std::thread::sleep(Duration::from_millis(1500));

    let r = c.kill_referee();
    check(&c, r);
    let before: Vec<u64> = workers.iter().map(Worker::progress).collect();
    // A create during the outage: it needs the referee, so it waits.
    let mut create = Worker::start(&c, 1, u32::MAX, &prog, &["mkshm", "0x0c4a0004", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<u64> = workers.iter().map(Worker::progress).collect();
    assert!(
        create.lines().is_empty(),
        "the create answered without a referee: {:?}\n{}",
        create.lines(),
        c.logs()
    );
    let r = c.restart_referee();
    check(&c, r);
    let created = match create.finish(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(e) => panic!(
            "the create made during the outage failed: {e}\n{}",
            c.logs()
        ),
    };
    assert!(created.iter().any(|l| l.starts_with("id ")), "{created:?}");
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "worker {i} made no progress while the referee was down ({b} -> {a} operations)\n{}",
            c.logs()
        );
    }

    let mut reports = Vec::new();
    for w in &mut workers {
        let lines = match w.finish(Duration::from_secs(90)) {
            Ok(l) => l,
            Err(e) => panic!("{e}\n{}", c.logs()),
        };
        reports.push(parse_report(w.rank, &lines));
    }
    let seg = parse_segment(&run_to_end(
        &c,
        0,
        &prog,
        &["check", shm, &PROCS.to_string()],
        Duration::from_secs(60),
    ));
    match check_model(&reports, &seg) {
        Ok(t) => eprintln!(
            "referee chaos: {} operations, {} messages, {} increments, {} slot writes; \
             {} operations during the 3 s outage",
            t.ops,
            t.messages,
            t.increments,
            t.writes,
            after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        ),
        Err(e) => panic!("divergence from the model:\n{e}\n{}", c.logs()),
    }
    // The new key is known to the restarted referee.
    let st = check(&c, c.status());
    assert!(
        st.objects.iter().any(|o| o.record.key == 0x0c4a_0004),
        "{st:#?}"
    );
}

/// Has node 0 closed the stuck peer's connection? Its writer gives up
/// after 3 call timeouts without progress ("the peer stopped reading"),
/// unless the kernel's TCP_USER_TIMEOUT, set to the same bound, ended the
/// connection first ("send failed").
fn stuck_closed(c: &Cluster) -> bool {
    c.node_log(0)
        .lines()
        .any(|l| l.contains("stuck-peer") && l.contains("closing connection"))
}

/// Resident memory of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}: {status}"))
}

/// A frame of the node-to-node RPC: `postcard(head) ++ postcard(body)`.
fn rpc_frame<T: serde::Serialize>(head: Head, body: &T) -> Vec<u8> {
    let mut header = dipc_wire::encode(&head);
    header.extend(dipc_wire::encode(body));
    Frame {
        header: header.into(),
        payload: Default::default(),
    }
    .to_bytes()
}

/// Calls the stuck peer sends; each answer is ~30 KB (`GETALL` of a set
/// of 30,000 semaphores), ~90 MB in all if the node queued them.
const STUCK_CALLS: u64 = 3000;
/// How much the node's resident memory may grow meanwhile: its per-link
/// pause limit (16 MiB) plus the calls in flight, well below the 90 MB.
const RSS_GROWTH_BOUND_KIB: u64 = 48 * 1024;

#[test]
fn a_peer_that_never_reads_leaves_the_node_bounded_and_serving_others() {
    let call_timeout_ms = 6000u64;
    let mut c = match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .node_arg("--call-timeout-ms")
        .node_arg(call_timeout_ms.to_string())
        // Serving the flood keeps the (single-threaded) node busy for a
        // while in a debug build; membership is not what this tests.
        .down_after_ms(30_000)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster did not start: {e:#}"),
    };
    let key = 0x0c4a_0100;
    let mut l0 = check(&c, c.local_client(0));
    let id = match check(
        &c,
        l0.call(&LReq::SemGet {
            key,
            nsems: 30_000,
            flags: IPC_CREAT | 0o600,
        }),
    ) {
        LResp::Id(id) => id,
        other => panic!("semget: {other:?}\n{}", c.logs()),
    };
    let node0 = c.node_process(0).pid();
    let base = rss_kib(node0);

    // An honest handshake as a node, the link setup, a Hello, then calls
    // whose answers it never reads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let secret = std::fs::read(c.secret_file()).expect("read the secret");
    let auth = Auth {
        cluster: c.cluster_name().to_string(),
        secret: Arc::from(secret),
        name: "stuck-peer".into(),
        tls: None,
    };
    let (mut conn, _) = match rt.block_on(Conn::connect(
        &c.node_addr(0),
        &auth,
        Role::Node,
        Duration::from_secs(5),
    )) {
        Ok(x) => x,
        Err(e) => panic!("handshake: {e}\n{}", c.logs()),
    };
    let accepted = rt.block_on(async {
        conn.send(&Frame::msg(&LinkSetup::Open { rdma: false }))
            .await?;
        conn.recv().await
    });
    match accepted {
        Ok(Some(f)) if f.decode::<LinkSetup>().ok() == Some(LinkSetup::Accept { rdma: false }) => {}
        other => panic!("link setup: {other:?}\n{}", c.logs()),
    }
    let (stream, _, _) = conn.into_parts();
    let mut s = stream.into_std().expect("std stream");
    s.set_nonblocking(false).expect("blocking");
    s.set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    s.write_all(&rpc_frame(Head::Notify, &PeerMsg::Hello { node: 4242 }))
        .expect("hello");
    let caller = IpcCaller {
        proc_: ProcId { node: 4242, pid: 1 },
        uid: 0,
        gid: 0,
    };
    let mut sent = 0u64;
    while sent < STUCK_CALLS {
        let call = PeerReq::SemCtl {
            id,
            caller,
            cmd: SemCtlCmd::GetAll,
            now: 0,
        };
        if s.write_all(&rpc_frame(Head::Call(sent + 1), &call))
            .is_err()
        {
            break; // the node stopped reading: pushed back
        }
        sent += 1;
    }

    // The node serves calls until the answers it could not send reach its
    // pause limit, then stops reading the peer; after 3 call timeouts
    // without progress the connection is closed, with the reason in its
    // log. Until then, watch its memory, and have node 1 use the set
    // homed on it: once the node has paused the stuck peer, it answers.
    let mut l1 = check(&c, c.local_client(1));
    let mut peak = base;
    let mut served_while_stuck = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let started = Instant::now();
    loop {
        peak = peak.max(rss_kib(node0));
        if stuck_closed(&c) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node neither paused nor closed the stuck connection\n{}",
            c.logs()
        );
        if served_while_stuck.is_none() {
            let got = l1
                .call(&LReq::SemGet {
                    key,
                    nsems: 0,
                    flags: 0,
                })
                .and_then(|_| {
                    l1.call(&LReq::SemCtl {
                        id,
                        cmd: SemCtlCmd::GetVal { semnum: 7 },
                    })
                });
            if matches!(got, Ok(LResp::Value(0))) && !stuck_closed(&c) {
                served_while_stuck = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let grew = peak.saturating_sub(base);
    eprintln!(
        "stuck peer: {sent} calls written ({} MB of answers asked for); node RSS {base} KiB -> \
         peak {peak} KiB (+{grew} KiB); node 1 served after {served_while_stuck:?}; the node \
         closed the connection after {:?}",
        sent * 30_000 / 1_000_000,
        started.elapsed()
    );
    assert!(
        grew < RSS_GROWTH_BOUND_KIB,
        "the node's memory grew by {grew} KiB behind a peer that never reads\n{}",
        c.logs()
    );
    assert!(
        served_while_stuck.is_some(),
        "node 1 could not use the set while the stuck peer was connected\n{}",
        c.logs()
    );
    // The stuck peer sees the end of the connection.
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the stuck connection stayed open\n{}",
                c.logs()
            ),
        }
    }
}

/// A `probe` of `chaos_worker.c`: commands on its stdin, one answer line
/// each on its stdout.
struct Probe {
    what: String,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Probe {
    fn start(
        prog: &dipc_testkit::Program,
        socket: &std::path::Path,
        what: &str,
        args: &[&str],
    ) -> Probe {
        let mut child = prog
            .command()
            .arg("probe")
            .args(args)
            .env("DIPC_SOCKET", socket)
            .env("DIPC_FALLBACK", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Probe {
            what: what.to_string(),
            child,
            stdin,
            lines,
        }
    }

    /// The next line within `within`; `None` if the program ended first.
    fn line(&mut self, within: Duration) -> Option<String> {
        match self.lines.recv_timeout(within) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            // A hang: the caller's assertion shows it with the logs.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Some(format!("HANG: no answer within {within:?}"))
            }
        }
    }

    /// Send `cmd`; its answer, or `None` if the program died.
    fn ask(&mut self, cmd: &str, within: Duration) -> Option<String> {
        if writeln!(self.stdin, "{cmd}").is_err() {
            return None;
        }
        self.line(within)
    }

    /// Wait (bounded) for the program's end; how it ended.
    fn exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{}: still running after {within:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A referee and node `a` in one namespace, node `b` in the other.
struct Partitioned {
    net: dipc_testkit::NetnsPair,
    dir: tempfile::TempDir,
    procs: Vec<dipc_testkit::Process>,
}

impl Partitioned {
    const CLUSTER: &str = "parted";
    const CALL_TIMEOUT_MS: &str = "1000";

    fn referee_addr(&self) -> String {
        format!("{}:7100", self.net.addr_a())
    }

    fn socket(&self, node: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{node}.sock"))
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("==== {} (pid {}) ====\n{}", p.name(), p.pid(), p.log()))
            .collect()
    }

    fn start(net: dipc_testkit::NetnsPair) -> Partitioned {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"partition-test-secret-0123456789").expect("secret");
        let mut p = Partitioned {
            net,
            dir,
            procs: Vec::new(),
        };
        let bin = env!("CARGO_BIN_EXE_dipc");
        let common = |cmd: &mut std::process::Command| {
            cmd.env("RUST_LOG", "info")
                .arg("--cluster")
                .arg(Self::CLUSTER)
                .arg("--secret-file")
                .arg(&secret);
        };
        let mut referee = dipc_testkit::NetnsPair::command(p.net.a(), bin);
        referee
            .arg("referee")
            .arg("--listen")
            .arg(p.referee_addr())
            .arg("--data-dir")
            .arg(p.dir.path().join("referee"))
            .args(["--heartbeat-ms", "300", "--down-after-ms", "2000"]);
        common(&mut referee);
        let log = p.dir.path().join("referee.log");
        p.procs
            .push(dipc_testkit::Process::spawn("referee", referee, &log).expect("referee"));
        for (node, ns, addr) in [
            ("a", p.net.a().to_string(), p.net.addr_a()),
            ("b", p.net.b().to_string(), p.net.addr_b()),
        ] {
            let mut cmd = dipc_testkit::NetnsPair::command(&ns, bin);
            cmd.arg("node")
                .arg("--referee")
                .arg(p.referee_addr())
                .arg("--listen")
                .arg(format!("{addr}:7201"))
                .arg("--socket")
                .arg(p.socket(node))
                .arg("--name")
                .arg(node)
                .args(["--call-timeout-ms", Self::CALL_TIMEOUT_MS]);
            common(&mut cmd);
            let log = p.dir.path().join(format!("{node}.log"));
            p.procs
                .push(dipc_testkit::Process::spawn(node, cmd, &log).expect("node"));
        }
        p
    }

    /// `dipc status --json` from namespace `a`.
    fn status(&self) -> anyhow::Result<dipc_wire::referee::ClusterStatus> {
        let mut cmd = dipc_testkit::NetnsPair::command(self.net.a(), env!("CARGO_BIN_EXE_dipc"));
        cmd.arg("status")
            .arg("--json")
            .arg("--referee")
            .arg(self.referee_addr())
            .arg("--cluster")
            .arg(Self::CLUSTER)
            .arg("--secret-file")
            .arg(self.dir.path().join("secret"));
        let out = cmd.output()?;
        if !out.status.success() {
            anyhow::bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Wait until node `name` is shown `up` (or down).
    fn wait_member(&self, name: &str, up: bool, within: Duration) {
        let r = dipc_testkit::poll_until(
            &format!("{name} to be {}", if up { "up" } else { "down" }),
            within,
            || {
                Ok(self
                    .status()?
                    .members
                    .iter()
                    .any(|m| m.name == name && m.up == up))
            },
        );
        if let Err(e) = r {
            panic!("{e:#}\n{}", self.logs());
        }
    }
}

/// Run `prog args` on the node at `socket` to its end (bounded); its
/// stdout.
fn run_at(prog: &dipc_testkit::Program, socket: &std::path::Path, args: &[&str]) -> String {
    let mut child = prog
        .command()
        .args(args)
        .env("DIPC_SOCKET", socket)
        .env("DIPC_FALLBACK", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    out
}

#[test]
fn a_partition_gives_bounded_errors_and_the_cluster_recovers_when_the_link_returns() {
    let net = match dipc_testkit::NetnsPair::create("dpc") {
        Ok(n) => n,
        Err(e) => {
            eprintln!(
                "SKIPPED a_partition_gives_bounded_errors_...: network namespaces are not \
                 available here: {e:#}"
            );
            return;
        }
    };
    let p = Partitioned::start(net);
    p.wait_member("a", true, Duration::from_secs(30));
    p.wait_member("b", true, Duration::from_secs(30));
    let prog = match dipc_testkit::compile_c(
        chaos_model::WORKER_C,
        "chaos-worker",
        dipc_testkit::Link::Sysv,
    ) {
        Ok(prog) => prog,
        Err(e) => panic!("{e:#}"),
    };
    let (a, b) = (p.socket("a"), p.socket("b"));
    let (shm, msg, sem) = ("0x0c4a0201", "0x0c4a0202", "0x0c4a0203");
    // 16 "processes" in the layout: 17 pages.
    let size = (17 * 4096).to_string();
    for args in [
        ["mkshm", shm, "16"].as_slice(),
        &["mkmsg", msg],
        &["mksem", sem],
    ] {
        let out = run_at(&prog, &a, args);
        assert!(out.contains("id "), "{args:?}: {out}\n{}", p.logs());
    }
    let probe_args = [shm, size.as_str(), msg, sem];
    let answer = Duration::from_secs(60);
    let mut pb = Probe::start(&prog, &b, "probe on b", &probe_args);
    let mut pa = Probe::start(&prog, &a, "probe on a", &probe_args);
    for (on_b, cmd, want) in [
        (true, "", "ready"),
        (false, "", "ready"),
        (true, "msg", "ok"),
        (true, "sem", "ok"),
        (true, "touch 0", "read 0"),
    ] {
        let probe = if on_b { &mut pb } else { &mut pa };
        let got = if cmd.is_empty() {
            probe.line(answer)
        } else {
            probe.ask(cmd, answer)
        };
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{} {cmd}\n{}",
            probe.what,
            p.logs()
        );
    }

    // Cut the link.
    p.net.cut().expect("link down");
    let cut = Instant::now();
    // b's calls to the homes on a fail (bounded), never hang.
    let mut errors = Vec::new();
    for cmd in ["msg", "sem"] {
        let got = pb.ask(cmd, answer);
        match got.as_deref() {
            Some(l) if l.starts_with("errno ") => errors.push(format!("{cmd}: {l}")),
            other => panic!("{cmd} on b across the cut: {other:?}\n{}", p.logs()),
        }
    }
    // a's side keeps working.
    for (cmd, want) in [("msg", "ok"), ("sem", "ok"), ("write 3", "wrote 4")] {
        assert_eq!(
            pa.ask(cmd, answer).as_deref(),
            Some(want),
            "{cmd} on a during the cut\n{}",
            p.logs()
        );
    }
    // A page b does not hold cannot be had: SIGBUS (bounded), never zeros.
    let got = pb.ask("touch 5", answer);
    assert_eq!(got, None, "b read a page across the cut\n{}", p.logs());
    let st = pb.exit(answer);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        st.signal(),
        Some(libc_sigbus()),
        "probe on b ended with {st}\n{}",
        p.logs()
    );
    p.wait_member("b", false, Duration::from_secs(30));
    let bounded = cut.elapsed();

    // Heal: b rejoins and new operations from b succeed.
    p.net.heal().expect("link up");
    let healed = Instant::now();
    p.wait_member("b", true, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut pb = Probe::start(&prog, &b, "new probe on b", &probe_args);
        let mut results = Vec::new();
        results.push(pb.line(answer));
        for cmd in ["msg", "sem", "touch 3", "touch 6"] {
            results.push(pb.ask(cmd, answer));
        }
        let want = ["ready", "ok", "ok", "read 4", "read 0"].map(|s| Some(s.to_string()));
        if results == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b did not recover after the link returned: {results:?}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "partition: errors on b across the cut ({}), SIGBUS for a page it lacked, b shown down, \
         all within {bounded:?}; b rejoined and worked {:?} after the link returned",
        errors.join(", "),
        healed.elapsed()
    );
}

const fn libc_sigbus() -> i32 {
    7
}
