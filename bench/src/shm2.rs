//! Shared-memory scenarios on more than two nodes, large segments and
//! concurrent agents.
//!
//! Node 1's agent creates each segment (node 1 is its home); the others
//! attach it. As in [`crate::shm`], every access is timed inside an agent
//! around the one load or store that faults and every value read is
//! checked, so a broken protocol shows as an error, never as a number.
//!
//! * [`remote_read_m3`]: node 3 writes each page (it holds it Modified),
//!   then node 2 reads it: the home forwards or recalls the page from a
//!   third node.
//! * [`write_inval_2`], [`write_inval_4`]: the writer (node 2) and k other
//!   nodes read each page, then the writer writes it: an upgrade that
//!   invalidates k copies.
//! * scans of a 256 MiB segment ([`scan_seq`], [`scan_rand`] and their
//!   forms without prefetch (`_nopf`), with a larger window (`_pf64`) and
//!   with 64 KiB units (`_64k`); each segment is created with explicit
//!   `DIPC_PAGE_SIZE` and `DIPC_PREFETCH`, so the rows compare in one
//!   run): node 1 writes the pages to be read, node 2 reads them in order
//!   or in a seeded random order; one sample per 4 KiB page read, so the
//!   mean gives the bandwidth and the distribution shows the unit (one
//!   fault per 16 pages with 64 KiB units) and the prefetch (most reads
//!   local).
//! * segment mode ([`scan_seq_segment`]): whole scans of a 256 MiB
//!   segment in segment mode (one unit, moved as one message in 4 MiB
//!   parts), one sample per scan.
//! * ownership ping-pong with a hold-time quantum ([`quantum_0`] ...):
//!   two writers on one page, each write followed by some local work;
//!   the segment is created with `DIPC_QUANTUM_US`.
//! * hot page ([`hot_read_1`] ...): node 1 rewrites one page each round,
//!   then k nodes read it at once.
//! * atomic counter ([`counter_1`] ...): k agents on nodes 2..=k+1
//!   `fetch_add` one 8-byte counter in a segment homed on node 1 as fast
//!   as they can, all for the same window of time ([`counter_window`],
//!   after [`COUNTER_SETTLE`] of untimed increments in which the page
//!   reaches every agent), so with k >= 2 the page is contended from the
//!   first increment to the last; the final value must be the number of
//!   increments the agents report. One sample per increment, the time since that agent's
//!   previous one: each agent's samples add up to the window, so k / mean
//!   is the increments per second of all of them together. An owner keeps
//!   the page until another node's request is served, so increments come
//!   in local bursts and the handoffs show in p99. With k = 1 nothing
//!   contends: after the first fault the page stays on node 2 (the rate
//!   of local atomic increments, the reference for the others).
//!
//!   (Earlier the agents each made a fixed number of increments: at
//!   ~30 ns per local increment an agent finished its share before a
//!   single page handoff (~100 us), so the agents ran one after another,
//!   each on a page it held, and k / mean added up rates that never ran
//!   at the same time: 57M/s on 2 nodes, twice the 1-node figure.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;

use crate::Error;
use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::shm::ROUND_PAGES;
use crate::stats::interleave;

/// Keys of the segments this module creates.
static NEXT_KEY: AtomicU32 = AtomicU32::new(0x0D1B_E000);

/// Pages of the scanned segment: 256 MiB of 4 KiB pages.
pub const SCAN_PAGES: u64 = 65_536;

fn bound(ops: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(20) * ops as u32
}

/// Agents on `nodes` (the first creates the segment, with `env`), one
/// segment of `pages` 4 KiB pages attached by all.
struct Group {
    agents: Vec<Agent>,
}

impl Group {
    fn open(
        cluster: &Cluster,
        nodes: &[usize],
        pages: u64,
        env: &[(&str, &str)],
    ) -> Result<Group, Error> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        cluster.check_alive()?;
        let size = pages.max(1) * dipc_shmem::page_size();
        let mut agents = Vec::with_capacity(nodes.len());
        for (i, &n) in nodes.iter().enumerate() {
            let mut a = if i == 0 {
                cluster.agent_with(n, env)?
            } else {
                cluster.agent(n)?
            };
            let verb = if i == 0 { "create" } else { "attach" };
            a.call(&format!("{verb} {key} {size}"), bound(1))?;
            agents.push(a);
        }
        Ok(Group { agents })
    }

    fn finish(mut self) -> Result<(), Error> {
        for a in self.agents.iter_mut().skip(1) {
            a.call("detach", bound(1))?;
        }
        if let Some(first) = self.agents.first_mut() {
            first.call("rmid", bound(1))?;
            first.call("detach", bound(1))?;
        }
        for a in self.agents {
            a.quit();
        }
        Ok(())
    }
}

