//! Workers of `tests/c/chaos_worker.c` and the exact model their reports
//! are checked against; shared by `tests/chaos.rs` and `tests/soak.rs`.
//!
//! A worker prints "ready", then "progress N" once a second while it runs
//! random operations, then its counts ("sent R N", "incs N", "wseq N",
//! "ops N", "recv S N") and "done". [`check_model`] compares the stable
//! ranks' reports with each other and with the segment's final contents.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dipc_testkit::{Cluster, Link, Program, compile_c};

pub const WORKER_C: &str = include_str!("../c/chaos_worker.c");

pub fn worker_program(c: &Cluster) -> Program {
    match compile_c(WORKER_C, "chaos-worker", Link::Sysv) {
        Ok(p) => p,
        Err(e) => panic!("{e:#}\n{}", c.logs()),
    }
}

/// Seconds since the epoch, `secs` from now (the workers' END argument).
pub fn wall_clock_in(secs: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + secs
}

/// Run `prog args` on `node` to its end; its stdout lines. Panics (with the
/// cluster's logs) on a failure or after `timeout`.
pub fn run_to_end(
    c: &Cluster,
    node: usize,
    prog: &Program,
    args: &[&str],
    timeout: Duration,
) -> Vec<String> {
    let mut w = Worker::start(c, node, u32::MAX, prog, args);
    match w.finish(timeout) {
        Ok(lines) => lines,
        Err(e) => panic!("{e}\n{}", c.logs()),
    }
}

/// `mk* KEY ...` on `node`; the id it printed.
pub fn make(c: &Cluster, node: usize, prog: &Program, args: &[&str]) -> i32 {
    let out = run_to_end(c, node, prog, args, Duration::from_secs(60));
    out.iter()
        .find_map(|l| l.strip_prefix("id ").and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("{args:?} printed {out:?}\n{}", c.logs()))
}

/// One running worker process, its stdout collected by a thread.
pub struct Worker {
    pub rank: u32,
    pub node: usize,
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(c: &Cluster, node: usize, rank: u32, prog: &Program, args: &[&str]) -> Worker {
        let what = format!("rank {rank} on node {node}: {}", args.join(" "));
        let mut child = c
            .run_on(node, prog)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stdout.take().map(|out| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                }
            })
        });
        Worker {
            rank,
            node,
            what,
            child,
            lines,
            reader,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn failed(&self) -> Option<String> {
        self.lines().into_iter().find(|l| l.starts_with("FAIL"))
    }

    /// The last "progress N" value printed (0 before any).
    pub fn progress(&self) -> u64 {
        self.lines()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("progress ").and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    }

    /// Wait until the worker printed "ready".
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.failed() {
                return Err(format!("{}: {f}", self.what));
            }
            if self.lines().iter().any(|l| l == "ready") {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{}: exited ({st}) before ready: {:?}",
                    self.what,
                    self.lines()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("{}: not ready within {timeout:?}", self.what));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a successful exit (bounded); every line printed.
    pub fn finish(&mut self, timeout: Duration) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        let st = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "{}: still running after {timeout:?}: {:?}",
                        self.what,
                        self.lines()
                    ));
                }
                Err(e) => return Err(format!("{}: wait: {e}", self.what)),
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines();
        if !st.success()
            || lines.iter().any(|l| l.starts_with("FAIL"))
            || !lines.iter().any(|l| l == "done")
        {
            return Err(format!("{}: exited with {st}: {lines:?}", self.what));
        }
        Ok(lines)
    }

    /// `SIGKILL` the worker (it dies with its node) and reap it.
    pub fn kill(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.lines()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one worker reported at its end.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub rank: u32,
    pub sent: BTreeMap<u32, u64>,
    pub recv: BTreeMap<u32, u64>,
    pub incs: u64,
    pub wseq: u64,
    pub ops: u64,
}

fn num<T: std::str::FromStr>(s: Option<&str>, line: &str) -> T {
    s.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad report line {line:?}"))
}

pub fn parse_report(rank: u32, lines: &[String]) -> Report {
    let mut r = Report {
        rank,
        ..Report::default()
    };
    for l in lines {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("sent") => {
                let to = num(w.next(), l);
                r.sent.insert(to, num(w.next(), l));
            }
            Some("recv") => {
                let from = num(w.next(), l);
                r.recv.insert(from, num(w.next(), l));
            }
            Some("incs") => r.incs = num(w.next(), l),
            Some("wseq") => r.wseq = num(w.next(), l),
            Some("ops") => r.ops = num(w.next(), l),
            _ => {}
        }
    }
    r
}

/// The segment's final contents (`check` output).
#[derive(Debug, Default)]
pub struct Segment {
    pub counter: u64,
    pub mine: BTreeMap<u32, u64>,
    pub slot: BTreeMap<u32, u64>,
}

pub fn parse_segment(lines: &[String]) -> Segment {
    let mut s = Segment::default();
    for l in lines {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("counter") => s.counter = num(w.next(), l),
            Some("mine") => {
                let p = num(w.next(), l);
                s.mine.insert(p, num(w.next(), l));
            }
            Some("slot") => {
                let p = num(w.next(), l);
                s.slot.insert(p, num(w.next(), l));
            }
            _ => {}
        }
    }
    s
}

/// Totals of a checked run.
#[derive(Debug, Default)]
pub struct Totals {
    pub ops: u64,
    pub messages: u64,
    pub increments: u64,
    pub writes: u64,
    /// Messages received from sender-only ranks (contiguous, not totalled).
    pub chaos_messages: u64,
}

/// Check the stable ranks' reports against each other and the segment:
/// every message a stable rank sent to a stable rank was received exactly
/// once (the workers already checked order and duplicates), the counter
/// equals the sum of the increments, each `mine[p]` equals rank p's
/// increments, each slot holds its owner's last write. Errors name every
/// divergence.
pub fn check_model(stable: &[Report], seg: &Segment) -> Result<Totals, String> {
    let mut errors = Vec::new();
    let mut t = Totals::default();
    for s in stable {
        t.ops += s.ops;
        t.increments += s.incs;
        t.writes += s.wseq;
        for r in stable {
            let sent = s.sent.get(&r.rank).copied().unwrap_or(0);
            let got = r.recv.get(&s.rank).copied().unwrap_or(0);
            if sent != got {
                errors.push(format!(
                    "rank {} sent {sent} to rank {}, which received {got}",
                    s.rank, r.rank
                ));
            }
            t.messages += got;
        }
        for (from, n) in &s.recv {
            if !stable.iter().any(|x| x.rank == *from) {
                t.chaos_messages += n;
            }
        }
        let mine = seg.mine.get(&s.rank).copied().unwrap_or(0);
        if mine != s.incs {
            errors.push(format!(
                "rank {} made {} increments, its count in the segment is {mine}",
                s.rank, s.incs
            ));
        }
        let slot = seg.slot.get(&s.rank).copied().unwrap_or(0);
        if slot != s.wseq {
            errors.push(format!(
                "rank {} last wrote {}, its slot holds {slot}",
                s.rank, s.wseq
            ));
        }
    }
    if seg.counter != t.increments {
        errors.push(format!(
            "counter {} != {} increments",
            seg.counter, t.increments
        ));
    }
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors.join("\n"))
    }
}
