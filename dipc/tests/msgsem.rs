//! Distributed message queues and semaphore sets, end to end: C programs
//! linked with libsysv, on several nodes (real daemon processes), using a
//! queue or set whose home is one of them.
//!
//! * 10,000 request/reply round trips between two nodes, three message
//!   types, every byte checked;
//! * a receiver blocked on one node is woken by a sender on another;
//!   removal while it waits gives `EIDRM`; `SIGUSR1` (handler without
//!   `SA_RESTART`) gives `EINTR`, and the interrupted receiver takes no
//!   message;
//! * a semaphore as a mutex for 6 processes on 3 nodes around a plain
//!   read-increment-write of a counter in a distributed segment: the
//!   counter is exact;
//! * a barrier of 3 nodes built from semaphores, 1,000 rounds;
//! * `SEM_UNDO` releases a mutex whose holder was `SIGKILL`ed.
//!
//! The programs are `tests/c/msgsem_*.c`; they print one line per event,
//! which the tests read. Every wait is bounded; a failure prints the
//! cluster's logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c};

const COMMON: &str = include_str!("c/msgsem_common.c");
const MSG_C: &str = include_str!("c/msgsem_msg.c");
const SEM_C: &str = include_str!("c/msgsem_sem.c");

/// Bound on any one program.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .heartbeat_ms(300)
        .down_after_ms(3000)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

fn program(c: &Cluster, src: &str, name: &str) -> Program {
    match compile_c(&format!("{COMMON}\n{src}"), name, Link::Sysv) {
        Ok(p) => p,
        Err(e) => panic!("{e:#}\n{}", c.logs()),
    }
}

/// A program running on a node, its stdout read line by line. Killed if
/// still running when dropped.
struct Run<'a> {
    c: &'a Cluster,
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn start<'a>(c: &'a Cluster, node: usize, prog: &Program, args: &[&str]) -> Run<'a> {
    let what = format!("node {node}: {} {}", prog.path().display(), args.join(" "));
    let mut child = c
        .run_on(node, prog)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let (tx, lines) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Run {
        c,
        what,
        child,
        lines,
        seen: Vec::new(),
    }
}

