//! Message-queue and semaphore scenarios, on dipc and on the kernel.
//!
//! dipc runs a queue or a semaphore set at its home node and remote
//! callers wait for the answer (DIPC's model), so a remote `msgsnd` or
//! `semop` costs at least one network round trip: each dipc row is shown
//! against the raw round trip of dipc's TCP transport carrying the same
//! bytes (the floor) and, as references, the kernel's own SysV path
//! between two local processes and a peer a user would pick for queues
//! (Redis, [`crate::redis`]).
//!
//! * message round trip ([`msg_rtt_8`] ... [`msg_rtt_64k`], 8 B to 64 KiB):
//!   the agent on node 2 sends a message of type 1 to a queue homed on
//!   node 1 and waits for the answer of type 2 that node 1's agent echoes
//!   (`msgrcv` + `msgsnd` there); one sample per round trip, content
//!   checked.
//! * message stream ([`msg_tput_8`] ... [`msg_tput_64k`]): node 2 sends,
//!   node 1 drains; one sample per `msgsnd` (the queue's limit makes a
//!   fast sender wait for the drain, so the mean is the sustained rate).
//!   Every queue, dipc's and the kernel's, gets `msg_qbytes` =
//!   max(16 KiB, size) ([`qbytes`]), so both buffer alike.
//!
//! Messages above 8 KiB need a raised `msgmax`: the bench's nodes run
//! with `--msgmax 65536 --msgmnb 65536` ([`crate::cluster::MSG_LIMIT`]),
//! and the kernel rows raise `kernel.msgmax` and `kernel.msgmnb` to the
//! same for the time of each measurement and put the old values back
//! afterwards, also on an error or a panic ([`RaisedMsgLimits`]). Without
//! root (or with a read-only `/proc/sys`) those kernel rows are skipped
//! with the limit in force ("not measured: kernel.msgmax=8192").
//! * [`semop`]: one uncontended `+1` or `-1` from node 2.
//! * [`sem_lock_3`]: agents on three nodes lock and unlock one semaphore
//!   (`-1` then `+1`); one sample per lock+unlock, contended.
//! * barriers ([`barrier_2`] ...): the three-semaphore barrier of
//!   [`crate::ipcops`], one sample per round at the leader.
//!
//! The kernel floors run the same agent commands with the `k` path (raw
//! syscalls) between agent processes started without a node.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;

use crate::Error;
use crate::agent::{Agent, AgentCommand};
use crate::cluster::Cluster;
use crate::stats::interleave;

/// Keys of the dipc queues and sets this process creates.
static NEXT_KEY: AtomicU32 = AtomicU32::new(0x0D1B_D000);

/// Bound on one agent command of `ops` operations.
fn bound(ops: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(20) * ops as u32
}

/// Local agents for a kernel floor: no node, the `k` path only.
fn local_agents(cmd: &AgentCommand, n: usize) -> Result<Vec<Agent>, Error> {
    (0..n)
        .map(|i| Agent::spawn(cmd, i, Path::new("/nonexistent/dipc-bench-kernel-floor")))
        .collect()
}

fn quit_all(agents: Vec<Agent>) {
    for a in agents {
        a.quit();
    }
}

/// The id in an `ok <id>` answer.
fn id_of(words: &[String]) -> Result<i32, Error> {
    words
        .first()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| Error::WrongData {
            detail: format!("expected an id, got {words:?}"),
        })
}

/// `msg_qbytes` of every queue of a scenario with `size`-byte messages:
/// the kernel's default `msgmnb`, or one message when that is larger.
pub fn qbytes(size: usize) -> u64 {
    (size as u64).max(16384)
}

const PROC_KERNEL: &str = "/proc/sys/kernel";

fn read_limit(name: &str) -> Result<u64, Error> {
    let path = format!("{PROC_KERNEL}/{name}");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    text.trim().parse().map_err(|_| Error::WrongData {
        detail: format!("{path} holds {text:?}"),
    })
}

