//! Distributed shared memory on a node: segments, attachments, the
//! userfaultfd fault loop and the performing of coherence actions.
//!
//! Each segment a node knows has one memfd (the node's copy, shared by every
//! local process that attached it) and a presence bitmap (which units the
//! memfd holds: a hole is a unit this node does not have). Every local
//! mapping is registered with the process's userfaultfd, so every access to
//! a unit the process has not mapped yet, and every write to a unit mapped
//! read-only, comes here as a fault. The coherence engine decides; this
//! module performs: `UFFDIO_CONTINUE` maps a present unit (write-protected
//! while the node holds it Shared), `UFFDIO_WRITEPROTECT` grants or revokes
//! writing, punching a hole drops the unit from every local mapping at once.
//!
//! Transfer modes (the engine's module doc explains them): segment mode
//! makes the whole segment one unit ([`Segment::new`]); the mode, the
//! hold-time quantum and the prefetch window of a segment are fixed when
//! it is created, from its `shmget` or else the creating node's settings
//! ([`TransferSettings`]), and kept in its record ([`transfer_opts`]); the
//! quantum's timers run on the node's timer thread (`crate::timers`) and
//! are fed back to the engine on its runtime (`Node::quantum_over`).
//!
//! The home of a segment (the node that created it) also keeps its
//! `shmid_ds`: permissions, times, pids and the attach count per node; other
//! nodes ask it (peer calls) on `shmat`, `shmdt` and `shmctl`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dipc_dsm::coherence::{Action, CohMsg, SegOpts};
use dipc_shmem::{Memfd, Uffd, UffdEvent};
use dipc_wire::local::ShmStat;
use dipc_wire::referee::Caller;
use dipc_wire::{NodeId, ObjectId, ObjectRecord, Params, Perm, ShmMode, errno};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::metrics;
use crate::node::{Node, State};
use crate::peer::PeerMsg;

/// How long the fault loop keeps polling a process's userfaultfd after
/// serving a fault, before going back to sleep in epoll: 50 us, or
/// `DIPC_FAULT_SPIN_US` from the node's environment (0 turns it off).
pub(crate) fn fault_spin() -> std::time::Duration {
    static SPIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("DIPC_FAULT_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        std::time::Duration::from_micros(us)
    })
}

/// A `u64` from the node's environment, `default` when unset or invalid.
fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            warn!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

/// Parse a key as `shmget` takes it: decimal (possibly negative) or `0x` hex.
fn parse_key(s: &str) -> Option<i32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok().map(|k| k as i32),
        None => s.parse().ok(),
    }
}

/// The per-key overrides of `DIPC_QUANTUM_KEYS` or `DIPC_PREFETCH_KEYS`
/// (`<key>=<n>[,<key>=<n>...]`, keys decimal or `0x` hex).
fn parse_key_values(var: &str, spec: &str) -> HashMap<i32, u32> {
    let mut out = HashMap::new();
    for item in spec.split(',').filter(|i| !i.trim().is_empty()) {
        let parsed = item
            .split_once('=')
            .and_then(|(k, v)| Some((parse_key(k)?, v.trim().parse().ok()?)));
        match parsed {
            Some((k, n)) => {
                out.insert(k, n);
            }
            None => warn!("{var}: cannot parse {item:?} (want key=number)"),
        }
    }
    out
}

/// The node's defaults for the transfer settings of segments created
/// through it, read once from its environment: `DIPC_QUANTUM_US` (the
/// hold-time quantum, default 0: none), `DIPC_QUANTUM_KEYS` (per-key
/// quantum, `key=us,...`), `DIPC_PREFETCH` (the largest sequential
/// prefetch window in units, default 8; 0 turns prefetch off),
/// `DIPC_PREFETCH_KEYS` (per key, `key=units,...`) and
/// `DIPC_SEGMENT_KEYS` (keys, comma separated, in segment mode). A
/// `shmget` that names a setting (libsysv's environment) wins; the result
/// is fixed in the segment's record, so every node uses the same.
#[derive(Debug, Clone, Default)]
pub struct TransferSettings {
    pub quantum_us: u32,
    pub quantum_keys: HashMap<i32, u32>,
    pub prefetch: u32,
    pub prefetch_keys: HashMap<i32, u32>,
    pub segment_keys: Vec<i32>,
}