/// Wait for every one of `procs` to exit successfully; each one's lines.
/// The first to fail is reported, not a process waiting for it.
fn finish_all(procs: Vec<Run<'_>>, timeout: Duration) -> Vec<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut running: Vec<Option<Run<'_>>> = procs.into_iter().map(Some).collect();
    let mut out: Vec<Vec<String>> = vec![Vec::new(); running.len()];
    while running.iter().any(Option::is_some) {
        for (slot, lines) in running.iter_mut().zip(out.iter_mut()) {
            let exited = slot
                .as_mut()
                .is_some_and(|p| !matches!(p.child.try_wait(), Ok(None)));
            if (exited || Instant::now() > deadline)
                && let Some(p) = slot.take()
            {
                *lines = p.finish(Duration::ZERO);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

impl Run<'_> {
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        panic!(
            "{}: {why}\noutput so far: {:?}\n{}",
            self.what,
            self.seen,
            self.c.logs()
        );
    }

    /// The next line, within `timeout`.
    fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => {
                self.seen.push(l.clone());
                if l.starts_with("FAIL") {
                    self.fail("the program failed");
                }
                l
            }
            Err(_) => self.fail(&format!("no output within {timeout:?}")),
        }
    }

    /// Wait for the line `want`.
    fn expect(&mut self, want: &str, timeout: Duration) {
        let l = self.line(timeout);
        if l != want {
            self.fail(&format!("expected {want:?}, got {l:?}"));
        }
    }

    /// Wait for a successful exit; every line it printed.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
                        self.seen.push(l);
                    }
                    if !st.success() || self.seen.iter().any(|l| l.starts_with("FAIL")) {
                        self.fail(&format!("exited with {st}"));
                    }
                    return std::mem::take(&mut self.seen);
                }
                Ok(None) if Instant::now() < deadline => {
                    while let Ok(l) = self.lines.try_recv() {
                        self.seen.push(l);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => self.fail(&format!("still running after {timeout:?}")),
                Err(e) => self.fail(&format!("wait: {e}")),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(
            matches!(st, Ok(s) if s.success()),
            "kill {sig} {pid}: {st:?}"
        );
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a program to its end; its output.
fn run(c: &Cluster, node: usize, prog: &Program, args: &[&str]) -> Vec<String> {
    start(c, node, prog, args).finish(RUN_TIMEOUT)
}

/// Run a program that prints one line; that line.
fn run1(c: &Cluster, node: usize, prog: &Program, args: &[&str]) -> String {
    let out = run(c, node, prog, args);
    match out.as_slice() {
        [l] => l.clone(),
        _ => panic!("expected one line, got {out:?}\n{}", c.logs()),
    }
}

/// Wait until semaphore 0 of `sem` is `want` (exit undo runs when the
/// node sees the process's connection close, just after its exit).
fn wait_for_value(c: &Cluster, node: usize, prog: &Program, sem: &str, want: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = run1(c, node, prog, &["getval", sem, "0"]);
        if v == format!("val {want}") {
            return;
        }
        assert!(Instant::now() < deadline, "still {v}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Time for a waiting operation to reach its home and park there.
const SETTLE: Duration = Duration::from_millis(400);

/// `n` divided by `DIPC_TEST_SCALE` (default 1): the soft-RoCE VM
/// (`scripts/vm-tests.sh`) runs these tests under CPU emulation with
/// smaller counts.
fn scaled(n: u64) -> u64 {
    let div = std::env::var("DIPC_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    (n / div).max(1)
}

#[test]
fn ping_pong_of_10000_messages_between_two_nodes() {
    let c = cluster(2);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5001";
    // The pong side is the same program, unmodified, under LD_PRELOAD.
    let preloaded = match compile_c(&format!("{COMMON}\n{MSG_C}"), "msgsem-msg", Link::Plain) {
        Ok(p) => p,
        Err(e) => panic!("{e:#}"),
    };
    let created = run1(&c, 0, &prog, &["create", key]);
    let id: i32 = created
        .strip_prefix("id ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{created}"));
    assert!(dipc_wire::is_dipc_id(id), "{id:#x} is not distributed");

    let n = scaled(10_000).to_string();
    let n = n.as_str();
    let t0 = Instant::now();
    // The queue's home is node 0: the pong side is remote, the ping side
    // local, so both paths carry every message.
    let pong = start(&c, 1, &preloaded, &["pong", key, n]);
    let ping = start(&c, 0, &prog, &["ping", key, n]);
    assert_eq!(ping.finish(RUN_TIMEOUT), [format!("done {n}")]);
    assert_eq!(pong.finish(RUN_TIMEOUT), [format!("done {n}")]);
    eprintln!("{n} round trips in {:?}", t0.elapsed());

    // Nothing left behind.
    assert_eq!(
        run1(&c, 1, &prog, &["stat", key]),
        "qnum 0 qbytes 16384",
        "{}",
        c.logs()
    ); // IPC_INFO on a distributed id: the kernel's default limits.
    assert_eq!(
        run1(&c, 1, &prog, &["info", key]),
        "msgmax 8192 msgmnb 16384 msgmni 32000"
    );
}

/// Nodes started with a raised `msgmax` and `msgmnb` (`--msgmax 65536`,
/// `DIPC_MSGMNB=131072`, as `kernel.msgmax`/`msgmnb` raised): 64 KiB
/// requests and replies cross between them whole and checked; one byte
/// more is `EINVAL` from either node and queues nothing; `IPC_STAT` and
/// `IPC_INFO` report the raised limits.
#[test]
fn messages_of_64_kib_cross_nodes_under_a_raised_msgmax() {
    let c = match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .heartbeat_ms(300)
        .down_after_ms(3000)
        .node_arg("--msgmax")
        .node_arg("65536")
        .node_env("DIPC_MSGMNB", "131072")
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster did not start: {e:#}"),
    };
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5010";
    run1(&c, 0, &prog, &["create", key]);
    let n = scaled(200).to_string();
    let pong = start(&c, 1, &prog, &["bigpong", key, "65536", &n]);
    let ping = start(&c, 0, &prog, &["bigping", key, "65536", &n]);
    assert_eq!(ping.finish(RUN_TIMEOUT), [format!("done {n}")]);
    assert_eq!(pong.finish(RUN_TIMEOUT), [format!("done {n}")]);
    for node in [0, 1] {
        assert_eq!(
            run1(&c, node, &prog, &["sendsize", key, "65537"]),
            "errno EINVAL",
            "node {node}\n{}",
            c.logs()
        );
    }
    assert_eq!(run1(&c, 1, &prog, &["sendsize", key, "65536"]), "sent");
    assert_eq!(run1(&c, 1, &prog, &["stat", key]), "qnum 1 qbytes 131072");
    assert_eq!(
        run1(&c, 1, &prog, &["info", key]),
        "msgmax 65536 msgmnb 131072 msgmni 32000"
    );
}

/// libsysv hands the caller's buffer to the kernel, which reads a
/// `msgsnd` text from it and writes a `msgrcv` text into it: a buffer that
/// is bad halfway gets the kernel queue's `EFAULT`s, sends nothing, loses
/// the message a failed `msgrcv` took (as the kernel does), and leaves the
/// connection working; on a direct connection (node 0, queue homed on
/// node 1) and through the home's own node.
#[test]
fn a_bad_buffer_halfway_is_efault_as_with_the_kernel() {
    let c = cluster(2);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5011";
    run1(&c, 1, &prog, &["create", key]);
    for node in [0, 1] {
        assert_eq!(
            run1(&c, node, &prog, &["badbuf", key]),
            "badbuf ok",
            "node {node}"
        );
    }
}

#[test]
fn a_receiver_blocked_on_one_node_is_woken_by_a_sender_on_another() {
    let c = cluster(3);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5002";
    run1(&c, 1, &prog, &["create", key]);

    let mut recv = start(&c, 0, &prog, &["recv", key, "5"]);
    recv.expect("waiting", RUN_TIMEOUT);
    std::thread::sleep(SETTLE);
    // Another type does not wake it.
    assert_eq!(run1(&c, 2, &prog, &["send", key, "4", "other"]), "sent");
    assert_eq!(run1(&c, 2, &prog, &["send", key, "5", "hello"]), "sent");
    assert_eq!(
        recv.finish(RUN_TIMEOUT),
        ["waiting", "got 5 hello", "signals 0"]
    );
    assert_eq!(run1(&c, 1, &prog, &["stat", key]), "qnum 1 qbytes 16384");
}

#[test]
fn removal_while_blocked_gives_eidrm_on_every_node() {
    let c = cluster(3);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5003";
    run1(&c, 1, &prog, &["create", key]);

    // One waiter on a remote node, one at the home.
    let mut remote = start(&c, 0, &prog, &["recv", key, "0"]);
    let mut local = start(&c, 1, &prog, &["recv", key, "0"]);
    remote.expect("waiting", RUN_TIMEOUT);
    local.expect("waiting", RUN_TIMEOUT);
    // A receiver that has not reached the home when the queue goes would
    // get EINVAL (no such queue) instead: leave a wide margin.
    std::thread::sleep(3 * SETTLE);
    assert_eq!(run1(&c, 2, &prog, &["rmid", key]), "removed");
    let want = ["waiting", "errno EIDRM", "signals 0"];
    assert_eq!(remote.finish(RUN_TIMEOUT), want);
    assert_eq!(local.finish(RUN_TIMEOUT), want);
    // The key is free again.
    let again = run1(&c, 2, &prog, &["create", key]);
    assert!(again.starts_with("id "), "{again}");
}

#[test]
fn a_signal_interrupts_a_blocked_receiver_with_eintr() {
    let c = cluster(2);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5004";
    run1(&c, 1, &prog, &["create", key]);

    for node in [0, 1] {
        let mut recv = start(&c, node, &prog, &["recv", key, "7"]);
        recv.expect("waiting", RUN_TIMEOUT);
        std::thread::sleep(SETTLE);
        // A signal that lands before msgrcv waits is not an interruption
        // of it: send until the program reports.
        let deadline = Instant::now() + RUN_TIMEOUT;
        let out = loop {
            recv.signal("-USR1");
            if let Ok(l) = recv.lines.recv_timeout(Duration::from_millis(300)) {
                recv.seen.push(l);
                break recv.finish(RUN_TIMEOUT);
            }
            assert!(Instant::now() < deadline, "no EINTR\n{}", c.logs());
        };
        assert_eq!(out[..2], ["waiting", "errno EINTR"], "node {node}: {out:?}");

        // The interrupted receiver is gone from the queue: a message sent
        // now goes to the next receiver.
        let mut next = start(&c, 1 - node, &prog, &["recv", key, "7"]);
        next.expect("waiting", RUN_TIMEOUT);
        std::thread::sleep(SETTLE);
        assert_eq!(run1(&c, 0, &prog, &["send", key, "7", "after"]), "sent");
        assert_eq!(
            next.finish(RUN_TIMEOUT),
            ["waiting", "got 7 after", "signals 0"]
        );
    }
}

#[test]
fn a_semaphore_mutex_makes_a_plain_counter_exact_for_6_processes_on_3_nodes() {
    let c = cluster(3);
    let prog = program(&c, SEM_C, "msgsem-sem");
    let (sem, shm) = ("0x0d1c5101", "0x0d1c5102");
    let created = run1(&c, 0, &prog, &["create", sem, "1", "1"]);
    assert!(created.starts_with("id "), "{created}");
    // Create the counter's segment before the workers race for it.
    assert_eq!(run1(&c, 0, &prog, &["read", shm]), "counter 0");

    // Each worker stops early after 20 s (an oversubscribed machine) and
    // says how many increments it made; the counter must be their sum.
    let iters = scaled(2000);
    let t0 = Instant::now();
    let iters_s = iters.to_string();
    let workers: Vec<Run> = (0..6)
        .map(|i| start(&c, i % 3, &prog, &["mutex", sem, shm, &iters_s, "20"]))
        .collect();
    let mut total = 0;
    for w in workers {
        let out = w.finish(RUN_TIMEOUT);
        let made = match &out[..] {
            [l] => l.strip_prefix("done ").and_then(|n| n.parse::<u64>().ok()),
            _ => None,
        };
        match made {
            Some(n) if n > 0 && n <= iters => total += n,
            _ => panic!("expected `done <1..={iters}>`, got {out:?}"),
        }
    }
    eprintln!(
        "{total} critical sections of 6 processes in {:?}",
        t0.elapsed()
    );
    assert_eq!(
        run1(&c, 1, &prog, &["read", shm]),
        format!("counter {total}")
    );
    // Everyone released what it took.
    assert_eq!(run1(&c, 2, &prog, &["getval", sem, "0"]), "val 1");
}

/// Processes 0..3, one per node of `c`, pass `rounds` barriers built from
/// semaphore set `sem` (homed on node 2), each with `extra` arguments.
fn barrier_of_3(c: &Cluster, prog: &Program, sem: &str, rounds: &str, extra: &[&str]) {
    // Semaphores 0..2: tokens of each process; 3: arrivals.
    run1(c, 2, prog, &["create", sem, "4", "0"]);
    let t0 = Instant::now();
    let procs: Vec<Run> = (0..3)
        .map(|i| {
            let me = i.to_string();
            let args = [&["barrier", sem, &me, "3", rounds], extra].concat();
            start(c, i, prog, &args)
        })
        .collect();
    for lines in finish_all(procs, RUN_TIMEOUT) {
        assert_eq!(lines, [format!("done {rounds}")]);
    }
    eprintln!("{rounds} barrier rounds on 3 nodes in {:?}", t0.elapsed());
}

#[test]
fn a_barrier_of_3_nodes_built_from_semaphores_runs_1000_rounds() {
    let c = cluster(3);
    let prog = program(&c, SEM_C, "msgsem-sem");
    let sem = "0x0d1c5201";
    let rounds = "1000";
    barrier_of_3(&c, &prog, sem, rounds, &[]);
    assert_eq!(run1(&c, 0, &prog, &["getval", sem, "3"]), "val 3000");
    assert_eq!(
        run1(&c, 1, &prog, &["info", sem]),
        "semmsl 32000 semopm 500 semvmx 32767"
    );
}

/// libsysv's signal (`SIGRTMAX - 1`) means "the daemon died": it must never
/// come while the daemon lives. It once did, now and then, for an answer
/// already read (see libsysv's `state` module), and interrupted the next
/// wait: a `semop` of this barrier failed with `EINTR`. The barrier's
/// processes block the signal and check that it is not pending at the end.
#[test]
fn libsysv_raises_no_signal_while_the_daemon_lives() {
    let c = cluster(3);
    let prog = program(&c, SEM_C, "msgsem-sem");
    barrier_of_3(&c, &prog, "0x0d1c5202", "1000", &["quiet"]);
}

#[test]
fn sem_undo_releases_the_mutex_of_a_killed_process() {
    let c = cluster(3);
    let prog = program(&c, SEM_C, "msgsem-sem");
    let sem = "0x0d1c5301";
    run1(&c, 0, &prog, &["create", sem, "1", "1"]);

    let mut holder = start(&c, 1, &prog, &["hold", sem]);
    holder.expect("holding", RUN_TIMEOUT);
    assert_eq!(run1(&c, 2, &prog, &["trytake", sem]), "errno EAGAIN");
    // A waiter on another node, then the holder dies without releasing.
    let mut waiter = start(&c, 2, &prog, &["take", sem, "60"]);
    std::thread::sleep(SETTLE);
    holder.signal("-KILL");
    waiter.expect("took", RUN_TIMEOUT);
    assert_eq!(waiter.finish(RUN_TIMEOUT), ["took"]);
    // The waiter's own SEM_UNDO gave it back when it exited.
    wait_for_value(&c, 0, &prog, sem, 1);
    // And semtimedop times out at the home with EAGAIN.
    let mut holder = start(&c, 1, &prog, &["hold", sem]);
    holder.expect("holding", RUN_TIMEOUT);
    assert_eq!(run1(&c, 2, &prog, &["take", sem, "1"]), "errno EAGAIN");
}

#[test]
fn receivers_that_die_while_blocked_take_no_message() {
    let mut c = cluster(3);
    let prog = program(&c, MSG_C, "msgsem-msg");
    let key = "0x0d1c5005";
    run1(&c, 1, &prog, &["create", key]);

    // A receiver killed while it waits: its node cancels the operation.
    let mut recv = start(&c, 2, &prog, &["recv", key, "3"]);
    recv.expect("waiting", RUN_TIMEOUT);
    std::thread::sleep(SETTLE);
    recv.signal("-KILL");
    drop(recv);
    std::thread::sleep(SETTLE);
    assert_eq!(run1(&c, 2, &prog, &["send", key, "3", "one"]), "sent");
    assert_eq!(run1(&c, 1, &prog, &["stat", key]), "qnum 1 qbytes 16384");

    // A receiver whose whole node dies: the home cancels what came on
    // the dead node's link.
    // (A plain child: a `Run` borrows the cluster, which killing a node
    // needs to change.)
    let mut recv = c
        .run_on(0, &prog)
        .args(["recv", key, "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("recv on node 0: {e}"));
    let mut out = BufReader::new(recv.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    assert_eq!(first.trim(), "waiting", "{}", c.logs());
    std::thread::sleep(SETTLE);
    if let Err(e) = c.kill_node(0) {
        panic!("killing node 0: {e:#}");
    }
    // Its daemon gone, the receiver fails (and is reaped either way).
    let _ = recv.kill();
    let _ = recv.wait();
    std::thread::sleep(SETTLE);
    assert_eq!(run1(&c, 2, &prog, &["send", key, "4", "two"]), "sent");
    assert_eq!(run1(&c, 1, &prog, &["stat", key]), "qnum 2 qbytes 16384");
}

#[test]
fn sem_undo_releases_the_mutex_of_a_process_whose_node_died() {
    let mut c = cluster(3);
    let prog = program(&c, SEM_C, "msgsem-sem");
    let sem = "0x0d1c5302";
    run1(&c, 0, &prog, &["create", sem, "1", "1"]);

    // The holder runs on node 1 (a plain child: killing a node needs the
    // cluster mutably).
    let mut holder = c
        .run_on(1, &prog)
        .args(["hold", sem])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("hold on node 1: {e}"));
    let mut out = BufReader::new(holder.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    assert_eq!(first.trim(), "holding", "{}", c.logs());
    assert_eq!(run1(&c, 2, &prog, &["trytake", sem]), "errno EAGAIN");

    // Node 1 dies with its process; once the referee declares it down,
    // the set's home undoes the holder's SEM_UNDO.
    if let Err(e) = c.kill_node(1) {
        panic!("killing node 1: {e:#}");
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run1(&c, 2, &prog, &["take", sem, "60"]), "took");
}

#[test]
fn a_forked_child_waits_for_its_parents_mutex_and_its_exit_undoes_its_own() {
    let c = cluster(2);
    let prog = program(&c, SEM_C, "msgsem-sem");
    let sem = "0x0d1c5303";
    run1(&c, 1, &prog, &["create", sem, "1", "1"]);
    assert_eq!(
        run(&c, 0, &prog, &["fork", sem]),
        ["child waits", "child took", "parent took"]
    );
    // The parent's exit gave back what it took last.
    wait_for_value(&c, 1, &prog, sem, 1);
}
