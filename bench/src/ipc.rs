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
//! * message round trip ([`msg_rtt_8`] ...): the agent on node 2 sends a
//!   message of type 1 to a queue homed on node 1 and waits for the
//!   answer of type 2 that node 1's agent echoes (`msgrcv` + `msgsnd`
//!   there); one sample per round trip, content checked.
//! * message stream ([`msg_tput_8`]): node 2 sends, node 1 drains; one
//!   sample per `msgsnd` (the queue's limit makes a fast sender wait for
//!   the drain, so the mean is the sustained rate).
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

/// Where the two ends of a queue scenario run.
enum Ends<'a> {
    Kernel(&'a AgentCommand),
    Dipc(&'a Cluster),
}

/// Open a queue and two agents: `(home/echo side, client side, via, id)`.
fn queue(ends: &Ends) -> Result<(Agent, Agent, &'static str, i32), Error> {
    match ends {
        Ends::Kernel(cmd) => {
            let mut a = local_agents(cmd, 2)?;
            let (Some(client), Some(mut home)) = (a.pop(), a.pop()) else {
                return Err(Error::Cluster {
                    detail: "two local agents expected".into(),
                });
            };
            let id = id_of(&home.call("msgget k 0 1", bound(1))?)?;
            Ok((home, client, "k", id))
        }
        Ends::Dipc(c) => {
            c.check_alive()?;
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let mut home = c.agent(1)?;
            let mut client = c.agent(2)?;
            let id = id_of(&home.call(&format!("msgget d {key} 1"), bound(1))?)?;
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
    let (mut home, mut client, via, id) = queue(&ends)?;
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
    let (mut home, mut client, via, id) = queue(&ends)?;
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
        Ends::Dipc(c) => {
            c.check_alive()?;
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            let mut agents = (1..=n).map(|i| c.agent(i)).collect::<Result<Vec<_>, _>>()?;
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
    let n = if matches!(ends, Ends::Dipc(_)) { 2 } else { 1 };
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
    let mut out = Vec::with_capacity(total);
    for k in 0.. {
        let before = out.len();
        out.extend(all.iter().filter_map(|s| s.get(k)));
        if out.len() == before {
            break;
        }
    }
    Ok(out)
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

/// Kernel msg round trip, 8 bytes.
pub fn kmsg_rtt_8(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Kernel(a), 8, total, pb)
}
/// Kernel msg round trip, 1 KiB.
pub fn kmsg_rtt_1k(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Kernel(a), 1024, total, pb)
}
/// Kernel msg round trip, 8 KiB.
pub fn kmsg_rtt_8k(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Kernel(a), 8192, total, pb)
}
/// Kernel msg stream, 8 bytes.
pub fn kmsg_tput_8(a: &AgentCommand, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_tput(Ends::Kernel(a), 8, total, pb)
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
/// dipc msg round trip, 8 bytes.
pub fn msg_rtt_8(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Dipc(c), 8, total, pb)
}
/// dipc msg round trip, 1 KiB.
pub fn msg_rtt_1k(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Dipc(c), 1024, total, pb)
}
/// dipc msg round trip, 8 KiB.
pub fn msg_rtt_8k(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_rtt(Ends::Dipc(c), 8192, total, pb)
}
/// dipc msg stream, 8 bytes.
pub fn msg_tput_8(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    msg_tput(Ends::Dipc(c), 8, total, pb)
}
/// dipc semop, uncontended, from node 2.
pub fn semop(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_uncontended(Ends::Dipc(c), total, pb)
}
/// dipc semaphore lock, agents on 3 nodes.
pub fn sem_lock_3(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    sem_lock(Ends::Dipc(c), 3, total, pb)
}
/// dipc barrier, 2 nodes.
pub fn barrier_2(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c), 2, total, pb)
}
/// dipc barrier, 3 nodes.
pub fn barrier_3(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c), 3, total, pb)
}
/// dipc barrier, 5 nodes.
pub fn barrier_5(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    barrier(Ends::Dipc(c), 5, total, pb)
}
