//! Distributed shared memory end to end: C programs on different nodes.
//!
//! Each test starts a referee and three node daemons (dipc-testkit), then
//! runs C programs from `tests/c/` "on" chosen nodes (`DIPC_SOCKET`), so
//! the processes that share a segment are served by different daemons and
//! every byte they share crosses the coherence protocol. The programs are
//! ordinary System V code: built with `IPC_DIPC` and linked `-lsysv`
//! through pkg-config, or built without anything of dipc's and run under
//! `LD_PRELOAD=libsysv.so` with `DIPC_KEYS=all`.
//!
//! What is checked: a 64 MiB pattern crosses nodes intact; the
//! message-passing and store-buffering litmus tests never show a non-SC
//! outcome; 6 processes on 3 nodes lose none of 120,000 atomic
//! increments; plain increments of two words of one page lose nothing;
//! without a daemon `IPC_DIPC` programs run locally (or fail on request);
//! `IPC_RMID`, `IPC_STAT`'s attach count and `fork` behave as the kernel's
//! across nodes.
//!
//! Programs synchronise through the segment itself (spinning on atomics
//! with `sched_yield`) or through their stdin and stdout, driven here
//! (`shmtool` answers one line per command). Every wait is bounded twice:
//! here (a line, an exit) and in the program (`alarm`, bounded spins), so
//! a broken daemon fails a test with the processes' output and every
//! daemon's log, never hangs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header, libsysv};
use dipc_wire::is_dipc_id;

const COMMON: &str = include_str!("c/common.h");
const PATTERN: &str = include_str!("c/pattern.c");
const COUNTER: &str = include_str!("c/counter.c");
const FALSE_SHARE: &str = include_str!("c/false_share.c");
const MP: &str = include_str!("c/mp.c");
const SB: &str = include_str!("c/sb.c");
const SHMTOOL: &str = include_str!("c/shmtool.c");
const NO_DAEMON: &str = include_str!("c/no_daemon.c");

/// Bound on one answer line of a program.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a program's run (longer than the programs' own spin limits,
/// shorter than their `alarm`, so their diagnostics come first).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const MIB: u64 = 1 << 20;

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

fn cluster(nodes: usize) -> Cluster {
    match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(nodes)
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster of {nodes} nodes did not start: {e:#}"),
    }
}

/// How a test program is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// With `IPC_DIPC` from dipc.h, linked `-lsysv` (pkg-config).
    Dipc,
    /// Unmodified: no dipc.h, no `IPC_DIPC`, not linked with libsysv; run
    /// under `LD_PRELOAD` with `DIPC_KEYS=all`.
    Unmodified,
}