/// Send `cmd` to every agent of `which`, then collect their samples.
fn all_samples(
    agents: &mut [Agent],
    which: &[usize],
    cmd: &str,
    ops: usize,
) -> Result<Vec<Vec<u64>>, Error> {
    for &i in which {
        agents[i].send(cmd)?;
    }
    which
        .iter()
        .map(|&i| agents[i].answer_samples(cmd, bound(ops)))
        .collect()
}

/// Read faults on node 2 of pages node 3 holds Modified.
pub fn remote_read_m3(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let pages = total.min(ROUND_PAGES);
    let mut g = Group::open(c, &[1, 2, 3], pages as u64, &[])?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0;
    while out.len() < total {
        let n = (total - out.len()).min(pages);
        generation += 1;
        g.agents[2].call(&format!("fill 0 {n} {generation}"), bound(n))?;
        out.extend(g.agents[1].samples(&format!("tread 0 {n} {generation}"), bound(n))?);
        pb.inc(n as u64);
    }
    g.finish()?;
    Ok(out)
}

/// Upgrades invalidating `k` copies: writer on node 2, readers on node 1
/// and nodes 3..=k+1.
fn write_inval(c: &Cluster, k: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let pages = total.min(ROUND_PAGES);
    let nodes: Vec<usize> = (1..=k + 1).collect();
    let mut g = Group::open(c, &nodes, pages as u64, &[])?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0u64;
    g.agents[0].call(&format!("fill 0 {pages} {generation}"), bound(pages))?;
    let mut n = 0;
    while out.len() < total {
        n = (total - out.len()).min(pages);
        for a in &mut g.agents {
            a.call(&format!("check 0 {n} {generation}"), bound(n))?;
        }
        generation += 1;
        out.extend(g.agents[1].samples(&format!("twrite 0 {n} {generation}"), bound(n))?);
        pb.inc(n as u64);
    }
    // Every other node reads the last round's writes intact.
    for (i, a) in g.agents.iter_mut().enumerate() {
        if i != 1 {
            a.call(&format!("check 0 {n} {generation}"), bound(n))?;
        }
    }
    g.finish()?;
    Ok(out)
}

/// Upgrades invalidating 2 copies.
pub fn write_inval_2(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    write_inval(c, 2, total, pb)
}

/// Upgrades invalidating 4 copies.
pub fn write_inval_4(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    write_inval(c, 4, total, pb)
}

/// Node 2 reads `total` pages of a 256 MiB segment written by node 1, in
/// order or in a random order; the segment's coherence unit is `unit`
/// bytes and its prefetch window at most `prefetch` units (0: off).
fn scan(
    c: &Cluster,
    random: bool,
    unit: u32,
    prefetch: u32,
    total: usize,
    pb: &ProgressBar,
) -> Result<Vec<u64>, Error> {
    let (unit, prefetch) = (unit.to_string(), prefetch.to_string());
    let env = [
        ("DIPC_PAGE_SIZE", unit.as_str()),
        ("DIPC_PREFETCH", prefetch.as_str()),
    ];
    scan_in(c, random, &env, SCAN_PAGES, total, pb)
}

/// [`scan`] of a segment of `seg_pages` created with `env`.
fn scan_in(
    c: &Cluster,
    random: bool,
    env: &[(&str, &str)],
    seg_pages: u64,
    total: usize,
    pb: &ProgressBar,
) -> Result<Vec<u64>, Error> {
    let mut g = Group::open(c, &[1, 2], seg_pages, env)?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0u64;
    let scan_pages = seg_pages;
    while out.len() < total {
        let n = (total - out.len()).min(scan_pages as usize);
        generation += 1;
        if random {
            let seed = 0x5EED ^ generation;
            let args = format!("0 {scan_pages} {n} {generation} {seed}");
            g.agents[0].call(&format!("frand {args}"), bound(n))?;
            out.extend(g.agents[1].samples(&format!("trand {args}"), bound(n))?);
        } else {
            g.agents[0].call(&format!("fill 0 {n} {generation}"), bound(n))?;
            out.extend(g.agents[1].samples(&format!("tread 0 {n} {generation}"), bound(n))?);
        }
        pb.inc(n as u64);
    }
    g.finish()?;
    Ok(out)
}

