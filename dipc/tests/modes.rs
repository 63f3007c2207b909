//! Transfer modes end to end: segment mode, the hold-time quantum and
//! sequential prefetch, with C programs on two nodes (dipc-testkit).
//!
//! The programs of `tests/c/` used by `shm.rs` (pattern, message-passing
//! litmus, atomic counter) run again here, once with every segment in
//! segment mode (`DIPC_SHM_MODE=segment` at `shmget`: the whole segment is
//! one coherence unit) and once on a cluster whose nodes hold every unit
//! they receive for a quantum of a few milliseconds (`DIPC_QUANTUM_US` in
//! the nodes' environment: the cluster's default; `DIPC_SEGMENT_KEYS`
//! selects segment mode per key in the nodes' configuration). Each
//! segment's settings are fixed at creation: from the creating process's
//! environment (`DIPC_QUANTUM_US`, `DIPC_PREFETCH`, `DIPC_SHM_MODE` read by
//! libsysv at `shmget`), else the creating node's per-key settings, else
//! its defaults; `dipc ipcs` and `dipc status` show what each got. The pattern runs with the nodes' default
//! prefetch (a window of up to 8 units), so its sequential reader installs
//! most pages through prefetch. `modes_wait.c` measures a read that faults
//! while another node holds the page within its quantum: it must wait for
//! the quantum (queued at the holder, not dropped) and not much longer.
//!
//! Every wait is bounded here (a line, an exit) and in the programs
//! (`alarm`, bounded spins), so a broken daemon fails a test with the
//! processes' output and the daemons' logs instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header};

const COMMON: &str = include_str!("c/common.h");
const PATTERN: &str = include_str!("c/pattern.c");
const COUNTER: &str = include_str!("c/counter.c");
const MP: &str = include_str!("c/mp.c");
const WAIT: &str = include_str!("c/modes_wait.c");

/// Bound on one answer line, and on a program's run.
const TIMEOUT: Duration = Duration::from_secs(90);

const MIB: u64 = 1 << 20;

/// A two-node cluster whose nodes get `env`.
fn cluster(env: &[(&str, &str)]) -> Cluster {
    let mut b = Cluster::builder().bin(env!("CARGO_BIN_EXE_dipc")).nodes(2);
    for (k, v) in env {
        b = b.node_env(*k, *v);
    }
    b.start()
        .unwrap_or_else(|e| panic!("cluster with {env:?} did not start: {e:#}"))
}