/// Compile `tests/c/<name>.c` (after `common.h`) as `build` says.
fn program(name: &str, src: &str, build: Build) -> Program {
    let (prelude, link) = match build {
        Build::Dipc => ("#define USE_DIPC 1\n", Link::Sysv),
        Build::Unmodified => ("", Link::Plain),
    };
    compile_c_with_header(prelude, ("common.h", COMMON), name, src, link)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A running C program with its stdin and stdout piped to the test.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line received so far.
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Arc<AtomicBool>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout was piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_done = Arc::new(AtomicBool::new(false));
        let mut err = child.stderr.take().expect("stderr was piped");
        let (buf, done) = (stderr.clone(), stderr_done.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
            done.store(true, Ordering::Release);
        });
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_done,
            status: None,
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the program said so far, for failure messages.
    fn describe(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        let state = match self.status {
            Some(s) => format!("exited: {s}"),
            None => "running".to_string(),
        };
        format!(
            "{} (pid {}, {state})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            self.child.id(),
            self.seen.join("\n"),
            self.stderr()
        )
    }

    /// The next line the program prints.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no line within {LINE_TIMEOUT:?} from {}", self.describe())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Give the exit status a moment to be collectable.
                let _ = self.wait_exit(Duration::from_secs(2));
                panic!("stdout closed early: {}", self.describe())
            }
        }
    }

    /// Send one command line and return the one-line answer.
    fn cmd(&mut self, command: &str) -> String {
        let sent = self.stdin.as_mut().map(|s| {
            s.write_all(format!("{command}\n").as_bytes())
                .and(s.flush())
        });
        if !matches!(sent, Some(Ok(()))) {
            panic!("cannot send {command:?} to {}", self.describe());
        }
        self.line()
    }

    /// Send `command` and check its answer.
    fn expect(&mut self, command: &str, want: &str) {
        let got = self.cmd(command);
        if got != want {
            panic!(
                "{command:?} answered {got:?}, expected {want:?}: {}",
                self.describe()
            );
        }
    }

    /// The id printed on an `id <id>` line (checked to be a dipc id).
    fn id_line(&mut self) -> i32 {
        let line = self.line();
        self.parse_id(&line)
    }

    fn parse_id(&mut self, line: &str) -> i32 {
        let id = line
            .strip_prefix("id ")
            .and_then(|s| s.parse::<i32>().ok())
            .unwrap_or_else(|| panic!("expected `id <id>`, got {line:?}: {}", self.describe()));
        assert!(
            is_dipc_id(id),
            "id {id:#x} is not a distributed id (did the call reach the kernel?): {}",
            self.describe()
        );
        id
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status
    }

    /// Close stdin, wait (bounded) for the exit, and return the status
    /// with the stdout lines not consumed yet and the whole stderr.
    fn finish(&mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.stdin.take());
        let Some(status) = self.wait_exit(RUN_TIMEOUT) else {
            let _ = self.child.kill();
            let _ = self.wait_exit(Duration::from_secs(5));
            panic!("did not finish within {RUN_TIMEOUT:?}: {}", self.describe());
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l.clone());
            rest.push(l);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        (status, rest, self.stderr())
    }

    /// [`Proc::finish`], asserting a successful exit; the remaining lines.
    fn success(&mut self) -> Vec<String> {
        let (status, rest, _) = self.finish();
        assert!(status.success(), "failed: {}", self.describe());
        rest
    }

    /// `SIGKILL` and reap (bounded).
    fn kill(&mut self) {
        let _ = self.child.kill();
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            panic!("survived SIGKILL: {}", self.describe());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.wait_exit(Duration::from_secs(5));
        }
    }
}

/// Start `prog args` on node `node` (`DIPC_SOCKET`, `DIPC_FALLBACK=error`,
/// and for an unmodified program `LD_PRELOAD` and `DIPC_KEYS=all`).
fn start(c: &Cluster, node: usize, prog: &Program, args: &[String]) -> Proc {
    let mut cmd = c.run_on(node, prog);
    cmd.args(args);
    if prog.link() == Link::Plain {
        cmd.env("DIPC_KEYS", "all");
    }
    let stem = prog
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('-').next().unwrap_or_default();
    let mut name = stem.to_string();
    for a in args {
        name.push(' ');
        name.push_str(a);
    }
    Proc::spawn(&format!("{name} on node {node}"), cmd)
}

fn args(a: &[&dyn std::fmt::Display]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// `shmtool` on `node`.
fn tool(c: &Cluster, node: usize, prog: &Program) -> Proc {
    start(c, node, prog, &[])
}

/// Assert that the last line of a finished program is `want`.
fn assert_last(p: &mut Proc, rest: &[String], want: &str) {
    if rest.last().map(String::as_str) != Some(want) {
        panic!("expected a last line {want:?}: {}", p.describe());
    }
}

/// Parse "<word> <n> <n>..." into the numbers.
fn numbers(p: &mut Proc, line: Option<&String>, word: &str) -> Vec<u64> {
    let parsed = line.and_then(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(word)).then_some(())?;
        it.map(|n| n.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()
    });
    parsed.unwrap_or_else(|| panic!("expected `{word} <numbers>`: {}", p.describe()))
}

