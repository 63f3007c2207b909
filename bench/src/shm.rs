//! The dipc shared-memory scenarios: agents on two nodes fault on one
//! segment, in an order the coordinator dictates.
//!
//! Node 1's agent creates the segment (node 1 is its home); node 2's agent
//! attaches it. Every access is timed inside the agent around the one load
//! or store that faults, and every value read is checked against what was
//! written, so a broken protocol shows as an error, never as a number.
//!
//! * [`remote_read`]: node 1 writes every page of a round (so the only
//!   valid copy is on node 1; from the second round on this also
//!   invalidates node 2's copies), then node 2 reads each page once: a
//!   cold remote read fault each.
//! * [`write_inval_1`]: both agents read each page (both nodes hold it
//!   Shared), then node 2 writes it: an upgrade that invalidates node 1's
//!   copy. Node 1's read of the next round fetches node 2's data back.
//! * [`pingpong`]: the agents write one page in turn, so ownership (and
//!   the data) moves on every write. Every [`VERIFY_EVERY`] handoffs the
//!   next writer first reads the page back and checks it (untimed, and the
//!   write after it is not counted either, since a read first makes it an
//!   upgrade rather than a handoff).
//!
//! Rounds reuse at most [`ROUND_PAGES`] pages, so memory stays bounded for
//! any sample count.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;

use crate::Error;
use crate::agent::Agent;
use crate::cluster::Cluster;

/// Most pages one round touches (8 MiB with 4 KiB pages).
pub const ROUND_PAGES: usize = 2048;
/// Handoffs of the pingpong between two checks of the page's content.
pub const VERIFY_EVERY: usize = 64;

/// Keys of the segments this process creates (one per scenario run).
static NEXT_KEY: AtomicU32 = AtomicU32::new(0x0D1B_C000);

/// Bound on one agent command touching `pages` pages: generous (a fault
/// waits at most the node's call timeout), but finite.
fn bound(pages: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(20) * pages as u32
}

/// The two agents and their segment; detached and removed by `finish`.
struct Pair {
    home: Agent,
    remote: Agent,
    pages: usize,
}

impl Pair {
    /// Agents on nodes 1 and 2; node 1 creates a segment of `pages` pages,
    /// node 2 attaches it.
    fn open(cluster: &Cluster, pages: usize) -> Result<Pair, Error> {
        cluster.check_alive()?;
        let pages = pages.max(1);
        let size = pages as u64 * dipc_shmem::page_size();
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let mut home = cluster.agent(1)?;
        let mut remote = cluster.agent(2)?;
        home.call(&format!("create {key} {size}"), bound(1))?;
        remote.call(&format!("attach {key} {size}"), bound(1))?;
        Ok(Pair {
            home,
            remote,
            pages,
        })
    }

    /// Detach both, remove the segment, stop the agents.
    fn finish(mut self) -> Result<(), Error> {
        self.remote.call("detach", bound(1))?;
        self.home.call("rmid", bound(1))?;
        self.home.call("detach", bound(1))?;
        self.home.quit();
        self.remote.quit();
        Ok(())
    }
}

/// Cold remote read faults, `total` samples.
pub fn remote_read(cluster: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let mut p = Pair::open(cluster, total.min(ROUND_PAGES))?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0u64;
    while out.len() < total {
        let n = (total - out.len()).min(p.pages);
        generation += 1;
        p.home.call(&format!("fill 0 {n} {generation}"), bound(n))?;
        out.extend(
            p.remote
                .samples(&format!("tread 0 {n} {generation}"), bound(n))?,
        );
        pb.inc(n as u64);
    }
    p.finish()?;
    Ok(out)
}

/// Writes to pages both nodes hold Shared (one invalidation each),
/// `total` samples.
pub fn write_inval_1(cluster: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let mut p = Pair::open(cluster, total.min(ROUND_PAGES))?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0u64;
    let all = p.pages;
    p.home
        .call(&format!("fill 0 {all} {generation}"), bound(all))?;
    let mut n = 0;
    while out.len() < total {
        n = (total - out.len()).min(p.pages);
        p.home
            .call(&format!("check 0 {n} {generation}"), bound(n))?;
        p.remote
            .call(&format!("check 0 {n} {generation}"), bound(n))?;
        generation += 1;
        out.extend(
            p.remote
                .samples(&format!("twrite 0 {n} {generation}"), bound(n))?,
        );
        pb.inc(n as u64);
    }
    // The last round's writes reach node 1 intact.
    p.home
        .call(&format!("check 0 {n} {generation}"), bound(n))?;
    p.finish()?;
    Ok(out)
}

/// Ownership handoffs of one page between the agents, `total` samples.
pub fn pingpong(cluster: &Cluster, total: usize, pb: &ProgressBar) -> Result<Vec<u64>, Error> {
    let mut p = Pair::open(cluster, 1)?;
    let mut out = Vec::with_capacity(total);
    let mut generation = 0u64;
    p.home.call("fill 0 1 0", bound(1))?;
    p.remote.call("check 0 1 0", bound(1))?;
    let mut turn = 0usize;
    let mut since_check = 0usize;
    while out.len() < total {
        // Remote writes first: it holds the page Shared, the home Modified
        // → Shared; from then on each write finds the page on the other node.
        let agent = if turn.is_multiple_of(2) {
            &mut p.remote
        } else {
            &mut p.home
        };
        turn += 1;
        generation += 1;
        if since_check == VERIFY_EVERY {
            since_check = 0;
            agent.call(&format!("check 0 1 {}", generation - 1), bound(1))?;
            agent.call(&format!("fill 0 1 {generation}"), bound(1))?;
            continue;
        }
        since_check += 1;
        out.extend(agent.samples(&format!("twrite 0 1 {generation}"), bound(1))?);
        if out.len() % 64 == 0 {
            pb.inc(64);
        }
    }
    pb.inc(out.len() as u64 % 64);
    // The other agent reads the last write.
    let reader = if turn.is_multiple_of(2) {
        &mut p.remote
    } else {
        &mut p.home
    };
    reader.call(&format!("check 0 1 {generation}"), bound(1))?;
    p.finish()?;
    Ok(out)
}