/// The keys of `DIPC_SEGMENT_KEYS`.
fn parse_keys(spec: &str) -> Vec<i32> {
    spec.split(',')
        .filter(|k| !k.trim().is_empty())
        .filter_map(|k| {
            let key = parse_key(k);
            if key.is_none() {
                warn!("DIPC_SEGMENT_KEYS: cannot parse {k:?} as a key");
            }
            key
        })
        .collect()
}

/// Default largest prefetch window, in units.
pub const DEFAULT_PREFETCH: u32 = 8;
pub use dipc_wire::{MAX_PREFETCH, MAX_QUANTUM_US};

fn settings() -> &'static TransferSettings {
    static SETTINGS: std::sync::OnceLock<TransferSettings> = std::sync::OnceLock::new();
    SETTINGS.get_or_init(|| {
        let keys = |var: &str| {
            std::env::var(var)
                .map(|v| parse_key_values(var, &v))
                .unwrap_or_default()
        };
        TransferSettings {
            quantum_us: u32::try_from(env_u64("DIPC_QUANTUM_US", 0)).unwrap_or(MAX_QUANTUM_US),
            quantum_keys: keys("DIPC_QUANTUM_KEYS"),
            prefetch: u32::try_from(env_u64("DIPC_PREFETCH", u64::from(DEFAULT_PREFETCH)))
                .unwrap_or(MAX_PREFETCH),
            prefetch_keys: keys("DIPC_PREFETCH_KEYS"),
            segment_keys: std::env::var("DIPC_SEGMENT_KEYS")
                .map(|v| parse_keys(&v))
                .unwrap_or_default(),
        }
    })
}

/// What a `shmget` asked for the segment it may create (`None`: the
/// node's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requested {
    pub unit: Option<u32>,
    pub mode: Option<ShmMode>,
    pub quantum_us: Option<u32>,
    pub prefetch: Option<u32>,
}

impl TransferSettings {
    /// The creation parameters of a segment of `size` bytes under `key`:
    /// what the `shmget` asked, else this node's per-key setting, else its
    /// default. `EINVAL` for a unit that is not a power of two >= 4096, a
    /// segment-mode segment above [`MAX_SEGMENT_MODE_SIZE`], a quantum
    /// above [`MAX_QUANTUM_US`] or a window above [`MAX_PREFETCH`].
    pub fn params(
        &self,
        key: i32,
        size: u64,
        default_unit: u32,
        req: Requested,
    ) -> Result<Params, i32> {
        let unit = req.unit.unwrap_or(default_unit);
        let mode = req
            .mode
            .or_else(|| self.segment_keys.contains(&key).then_some(ShmMode::Segment))
            .unwrap_or_default();
        let quantum_us = req
            .quantum_us
            .or_else(|| self.quantum_keys.get(&key).copied())
            .unwrap_or(self.quantum_us);
        let prefetch = req
            .prefetch
            .or_else(|| self.prefetch_keys.get(&key).copied())
            .unwrap_or(self.prefetch);
        let bad = !unit.is_power_of_two()
            || unit < 4096
            || (mode == ShmMode::Segment && size > MAX_SEGMENT_MODE_SIZE)
            || quantum_us > MAX_QUANTUM_US
            || prefetch > MAX_PREFETCH;
        if bad {
            return Err(errno::EINVAL);
        }
        Ok(Params::Shm {
            size,
            unit,
            mode,
            quantum_us,
            // A segment-mode segment is one unit: nothing to prefetch.
            prefetch: if mode == ShmMode::Segment {
                0
            } else {
                prefetch
            },
        })
    }
}

/// [`TransferSettings::params`] with this node's settings.
pub fn create_params(
    key: i32,
    size: u64,
    default_unit: u32,
    req: Requested,
) -> Result<Params, i32> {
    settings().params(key, size, default_unit, req)
}

/// The engine options of a segment: the quantum and prefetch window fixed
/// in its record at creation.
pub fn transfer_opts(rec: &ObjectRecord) -> SegOpts {
    match rec.params {
        Params::Shm {
            mode,
            quantum_us,
            prefetch,
            ..
        } => SegOpts {
            quantum_us: u64::from(quantum_us),
            prefetch: if mode == ShmMode::Segment {
                0
            } else {
                prefetch
            },
        },
        _ => SegOpts::default(),
    }
}

/// Largest segment movable in segment mode (1 GiB): the whole segment is
/// one message on a peer link (sent in parts of 4 MiB, but buffered whole
/// by the receiver before it is installed), and the node holding it reads
/// it whole into memory to send it.
pub const MAX_SEGMENT_MODE_SIZE: u64 = 1 << 30;