/// Writer on node 0 creates and fills `size` bytes, exits; a reader on
/// node 1 verifies every byte, then removes the segment.
fn pattern_across_nodes(c: &Cluster, prog: &Program, key: i32, size: u64) {
    let seed = 0x5eed_u64 ^ size;
    let mut w = start(c, 0, prog, &args(&[&"write", &key, &size, &seed]));
    let wid = w.id_line();
    let rest = w.success();
    assert_last(&mut w, &rest, "written");

    let mut r = start(c, 1, prog, &args(&[&"read", &key, &size, &seed]));
    let rid = r.id_line();
    assert_eq!(rid, wid, "the reader found another segment");
    let rest = r.success();
    assert_last(&mut r, &rest, &format!("verified {size}"));
}

/// How long the contention loops below may run before each process stops
/// early and reports how many increments it made: on an oversubscribed
/// machine a page may move on every increment, and what the tests check
/// (no lost increment, under real contention) needs no fixed count.
const WORK_SECS: u64 = 20;

/// `nprocs` processes (round robin over the nodes) each add up to `iters`
/// to one counter, yielding the CPU after every increment so that they
/// really interleave; every one of them must see exactly the sum of the
/// increments all of them report.
fn counter_across_nodes(c: &Cluster, prog: &Program, key: i32, nprocs: usize, iters: u64) {
    let mut procs: Vec<Proc> = (0..nprocs)
        .map(|i| {
            start(
                c,
                i % c.node_count(),
                prog,
                &args(&[&key, &nprocs, &iters, &1, &WORK_SECS]),
            )
        })
        .collect();
    let ids: Vec<i32> = procs.iter_mut().map(Proc::id_line).collect();
    assert!(ids.iter().all(|&id| id == ids[0]), "ids differ: {ids:?}");
    let rests: Vec<Vec<String>> = procs.iter_mut().map(Proc::success).collect();
    let (mut interleaved, mut total) = (0, 0);
    for (p, rest) in procs.iter_mut().zip(&rests) {
        // The first increment of each process counts as one.
        interleaved += one_number(p, rest.first(), "interleaved").saturating_sub(1);
        let did = one_number(p, rest.get(1), "did");
        assert!(did > 0 && did <= iters, "did {did}: {}", p.describe());
        total += did;
    }
    for (p, rest) in procs.iter_mut().zip(&rests) {
        assert_last(p, rest, &format!("counter {total}"));
    }
    // Not a property of dipc but of the test: without contention it
    // would prove nothing about coherence.
    assert!(
        interleaved > 0,
        "the processes never interleaved their increments"
    );
}

/// Parse "<word> <n>" into the number.
fn one_number(p: &mut Proc, line: Option<&String>, word: &str) -> u64 {
    match numbers(p, line, word)[..] {
        [n] => n,
        _ => panic!("expected `{word} <number>`: {}", p.describe()),
    }
}

#[test]
fn pattern_of_64_mib_written_on_one_node_is_read_on_another() {
    let c = cluster(3);
    let prog = program("pattern", PATTERN, Build::Dipc);
    pattern_across_nodes(&c, &prog, 0x5d10_0001, scaled(64) * MIB);
}

#[test]
fn message_passing_litmus_never_sees_stale_data() {
    let c = cluster(3);
    let prog = program("mp", MP, Build::Dipc);
    let rounds = scaled(200);
    for (layout, key) in [("split", 0x5d10_0101), ("same", 0x5d10_0102)] {
        let a = |role: &'static str| args(&[&role, &key, &rounds, &layout]);
        let mut w = start(&c, 0, &prog, &a("writer"));
        w.id_line();
        let mut r = start(&c, 1, &prog, &a("reader"));
        r.id_line();
        for p in [&mut r, &mut w] {
            let rest = p.success();
            assert_last(p, &rest, &format!("rounds {rounds} stale 0"));
        }
    }
}