/// Sequential scan, 4 KiB unit, prefetch window up to 8 (the default).
pub fn scan_seq(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, false, 4096, 8, total, pb)
}
/// Sequential scan, 4 KiB unit, no prefetch.
pub fn scan_seq_nopf(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, false, 4096, 0, total, pb)
}
/// Sequential scan, 4 KiB unit, prefetch window up to 64.
pub fn scan_seq_pf64(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, false, 4096, 64, total, pb)
}
/// Random 4 KiB reads, 4 KiB unit, prefetch window up to 8.
pub fn scan_rand(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, true, 4096, 8, total, pb)
}
/// Random 4 KiB reads, 4 KiB unit, no prefetch.
pub fn scan_rand_nopf(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, true, 4096, 0, total, pb)
}
/// Sequential scan, 64 KiB unit (prefetch up to 8 units).
pub fn scan_seq_64k(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, false, 65536, 8, total, pb)
}
/// Random 4 KiB reads, 64 KiB unit (prefetch up to 8 units).
pub fn scan_rand_64k(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    scan(c, true, 65536, 8, total, pb)
}

/// Pages of the segment-mode scan: 256 MiB, as the page-mode scans.
pub const SEGMENT_MODE_PAGES: u64 = SCAN_PAGES;

/// Whole sequential scans of a 256 MiB segment in segment mode (one
/// unit): node 1 rewrites it (taking the unit back), node 2 reads every
/// page; one sample per scan, so the one 256 MiB fetch of each is counted.
pub fn scan_seq_segment(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let n = SEGMENT_MODE_PAGES;
    let mut g = Group::open(c, &[1, 2], n, &[("DIPC_SHM_MODE", "segment")])?;
    let mut out = Vec::with_capacity(total);
    for generation in 1..=total as u64 {
        g.agents[0].call(&format!("fill 0 {n} {generation}"), bound(n as usize))?;
        out.extend(g.agents[1].samples(&format!("tscan 0 {n} {generation}"), bound(n as usize))?);
        pb.inc(1);
    }
    g.finish()?;
    Ok(out)
}

/// Work after each write of the quantum rows (a sleep: I/O, or work on
/// another core): the writers do several writes per turn with something
/// else between them, the pattern a hold-time quantum is for (without
/// one, the other writer takes the page away during the work, so nearly
/// every write is a handoff).
pub const QUANTUM_WORK_NS: u64 = 20_000;

/// Two agents (nodes 2 and 3) each increment one counter and then work
/// [`QUANTUM_WORK_NS`], at once, in a segment created with
/// `DIPC_QUANTUM_US=quantum_us`; one sample per write and its work.
fn quantum(
    c: &Cluster,
    quantum_us: u64,
    total: usize,
    pb: &ProgressBar,
) -> Result<Vec<u64>, Error> {
    let us = quantum_us.to_string();
    let env = [("DIPC_QUANTUM_US", us.as_str())];
    counter_in(c, 2, &env, QUANTUM_WORK_NS, total, pb)
}

/// Counter ping-pong, quantum 0.
pub fn quantum_0(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    quantum(c, 0, total, pb)
}
/// Counter ping-pong, quantum 100 us.
pub fn quantum_100us(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    quantum(c, 100, total, pb)
}
/// Counter ping-pong, quantum 1 ms.
pub fn quantum_1ms(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    quantum(c, 1_000, total, pb)
}
/// Counter ping-pong, quantum 10 ms.
pub fn quantum_10ms(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    quantum(c, 10_000, total, pb)
}

/// One hot page rewritten by node 1, read by `k` nodes at once each round.
fn hot_read(c: &Cluster, k: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let nodes: Vec<usize> = (1..=k + 1).collect();
    let mut g = Group::open(c, &nodes, 1, &[])?;
    let readers: Vec<usize> = (1..=k).collect();
    let mut out = Vec::with_capacity(total + k);
    let mut generation = 0u64;
    while out.len() < total {
        generation += 1;
        g.agents[0].call(&format!("fill 0 1 {generation}"), bound(1))?;
        let cmd = format!("tread 0 1 {generation}");
        for s in all_samples(&mut g.agents, &readers, &cmd, 1)? {
            out.extend(s);
        }
        pb.inc(k as u64);
    }
    out.truncate(total);
    g.finish()?;
    Ok(out)
}

/// Hot page, 1 reader.
pub fn hot_read_1(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    hot_read(c, 1, total, pb)
}
/// Hot page, 2 readers.
pub fn hot_read_2(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    hot_read(c, 2, total, pb)
}
/// Hot page, 4 readers.
pub fn hot_read_4(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    hot_read(c, 4, total, pb)
}