/// Compile `tests/c/<name>.c` with `IPC_DIPC`, linked `-lsysv`.
fn program(name: &str, src: &str) -> Program {
    compile_c_with_header(
        "#define USE_DIPC 1\n",
        ("common.h", COMMON),
        name,
        src,
        Link::Sysv,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A running C program: stdin piped from the test, stdout read line by line.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Start `prog args` on node `node` with the extra environment `env`.
    fn start(
        c: &Cluster,
        node: usize,
        prog: &Program,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd: Command = c.run_on(node, prog);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let name = format!(
            "{} {} on node {node}",
            prog.path().display(),
            args.join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
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
        let mut err = child.stderr.take().expect("stderr was piped");
        let buf = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Proc {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn describe(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        let err = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{err}",
            self.name,
            self.seen.join("\n")
        )
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(_) => panic!("no line within {TIMEOUT:?}: {}", self.describe()),
        }
    }

    fn send(&mut self, text: &str) {
        let ok = self.stdin.as_mut().is_some_and(|s| {
            s.write_all(format!("{text}\n").as_bytes())
                .and(s.flush())
                .is_ok()
        });
        if !ok {
            panic!("cannot send {text:?}: {}", self.describe());
        }
    }

    /// Close stdin, wait (bounded) for a successful exit; the lines not
    /// consumed yet.
    fn success(&mut self) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("did not finish within {TIMEOUT:?}: {}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l.clone());
            rest.push(l);
        }
        assert!(status.success(), "{status}: {}", self.describe());
        rest
    }

    /// [`Proc::success`], and the last line must be `want`.
    fn ends_with(&mut self, want: &str) {
        let rest = self.success();
        if rest.last().map(String::as_str) != Some(want) {
            panic!("expected a last line {want:?}: {}", self.describe());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn args(a: &[&dyn std::fmt::Display]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// The pattern, litmus and counter programs across the two nodes of `c`,
/// every process with `env`.
fn pattern_litmus_counter(c: &Cluster, env: &[(&str, &str)], keys: i32, size: u64) {
    let pattern = program("pattern", PATTERN);
    let seed = 0x5eed_u64 ^ size;
    let mut w = Proc::start(c, 0, &pattern, &args(&[&"write", &keys, &size, &seed]), env);
    let id = w.line();
    w.ends_with("written");
    let mut r = Proc::start(c, 1, &pattern, &args(&[&"read", &keys, &size, &seed]), env);
    assert_eq!(r.line(), id, "the reader found another segment");
    r.ends_with(&format!("verified {size}"));

    let mp = program("mp", MP);
    for (layout, key) in [("split", keys + 1), ("same", keys + 2)] {
        let a = |role: &'static str| args(&[&role, &key, &100, &layout]);
        let mut w = Proc::start(c, 0, &mp, &a("writer"), env);
        w.line();
        let mut r = Proc::start(c, 1, &mp, &a("reader"), env);
        r.line();
        r.ends_with("rounds 100 stale 0");
        w.ends_with("rounds 100 stale 0");
    }

    counter(c, env, keys + 3, 2000);
}

/// Two processes on two nodes each add up to `iters` to one counter
/// (yielding after every increment, stopping early after 20 s on an
/// oversubscribed machine); both must see the exact sum of the increments
/// they report.
fn counter(c: &Cluster, env: &[(&str, &str)], key: i32, iters: u64) {
    let prog = program("counter", COUNTER);
    let mut procs: Vec<Proc> = (0..2)
        .map(|node| Proc::start(c, node, &prog, &args(&[&key, &2, &iters, &1, &20]), env))
        .collect();
    let ids: Vec<String> = procs.iter_mut().map(Proc::line).collect();
    assert_eq!(ids[0], ids[1], "the processes found different segments");
    let rests: Vec<Vec<String>> = procs.iter_mut().map(Proc::success).collect();
    let mut total = 0;
    for (p, rest) in procs.iter_mut().zip(&rests) {
        let did = rest
            .get(1)
            .and_then(|l| l.strip_prefix("did "))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n > 0 && n <= iters);
        total += did.unwrap_or_else(|| panic!("expected `did <1..={iters}>`: {}", p.describe()));
    }
    for (p, rest) in procs.iter_mut().zip(&rests) {
        let want = format!("counter {total}");
        if rest.last() != Some(&want) {
            panic!("expected a last line {want:?}: {}", p.describe());
        }
    }
}

#[test]
fn segment_mode_runs_pattern_litmus_and_counter() {
    // The counter's key is in segment mode by the nodes' configuration
    // (DIPC_SEGMENT_KEYS), the rest by the programs' DIPC_SHM_MODE.
    let c = cluster(&[("DIPC_SEGMENT_KEYS", "0x5d200110")]);
    pattern_litmus_counter(&c, &[("DIPC_SHM_MODE", "segment")], 0x5d20_0100, 4 * MIB);
    counter(&c, &[], 0x5d20_0110, 2000);
}

/// A 64 MiB segment in segment mode (four times a frame's limit: it moves
/// in parts of 4 MiB) written on node 0, read and rewritten on node 1,
/// then on node 0 and node 1 again, read back on node 0: the whole segment
/// moves each way, intact, also when a node sends it a second time.
#[test]
fn segment_mode_moves_a_segment_larger_than_a_frame_whole_both_ways() {
    let c = cluster(&[]);
    let env = [("DIPC_SHM_MODE", "segment")];
    let (key, size) = (0x5d20_0500, 64 * MIB);
    let (first, second) = (0x5eed_0064_u64, 0xbacc_0064_u64);
    let pattern = program("pattern", PATTERN);
    let run = |node: usize, a: &[&dyn std::fmt::Display], last: &str| {
        let mut p = Proc::start(&c, node, &pattern, &args(a), &env);
        let id = p.line();
        p.ends_with(last);
        id
    };
    let id = run(0, &[&"write", &key, &size, &first], "written");
    let row = ipcs_segment(&c, key);
    assert_eq!(row["transfer"]["mode"], "segment", "{row}");
    let again = run(1, &[&"rewrite", &key, &size, &first, &second], "rewritten");
    assert_eq!(again, id, "node 1 found another segment");
    // Each node sends the segment a second time, from the reused buffer of
    // its first send: it must carry the new contents, not the old.
    let (third, fourth) = (0x7417_0064_u64, 0xf047_0064_u64);
    run(0, &[&"rewrite", &key, &size, &second, &third], "rewritten");
    run(1, &[&"rewrite", &key, &size, &third, &fourth], "rewritten");
    let back = run(
        0,
        &[&"read", &key, &size, &fourth],
        &format!("verified {size}"),
    );
    assert_eq!(back, id, "node 0 found another segment");
}

/// The home of a 64 MiB segment-mode segment dies just as another node
/// starts fetching it (the kill is not synchronised with the transfer,
/// which takes longer than the kill): the process there ends with
/// `SIGBUS` (the rewrite needs the home even if the whole segment arrived
/// first), never with zeros or part of the segment, and never hangs.
#[test]
fn a_home_dying_during_a_large_segment_transfer_ends_in_sigbus() {
    use std::os::unix::process::ExitStatusExt;
    let mut c = Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .node_arg("--call-timeout-ms")
        .node_arg("1000")
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"));
    let env = [("DIPC_SHM_MODE", "segment")];
    let (key, size, seed) = (0x5d20_0510, 64 * MIB, 0x5eed_0510_u64);
    let pattern = program("pattern", PATTERN);
    let mut w = Proc::start(
        &c,
        0,
        &pattern,
        &args(&[&"write", &key, &size, &seed]),
        &env,
    );
    w.line();
    w.ends_with("written");
    let a = args(&[&"rewrite", &key, &size, &seed, &1]);
    let mut r = Proc::start(&c, 1, &pattern, &a, &env);
    r.line();
    // The reader faults on its first word right after printing its id.
    c.kill_node(0).expect("kill node 0");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Ok(Some(s)) = r.child.try_wait() {
            break s;
        }
        if Instant::now() >= deadline {
            panic!("the reader hangs: {}\n{}", r.describe(), c.logs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = r.describe();
    // SIGBUS at its read or its write. Only if this test was descheduled
    // long enough for the whole transfer and the write to complete before
    // the kill does the reader get as far as IPC_STAT, which fails.
    let stat_failed = status.code() == Some(1) && out.contains("shmctl(id, IPC_STAT");
    assert!(
        status.signal() == Some(nix::libc::SIGBUS) || stat_failed,
        "the reader ended with {status:?}: {out}"
    );
    assert!(
        !out.contains("rewritten") && !out.contains("differ"),
        "the reader saw data it cannot have: {out}"
    );
}

#[test]
fn a_quantum_of_a_few_ms_keeps_pattern_litmus_and_counter_exact() {
    let c = cluster(&[("DIPC_QUANTUM_US", "3000")]);
    pattern_litmus_counter(&c, &[], 0x5d20_0200, 8 * MIB);
    // Segment mode and the quantum together.
    counter(&c, &[("DIPC_SHM_MODE", "segment")], 0x5d20_0210, 2000);
}

/// `dipc ipcs --json -m` through node 0: the segment of `key`.
fn ipcs_segment(c: &Cluster, key: i32) -> serde_json::Value {
    let out = c
        .dipc()
        .env("DIPC_SOCKET", c.node_socket(0))
        .args(["ipcs", "--json", "-m"])
        .output()
        .unwrap_or_else(|e| panic!("dipc ipcs: {e}"));
    assert!(
        out.status.success(),
        "dipc ipcs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ipcs --json");
    rows.as_array()
        .and_then(|r| r.iter().find(|r| r["key"] == key))
        .cloned()
        .unwrap_or_else(|| panic!("no segment with key {key:#x} in {rows}"))
}

#[test]
fn each_segment_keeps_the_settings_of_its_shmget_or_its_nodes_config() {
    let (asked, by_key, seg_key, default) = (0x5d20_0400, 0x5d20_0410, 0x5d20_0420, 0x5d20_0430);
    let c = cluster(&[
        ("DIPC_QUANTUM_KEYS", "0x5d200410=2000"),
        ("DIPC_PREFETCH_KEYS", "0x5d200410=0"),
        ("DIPC_SEGMENT_KEYS", "0x5d200420"),
        ("DIPC_PREFETCH", "4"),
    ]);
    // A quantum of a few ms chosen by the creating process (libsysv's
    // environment at shmget): two nodes' increments keep an exact total.
    counter(
        &c,
        &[("DIPC_QUANTUM_US", "3000"), ("DIPC_PREFETCH", "16")],
        asked,
        2000,
    );
    counter(&c, &[], by_key, 500);
    counter(&c, &[], seg_key, 500);
    counter(&c, &[], default, 500);
    let page = 4096;
    for (key, mode, unit, quantum, prefetch) in [
        (asked, "page", page, 3000, 16),
        (by_key, "page", page, 2000, 0),
        // The counter's segment is 2 pages: one unit, nothing to prefetch.
        (seg_key, "segment", 2 * page, 0, 0),
        (default, "page", page, 0, 4),
    ] {
        let row = ipcs_segment(&c, key);
        let t = &row["transfer"];
        assert_eq!(t["mode"], mode, "{key:#x}: {row}");
        assert_eq!(t["unit"], unit, "{key:#x}: {row}");
        assert_eq!(t["quantum_us"], quantum, "{key:#x}: {row}");
        assert_eq!(t["prefetch"], prefetch, "{key:#x}: {row}");
    }
    // `dipc ipcmk` sets them the same way (through node 1's socket).
    let made = c
        .dipc()
        .env("DIPC_SOCKET", c.node_socket(1))
        .args(["ipcmk", "-M", "64K", "--key", "0x5d200440"])
        .args(["--unit", "8192", "--quantum-us", "500", "--prefetch", "2"])
        .output()
        .expect("dipc ipcmk");
    assert!(made.status.success(), "{made:?}");
    let t = ipcs_segment(&c, 0x5d20_0440)["transfer"].clone();
    assert_eq!(
        (&t["mode"], &t["unit"], &t["quantum_us"], &t["prefetch"]),
        (&"page".into(), &8192.into(), &500.into(), &2.into()),
        "{t}"
    );
    let status = c.status_text().expect("dipc status");
    assert!(
        status.contains("(page 4096B, quantum 3000us, prefetch 16)")
            && status.contains("(segment 8192B, quantum 0us, prefetch 0)"),
        "{status}"
    );
}

#[test]
fn a_read_during_a_writers_quantum_waits_for_it_and_not_much_longer() {
    const QUANTUM_MS: u64 = 400;
    let quantum = (QUANTUM_MS * 1000).to_string();
    let c = cluster(&[("DIPC_QUANTUM_US", &quantum), ("DIPC_PREFETCH", "0")]);
    let prog = program("modes_wait", WAIT);
    let key = 0x5d20_0300;
    // The reader's node creates the segment (its home); the writer's node
    // receives the page when it writes, and holds it for the quantum.
    let mut r = Proc::start(&c, 0, &prog, &args(&[&"read", &key]), &[]);
    let id = r.line();
    let mut w = Proc::start(&c, 1, &prog, &args(&[&"write", &key]), &[]);
    assert_eq!(w.line(), id);
    for round in 0..3 {
        w.send("go");
        assert_eq!(w.line(), "wrote");
        r.send("go");
        let line = r.line();
        let parsed = line
            .strip_prefix("read ")
            .and_then(|l| l.split_once(' '))
            .and_then(|(v, ms)| Some((v.parse::<u64>().ok()?, ms.parse::<u64>().ok()?)));
        let Some((value, ms)) = parsed else {
            panic!("expected `read <value> <ms>`: {}", r.describe());
        };
        assert_eq!(value, 42, "round {round}: {}", r.describe());
        // Generous bounds: the read waited for (most of) the quantum, the
        // writer's node answered when it ended, and the normal fault time
        // on top is far below a second even on a loaded machine.
        assert!(
            ms <= QUANTUM_MS + 2000,
            "round {round}: the read took {ms} ms with a {QUANTUM_MS} ms quantum"
        );
        assert!(
            ms >= QUANTUM_MS / 8,
            "round {round}: the read took {ms} ms: the writer's quantum ({QUANTUM_MS} ms) was not honoured"
        );
        // Let the reader's own quantum run out before the next round.
        std::thread::sleep(Duration::from_millis(QUANTUM_MS + 100));
    }
    r.success();
    w.success();
}