#[test]
fn store_buffering_litmus_never_shows_both_zero() {
    let rounds = scaled(300);
    let c = cluster(3);
    let prog = program("sb", SB, Build::Dipc);
    let key = 0x5d10_0201;
    let mut p0 = start(&c, 0, &prog, &args(&[&key, &0, &rounds]));
    let id = p0.id_line();
    let mut p1 = start(&c, 1, &prog, &args(&[&key, &1, &rounds]));
    assert_eq!(p1.id_line(), id);
    let mut seen = Vec::new();
    for p in [&mut p0, &mut p1] {
        let rest = p.success();
        let outcomes = numbers(p, rest.last(), "outcomes");
        assert_eq!(outcomes.len(), 4, "{}", p.describe());
        assert_eq!(
            outcomes[0],
            0,
            "r1 == 0 && r2 == 0 observed: not sequentially consistent: {}",
            p.describe()
        );
        assert_eq!(outcomes.iter().sum::<u64>(), rounds, "{}", p.describe());
        seen.push(outcomes);
    }
    assert_eq!(seen[0], seen[1], "the two processes disagree on outcomes");
}

#[test]
fn atomic_counter_of_six_processes_on_three_nodes_loses_nothing() {
    let c = cluster(3);
    let prog = program("counter", COUNTER, Build::Dipc);
    counter_across_nodes(&c, &prog, 0x5d10_0301, 6, scaled(20_000));
}

#[test]
fn false_sharing_of_one_page_loses_no_plain_increment() {
    const ITERS: u64 = 20_000;
    let c = cluster(3);
    let prog = program("false_share", FALSE_SHARE, Build::Dipc);
    let key = 0x5d10_0401;
    let mut procs: Vec<Proc> = (0..2)
        .map(|which| start(&c, which, &prog, &args(&[&key, &which, &ITERS, &WORK_SECS])))
        .collect();
    for p in &mut procs {
        p.id_line();
    }
    let rests: Vec<Vec<String>> = procs.iter_mut().map(Proc::success).collect();
    let (mut moves, mut did) = (0, Vec::new());
    for (p, rest) in procs.iter_mut().zip(&rests) {
        moves += one_number(p, rest.first(), "moves");
        let n = one_number(p, rest.get(1), "did");
        assert!(n > 0 && n <= ITERS, "did {n}: {}", p.describe());
        did.push(n);
    }
    for (p, rest) in procs.iter_mut().zip(&rests) {
        assert_last(p, rest, &format!("words {} {}", did[0], did[1]));
    }
    // Not a property of dipc but of the test: the loops must overlap.
    assert!(moves > 0, "the two loops never overlapped");
}

#[test]
fn unmodified_programs_run_under_ld_preload_with_dipc_keys_all() {
    let c = cluster(3);
    let pattern = program("pattern", PATTERN, Build::Unmodified);
    let counter = program("counter", COUNTER, Build::Unmodified);
    assert_eq!(pattern.link(), Link::Plain);
    // No IPC_DIPC in the source the compiler saw: DIPC_KEYS=all routes it.
    pattern_across_nodes(&c, &pattern, 0x5d10_0501, 64 * MIB);
    counter_across_nodes(&c, &counter, 0x5d10_0502, 6, 20_000);
}

#[test]
fn without_a_daemon_ipc_dipc_works_locally_or_fails_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("no-daemon.sock");
    let lib = libsysv().unwrap_or_else(|e| panic!("{e:#}"));
    // The program uses IPC_DIPC; linked -lsysv, and plain under LD_PRELOAD.
    let linked = program("no_daemon", NO_DAEMON, Build::Dipc);
    let preloaded = compile_c_with_header(
        "#define USE_DIPC 1\n",
        ("common.h", COMMON),
        "no_daemon",
        NO_DAEMON,
        Link::Plain,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    for prog in [&linked, &preloaded] {
        let run = |mode: &str, fallback: Option<&str>| {
            let mut cmd = prog.command();
            cmd.arg(mode).env("DIPC_SOCKET", &absent);
            if let Some(f) = fallback {
                cmd.env("DIPC_FALLBACK", f);
            }
            if prog.link() == Link::Plain {
                cmd.env("LD_PRELOAD", &lib);
            }
            let mut p = Proc::spawn(&format!("no_daemon {mode} ({:?})", prog.link()), cmd);
            let (status, rest, stderr) = p.finish();
            assert!(status.success(), "{}", p.describe());
            assert_last(&mut p, &rest, "ok");
            (stderr, p)
        };

        let (stderr, mut p) = run("local", None);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one warning line expected: {}",
            p.describe()
        );
        assert!(
            lines[0].contains(&*absent.to_string_lossy()),
            "the warning does not name the socket: {}",
            lines[0]
        );

        let (stderr, mut p) = run("error", Some("error"));
        assert!(stderr.is_empty(), "no warning expected: {}", p.describe());
    }
}