/// `SHM_DEST` in `shm_perm.mode`.
pub const SHM_DEST: u32 = 0o1000;

/// A segment as this node holds it.
pub struct Segment {
    pub rec: ObjectRecord,
    pub memfd: Memfd,
    pub unit: u64,
    pub units: u32,
    /// Units whose bytes are in the memfd.
    present: Vec<bool>,
    /// Units some local mapping may currently write.
    writable: Vec<bool>,
    /// Kept by the home only.
    pub home: Option<HomeMeta>,
    /// The engine options (quantum, prefetch) this node uses for it.
    pub opts: SegOpts,
}

/// The home's `shmid_ds`.
#[derive(Debug, Clone)]
pub struct HomeMeta {
    pub perm: Perm,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: HashMap<NodeId, u64>,
    pub removed: bool,
}

impl HomeMeta {
    pub fn total(&self) -> u64 {
        self.nattch.values().sum()
    }
}

/// One mapping of a segment in a local process.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub id: ObjectId,
    pub addr: u64,
    pub len: u64,
    pub readonly: bool,
}

/// A local process (one local connection).
#[derive(Default)]
pub struct Proc {
    pub pid: i32,
    pub uffd: Option<Arc<Uffd>>,
    pub attachments: Vec<Attachment>,
    /// `ShmAt` answered, `ShmRegister` not yet.
    pub pending: Vec<(ObjectId, bool)>,
    /// The task serving `uffd`, stopped when the process goes.
    pub task: Option<tokio::task::AbortHandle>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A blocked access of a local process.
struct Waiter {
    conn: u64,
    /// When the access blocked (for the bound on every wait).
    since: std::time::Instant,
    uffd: Arc<Uffd>,
    addr: u64,
    len: u64,
    wp_fault: bool,
    readonly: bool,
}

/// Per-node shared memory state (inside the node's state lock).
#[derive(Default)]
pub struct ShmState {
    pub segments: HashMap<ObjectId, Segment>,
    pub procs: HashMap<u64, Proc>,
    waiters: HashMap<u64, Waiter>,
    next_waiter: u64,
    /// The lost pages last reported to the referee, per segment (the
    /// node's record of what it lost with failed nodes).
    lost_reported: HashMap<ObjectId, Vec<(u64, u64)>>,
    /// The bytes of the last large unit sent, to reuse their buffer once
    /// the link has sent them (see [`data_of`]).
    send_buf: Option<Bytes>,
}

impl ShmState {
    /// Local connections with an access blocked for longer than `bound`
    /// (a peer that should answer is gone or partitioned away).
    pub fn stuck_conns(&self, bound: std::time::Duration) -> Vec<u64> {
        let mut conns: Vec<u64> = self
            .waiters
            .values()
            .filter(|w| w.since.elapsed() > bound)
            .map(|w| w.conn)
            .collect();
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    /// Forget local connection `conn` (its process is gone): its
    /// attachments, its blocked accesses, and with them its userfaultfd.
    pub fn remove_proc(&mut self, conn: u64) -> Option<Proc> {
        self.waiters.retain(|_, w| w.conn != conn);
        self.procs.remove(&conn)
    }
}

impl Segment {
    pub fn new(rec: ObjectRecord, home: Option<HomeMeta>) -> Result<Segment, i32> {
        let Params::Shm {
            size, unit, mode, ..
        } = rec.params
        else {
            return Err(errno::EINVAL);
        };
        let unit = match mode {
            ShmMode::Page => u64::from(unit),
            // Segment mode: the whole segment is one coherence unit.
            ShmMode::Segment => size.div_ceil(4096) * 4096,
        };
        let units = size.div_ceil(unit);
        let memfd =
            Memfd::create(&format!("dipc-shm-{:x}", rec.id), units * unit).map_err(|e| {
                warn!("cannot create the memfd of segment {}: {e}", rec.id);
                errno::ENOMEM
            })?;
        let units = u32::try_from(units).map_err(|_| errno::EINVAL)?;
        let opts = transfer_opts(&rec);
        Ok(Segment {
            opts,
            rec,
            memfd,
            unit,
            units,
            present: vec![false; units as usize],
            writable: vec![false; units as usize],
            home,
        })
    }

    pub fn size(&self) -> u64 {
        match self.rec.params {
            Params::Shm { size, .. } => size,
            _ => 0,
        }
    }

    fn unit_range(&self, unit: u32) -> (u64, u64) {
        (u64::from(unit) * self.unit, self.unit)
    }

