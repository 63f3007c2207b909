//! Failure behaviour end to end: a node daemon is `SIGKILL`ed while the
//! other nodes share pages, queues and semaphores with it (issue 7,
//! "Failure behaviour"; README, "Failure behaviour").
//!
//! Three nodes; C programs (`tests/c/failtool.c`, driven line by line)
//! touch pages, queues and semaphores before and after the kill. What is
//! checked:
//!
//! * a page whose only copy was on the dead node: a process touching it
//!   gets `SIGBUS` (caught by a handler, and in a second process that dies
//!   of it), again on every later access, on every surviving node; the
//!   same process's other pages keep working, with their latest values
//!   (a copy held locally, a copy fetched from the third node, pages the
//!   home holds, new writes); `dipc status` and `--json` name the lost
//!   page;
//! * a segment homed on the dead node ("reported lost", not re-homed):
//!   copies held by survivors keep working with the rights they had, every
//!   other page gets `SIGBUS`, `dipc status` names the pages no survivor
//!   holds;
//! * a queue and a semaphore set homed on the dead node: processes blocked
//!   in `msgrcv`/`semop` on another node get `EIDRM`, and so do later calls.
//!
//! Every wait is bounded (a line, an exit, a status poll), so a broken
//! daemon fails a test with the processes' output and the logs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dipc_testkit::{Cluster, Link, Program, compile_c_with_header};
use dipc_wire::referee::LostPages;

const COMMON: &str = include_str!("c/common.h");
const FAILTOOL: &str = include_str!("c/failtool.c");

/// Bound on one answer line (an access blocked on a dead node is answered
/// once the referee declares it down: about three seconds here; shorter
/// would declare live nodes of a loaded test machine down).
const LINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the referee noticing the kill and the nodes reporting.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn cluster() -> Cluster {
    Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(3)
        .heartbeat_ms(300)
        .down_after_ms(3000)
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"))
}