#[test]
fn rmid_while_attached_elsewhere_frees_the_key_and_keeps_the_segment() {
    let c = cluster(3);
    let prog = program("shmtool", SHMTOOL, Build::Dipc);
    let key = 0x5d10_0601;
    let mut a = tool(&c, 0, &prog);
    let line = a.cmd(&format!("get {key} 8192 excl"));
    let old = a.parse_id(&line);

    let mut b = tool(&c, 1, &prog);
    b.expect(&format!("get {key} 0"), &format!("id {old}"));
    b.expect(&format!("at {old}"), "attached 8192");
    b.expect("fill 1", "filled");

    // Removed on node 0 while node 1 is attached: the key is free at once.
    a.expect(&format!("rm {old}"), "removed");
    let line = a.cmd(&format!("get {key} 8192 excl"));
    let new = a.parse_id(&line);
    assert_ne!(new, old, "the new segment reuses the removed one's id");
    a.expect(&format!("at {new}"), "attached 8192");
    a.expect("fill 2", "filled");
    a.expect(
        &format!("stat {old}"),
        "stat nattch 1 dest 1 key 0 size 8192",
    );

    // The old segment still works for the process attached to it.
    b.expect("check 1", "good");
    b.expect("fill 3", "filled");
    b.expect("check 3", "good");
    b.expect(
        &format!("stat {old}"),
        "stat nattch 1 dest 1 key 0 size 8192",
    );
    b.expect("dt", "detached");

    // Its last detach destroyed it: gone from every node.
    for (p, node) in [(&mut b, 1), (&mut a, 0)] {
        let got = p.cmd(&format!("stat {old}"));
        assert!(
            got == "err EINVAL" || got == "err EIDRM",
            "IPC_STAT of the destroyed id on node {node}: {got}: {}",
            p.describe()
        );
    }
    let got = b.cmd(&format!("at {old}"));
    assert!(
        got == "err EINVAL" || got == "err EIDRM",
        "shmat of the destroyed id: {got}: {}",
        b.describe()
    );
    // The key names the new segment everywhere.
    let mut d = tool(&c, 2, &prog);
    d.expect(&format!("get {key} 0"), &format!("id {new}"));
    d.expect(&format!("at {new}"), "attached 8192");
    d.expect("check 2", "good");
    d.expect(
        &format!("stat {new}"),
        &format!("stat nattch 2 dest 0 key {key} size 8192"),
    );
    for p in [&mut a, &mut b, &mut d] {
        p.expect("exit", "bye");
        p.success();
    }
}