    pub fn stat(&self) -> Option<ShmStat> {
        let h = self.home.as_ref()?;
        let mut perm = h.perm;
        if h.removed {
            perm.mode |= SHM_DEST;
        }
        Some(ShmStat {
            key: if h.removed { 0 } else { self.rec.key },
            perm,
            segsz: self.size(),
            atime: h.atime,
            dtime: h.dtime,
            ctime: h.ctime,
            cpid: h.cpid,
            lpid: h.lpid,
            nattch: h.total(),
        })
    }
}

impl Node {
    /// The engine's actions, performed in order. `payload` is the data of
    /// the message being handled (for `Install`).
    pub(crate) fn perform(self: &Arc<Self>, st: &mut State, actions: Vec<Action>, payload: &Bytes) {
        for a in actions {
            match a {
                Action::Send { to, msg, with_data } => {
                    let data = if with_data {
                        data_of(&mut st.shm, &msg)
                    } else {
                        Bytes::new()
                    };
                    self.peers().send(self, to, PeerMsg::Coh(msg), data);
                }
                Action::Install { seg, unit } => {
                    if let Some(s) = st.shm.segments.get_mut(&seg) {
                        let (off, len) = s.unit_range(unit);
                        let n = payload.len().min(len as usize);
                        if let Err(e) = s.memfd.write_at(off, &payload[..n]) {
                            warn!(seg, unit, "install failed: {e}");
                        }
                        s.present[unit as usize] = true;
                    }
                }
                Action::Invalidate { seg, unit } => {
                    metrics::INVALIDATIONS.inc();
                    if let Some(s) = st.shm.segments.get_mut(&seg) {
                        let (off, len) = s.unit_range(unit);
                        if let Err(e) = s.memfd.punch_hole(off, len) {
                            warn!(seg, unit, "invalidate failed: {e}");
                        }
                        s.present[unit as usize] = false;
                        s.writable[unit as usize] = false;
                    }
                }
                Action::Downgrade { seg, unit } => {
                    metrics::DOWNGRADES.inc();
                    write_protect_unit(&mut st.shm, seg, unit)
                }
                Action::Resolve {
                    waiter,
                    seg,
                    unit,
                    writable,
                } => {
                    metrics::FAULTS_RESOLVED.inc();
                    resolve(&mut st.shm, waiter, seg, unit, writable)
                }
                Action::Fail {
                    waiter,
                    seg,
                    unit,
                    error,
                } => {
                    metrics::ERRORS.inc();
                    warn!(seg, unit, "an access cannot be served: {error}");
                    if let Some(conn) = fail(&mut st.shm, waiter, &error) {
                        self.disconnect(conn);
                    }
                }
                Action::SetTimer {
                    seg,
                    unit,
                    id,
                    after_us,
                } => {
                    if !self.set_quantum_timer(seg, unit, id, after_us) {
                        // The engine would keep deferring answers
                        // forever: end the quantum now.
                        let actions = st.engine.timer(seg, unit, id);
                        self.perform(st, actions, &Bytes::new());
                    }
                }
                Action::Ignored { from, error } => {
                    metrics::ERRORS.inc();
                    warn!(peer = from, "ignored a coherence message: {error}");
                }
            }
        }
    }

    /// Run the engine's quantum timer (on the node's timer thread, see
    /// `crate::timers`) and feed it back on this runtime; false if there
    /// is no runtime or timer thread to run it.
    fn set_quantum_timer(
        self: &Arc<Self>,
        seg: ObjectId,
        unit: u32,
        id: u64,
        after_us: u64,
    ) -> bool {
        let after = std::time::Duration::from_micros(after_us);
        let started = tokio::runtime::Handle::try_current()
            .is_ok_and(|rt| self.timers().start(self, &rt, after, (seg, unit, id)));
        if !started {
            warn!(seg, unit, "no timer for a quantum; ending it at once");
        }
        started
    }

    /// The quantum of (seg, unit) ended: the engine gives its deferred
    /// answers.
    pub(crate) fn quantum_over(self: &Arc<Self>, seg: ObjectId, unit: u32, id: u64) {
        let mut st = self.lock();
        let actions = st.engine.timer(seg, unit, id);
        self.perform(&mut st, actions, &Bytes::new());
    }

    /// A coherence message from a peer.
    pub(crate) fn coherence_message(self: &Arc<Self>, from: NodeId, msg: CohMsg, payload: Bytes) {
        // A home settling a transaction with a failed node may lose a unit.
        let settles = matches!(msg, CohMsg::Stuck { .. });
        let mut st = self.lock();
        let actions = st.engine.receive(from, msg);
        self.perform(&mut st, actions, &payload);
        drop(st);
        if settles {
            self.report_lost();
        }
    }