/// `kernel.msgmax` and `kernel.msgmnb` raised for a kernel row whose
/// messages exceed them; dropping it writes the old values back (a
/// panic unwinds through it too: the release profile unwinds).
pub struct RaisedMsgLimits {
    /// (sysctl, value before) of what was raised, in raising order.
    old: Vec<(&'static str, u64)>,
}

impl RaisedMsgLimits {
    /// Raise `msgmax` and `msgmnb` to at least `msgmax` and `msgmnb` bytes
    /// (a limit already that high is left alone). `Unavailable` ("not
    /// measured: kernel.msgmax=8192 ...") when it cannot be written.
    pub fn raise(msgmax: u64, msgmnb: u64) -> Result<RaisedMsgLimits, Error> {
        let mut raised = RaisedMsgLimits { old: Vec::new() };
        for (name, want) in [("msgmax", msgmax), ("msgmnb", msgmnb)] {
            let cur = read_limit(name)?;
            if cur >= want {
                continue;
            }
            let path = format!("{PROC_KERNEL}/{name}");
            if let Err(e) = std::fs::write(&path, want.to_string()) {
                // `raised` puts back what was raised already.
                return Err(Error::Unavailable {
                    what: format!(
                        "not measured: kernel.{name}={cur} (raising it to {want} needs root: {e})"
                    ),
                });
            }
            raised.old.push((name, cur));
        }
        Ok(raised)
    }
}

impl Drop for RaisedMsgLimits {
    fn drop(&mut self) {
        for (name, old) in self.old.drain(..).rev() {
            let path = format!("{PROC_KERNEL}/{name}");
            if let Err(e) = std::fs::write(&path, old.to_string()) {
                tracing::warn!("could not restore kernel.{name}={old}: {e}");
            }
        }
    }
}

/// Raise the kernel's limits if `size`-byte messages need it (`None`
/// when the defaults do).
fn kernel_limits_for(size: usize) -> Result<Option<RaisedMsgLimits>, Error> {
    let limit = u64::from(crate::cluster::MSG_LIMIT);
    if size <= KERNEL_MSGMAX {
        return Ok(None);
    }
    RaisedMsgLimits::raise(limit, limit).map(Some)
}

/// The kernel's default `msgmax`: no row up to it touches `/proc/sys`.
const KERNEL_MSGMAX: usize = 8192;

/// Where the two ends of a queue scenario run.
enum Ends<'a> {
    Kernel(&'a AgentCommand),
    /// On the cluster's nodes; `false`: the agents' operations go through
    /// their nodes (`DIPC_DIRECT=0`), not on direct connections.
    Dipc(&'a Cluster, bool),
}

/// An agent on node `i`, with direct connections or not.
fn dipc_agent(c: &Cluster, i: usize, direct: bool) -> Result<Agent, Error> {
    if direct {
        c.agent(i)
    } else {
        c.agent_with(i, &[("DIPC_DIRECT", "0")])
    }
}

/// Open a queue with `msg_qbytes` = `qbytes` and two agents: `(home/echo
/// side, client side, via, id)`.
fn queue(ends: &Ends, qbytes: u64) -> Result<(Agent, Agent, &'static str, i32), Error> {
    match ends {
        Ends::Kernel(cmd) => {
            let mut a = local_agents(cmd, 2)?;
            let (Some(client), Some(mut home)) = (a.pop(), a.pop()) else {
                return Err(Error::Cluster {
                    detail: "two local agents expected".into(),
                });
            };
            let id = id_of(&home.call(&format!("msgget k 0 1 {qbytes}"), bound(1))?)?;
            Ok((home, client, "k", id))
        }
        Ends::Dipc(c, direct) => {
            c.check_alive()?;
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let mut home = dipc_agent(c, 1, *direct)?;
            let mut client = dipc_agent(c, 2, *direct)?;
            let id = id_of(&home.call(&format!("msgget d {key} 1 {qbytes}"), bound(1))?)?;
            let id2 = id_of(&client.call(&format!("msgget d {key} 0"), bound(1))?)?;
            if id != id2 {
                return Err(Error::WrongData {
                    detail: format!("key {key:#x} is queue {id} on node 1 but {id2} on node 2"),
                });
            }
            Ok((home, client, "d", id))
        }
    }
}

fn msg_rtt(ends: Ends, size: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let _raised = match ends {
        Ends::Kernel(_) => kernel_limits_for(size)?,
        Ends::Dipc(..) => None,
    };
    let (mut home, mut client, via, id) = queue(&ends, qbytes(size))?;
    let echo = format!("msgecho {via} {id} {total} {size}");
    home.send(&echo)?;
    let out = client.samples(&format!("msgrtt {via} {id} {total} {size}"), bound(total))?;
    home.answer(&echo, bound(1))?;
    pb.inc(total as u64);
    home.call(&format!("msgrm {via} {id}"), bound(1))?;
    quit_all(vec![home, client]);
    Ok(out)
}

fn msg_tput(ends: Ends, size: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let _raised = match ends {
        Ends::Kernel(_) => kernel_limits_for(size)?,
        Ends::Dipc(..) => None,
    };
    let (mut home, mut client, via, id) = queue(&ends, qbytes(size))?;
    let drain = format!("msgdrain {via} {id} {total} {size}");
    home.send(&drain)?;
    let out = client.samples(&format!("msgsend {via} {id} {total} {size}"), bound(total))?;
    home.answer(&drain, bound(total))?;
    pb.inc(total as u64);
    home.call(&format!("msgrm {via} {id}"), bound(1))?;
    quit_all(vec![home, client]);
    Ok(out)
}

/// A semaphore set of `nsems` with sem 0 at `init`, and `n` agents: the
/// first one created it (node 1 for dipc, agents on nodes 1..=n).
fn sem_set(
    ends: &Ends,
    n: usize,
    nsems: usize,
    init: usize,
) -> Result<(Vec<Agent>, &'static str, i32), Error> {
    let (mut agents, via, id) = match ends {
        Ends::Kernel(cmd) => {
            let mut agents = local_agents(cmd, n)?;
            let id = id_of(&agents[0].call(&format!("semget k 0 {nsems} 1"), bound(1))?)?;
            (agents, "k", id)
        }
        Ends::Dipc(c, direct) => {
            c.check_alive()?;
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let mut agents = (1..=n)
                .map(|i| dipc_agent(c, i, *direct))
                .collect::<Result<Vec<_>, _>>()?;
            let id = id_of(&agents[0].call(&format!("semget d {key} {nsems} 1"), bound(1))?)?;
            for a in agents.iter_mut().skip(1) {
                let other = id_of(&a.call(&format!("semget d {key} {nsems} 0"), bound(1))?)?;
                if other != id {
                    return Err(Error::WrongData {
                        detail: format!("key {key:#x} is set {id} on node 1 but {other} elsewhere"),
                    });
                }
            }
            (agents, "d", id)
        }
    };
    if init > 0 {
        agents[0].call(&format!("semop {via} {id} 0 {init}"), bound(1))?;
    }
    Ok((agents, via, id))
}

fn finish_sem(mut agents: Vec<Agent>, via: &str, id: i32) -> Result<(), Error> {
    agents[0].call(&format!("semrm {via} {id}"), bound(1))?;
    quit_all(agents);
    Ok(())
}

fn sem_uncontended(ends: Ends, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    // Dipc: node 1 creates, node 2 operates (the second agent).
    let n = if matches!(ends, Ends::Dipc(..)) { 2 } else { 1 };
    let (mut agents, via, id) = sem_set(&ends, n, 1, 0)?;
    let out = agents[n - 1].samples(&format!("tsemop {via} {id} {total}"), bound(total))?;
    pb.inc(total as u64);
    finish_sem(agents, via, id)?;
    Ok(out)
}

/// `n` agents run `cmd(count)` at once; their samples interleaved, `total`
/// of them. `leader_only` keeps just the first agent's samples.
fn together(
    agents: &mut [Agent],
    total: usize,
    leader_only: bool,
    cmd: impl Fn(usize, usize) -> String,
) -> Result<Vec<u64>, Error> {
    let n = agents.len();
    let counts: Vec<usize> = if leader_only {
        vec![total; n]
    } else {
        (0..n)
            .map(|i| total / n + usize::from(i < total % n))
            .collect()
    };
    let cmds: Vec<String> = (0..n).map(|i| cmd(i, counts[i])).collect();
    for (a, c) in agents.iter_mut().zip(&cmds) {
        a.send(c)?;
    }
    let mut all = Vec::with_capacity(n);
    for (i, (a, c)) in agents.iter_mut().zip(&cmds).enumerate() {
        let s = a.answer_samples(c, bound(total))?;
        if s.len() != counts[i] {
            return Err(Error::WrongData {
                detail: format!("`{c}` answered {} samples", s.len()),
            });
        }
        all.push(s);
    }
    if leader_only {
        return Ok(all.swap_remove(0));
    }
    Ok(interleave(&all))
}

fn sem_lock(ends: Ends, n: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let (mut agents, via, id) = sem_set(&ends, n, 1, 1)?;
    let out = together(&mut agents, total, false, |_, c| {
        format!("tlock {via} {id} {c}")
    })?;
    pb.inc(total as u64);
    finish_sem(agents, via, id)?;
    Ok(out)
}

fn barrier(ends: Ends, n: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let (mut agents, via, id) = sem_set(&ends, n, 3, n)?;
    let out = together(&mut agents, total, true, |i, c| {
        format!("tbarrier {via} {id} {c} {n} {}", u8::from(i == 0))
    })?;
    pb.inc(total as u64);
    finish_sem(agents, via, id)?;
    Ok(out)
}

macro_rules! sized {
    ($($(#[$doc:meta])* $name:ident($ends:ident, $f:ident, $size:expr);)*) => {$(
        $(#[$doc])*
        pub fn $name(
            x: &$ends,
            total: usize,
            pb: &ProgressBar,
        ) -> Result<Vec<u64>, Error> {
            $f(sized!(@ends $ends, x), $size, total, pb)
        }
    )*};
    (@ends AgentCommand, $x:ident) => { Ends::Kernel($x) };
    (@ends Cluster, $x:ident) => { Ends::Dipc($x, true) };
}

sized! {
    /// Kernel msg round trip, 8 bytes.
    kmsg_rtt_8(AgentCommand, msg_rtt, 8);
    /// Kernel msg round trip, 1 KiB.
    kmsg_rtt_1k(AgentCommand, msg_rtt, 1024);
    /// Kernel msg round trip, 8 KiB.
    kmsg_rtt_8k(AgentCommand, msg_rtt, 8192);
    /// Kernel msg round trip, 16 KiB (`kernel.msgmax` raised).
    kmsg_rtt_16k(AgentCommand, msg_rtt, 16384);
    /// Kernel msg round trip, 64 KiB (`kernel.msgmax` raised).
    kmsg_rtt_64k(AgentCommand, msg_rtt, 65536);
    /// Kernel msg stream, 8 bytes.
    kmsg_tput_8(AgentCommand, msg_tput, 8);
    /// Kernel msg stream, 1 KiB.
    kmsg_tput_1k(AgentCommand, msg_tput, 1024);
    /// Kernel msg stream, 8 KiB.
    kmsg_tput_8k(AgentCommand, msg_tput, 8192);
    /// Kernel msg stream, 16 KiB (`kernel.msgmax` raised).
    kmsg_tput_16k(AgentCommand, msg_tput, 16384);
    /// Kernel msg stream, 64 KiB (`kernel.msgmax` raised).
    kmsg_tput_64k(AgentCommand, msg_tput, 65536);
    /// dipc msg round trip, 8 bytes.
    msg_rtt_8(Cluster, msg_rtt, 8);
    /// dipc msg round trip, 1 KiB.
    msg_rtt_1k(Cluster, msg_rtt, 1024);
    /// dipc msg round trip, 8 KiB.
    msg_rtt_8k(Cluster, msg_rtt, 8192);
    /// dipc msg round trip, 16 KiB.
    msg_rtt_16k(Cluster, msg_rtt, 16384);
    /// dipc msg round trip, 64 KiB.
    msg_rtt_64k(Cluster, msg_rtt, 65536);
    /// dipc msg stream, 8 bytes.
    msg_tput_8(Cluster, msg_tput, 8);
    /// dipc msg stream, 1 KiB.
    msg_tput_1k(Cluster, msg_tput, 1024);
    /// dipc msg stream, 8 KiB.
    msg_tput_8k(Cluster, msg_tput, 8192);
    /// dipc msg stream, 16 KiB.
    msg_tput_16k(Cluster, msg_tput, 16384);
    /// dipc msg stream, 64 KiB.
    msg_tput_64k(Cluster, msg_tput, 65536);
}
/// Kernel semop, uncontended.
pub fn ksemop(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_uncontended(Ends::Kernel(a), total, pb)
}
/// Kernel semaphore lock, 3 processes.
pub fn klock_3(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_lock(Ends::Kernel(a), 3, total, pb)
}
/// Kernel barrier, 2 processes.
pub fn kbarrier_2(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Kernel(a), 2, total, pb)
}
/// dipc semop, uncontended, from node 2.
pub fn semop(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_uncontended(Ends::Dipc(c, true), total, pb)
}
/// dipc msg round trip, 8 bytes, through the nodes (`DIPC_DIRECT=0`).
pub fn msg_rtt_8_relay(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Dipc(c, false), 8, total, pb)
}
/// dipc semop, uncontended, from node 2, through the nodes.
pub fn semop_relay(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_uncontended(Ends::Dipc(c, false), total, pb)
}
/// dipc semaphore lock, agents on 3 nodes.
pub fn sem_lock_3(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_lock(Ends::Dipc(c, true), 3, total, pb)
}
/// dipc barrier, 2 nodes.
pub fn barrier_2(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c, true), 2, total, pb)
}
/// dipc barrier, 3 nodes.
pub fn barrier_3(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c, true), 3, total, pb)
}
/// dipc barrier, 5 nodes.
pub fn barrier_5(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c, true), 5, total, pb)
}