/// Ask `p` for `IPC_STAT` of `id` until the attach count is `n` (bounded:
/// a dead process's attachments go when its daemon notices the closed
/// connection).
fn wait_nattch(p: &mut Proc, id: i32, n: u64, size: u64) {
    let want = format!("stat nattch {n} dest 0 key");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = p.cmd(&format!("stat {id}"));
        if got.starts_with(&want) && got.ends_with(&format!("size {size}")) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "nattch never became {n}; last answer {got:?}: {}",
                p.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ipc_stat_counts_attachments_of_every_node() {
    let c = cluster(3);
    let prog = program("shmtool", SHMTOOL, Build::Dipc);
    let key = 0x5d10_0701;
    let mut h: Vec<Proc> = (0..3).map(|node| tool(&c, node, &prog)).collect();
    let line = h[0].cmd(&format!("get {key} 4096 excl"));
    let id = h[0].parse_id(&line);
    for p in &mut h[1..] {
        p.expect(&format!("get {key} 4096"), &format!("id {id}"));
    }
    for p in &mut h {
        p.expect(&format!("at {id}"), "attached 4096");
    }
    h[0].expect("fill 9", "filled");
    let three = format!("stat nattch 3 dest 0 key {key} size 4096");
    for p in &mut h {
        p.expect("check 9", "good");
        p.expect(&format!("stat {id}"), &three);
    }

    h[2].expect("dt", "detached");
    let two = format!("stat nattch 2 dest 0 key {key} size 4096");
    for p in &mut h {
        p.expect(&format!("stat {id}"), &two);
    }

    // A killed process's attachment goes too.
    h[1].kill();
    wait_nattch(&mut h[0], id, 1, 4096);
    h[2].expect(
        &format!("stat {id}"),
        &format!("stat nattch 1 dest 0 key {key} size 4096"),
    );
    h[0].expect("check 9", "good");
    for i in [0, 2] {
        h[i].expect("exit", "bye");
        h[i].success();
    }
}

#[test]
fn forked_child_writes_and_the_parent_keeps_working() {
    let c = cluster(3);
    let prog = program("shmtool", SHMTOOL, Build::Dipc);
    let key = 0x5d10_0801;
    let size = 256 * 1024;
    let mut parent = tool(&c, 0, &prog);
    let line = parent.cmd(&format!("get {key} {size} excl"));
    let id = parent.parse_id(&line);
    parent.expect(&format!("at {id}"), &format!("attached {size}"));
    parent.expect("fill 1", "filled");
    // The child checks the parent's pattern, writes its own, exits.
    parent.expect("forkfill 1 2", "child 0");

    let mut reader = tool(&c, 1, &prog);
    reader.expect(&format!("get {key} 0"), &format!("id {id}"));
    reader.expect(&format!("at {id}"), &format!("attached {size}"));
    reader.expect("check 2", "good");

    // The parent after the child's exit: sees the child's data, writes,
    // and the other node sees that.
    parent.expect("check 2", "good");
    parent.expect("fill 3", "filled");
    parent.expect("check 3", "good");
    reader.expect("check 3", "good");
    // The child's attachment went with it: the parent and the reader.
    wait_nattch(&mut parent, id, 2, size);
    for p in [&mut parent, &mut reader] {
        p.expect("exit", "bye");
        p.success();
    }
}

/// A process faulting on pages whose only copy was on a node that died
/// gets `SIGBUS` within the node's bound (three call timeouts), never
/// zeros and never a hang.
#[test]
fn a_fault_on_a_dead_nodes_pages_ends_in_sigbus_not_a_hang() {
    use std::os::unix::process::ExitStatusExt;
    let mut c = match Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .node_arg("--call-timeout-ms")
        .node_arg("1000")
        .start()
    {
        Ok(c) => c,
        Err(e) => panic!("cluster did not start: {e:#}"),
    };
    let prog = program("shmtool", SHMTOOL, Build::Dipc);
    let key = 0x5d10_0b05;
    let mut home = tool(&c, 0, &prog);
    let line = home.cmd(&format!("get {key} 65536 excl"));
    let id = home.parse_id(&line);
    home.expect(&format!("at {id}"), "attached 65536");
    home.expect("fill 7", "filled");

    let mut reader = tool(&c, 1, &prog);
    reader.expect(&format!("get {key} 0"), &format!("id {id}"));
    reader.expect(&format!("at {id}"), "attached 65536");

    // The home dies holding the only copy of every page.
    c.kill_node(0).expect("kill node 0");
    let started = Instant::now();
    let sent = reader
        .stdin
        .as_mut()
        .map(|s| s.write_all(b"check 7\n").and(s.flush()));
    assert!(matches!(sent, Some(Ok(()))));
    let status = reader
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the reader hangs: {}\n{}", reader.describe(), c.logs()));
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGBUS),
        "reader ended with {status:?} after {:?}: {}\n{}",
        started.elapsed(),
        reader.describe(),
        c.logs()
    );
    let out: Vec<String> = reader.lines.try_iter().collect();
    assert!(
        !out.iter().any(|l| l == "good"),
        "the reader saw data it cannot have: {out:?}"
    );
}