    /// Node `dead` failed: the coherence engine drops it (the accesses
    /// that needed it fail, see [`fail`]) and the lost pages are reported.
    pub(crate) fn coherence_node_down(self: &Arc<Self>, dead: NodeId) {
        {
            let mut st = self.lock();
            let actions = st.engine.node_down(dead);
            self.perform(&mut st, actions, &Bytes::new());
        }
        self.report_lost();
    }

    /// Tell the referee (for `dipc status`) the pages this node knows lost,
    /// for each segment whose list changed since the last report: the
    /// segments it is home of, and those whose home failed.
    pub(crate) fn report_lost(self: &Arc<Self>) {
        let mut reports = Vec::new();
        {
            let mut st = self.lock();
            let me = self.node_id();
            let st = &mut *st;
            for (&id, seg) in &st.shm.segments {
                if st.engine.home(id) != me && !st.engine.is_home_down(id) {
                    continue;
                }
                let pages = lost_page_ranges(seg, &st.engine.lost_units(id));
                let known = st.shm.lost_reported.get(&id);
                let changed = match known {
                    Some(k) => *k != pages,
                    // A home down is reported even with nothing lost here:
                    // the referee intersects the survivors' reports.
                    None => !pages.is_empty() || st.engine.is_home_down(id),
                };
                if changed {
                    reports.push((id, pages));
                }
            }
            for (id, pages) in &reports {
                st.shm.lost_reported.insert(*id, pages.clone());
            }
        }
        if reports.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = Arc::clone(self);
        rt.spawn(async move {
            for (id, pages) in reports {
                warn!(seg = id, "lost pages of the segment: {pages:?}");
                let req = dipc_wire::referee::Request::ReportLost { id, pages };
                if let Err(e) = node.referee_call(&req).await {
                    warn!(
                        seg = id,
                        "cannot report lost pages to the referee: errno {e}"
                    );
                }
            }
        });
    }

    /// Serve the userfaultfd of local connection `conn` until it closes.
    pub(crate) async fn serve_uffd(self: Arc<Self>, conn: u64, uffd: Arc<Uffd>) {
        let fd = match UffdPoll::new(uffd.clone()) {
            Ok(fd) => fd,
            Err(e) => {
                warn!(conn, "cannot poll a userfaultfd: {e}");
                return;
            }
        };
        let mut events = Vec::new();
        loop {
            let mut guard = match fd.readable().await {
                Ok(g) => g,
                Err(_) => return,
            };
            match self.drain_uffd(conn, &uffd, &mut events) {
                None => return,
                Some(0) => {
                    guard.clear_ready();
                    continue;
                }
                Some(_) => {}
            }
            drop(guard);
            // Spin briefly before sleeping again: a process whose fault was
            // just served usually faults again within microseconds, and a
            // sleep/wake-up through epoll costs more than that. Yielding
            // keeps the node's other tasks (the network) running meanwhile.
            let mut until = std::time::Instant::now() + fault_spin();
            while std::time::Instant::now() < until {
                tokio::task::yield_now().await;
                match self.drain_uffd(conn, &uffd, &mut events) {
                    None => return,
                    Some(0) => {}
                    Some(_) => until = std::time::Instant::now() + fault_spin(),
                }
            }
        }
    }

    /// Read and handle every pending event of a process's userfaultfd.
    /// `None` when the process or its userfaultfd is gone.
    fn drain_uffd(
        self: &Arc<Self>,
        conn: u64,
        uffd: &Arc<Uffd>,
        events: &mut Vec<UffdEvent>,
    ) -> Option<usize> {
        events.clear();
        if let Err(e) = uffd.read_events(events) {
            debug!(conn, "userfaultfd closed: {e}");
            return None;
        }
        let n = events.len();
        if n == 0 {
            return Some(0);
        }
        let mut st = self.lock();
        if !st.shm.procs.contains_key(&conn) {
            return None;
        }
        for ev in events.drain(..) {
            if let UffdEvent::Fault {
                addr, write, wp, ..
            } = ev
            {
                self.fault(&mut st, conn, uffd, addr, write, wp);
            }
        }
        Some(n)
    }