/// The window of one [`counter`] measurement of `total` samples: 4 us per
/// sample asked for, between 20 and 100 ms (dozens to hundreds of page
/// handoffs; the samples are as many as the increments that fit).
pub fn counter_window(total: usize) -> Duration {
    (Duration::from_micros(4) * total as u32)
        .clamp(Duration::from_millis(20), Duration::from_millis(100))
}

/// Increments before the window of [`counter`], untimed: the page reaches
/// every agent at least once and the window measures the steady state.
pub const COUNTER_SETTLE: Duration = Duration::from_millis(5);

/// `k` agents on nodes 2..=k+1 increment one counter for the same window.
fn counter(c: &Cluster, k: usize, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let nodes: Vec<usize> = (1..=k + 1).collect();
    let mut g = Group::open(c, &nodes, 1, &[])?;
    // A common go 50 ms ahead (the agents share this machine's clock),
    // then 5 ms for the page to reach every agent before the window.
    let go = crate::agent::unix_ns() + 50_000_000;
    let start = go + COUNTER_SETTLE.as_nanos();
    let end = start + counter_window(total).as_nanos();
    let cmd = format!("tincw 0 {go} {start} {end}");
    for a in &mut g.agents[1..] {
        a.send(&cmd)?;
    }
    let mut per = Vec::with_capacity(k);
    let mut settled = 0u64;
    for a in &mut g.agents[1..] {
        let words = a.answer(&cmd, bound(1))?;
        let nums: Vec<u64> = words
            .iter()
            .map(|w| w.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| Error::WrongData {
                detail: format!("`{cmd}` answered {:?}...", words.first()),
            })?;
        let Some((&settle, samples)) = nums.split_first() else {
            return Err(Error::WrongData {
                detail: format!("`{cmd}` answered nothing"),
            });
        };
        settled += settle;
        per.push(samples.to_vec());
    }
    let done: usize = per.iter().map(Vec::len).sum::<usize>() + settled as usize;
    // How the page was shared: increments and waits (> 2 us: the page
    // was elsewhere) per agent.
    tracing::info!(
        "counter on {k} nodes: increments per agent {:?}, waits per agent {:?}",
        per.iter().map(Vec::len).collect::<Vec<_>>(),
        per.iter()
            .map(|s| s.iter().filter(|&&ns| ns > 2_000).count())
            .collect::<Vec<_>>()
    );
    check_counter(&mut g.agents[0], done)?;
    let out = interleave(&per);
    pb.inc(total as u64);
    g.finish()?;
    Ok(out)
}

/// The counter (read by `agent`) must equal the `done` increments made.
fn check_counter(agent: &mut Agent, done: usize) -> Result<(), Error> {
    let got = agent.call("getc 0", bound(1))?;
    if got.first().map(String::as_str) != Some(&done.to_string()) {
        return Err(Error::WrongData {
            detail: format!("counter: {done} increments left the counter at {got:?}"),
        });
    }
    Ok(())
}

/// `k` agents on nodes 2..=k+1 each make their share of `total`
/// increments at once, in a segment created with `env`, each increment
/// followed by `work_ns` of local work (the work keeps the agents running
/// side by side: see the quantum rows).
fn counter_in(
    c: &Cluster,
    k: usize,
    env: &[(&str, &str)],
    work_ns: u64,
    total: usize,
    pb: &ProgressBar,
) -> Result<Vec<u64>, Error> {
    let nodes: Vec<usize> = (1..=k + 1).collect();
    let mut g = Group::open(c, &nodes, 1, env)?;
    let counts: Vec<usize> = (0..k)
        .map(|i| total / k + usize::from(i < total % k))
        .collect();
    // A common start 50 ms ahead (the agents share this machine's clock),
    // so the increments of all agents overlap.
    let start = crate::agent::unix_ns() + 50_000_000;
    let cmds: Vec<String> = counts
        .iter()
        .map(|n| format!("tinc 0 {n} {start} {work_ns}"))
        .collect();
    for (i, cmd) in cmds.iter().enumerate() {
        g.agents[i + 1].send(cmd)?;
    }
    let mut per = Vec::with_capacity(k);
    for (i, cmd) in cmds.iter().enumerate() {
        per.push(g.agents[i + 1].answer_samples(cmd, bound(counts[i]))?);
    }
    check_counter(&mut g.agents[0], total)?;
    let out = interleave(&per);
    pb.inc(total as u64);
    g.finish()?;
    Ok(out)
}

/// Counter, 1 node.
pub fn counter_1(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    counter(c, 1, total, pb)
}
/// Counter, 2 nodes.
pub fn counter_2(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    counter(c, 2, total, pb)
}
/// Counter, 4 nodes.
pub fn counter_4(c: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    counter(c, 4, total, pb)
}