fn failtool() -> Program {
    compile_c_with_header(
        "#define USE_DIPC 1\n",
        ("common.h", COMMON),
        "failtool",
        FAILTOOL,
        Link::Sysv,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A running `failtool`.
struct Tool {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Tool {
    fn start(c: &Cluster, node: usize, prog: &Program) -> Tool {
        Self::start_env(c, node, prog, &[])
    }

    fn start_env(c: &Cluster, node: usize, prog: &Program, env: &[(&str, &str)]) -> Tool {
        let mut cmd = c.run_on(node, prog);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting failtool on node {node}: {e}"));
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
        Tool {
            name: format!("failtool on node {node}"),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn describe(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        let state = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited: {s}"),
            _ => "running".to_string(),
        };
        format!(
            "{} (pid {}, {state}) said:\n{}",
            self.name,
            self.child.id(),
            self.seen.join("\n")
        )
    }

    fn send(&mut self, command: &str) {
        let sent = self.stdin.as_mut().map(|s| {
            s.write_all(format!("{command}\n").as_bytes())
                .and(s.flush())
        });
        if !matches!(sent, Some(Ok(()))) {
            panic!("cannot send {command:?} to {}", self.describe());
        }
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(LINE_TIMEOUT) {
            Ok(l) => {
                self.seen.push(l.clone());
                l
            }
            Err(e) => panic!("no line within {LINE_TIMEOUT:?} ({e}): {}", self.describe()),
        }
    }

    fn cmd(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
    }

    fn expect(&mut self, command: &str, want: &str) {
        let got = self.cmd(command);
        if got != want {
            panic!(
                "{command:?} answered {got:?}, expected {want:?}: {}",
                self.describe()
            );
        }
    }

    fn id(&mut self, command: &str) -> i32 {
        let line = self.cmd(command);
        line.strip_prefix("id ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{command:?} answered {line:?}: {}", self.describe()))
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() >= deadline {
                panic!("did not exit within {timeout:?}: {}", self.describe());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `dipc status --json` lists lost pages of segment `id`
/// satisfying `ok`, and return them.
fn wait_lost(c: &Cluster, id: i32, ok: impl Fn(&LostPages) -> bool) -> LostPages {
    let mut found = None;
    let r = c.wait_until("the lost pages in dipc status", DOWN_TIMEOUT, |c| {
        found = c.status()?.lost.into_iter().find(|l| l.id == id);
        Ok(found.as_ref().is_some_and(&ok))
    });
    if let Err(e) = r {
        panic!("{e:#}\nlast seen: {found:?}");
    }
    found.unwrap_or_else(|| unreachable!("wait_until returned without a match"))
}

/// Pages of a segment homed on a survivor: the page only the dead node held
/// is lost (SIGBUS, everywhere, every time); the others keep their latest
/// values, whether a copy was local, on the third node, or at the home.
#[test]
fn a_page_only_the_dead_node_held_gets_sigbus_and_the_others_keep_working() {
    let mut c = cluster();
    let prog = failtool();
    let key = 0x5d20_f001;
    // Node 0 is the home and writes every page (100 + page).
    let mut a = Tool::start(&c, 0, &prog);
    let id = a.id(&format!("shmget {key} 8 excl"));
    a.expect(&format!("at {id}"), "attached");
    for p in 0..8 {
        a.expect(&format!("write {p} {}", 100 + p), "wrote");
    }
    // Node 1 takes page 2 (its only copy then), shares page 3 with the
    // home and page 4 with node 2 only.
    let mut b = Tool::start(&c, 1, &prog);
    b.expect(&format!("shmget {key} 8 open"), &format!("id {id}"));
    b.expect(&format!("at {id}"), "attached");
    b.expect("write 2 223", "wrote");
    b.expect("read 3", "value 103");
    b.expect("write 4 224", "wrote");
    let mut t = Tool::start(&c, 2, &prog);
    t.expect(&format!("shmget {key} 8 open"), &format!("id {id}"));
    t.expect(&format!("at {id}"), "attached");
    t.expect("read 4", "value 224");

    c.kill_node(1).expect("kill node 1");
    drop(b);
    let lost = wait_lost(&c, id, |l| l.ranges == [(2, 2)]);
    assert_eq!((lost.count, lost.home_down), (1, false), "{lost:?}");

    // On the home: SIGBUS for the lost page only, every time.
    a.expect("read 2", "sigbus");
    a.expect("write 2 1", "sigbus");
    a.expect("read 2", "sigbus");
    a.expect("read 3", "value 103");
    a.expect("read 4", "value 224");
    a.expect("read 0", "value 100");
    a.expect("write 5 555", "wrote");
    a.expect("read 5", "value 555");
    // On the third node too; its copy of page 4 is still the latest.
    t.expect("read 2", "sigbus");
    t.expect("read 4", "value 224");
    t.expect("read 5", "value 555");
    t.expect("write 4 444", "wrote");
    a.expect("read 4", "value 444");
    a.expect("read 7", "value 107");

    // A process without a handler dies of it.
    let mut d = Tool::start(&c, 0, &prog);
    d.expect(&format!("shmget {key} 8 open"), &format!("id {id}"));
    d.expect(&format!("at {id}"), "attached");
    d.send("touch 2");
    let status = d.wait_exit(LINE_TIMEOUT);
    assert_eq!(
        status.signal(),
        Some(nix::libc::SIGBUS),
        "{status:?}: {}",
        d.describe()
    );
    // The other processes are unaffected.
    a.expect("read 6", "value 106");
    t.expect("read 6", "value 106");

    let text = c.status_text().expect("dipc status");
    assert!(
        text.contains("LOST 1 pages") && text.contains(&format!("{id} 1 pages: 2")),
        "dipc status does not name the lost page:\n{text}"
    );
}

/// A segment homed on the dead node is reported lost, not re-homed: the
/// copies survivors hold keep working (a Modified copy stays writable, a
/// Shared one readable); the rest gets SIGBUS.
#[test]
fn a_segment_homed_on_the_dead_node_keeps_the_copies_held_and_loses_the_rest() {
    let mut c = cluster();
    let prog = failtool();
    let key = 0x5d20_f002;
    let mut b = Tool::start(&c, 1, &prog);
    let id = b.id(&format!("shmget {key} 4 excl"));
    b.expect(&format!("at {id}"), "attached");
    for p in 0..4 {
        b.expect(&format!("write {p} {}", 10 + p), "wrote");
    }
    let mut a = Tool::start(&c, 0, &prog);
    a.expect(&format!("shmget {key} 4 open"), &format!("id {id}"));
    a.expect(&format!("at {id}"), "attached");
    a.expect("read 0", "value 10");
    a.expect("write 1 99", "wrote");

    c.kill_node(1).expect("kill node 1");
    drop(b);
    let lost = wait_lost(&c, id, |l| l.home_down && l.ranges == [(2, 3)]);
    assert_eq!(lost.count, 2, "{lost:?}");

    a.expect("read 0", "value 10");
    a.expect("read 1", "value 99");
    a.expect("write 1 98", "wrote");
    a.expect("read 1", "value 98");
    a.expect("read 2", "sigbus");
    a.expect("read 3", "sigbus");
    a.expect("read 0", "value 10");
    // Another process on the same node sees the same.
    let mut a2 = Tool::start(&c, 0, &prog);
    a2.expect(&format!("shmget {key} 4 open"), &format!("id {id}"));
    a2.expect(&format!("at {id}"), "attached");
    a2.expect("read 1", "value 98");
    a2.expect("read 3", "sigbus");
    // A node that never attached it cannot: its home is gone.
    let mut t = Tool::start(&c, 2, &prog);
    t.expect(&format!("shmget {key} 4 open"), &format!("id {id}"));
    t.expect(&format!("at {id}"), "err EIDRM");

    let text = c.status_text().expect("dipc status");
    assert!(
        text.contains("LOST 2 pages (home down)") && text.contains(&format!("{id} 2 pages: 2-3")),
        "dipc status does not name the lost pages:\n{text}"
    );
}

/// A queue and a semaphore set homed on the dead node: the processes
/// blocked on them elsewhere get `EIDRM`, and so does every later call.
#[test]
fn waiters_on_a_queue_and_a_semaphore_homed_on_the_dead_node_get_eidrm() {
    let mut c = cluster();
    let prog = failtool();
    let (qkey, skey) = (0x5d20_f003, 0x5d20_f004);
    let mut b = Tool::start(&c, 1, &prog);
    let qid = b.id(&format!("msgget {qkey} excl"));
    let sid = b.id(&format!("semget {skey} excl"));
    let mut rcv = Tool::start(&c, 0, &prog);
    rcv.expect(&format!("msgget {qkey} open"), &format!("id {qid}"));
    rcv.expect(&format!("msgrcv {qid}"), "waiting");
    let mut sem = Tool::start(&c, 2, &prog);
    sem.expect(&format!("semget {skey} open"), &format!("id {sid}"));
    sem.expect(&format!("semwait {sid}"), "waiting");
    // Both really block: the home answers another caller meanwhile.
    b.expect(&format!("msgsnd {qid} 5"), "sent");
    assert_eq!(rcv.line(), "got 5");
    rcv.expect(&format!("msgrcv {qid}"), "waiting");

    c.kill_node(1).expect("kill node 1");
    drop(b);
    assert_eq!(rcv.line(), "err EIDRM", "{}", rcv.describe());
    assert_eq!(sem.line(), "err EIDRM", "{}", sem.describe());
    rcv.expect(&format!("msgsnd {qid} 1"), "err EIDRM");
    rcv.expect(&format!("msgrcv {qid}"), "waiting");
    assert_eq!(rcv.line(), "err EIDRM", "{}", rcv.describe());
    sem.expect(&format!("semop {sid} 1"), "err EIDRM");
}

/// A two-page segment homed on node 0, where a process (returned first)
/// wrote 1 in page 0; a process on node 1 attached it and read page 0 (a
/// copy there). Returns the two processes and the segment's id.
fn share_page_0(c: &Cluster, prog: &Program, key: i32) -> (Tool, Tool, i32) {
    let mut a = Tool::start(c, 0, prog);
    let id = a.id(&format!("shmget {key} 2 excl"));
    a.expect(&format!("at {id}"), "attached");
    a.expect("write 0 1", "wrote");
    let mut b = Tool::start(c, 1, prog);
    b.expect(&format!("shmget {key} 2 open"), &format!("id {id}"));
    b.expect(&format!("at {id}"), "attached");
    b.expect("read 0", "value 1");
    (a, b, id)
}

/// A node declared down while alive (its daemon stopped longer than the
/// referee's bound, as a starved or frozen machine would be) fences
/// itself as soon as it runs again: the other nodes dropped its copies and
/// took its objects for gone, so its process gets `SIGBUS` instead of the
/// stale copy it held (never the stale value), the queue homed on it is
/// gone, and it then works again, empty: a new process there reads the
/// latest value.
#[test]
fn a_node_declared_down_while_alive_drops_its_copies_and_rejoins_empty() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut c = cluster();
    let prog = failtool();
    let (key, qkey) = (0x5d20_f005, 0x5d20_f006);
    let (mut a, mut b, id) = share_page_0(&c, &prog, key);
    let qid = b.id(&format!("msgget {qkey} excl"));
    a.expect(&format!("msgget {qkey} open"), &format!("id {qid}"));

    // Stop node 1's daemon (not its process) until the referee declares
    // it down; the home's write, which must invalidate node 1's copy,
    // completes then.
    let pid = Pid::from_raw(c.node_process(1).pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP node 1");
    let stopped = c.wait_node_state(1, false, DOWN_TIMEOUT);
    if let Err(e) = stopped {
        let _ = kill(pid, Signal::SIGCONT);
        panic!("{e:#}");
    }
    a.expect("write 0 2", "wrote");
    kill(pid, Signal::SIGCONT).expect("SIGCONT node 1");
    c.wait_until("node 1 to fence", DOWN_TIMEOUT, |c| {
        Ok(c.node_log(1).contains("fenced: holding nothing"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.logs()));

    // Its copy is gone: SIGBUS, never the stale 1; the process's next
    // calls work (it reconnects), its queue is gone.
    b.expect("read 0", "sigbus");
    b.expect("read 0", "sigbus");
    c.wait_until("node 1 to be up again", DOWN_TIMEOUT, |c| {
        Ok(c.member(&c.node_name(1))?.is_some_and(|m| m.up))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // As after a restart: the node re-joined without the queue, so the
    // referee dropped its record and the id is no longer valid.
    a.expect(&format!("msgsnd {qid} 1"), "err EINVAL");
    a.expect(&format!("msgget {qkey} open"), "err ENOENT");
    // A new process on node 1 shares the segment again, from its home.
    let mut b2 = Tool::start(&c, 1, &prog);
    b2.expect(&format!("shmget {key} 2 open"), &format!("id {id}"));
    b2.expect(&format!("at {id}"), "attached");
    b2.expect("read 0", "value 2");
    b2.expect("write 1 7", "wrote");
    a.expect("read 1", "value 7");
    a.expect("read 0", "value 2");
}

/// A fault its node cannot get served within the bound (three call
/// timeouts: the home's daemon is stopped, and the referee, slower here,
/// has not declared it down) ends the process's connections, its silent
/// watch connection included, whose closing is what signals libsysv: the
/// blocked access gets `SIGBUS`, not a hang.
#[test]
fn a_fault_stuck_past_its_bound_ends_in_sigbus_not_a_hang() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    /// The stopped daemon runs again whatever happens.
    struct Resume(Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }

    let mut c = Cluster::builder()
        .bin(env!("CARGO_BIN_EXE_dipc"))
        .nodes(2)
        .heartbeat_ms(300)
        .down_after_ms(120_000)
        .node_arg("--call-timeout-ms")
        .node_arg("1000")
        .start()
        .unwrap_or_else(|e| panic!("cluster did not start: {e:#}"));
    let prog = failtool();
    let (_a, mut b, _) = share_page_0(&c, &prog, 0x5d20_f00a);
    let pid = Pid::from_raw(c.node_process(0).pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP node 0");
    let _resume = Resume(pid);
    let t0 = Instant::now();
    // Node 1 holds a read copy: the write needs the stopped home.
    b.expect("write 0 2", "sigbus");
    eprintln!("SIGBUS after {:?}", t0.elapsed());
    let log = c.node_log(1);
    assert!(
        log.contains("a page fault was not served within")
            || log.contains("an access cannot be served"),
        "SIGBUS, but not from the fault's bound: {}",
        c.logs()
    );
}

/// A node killed and started again before the referee noticed (within
/// `--down-after-ms`) comes back empty: the referee declares its previous
/// start down when the new one joins, so the home drops it from the copy
/// set at once, and a write elsewhere does not wait for an acknowledgement
/// the new daemon cannot give (before, the write waited until the fault
/// bound closed its process's connection: over 30 s here). The restarted
/// node then shares the segment again.
#[test]
fn a_node_restarted_before_the_referee_noticed_is_dropped_from_copy_sets() {
    let mut c = cluster();
    let prog = failtool();
    let key = 0x5d20_f007;
    let (mut a, b, id) = share_page_0(&c, &prog, key);

    c.kill_node(1).expect("kill node 1");
    drop(b);
    let restarted = Instant::now();
    c.restart_node(1).expect("restart node 1");
    let down_after = Duration::from_millis(3000);
    assert!(
        restarted.elapsed() < down_after,
        "the restart took {:?}: the referee may have noticed the kill",
        restarted.elapsed()
    );
    // The home may send its invalidation to the new daemon before it
    // hears the verdict; the verdict settles the write all the same.
    a.expect("write 0 2", "wrote");
    let mut b2 = Tool::start(&c, 1, &prog);
    b2.expect(&format!("shmget {key} 2 open"), &format!("id {id}"));
    b2.expect(&format!("at {id}"), "attached");
    b2.expect("read 0", "value 2");
    b2.expect("write 1 5", "wrote");
    a.expect("read 1", "value 5");
}

/// Wait until every thread of process `pid` is stopped (a signal takes
/// effect when each thread next enters or leaves the kernel).
fn wait_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let state = |stat: &str| stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
        let all = tasks.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .is_ok_and(|s| matches!(state(&s), Some('T' | 't')))
        });
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A process's `msgsnd`, `msgrcv` and `semop` on a remote home go on a
/// direct connection to the home (libsysv's `direct`), not through its
/// own node: with node 1's daemon stopped (`SIGSTOP`, well within the
/// referee's bound), its process still sends, receives and operates on the
/// set homed on node 0, while a process there that asked for the relay
/// (`DIPC_DIRECT=0`) waits until the daemon runs again, and then
/// completes. Both see the same queue.
#[test]
fn operations_on_a_remote_home_go_direct_and_do_not_wait_for_their_own_node() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut c = cluster();
    let prog = failtool();
    let (qkey, skey) = (0x5d20_f008, 0x5d20_f009);
    let mut home = Tool::start(&c, 0, &prog);
    let qid = home.id(&format!("msgget {qkey} excl"));
    let sid = home.id(&format!("semget {skey} excl"));
    let mut direct = Tool::start(&c, 1, &prog);
    let mut relay = Tool::start_env(&c, 1, &prog, &[("DIPC_DIRECT", "0")]);
    for t in [&mut direct, &mut relay] {
        t.expect(&format!("msgget {qkey} open"), &format!("id {qid}"));
        t.expect(&format!("semget {skey} open"), &format!("id {sid}"));
        // The first operation on each object asks the node for a direct
        // connection to its home (or not).
        t.expect(&format!("semop {sid} 1"), "ok");
        t.expect(&format!("msgsnd {qid} 2"), "sent");
        t.expect(&format!("msgrcv {qid}"), "waiting");
        assert_eq!(t.line(), "got 2", "{}", t.describe());
    }

    let pid = Pid::from_raw(c.node_process(1).pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP node 1");
    let stopped = Instant::now();
    wait_stopped(pid.as_raw());
    let mut run = || {
        direct.expect(&format!("msgsnd {qid} 3"), "sent");
        direct.expect(&format!("msgrcv {qid}"), "waiting");
        let got = direct.line();
        direct.expect(&format!("semop {sid} -1"), "ok");
        relay.send(&format!("msgsnd {qid} 4"));
        let relayed = relay.lines.recv_timeout(Duration::from_secs(1));
        (got, relayed)
    };
    let (got, relayed) = run();
    let held = stopped.elapsed();
    kill(pid, Signal::SIGCONT).expect("SIGCONT node 1");
    assert_eq!(got, "got 3", "{}", direct.describe());
    assert!(
        relayed.is_err(),
        "a relayed msgsnd completed with its node stopped: {relayed:?}"
    );
    assert!(
        held < Duration::from_millis(2500),
        "node 1 was stopped {held:?}, near the referee's bound"
    );
    assert_eq!(relay.line(), "sent", "{}", relay.describe());
    home.expect(&format!("msgrcv {qid}"), "waiting");
    assert_eq!(home.line(), "got 4", "{}", home.describe());
    direct.expect(&format!("semop {sid} -1"), "ok");
    relay.expect(&format!("msgsnd {qid} 5"), "sent");
    direct.expect(&format!("msgrcv {qid}"), "waiting");
    assert_eq!(
        direct.line(),
        "got 5",
        "{}\n{}",
        direct.describe(),
        c.logs()
    );
}