    fn fault(
        self: &Arc<Self>,
        st: &mut State,
        conn: u64,
        uffd: &Arc<Uffd>,
        addr: u64,
        write: bool,
        wp: bool,
    ) {
        metrics::FAULTS.inc();
        let Some(p) = st.shm.procs.get(&conn) else {
            return;
        };
        let Some(a) = p
            .attachments
            .iter()
            .find(|a| addr >= a.addr && addr < a.addr + a.len)
        else {
            warn!(conn, addr, "fault outside any attachment");
            let _ = uffd.wake(addr & !4095, 4096);
            return;
        };
        let a = a.clone();
        let Some(seg) = st.shm.segments.get(&a.id) else {
            return;
        };
        let off = addr - a.addr;
        let unit = (off / seg.unit) as u32;
        let start = a.addr + u64::from(unit) * seg.unit;
        let len = seg.unit.min(a.addr + a.len - start);
        st.shm.next_waiter += 1;
        let w = st.shm.next_waiter;
        st.shm.waiters.insert(
            w,
            Waiter {
                conn,
                since: std::time::Instant::now(),
                uffd: uffd.clone(),
                addr: start,
                len,
                wp_fault: wp,
                readonly: a.readonly,
            },
        );
        let actions = st.engine.fault(a.id, unit, write && !a.readonly, w);
        self.perform(st, actions, &Bytes::new());
    }
}

/// A userfaultfd registered with the runtime's reactor.
struct UffdPoll(Arc<Uffd>);

impl std::os::fd::AsRawFd for UffdPoll {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl UffdPoll {
    fn new(uffd: Arc<Uffd>) -> std::io::Result<AsyncFd<UffdPoll>> {
        // SAFETY: the fd belongs to `uffd`, which the returned AsyncFd owns
        // (through the Arc) for its whole life, so it stays open and names
        // the same file until the AsyncFd is dropped.
        unsafe { AsyncFd::register_with_interest(UffdPoll(uffd), tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
    }
}

/// The bytes of the unit a data-carrying message is about, read after every
/// local writer lost its right to write.
fn data_of(shm: &mut ShmState, msg: &CohMsg) -> Bytes {
    let (seg, unit) = (msg.seg(), msg.unit());
    if shm
        .segments
        .get(&seg)
        .is_some_and(|s| s.writable.get(unit as usize).copied().unwrap_or(false))
    {
        write_protect_unit(shm, seg, unit);
    }
    let Some(s) = shm.segments.get(&seg) else {
        return Bytes::new();
    };
    let (off, len) = s.unit_range(unit);
    let len = len as usize;
    // A large unit (segment mode) reuses the buffer of the last one once
    // the link has sent it: fresh memory costs a page fault per page.
    let reuse = len >= REUSE_SEND_BUF;
    let spare = if reuse { shm.send_buf.take() } else { None };
    let mut buf = spare
        .and_then(|b| b.try_into_mut().ok())
        .filter(|b| b.capacity() >= len)
        .unwrap_or_else(|| BytesMut::with_capacity(len));
    // A reused buffer of the same length is overwritten below, not zeroed
    // first (a 256 MiB memset per transfer otherwise).
    let reused = buf.len() == len;
    if !reused {
        buf.clear();
        buf.resize(len, 0);
    }
    let read = s.present[unit as usize].then(|| s.memfd.read_at(off, &mut buf));
    if let Some(Err(e)) = &read {
        warn!(seg, unit, "reading a unit failed: {e}");
    }
    if reused && !matches!(read, Some(Ok(()))) {
        // An absent unit is zeros (and a failed read sends zeros, not the
        // last unit's bytes).
        buf.fill(0);
    }
    let bytes = buf.freeze();
    if reuse {
        shm.send_buf = Some(bytes.clone());
    }
    bytes
}

/// Units from this size on are read into a reused buffer by [`data_of`].
const REUSE_SEND_BUF: usize = 1 << 20;

/// Revoke write access to (seg, unit) in every local mapping.
fn write_protect_unit(shm: &mut ShmState, seg: ObjectId, unit: u32) {
    let Some(s) = shm.segments.get_mut(&seg) else {
        return;
    };
    s.writable[unit as usize] = false;
    let (off, len) = s.unit_range(unit);
    for p in shm.procs.values() {
        let Some(uffd) = &p.uffd else { continue };
        for a in p.attachments.iter().filter(|a| a.id == seg && !a.readonly) {
            if off >= a.len {
                continue;
            }
            let l = len.min(a.len - off);
            if let Err(e) = uffd.write_protect(a.addr + off, l, true, false) {
                debug!(seg, unit, "write-protect failed: {e}");
            }
        }
    }
}

/// The pages of `units` (ascending) of a segment, as inclusive ranges.
fn lost_page_ranges(seg: &Segment, units: &[u32]) -> Vec<(u64, u64)> {
    let per_unit = (seg.unit / 4096).max(1);
    let last = seg.size().div_ceil(4096).saturating_sub(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &u in units {
        let first = u64::from(u) * per_unit;
        if first > last {
            break;
        }
        let end = (first + per_unit - 1).min(last);
        match out.last_mut() {
            Some(r) if r.1 + 1 == first => r.1 = end,
            _ => out.push((first, end)),
        }
    }
    out
}

/// A blocked access that cannot be served. Waking it would only make it
/// fault again. For a unit lost with a failed node, or one whose home
/// failed, the process's pages of the unit are poisoned
/// (`UFFDIO_POISON`): this access and every later one to them get
/// `SIGBUS`, and the rest of the process goes on. Otherwise, or when the
/// pages cannot be poisoned (a write to a page mapped read-only, a kernel
/// before 6.6), the caller closes the process's local connection: libsysv
/// then maps an empty memfd over its attachments and the access gets
/// `SIGBUS`, never zeros and never a hang. Returns the connection to close.
fn fail(shm: &mut ShmState, waiter: u64, error: &dipc_dsm::Error) -> Option<u64> {
    let w = shm.waiters.remove(&waiter)?;
    let lost = matches!(
        error,
        dipc_dsm::Error::NoCopy { .. } | dipc_dsm::Error::HomeDown { .. }
    );
    // A write to a page mapped read-only cannot be poisoned (the page is
    // there); a missing page may still carry the write-protect marker of
    // its last mapping (left when its hole was punched), which poisoning
    // refuses to overwrite: clear it first (no page: nothing becomes
    // writable).
    if lost && !w.wp_fault {
        let poisoned = w.uffd.poison(w.addr, w.len).or_else(|_| {
            w.uffd.write_protect(w.addr, w.len, false, false)?;
            w.uffd.poison(w.addr, w.len)
        });
        match poisoned {
            Ok(()) => return None,
            Err(e) => debug!(waiter, "cannot poison the pages of a lost unit: {e}"),
        }
    }
    Some(w.conn)
}

/// Let a blocked access proceed.
fn resolve(shm: &mut ShmState, waiter: u64, seg: ObjectId, unit: u32, writable: bool) {
    let Some(w) = shm.waiters.remove(&waiter) else {
        return;
    };
    let Some(s) = shm.segments.get_mut(&seg) else {
        let _ = w.uffd.wake(w.addr, w.len);
        return;
    };
    let idx = unit as usize;
    if !s.present[idx] {
        // A unit never written anywhere: materialise its zeros.
        let (off, len) = s.unit_range(unit);
        if let Err(e) = s.memfd.write_at(off, &vec![0u8; len as usize]) {
            warn!(seg, unit, "zero-fill failed: {e}");
        }
        s.present[idx] = true;
    }
    let writable = writable && !w.readonly;
    if writable {
        s.writable[idx] = true;
    }
    let result = if w.wp_fault {
        if writable {
            w.uffd.write_protect(w.addr, w.len, false, true)
        } else {
            w.uffd.wake(w.addr, w.len)
        }
    } else {
        w.uffd
            .continue_(w.addr, w.len, !writable && !w.readonly)
            .and_then(|()| {
                if writable {
                    // Already mapped (EEXIST) but write-protected: lift it.
                    w.uffd.write_protect(w.addr, w.len, false, true)
                } else {
                    w.uffd.wake(w.addr, w.len)
                }
            })
    };
    if let Err(e) = result {
        debug!(seg, unit, "resolving a fault failed (process gone?): {e}");
        let _ = w.uffd.wake(w.addr, w.len);
    }
}

/// Home side of `shmat`: check permission and count the attachment.
pub fn home_attach(
    seg: &mut Segment,
    node: NodeId,
    caller: Caller,
    readonly: bool,
    now: i64,
) -> Result<(), i32> {
    let Some(h) = seg.home.as_mut() else {
        return Err(errno::EINVAL);
    };
    let want = if readonly { 0o4 } else { 0o6 };
    if !h.perm.allows(caller.uid, caller.gid, want) {
        return Err(errno::EACCES);
    }
    *h.nattch.entry(node).or_default() += 1;
    h.atime = now;
    h.lpid = caller.pid;
    Ok(())
}

/// Home side of `shmdt`. Returns true when the segment must be destroyed
/// (removed and no attachment left in the cluster).
pub fn home_detach(seg: &mut Segment, node: NodeId, pid: i32, now: i64) -> bool {
    let Some(h) = seg.home.as_mut() else {
        return false;
    };
    if let Some(n) = h.nattch.get_mut(&node) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            h.nattch.remove(&node);
        }
    }
    h.dtime = now;
    h.lpid = pid;
    h.removed && h.total() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantum_keys_parse_decimal_and_hex_and_skip_garbage() {
        let m = parse_key_values("DIPC_QUANTUM_KEYS", "0x10=2000, 42=0,junk,-5=7,0x1=x");
        assert_eq!(m.get(&16), Some(&2000));
        assert_eq!(m.get(&42), Some(&0));
        assert_eq!(m.get(&-5), Some(&7));
        assert_eq!(m.get(&1), None);
        assert_eq!(m.len(), 3);
        assert_eq!(parse_key("0xffffffff"), Some(-1));
    }

    #[test]
    fn segment_keys_parse_and_skip_garbage() {
        assert_eq!(parse_keys("0x5d20, 7,,nope,-3"), vec![0x5d20, 7, -3]);
        assert!(parse_keys("").is_empty());
    }

    fn shm(p: Params) -> (u32, ShmMode, u32, u32) {
        match p {
            Params::Shm {
                unit,
                mode,
                quantum_us,
                prefetch,
                ..
            } => (unit, mode, quantum_us, prefetch),
            other => panic!("not a segment: {other:?}"),
        }
    }

    #[test]
    fn a_shmget_setting_beats_the_key_setting_which_beats_the_default() {
        let node = TransferSettings {
            quantum_us: 100,
            quantum_keys: HashMap::from([(7, 2000)]),
            prefetch: 8,
            prefetch_keys: HashMap::from([(7, 0)]),
            segment_keys: vec![9],
        };
        let none = Requested::default();
        let p = |key, req| node.params(key, 1 << 20, 4096, req).map(shm);
        assert_eq!(p(1, none), Ok((4096, ShmMode::Page, 100, 8)));
        assert_eq!(p(7, none), Ok((4096, ShmMode::Page, 2000, 0)));
        // Segment mode by key: one unit, nothing to prefetch.
        assert_eq!(p(9, none), Ok((4096, ShmMode::Segment, 100, 0)));
        let asked = Requested {
            unit: Some(65536),
            mode: Some(ShmMode::Page),
            quantum_us: Some(0),
            prefetch: Some(32),
        };
        assert_eq!(p(7, asked), Ok((65536, ShmMode::Page, 0, 32)));
        assert_eq!(p(9, asked), Ok((65536, ShmMode::Page, 0, 32)));
    }

    #[test]
    fn out_of_range_settings_are_einval() {
        let node = TransferSettings::default();
        let bad = [
            Requested {
                unit: Some(6000),
                ..Requested::default()
            },
            Requested {
                quantum_us: Some(MAX_QUANTUM_US + 1),
                ..Requested::default()
            },
            Requested {
                prefetch: Some(MAX_PREFETCH + 1),
                ..Requested::default()
            },
        ];
        for req in bad {
            assert_eq!(
                node.params(1, 4096, 4096, req),
                Err(errno::EINVAL),
                "{req:?}"
            );
        }
        let segment = Requested {
            mode: Some(ShmMode::Segment),
            ..Requested::default()
        };
        assert_eq!(
            node.params(1, MAX_SEGMENT_MODE_SIZE + 1, 4096, segment),
            Err(errno::EINVAL)
        );
        assert!(node.params(1, MAX_SEGMENT_MODE_SIZE, 4096, segment).is_ok());
    }

    #[test]
    fn engine_options_come_from_the_record() {
        let rec = |mode, quantum_us, prefetch| ObjectRecord {
            key: 1,
            id: 2,
            kind: dipc_wire::Kind::Shm,
            home: 1,
            params: Params::Shm {
                size: 8192,
                unit: 4096,
                mode,
                quantum_us,
                prefetch,
            },
            perm: Perm::default(),
            ctime: 0,
            removed: false,
        };
        let o = transfer_opts(&rec(ShmMode::Page, 1000, 4));
        assert_eq!((o.quantum_us, o.prefetch), (1000, 4));
        let o = transfer_opts(&rec(ShmMode::Segment, 1000, 4));
        assert_eq!((o.quantum_us, o.prefetch), (1000, 0));
    }
}
